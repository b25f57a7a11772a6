"""The one t-interval (kwlab.instruments.intervals) against scipy.stats.t.interval, and its readers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from kwlab.instruments.intervals import mean_ci, t_half_width, t_interval


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_t_interval_is_scipys(confidence):
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 30):
        x = rng.normal(0.6, 0.02, n)
        lo, hi = stats.t.interval(confidence, df=n - 1, loc=x.mean(), scale=stats.sem(x))
        low, high = t_interval(x.mean(), x.std(ddof=1), n, confidence)
        assert (float(low), float(high)) == (lo, hi)
        assert float(t_half_width(x.std(ddof=1), n, confidence)) == pytest.approx((hi - lo) / 2, rel=1e-12)
        mean, std, half = mean_ci(list(x), confidence)
        assert (mean, std, half) == (x.mean(), x.std(ddof=1), float(hi - lo) / 2.0)


def test_the_edges_fewer_than_two_values_and_no_spread():
    low, high = t_interval([0.5, 0.5, 0.5], [0.1, 0.0, math.nan], [1, 4, 4])
    assert math.isnan(low[0]) and math.isnan(high[0])  # one value: no interval
    assert (low[1], high[1]) == (0.5, 0.5)  # equal values: the mean itself
    assert math.isnan(low[2])
    assert list(t_half_width(np.array([0.0, 0.2]), np.array([3, 1]))[:1]) == [0.0]
    assert all(math.isnan(v) for v in mean_ci([]))
    assert mean_ci([0.3, None, float("nan"), 0.3]) == (0.3, 0.0, 0.0)


def test_summaries_and_plots_read_the_one_interval():
    """The summary's ``M_ci95`` and a figure's error bars are the same half-width."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kwlab.experiments.stats import summarize
    from kwlab.instruments import plot

    acc = [0.61, 0.58, 0.66]
    results = pd.DataFrame(
        {"run_id": ["r0", "r1", "r2"], "seed": [0, 1, 2], "method": "kw", "budget": 1.0, "final_acc": acc}
    )
    half = summarize(results)["final_acc_ci95"].iloc[0]
    assert half == mean_ci(acc)[2]
    fig = plot.metric_vs_knob(results, "budget", "final_acc", error="ci95")
    bars = [c for c in fig.axes[0].collections if len(c.get_segments())]
    (segment,) = bars[0].get_segments()
    assert (segment[1][1] - segment[0][1]) / 2 == pytest.approx(half, rel=1e-12)
    plt.close("all")
