"""One registry type for every named table (methods, models, executors, statistics): one way to extend
each (``register``), a duplicate name refused, a did-you-mean on lookup."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import kwlab
from kwlab.experiments.executors import EXECUTORS
from kwlab.instruments.statistics import STATISTICS, Statistic, statistic_label, summary_columns
from kwlab.methods import METHODS, get_method
from kwlab.models import registry
from kwlab.utils import Registry

TABLES = {
    "method": METHODS,
    "model": registry._MODELS,
    "executor": EXECUTORS,
    "statistic": STATISTICS,
}


def test_a_registry_is_a_read_only_mapping_in_registration_order():
    table = Registry("fruit", [("apple", 1), ("pear", 2)])
    assert list(table) == ["apple", "pear"] and dict(table) == {"apple": 1, "pear": 2} and len(table) == 2
    assert table["pear"] == 2 and table.get("plum") is None and "apple" in table and [] not in table
    assert table.register("plum", 3) == 3 and list(table) == ["apple", "pear", "plum"]
    assert table.unregister("apple") == 1 and "apple" not in table
    with pytest.raises(TypeError):
        table["kiwi"] = 4  # no second way in


def test_a_duplicate_name_is_refused_and_the_table_kept():
    table = Registry("fruit", {"apple": 1})
    with pytest.raises(ValueError, match="fruit 'apple' is already registered"):
        table.register("apple", 2)
    assert table["apple"] == 1
    with pytest.raises(ValueError, match="already registered"):
        Registry("fruit", [("apple", 1), ("apple", 2)])
    for bad in ("", None, 3):
        with pytest.raises(ValueError, match="non-empty string"):
            table.register(bad, 1)


def test_an_unknown_name_says_what_is_allowed_and_the_closest():
    table = Registry("fruit", {"apple": 1, "pear": 2})
    message = r"unknown fruit 'appel'; allowed: \['apple', 'pear'\]. Did you mean 'apple'\?"
    with pytest.raises(KeyError, match=message):
        table["appel"]
    with pytest.raises(KeyError, match="unknown fruit 'zzz'"):
        table.unregister("zzz")
    with pytest.raises(KeyError, match="unknown fruit"):
        table[["unhashable"]]


@pytest.mark.parametrize("kind", TABLES)
def test_every_kwlab_table_is_a_registry(kind):
    table = TABLES[kind]
    assert isinstance(table, Registry) and table.kind == kind
    first = next(iter(table))
    with pytest.raises(ValueError, match="already registered"):
        table.register(first, table[first])
    with pytest.raises(KeyError, match="Did you mean"):
        table[first + "x"]


def test_kwlab_front_doors_keep_their_errors():
    with pytest.raises(ValueError, match="unknown method 'dyconvv'.*Did you mean 'dyconv'"):
        get_method("dyconvv")
    with pytest.raises(ValueError, match="unknown arch 'resnet20_cifarr'.*Did you mean 'resnet20_cifar'"):
        kwlab.create_model("resnet20_cifarr")
    with pytest.raises(ValueError, match="model 'resnet20_cifar' is already registered"):
        kwlab.models.register_model(registry.model_entry("resnet20_cifar"))


def test_register_model_and_method_builder_go_through_the_registry():
    entry = dataclasses.replace(registry.model_entry("resnet8_cifar"), name="resnet8_copy")
    assert kwlab.models.register_model(entry) is entry
    try:
        assert "resnet8_copy" in kwlab.list_models()
        registry.register_method_builder("resnet8_copy", "toy", lambda **kw: None)
        assert "toy" in registry.model_entry("resnet8_copy").method_builders
        with pytest.raises(ValueError, match="already has a builder"):
            registry.register_method_builder("resnet8_copy", "toy", lambda **kw: None)
    finally:
        registry._MODELS.unregister("resnet8_copy")
    assert "resnet8_copy" not in kwlab.list_models()


def test_each_statistic_has_one_label_read_by_every_consumer():
    assert all(s.label and s.label == statistic_label(name) for name, s in STATISTICS.items())
    assert statistic_label("probe_diversity") == STATISTICS["diversity"].label
    assert statistic_label("no_such_column") == "no_such_column"
    assert Statistic("x", abs, abs).label == "x"  # no label: the column
    assert [c for c in summary_columns() if c in STATISTICS] == list(STATISTICS)


def test_figures_and_findings_name_a_statistic_by_its_label():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from kwlab.experiments.findings import KNOB_STATISTICS, knob_table
    from kwlab.instruments import plot

    table = pd.DataFrame(
        {"layer": ["a", "b"], "diversity": [0.1, 0.2], "neg_frac": [0.3, 0.4], "num_cells": [2, 2]}
    )
    fig = plot.layer_stats(table, columns=("diversity",))
    assert fig.axes[0].get_ylabel().replace("\n", " ") == STATISTICS["diversity"].label
    fig = plot.negative_fraction(table)
    assert fig.axes[0].get_ylabel() == STATISTICS["neg_frac"].label
    plt.close("all")
    assert all(c.startswith("probe_") and c[6:] in STATISTICS for c in KNOB_STATISTICS)
    results = pd.read_csv(Path(__file__).parents[1] / "data/results/cifar10_resnet20_knobs/results.csv")
    header = knob_table(results)[2]
    assert all(f"| {STATISTICS[c[6:]].label} |" in header + " |" for c in KNOB_STATISTICS), header


def test_a_registry_names_the_module_that_made_it_as_its_home():
    """A table's one import address is the module that made it (the one-address check reads __module__)."""
    from kwlab.experiments.executors import EXECUTORS
    from kwlab.instruments.statistics import STATISTICS
    from kwlab.methods import METHODS
    from kwlab.models import registry

    homes = [t.__module__ for t in (METHODS, EXECUTORS, STATISTICS, registry._MODELS)]
    assert homes == [
        "kwlab.methods.table",
        "kwlab.experiments.executors",
        "kwlab.instruments.statistics",
        "kwlab.models.registry",
    ]
