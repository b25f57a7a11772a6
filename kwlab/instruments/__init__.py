"""Look inside a model: the probe (hooks live only in :mod:`kwlab.instruments.probe`), the table of the
statistics it streams (:mod:`kwlab.instruments.statistics`), each computed by :mod:`kwlab.instruments.metrics`
(the only implementation of each), freezing the attention, and every plot. Instruments never import
:mod:`kwlab.experiments`."""

from . import format, metrics, plot, statistics
from .freeze import freeze_attention, unfreeze_attention
from .probe import Probe, capture, select_layers
from .probe_store import ProbeResult, load

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
    "statistics",
]
