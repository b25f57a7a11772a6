"""Issue 29, items 1 and 2, as a user meets them: FDConv through the trainer, and no number without finite
inputs (results, summaries, findings, plots, the probe, freeze_attention, DCD in eval mode).

Each test failed on the code before the fix (FDConv: "Cannot copy out of meta tensor"; NaN runs reported
``final_acc: 0.125`` with ``notes: null``; NaN attention counted as ``neg_frac 0.0``; ``freeze_attention``
stored NaN in every layer) and passes after it. The matrix of every method through every path is
``tests/test_every_path.py``.
"""

from __future__ import annotations

import copy
import json
import math
import warnings

import pandas as pd
import pytest
import torch

import kwlab
from kwlab.experiments.config import RunConfig
from kwlab.experiments.findings import findings
from kwlab.experiments.stats import summarize
from kwlab.experiments.train import fit
from kwlab.layers.base import dynamic_layers
from kwlab.testing import tiny_run

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------- FDConv, meta device
def test_fdconv_builds_for_real_after_a_meta_device_build():
    """The trainer's and the sweep's pre-check build the model on the meta device first."""
    with torch.device("meta"):
        meta = kwlab.create_model("resnet20_cifar", method="fdconv", num_classes=10, kernel_num=4)
    assert all(b.is_meta for n, b in meta.named_buffers() if n.endswith("bands"))
    model = kwlab.create_model("resnet20_cifar", method="fdconv", num_classes=10, kernel_num=4)
    bands = [b for n, b in model.named_buffers() if n.endswith("bands")]
    assert bands and all(b.device.type == "cpu" for b in bands)
    assert torch.isfinite(model.eval()(torch.randn(2, 3, 16, 16))).all()


def test_fdconv_run_trains_with_kwlab_train(tmp_path, capsys):
    from kwlab.cli import main

    sets = {**tiny_run(train_samples=32, test_samples=16), "method": "fdconv"}
    sets["model_kwargs"] = {"widths": [4, 8, 24], "kernel_num": 4}
    argv = ["train", "--out", str(tmp_path / "run"), "--no-progress"]
    for k, v in sets.items():
        argv += ["--set", f"{k}={json.dumps(v) if isinstance(v, (dict, list)) else v}"]
    assert main(argv) == 0, capsys.readouterr().err
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["epochs_done"] == 1 and results["nonfinite"] is False
    assert math.isfinite(results["final_acc"]) and math.isfinite(results["final_loss"])


# ------------------------------------------------------------------------------ runs with NaN numbers
def test_static_run_at_lr_1e30_reports_nonfinite_not_accuracy(tmp_path):
    results = fit(RunConfig(**tiny_run(lr=1e30)), tmp_path / "run", progress=False)
    assert results["nonfinite"] is True
    assert not math.isfinite(results["final_loss"])
    # today's 0.125 was the argmax of NaN logits
    for key in ("final_acc", "best_acc", "final_train_acc"):
        assert math.isnan(results[key]), (key, results[key])
    assert "test loss" in results["nonfinite_what"] and "train loss" in results["nonfinite_what"]
    assert "non-finite" in results["notes"] and "test loss" in results["notes"]
    stored = json.loads((tmp_path / "run" / "results.json").read_text())
    assert stored["nonfinite"] is True and math.isnan(stored["final_acc"]) and stored["notes"]


def test_finite_run_is_not_flagged(tmp_path):
    results = fit(RunConfig(**tiny_run()), None, progress=False)
    assert results["nonfinite"] is False and results["nonfinite_what"] is None
    assert math.isfinite(results["final_acc"])


