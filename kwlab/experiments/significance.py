"""The statistical tests behind the verdicts (rules in ``shared/reference/verdicts.md``): Holm's adjustment
(:func:`holm`), the equivalence test (:func:`tost`) and the minimum detectable difference of a t test
(:func:`detectable_difference`), with the level, margin and power they use by default. The comparisons that
apply them to configurations are :mod:`kwlab.experiments.verdicts`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

__all__ = [
    "ALPHA",
    "DEFAULT_MARGIN",
    "POWER",
    "holm",
    "tost_p",
    "Tost",
    "tost",
    "detectable_difference",
]

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
