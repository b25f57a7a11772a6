"""Uncertainty for sweeps: per-configuration summaries with t-intervals, and comparisons with three verdicts.

* :func:`summarize` turns ``results.csv`` (one row per run) into ``summary.csv`` (one row per
  configuration): ``n_seeds`` and, for every metric ``M``, ``M_mean``, ``M_std`` (sample standard
  deviation, ddof = 1) and ``M_ci95`` (half-width of the 95% Student-t interval of the mean,
  ``t_{0.975, n-1} * std / sqrt(n)``, computed by :func:`scipy.stats.t.interval`).
* :func:`compare` puts configuration A against B: paired by ``seed`` (a t test on the per-seed
  differences) or, for arms without a shared seed, Welch's t. It reaches one of three verdicts
  (:data:`VERDICTS`, rules in ``shared/reference/verdicts.md``): *differs* (p < alpha, after Holm's
  adjustment over the comparisons of one finding: :func:`compare_all`, :func:`holm`), *equivalent* within
  a margin declared before the runs (:func:`tost`), or *not resolved at this size*, printed with the
  design's minimum detectable difference (:func:`detectable_difference`).

A configuration is every config column except ``seed`` (and the per-run bookkeeping columns); runs are
grouped by it (:func:`config_keys`), never by their display label (:func:`config_labels`).
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

from kwlab.experiments.config import RunConfig
from kwlab.instruments.left_out import left_out_text, nonfinite_runs
from kwlab.instruments.statistics import headline_metrics
from kwlab.methods import METHODS

__all__ = [
    "METRICS",
    "BUDGET_COLUMNS",
    "mean_ci",
    "summarize",
    "config_columns",
    "config_label",
    "select",
    "config_keys",
    "config_id",
    "config_labels",
    "compare",
    "compare_all",
    "compare_family",
    "estimate",
    "decide",
    "comparison_table",
    "verdict_lines",
    "Comparison",
    "COMPARISON_COLUMNS",
    "VERDICTS",
    "ALPHA",
    "DEFAULT_MARGIN",
    "POWER",
    "holm",
    "tost",
    "tost_p",
    "Tost",
    "detectable_difference",
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
    "final_train_acc_clean",
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
            mean, std, ci = mean_ci(pd.to_numeric(group[m], errors="coerce").tolist())
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


# ------------------------------------------------------------------------------------------- verdicts
#: The three verdicts a comparison can reach (rules: ``shared/reference/verdicts.md``).
VERDICTS = ("differs", "equivalent", "not resolved")
#: Significance level of every test (two-sided for "differs"; each one-sided test of TOST).
ALPHA = 0.05
#: The equivalence margin when a sweep file declares none: 1.5 accuracy points.
DEFAULT_MARGIN = 0.015
#: The power at which :func:`detectable_difference` is computed.
POWER = 0.8


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment of the p-values of one family of comparisons.

    Sorted ascending p(1) <= ... <= p(k), the adjusted p(i) = max over j <= i of min(1, (k - j + 1) p(j)),
    returned in the input order. Non-finite p-values stay NaN and do not count in k. Example (from
    verdicts.md): (0.010, 0.040, 0.030) -> (0.030, 0.060, 0.060).
    """
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"p_values must be a flat sequence, got shape {p.shape}")
    finite = np.isfinite(p)
    if np.any((p[finite] < 0) | (p[finite] > 1)):
        raise ValueError(f"p_values must lie in [0, 1], got {p[finite].tolist()}")
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(finite)
    order = idx[np.argsort(p[idx], kind="stable")]
    k, running = len(order), 0.0
    for j, i in enumerate(order):
        running = max(running, min(1.0, (k - j) * p[i]))
        out[i] = running
    return out


def _check_alpha(alpha: float, name: str = "alpha") -> None:
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 0.5):
        raise ValueError(f"{name} must be a number in (0, 0.5), got {alpha!r}")


def _check_margin(margin: float) -> None:
    if (
        isinstance(margin, bool)
        or not isinstance(margin, (int, float))
        or not (margin > 0 and math.isfinite(margin))
    ):
        raise ValueError(f"margin must be a positive finite number (same unit as the metric), got {margin!r}")


