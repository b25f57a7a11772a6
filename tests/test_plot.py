"""kwlab.instruments.plot: every figure renders with Agg and shows the data it was given."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.container import BarContainer  # noqa: E402

from kwlab.experiments.callbacks import ProbeCallback  # noqa: E402
from kwlab.instruments import plot  # noqa: E402
from kwlab.instruments.probe import Probe  # noqa: E402
from kwlab.testing import TinyDynamicNet  # noqa: E402


@pytest.fixture(scope="module")
def probe():
    torch.manual_seed(0)
    net = TinyDynamicNet(signed=True)
    p = Probe(net, keep=5)
    g = torch.Generator().manual_seed(1)
    for _ in range(2):
        p.record(torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 3, (4,), generator=g))
    return p


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def bars(ax):
    """The bars of every bar() call on ``ax`` (not the shaded span, which is a patch too)."""
    return [r for c in ax.containers if isinstance(c, BarContainer) for r in c.patches]


def test_attention_heatmap(probe):
    fig = plot.attention_heatmap(probe, "layer1.0.conv")
    ax = fig.axes[0]
    img = ax.images[0].get_array()
    samples = probe.samples()
    part = samples[samples["layer"] == "layer1.0.conv"]
    expected = part.groupby(["sample", "cell"])["alpha"].mean().unstack().to_numpy()
    assert img.shape == expected.shape == (5, 4)
    assert np.allclose(img, expected)
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "alpha (signed)"  # colour bar
    lo, hi = ax.images[0].get_clim()
    assert lo == -hi  # centred on zero
    assert ax.get_xlabel() == "warehouse cell" and "layer1.0.conv" in ax.get_title()
    fig = plot.attention_heatmap(probe, "layer1.0.conv", by="mixture", sample=2)
    assert np.allclose(fig.axes[0].images[0].get_array(), probe.kept("layer1.0.conv")[2].numpy())
    # array input, drawn into a given ax
    f, ax = plt.subplots()
    assert plot.attention_heatmap(np.eye(3), ax=ax) is f
    with pytest.raises(ValueError, match="layer must name one of"):
        plot.attention_heatmap(probe)
    with pytest.raises(ValueError, match="by must be"):
        plot.attention_heatmap(probe, "stem", by="cell")


def test_alpha_histogram(probe):
    hist = probe.histogram()
    fig = plot.alpha_histogram(hist, "stem")
    ax = fig.axes[0]
    rects = bars(ax)
    part = hist[hist["layer"] == "stem"]
    assert len(rects) == len(part)  # one bar per bin
    heights = np.array([r.get_height() for r in rects])
    assert np.allclose(heights, part["count"] / part["count"].sum())
    assert any("negative" in t.get_text() for t in ax.texts)
    assert [p.get_label() for p in ax.patches if p not in rects] == ["negative side"]  # the shaded span
    assert ax.get_xlabel() == "alpha" and ax.get_ylabel() == "share of coefficients"
    # pooled over layers
    pooled = plot.alpha_histogram(probe).axes[0]
    total = hist.groupby("bin_left")["count"].sum().to_numpy()
    assert np.allclose([r.get_height() for r in bars(pooled)], total / total.sum())


def test_negative_fraction_bars_and_lines(probe, tmp_path):
    s = probe.summary()
    ax = plot.negative_fraction(s).axes[0]
    assert len(bars(ax)) == len(s) == 3
    assert np.allclose([r.get_height() for r in bars(ax)], s["neg_frac"])
    assert [t.get_text() for t in ax.get_xticklabels()] == s["layer"].tolist()
    history = pd.concat([s.assign(step=k, epoch=0, neg_frac=s["neg_frac"] + k) for k in (0, 10, 20)])
    ax = plot.negative_fraction_over_training(history).axes[0]
    assert len(ax.lines) == 3
    assert np.allclose(ax.lines[1].get_ydata(), s["neg_frac"].iloc[1] + np.array([0, 10, 20]))
    assert ax.get_xlabel() == "training step"
    with pytest.raises(ValueError, match="not in the history"):
        plot.negative_fraction_over_training(history, layers=["nope"])
    cb = ProbeCallback(every=1)  # a callback is accepted as data too
    cb.load_state_dict({"rows": history.to_dict("records")})
    assert len(plot.negative_fraction_over_training(cb).axes[0].lines) == 3


def test_cell_usage_matrix(probe):
    usage = probe.cell_usage()
    fig = plot.cell_usage(usage, "layer1")
    img = fig.axes[0].images[0].get_array()
    part = usage[usage["warehouse"] == "layer1"]
    assert img.shape == (2, 4)  # two layers share the warehouse, four cells
    assert np.allclose(img[1], part[part["layer"] == "layer1.1.conv"].sort_values("cell")["mean_abs"])
    fig = plot.cell_usage(probe, value="top_count")  # every warehouse: one panel + colour bar each
    assert len([a for a in fig.axes if a.images]) == 2
    f, ax = plt.subplots()
    with pytest.raises(ValueError, match="several warehouses"):
        plot.cell_usage(usage, ax=ax)
    with pytest.raises(ValueError, match="warehouse must be one of"):
        plot.cell_usage(usage, "nope")


def test_layer_stats(probe):
    s = probe.summary()
    fig = plot.layer_stats(s)
    assert len(fig.axes) == 2
    assert np.allclose([r.get_height() for r in bars(fig.axes[0])], s["diversity"])
    assert np.allclose([r.get_height() for r in bars(fig.axes[1])], s["effective_cells"])
    assert np.allclose(fig.axes[1].collections[0].get_offsets()[:, 1], s["num_cells"])


def test_accuracy_vs_params_and_metric_vs_knob():
    df = pd.DataFrame(
        {
            "method": ["static", "kw", "kw", "kw"],
            "budget": ["-", "1/2x", "1x", "4x"],
            "params": [0.27e6, 0.2e6, 0.27e6, 0.9e6],
            "accuracy": [91.0, 91.5, 92.4, 93.0],
        }
    )
    ax = plot.accuracy_vs_params(df).axes[0]
    assert len(ax.collections) == 2  # one scatter per method
    assert np.allclose(ax.collections[1].get_offsets(), np.c_[[0.2, 0.27, 0.9], [91.5, 92.4, 93.0]])
    # dynamic runs are labelled by their budget (string labels as given); the static net has none
    assert sorted(t.get_text() for t in ax.texts) == ["1/2x", "1x", "4x"]
    assert ax.get_xlabel() == "parameters (M)"
    numeric = df.assign(budget=[float("nan"), 0.5, 1.0, 4.0])
    ax = plot.accuracy_vs_params(numeric).axes[0]
    assert sorted(t.get_text() for t in ax.texts) == ["b=1", "b=1/2", "b=4"]
    sweep = pd.DataFrame(
        {
            "cell_in": [0.5, 0.5, 1.0, 1.0] * 2,
            "seed": [0, 1] * 4,
            "acc": [90, 92, 93, 93, 80, 82, 85, 87],
            "sharing": ["stage"] * 4 + ["layer"] * 4,
        }
    )
    ax = plot.metric_vs_knob(sweep, "cell_in", "acc", hue="sharing").axes[0]
    assert len(ax.lines) >= 2 and len(ax.get_legend().get_texts()) == 2
    assert np.allclose(ax.lines[0].get_ydata(), [91, 93])  # mean over seeds
    with pytest.raises(ValueError, match="missing"):
        plot.metric_vs_knob(sweep, "budget", "acc")
