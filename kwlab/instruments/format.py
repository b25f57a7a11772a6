"""Tables for people: :func:`table` turns a result table (a sweep summary, a budget table, a plan) into the
strings a reader wants to see, one rule per kind of column, so notebooks never show raw floats or JSON.

* counts (``params*``, ``n``, ``m``, ``n_seeds``, ... and any float column holding whole numbers) as integers
  with thousands separators: ``201438200.0`` -> ``201,438,200``;
* compute (``macs``, ``flops``) in M / G: ``10314048`` -> ``10.3M``; sizes (``*bytes``) in MB / GB;
* accuracies (a name containing ``acc``) to 3 decimals; a metric ``M_mean`` with its ``M_ci95`` becomes one
  column ``M (mean ± 95% CI)``, ``0.544 ± 0.039``;
* other numbers to 3 significant digits, trailing zeros kept (``0.510``, ``18.2``); booleans as yes/no;
* dicts and JSON objects (``model_kwargs``) as ``key=value``, lists of numbers joined by ``-`` (widths
  ``8-16-32``), tuples of numbers by ``×`` (shapes ``64×64×3×3``);
* ``decimals={"r": 2}``: those columns as plain numbers to that many decimals instead;
* in a table with a ``method`` column, the fields that do not apply to static nets (the KW knobs ``b``,
  ``budget``, ``m``, ``cell_in``, ``cell_out``, ``sharing``, ``sharing_range``, ``preset``) are empty
  (shown as missing) in the rows of static nets, whatever the table holds there (``b=1``, a ``-``);
* a missing value as an en dash; columns that are missing everywhere are dropped, and rows whose numbers
  are all missing are dropped (``drop_empty=True``);
* two-level columns (``pd.concat({"trained": a, "untrained": b}, axis=1)``) keep their levels; each column
  is formatted by its last level (``("trained", "diversity")`` as ``diversity``).

The result is a DataFrame of strings (the input is not changed); it displays as an HTML table in Jupyter and
prints as text anywhere else.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

__all__ = ["table", "count", "compute", "accuracy", "number", "value"]

MISSING = "–"
_COUNT_NAMES = ("params", "n_seeds", "num_cells", "num_mixtures", "num_classes", "seed", "epochs", "m", "n")
_COMPUTE_NAMES = ("macs", "flops")
#: Columns that do not apply to a static net (method "static"): shown as missing in its rows.
DYNAMIC_ONLY = ("b", "budget", "m", "cell_in", "cell_out", "sharing", "sharing_range", "preset")


def _missing(v: Any) -> bool:
    if v is None:
        return True
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):  # arrays, lists: not a missing scalar
        return False


def count(v: Any) -> str:
    """A whole number with thousands separators (``1234567.0`` -> ``1,234,567``)."""
    return MISSING if _missing(v) else f"{round(float(v)):,}"


def compute(v: Any) -> str:
    """MACs or FLOPs in K / M / G (``10314048`` -> ``10.3M``)."""
    if _missing(v):
        return MISSING
    v = float(v)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(v) >= scale:
            x = v / scale
            return f"{x:.0f}{unit}" if abs(x) >= 100 else f"{x:.{1 if abs(x) >= 10 else 2}f}{unit}"
    return f"{v:.3g}"


def accuracy(v: Any, digits: int = 3) -> str:
    """An accuracy (or any share) to ``digits`` decimals."""
    return MISSING if _missing(v) else f"{float(v):.{digits}f}"


def number(v: Any) -> str:
    """A float to 3 significant digits (``0.51`` -> ``0.510``); a whole number or one from 1,000 up as an
    integer (``1234.5`` -> ``1,234``)."""
    if _missing(v):
        return MISSING
    if isinstance(v, bool):
        return "yes" if v else "no"
    f = float(v)
    if math.isfinite(f) and (f == round(f) or abs(f) >= 1000) and abs(f) < 1e15:
        return f"{round(f):,}"  # 1,234 rather than 1.23e+03
    text = f"{f:#.3g}"  # trailing zeros kept (0.510 beside 0.512, not 0.51), but not a bare "100."
    return text.rstrip(".") if "e" not in text else text


def value(v: Any) -> str:
    """Any other cell: dicts and JSON objects as ``key=value``, number lists as ``8-16-32``."""
    if isinstance(v, str):
        text = v.strip()
        if text.startswith(("{", "[")):
            try:
                return value(json.loads(text))
            except ValueError:
                return v
        return v if text else MISSING
    if isinstance(v, Mapping):
        return ", ".join(f"{k}={value(x)}" for k, x in v.items()) or MISSING
    if isinstance(v, Sequence) and not isinstance(v, str | bytes):
        if v and all(isinstance(x, numbers.Number) for x in v):  # a shape 64×64×3×3, widths 8-16-32
            return ("×" if isinstance(v, tuple) else "-").join(number(x) for x in v)
        return ", ".join(value(x) for x in v)
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, numbers.Number):
        return number(v)
    return MISSING if _missing(v) else str(v)


def _leaf_at(name: Any) -> int | None:
    """Where the rules read a column name: its last non-empty level (a MultiIndex column), None for a str."""
    if not isinstance(name, tuple):
        return None
    filled = [i for i, part in enumerate(name) if str(part) != ""]
    return filled[-1] if filled else len(name) - 1


def _leaf(name: Any) -> str:
    """The name the rules read: ``"acc_mean"`` for ``"acc_mean"`` and for ``("trained", "acc_mean")``."""
    at = _leaf_at(name)
    return str(name) if at is None else str(name[at])


def _with_leaf(name: Any, leaf: str) -> Any:
    """``name`` with its rule-reading part replaced by ``leaf`` (the same kind: str or tuple)."""
    at = _leaf_at(name)
    return leaf if at is None else (*name[:at], leaf, *name[at + 1 :])


def _is_count(name: str, col: pd.Series) -> bool:
    base = name.lower()
    named = base in _COUNT_NAMES or base.startswith("params") or base.endswith(("_count", "_cells"))
    nums = pd.to_numeric(col, errors="coerce").dropna()
    whole = not nums.empty and bool((nums == nums.round()).all())
    return whole and (named or pd.api.types.is_integer_dtype(col) or pd.api.types.is_float_dtype(col))


def _formatter(name: Any, col: pd.Series, digits: int, decimals: Mapping[str, int] | None = None):
    name = _leaf(name)
    base = name.lower()
    if decimals and name in decimals and pd.api.types.is_numeric_dtype(col):
        return lambda v: accuracy(v, decimals[name])
    if pd.api.types.is_bool_dtype(col):
        return lambda v: MISSING if _missing(v) else ("yes" if v else "no")
    if not pd.api.types.is_numeric_dtype(col):
        return value
    if any(base == c or base.startswith(c + "_") or base.endswith("_" + c) for c in _COMPUTE_NAMES):
        return compute
    if "acc" in base:
        return lambda v: accuracy(v, digits)
    if base.endswith("bytes"):
        return lambda v: MISSING if _missing(v) else compute(v).replace("G", " GB").replace("M", " MB")
    if _is_count(name, col):
        return count
    return number


def table(
    df: pd.DataFrame,
    columns: Sequence[str] | None = None,
    *,
    index: str | None = None,
    digits: int = 3,
    decimals: Mapping[str, int] | None = None,
    drop_empty: bool = True,
    intervals: bool = True,
) -> pd.DataFrame:
    """``df`` (or its ``columns``, those that exist) formatted for reading; a DataFrame of strings.

    Args:
        columns: the columns to keep, in this order (names that are absent are skipped); None keeps all.
        index: a column to use as the row labels (its values formatted too); with two-level columns, the
            column ``(index, "")`` that ``reset_index`` makes of a named index.
        digits: decimals of accuracies.
        decimals: column name -> decimals, for numeric columns shown to a fixed number of decimals (e.g.
            ``{"r": 2}`` for correlations); a two-level column is named by its last level, a ``M_mean`` /
            ``M_ci95`` pair by ``M``.
        drop_empty: drop columns that are missing everywhere and rows whose numeric cells are all missing.
        intervals: join ``M_mean`` and ``M_ci95`` into one column ``M (mean ± 95% CI)`` (``M_std`` is dropped
            when the interval is shown).
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a pandas DataFrame, got {type(df).__name__}")
    methods = [c for c in df.columns if _leaf(c) == "method"]
    # positions of static nets' rows, read before the method column may be left out
    static = df[methods[0]].eq("static").to_numpy() if methods else None
    if columns is not None:
        df = df[[c for c in columns if c in df.columns]]
    if drop_empty and not df.empty:
        df = df.loc[:, [c for c in df.columns if not df[c].map(_missing).all()]]
        numeric = [
            c
            for c in df.columns
            if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) and c != index
        ]
        if numeric:
            keep = (~df[numeric].isna().all(axis=1)).to_numpy()
            df = df[keep]
            static = static[keep] if static is not None else None
    out = {}
    skip = set()
    pairs = {}  # M_mean column -> its M_ci95 column
    if intervals:
        for name in df.columns:
            leaf = _leaf(name)
            if leaf.endswith("_mean") and _with_leaf(name, leaf[:-5] + "_ci95") in df.columns:
                pairs[name] = _with_leaf(name, leaf[:-5] + "_ci95")
                skip.update({pairs[name], _with_leaf(name, leaf[:-5] + "_std")})
    for name in df.columns:
        if name in skip:
            continue
        col = df[name]
        if name in pairs:
            stem = _with_leaf(name, _leaf(name)[:-5])
            fmt = _formatter(stem, col, digits, decimals)
            out[_with_leaf(name, f"{_leaf(stem)} (mean ± 95% CI)")] = [
                fmt(m) if _missing(c) or _missing(m) else f"{fmt(m)} ± {fmt(c)}"  # no mean: no interval
                for m, c in zip(col, df[pairs[name]])
            ]
            continue
        fmt = _formatter(name, col, digits, decimals)
        out[name] = [fmt(v) for v in col]
        if static is not None and _leaf(name) in DYNAMIC_ONLY:
            out[name] = [MISSING if s else v for v, s in zip(out[name], static)]
    result = pd.DataFrame(out, index=df.index)
    if index is not None:
        # a str names a plain column, or the column ("layer", "") that reset_index makes of a MultiIndex frame
        keys = [
            c
            for c in result.columns
            if c == index or (isinstance(c, tuple) and _leaf(c) == index and _leaf_at(c) == 0)
        ]
        if not keys:
            raise ValueError(f"index must be one of the kept columns {list(result.columns)}, got {index!r}")
        labels = result[keys[0]].to_list()
        result = result.drop(columns=[keys[0]])
        result.index = pd.Index(labels, name=index)
    else:
        result = result.reset_index(drop=True)
        result.index = result.index + 1
    return result
