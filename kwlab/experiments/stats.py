"""Per-configuration summaries of a sweep: runs grouped into configurations, with t-intervals over seeds.

* :func:`summarize` turns ``results.csv`` (one row per run) into ``summary.csv`` (one row per
  configuration): ``n_seeds`` and, for every metric ``M``, ``M_mean``, ``M_std`` (sample standard
  deviation, ddof = 1) and ``M_ci95`` (half-width of the 95% Student-t interval of the mean,
  ``t_{0.975, n-1} * std / sqrt(n)``: :func:`kwlab.instruments.intervals.mean_ci`, the one t-interval).
* :func:`select` picks runs; comparisons between configurations and their three verdicts live in
  :mod:`kwlab.experiments.verdicts`, the tests they apply in :mod:`kwlab.experiments.significance`.

A configuration is every config column except ``seed`` (and the per-run bookkeeping columns); runs are
grouped by it (:func:`config_keys`), never by their display label (:func:`config_labels`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd

from kwlab.experiments.callbacks import FinalProbeCallback
from kwlab.experiments.columns import COLLECTED_COLUMNS, names
from kwlab.experiments.config import RunConfig
from kwlab.experiments.train import TRAINER_COLUMNS
from kwlab.instruments.intervals import mean_ci as _mean_ci
from kwlab.instruments.left_out import left_out_text, nonfinite_runs
from kwlab.methods import METHODS
from kwlab.utils import moved_names

__all__ = [
    "METRICS",
    "RESULT_COLUMNS",
    "BUDGET_COLUMNS",
    "summarize",
    "config_columns",
    "config_label",
    "select",
    "config_keys",
    "config_id",
    "config_labels",
]

#: Every result column, as its writers declare it: the trainer
#: (:data:`kwlab.experiments.train.TRAINER_COLUMNS`), the final probe (``FinalProbeCallback.columns``)
#: and :func:`kwlab.experiments.results.collect_results` (``columns.COLLECTED_COLUMNS``).
RESULT_COLUMNS = (*TRAINER_COLUMNS, *FinalProbeCallback.columns, *COLLECTED_COLUMNS)
#: Per-run numbers summarised over seeds (those present in the table are used).
METRICS = names(RESULT_COLUMNS, "metric")
#: Per-configuration constants carried into the summary as they are (the budget and the provenance).
BUDGET_COLUMNS = names(RESULT_COLUMNS, "budget")
PROVENANCE_COLUMNS = names(RESULT_COLUMNS, "provenance")
_NOT_CONFIG = {"seed", *(c.name for c in RESULT_COLUMNS)}


def _isnan(v: Any) -> bool:
    try:
        return math.isnan(float(v))
    except (TypeError, ValueError):
        return False


def config_columns(df: pd.DataFrame) -> list[str]:
    """The columns that define a configuration: config fields except ``seed``."""

    fields = [f for f in RunConfig.field_names() if f in df.columns and f not in _NOT_CONFIG]
    return fields


def config_label(row: Mapping[str, Any] | pd.Series) -> str:
    """A short human label: ``static 8-16-32``, ``kw b=1 stage 8-16-32`` or, with cells smaller than the
    default (``cell_in``/``cell_out`` below 1), ``kw b=1 cell 1/2 stage``: the method, the parts its row's
    :meth:`~kwlab.methods.Method.describe` gives (the knobs a run holds in ``options`` as ``name=value``),
    the anneal where set, and the widths. Display only: configurations are told apart by
    :func:`config_keys`, and :func:`config_labels` makes the labels of one table unique."""
    method = row.get("method")
    parts = [str(method if method is not None else "?")]
    if method in METHODS:
        parts += METHODS[method].describe(row, _json_field(row.get("options"))).parts
    if method not in (None, "static"):
        for key, fmt in (("temperature_epochs", "anneal={:g}ep"), ("temperature_steps", "anneal={:g}steps")):
            value = row.get(key)
            if value is not None and not _isnan(value) and value != "":
                parts.append(fmt.format(value))
    kwargs = _json_field(row.get("model_kwargs"))
    if "widths" in kwargs:
        parts.append("-".join(str(w) for w in kwargs["widths"]))
    return " ".join(parts)


def _json_field(value: Any) -> dict[str, Any]:
    """A dict-valued config column (``model_kwargs``, ``options``) as a dict, from JSON text or a dict."""
    if isinstance(value, str) and value not in ("", "{}"):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def _key_frame(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    # NaN-safe grouping keys: every value as its JSON text
    return df[cols].map(lambda v: "null" if v is None or _isnan(v) else json.dumps(v, default=str))


def summarize(results: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per configuration of ``results`` (one row per run), in first-appearance order.

    Columns: the configuration's config fields, ``label``, ``n_seeds``, ``seeds``, the budget columns
    (``params``, ``params_attention``, ``params_warehouse``, ``macs``, ...), provenance (git revision,
    machine, torch version, threads; several values are joined by ``;``), ``run_ids``, ``n_left_out`` and
    ``left_out`` (the runs left out because their numbers are not finite, :func:`nonfinite_runs`, with the
    reason: ``"1 run left out: non-finite test loss"``) and, for every metric ``M``, ``M_mean``, ``M_std``
    and ``M_ci95`` over the runs kept. A configuration whose every run is left out keeps its row, with
    ``n_seeds`` 0 and NaN metrics. ``summary.attrs["left_out"]`` says it for the whole table.
    """
    if results.empty:
        return pd.DataFrame()
    metrics = [m for m in (metrics or METRICS) if m in results.columns]
    cols = config_columns(results)
    keys = config_keys(results)
    labels = config_labels(results)
    bad = nonfinite_runs(results)
    rows = []
    for key in dict.fromkeys(keys):
        group = results[(keys == key) & ~bad]
        left = results[(keys == key) & bad]
        if group.empty:  # every run left out: the row says so, with no numbers
            first = left.iloc[0]
            rows.append(
                {
                    **{c: first[c] for c in cols},
                    "label": config_label(first),
                    "n_seeds": 0,
                    "seeds": "",
                    **{c: first[c] for c in BUDGET_COLUMNS if c in left},
                    "run_ids": "",
                    "n_left_out": len(left),
                    "left_out": left_out_text(left),
                    **{f"{m}_{s}": math.nan for m in metrics for s in ("mean", "std", "ci95")},
                }
            )
            continue
        first = group.iloc[0]
        row: dict[str, Any] = {c: first[c] for c in cols}
        row["label"] = labels[group.index[0]]
        row["config_id"] = config_id(key)
        row["n_seeds"] = int(group["seed"].nunique()) if "seed" in group else len(group)
        row["seeds"] = " ".join(str(s) for s in sorted(group["seed"])) if "seed" in group else ""
        for c in BUDGET_COLUMNS:
            if c in group:
                row[c] = first[c]
        for c in PROVENANCE_COLUMNS:
            if c in group:
                values = [str(v) for v in dict.fromkeys(group[c]) if not _isnan(v)]
                row[c] = ";".join(values)
        row["run_ids"] = " ".join(group["run_id"]) if "run_id" in group else ""
        row["n_left_out"], row["left_out"] = len(left), left_out_text(left)
        for m in metrics:
            mean, std, ci = _mean_ci(pd.to_numeric(group[m], errors="coerce").tolist())
            row[f"{m}_mean"], row[f"{m}_std"], row[f"{m}_ci95"] = mean, std, ci
        rows.append(row)
    summary = pd.DataFrame(rows)
    summary.attrs["left_out"] = left_out_text(results[bad])
    return summary


