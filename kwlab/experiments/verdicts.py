"""Comparisons of configurations with three verdicts (rules in ``shared/reference/verdicts.md``).

:func:`compare` puts configuration A against B: paired by ``seed`` (a t test on the per-seed differences)
or, for arms without a shared seed, Welch's t. It reaches one of three verdicts (:data:`VERDICTS`):
*differs* (p < alpha, after Holm's adjustment over the comparisons of one finding: :func:`compare_all`),
*equivalent* within a margin declared before the runs (TOST), or *not resolved at this size*, printed with
the design's minimum detectable difference (the tests: :mod:`kwlab.experiments.significance`).
Configurations are selected as :func:`kwlab.experiments.stats.select` selects them, and grouped by their
config columns, never by their labels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as _st

from kwlab.experiments.significance import (
    ALPHA,
    DEFAULT_MARGIN,
    _check_alpha,
    _check_margin,
    detectable_difference,
    holm,
    tost_p,
)
from kwlab.experiments.stats import Selector, config_keys, config_labels, select

__all__ = [
    "VERDICTS",
    "Comparison",
    "COMPARISON_COLUMNS",
    "estimate",
    "compare",
    "compare_family",
    "decide",
    "comparison_table",
    "compare_all",
    "verdict_lines",
]

#: The three verdicts a comparison can reach (rules: ``shared/reference/verdicts.md``).
VERDICTS = ("differs", "equivalent", "not resolved")
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
