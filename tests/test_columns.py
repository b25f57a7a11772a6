"""Result columns are declared once, by the code that writes them (kwlab.experiments.columns), and the
tables that read them are derived from the declarations."""

from __future__ import annotations

import json

import pytest

from kwlab.experiments import RunConfig, fit, report, stats
from kwlab.experiments.accuracies import NONFINITE_COLUMNS
from kwlab.experiments.callbacks import Callback, FinalProbeCallback
from kwlab.experiments.columns import COLLECTED_COLUMNS, Column, names
from kwlab.experiments.results import collect_results
from kwlab.experiments.train import TRAINER_COLUMNS
from kwlab.testing import tiny_run

DECLARED = {c.name for c in stats.RESULT_COLUMNS}

#: The derived tuples as they were listed by hand before the declaration (same names). The order within
#: each changed to the writers' order (trainer, final probe, collect_results); it only orders the columns
#: of summary.csv, which every reader selects by name.
OLD_METRICS = (
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
    "probe_neg_frac",
    "probe_effective_cells",
    "probe_effective_cell_fraction",
    "probe_diversity",
    "probe_class_distance",
    "probe_entropy",
    "probe_sample_variation",
    "probe_kernel_variation",
    "probe_learned_own_share",
    "probe_learned_sample_variation",
)
OLD_BUDGET = (
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
OLD_PROVENANCE = ("git_revision", "machine", "torch_version", "threads", "data_notice", "anneal_note")


def test_derived_tables_hold_the_names_they_held():
    assert sorted(stats.METRICS) == sorted(OLD_METRICS)
    assert sorted(stats.BUDGET_COLUMNS) == sorted(OLD_BUDGET)
    assert sorted(stats.PROVENANCE_COLUMNS) == sorted(OLD_PROVENANCE)
    assert len(set(stats.METRICS)) == len(stats.METRICS)


def test_each_column_is_declared_once_and_is_no_config_field():
    all_names = [c.name for c in stats.RESULT_COLUMNS]
    assert len(all_names) == len(set(all_names)), "a result column declared twice"
    assert not set(all_names) & set(RunConfig.field_names())
    assert all(c.label for c in stats.RESULT_COLUMNS)
    assert all(isinstance(c.higher_is_better, bool) for c in TRAINER_COLUMNS if c.kind == "metric")


def test_column_refuses_an_unknown_kind_and_a_direction_off_a_metric():
    with pytest.raises(ValueError, match="kind must be one of"):
        Column("x", "metrc")
    with pytest.raises(ValueError, match="only a metric"):
        Column("x", "budget", higher_is_better=True)
    assert Column("x", "record").label == "x"
    assert names([Column("a", "metric"), Column("b", "record")], "metric") == ("a",)


@pytest.mark.parametrize("method", ["kw", "static"])
def test_a_run_writes_exactly_the_declared_columns(tmp_path, method):
    """The trainer writes every column it declares, in the declared order; a model with dynamic layers also
    gets the final probe's; collect_results adds its own; nothing written is undeclared."""
    out = tmp_path / "sweep"
    run_dir = out / "runs" / "r0"
    config = RunConfig.from_dict(tiny_run(method=method, probe_samples=16))
    fit(config, run_dir, progress=False)
    results = json.loads((run_dir / "results.json").read_text())
    trainer_names = [c.name for c in TRAINER_COLUMNS]
    own = [n for n in trainer_names if n not in names(NONFINITE_COLUMNS, "record")]
    assert list(results)[: len(own)] == own  # then the callbacks' fields, then nonfinite_notes' last
    assert list(results)[-len(NONFINITE_COLUMNS) :] == [c.name for c in NONFINITE_COLUMNS]
    probe = [c.name for c in FinalProbeCallback.columns]
    expected = trainer_names + (probe if method == "kw" else [])
    assert sorted(results) == sorted(expected)

    row = collect_results(out, write=False).iloc[0]
    config_fields = set(RunConfig.field_names()) | set(config.options)
    undeclared = sorted(set(row.index) - DECLARED - config_fields)
    assert undeclared == [], f"results.csv columns nobody declares: {undeclared}"
    assert {c.name for c in COLLECTED_COLUMNS} <= set(row.index)


def test_a_callbacks_fields_are_declared_by_it():
    assert Callback.columns == ()
    assert set(names(FinalProbeCallback.columns, "metric")) == {c.name for c in FinalProbeCallback.columns}


def test_the_report_tables_show_only_declared_columns():
    known = DECLARED | set(RunConfig.field_names()) | {"label", "n_seeds"}
    summary = {f"{m}_{s}" for m in stats.METRICS for s in ("mean", "std", "ci95")}
    assert set(report._RUN_TABLE) <= known
    assert set(report._SUMMARY_TABLE) <= known | summary