def tost_p(diff: float, se: float, df: float, margin: float) -> tuple[float, float, float]:
    """``(p_lower, p_upper, p_TOST)`` of two one-sided t tests of ``|true difference| < margin``:
    p_lower = P(T > (diff + M) / se), p_upper = P(T < (diff - M) / se), T ~ t(df), p_TOST the larger."""
    _check_margin(margin)
    if not (math.isfinite(diff) and math.isfinite(se) and df > 0):
        return math.nan, math.nan, math.nan
    if se == 0:
        lower = 0.0 if diff > -margin else 1.0
        upper = 0.0 if diff < margin else 1.0
    else:
        lower = float(_st.t.sf((diff + margin) / se, df))
        upper = float(_st.t.cdf((diff - margin) / se, df))
    return lower, upper, max(lower, upper)


@dataclass(frozen=True)
class Tost:
    """Equivalence test of paired differences (see :func:`tost`)."""

    diff: float
    se: float
    df: float
    margin: float
    p_lower: float
    p_upper: float
    p: float
    low: float  # the (1 - 2 alpha) interval
    high: float
    alpha: float

    @property
    def equivalent(self) -> bool:
        return bool(self.p < self.alpha)


def tost(differences: Sequence[float], margin: float, alpha: float = ALPHA) -> Tost:
    """TOST for paired differences ``d_i = a_i - b_i`` with equivalence margin ``margin``: both one-sided
    tests reject at ``alpha`` exactly when the (1 - 2 alpha) t-interval of the mean lies inside (-M, +M).
    Non-finite differences are dropped; fewer than 2 left give NaN p-values."""
    _check_margin(margin)
    _check_alpha(alpha)
    d = np.asarray(differences, dtype=float)
    d = d[np.isfinite(d)]
    n = len(d)
    if n < 2:
        return Tost(float(d.mean()) if n else math.nan, math.nan, math.nan, margin, *[math.nan] * 5, alpha)
    diff, se, df = float(d.mean()), float(d.std(ddof=1) / math.sqrt(n)), n - 1
    lower, upper, p = tost_p(diff, se, df, margin)
    h = float(_st.t.ppf(1 - alpha, df) * se)
    return Tost(diff, se, df, margin, lower, upper, p, diff - h, diff + h, alpha)


def detectable_difference(
    s: float | None = None,
    n: int | None = None,
    *,
    se: float | None = None,
    df: float | None = None,
    alpha: float = ALPHA,
    power: float = POWER,
) -> float:
    """The minimum detectable difference of a t test: the true difference ``delta`` at which a two-sided
    test at ``alpha`` rejects with probability ``power``, T' noncentral t with noncentrality
    ``delta / se`` (:data:`scipy.stats.nct`).

    Give ``s`` (standard deviation of the paired differences) and ``n`` (pairs): se = s / sqrt(n),
    df = n - 1; or ``se`` and ``df`` directly (Welch). NaN when fewer than 2 pairs or ``s`` is not finite.
    Example (verdicts.md): s = 0.015, n = 3 -> about 0.049.
    """
    _check_alpha(alpha)
    if not 0 < power < 1:
        raise ValueError(f"power must lie in (0, 1), got {power!r}")
    if se is None:
        if s is None or n is None:
            raise ValueError("give s and n (paired design) or se and df")
        if n < 2 or not math.isfinite(s):
            return math.nan
        se, df = s / math.sqrt(n), n - 1
    if df is None or not (df > 0 and math.isfinite(se)):
        return math.nan
    if se == 0:
        return 0.0
    crit = float(_st.t.ppf(1 - alpha / 2, df))

    def shortfall(nc: float) -> float:
        upper = float(_st.nct.sf(crit, df, nc))
        lower = float(_st.nct.cdf(-crit, df, nc))  # ~0 for nc > 0; scipy may give NaN far in the tail
        return upper + (lower if math.isfinite(lower) else 0.0) - power

    hi = crit + 1.0
    while shortfall(hi) < 0:
        hi *= 2
    from scipy.optimize import brentq  # noqa: PLC0415 - scipy.optimize is slow to import

    return float(brentq(shortfall, 0.0, hi, xtol=1e-10)) * se


