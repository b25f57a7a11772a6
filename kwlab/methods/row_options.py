"""What a method row owns besides its wiring: the type of its options (:func:`options_type`), the words and
sizes that describe one configuration of it (:class:`Description`), and the one build of a model from presets,
knobs and training options (:func:`build`). :class:`kwlab.methods.Method` exposes them as
``row.options_type``, ``row.describe(...)`` and ``row.build(...)``.

A family row's options type is derived, never written out: one field per option of the row, with the type
and default of the same keyword of the row's layer (the wiring's defaults win), so a new method's new knob
(a keyword of its layer, listed in its row's ``options``) is typed, checked, swept and reported with no edit
anywhere else.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from torch import nn

from .kw_options import KW_PRESETS
from .option_types import OPTION_TYPES, OptionError

__all__ = ["Description", "LABEL_PARTS"]

#: The configuration fields a label names, in order, with their format (every method; a field not set is
#: left out). A row's own knobs (the options a run holds beside the fields, ``RunConfig.options``) follow as
#: ``name=value``.
LABEL_PARTS: tuple[tuple[str, str], ...] = (
    ("preset", "{}"),
    ("budget", "b={:g}"),
    ("sharing", "{}"),
    ("reduction", "r={:g}"),
    ("attention", "{}"),
    ("attention_init", "init={}"),
)


@dataclass(frozen=True)
class Description:
    """One configuration of a method in words and sizes (:meth:`kwlab.methods.Method.describe`).

    Attributes:
        b: the budget, cells in a warehouse per cell cut from its layers (1.0 for a method without one).
        m: cells per kernel, 1 / (cell_in x cell_out) (1.0 for a method without cells).
        parts: the label after the method name (``("4x", "constant")``, ``("b=1", "layer", "gain=2")``).
    """

    b: float = 1.0
    m: float = 1.0
    parts: tuple[str, ...] = ()


def _set(value: Any) -> bool:
    if value is None or value == "":
        return False
    return not (isinstance(value, float) and math.isnan(value))


def cell_part(values: Mapping[str, Any]) -> list[str]:
    """``["cell 1/2"]`` (or ``["cell 1/2x1/4"]`` for out x in) when the cell ratios are not 1, else []."""
    ratios = [float(values[k]) if _set(values.get(k)) else 1.0 for k in ("cell_out", "cell_in")]
    if ratios == [1.0, 1.0]:
        return []
    text = [str(Fraction(r).limit_denominator(64)) for r in ratios]
    return [f"cell {text[0]}" if text[0] == text[1] else f"cell {text[0]}x{text[1]}"]


def describe(
    row, values: Mapping[str, Any], knobs: Mapping[str, Any] | None = None, arch_presets=None
) -> Description:
    """``row.describe(values, knobs, arch_presets)``: b, m and the label parts of one configuration.
    ``values`` maps config fields to values (a results row, a config dict; unset: None, NaN or absent),
    ``knobs`` the run's other options (``RunConfig.options``), ``arch_presets`` the arch's presets of the
    method (default: the method's own)."""
    if row.layer is None:  # static: nothing to name
        return Description()
    parts: list[str] = []
    for key, fmt in LABEL_PARTS:
        value = values.get(key)
        if _set(value):
            parts.append(fmt.format(value))
        if key == "budget":
            parts += cell_part(values)
    parts += [f"{k}={_text(v)}" for k, v in sorted((knobs or {}).items())]
    sizes = row.size(values, arch_presets) if row.size is not None else {}
    b = sizes.get("budget", 1.0)
    m = 1.0 / (sizes.get("cell_in", 1.0) * sizes.get("cell_out", 1.0))
    return Description(float(b), float(m), tuple(parts))


def _text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# ---------------------------------------------------------------------------------------------- options type
def options_type(row) -> type:
    """The frozen dataclass of ``row``'s options: ``row.options_class`` where the row gives one (KW:
    :class:`kwlab.methods.KWOptions`), else derived from the row's ``options`` and its layer's keywords."""
    if row.options_class is not None:
        return row.options_class
    signature = _keywords(row.layer)
    defaults = dict(row.wiring.defaults) if row.wiring is not None else {}
    fields = []
    for name in row.options:
        param = signature.get(name)
        hint = _hint(row.layer, name) if param is not None else Any
        default = defaults.get(name, param.default if param is not None else None)
        if default is inspect.Parameter.empty:
            default = None
        fields.append((name, hint, dataclasses.field(default=default)))
    title = row.layer.__name__ if row.layer is not None else row.name.capitalize()
    return dataclasses.make_dataclass(f"{title}Options", fields, frozen=True)


def _keywords(layer: type | None) -> dict[str, inspect.Parameter]:
    if layer is None:
        return {}
    return {
        k: p
        for k, p in inspect.signature(layer.__init__).parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and k != "self"
    }


def _hint(layer: type, name: str) -> Any:
    try:
        return typing.get_type_hints(layer.__init__).get(name, Any)
    except Exception:  # noqa: BLE001 - an annotation that cannot be resolved: the option is untyped
        return Any


def check_knob(row, name: str, value: Any) -> None:
    """Refuse a value of the wrong type for an option that :data:`OPTION_TYPES` does not list, by the type
    its layer declares (a new method's new knob: ``gain: float`` refuses ``"2"``)."""
    if name in OPTION_TYPES or value is None:
        return
    hint = {f.name: f.type for f in dataclasses.fields(row.options_type)}.get(name, Any)
    allowed = [a for a in (typing.get_args(hint) or (hint,)) if a is not type(None)]
    simple = [a for a in allowed if a in (bool, int, float, str)]
    if not simple or len(simple) != len(allowed):
        return  # a structured or unannotated option: checked where it is used
    ok = any(
        isinstance(value, bool)
        if a is bool
        else (isinstance(value, a) and not isinstance(value, bool))
        or (a is float and isinstance(value, int) and not isinstance(value, bool))
        for a in simple
    )
    if isinstance(value, float) and not math.isfinite(value):
        ok = False
    if not ok:
        names = " or ".join(a.__name__ for a in simple)
        raise OptionError(
            f"option {name}={value!r} of method {row.name!r} has type {type(value).__name__}: {name} must be "
            f"{'a finite ' if float in simple else 'a '}{names}"
        )


# ---------------------------------------------------------------------------------------------- the build
def build(
    row,
    builder: Callable[[], nn.Module],
    *,
    preset: str | None = None,
    options: Mapping[str, Any] | None = None,
    arch_presets: Mapping[str, Mapping[str, Any]] | None = None,
    prepare: Callable[..., dict] | None = None,
    guarded: bool = False,
    where: str = "",
) -> nn.Module:
    """``row.build(builder, ...)``: ``builder()``'s static network converted to the row's method, the one
    merge of a model's settings, in this order: the row's ``train_options`` (trained from scratch: KW's
    official init), the size guards switched off unless ``guarded`` (a registered arch's official wiring is
    never refused for its size), the preset's options, then ``options``; ``prepare(model, preset,
    settings)`` (an arch's per-warehouse KW options) last. A wrong preset fails before the build."""
    if row.converter is None:
        return builder()
    settings = row.preset_options(preset, arch_presets, where)  # a wrong preset fails before the build
    model = builder()
    unguarded = (
        {}
        if guarded
        else {k: None for k in ("max_param_ratio", "attention_share_warning") if k in row.options}
    )
    settings = {**row.train_options, **unguarded, **settings, **(options or {})}
    if prepare is not None:
        settings = prepare(model, "1x" if preset is None else preset, settings)
    return row.converter(model, **settings)


def kw_size(values: Mapping[str, Any], arch_presets=None) -> dict[str, float]:
    """KW's budget and cell ratios of one configuration: its preset's (the arch's official presets, else the
    generic :data:`kwlab.methods.KW_PRESETS`), overridden by ``budget``/``cell_in``/``cell_out``."""
    table = KW_PRESETS if arch_presets is None else arch_presets
    preset = values.get("preset")
    sizes: dict[str, float] = {}
    if isinstance(preset, str):
        if preset in table:
            sizes = {k: float(v) for k, v in table[preset].items() if k in ("budget", "cell_in", "cell_out")}
        else:  # a preset this arch does not list: its name says the budget
            num, _, den = preset.rstrip("x").partition("/")
            try:
                sizes = {"budget": float(num) / float(den or 1)}
            except ValueError:
                sizes = {}
    for key in ("budget", "cell_in", "cell_out"):
        if _set(values.get(key)):
            sizes[key] = float(values[key])
    return sizes
