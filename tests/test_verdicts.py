"""The three verdicts (differs / equivalent / not resolved), checked against the worked example and Holm's
example of shared/reference/verdicts.md, against scipy's own tests, and against a Monte Carlo power run."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from kwlab.experiments.significance import detectable_difference, holm, tost
from kwlab.experiments.stats import config_labels, summarize
from kwlab.experiments.verdicts import VERDICTS, compare, compare_all

A = (0.612, 0.598, 0.605, 0.621, 0.609)  # verdicts.md's worked example
B = (0.601, 0.590, 0.611, 0.603, 0.596)
FORBIDDEN = ("no difference", "as well as", "did not change", "no effect", "real", "better")


def _table(arms: dict[str, tuple], seeds: dict[str, tuple] | None = None, metric="final_acc") -> pd.DataFrame:
    rows = []
    for method, values in arms.items():
        for s, v in zip((seeds or {}).get(method, range(len(values))), values):
            rows.append(
                {
                    "run_id": f"{method}-{s}",
                    "arch": "resnet20_cifar",
                    "method": method,
                    "seed": s,
                    "model_kwargs": "{}",
                    metric: v,
                }
            )
    return pd.DataFrame(rows)


def _words_ok(text: str) -> None:
    for word in FORBIDDEN:
        assert word not in text.lower(), (word, text)


def test_worked_example_of_verdicts_md_number_for_number():
    df = _table({"kw": A, "static": B})
    c = compare(df, {"method": "kw"}, {"method": "static"}, margin=0.015)
    d = np.subtract(A, B)
    assert c.n == 5 and c.test == "paired t"
    assert round(c.diff, 4) == 0.0088 and round(float(d.std(ddof=1)), 4) == 0.0090
    assert round(c.se, 5) == 0.00404
    assert (round(c.ci_low, 4), round(c.ci_high, 4)) == (-0.0024, 0.0200)
    assert round(c.p_value, 4) == 0.0951
    assert (round(c.p_lower, 4), round(c.p_upper, 4), round(c.p_tost, 4)) == (0.0021, 0.0999, 0.0999)
    assert (round(c.tost_low, 4), round(c.tost_high, 4)) == (0.0002, 0.0174)
    assert c.verdict == "not resolved" and c.verdict in VERDICTS
    # the same numbers from scipy's own paired test
    ref = stats.ttest_rel(A, B)
    ci = ref.confidence_interval(0.95)
    assert c.p_value == pytest.approx(ref.pvalue) and (c.ci_low, c.ci_high) == pytest.approx(
        (ci.low, ci.high)
    )
    # TOST by shifting the data: two one-sided tests of d + M > 0 and d - M < 0
    lower = stats.ttest_1samp(d + 0.015, 0.0, alternative="greater").pvalue
    upper = stats.ttest_1samp(d - 0.015, 0.0, alternative="less").pvalue
    assert (c.p_lower, c.p_upper) == pytest.approx((lower, upper))
    t = tost(d, 0.015)
    assert (t.p_lower, t.p_upper, t.p) == pytest.approx((lower, upper, upper)) and not t.equivalent
    assert "not resolved at this size: the design detects differences of about" in c.text
    assert f"{c.mdd:.3f}" in c.text and c.mdd == pytest.approx(detectable_difference(float(d.std(ddof=1)), 5))
    _words_ok(c.text)


def test_holm_matches_the_example_and_a_brute_force_definition():
    assert holm([0.010, 0.040, 0.030]) == pytest.approx([0.030, 0.060, 0.060])
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = rng.uniform(0, 0.2, size=rng.integers(1, 8))
        k = len(p)
        order = np.argsort(p)
        expected = np.empty(k)
        for rank, i in enumerate(order):  # the definition: max over j <= i of min(1, (k - j + 1) p(j))
            expected[i] = max(min(1.0, (k - j) * p[order[j]]) for j in range(rank + 1))
        assert holm(p) == pytest.approx(expected)
    out = holm([0.01, float("nan"), 0.02])  # a NaN is not a comparison: k = 2
    assert math.isnan(out[1]) and out[[0, 2]] == pytest.approx([0.02, 0.02])
    with pytest.raises(ValueError, match="p_values"):
        holm([0.5, 1.5])


def test_detectable_difference_by_monte_carlo_and_by_the_normal_formula():
    mdd = detectable_difference(0.015, 3)
    assert mdd == pytest.approx(0.049, abs=0.0005)  # verdicts.md: "about 0.049"
    # Monte Carlo: with true difference mdd and sd 0.015, a paired t test at 0.05 rejects 80% of the time
    rng = np.random.default_rng(1234)
    d = rng.normal(mdd, 0.015, size=(40_000, 3))
    p = stats.ttest_1samp(d, 0.0, axis=1).pvalue
    assert float((p < 0.05).mean()) == pytest.approx(0.8, abs=0.01)
    # large n: the normal approximation (z_{0.975} + z_{0.8}) s / sqrt(n)
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    assert detectable_difference(1.0, 400) == pytest.approx(z / 20, rel=0.01)
    assert math.isnan(detectable_difference(0.015, 1))
    with pytest.raises(ValueError, match="power"):
        detectable_difference(0.015, 3, power=1.5)


def test_differs_is_holm_corrected_within_the_family():
    rng = np.random.default_rng(3)
    base = 0.6 + rng.normal(0, 0.02, 5)
    arms = {
        "static": tuple(base),
        "kw": tuple(base - 0.05 + np.array([0.002, -0.001, 0.001, -0.002, 0.0])),  # clearly lower
        "dy": tuple(base + np.array([0.012, 0.004, 0.010, 0.001, 0.006])),  # raw p = 0.029
        "cc": tuple(base + np.array([0.013, 0.003, 0.011, 0.002, 0.005])),  # raw p = 0.037
    }
    df = _table(arms)
    pairs = [({"method": m}, {"method": "static"}) for m in ("kw", "dy", "cc")]
    table = compare_all(df, pairs, margin=0.005)  # dy and cc differ by about 0.007: not within 0.005
    raw = [stats.ttest_rel(arms[m], arms["static"]).pvalue for m in ("kw", "dy", "cc")]
    assert list(table["p"]) == pytest.approx(raw)
    assert list(table["p_holm"]) == pytest.approx(list(holm(raw)))
    assert table["p_holm"].iloc[1] == pytest.approx(2 * raw[1])  # second smallest of 3: times 2
    assert max(raw[1:]) < 0.05 <= min(table["p_holm"].iloc[1:])  # significant alone, not after Holm
    assert list(table["verdict"]) == ["differs", "not resolved", "not resolved"]
    text = table["text"].iloc[0]
    assert text.startswith("static is higher than kw by 0.050 ± ") and "Holm-adjusted p " in text
    assert "over 3 comparisons" in text
    alone = compare(df, {"method": "dy"}, {"method": "static"})
    assert alone.verdict == "differs" and alone.text.startswith("dy is higher than static by")
    for t in table["text"]:
        _words_ok(t)


def test_equivalent_when_the_90_percent_interval_lies_inside_the_margin():
    rng = np.random.default_rng(5)
    b = 0.6 + rng.normal(0, 0.02, 8)
    a = b + np.array([0.002, -0.003, 0.001, 0.000, -0.001, 0.003, -0.002, 0.001])
    df = _table({"kw": tuple(a), "static": tuple(b)})
    c = compare(df, {"method": "kw"}, {"method": "static"}, margin=0.015)
    d = a - b
    h = stats.t.ppf(0.95, 7) * stats.sem(d)
    assert (c.tost_low, c.tost_high) == pytest.approx((d.mean() - h, d.mean() + h))
    assert -0.015 < c.tost_low and c.tost_high < 0.015 and c.verdict == "equivalent"
    assert c.text.startswith("kw and static are equivalent within ±0.015")
    # the same data with a margin narrower than the interval: not resolved
    narrow = compare(df, {"method": "kw"}, {"method": "static"}, margin=0.001)
    assert narrow.verdict == "not resolved"
    with pytest.raises(ValueError, match="margin"):
        compare(df, {"method": "kw"}, {"method": "static"}, margin=-0.01)


def test_unpaired_arms_use_welch_and_say_so():
    df = _table(
        {"kw": (0.50, 0.52, 0.49, 0.51), "static": (0.60, 0.63, 0.58)},
        seeds={"kw": (0, 1, 2, 3), "static": (10, 11, 12)},
    )
    c = compare(df, {"method": "kw"}, {"method": "static"})
    ref = stats.ttest_ind([0.50, 0.52, 0.49, 0.51], [0.60, 0.63, 0.58], equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert c.test == "Welch t" and c.p_value == pytest.approx(ref.pvalue)
    assert (c.ci_low, c.ci_high) == pytest.approx((ci.low, ci.high))
    assert "Welch" in c.text and c.verdict == "differs"
    with pytest.raises(ValueError, match="share no seed"):
        compare(df, {"method": "kw"}, {"method": "static"}, paired=True)


def test_non_finite_values_are_left_out_and_counted_never_a_verdict():
    df = _table({"kw": (0.5, float("nan"), 0.52, 0.51), "static": (0.6, 0.61, float("inf"), 0.62)})
    c = compare(df, {"method": "kw"}, {"method": "static"})
    assert c.n == 2 and c.n_dropped == 2 and "2 non-finite value(s) left out" in c.text
    assert c.diff == pytest.approx(np.mean([0.5 - 0.6, 0.51 - 0.62]))
    one = _table({"kw": (0.5, float("nan")), "static": (0.6, 0.61)})
    c = compare(one, {"method": "kw"}, {"method": "static"})
    assert c.verdict == "not resolved" and c.n == 1 and math.isnan(c.p_value) and "no interval" in c.text


def test_configurations_that_share_a_label_stay_apart():
    df = _table({"static": (0.5, 0.6, 0.55, 0.7, 0.72, 0.71)}).assign(seed=[0, 1, 2, 0, 1, 2])
    df["lr"] = [0.1, 0.1, 0.1, 0.01, 0.01, 0.01]
    labels = config_labels(df)
    assert set(labels) == {"static (lr=0.1)", "static (lr=0.01)"}
    summary = summarize(df, metrics=["final_acc"])
    assert len(summary) == 2 and summary["label"].is_unique and summary["config_id"].is_unique
    assert list(summary["final_acc_mean"]) == pytest.approx([0.55, 0.71])
    c = compare(df, {"lr": 0.01}, {"lr": 0.1})
    assert c.a == "static (lr=0.01)" and c.verdict == "differs"
    with pytest.raises(ValueError, match="several configurations"):
        compare(df, {"method": "static"}, {"lr": 0.1})


# ------------------------------------------------------------------------------ the sweep file's block
def _spec(verdicts=None, runs=None):
    from kwlab.experiments.spec import SweepSpec
    from kwlab.testing import tiny_run

    d = {
        "name": "v",
        "base": tiny_run(),
        "seeds": 2,
        "runs": runs or [{"method": "static"}, {"method": "kw", "budget": 1, "sharing": ["layer", "stage"]}],
    }
    if verdicts is not None:
        d["verdicts"] = verdicts
    return SweepSpec.from_dict(d)


def test_sweep_verdicts_block_defaults_and_leaves_training_hashes_alone():
    import hashlib
    import json

    from kwlab.experiments.spec import expand, run_ids, spec_hash

    plain = _spec()
    assert plain.verdicts == {}
    old = {k: v for k, v in plain.to_dict().items() if k not in ("executor", "description", "data_notice")}
    old.pop("verdicts")  # the hash of a spec without the block is the one it had before the block existed
    assert (
        spec_hash(plain)
        == hashlib.sha1(json.dumps(old, sort_keys=True, default=str).encode()).hexdigest()[:12]
    )
    pairs = [[{"method": "kw", "sharing": "layer"}, {"method": "static"}]]
    declared = _spec({"comparisons": pairs})
    assert declared.verdicts == {"margin": 0.015, "metric": "final_acc", "alpha": 0.05, "comparisons": pairs}
    assert declared.to_dict()["verdicts"]["comparisons"] == pairs  # saved with the sweep (sweep.json)
    a, b = expand(plain), expand(declared)
    assert [c.training_hash() for c in a] == [c.training_hash() for c in b] and run_ids(a) == run_ids(b)
    assert spec_hash(declared) != spec_hash(plain)


@pytest.mark.parametrize(
    ("block", "match"),
    [
        ({"margn": 0.01}, "unknown key 'margn'. Did you mean 'margin'"),
        ({"margin": -0.01}, r"verdicts\.margin must be a positive number"),
        ({"margin": True}, r"verdicts\.margin"),
        ({"alpha": 0.7}, r"verdicts\.alpha"),
        ({"metric": "final_accc"}, r"verdicts\.metric.*Did you mean 'final_acc'"),
        ({"comparisons": [[{"method": "kw"}]]}, r"verdicts\.comparisons\[0\] must be a pair"),
        (
            {"comparisons": [[{"method": "kw"}, {"lrr": 0.1}]]},
            r"comparisons\[0\]\[1\]: unknown config field 'lrr'",
        ),
        ({"comparisons": [[{"method": "kw"}, {"seed": 0}]]}, r"comparisons\[0\]\[1\]: 'seed'"),
        ({"comparisons": [[{"method": "kw"}, {}]]}, r"comparisons\[0\]\[1\] must be a non-empty mapping"),
        ("0.015", "verdicts must be a mapping"),
    ],
)
def test_sweep_verdicts_block_refuses_bad_values_naming_the_key(block, match):
    from kwlab.experiments.config import ConfigError

    with pytest.raises(ConfigError, match=match):
        _spec(block)


def test_a_declared_comparison_must_pick_exactly_one_configuration():
    from kwlab.experiments.config import ConfigError
    from kwlab.experiments.spec import expand

    spec = _spec({"comparisons": [[{"method": "kw"}, {"method": "static"}]]})  # kw: layer and stage
    with pytest.raises(ConfigError, match=r"verdicts\.comparisons\[0\]\[0\] .* picks 2 configurations"):
        expand(spec)
    spec = _spec({"comparisons": [[{"method": "kw", "sharing": "layer"}, {"method": "dyconv"}]]})
    with pytest.raises(ConfigError, match=r"verdicts\.comparisons\[0\]\[1\] .* picks no configuration"):
        expand(spec)


# ------------------------------------------------------------- runs identified by configuration, not label
def _lr_sweep(tmp_path):
    """A fake sweep directory: static and kw runs that differ only in ``lr`` (one label each), 3 seeds, with
    per-epoch metrics."""
    import json

    rows = []
    for method in ("static", "kw"):
        for lr, level in ((0.1, 0.40), (0.01, 0.60)):
            for seed in range(3):
                rid = f"{method}-lr{lr}-s{seed}"
                acc = level + (0.05 if method == "kw" else 0.0) + 0.01 * seed
                rows.append(
                    {
                        "run_id": rid,
                        "arch": "resnet20_cifar",
                        "method": method,
                        "lr": lr,
                        "seed": seed,
                        "budget": 1.0 if method == "kw" else None,
                        "sharing": "layer" if method == "kw" else None,
                        "model_kwargs": "{}",
                        "data": "synthetic",
                        "epochs": 2,
                        "num_classes": 10,
                        "final_acc": acc,
                        "best_acc": acc,
                        "params": 100 if method == "static" else 150,
                        "macs": 1000,
                        "train_time": 1.0,
                    }
                )
                run = tmp_path / "runs" / rid
                run.mkdir(parents=True)
                lines = [json.dumps({"epoch": e, "test_acc": acc * e / 2}) for e in (1, 2)]
                (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    df = pd.DataFrame(rows)
    df.to_csv(tmp_path / "results.csv", index=False)
    return df


def test_a_sweep_over_lr_keeps_its_configurations_apart_in_tables_and_figures(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from kwlab.experiments.findings import findings, load_results
    from kwlab.experiments.handover import epoch_table
    from kwlab.experiments.report import make_report
    from kwlab.experiments.report_figures import knob_hue
    from kwlab.experiments.stats import config_label
    from kwlab.instruments import plot

    df = _lr_sweep(tmp_path)
    assert df.apply(config_label, axis=1).nunique() == 2  # the short labels merge lr = 0.1 and 0.01
    page = make_report(tmp_path)
    summary = pd.read_csv(page.parent / "summary.csv")
    assert len(summary) == 4 and summary["label"].is_unique
    assert sorted(summary["final_acc_mean"].round(3)) == [0.41, 0.46, 0.61, 0.66]
    finding = (page.parent / "finding.md").read_text()
    for label in ("static (lr=0.1)", "static (lr=0.01)", "kw b=1 layer (lr=0.1)", "kw b=1 layer (lr=0.01)"):
        assert f"- {label}: final_acc" in finding, label
    assert "Differences that are real" not in finding and "Comparisons (" in finding
    # each net is compared with the static net of its own recipe (same lr), never across lr
    assert "kw b=1 layer (lr=0.01) is higher than static (lr=0.01) by 0.050" in finding
    assert "kw b=1 layer (lr=0.01) is higher than static (lr=0.1)" not in finding
    epochs = epoch_table(tmp_path, load_results(tmp_path))
    assert epochs["config_id"].nunique() == 4 and epochs.groupby("config_id")["label"].nunique().eq(1).all()
    fig = plot.over_training(epochs, "test_acc", x="epoch", hue="label", tau=False)
    assert len([ln for ln in fig.axes[0].lines if "(n=3)" in ln.get_label()]) == 4
    assert (page.parent / "training_curves.png").exists()
    dyn = load_results(tmp_path).query("method == 'kw'")
    assert set(knob_hue(dyn, "b")) == {"lr=0.1", "lr=0.01"}  # a knob plot draws one line per lr
    assert len(findings(df)) > 4


def test_declared_comparisons_are_the_findings_family(tmp_path):
    from kwlab.experiments.findings import findings

    df = _lr_sweep(tmp_path)
    declared = {
        "margin": 0.02,
        "metric": "final_acc",
        "alpha": 0.05,
        "comparisons": [[{"method": "kw", "lr": 0.1}, {"method": "static", "lr": 0.1}]],
    }
    text = "\n".join(findings(df, None, declared))
    assert "Comparisons (1, declared in the sweep file; margin ±0.02 final_acc" in text
    assert "kw b=1 layer (lr=0.1) is higher than static (lr=0.1) by 0.050" in text
    assert "Holm-adjusted p" in text and "over 1 comparisons" not in text  # a family of one
    assert text.count("is higher than") == 1
    with pytest.raises(ValueError, match=r"verdicts\.comparisons\[0\]\[1\]"):
        findings(df, None, {**declared, "comparisons": [[{"method": "kw", "lr": 0.1}, {"method": "static"}]]})


def test_refreshed_reference_result_quotes_recomputed_numbers(tmp_path):
    import shutil
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    from kwlab.experiments.report import refresh

    src = Path(__file__).resolve().parents[1] / "data" / "results" / "cifar10_resnet20_handover"
    dest = tmp_path / "handover"
    shutil.copytree(src, dest)
    text = refresh(dest).read_text()
    assert "Differences that are real" not in text and "Differs (Holm-adjusted, α = 0.05):" in text
    assert "Not resolved at this size (detectable difference ≈" in text
    df = pd.read_csv(dest / "results.csv")
    labels = config_labels(df)
    a = df[labels == "static 8-16-32"].set_index("seed")["final_acc"]
    b = df[labels == "kw b=1 layer init=official anneal=4ep 8-16-32"].set_index("seed")["final_acc"]
    ref = stats.ttest_rel(a.sort_index(), b.sort_index())
    half = (ref.confidence_interval(0.95).high - ref.confidence_interval(0.95).low) / 2
    line = next(
        ln
        for ln in text.splitlines()
        if ln.startswith("- static 8-16-32 is higher than kw b=1 layer init=official anneal=4ep")
    )
    assert f"by {(a - b).mean():.3f} ± {half:.3f} final_acc" in line
    p_holm = float(line.split("Holm-adjusted p = ")[1].split()[0])
    k = int(line.split(" over ")[1].split()[0])
    assert (
        ref.pvalue <= p_holm + 5e-4 and p_holm <= k * ref.pvalue + 5e-4
    )  # Holm lies between raw and Bonferroni
    assert not (dest / "figures" / "training_curves.png").exists()