@dataclass(frozen=True)
class Comparison:
    """``a`` against ``b`` on ``metric`` (see :func:`compare`): the estimate, its tests and the verdict.

    ``verdict`` is one of :data:`VERDICTS`; ``text`` says it in words generated from the numbers.
    ``p_holm`` is the p-value after Holm's adjustment over the ``family_size`` comparisons of one finding.
    """

    a: str
    b: str
    metric: str
    n: int
    mean_a: float
    mean_b: float
    diff: float  # mean of (a - b) over the paired seeds (Welch: difference of the means)
    ci_low: float  # the (1 - alpha) t-interval of diff
    ci_high: float
    half_width: float
    p_value: float  # two-sided, before the adjustment
    higher_is_better: bool
    verdict: str
    text: str = ""
    test: str = "paired t"
    se: float = math.nan
    df: float = math.nan
    p_holm: float = math.nan
    family_size: int = 1
    p_lower: float = math.nan
    p_upper: float = math.nan
    p_tost: float = math.nan
    tost_low: float = math.nan  # the (1 - 2 alpha) interval
    tost_high: float = math.nan
    margin: float = DEFAULT_MARGIN
    mdd: float = math.nan
    alpha: float = ALPHA
    n_dropped: int = 0  # non-finite values left out
    n_b: int = 0  # Welch: the size of arm b (n is arm a's)

    @property
    def significant(self) -> bool:
        """Whether the unadjusted (1 - alpha) interval excludes 0 (the verdict uses ``p_holm``)."""
        return not (self.ci_low <= 0.0 <= self.ci_high) if self.n >= 2 else False

    def __str__(self) -> str:
        return self.text


def _fmt_p(p: float) -> str:
    """``= 0.095``, ``< 0.001`` or ``= n/a``: what follows "p" in a sentence."""
    if not math.isfinite(p):
        return "= n/a"
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


def _decide(c: Comparison, p_holm: float, family_size: int) -> Comparison:
    """Set the verdict and its words from the numbers: differs (Holm-adjusted p < alpha), equivalent
    (TOST p < alpha), otherwise not resolved with the detectable difference."""
    import dataclasses  # noqa: PLC0415 - only here

    name_a, name_b, m = c.a, c.b, c.metric
    if c.test == "paired t":
        design = f"paired t over {c.n} shared seeds"
    else:
        design = f"Welch t, unpaired arms (no shared seed), n = {c.n} and {c.n_b}"
    if c.n_dropped:
        design += f"; {c.n_dropped} non-finite value(s) left out"
    holm_text = f"Holm-adjusted p {_fmt_p(p_holm)}" + (
        f" over {family_size} comparisons" if family_size > 1 else ""
    )
    if math.isfinite(p_holm) and p_holm < c.alpha and c.diff != 0:
        verdict = "differs"
        higher, lower = (name_a, name_b) if c.diff > 0 else (name_b, name_a)
        text = (
            f"{higher} is higher than {lower} by {abs(c.diff):.3f} ± {c.half_width:.3f} {m} "
            f"({holm_text}; {design})"
        )
        if math.isfinite(c.p_tost) and c.p_tost < c.alpha:
            text += f"; the difference also lies within ±{c.margin:g} (TOST p {_fmt_p(c.p_tost)})"
    elif math.isfinite(c.p_tost) and c.p_tost < c.alpha:
        verdict = "equivalent"
        conf = round(100 * (1 - 2 * c.alpha))
        text = (
            f"{name_a} and {name_b} are equivalent within ±{c.margin:g} {m}: difference {c.diff:+.3f}, "
            f"{conf}% interval ({c.tost_low:+.3f}, {c.tost_high:+.3f}) (TOST p {_fmt_p(c.p_tost)}; "
            f"{holm_text}; {design})"
        )
    else:
        verdict = "not resolved"
        if math.isfinite(c.half_width):
            est = f"{m} difference {c.diff:+.3f} ± {c.half_width:.3f}"
            tests = f"{holm_text}, TOST p {_fmt_p(c.p_tost)} for ±{c.margin:g}"
            size = (
                f"the design detects differences of about {c.mdd:.3f}"
                if math.isfinite(c.mdd)
                else "no detectable difference can be computed"
            )
            text = f"{name_a} vs {name_b}: {est} ({tests}; {design}) -- not resolved at this size: {size}"
        else:
            diff = f"{m} difference {c.diff:+.3f}" if math.isfinite(c.diff) else f"no finite {m} difference"
            text = (
                f"{name_a} vs {name_b}: {diff} ({design}) -- not resolved at this size: fewer than 2 values "
                "per arm give no interval"
            )
    return dataclasses.replace(c, verdict=verdict, text=text, p_holm=p_holm, family_size=family_size)


