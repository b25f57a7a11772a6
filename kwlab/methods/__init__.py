"""How a static network becomes a dynamic one: the method table and the one conversion front door.

Every method is declared once, in :data:`METHODS` (:mod:`kwlab.methods.table`). A row says which layer the
method uses, how a static network is converted (:func:`convert`; the family's rows carry their
:class:`~kwlab.methods.wiring.Wiring`), which presets it has, what its temperature means and how it is
scheduled, which :class:`kwlab.experiments.RunConfig` fields apply to it, and which options its converter
accepts. ``create_model``, ``RunConfig``, the CLI and :func:`list_methods` all read this table, so a new
method is one layer file plus one row.

Conversion rules shared by every method (:mod:`kwlab.methods.surgery`): the candidates are the method's
layer types that are not inside a dynamic layer already; ``include`` (glob patterns or module prefixes),
when given, replaces the method's default wiring with exactly the matching layers; ``exclude`` then
removes layers. A pattern that matches no layer of the model is an error.
"""

from __future__ import annotations

from . import family
from .family import plan_family
from .kernelwarehouse import kernelwarehouse
from .kw_options import KW_PRESETS, KWOptions
from .kw_plan import plan_kernelwarehouse
from .option_types import OptionError
from .table import (
    METHOD_FIELDS,
    METHODS,
    Method,
    convert,
    get_method,
    list_methods,
    method_fields,
    methods_markdown,
    option_owner,
    take_knobs,
)
from .temperature import TemperatureSchedule, TemperatureScheduler
from .wiring import Wiring

__all__ = [
    "Method",
    "METHODS",
    "METHOD_FIELDS",
    "Wiring",
    "method_fields",
    "list_methods",
    "get_method",
    "convert",
    "methods_markdown",
    "take_knobs",
    "option_owner",
    "kernelwarehouse",
    "plan_kernelwarehouse",
    "KWOptions",
    "plan_family",
    "family",
    "KW_PRESETS",
    "TemperatureSchedule",
    "TemperatureScheduler",
    "OptionError",
]
