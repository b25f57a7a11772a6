"""Model zoo: the paper's architectures and CIFAR variants, static or KernelWarehouse."""
from __future__ import annotations

import importlib
import importlib.util
from functools import partial

from .registry import (KW_FIELDS, ModelEntry, create_model, list_methods, list_models, model_entry, register_method,
                       register_model)
from .resnet import BasicBlock, Bottleneck, ResNet, resnet_kw_stage_rule

__all__ = ["KW_FIELDS", "ModelEntry", "ResNet", "create_model", "list_methods", "list_models", "model_entry",
           "register_method", "register_model", "resnet_kw_stage_rule", "RESNET_PRESETS"]

#: Official KW configs for ResNets (configs/resnet18/*.json): budget = cell_num_ratio, cell ratios.
RESNET_PRESETS = {
    "1/4x": dict(budget=0.25, cell_in=0.5, cell_out=0.5),
    "1/2x": dict(budget=0.5, cell_in=0.5, cell_out=0.5),
    "1x": dict(budget=1, cell_in=1.0, cell_out=1.0),
    "2x": dict(budget=2, cell_in=1.0, cell_out=1.0),
    "4x": dict(budget=4, cell_in=1.0, cell_out=1.0),
}
_R50_PRESETS = {**RESNET_PRESETS, "1/2x": dict(RESNET_PRESETS["1/2x"], nonlocal_basis_ratio=0.0625)}
_RESNET_KW = ("dropout", "drop_path_rate", "in_chans")

register_model(ModelEntry("resnet18", partial(ResNet, BasicBlock, [2, 2, 2, 2]), _RESNET_KW + ("widths",),
                          RESNET_PRESETS, (3, 224, 224), description="ResNet-18 (ImageNet)"))
register_model(ModelEntry("resnet50", partial(ResNet, Bottleneck, [3, 4, 6, 3]), _RESNET_KW + ("widths",),
                          _R50_PRESETS, (3, 224, 224), description="ResNet-50 (ImageNet)"))
register_model(ModelEntry("resnet18_cifar", partial(ResNet, BasicBlock, [2, 2, 2, 2], stem="cifar"),
                          _RESNET_KW + ("widths",), RESNET_PRESETS, (3, 32, 32),
                          description="ResNet-18 with a 3x3 stem and no max-pool (CIFAR)"))


def _resnet20(num_classes: int = 10, widths: tuple[int, ...] = (16, 32, 64), **kw) -> ResNet:
    return ResNet(BasicBlock, [3, 3, 3], widths=widths, num_classes=num_classes, stem="cifar", **kw)


register_model(ModelEntry("resnet20_cifar", _resnet20, _RESNET_KW + ("widths",), RESNET_PRESETS, (3, 32, 32),
                          description="ResNet-20 (16-32-64, CIFAR) with 1x1-conv shortcuts"))

# MobileNetV2 and ConvNeXt live in their own modules and register themselves.
for _name in ("mobilenetv2", "convnext"):
    if importlib.util.find_spec(f"{__name__}.{_name}") is not None:
        importlib.import_module(f"{__name__}.{_name}")
