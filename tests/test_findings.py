"""Findings you can trust: seeds and t-intervals, the paired comparison, budgets in every row, data=auto,
the demo config's summary, and `kwlab reproduce`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from kwlab.experiments import data as data_mod
from kwlab.experiments import data_sources
from kwlab.experiments.findings import findings
from kwlab.experiments.report import make_report, publish
from kwlab.experiments.reproduce import reproduce
from kwlab.experiments.spec import SweepSpec, expand, load_sweep
from kwlab.experiments.stats import summarize
from kwlab.experiments.sweep import run_sweep
from kwlab.experiments.verdicts import compare
from kwlab.instruments.intervals import mean_ci
from kwlab.testing import tiny_run

ROOT = Path(__file__).resolve().parents[1]
TINY = tiny_run(train_samples=32, test_samples=16, probe_samples=8)
INTERVAL = ["final_acc_mean", "final_acc_std", "final_acc_ci95", "best_acc_ci95"]
BUDGET = ["params", "params_attention", "params_warehouse", "macs"]
PROVENANCE = ["data", "git_revision", "machine", "torch_version", "threads"]

pytestmark = pytest.mark.usefixtures("one_thread")


def _runs(values_a, values_b, seeds=(0, 1, 2)) -> pd.DataFrame:
    rows = []
    for method, values in (("static", values_a), ("kw", values_b)):
        for s, v in zip(seeds, values):
            rows.append(
                {
                    "run_id": f"{method}{s}",
                    "arch": "resnet20_cifar",
                    "method": method,
                    "seed": s,
                    "model_kwargs": "{}",
                    "final_acc": v,
                    "params": 100 if method == "static" else 150,
                }
            )
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------- statistics
def test_summary_statistics_match_scipy_on_fixed_numbers():
    x = [0.51, 0.47, 0.55, 0.49]
    mean, std, half = mean_ci(x)
    lo, hi = stats.t.interval(0.95, df=3, loc=np.mean(x), scale=stats.sem(x))
    assert mean == pytest.approx(0.505) and std == pytest.approx(np.std(x, ddof=1))
    assert half == pytest.approx((hi - lo) / 2) and half == pytest.approx(stats.t.ppf(0.975, 3) * std / 2)
    assert mean_ci([0.3, 0.3, 0.3])[1:] == (0.0, 0.0) and math.isnan(mean_ci([0.3])[2])
    summary = summarize(_runs([0.5, 0.6, 0.7], [0.2, 0.2, 0.5]))
    assert list(summary["n_seeds"]) == [3, 3] and list(summary["params"]) == [100, 150]
    kw = summary[summary["method"] == "kw"].iloc[0]
    assert kw["final_acc_mean"] == pytest.approx(0.3)
    assert kw["final_acc_std"] == pytest.approx(np.std([0.2, 0.2, 0.5], ddof=1))
    assert kw["final_acc_ci95"] == pytest.approx(stats.t.ppf(0.975, 2) * stats.sem([0.2, 0.2, 0.5]))


def test_compare_reaches_one_of_three_verdicts_on_fixed_numbers():
    same = _runs([0.5, 0.6, 0.55], [0.5, 0.6, 0.55])  # zero differences, zero spread: inside any margin
    c = compare(same, {"method": "static"}, {"method": "kw"})
    assert c.verdict == "equivalent" and not c.significant and c.p_tost == 0.0
    noisy = _runs([0.5, 0.6, 0.55], [0.52, 0.57, 0.56])  # differences -0.02, 0.03, -0.01: CI holds 0
    c = compare(noisy, {"method": "static"}, {"method": "kw"})
    assert c.verdict == "not resolved" and "the design detects differences of about" in c.text
    clear = _runs([0.50, 0.61, 0.55], [0.30, 0.40, 0.36])
    c = compare(clear, {"method": "static"}, {"method": "kw"})
    d = np.array([0.20, 0.21, 0.19])
    lo, hi = stats.t.interval(0.95, df=2, loc=d.mean(), scale=stats.sem(d))
    assert c.significant and c.diff == pytest.approx(0.20) and c.verdict == "differs"
    assert (c.ci_low, c.ci_high) == pytest.approx((lo, hi))
    assert c.text.startswith("static is higher than kw by 0.200 ± ")
    flipped = compare(clear, {"method": "kw"}, {"method": "static"})
    assert flipped.text.startswith("static is higher than kw") and flipped.diff == pytest.approx(-0.2)
    with pytest.raises(ValueError, match="share no seed"):
        compare(
            _runs([0.5], [0.4], seeds=(0,)).assign(seed=[0, 1]),
            {"method": "static"},
            {"method": "kw"},
            paired=True,
        )


# ------------------------------------------------------------------------------------------- sweeps
def test_seeds_axis_defaults_to_three_and_yields_to_an_explicit_seed():
    spec = SweepSpec.from_dict({"name": "s", "base": TINY, "runs": [{"method": "static"}]})
    assert sorted(c.seed for c in expand(spec)) == [0, 1, 2]
    spec = SweepSpec.from_dict({"name": "s", "base": TINY, "seeds": 2, "runs": [{"method": "static"}]})
    assert sorted(c.seed for c in expand(spec)) == [0, 1]
    spec = SweepSpec.from_dict(
        {"name": "s", "base": TINY, "grid": {"seed": [7]}, "runs": [{"method": "static"}]}
    )
    assert [c.seed for c in expand(spec)] == [7]
    with pytest.raises(ValueError, match="'seeds' must be an integer >= 1"):
        SweepSpec.from_dict({"name": "s", "base": TINY, "seeds": 0})


def test_demo_config_on_a_tiny_subset_gives_intervals_budgets_and_a_finding(tmp_path):
    tiny = {k: v for k, v in TINY.items() if k != "model_kwargs"}
    spec = load_sweep(ROOT / "configs" / "demo.yaml", [f"{k}={json.dumps(v)}" for k, v in tiny.items()])
    assert spec.seeds >= 3
    run_sweep(spec, tmp_path / "demo", executor="sequential", progress=False, log=lambda *_: None)
    summary = pd.read_csv(tmp_path / "demo" / "summary.csv")
    results = pd.read_csv(tmp_path / "demo" / "results.csv")
    assert len(results) == len(summary) * spec.seeds and (summary["n_seeds"] == spec.seeds).all()
    assert set(INTERVAL) <= set(summary.columns)
    for col in BUDGET + PROVENANCE:
        assert col in summary.columns and col in results.columns, col
    assert (results["data"] == "synthetic").all() and (results["threads"] == 1).all()
    dynamic = summary[summary["method"] == "dyconv"]
    static = summary[summary["method"] == "static"]
    assert sorted(dynamic["attention"]) == ["constant", "dynamic"] and len(static) == 2
    assert (dynamic["params_attention"] > 0).all() and (static["params_attention"] == 0).all()
    assert (
        dynamic["params"]
        == dynamic["params_static"]
        + dynamic["params_warehouse"]
        + dynamic["params_attention"]
        + dynamic["params_other"]
    ).all()
    page = make_report(tmp_path / "demo")
    text = (page.parent / "finding.md").read_text()
    assert "±" in text and "parameters" in text and (page.parent / "accuracy_by_config.png").exists()
    # the three comparisons declared in the demo's file, each with one of the three verdicts
    assert "Comparisons (3, declared in the sweep file" in text
    assert text.count("Holm-adjusted p = ") == 3
    readme = publish(tmp_path / "demo", tmp_path / "reference")  # a reference-result folder from it
    published = {p.name for p in (tmp_path / "reference").rglob("*")}
    assert {"results.csv", "summary.csv", "sweep.yaml", "accuracy_by_config.png"} <= published
    assert not [p for p in published if p.endswith((".pt", ".parquet", ".json"))]
    assert text.strip() in readme.read_text()


# --------------------------------------------------------------------------------------------- data
@pytest.fixture
def no_cifar(tmp_path, monkeypatch):
    """Nowhere to find CIFAR-10 and no download allowed (a download attempt fails the test)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KWLAB_DATA", str(empty))
    monkeypatch.setenv("TORCH_HOME", str(empty))
    monkeypatch.setenv("KWLAB_DOWNLOAD", "0")

    def forbidden(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(data_sources, "_download_cifar", forbidden)
    return empty


def test_data_auto_falls_back_to_synthetic_with_a_visible_notice(no_cifar, tmp_path):
    name, notice = data_sources.resolve_auto()
    assert name == "synthetic" and "SYNTHETIC" in notice and str(no_cifar) in notice
    with pytest.warns(UserWarning, match="SYNTHETIC"):
        loaded = data_mod.load_data("auto", image_size=8, train_samples=8, test_samples=4)
    assert loaded.name == "synthetic"
    logged: list[str] = []
    spec = SweepSpec.from_dict(
        {"name": "a", "seeds": 1, "base": {**TINY, "data": "auto"}, "runs": [{"method": "static"}]}
    )
    run_sweep(spec, tmp_path / "auto", progress=False, log=logged.append)
    assert any("SYNTHETIC" in line for line in logged)
    results = pd.read_csv(tmp_path / "auto" / "results.csv")
    assert list(results["data"]) == ["synthetic"] and results["data_notice"].str.contains("SYNTHETIC").all()
    assert any("SYNTHETIC" in line for line in findings(results))


def test_data_auto_picks_cifar10_where_it_is_found(no_cifar):
    (no_cifar / "cifar-10-batches-py").mkdir()
    (no_cifar / "cifar-10-batches-py" / "test_batch").write_bytes(b"")
    assert data_sources.resolve_auto() == ("cifar10", "")


# ---------------------------------------------------------------------------------------- reproduce
def test_reproduce_of_a_tiny_recorded_run_gives_identical_numbers(tmp_path, capsys):
    from kwlab.cli import main

    spec = SweepSpec.from_dict(
        {
            "name": "r",
            "seeds": 1,
            "base": TINY,
            "runs": [{"method": "kw", "preset": "1x", "sharing": "layer"}],
        }
    )
    run_sweep(spec, tmp_path / "sweep", progress=False, log=lambda *_: None)
    recorded = pd.read_csv(tmp_path / "sweep" / "results.csv").iloc[0]
    assert (
        main(
            [
                "reproduce",
                str(tmp_path / "sweep"),
                "--run",
                recorded["run_id"],
                "--out",
                str(tmp_path / "again"),
                "--no-progress",
            ]
        )
        == 0
    )
    again = json.loads((tmp_path / "again" / "results.json").read_text())
    for key in ("final_acc", "best_acc", "final_loss", "final_train_loss", "params", "macs"):
        assert again[key] == recorded[key], key
    printed = capsys.readouterr().out
    assert "recorded" in printed and "reproduced" in printed
    table = reproduce(
        tmp_path / "sweep", recorded["run_id"], tmp_path / "again", progress=False, log=lambda *_: None
    )
    assert (table["difference"] == 0).all()


def test_runs_record_the_thread_count_the_sweep_chose(tmp_path):
    import torch

    spec = SweepSpec.from_dict(
        {"name": "t", "seeds": 1, "base": TINY, "runs": [{"method": "static"}], "executor": {"threads": 2}}
    )
    run_sweep(spec, tmp_path / "t", progress=False, log=lambda *_: None)
    assert list(pd.read_csv(tmp_path / "t" / "results.csv")["threads"]) == [2]
    assert torch.get_num_threads() == 1  # the caller's setting is restored
