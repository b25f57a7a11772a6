"""kwlab: a lab bench for dynamic convolution -- faithful KernelWarehouse layers, their relatives,
instruments that look inside the attention, and experiments that train and compare them.

Quick start::

    import kwlab
    model = kwlab.create_model("resnet20_cifar", method="kw", preset="1x", num_classes=10)
    kwlab.set_temperature(model, 0.5)
"""
from __future__ import annotations

import importlib

from .convert import kernelwarehouse
from .layers import (ATTENTION_FUNCTIONS, DynamicAttention, DynamicLayer, KWAttention, KWConv1d, KWConv2d, KWConv3d,
                     KWLinear, LayerSpec, Warehouse, WarehouseOptions, dynamic_layers, get_temperature,
                     plan_warehouses, set_temperature)
from .layers.kernelwarehouse import warehouses
from .models import create_model, list_methods, list_models
from .temperature import TemperatureSchedule
from .utils import count_parameters

__version__ = "0.1.0"

__all__ = ["ATTENTION_FUNCTIONS", "DynamicAttention", "DynamicLayer", "KWAttention", "KWConv1d", "KWConv2d",
           "KWConv3d", "KWLinear", "LayerSpec", "TemperatureSchedule", "Warehouse", "WarehouseOptions",
           "count_parameters", "create_model", "dynamic_layers", "get_temperature", "kernelwarehouse",
           "list_methods", "list_models", "load_official", "plan_warehouses", "set_temperature", "warehouses",
           "Probe", "ProbeCallback", "freeze_attention", "unfreeze_attention", "CondConv2d", "DynamicConv2d",
           "ODConv2d", "KernelDNAConv2d", "RunConfig", "fit"]

# Names from modules that import heavier optional packages (pandas, matplotlib) load on first use.
_LAZY = {
    "load_official": ("kwlab.official", "load_official"),
    "Probe": ("kwlab.probe", "Probe"),
    "ProbeCallback": ("kwlab.probe", "ProbeCallback"),
    "freeze_attention": ("kwlab.freeze", "freeze_attention"),
    "unfreeze_attention": ("kwlab.freeze", "unfreeze_attention"),
    "CondConv2d": ("kwlab.layers.condconv", "CondConv2d"),
    "DynamicConv2d": ("kwlab.layers.dyconv", "DynamicConv2d"),
    "ODConv2d": ("kwlab.layers.odconv", "ODConv2d"),
    "KernelDNAConv2d": ("kwlab.layers.kerneldna", "KernelDNAConv2d"),
    "RunConfig": ("kwlab.train", "RunConfig"),
    "fit": ("kwlab.train", "fit"),
}
_SUBMODULES = ("data", "family", "metrics", "ops", "plot", "probe", "report", "sweep", "train", "recipes", "teaching")


def __getattr__(name: str):
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    if name in _SUBMODULES:
        return importlib.import_module(f"kwlab.{name}")
    raise AttributeError(f"module 'kwlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))