def _estimate(
    results: pd.DataFrame,
    a: Selector,
    b: Selector,
    metric: str,
    *,
    alpha: float,
    margin: float,
    higher_is_better: bool | None,
    names: tuple[str, str] | None,
    paired: bool | None,
) -> Comparison:
    """Everything of a comparison but its verdict (:func:`_decide` adds it)."""
    if metric not in results.columns:
        raise ValueError(f"metric {metric!r} is not a results column; columns: {list(results.columns)}")
    labels_all = config_labels(results)
    keys_all = config_keys(results)
    arms, labels = [], []
    for which, sel in (("a", a), ("b", b)):
        rows = select(results, sel)
        if rows.empty:
            raise ValueError(f"{which}={sel!r} selects no run")
        if keys_all[rows.index].nunique() > 1:
            confs = sorted(set(labels_all[rows.index]))
            raise ValueError(f"{which} selects several configurations ({confs}); narrow the selector")
        if "seed" in rows and rows["seed"].duplicated().any():
            raise ValueError(f"{which} selects several runs per seed; narrow the selector")
        arms.append(rows)
        labels.append(str(labels_all[rows.index[0]]))
    name_a, name_b = names or tuple(labels)
    ra, rb = arms
    va = ra.set_index("seed")[metric] if "seed" in ra else ra[metric]
    vb = rb.set_index("seed")[metric] if "seed" in rb else rb[metric]
    return estimate(
        va,
        vb,
        (name_a, name_b),
        metric,
        alpha=alpha,
        margin=margin,
        higher_is_better=higher_is_better,
        paired=paired,
    )


def estimate(
    values_a: pd.Series,
    values_b: pd.Series,
    names: tuple[str, str],
    metric: str,
    *,
    alpha: float = ALPHA,
    margin: float = DEFAULT_MARGIN,
    higher_is_better: bool | None = None,
    paired: bool | None = None,
) -> Comparison:
    """The estimate and tests of ``a - b`` from two series indexed by seed, before any verdict (a family
    of them gets its verdicts from :func:`decide`, which applies Holm). Paired over the shared seeds, or
    Welch when ``paired`` is False or (None) no seed is shared."""
    _check_alpha(alpha)
    _check_margin(margin)
    if higher_is_better is None:
        higher_is_better = not ("loss" in metric or "time" in metric)
    name_a, name_b = names
    shared = set(values_a.index) & set(values_b.index)
    if paired is None:
        paired = bool(shared)
    if paired and not shared:
        raise ValueError(
            f"{name_a!r} and {name_b!r} share no seed: nothing to pair (use paired=False: Welch)"
        )
    va = pd.to_numeric(values_a, errors="coerce")
    vb = pd.to_numeric(values_b, errors="coerce")
    common = dict(
        a=name_a, b=name_b, metric=metric, higher_is_better=higher_is_better, verdict="", alpha=alpha
    )
    common["margin"] = float(margin)
    if paired:
        both = pd.concat([va.rename("a"), vb.rename("b")], axis=1, join="inner")
        ok = np.isfinite(both["a"].to_numpy(float)) & np.isfinite(both["b"].to_numpy(float))
        dropped = int((~ok).sum())
        both = both[ok]
        d = (both["a"] - both["b"]).to_numpy(dtype=float)
        n = len(d)
        mean_a, mean_b = (
            float(both["a"].mean()) if n else math.nan,
            float(both["b"].mean()) if n else math.nan,
        )
        diff = float(d.mean()) if n else math.nan
        se = float(d.std(ddof=1) / math.sqrt(n)) if n >= 2 else math.nan
        df = float(n - 1)
        mdd = detectable_difference(se=se, df=df, alpha=alpha) if n >= 2 else math.nan
        test, n_b = "paired t", n
    else:
        xa = va.to_numpy(dtype=float)
        xb = vb.to_numpy(dtype=float)
        dropped = int((~np.isfinite(xa)).sum() + (~np.isfinite(xb)).sum())
        xa, xb = xa[np.isfinite(xa)], xb[np.isfinite(xb)]
        n, n_b = len(xa), len(xb)
        mean_a = float(xa.mean()) if n else math.nan
        mean_b = float(xb.mean()) if n_b else math.nan
        diff = mean_a - mean_b
        se = df = mdd = math.nan
        if n >= 2 and n_b >= 2:
            qa, qb = xa.var(ddof=1) / n, xb.var(ddof=1) / n_b
            se = float(math.sqrt(qa + qb))
            df = (
                float((qa + qb) ** 2 / (qa**2 / (n - 1) + qb**2 / (n_b - 1)))
                if se > 0
                else float(n + n_b - 2)
            )
            mdd = detectable_difference(se=se, df=df, alpha=alpha)
        test = "Welch t"
    if math.isfinite(se):
        if se == 0:
            p = 1.0 if diff == 0 else 0.0
            half = 0.0
        else:
            p = float(2 * _st.t.sf(abs(diff) / se, df))
            half = float(_st.t.ppf(1 - alpha / 2, df) * se)
        lower, upper, p_tost = tost_p(diff, se, df, margin)
        h2 = float(_st.t.ppf(1 - alpha, df) * se)
        lo, hi, tlo, thi = diff - half, diff + half, diff - h2, diff + h2
    else:
        p = half = lower = upper = p_tost = lo = hi = tlo = thi = math.nan
    return Comparison(
        **common,
        n=n,
        n_b=n_b,
        mean_a=mean_a,
        mean_b=mean_b,
        diff=diff,
        ci_low=lo,
        ci_high=hi,
        half_width=half,
        p_value=p,
        test=test,
        se=se,
        df=df,
        p_lower=lower,
        p_upper=upper,
        p_tost=p_tost,
        tost_low=tlo,
        tost_high=thi,
        mdd=mdd,
        n_dropped=dropped,
    )


