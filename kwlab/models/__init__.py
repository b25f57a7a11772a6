"""Model zoo: the paper's architectures and CIFAR variants, static or KernelWarehouse.

Each model file registers its own entries (:func:`register_model` at its bottom): ``resnet``, ``mobilenetv2``,
``convnext``, ``vit``, and ``kerneldna`` / ``dcd`` (the official KernelDNA and DCD builders, registered on
the ResNet and MobileNetV2 entries with :func:`kwlab.models.registry.register_method_builder`). A new model is
one file plus its import below.
"""

from __future__ import annotations

from . import convnext, dcd, kerneldna, mobilenetv2, resnet, vit  # noqa: F401 - each registers its own entries
from .registry import ModelEntry, create_model, list_models, model_entry, register_model
from .resnet import ResNet, resnet_kw_stage_rule

__all__ = [
    "ModelEntry",
    "ResNet",
    "create_model",
    "list_models",
    "model_entry",
    "register_model",
    "resnet_kw_stage_rule",
]
