"""Model zoo: the paper's architectures and CIFAR variants, static or KernelWarehouse."""

from __future__ import annotations

from functools import partial

from kwlab.methods.kernelwarehouse import KW_PRESETS as RESNET_PRESETS

from . import convnext, mobilenetv2, vit  # noqa: F401 - each registers its own entries
from .registry import ModelEntry, create_model, list_models, model_entry, register_model
from .resnet import BasicBlock, Bottleneck, ResNet, resnet_kw_stage_rule

__all__ = [
    "ModelEntry",
    "ResNet",
    "create_model",
    "list_models",
    "model_entry",
    "register_model",
    "resnet_kw_stage_rule",
    "RESNET_PRESETS",
]
_R50_PRESETS = {**RESNET_PRESETS, "1/2x": dict(RESNET_PRESETS["1/2x"], nonlocal_basis_ratio=0.0625)}
_RESNET_KW = ("dropout", "drop_path_rate", "in_chans")

register_model(
    ModelEntry(
        "resnet18",
        partial(ResNet, BasicBlock, [2, 2, 2, 2]),
        _RESNET_KW + ("widths",),
        RESNET_PRESETS,
        (3, 224, 224),
        description="ResNet-18 (ImageNet)",
    )
)
register_model(
    ModelEntry(
        "resnet50",
        partial(ResNet, Bottleneck, [3, 4, 6, 3]),
        _RESNET_KW + ("widths",),
        _R50_PRESETS,
        (3, 224, 224),
        description="ResNet-50 (ImageNet)",
    )
)
register_model(
    ModelEntry(
        "resnet18_cifar",
        partial(ResNet, BasicBlock, [2, 2, 2, 2], stem="cifar"),
        _RESNET_KW + ("widths",),
        RESNET_PRESETS,
        (3, 32, 32),
        description="ResNet-18 with a 3x3 stem and no max-pool (CIFAR)",
    )
)


def _resnet20(num_classes: int = 10, widths: tuple[int, ...] = (16, 32, 64), **kw) -> ResNet:
    return ResNet(BasicBlock, [3, 3, 3], widths=widths, num_classes=num_classes, stem="cifar", **kw)


register_model(
    ModelEntry(
        "resnet20_cifar",
        _resnet20,
        _RESNET_KW + ("widths",),
        RESNET_PRESETS,
        (3, 32, 32),
        description="ResNet-20 (16-32-64, CIFAR) with 1x1-conv shortcuts",
    )
)

# official builders: KernelDNA (resnet18/50, mobilenetv2), DCD (the ResNets and MobileNetV2)
from . import dcd, kerneldna  # noqa: E402, F401