def compare(
    results: pd.DataFrame,
    a: Selector,
    b: Selector,
    metric: str = "final_acc",
    *,
    confidence: float | None = None,
    higher_is_better: bool | None = None,
    names: tuple[str, str] | None = None,
    margin: float = DEFAULT_MARGIN,
    alpha: float = ALPHA,
    paired: bool | None = None,
) -> Comparison:
    """Configuration ``a`` against ``b`` on ``metric``, one comparison on its own (a family of them:
    :func:`compare_all`, which adjusts the p-values by Holm).

    Runs are paired by ``seed`` when the two share seeds (paired t on the differences ``a - b`` over the
    shared seeds); arms without a shared seed are compared by Welch's t (``paired=False`` forces it).
    Verdict (one of :data:`VERDICTS`): ``differs`` when the two-sided p < alpha, ``equivalent`` when TOST
    with ``margin`` rejects both one-sided tests at alpha (the (1 - 2 alpha) interval inside (-M, +M)),
    otherwise ``not resolved`` with the minimum detectable difference of the design
    (:func:`detectable_difference`). Non-finite values are left out and counted (``n_dropped``).

    Args:
        results: one row per run (``results.csv``), with a ``seed`` column.
        a, b: selectors (see :func:`select`); each must pick one configuration with distinct seeds.
        metric: a results column.
        confidence: the interval's level (default ``1 - alpha``); sets ``alpha = 1 - confidence``.
        higher_is_better: kept for callers; the words say "higher"/"lower", never "better".
        names: labels for the text (default: the configurations' labels).
        margin: the equivalence margin M, in the metric's unit (default 0.015 = 1.5 points).
        paired: True: pair by seed (error without a shared seed); False: Welch; None: pair when possible.
    """
    if confidence is not None:
        alpha = 1.0 - confidence
    c = _estimate(
        results,
        a,
        b,
        metric,
        alpha=alpha,
        margin=margin,
        higher_is_better=higher_is_better,
        names=names,
        paired=paired,
    )
    return _decide(c, c.p_value, 1)


def compare_family(
    results: pd.DataFrame,
    pairs: Sequence[tuple[Selector, Selector]],
    metric: str = "final_acc",
    *,
    margin: float = DEFAULT_MARGIN,
    alpha: float = ALPHA,
    names: Sequence[tuple[str, str] | None] | None = None,
    paired: bool | None = None,
) -> list[Comparison]:
    """The comparisons of one finding, Holm-adjusted together (the family is ``pairs``; a comparison
    without a finite p-value is not counted in it)."""
    names = list(names) if names is not None else [None] * len(pairs)
    if len(names) != len(pairs):
        raise ValueError(f"names must give one entry per pair ({len(pairs)}), got {len(names)}")
    raw = []
    for pair, nm in zip(pairs, names):
        if len(pair) != 2:
            raise ValueError(f"each pair must be (a, b), got {pair!r}")
        raw.append(
            _estimate(
                results,
                pair[0],
                pair[1],
                metric,
                alpha=alpha,
                margin=margin,
                higher_is_better=None,
                names=nm,
                paired=paired,
            )
        )
    return decide(raw)