Selector = Mapping[str, Any] | str | Callable[[pd.DataFrame], "pd.Series"]


def select(results: pd.DataFrame, which: Selector) -> pd.DataFrame:
    """Rows of ``results`` chosen by ``which``: a mapping of column -> value (``model_kwargs`` may be a
    dict; ``run_id`` may be a list of ids), a display label as :func:`config_labels` writes it (unique per
    configuration, e.g. ``"static 8-16-32"``), or a callable returning a boolean mask."""
    if callable(which):
        return results[which(results)]
    if isinstance(which, str):
        labels = config_labels(results)
        found = results[labels == which]
        if found.empty:
            raise ValueError(f"no run has label {which!r}; labels: {sorted(set(labels))}")
        return found
    mask = pd.Series(True, index=results.index)
    for col, value in which.items():
        if col not in results:
            raise ValueError(f"no column {col!r} in the results; columns: {list(results.columns)}")
        if col == "run_id" and isinstance(value, (list, tuple, set)):
            mask &= results[col].astype(str).isin([str(v) for v in value])
            continue
        if isinstance(value, (dict, list)):
            value = json.dumps(value, sort_keys=True)
            column = results[col].map(_canonical_json)
        else:
            column = results[col]
        mask &= column.isna() if value is None else column == value
    return results[mask]


