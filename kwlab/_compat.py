"""Guarded imports of optional packages (torchvision, timm) -- never imported by kwlab's core."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["import_torchvision", "import_timm"]


def _define_missing_torchvision_ops() -> None:
    """Define the ``torchvision::nms``/``qnms`` op schemas when the installed torchvision build cannot
    register them (a CUDA wheel on a CPU-only torch: "operator torchvision::nms does not exist",
    pytorch/vision#9085). Only the schemas are defined: nms itself stays unavailable."""
    import torch

    try:
        torch._C._dispatch_find_schema_or_throw("torchvision::nms", "")
        return
    except RuntimeError:
        pass
    try:
        lib = torch.library.Library("torchvision", "DEF")  # noqa: F841 - kept alive below
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _LIBS.append(lib)
    except RuntimeError:
        pass


_LIBS: list = []


def import_torchvision() -> ModuleType:
    """Import torchvision, working around the CPU-torch import failure; a clear error if it is missing."""
    try:
        return importlib.import_module("torchvision")
    except ModuleNotFoundError:
        raise ImportError(
            "torchvision is not installed; `pip install torchvision` (kwlab's lab extra has it)"
        ) from None
    except RuntimeError:
        _define_missing_torchvision_ops()
        import sys

        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        return importlib.import_module("torchvision")


def import_timm() -> ModuleType:
    """Import timm (optional); a clear error if it is missing."""
    try:
        return importlib.import_module("timm")
    except ModuleNotFoundError:
        raise ImportError("timm is not installed; `pip install timm` to convert timm models") from None
