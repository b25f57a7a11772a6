"""The Student-t interval of a mean, implemented once (:func:`t_interval`): the summaries and findings of
:mod:`kwlab.experiments` (``M_ci95``, :func:`mean_ci`) and the error bars of :mod:`kwlab.instruments.plot`
all read it here (plots may not import :mod:`kwlab.experiments`).

The interval of the mean of ``n`` values with sample standard deviation ``s`` (ddof = 1) is
``mean ± t_{(1 + confidence) / 2, n - 1} * s / sqrt(n)``, computed by :func:`scipy.stats.t.interval`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["t_interval", "t_half_width", "mean_ci"]


def t_interval(
    mean: Any, std: Any, count: Any, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` of the ``confidence`` t-interval of each mean (arrays, broadcast together): ``std`` is
    the sample standard deviation (ddof = 1) of ``count`` values; NaN where ``count < 2``, the mean itself
    where ``std`` is 0."""
    from scipy import stats  # noqa: PLC0415 - scipy (the "lab" extra): loaded when an interval is drawn

    mean, std, count = np.broadcast_arrays(
        np.asarray(mean, dtype=float), np.asarray(std, dtype=float), np.asarray(count, dtype=float)
    )
    low, high = np.full(mean.shape, math.nan), np.full(mean.shape, math.nan)
    ok = count >= 2
    flat = ok & (std == 0)  # equal values: the interval is the mean itself (scipy would give NaN)
    low[flat], high[flat] = mean[flat], mean[flat]
    ok &= std != 0
    if ok.any():
        n = count[ok]
        low[ok], high[ok] = stats.t.interval(confidence, df=n - 1, loc=mean[ok], scale=std[ok] / np.sqrt(n))
    return low, high


def t_half_width(std: Any, count: Any, confidence: float = 0.95) -> np.ndarray:
    """Half-widths of :func:`t_interval` (the ``±`` of ``mean ± half``); NaN where ``count < 2``."""
    low, high = t_interval(0.0, std, count, confidence)
    return (high - low) / 2.0


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, std, half_width)`` of ``values`` (None and NaN left out): std with ddof = 1 and the
    half-width of the t-interval of the mean (NaN for fewer than 2 values; 0 when all values are equal)."""
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
    low, high = t_interval(mean, std, n, confidence)
    return mean, std, float(high - low) / 2.0


def _isnan(v: Any) -> bool:
    try:
        return math.isnan(float(v))
    except (TypeError, ValueError):
        return False
