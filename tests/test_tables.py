"""Every table is declared once and derived everywhere else (issue 21): the model fields, the probe's summary
and headline columns, and the identity of a run (its training hash)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

import kwlab
from kwlab.experiments import stats
from kwlab.experiments.config import RUNTIME_FIELDS, ConfigError, RunConfig
from kwlab.experiments.spec import SweepSpec, run_ids
from kwlab.experiments.sweep import check_configs, run_sweep
from kwlab.instruments import probe as probe_module
from kwlab.instruments import statistics as statistics_module
from kwlab.instruments.probe import Probe
from kwlab.instruments.statistics import HEADLINE, STATISTICS, Statistic, headline_metrics
from kwlab.methods import METHOD_FIELDS, METHODS, method_fields
from kwlab.testing import tiny_run

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------------- model fields
def test_model_fields_are_derived_from_the_method_table():
    union = {f for m in METHODS.values() for f in m.config_fields}
    assert set(METHOD_FIELDS) == union == set(method_fields())
    assert len(METHOD_FIELDS) == len(union)  # each once
    fields = set(RunConfig.field_names())
    assert union <= fields, f"method fields missing from RunConfig: {union - fields}"
    model = RunConfig.model_fields()
    assert set(model) == {"arch", "method", "options", "drop_path_rate", "model_kwargs"} | union
    assert not set(model) & set(RUNTIME_FIELDS)


@pytest.mark.parametrize("name", sorted({f for m in METHODS.values() for f in m.config_fields}))
def test_every_method_field_changes_the_model_key(name):
    """The sweep's pre-check and budget cache key models by RunConfig.model_key: a config that differs in any
    method field is another model (the drifted copy in sweep.py lacked three of them)."""
    method = next(m for m in METHODS.values() if name in m.config_fields)
    values = {
        "preset": "2x" if method.presets == "count" else "1/2x",
        "budget": 2.0,
        "cell_in": 0.5,
        "cell_out": 0.5,
        "sharing": "layer",
        "attention": "softmax",
        "attention_norm": "layer",
        "spatial_partition": False,
        "zero_cell": False,
        "attention_init": "pattern",
        "reduction": 0.125,
        "init": "kaiming",
    }
    base = RunConfig(method=method.name)
    changed = dataclasses.replace(base, **{name: values[name]})
    assert base.model_key() != changed.model_key()


def test_check_configs_refuses_an_unbuildable_config_in_either_order():
    """Regression: [kw 1x, kw 1x spatial_partition=False] passed because the second config was keyed as the
    first one (spatial_partition, zero_cell and attention_norm were missing from a copied field list)."""
    good = RunConfig.from_dict(tiny_run(method="kw", preset="1x"))
    bad = good.replace(spatial_partition=False)
    check_configs([good])
    for order in ([good, bad], [bad, good]):
        with pytest.raises(ConfigError, match="spatial_partition"):
            check_configs(order)


# ------------------------------------------------------------------------------------------ probe tables
def _toy_statistic(a: torch.Tensor) -> torch.Tensor:
    return a.abs().amax()


def test_a_new_statistic_is_a_summary_column(register):
    """A statistic added the README's way (``STATISTICS.register``, kwlab/instruments/statistics.py) appears
    in summary() and in the training probe's history, with its value (the max |alpha| of the recorded
    batch), and is named by its label."""
    toy = Statistic("max_abs", _toy_statistic, lambda a: a.new_ones(()), label="largest |alpha|")
    register(STATISTICS, "max_abs", toy)
    assert statistics_module.statistic_label("max_abs") == statistics_module.statistic_label("probe_max_abs")
    assert statistics_module.statistic_label("max_abs") == "largest |alpha|"
    torch.manual_seed(0)
    model = kwlab.create_model("resnet20_cifar", method="kw", preset="1x", num_classes=10, widths=(4, 8, 8))
    model.eval()
    x = torch.randn(4, 3, 8, 8)
    with Probe(model) as probe:
        model(x)
    summary = probe.summary()
    assert "max_abs" in summary.columns
    assert list(summary.columns) == statistics_module.summary_columns()
    coefficients = probe_module.capture(model, x, what="inputs")
    for name, layer in model.named_modules():
        if name in coefficients:
            with torch.no_grad():
                alpha = layer.attention(coefficients[name])
            got = summary.set_index("layer").loc[name, "max_abs"]
            assert got == pytest.approx(float(alpha.abs().amax()), rel=1e-6)
    from kwlab.experiments.callbacks import ProbeCallback

    assert "max_abs" in ProbeCallback(every=1).history().columns


def test_headline_columns_are_one_tuple():
    assert set(HEADLINE) <= set(statistics_module.summary_columns())
    assert headline_metrics() == tuple(f"probe_{c}" for c in HEADLINE)
    assert set(headline_metrics()) <= set(stats.METRICS)
    frame = statistics_module.pd.DataFrame({c: [1.0, 3.0] for c in HEADLINE})
    assert statistics_module.headline(frame) == {f"probe_{c}": 2.0 for c in HEADLINE}


def test_the_statistics_table_has_one_home():
    """The table's names have one home, kwlab.instruments.statistics; the probe's old address names it."""
    home = "kwlab.instruments.statistics"
    moved = [n for n, h in probe_module.__getattr__.moved.items() if h == home]
    assert "STATISTICS" in moved and set(moved) <= set(statistics_module.__all__)
    for name in moved:
        with pytest.raises(ImportError, match="kwlab.instruments.statistics"):
            getattr(probe_module, name)


# ------------------------------------------------------------------------------------------ run identity
def test_training_hash_of_the_default_config_is_unchanged():
    """Reference results and `kwlab reproduce` key runs by this hash: it must never move."""
    assert RunConfig().training_hash() == "b410ee1fb73d3a26"


def test_run_ids_are_named_by_the_training_hash():
    a = RunConfig.from_dict(tiny_run(method="static"))
    b = RunConfig.from_dict(tiny_run(method="kw", preset="1x"))
    ids = run_ids([a, b])
    assert [i.rsplit(",", 1)[-1] for i in ids] == [a.training_hash(), b.training_hash()]
    # runtime fields neither name nor split a run
    assert run_ids([a.replace(probe_every=5, checkpoint=False), b.replace(device="auto")]) == ids


def _sweep(**base) -> SweepSpec:
    return SweepSpec.from_dict(
        {
            "name": "identity",
            "seeds": 1,
            "base": tiny_run(epochs=1, train_samples=32, test_samples=16, **base),
            "runs": [{"method": "static"}, {"method": "kw", "preset": "1x", "sharing": "layer"}],
        }
    )


def test_runtime_changes_never_retrain_and_static_runs_skip_the_probe(tmp_path):
    """A sweep whose base sets probe_every trains its static baseline (the probe is skipped with a note);
    changing only runtime fields reuses every finished run, also from a directory named another way."""
    out = tmp_path / "sweep"
    logs: list[str] = []
    first = run_sweep(_sweep(probe_every=1), out, progress=False, log=logs.append)
    assert sorted(first["method"]) == ["kw", "static"]
    runs = {
        json.loads((d / "config.json").read_text())["config"]["method"]: d for d in (out / "runs").iterdir()
    }
    notes = json.loads((runs["static"] / "config.json").read_text())["resolved"]["notes"]
    assert len(notes) == 1 and "probe_every=1 skipped" in notes[0]
    assert (runs["kw"] / "probe_history.parquet").exists() or (runs["kw"] / "probe_history.csv").exists()
    stamps = {m: (d / "results.json").stat().st_mtime_ns for m, d in runs.items()}

    # a directory named by an earlier rule (e.g. a hash of every field) is found by its stored training hash
    legacy = runs["static"].with_name("method=static,0123abcd")
    runs["static"].rename(legacy)
    logs.clear()
    again = run_sweep(_sweep(probe_every=3, checkpoint=False), out, progress=False, log=logs.append)
    assert any("0 to run" in line for line in logs), logs
    assert not legacy.exists()
    assert {m: (d / "results.json").stat().st_mtime_ns for m, d in runs.items()} == stamps
    assert sorted(again["final_acc"]) == sorted(first["final_acc"])
    assert list(again["config_hash"]) == [Path(i).name.rsplit(",", 1)[-1] for i in again["run_id"]]


# --------------------------------------------------------------------------------- anneal span and writer
def test_the_official_anneal_span_is_stated_once():
    """Each method's contract holds its span; an arch overrides it only where its official recipe differs
    (MobileNetV2's KW anneal: 15 epochs); RunConfig and TemperatureSchedule read them."""
    from kwlab.methods import TemperatureSchedule
    from kwlab.models import list_models, model_entry

    kw = METHODS["kw"].temperature.epochs
    for arch in list_models():
        entry = model_entry(arch)
        assert entry.anneal_span("static") is None
        assert entry.anneal_span("dyconv") == METHODS["dyconv"].temperature.epochs
        assert entry.anneal_span("kw") == (15 if "mobilenetv2" in arch else kw)
    long = RunConfig(arch="mobilenetv2_050", method="kw", epochs=300)
    assert long.resolved_temperature() == (1.0, 0.0, 15.0)
    assert RunConfig(arch="resnet18", method="odconv", epochs=300).resolved_temperature()[2] == 10.0
    assert TemperatureSchedule(10).epochs == kw


def test_one_atomic_table_writer(tmp_path, monkeypatch):
    import pandas as pd

    from kwlab import utils

    df = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    for suffix in (".csv", ".parquet"):
        path = utils.write_table(df, tmp_path / f"t{suffix}")
        pd.testing.assert_frame_equal(utils.read_table(path), df)
    monkeypatch.setattr(utils, "table_format", lambda: "csv")
    assert utils.write_table(df, tmp_path / "plain").name == "plain.csv"
    pd.testing.assert_frame_equal(utils.read_table(tmp_path / "plain"), df)
    with pytest.raises(FileNotFoundError, match="missing.parquet or .*missing.csv"):
        utils.read_table(tmp_path / "missing")

    def fail(tmp):
        tmp.write_text("partial")
        raise RuntimeError("disk full")

    (tmp_path / "keep.txt").write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        utils.atomic_write(tmp_path / "keep.txt", fail)
    assert (tmp_path / "keep.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp file left


# ------------------------------------------------------------------------------ models register themselves
def test_models_register_in_their_own_files_and_carry_their_official_maps():
    import inspect

    from kwlab.methods import official
    from kwlab.models import convnext, mobilenetv2, model_entry, resnet

    for arch in ("resnet18", "resnet50", "resnet18_cifar", "resnet20_cifar"):
        assert model_entry(arch).builder.__module__ == resnet.__name__ or (
            getattr(model_entry(arch).builder, "func", None) is resnet.ResNet
        )
    assert "kerneldna" in model_entry("resnet18").method_builders
    src = inspect.getsource(official)
    assert not any(word in src for word in ("import importlib", "import_module", "from kwlab.models"))
    mbv2 = kwlab.create_model("mobilenetv2_050", method="static", num_classes=10)
    assert mbv2.kwlab_official_maps == {
        "key_map": mobilenetv2.official_key_map,
        "key_unmap": mobilenetv2.official_key_unmap,
    }
    assert model_entry("convnext_tiny").official_maps() == {
        "key_map": convnext.official_key_map,
        "tensor_map": convnext.official_tensor_map,
    }
    assert not hasattr(kwlab.create_model("resnet20_cifar", num_classes=10), "kwlab_official_maps")


# ------------------------------------------------------------------------------------------------ executors
def test_executors_are_one_table_checked_when_the_spec_loads(tmp_path, register):
    from kwlab.experiments import executors
    from kwlab.experiments.train import fit

    for section, message in (
        ({"kind": "proceses"}, "executor='proceses' is not allowed.*(?i:did you mean) 'processes'"),
        ({"kind": "processes", "workers": 0}, "workers must be an integer >= 1"),
        ({"threads": "two"}, "threads must be an integer >= 1"),
    ):
        with pytest.raises(ConfigError, match=message):
            SweepSpec.from_dict({"name": "t", "base": tiny_run(), "executor": section})

    class Recording:
        """A toy executor: the protocol is all a new kind needs (plus ``EXECUTORS.register``)."""

        name = "recording"
        seen: list[str] = []

        def run(self, todo, done, *, progress=True, log=print):
            for config, run_dir in todo:
                self.seen.append(config.method)
                fit(config, run_dir, progress=False)
                done(run_dir, None)

    register(executors.EXECUTORS, "recording", lambda options, workers=None: Recording())
    spec = SweepSpec.from_dict(
        {"name": "t", "seeds": 1, "base": tiny_run(epochs=1), "executor": {"kind": "recording"}}
    )
    df = run_sweep(spec, tmp_path / "out", progress=False, log=lambda *_: None)
    assert Recording.seen == ["static"] and len(df) == 1 and df["final_acc"].notna().all()


# ------------------------------------------------------------------------------------------------ selection
def test_one_selection_rule_for_every_method_and_the_probe():
    """Globs, exact names and module prefixes select the same layers for KW, the family and the probe; a
    pattern that matches nothing is an error for each of them."""
    from kwlab.methods import family, plan_kernelwarehouse
    from kwlab.methods.surgery import select, set_module

    def net():
        torch.manual_seed(0)
        return kwlab.create_model("resnet20_cifar", num_classes=10, widths=(4, 8, 8))

    names = [n for n, m in net().named_modules() if isinstance(m, torch.nn.Conv2d)]
    include, exclude = ["layer2", "layer3.*.conv1"], "layer2.0.downsample"
    want = [n for n, _ in select([(n, None) for n in names], include, exclude)]
    assert want and all(n.startswith(("layer2.", "layer3.")) for n in want)
    assert "layer2.0.downsample.0" not in want and "layer3.0.conv2" not in want
    assert family.conversion_plan(net(), "dyconv", include=include, exclude=exclude) == want
    plan = plan_kernelwarehouse(net(), sharing="layer", include=include, exclude=exclude)
    unselected = ("not matched by include", "matched by exclude")
    assert [n for n in names if plan.left_static.get(n) not in unselected] == want
    dyn = kwlab.convert(net(), "dyconv", include=include, exclude=exclude)
    assert Probe(dyn, layers=include).layers == want
    for call in (
        lambda: family.conversion_plan(net(), "odconv", exclude="layer9"),
        lambda: family.conversion_plan(net(), "odconv", include="layer9"),
        lambda: plan_kernelwarehouse(net(), sharing="layer", include="layer9"),
        lambda: Probe(dyn, layers="layer9"),
    ):
        with pytest.raises(ValueError, match="'layer9' matches no"):
            call()
    model = net()
    set_module(model, "layer1.0.conv1", torch.nn.Identity())
    assert isinstance(model.layer1[0].conv1, torch.nn.Identity)


def test_no_method_is_special_cased_by_name_outside_its_row():
    """The trainer, the registry and the config read the method row's fields (train_options, options,
    presets, the temperature contract), never ``method == "kw"``."""
    import inspect
    import re

    from kwlab.experiments import config, setup, train
    from kwlab.models import registry as reg

    for module in (train, setup, reg, config):
        code = inspect.getsource(module)
        assert not re.search(r"""(name|method) *[!=]= *["']kw["']""", code), module.__name__
    assert METHODS["kw"].train_options == {"init": "kaiming"}


def test_summary_carries_the_clean_train_accuracy_and_the_new_probe_columns():
    from kwlab.experiments.stats import summarize

    results = pd.DataFrame(
        {
            "run_id": ["a", "b", "c"],
            "method": ["kw", "kw", "kw"],
            "seed": [0, 1, 2],
            "final_acc": [0.5, 0.6, 0.7],
            "final_train_acc_clean": [0.6, 0.7, 0.8],
            "probe_kernel_variation": [0.1, 0.2, 0.3],
            "probe_effective_cell_fraction": [0.4, 0.5, 0.6],
        }
    )
    row = summarize(results).iloc[0]
    assert row["n_seeds"] == 3
    assert row["final_train_acc_clean_mean"] == pytest.approx(0.7)
    assert row["final_train_acc_clean_std"] == pytest.approx(0.1)
    assert row["probe_kernel_variation_mean"] == pytest.approx(0.2)
    assert row["probe_effective_cell_fraction_mean"] == pytest.approx(0.5)
