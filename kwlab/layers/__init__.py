"""Dynamic-convolution layers: KernelWarehouse, its relatives, and the attention protocol they all follow."""

from .attention import ATTENTION_FUNCTIONS, ATTENTION_NORMS, KWAttention
from .base import (
    NO_TEMPERATURE,
    DynamicAttention,
    DynamicLayer,
    Tap,
    TemperatureContract,
    dynamic_layers,
    get_temperature,
    parameter_breakdown,
    set_temperature,
)
from .condconv import CondConv2d
from .dcd import DCDConv2d, DCDLinear
from .dyconv import DynamicConv2d
from .fdconv import FDConv2d
from .kerneldna import KernelDNAConv2d
from .kernelwarehouse import KW_LAYERS, KWConv1d, KWConv2d, KWConv3d, KWLinear, Warehouse
from .odconv import ODConv2d
from .warehouse import KWPlan, LayerSpec, WarehouseOptions, plan_warehouses

__all__ = [
    "ATTENTION_FUNCTIONS",
    "ATTENTION_NORMS",
    "CondConv2d",
    "DCDConv2d",
    "DCDLinear",
    "DynamicAttention",
    "DynamicConv2d",
    "DynamicLayer",
    "FDConv2d",
    "KernelDNAConv2d",
    "KWAttention",
    "KWConv1d",
    "KWConv2d",
    "KWConv3d",
    "KWLinear",
    "KWPlan",
    "KW_LAYERS",
    "LayerSpec",
    "NO_TEMPERATURE",
    "ODConv2d",
    "Tap",
    "TemperatureContract",
    "Warehouse",
    "WarehouseOptions",
    "dynamic_layers",
    "get_temperature",
    "parameter_breakdown",
    "plan_warehouses",
    "set_temperature",
]