def test_short_dcd_run_says_nonfinite_and_what_to_do(tmp_path):
    """A DCD run of two steps: eval with barely trained BatchNorm statistics gives NaN (official design)."""
    config = RunConfig(**tiny_run(method="dcd", train_samples=32, test_samples=16, probe_samples=8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        results = fit(config, tmp_path / "run", progress=False)
    assert results["nonfinite"] is True
    assert math.isnan(results["final_acc"]) and math.isnan(results["final_acc_frozen"])
    assert "frozen accuracy" in results["nonfinite_what"]
    assert "DCD" in results["notes"] and "train more steps" in results["notes"]
    assert math.isnan(results["probe_neg_frac"]) and math.isnan(results["probe_effective_cells"])


def test_fresh_dcd_model_in_eval_mode_warns_at_its_first_nonfinite_output():
    model = kwlab.create_model("resnet20_cifar", method="dcd", num_classes=10, widths=[4, 8, 8]).eval()
    x = torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = model(x)
        model(x)  # the same input again: that layer has said it already
    assert not torch.isfinite(out).all()  # the official design, not hidden
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1, messages  # the layer where it starts, once; not every layer after it
    assert "DCDConv2d" in messages[0] and "eval mode" in messages[0] and "train more steps" in messages[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.train()(torch.randn(4, 3, 8, 8))  # train mode: no check, no warning


# ------------------------------------------------------------------------ summaries, findings and plots
def _table() -> pd.DataFrame:
    rows = []
    for method, accs, losses in (
        ("static", [0.50, 0.60, 0.1234], [1.0, 1.1, math.nan]),  # 0.1234: argmax of NaN logits
        ("kw", [0.40, 0.45, 0.50], [1.2, 1.3, 1.4]),
    ):
        for seed, (acc, loss) in enumerate(zip(accs, losses)):
            rows.append(
                {
                    "run_id": f"{method}{seed}",
                    "arch": "resnet20_cifar",
                    "method": method,
                    "seed": seed,
                    "model_kwargs": "{}",
                    "data": "synthetic",
                    "final_acc": acc,
                    "best_acc": acc,
                    "final_loss": loss,
                    "params": 100 if method == "static" else 150,
                    "num_classes": 10,
                }
            )
    return pd.DataFrame(rows)


def test_summary_leaves_a_nan_loss_run_out_with_a_count():
    """A record written before the flag (final_loss NaN, final_acc 0.125) and one with the flag."""
    for table in (_table(), _table().assign(nonfinite=[False, False, True, False, False, False])):
        summary = summarize(table)
        static = summary[summary["method"] == "static"].iloc[0]
        assert static["n_seeds"] == 2 and static["final_acc_mean"] == pytest.approx(0.55)
        assert static["n_left_out"] == 1
        assert static["left_out"] == "1 run left out: non-finite test loss [static2]"
        assert summary[summary["method"] == "kw"].iloc[0]["n_left_out"] == 0
        assert summary.attrs["left_out"].startswith("1 run left out: non-finite test loss")


def test_summary_of_a_configuration_with_only_nan_runs_has_no_number():
    table = _table()
    table.loc[table["method"] == "static", "final_loss"] = math.nan
    static = summarize(table).query("method == 'static'").iloc[0]
    assert static["n_seeds"] == 0 and static["n_left_out"] == 3 and math.isnan(static["final_acc_mean"])
    assert static["left_out"].startswith("3 runs left out: non-finite test loss")


def test_findings_leave_a_nan_run_out_with_a_count():
    table = _table().assign(nonfinite_what=[None, None, "test loss, test logits", None, None, None])
    text = "\n".join(findings(table))
    assert "1 run left out: non-finite test loss, test logits [static2]" in text
    assert "n = 2" in text  # the static configuration over its two finite seeds
    assert "0.123" not in text


def test_result_plot_leaves_a_nan_run_out_with_a_count():
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from kwlab.instruments import plot

    table = _table().assign(budget=1.0)
    fig = plot.metric_vs_knob(table, "method", "final_acc")
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    line = fig.axes[0].lines[0]
    assert any(t.startswith("1 run left out: non-finite test loss") for t in texts), texts
    assert 0.55 in [pytest.approx(v) for v in line.get_ydata()]  # static: mean of its two finite seeds
    plt.close(fig)
    fig = plot.accuracy_vs_params(table, y="final_acc", label=None)
    assert any("1 run left out" in t.get_text() for ax in fig.axes for t in ax.texts)
    plt.close(fig)


# ------------------------------------------------------------------------ the probe and freeze_attention
@pytest.fixture
def kw_net():
    torch.manual_seed(0)
    return kwlab.create_model("resnet20_cifar", method="kw", num_classes=10, widths=[4, 8, 8]).eval()


def _batch_with_one_nan_sample() -> torch.Tensor:
    x = torch.randn(4, 3, 8, 8)
    x[1] = math.nan
    return x


def test_probe_gives_nan_statistics_for_nan_attention_and_no_mean_mixes_them(kw_net):
    from kwlab.instruments.statistics import headline

    with kwlab.Probe(kw_net) as probe:
        kw_net(_batch_with_one_nan_sample())
    summary = probe.summary()
    assert (summary["nonfinite_samples"] == 1).all()
    assert summary["neg_frac"].isna().all() and summary["effective_cells"].isna().all()
    assert all(math.isnan(v) for v in headline(summary).values())
    assert probe.cell_usage()["top_frac"].isna().all()
    with kwlab.Probe(kw_net) as clean:  # a clean batch: finite statistics, nothing flagged
        kw_net(torch.randn(4, 3, 8, 8))
    assert (clean.summary()["nonfinite_samples"] == 0).all()
    assert not math.isnan(headline(clean.summary())["probe_neg_frac"])


def test_freeze_attention_refuses_a_batch_with_one_nan_sample_and_leaves_the_model_unchanged(kw_net):
    from kwlab.instruments.freeze import NonFiniteAttentionError

    state = copy.deepcopy(kw_net.state_dict())
    x = torch.randn(2, 3, 8, 8)
    before = kw_net(x)
    with pytest.raises(NonFiniteAttentionError, match="not finite.*nothing was frozen") as err:
        kwlab.freeze_attention(kw_net, _batch_with_one_nan_sample())
    assert err.value.layers and isinstance(err.value, ValueError)
    assert all(layer.attention.frozen_alpha is None for _, layer in dynamic_layers(kw_net))
    assert all(torch.equal(v, kw_net.state_dict()[k]) for k, v in state.items())
    assert torch.equal(kw_net(x), before) and torch.isfinite(before).all()
