"""Dynamic-convolution layers: KernelWarehouse and the attention protocol they all follow."""
from .attention import ATTENTION_FUNCTIONS, ATTENTION_NORMS, KWAttention
from .base import DynamicAttention, DynamicLayer, Tap, dynamic_layers, get_temperature, set_temperature
from .kernelwarehouse import KW_LAYERS, KWConv1d, KWConv2d, KWConv3d, KWLinear, Warehouse
from .warehouse import KWPlan, LayerSpec, WarehouseOptions, plan_warehouses

__all__ = ["ATTENTION_FUNCTIONS", "ATTENTION_NORMS", "DynamicAttention", "DynamicLayer", "KWAttention", "KWConv1d",
           "KWConv2d", "KWConv3d", "KWLinear", "KWPlan", "KW_LAYERS", "LayerSpec", "Tap", "Warehouse",
           "WarehouseOptions", "dynamic_layers", "get_temperature", "plan_warehouses", "set_temperature"]