def decide(estimates: Sequence[Comparison]) -> list[Comparison]:
    """Verdicts for one family of estimates (:func:`estimate`): the p-values adjusted together by
    :func:`holm` (those without a finite p-value are not counted), then the three verdicts."""
    if not estimates:
        return []
    adjusted = holm([c.p_value for c in estimates])
    k = int(np.isfinite([c.p_value for c in estimates]).sum())
    return [_decide(c, float(p), k) for c, p in zip(estimates, adjusted)]


#: The columns of :func:`compare_all`'s table.
COMPARISON_COLUMNS = (
    "a",
    "b",
    "metric",
    "test",
    "n",
    "n_dropped",
    "diff",
    "ci",
    "ci_low",
    "ci_high",
    "half_width",
    "p",
    "p_holm",
    "p_lower",
    "p_upper",
    "p_tost",
    "margin",
    "mdd",
    "verdict",
    "text",
)


def comparison_table(comparisons: Sequence[Comparison]) -> pd.DataFrame:
    """Comparisons as a table with :data:`COMPARISON_COLUMNS`."""
    rows = [
        {
            "a": c.a,
            "b": c.b,
            "metric": c.metric,
            "test": c.test,
            "n": c.n,
            "n_dropped": c.n_dropped,
            "diff": c.diff,
            "ci": (c.ci_low, c.ci_high),
            "ci_low": c.ci_low,
            "ci_high": c.ci_high,
            "half_width": c.half_width,
            "p": c.p_value,
            "p_holm": c.p_holm,
            "p_lower": c.p_lower,
            "p_upper": c.p_upper,
            "p_tost": c.p_tost,
            "margin": c.margin,
            "mdd": c.mdd,
            "verdict": c.verdict,
            "text": c.text,
        }
        for c in comparisons
    ]
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))


def compare_all(
    results: pd.DataFrame,
    pairs: Sequence[tuple[Selector, Selector]],
    metric: str = "final_acc",
    *,
    margin: float = DEFAULT_MARGIN,
    alpha: float = ALPHA,
    paired: bool | None = None,
) -> pd.DataFrame:
    """:func:`compare_family` as a table: one row per pair with a, b, n, diff, ci, p, p_holm, p_tost,
    mdd, verdict and text (all columns: :data:`COMPARISON_COLUMNS`)."""
    return comparison_table(compare_family(results, pairs, metric, margin=margin, alpha=alpha, paired=paired))


def verdict_lines(
    comparisons: list, notes: list[str], alpha: float, margin: float, prefixes: list[str] | None = None
) -> list[str]:
    """The three headings (Differs / Equivalent / Not resolved), each with its comparisons: ``prefix``,
    the text generated from the numbers, then ``note``."""
    prefixes = prefixes or [""] * len(comparisons)
    items = list(zip(comparisons, prefixes, notes))
    lines: list[str] = []
    groups = {v: [(c, p, n) for c, p, n in items if c.verdict == v] for v in VERDICTS}
    if groups["differs"]:
        lines.append(f"Differs (Holm-adjusted, α = {alpha:g}):")
        lines += [f"- {p}{c.text}{n}" for c, p, n in groups["differs"]]
    if groups["equivalent"]:
        lines.append(f"Equivalent within ±{margin:g}:")
        lines += [f"- {p}{c.text}{n}" for c, p, n in groups["equivalent"]]
    if groups["not resolved"]:
        mdds = [c.mdd for c, _, _ in groups["not resolved"] if pd.notna(c.mdd)]
        if not mdds:
            size = "n/a"
        elif f"{min(mdds):.3f}" == f"{max(mdds):.3f}":
            size = f"{min(mdds):.3f}"
        else:
            size = f"{min(mdds):.3f} to {max(mdds):.3f}"
        lines.append(f"Not resolved at this size (detectable difference ≈ {size}):")
        lines += [f"- {p}{c.text}{n}" for c, p, n in groups["not resolved"]]
    return lines
