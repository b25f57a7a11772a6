"""kwlab: a lab bench for dynamic convolution -- faithful KernelWarehouse layers, their relatives,
instruments that look inside the attention, and experiments that train and compare them.

The package has three wings above its core (``ops``, ``layers``, ``models``):

* :mod:`kwlab.methods` -- the method table, :func:`convert`, official checkpoints, temperature schedules;
* :mod:`kwlab.instruments` -- the probe, metrics, freezing and plots;
* :mod:`kwlab.experiments` -- configs, training, data, sweeps and reports.

Quick start::

    import kwlab
    model = kwlab.create_model("resnet20_cifar", method="kw", preset="1x", num_classes=10)
    kwlab.set_temperature(model, 0.5)
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys

from .layers import (
    ATTENTION_FUNCTIONS,
    CondConv2d,
    DynamicAttention,
    DynamicConv2d,
    DynamicLayer,
    KernelDNAConv2d,
    KWAttention,
    KWConv1d,
    KWConv2d,
    KWConv3d,
    KWLinear,
    LayerSpec,
    ODConv2d,
    Warehouse,
    WarehouseOptions,
    dynamic_layers,
    get_temperature,
    parameter_breakdown,
    plan_warehouses,
    set_temperature,
)
from .layers.kernelwarehouse import warehouses
from .methods import (
    METHODS,
    TemperatureSchedule,
    TemperatureScheduler,
    convert,
    kernelwarehouse,
    list_methods,
    plan_kernelwarehouse,
)
from .methods.official import load_official, to_official
from .models import create_model, list_models
from .utils import count_macs, count_parameters

__version__ = "0.1.0"

__all__ = [
    "ATTENTION_FUNCTIONS",
    "CondConv2d",
    "DynamicAttention",
    "DynamicConv2d",
    "DynamicLayer",
    "KernelDNAConv2d",
    "KWAttention",
    "KWConv1d",
    "KWConv2d",
    "KWConv3d",
    "KWLinear",
    "LayerSpec",
    "METHODS",
    "ODConv2d",
    "TemperatureSchedule",
    "TemperatureScheduler",
    "Warehouse",
    "WarehouseOptions",
    "convert",
    "count_macs",
    "count_parameters",
    "create_model",
    "dynamic_layers",
    "get_temperature",
    "kernelwarehouse",
    "list_methods",
    "list_models",
    "load_official",
    "parameter_breakdown",
    "plan_kernelwarehouse",
    "plan_warehouses",
    "set_temperature",
    "to_official",
    "warehouses",
    "Probe",
    "ProbeCallback",
    "freeze_attention",
    "unfreeze_attention",
    "RunConfig",
    "fit",
]

# The instruments and experiments need pandas/matplotlib (the "lab" extra): their names load on first use.
_WING_NAMES = {
    "Probe": "kwlab.instruments.probe",
    "freeze_attention": "kwlab.instruments.freeze",
    "unfreeze_attention": "kwlab.instruments.freeze",
    "ProbeCallback": "kwlab.experiments.callbacks",
    "RunConfig": "kwlab.experiments.config",
    "fit": "kwlab.experiments.train",
}
_WINGS = ("methods", "instruments", "experiments", "ops", "layers", "models", "teaching", "testing")

#: Modules that moved when the package was regrouped: old name -> new home.
MOVED = {
    "convert": "kwlab.methods.kernelwarehouse",
    "family": "kwlab.methods.family",
    "official": "kwlab.methods.official",
    "temperature": "kwlab.methods.temperature",
    "probe": "kwlab.instruments.probe",
    "metrics": "kwlab.instruments.metrics",
    "freeze": "kwlab.instruments.freeze",
    "plot": "kwlab.instruments.plot",
    "train": "kwlab.experiments.train",
    "callbacks": "kwlab.experiments.callbacks",
    "data": "kwlab.experiments.data",
    "sweep": "kwlab.experiments.sweep",
    "report": "kwlab.experiments.report",
    "recipes": "kwlab.experiments.recipes",
}


class _MovedModules(importlib.abc.MetaPathFinder):
    """Answers ``import kwlab.<old module>`` with an error that names the module's new home."""

    def find_spec(self, fullname, path=None, target=None):
        head, _, rest = fullname.partition(".")
        if head == "kwlab" and rest.split(".")[0] in MOVED:
            old = rest.split(".")[0]
            raise ModuleNotFoundError(
                f"kwlab.{old} moved to {MOVED[old]}; import it from there", name=fullname
            )
        return None


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.append(_MovedModules())


def __getattr__(name: str):
    if name in _WING_NAMES:
        return getattr(importlib.import_module(_WING_NAMES[name]), name)
    if name in _WINGS:
        return importlib.import_module(f"kwlab.{name}")
    if name in MOVED:
        raise AttributeError(f"kwlab.{name} moved to {MOVED[name]}; import it from there")
    raise AttributeError(f"module 'kwlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WING_NAMES) | set(_WINGS))
