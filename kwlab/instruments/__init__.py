"""Look inside a model: the probe (hooks live only in :mod:`kwlab.instruments.probe`), the statistics it
computes (:mod:`kwlab.instruments.metrics`, the only implementation of each), freezing the attention, and
every plot. Instruments never import :mod:`kwlab.experiments`."""

from . import format, metrics, plot
from .freeze import freeze_attention, unfreeze_attention
from .probe import Probe, ProbeResult, capture, load, select_layers

__all__ = [
    "Probe",
    "ProbeResult",
    "capture",
    "freeze_attention",
    "load",
    "select_layers",
    "unfreeze_attention",
    "format",
    "metrics",
    "plot",
]
