"""Uncertainty for sweeps: per-configuration summaries with t-intervals, and a paired comparison by seed.

* :func:`summarize` turns ``results.csv`` (one row per run) into ``summary.csv`` (one row per
  configuration): ``n_seeds`` and, for every metric ``M``, ``M_mean``, ``M_std`` (sample standard
  deviation, ddof = 1) and ``M_ci95`` (half-width of the 95% Student-t interval of the mean,
  ``t_{0.975, n-1} * std / sqrt(n)``, computed by :func:`scipy.stats.t.interval`).
* :func:`compare` answers "is A better than B here?": runs of the two configurations are paired by
  ``seed``, and the mean of the paired differences gets a t-interval. Its verdict says "no difference
  detected at this scale (n = ...)" whenever that interval contains 0.

A configuration is every config column except ``seed`` (and the per-run bookkeeping columns).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as _st

from kwlab.instruments.statistics import headline_metrics

__all__ = [
    "METRICS",
    "BUDGET_COLUMNS",
    "mean_ci",
    "summarize",
    "nonfinite_runs",
    "split_nonfinite",
    "left_out_text",
    "config_columns",
    "config_label",
    "select",
    "compare",
    "Comparison",
]

#: Per-run numbers summarised over seeds (those present in the table are used).
METRICS = (
    "final_acc",
    "final_acc_tau0",
    "min_acc_tau0",
    "min_acc_tau0_recal",
    "final_acc_frozen",
    "final_acc_frozen_recal",
    "best_acc",
    "final_loss",
    "final_train_loss",
    "final_train_acc",
    "throughput",
    "train_time",
    *headline_metrics(),
)
#: Per-configuration constants carried into the summary as they are (the budget and the provenance).
BUDGET_COLUMNS = (
    "params",
    "params_static",
    "params_warehouse",
    "params_attention",
    "params_other",
    "macs",
    "num_classes",
    "anneal_steps",
    "total_steps",
)
PROVENANCE_COLUMNS = ("git_revision", "machine", "torch_version", "threads", "data_notice", "anneal_note")
_NOT_CONFIG = {
    "run_id",
    "seed",
    "epochs_done",
    "nonfinite",
    "nonfinite_what",
    *METRICS,
    *BUDGET_COLUMNS,
    *PROVENANCE_COLUMNS,
}


def _truthy(v: Any) -> bool:
    return (
        v is True
        or (isinstance(v, (int, float, np.bool_)) and not _isnan(v) and bool(v))
        or (isinstance(v, str) and v.strip().lower() == "true")
    )


def nonfinite_runs(results: pd.DataFrame) -> pd.Series:
    """Boolean mask of the runs whose numbers come from non-finite values: ``nonfinite`` is true (the
    trainer's flag), or, for records written before the flag existed, ``final_loss`` is NaN or infinite."""
    mask = pd.Series(False, index=results.index)
    if "nonfinite" in results:
        mask |= results["nonfinite"].map(_truthy).astype(bool)
    if "final_loss" in results:
        loss = pd.to_numeric(results["final_loss"], errors="coerce").to_numpy(dtype=float)
        mask |= ~np.isfinite(loss)
    return mask


def _reason(row: pd.Series) -> str:
    what = row.get("nonfinite_what")
    return f"non-finite {what}" if isinstance(what, str) and what else "non-finite test loss"


def split_nonfinite(results: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(kept, left_out)``: the runs with finite numbers, and those :func:`nonfinite_runs` flags."""
    mask = nonfinite_runs(results) if not results.empty else pd.Series(False, index=results.index)
    return results[~mask], results[mask]


def left_out_text(left_out: pd.DataFrame) -> str:
    """``"1 run left out: non-finite test loss"`` (``"2 runs left out: ..."`` with each reason and its
    count); ``""`` when nothing is left out."""
    if left_out.empty:
        return ""
    reasons: dict[str, int] = {}
    for _, row in left_out.iterrows():
        reasons[_reason(row)] = reasons.get(_reason(row), 0) + 1
    n = len(left_out)
    why = "; ".join(r if len(reasons) == 1 else f"{r} ({c})" for r, c in reasons.items())
    ids = " ".join(str(v) for v in left_out["run_id"]) if "run_id" in left_out else ""
    return f"{n} run{'s' if n != 1 else ''} left out: {why}" + (f" [{ids}]" if ids else "")


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, std, half_width)`` of ``values``: std with ddof = 1 and the half-width of the t-interval
    of the mean (NaN for fewer than 2 values; 0 when all values are equal)."""
    x = np.asarray([v for v in values if v is not None and not _isnan(v)], dtype=float)
    n = len(x)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if n < 2:
        return mean, math.nan, math.nan
    std = float(x.std(ddof=1))
    if std == 0.0:
        return mean, 0.0, 0.0
    lo, hi = _st.t.interval(confidence, df=n - 1, loc=mean, scale=_st.sem(x))
    return mean, std, float(hi - lo) / 2.0


def _isnan(v: Any) -> bool:
    try:
        return math.isnan(float(v))
    except (TypeError, ValueError):
        return False


def config_columns(df: pd.DataFrame) -> list[str]:
    """The columns that define a configuration: config fields except ``seed``."""
    from kwlab.experiments.config import RunConfig  # noqa: PLC0415

    fields = [f for f in RunConfig.field_names() if f in df.columns and f not in _NOT_CONFIG]
    return fields


def _cell_label(row: Mapping[str, Any] | pd.Series) -> list[str]:
    """``["cell 1/2"]`` (or ``["cell 1/2x1/4"]`` for out x in) when the cell ratios are not 1, else []."""
    from fractions import Fraction  # noqa: PLC0415

    ratios = []
    for key in ("cell_out", "cell_in"):
        value = row.get(key)
        ok = value is not None and value != "" and not _isnan(value)
        ratios.append(float(value) if ok else 1.0)
    if ratios == [1.0, 1.0]:
        return []
    text = [str(Fraction(r).limit_denominator(64)) for r in ratios]
    return [f"cell {text[0]}" if text[0] == text[1] else f"cell {text[0]}x{text[1]}"]


def config_label(row: Mapping[str, Any] | pd.Series) -> str:
    """A short human label: ``static 8-16-32``, ``kw b=1 stage 8-16-32`` or, with cells smaller than the
    default (``cell_in``/``cell_out`` below 1), ``kw b=1 cell 1/2 stage``: configurations of different size
    never share a label."""
    parts = [str(row.get("method", "?"))]
    if row.get("method") not in (None, "static"):
        for key, fmt in (
            ("preset", "{}"),
            ("budget", "b={:g}"),
            ("sharing", "{}"),
            ("reduction", "r={:g}"),
            ("attention", "{}"),
            ("attention_init", "init={}"),
            ("temperature_epochs", "anneal={:g}ep"),
            ("temperature_steps", "anneal={:g}steps"),
        ):
            value = row.get(key)
            if value is not None and not _isnan(value) and value != "":
                parts.append(fmt.format(value))
            if key == "budget":
                parts += _cell_label(row)
    kwargs = row.get("model_kwargs")
    if isinstance(kwargs, str) and kwargs not in ("", "{}"):
        try:
            kwargs = json.loads(kwargs)
        except ValueError:
            kwargs = {}
    if isinstance(kwargs, dict) and "widths" in kwargs:
        parts.append("-".join(str(w) for w in kwargs["widths"]))
    return " ".join(parts)


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
    keys = _key_frame(results, cols).agg("|".join, axis=1)
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
        row["label"] = config_label(first)
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
            mean, std, ci = mean_ci(pd.to_numeric(group[m], errors="coerce").tolist())
            row[f"{m}_mean"], row[f"{m}_std"], row[f"{m}_ci95"] = mean, std, ci
        rows.append(row)
    summary = pd.DataFrame(rows)
    summary.attrs["left_out"] = left_out_text(results[bad])
    return summary


Selector = Mapping[str, Any] | str | Callable[[pd.DataFrame], "pd.Series"]


def select(results: pd.DataFrame, which: Selector) -> pd.DataFrame:
    """Rows of ``results`` chosen by ``which``: a mapping of column -> value (``model_kwargs`` may be a
    dict), a config label as :func:`config_label` writes it (e.g. ``"static 8-16-32"``), or a callable
    returning a boolean mask."""
    if callable(which):
        return results[which(results)]
    if isinstance(which, str):
        labels = results.apply(config_label, axis=1)
        found = results[labels == which]
        if found.empty:
            raise ValueError(f"no run has label {which!r}; labels: {sorted(set(labels))}")
        return found
    mask = pd.Series(True, index=results.index)
    for col, value in which.items():
        if col not in results:
            raise ValueError(f"no column {col!r} in the results; columns: {list(results.columns)}")
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


@dataclass(frozen=True)
class Comparison:
    """The paired comparison of configurations ``a`` and ``b`` on ``metric`` (see :func:`compare`)."""

    a: str
    b: str
    metric: str
    n: int
    mean_a: float
    mean_b: float
    diff: float  # mean of (a - b) over the paired seeds
    ci_low: float
    ci_high: float
    half_width: float
    p_value: float
    higher_is_better: bool
    verdict: str

    @property
    def significant(self) -> bool:
        return not (self.ci_low <= 0.0 <= self.ci_high) if self.n >= 2 else False

    def __str__(self) -> str:
        return self.verdict


def compare(
    results: pd.DataFrame,
    a: Selector,
    b: Selector,
    metric: str = "final_acc",
    *,
    confidence: float = 0.95,
    higher_is_better: bool | None = None,
    names: tuple[str, str] | None = None,
) -> Comparison:
    """Is configuration ``a`` better than ``b`` on ``metric``? Runs are paired by ``seed``.

    The mean of the paired differences ``a - b`` gets a Student-t interval (``scipy.stats``). When it
    contains 0 the verdict is "no difference detected at this scale (n = N)"; otherwise "A is better
    than B by x ± y" (x the mean difference, y the interval's half-width).

    Args:
        results: one row per run (``results.csv``), with a ``seed`` column.
        a, b: selectors (see :func:`select`); each must pick one configuration with distinct seeds.
        metric: a results column.
        higher_is_better: default True, except for metrics named ``*loss*`` or ``*time*``.
        names: labels for the verdict (default: the configurations' labels).
    """
    if metric not in results.columns:
        raise ValueError(f"metric {metric!r} is not a results column; columns: {list(results.columns)}")
    if higher_is_better is None:
        higher_is_better = not ("loss" in metric or "time" in metric)
    ra, rb = select(results, a), select(results, b)
    labels = []
    for which, rows in (("a", ra), ("b", rb)):
        if rows.empty:
            raise ValueError(f"{which}={a if which == 'a' else b!r} selects no run")
        if rows["seed"].duplicated().any():
            confs = sorted(set(rows.apply(config_label, axis=1)))
            raise ValueError(
                f"{which} selects several runs per seed (configurations {confs}); narrow the selector"
            )
        labels.append(config_label(rows.iloc[0]))
    name_a, name_b = names or tuple(labels)
    paired = pd.concat(
        [ra.set_index("seed")[metric].rename("a"), rb.set_index("seed")[metric].rename("b")],
        axis=1,
        join="inner",
    )
    paired = paired.apply(pd.to_numeric, errors="coerce").dropna()
    n = len(paired)
    if n == 0:
        raise ValueError(f"{name_a!r} and {name_b!r} share no seed: nothing to pair")
    d = (paired["a"] - paired["b"]).to_numpy(dtype=float)
    diff = float(d.mean())
    p_value = math.nan
    if n < 2:
        lo = hi = half = math.nan
    elif np.all(d == d[0]):
        lo = hi = diff
        half = 0.0
        p_value = 1.0 if diff == 0 else 0.0
    else:
        test = _st.ttest_1samp(d, 0.0)
        ci = test.confidence_interval(confidence)
        lo, hi = float(ci.low), float(ci.high)
        half = (hi - lo) / 2.0
        p_value = float(test.pvalue)
    if n < 2 or lo <= 0.0 <= hi:
        verdict = f"{name_a} vs {name_b}: no difference detected at this scale (n = {n})"
        if n >= 2:
            verdict += f"; {metric} difference {diff:+.3f} ± {half:.3f}"
    else:
        a_wins = (diff > 0) == higher_is_better
        better, worse = (name_a, name_b) if a_wins else (name_b, name_a)
        verdict = f"{better} is better than {worse} by {abs(diff):.3f} ± {half:.3f} {metric} (n = {n})"
    return Comparison(
        a=name_a,
        b=name_b,
        metric=metric,
        n=n,
        mean_a=float(paired["a"].mean()),
        mean_b=float(paired["b"].mean()),
        diff=diff,
        ci_low=lo,
        ci_high=hi,
        half_width=half,
        p_value=p_value,
        higher_is_better=higher_is_better,
        verdict=verdict,
    )