def _canonical_json(v: Any) -> Any:
    if isinstance(v, str) and v[:1] in "[{":
        try:
            return json.dumps(json.loads(v), sort_keys=True)
        except ValueError:
            return v
    return v


def config_keys(df: pd.DataFrame) -> pd.Series:
    """One string per row that identifies its configuration: every config column (:func:`config_columns`)
    as JSON text, ``seed`` left out. Rows with equal keys are seeds of one configuration; labels never are
    identity (two configurations may share a :func:`config_label`, e.g. a sweep over ``lr``)."""
    cols = config_columns(df)
    if not cols or df.empty:
        return pd.Series([""] * len(df), index=df.index, dtype=object)
    return _key_frame(df, cols).agg("|".join, axis=1)


def config_id(key: str) -> str:
    """A short stable id of a configuration key (:func:`config_keys`): 10 hex digits of its SHA-1."""
    import hashlib  # noqa: PLC0415 - only here

    return hashlib.sha1(key.encode()).hexdigest()[:10]


def config_labels(df: pd.DataFrame) -> pd.Series:
    """Display labels, one per row, unique per configuration: :func:`config_label`, and where several
    configurations share it, the config fields that tell them apart in brackets (``static (lr=0.1)``)."""
    if df.empty:
        return pd.Series([], dtype=object)
    keys = config_keys(df)
    base = df.apply(config_label, axis=1)
    out = base.copy()
    cols = config_columns(df)
    for label in dict.fromkeys(base):
        same = base == label
        if keys[same].nunique() < 2:
            continue
        rows = df[same]
        text = _key_frame(rows, cols)
        differing = [c for c in cols if text[c].nunique() > 1]
        for idx in rows.index:
            parts = [f"{c}={_plain(df.at[idx, c])}" for c in differing]
            out[idx] = f"{label} ({', '.join(parts)})"
    for label in dict.fromkeys(out):  # still shared (fields whose text is equal): the config id decides
        same = out == label
        if keys[same].nunique() > 1:
            for idx in out[same].index:
                out[idx] = f"{label} [{config_id(keys[idx])}]"
    return out


def _plain(v: Any) -> str:
    if v is None or _isnan(v):
        return "-"
    return f"{v:g}" if isinstance(v, float) else str(v)


__getattr__ = moved_names(
    "kwlab.experiments.stats",
    {
        "VERDICTS": "kwlab.experiments.verdicts",
        "ALPHA": "kwlab.experiments.significance",
        "DEFAULT_MARGIN": "kwlab.experiments.significance",
        "POWER": "kwlab.experiments.significance",
        "holm": "kwlab.experiments.significance",
        "tost_p": "kwlab.experiments.significance",
        "Tost": "kwlab.experiments.significance",
        "tost": "kwlab.experiments.significance",
        "detectable_difference": "kwlab.experiments.significance",
        "Comparison": "kwlab.experiments.verdicts",
        "COMPARISON_COLUMNS": "kwlab.experiments.verdicts",
        "estimate": "kwlab.experiments.verdicts",
        "compare": "kwlab.experiments.verdicts",
        "compare_family": "kwlab.experiments.verdicts",
        "decide": "kwlab.experiments.verdicts",
        "comparison_table": "kwlab.experiments.verdicts",
        "compare_all": "kwlab.experiments.verdicts",
        "verdict_lines": "kwlab.experiments.verdicts",
        "mean_ci": "kwlab.instruments.intervals",
    },
)
