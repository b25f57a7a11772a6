"""Guarded imports of optional packages (torchvision, timm) -- never imported by kwlab's core.

One guard serves every path that reaches torchvision: :func:`import_torchvision`, :func:`import_timm`
(timm imports torchvision) and :func:`import_module` (``"module:function"`` archs such as
``torchvision.models:resnet18``). The guard is :func:`define_torchvision_op_schemas` (public): on a
torchvision build whose compiled ops do not match the installed torch (a CUDA wheel on a CPU-only torch,
pytorch/vision#9085), ``import torchvision`` fails with "operator torchvision::nms does not exist"; defining
the missing op schemas lets the import (and every model builder) succeed. nms itself stays unavailable.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

import torch

__all__ = ["import_torchvision", "import_timm", "import_module", "define_torchvision_op_schemas"]

_LIBS: list = []  # keeps the torch.library.Library objects (and so the schemas) alive


def define_torchvision_op_schemas() -> bool:
    """Define the ``torchvision::nms`` and ``qnms`` op schemas when no torchvision build registered them.

    Call it before importing torchvision (or anything that imports it) on a machine where the import fails
    with "operator torchvision::nms does not exist". Only the schemas are defined, not the kernels.

    Returns:
        True when it defined them, False when they already existed (nothing to do).
    """

    try:
        torch._C._dispatch_find_schema_or_throw("torchvision::nms", "")
        return False
    except RuntimeError:
        pass
    try:
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    except RuntimeError:
        return False
    _LIBS.append(lib)
    return True


def _forget(prefixes: tuple[str, ...]) -> None:
    """Drop half-imported modules so the next import starts clean."""
    for name in [m for m in sys.modules if m.split(".")[0] in prefixes]:
        del sys.modules[name]


def _is_op_schema_error(err: BaseException) -> bool:
    return isinstance(err, RuntimeError) and "torchvision::" in str(err)


def import_module(name: str) -> ModuleType:
    """``importlib.import_module(name)`` with the torchvision guard (for torchvision, timm, or any module
    that imports them).

    Raises:
        ImportError: the module (or torchvision/timm) is not installed.
    """
    top = name.split(".")[0]
    if top == "torchvision":
        import_torchvision()
    try:
        return importlib.import_module(name)
    except RuntimeError as err:
        if not _is_op_schema_error(err):
            raise
    define_torchvision_op_schemas()
    _forget(("torchvision", top))
    return importlib.import_module(name)


def import_torchvision() -> ModuleType:
    """Import torchvision, working around the op-schema import failure; a clear error if it is missing."""
    try:
        return importlib.import_module("torchvision")
    except ModuleNotFoundError:
        raise ImportError(
            "torchvision is not installed; `pip install torchvision` (kwlab's lab extra has it)"
        ) from None
    except RuntimeError as err:
        if not _is_op_schema_error(err):
            raise
    define_torchvision_op_schemas()
    _forget(("torchvision",))
    return importlib.import_module("torchvision")


def import_timm() -> ModuleType:
    """Import timm (it imports torchvision, so it goes through the guard); a clear error if missing."""
    try:
        return import_module("timm")
    except ModuleNotFoundError as err:
        if err.name != "timm":
            raise
        raise ImportError("timm is not installed; `pip install timm` to convert timm models") from None
