"""kwlab.instruments.plot: every figure renders with Agg and shows the data it was given."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402
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
    scatters = lambda ax: [c for c in ax.collections if isinstance(c, PathCollection)]  # noqa: E731
    assert not scatters(ax)  # no seed dots unless asked for (the error bars are LineCollections)
    ax = plot.metric_vs_knob(sweep, "cell_in", "acc", hue="sharing", points=True).axes[0]
    dots = [c.get_offsets() for c in scatters(ax)]
    assert len(dots) == 2  # one set of dots per line, every row of its group
    assert np.allclose(dots[0], sweep.loc[sweep["sharing"] == "stage", ["cell_in", "acc"]].to_numpy())
    assert np.allclose(dots[1], sweep.loc[sweep["sharing"] == "layer", ["cell_in", "acc"]].to_numpy())
    with pytest.raises(ValueError, match="missing"):
        plot.metric_vs_knob(sweep, "budget", "acc")


def test_learning_curves_draw_each_history():
    histories = {
        "static": [
            {"epoch": 1, "train_loss": 2.0, "test_acc": 0.3},
            {"epoch": 2, "train_loss": 1.5, "test_acc": 0.4},
        ],
        "kw": pd.DataFrame(
            {"epoch": [1, 2, 3], "train_loss": [2.2, 1.8, 1.1], "test_acc": [0.2, float("nan"), 0.5]}
        ),
        "no_acc": [{"epoch": 1, "train_loss": 3.0}],
    }
    fig = plot.learning_curves(histories)
    loss, acc = fig.axes
    assert [ln.get_label() for ln in loss.lines] == ["static", "kw", "no_acc"]
    assert np.allclose(loss.lines[1].get_ydata(), [2.2, 1.8, 1.1])
    # the NaN epoch is dropped, the run without test_acc has no line there
    assert [ln.get_label() for ln in acc.lines] == ["static", "kw"]
    assert np.allclose(acc.lines[1].get_xdata(), [1, 3]) and np.allclose(acc.lines[1].get_ydata(), [0.2, 0.5])
    f, ax = plt.subplots()
    assert plot.learning_curves(histories, "test_acc", axes=ax) is f  # one metric into a given ax
    with pytest.raises(ValueError, match=r"\['test_loss'\] are in no history; the histories hold"):
        plot.learning_curves(histories, ("train_loss", "test_loss"))
    with pytest.raises(ValueError, match="one Axes per metric"):
        plot.learning_curves(histories, ("train_loss", "test_acc"), axes=[ax])


def test_learning_curves_draw_the_clean_train_accuracy_dashed_beside_test_accuracy():
    histories = {
        "a": [
            {"epoch": 1, "train_loss": 2.0, "test_acc": 0.3, "train_acc_clean": 0.35},
            {"epoch": 2, "train_loss": 1.5, "test_acc": 0.4, "train_acc_clean": 0.5},
        ],
        "off": [{"epoch": 1, "train_loss": 2.0, "test_acc": 0.2, "train_acc_clean": None}],
    }
    loss, acc = plot.learning_curves(histories).axes
    assert [ln.get_label() for ln in acc.lines] == ["a", "a (train, clean)", "off"]
    dashed = acc.lines[1]
    assert dashed.get_linestyle() == "--" and dashed.get_color() == acc.lines[0].get_color()
    assert np.allclose(dashed.get_ydata(), [0.35, 0.5])
    assert [ln.get_label() for ln in loss.lines] == ["a", "off"]  # only beside test accuracy
    assert len(plot.learning_curves(histories, "test_acc", clean_train=False).axes[0].lines) == 2
    # the clean accuracy as a panel of its own
    assert plot.learning_curves(histories, "train_acc_clean").axes[0].get_ylabel().startswith("clean train")


def test_kernel_cells_shows_the_cut():
    from kwlab.ops import CellLayout, cell_index_map, split_kernel

    layout = CellLayout(4, 4, (3, 3), cell_out=2, cell_in=2, cell_kernel=(1, 1))
    idx = cell_index_map(layout)
    assert idx.shape == (4, 4, 3, 3)
    # split_kernel (the inverse of the layers' assembly) finds cell j filled with j everywhere
    cells = split_kernel(idx.double(), layout)
    assert torch.equal(
        cells, torch.arange(layout.num_mixtures, dtype=torch.float64).view(-1, 1, 1, 1, 1).expand_as(cells)
    )
    w = torch.randn(4, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    fig = plot.kernel_cells(w, layout)
    values, cells_img = fig.axes[0].images[0].get_array(), fig.axes[1].images[0].get_array()
    assert np.allclose(values[:3, 3:6], w[0, 1].numpy())  # tile (output 0, input 1)
    assert np.array_equal(cells_img[3:6, :3], idx[1, 0].numpy())
    with pytest.raises(ValueError, match="does not match layout.weight_shape"):
        plot.kernel_cells(torch.zeros(4, 4, 1, 1), layout)


def test_warehouse_plan_and_params_vs_budget():
    from kwlab.methods import plan_kernelwarehouse
    from kwlab.teaching import budget_table

    net = torch.nn.Sequential(*[torch.nn.Conv2d(3 if i == 0 else 32, 32, 3, padding=1) for i in range(4)])
    plan = plan_kernelwarehouse(net, budget=1, example_input=torch.zeros(1, 3, 8, 8))
    ax = plot.warehouse_plan(plan).axes[0]
    heights = [r.get_height() for r in bars(ax)]
    keys = list(plan.warehouses)
    m = [sum(plan.layers[n].num_mixtures for n in plan.warehouses[k].layers) for k in keys]
    assert heights == m + [plan.warehouses[k].num_cells for k in keys]
    table = budget_table(net, budgets=(0.5, 1, 2), cell_ratios=(1.0,))
    ok = table[table["allowed"]]
    assert 0 < len(ok) < len(table)  # b=1/2 is not allowed for this net: its row is left out of the line
    ax = plot.params_vs_budget(table).axes[0]
    assert np.allclose(ax.lines[0].get_xdata(), ok["budget"]) and np.allclose(
        ax.lines[0].get_ydata(), ok["params"] / 1e6
    )
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1/2", "1", "2"]


def test_attribution_grid_rows_and_images():
    images = torch.zeros(2, 3, 4, 4)
    fig = plot.attribution_grid(
        images, {"a": torch.randn(2, 3, 4, 4), "b": torch.randn(2, 4, 4)}, (0.5,) * 3, (0.25,) * 3
    )
    drawn = [a for a in fig.axes if a.images]
    assert (
        len(drawn) == 3 * 2 and len(fig.axes) == 3 * 2 + 2
    )  # image row + two map rows; a colour bar per map row
    assert np.allclose(plot.to_image(images[0], (0.5,) * 3, (0.25,) * 3), 0.5)
    with pytest.raises(ValueError, match="one title per image"):
        plot.attribution_grid(images, {}, (0.5,) * 3, (0.25,) * 3, column_titles=["x"])


def test_attention_heatmap_non_negative_is_sequential_on_a_shared_scale():
    """Softmax attention (>= 0) gets a sequential map from 0, never the signed one; vmax sets one scale."""
    softmax = torch.softmax(torch.randn(6, 4), dim=-1)
    fig = plot.attention_heatmap(softmax, vmax=1.0)
    im = fig.axes[0].images[0]
    assert im.get_clim() == (0.0, 1.0)
    assert im.get_cmap().name == "viridis" and fig.axes[1].get_ylabel() == "alpha"
    signed = plot.attention_heatmap(np.array([[-0.2, 0.5], [0.1, 0.0]])).axes[0].images[0]
    assert signed.get_cmap().name == "RdBu_r" and signed.get_clim() == (-0.5, 0.5)
    with pytest.raises(ValueError, match="negative values"):
        plot.attention_heatmap(np.array([[-0.2, 0.5]]), signed=False)


def test_accuracy_vs_params_legend_names_every_configuration_and_chance():
    df = pd.DataFrame(
        {
            "method": ["static"] * 2 + ["kw"] * 4,
            "setting": ["static 16", "static 16", "kw b=1 cell 1", "kw b=1 cell 1"]
            + ["kw b=1 cell 1/2", "kw b=1 cell 1/2"],
            "params": [73e3, 73e3, 2.5e6, 2.5e6, 0.2e6, 0.2e6],
            "final_acc": [0.15, 0.19, 0.10, 0.12, 0.11, 0.13],
        }
    )
    fig = plot.accuracy_vs_params(df, y="final_acc", label="setting", legend=True, chance=0.1)
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts[-1] == "chance (0.1)"
    assert [t.split(" (")[0] for t in texts[:-1]] == ["static 16", "kw b=1 cell 1", "kw b=1 cell 1/2"]
    assert "2.5M params" in texts[1] and "200k params" in texts[2]  # same budget, different size: told apart
    assert not ax.texts  # no annotations that could overlap
    assert ax.get_ylim()[0] == 0
    # the legend sits outside the axes (it covers no point)
    fig.canvas.draw()
    leg = ax.get_legend().get_window_extent()
    assert leg.x0 >= ax.get_window_extent().x1
    # the mean of each configuration is drawn with its interval
    means = [c for c in ax.containers]
    assert len(means) == 3


def test_layer_comparison_marks_degenerate_layers(probe):
    from kwlab.instruments.statistics import degenerate_layers

    s = probe.summary()
    fake = s.assign(num_mixtures=[1] + [2] * (len(s) - 1), num_cells=[1] + [3] * (len(s) - 1))
    marked = degenerate_layers(fake)
    assert marked == [s["layer"].iloc[0]]
    fig = plot.layer_comparison({"learned": s, "random": s}, columns=("diversity",), degenerate=marked)
    ax = fig.axes[0]
    rects = bars(ax)
    assert len(rects) == 2 * len(s)
    hatched = [r for r in rects if r.get_hatch()]
    assert len(hatched) == 2  # the degenerate layer, in both nets
    assert ax.get_xticklabels()[0].get_text().endswith("†")
    with pytest.raises(ValueError, match="not in the tables"):
        plot.layer_comparison({"a": s}, columns=("diversity",), degenerate=["nope"])
    with pytest.raises(ValueError, match="missing"):
        degenerate_layers(s.drop(columns="num_cells"))


def test_negative_fraction_colourbar_has_integer_layer_ticks():
    # 21 layers: a colour bar (no legend) from 0 to 20, which matplotlib's default ticks at 2.5, 7.5, ...
    rows = [{"step": s, "layer": f"l{i}", "neg_frac": 0.01 * i} for s in (0, 10) for i in range(21)]
    fig = plot.negative_fraction_over_training(pd.DataFrame(rows))
    bar = fig.axes[1]
    fig.canvas.draw()
    ticks = [t for t in bar.get_yticks() if 0 <= t <= 20]
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks


def test_learning_curves_chance_line_in_the_legend_of_accuracy_panels():
    histories = {
        "a": [
            {"epoch": 1, "train_loss": 2.0, "test_acc": 0.3},
            {"epoch": 2, "train_loss": 1.5, "test_acc": 0.4},
        ]
    }
    loss, acc = plot.learning_curves(histories, chance=0.1).axes
    chance = [ln for ln in acc.lines if ln.get_label() == "chance (0.10)"]
    assert len(chance) == 1 and np.allclose(chance[0].get_ydata(), 0.1)
    assert "chance (0.10)" in [t.get_text() for t in acc.get_legend().get_texts()]
    assert acc.get_ylim()[0] == 0
    assert [ln.get_label() for ln in loss.lines] == ["a"]  # not on the loss panel
    assert len(plot.learning_curves(histories).axes[1].lines) == 1  # none without chance=


def test_cell_usage_shares_a_colour_scale_with_vmax(probe):
    usage = probe.cell_usage()
    top = float(usage["mean_abs"].max()) * 3
    fig = plot.cell_usage(probe, vmax=top)
    panels = [a for a in fig.axes if a.images]
    assert len(panels) == 2 and all(a.images[0].get_clim() == (0, top) for a in panels)
    own = plot.cell_usage(usage, "layer1").axes[0].images[0].get_clim()[1]
    assert own == pytest.approx(usage[usage["warehouse"] == "layer1"]["mean_abs"].max())


def test_tau0_recal_curve_draws_against_the_anneal_position():
    """metrics.jsonl rows of two seeds: test_acc_tau0_recal against tau, the mean over seeds per tau."""
    rows = pd.DataFrame(
        {
            "epoch": [1, 2, 3, 1, 2, 3],
            "seed": [0, 0, 0, 1, 1, 1],
            "temperature": [0.7, 0.4, 0.1, 0.7, 0.4, 0.1],
            "test_acc_tau0_recal": [0.1, 0.2, 0.4, 0.12, 0.25, 0.38],
        }
    )
    fig = plot.over_training(rows, "test_acc_tau0_recal", x="temperature", hue=None, tau=False)
    line = fig.axes[0].lines[0]
    assert np.allclose(line.get_xdata(), [0.1, 0.4, 0.7])
    assert np.allclose(line.get_ydata(), [0.39, 0.225, 0.11])


def _per_class(values: dict[tuple[str, int], list[float]]) -> pd.DataFrame:
    """A Probe.per_class table (one mixture) from {(layer, label): [alpha of each cell]}, in that order."""
    rows = [
        {"layer": layer, "label": label, "mixture": 0, "cell": c, "mean_alpha": a, "n_samples": 4}
        for (layer, label), alphas in values.items()
        for c, a in enumerate(alphas)
    ]
    return pd.DataFrame(rows)


def test_attention_by_label_draws_what_changes_with_the_label_on_one_scale():
    # layer "b" comes first in the table and keeps its place; "a" routes by the label, "b" does not
    dynamic = _per_class(
        {("b", 0): [0.2, 0.2, 0.6], ("b", 1): [0.2, 0.2, 0.6], ("a", 0): [0.7, 0.3], ("a", 1): [0.5, 0.5]}
    )
    constant = _per_class(
        {("b", 0): [0.3, 0.3, 0.4], ("b", 1): [0.3, 0.3, 0.4], ("a", 0): [0.6, 0.4], ("a", 1): [0.6, 0.4]}
    )
    fig = plot.attention_by_label({"DY": dynamic, "constant": constant}, label_names=["red", "green"])
    top, bottom = fig.axes[0], fig.axes[1]
    raw = np.array([[0.2, 0.2, 0.6, 0.7, 0.3], [0.2, 0.2, 0.6, 0.5, 0.5]])
    assert np.allclose(top.images[0].get_array(), raw - raw.mean(axis=0))  # each column minus its mean
    assert np.allclose(bottom.images[0].get_array(), 0.0)  # a constant mixture: nothing changes
    # one diverging scale for both panels, centred on 0, set by the largest deviation (0.1)
    assert top.images[0].get_clim() == bottom.images[0].get_clim() == pytest.approx((-0.1, 0.1))
    assert top.images[0].get_cmap().name == "RdBu_r"
    assert [t.get_text() for t in top.get_yticklabels()] == ["red", "green"]
    assert [t.get_text() for t in bottom.get_xticklabels()] == ["b", "a"]  # under the last panel only
    assert [t.get_text() for t in top.get_xticklabels()] == ["", ""]
    assert np.allclose(top.get_xticks(), [1.0, 3.5])  # the middle of each layer's columns
    assert top.get_ylabel() == "DY" and bottom.get_ylabel() == "constant"
    # the plain means: a sequential scale from 0 for non-negative attention
    plain = plot.attention_by_label(dynamic, relative=False).axes[0].images[0]
    assert np.allclose(plain.get_array(), raw) and plain.get_clim() == pytest.approx((0.0, 0.7))
    assert plain.get_cmap().name == "viridis"
    with pytest.raises(ValueError, match="missing"):
        plot.attention_by_label(dynamic.drop(columns="label"))
    with pytest.raises(ValueError, match="label_names must name every label 0..1"):
        plot.attention_by_label(dynamic, label_names=["red"])


def test_attention_by_label_reads_a_probe_recorded_with_labels():
    net = TinyDynamicNet()
    x, y = torch.randn(24, 3, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(24) % 3
    with Probe(net) as probe:
        probe.record(x, labels=y)
    table = probe.per_class()
    image = plot.attention_by_label(probe).axes[0].images[0].get_array()
    first = table[table["layer"] == table["layer"].iloc[0]]
    grid = first.pivot_table(index="label", columns=["mixture", "cell"], values="mean_alpha").to_numpy()
    assert image.shape[0] == 3
    assert np.allclose(image[:, : grid.shape[1]], grid - grid.mean(axis=0))


def test_over_training_gives_each_hue_value_the_colour_of_its_place_in_order():
    rows = [
        {"epoch": e, "label": label, "seed": s, "test_acc": base + 0.1 * e + 0.01 * s}
        for label, base in [("b static", 0.2), ("a kw", 0.3)]
        for s in (0, 1)
        for e in (1, 2, 3)
    ]
    frame = pd.DataFrame(rows)

    def colours(ax):
        return {
            line.get_label().split(" (n=")[0]: line.get_color()
            for line in ax.lines
            if "(n=" in line.get_label()
        }

    plain = colours(plot.over_training(frame, "test_acc", x="epoch", tau=False).axes[0])
    assert plain == {"a kw": "C0", "b static": "C1"}  # sorted by default
    ordered = plot.over_training(frame, "test_acc", x="epoch", tau=False, order=["b static", "a kw"]).axes[0]
    assert colours(ordered) == {"b static": "C0", "a kw": "C1"}  # a summary table's order: same colours
    means = {
        line.get_label().split(" (n=")[0]: line.get_ydata()
        for line in ordered.lines
        if "(n=" in line.get_label()
    }
    assert np.allclose(means["a kw"], [0.405, 0.505, 0.605])  # the line is the mean over seeds
    # a value missing from order keeps a colour after those in it
    partial = colours(plot.over_training(frame, "test_acc", x="epoch", tau=False, order=["b static"]).axes[0])
    assert partial == {"b static": "C0", "a kw": "C1"}
