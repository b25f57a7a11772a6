"""kwlab.instruments.format: tables for people (issue 23)."""

import json
import math

import pandas as pd
import pytest

from kwlab.instruments import format as fmt


def test_table_formats_each_kind_of_column():
    df = pd.DataFrame(
        {
            "label": ["static 8-16-32", "kw b=1 stage 8-16-32", "nothing"],
            "model_kwargs": [json.dumps({"widths": [8, 16, 32]}), {"widths": [8, 16, 32]}, None],
            "allowed": [True, False, True],
            "params": [68786.0, 277272.0, float("nan")],
            "macs": [10314048, 1.82e9, float("nan")],
            "final_acc_mean": [0.5442000031, 0.4249666, float("nan")],
            "final_acc_std": [0.0156, 0.0213, float("nan")],
            "final_acc_ci95": [0.0388169, 0.0531, float("nan")],
            "ratio": [1.0, 4.0309, float("nan")],
            "empty": [float("nan")] * 3,
        }
    )
    out = fmt.table(df)
    assert list(out.columns) == [
        "label",
        "model_kwargs",
        "allowed",
        "params",
        "macs",
        "final_acc (mean ± 95% CI)",
        "ratio",
    ]  # the all-missing column is gone, mean/std/ci95 became one column
    assert len(out) == 2  # the row whose numbers are all missing is gone
    row = out.iloc[0]
    assert row["params"] == "68,786" and row["macs"] == "10.3M"
    assert out.iloc[1]["macs"] == "1.82G"
    assert row["final_acc (mean ± 95% CI)"] == "0.544 ± 0.039"
    assert row["model_kwargs"] == out.iloc[1]["model_kwargs"] == "widths=8-16-32"
    assert (row["allowed"], out.iloc[1]["allowed"]) == ("yes", "no")
    assert (row["ratio"], out.iloc[1]["ratio"]) == ("1", "4.03")
    assert not out.map(lambda v: "nan" in v.lower() or "{" in v).any().any()
    assert df["params"].iloc[0] == 68786.0  # the input is not changed
    # a configuration whose runs gave no finite number has no mean: a dash, not "– ± 0.000"
    none = fmt.table(pd.DataFrame({"acc_mean": [float("nan"), 0.5], "acc_ci95": [0.0, 0.1], "n": [3, 3]}))
    assert list(none["acc (mean ± 95% CI)"]) == [fmt.MISSING, "0.500 ± 0.100"]


def test_table_keeps_missing_cells_as_dashes_and_can_index():
    df = pd.DataFrame({"budget": ["1/2", "1"], "n": [float("nan"), 177.0], "params": [201438200.0, 2.0]})
    out = fmt.table(df, ["budget", "n", "params", "absent"], index="budget")
    assert out.index.tolist() == ["1/2", "1"]
    assert out.loc["1/2", "n"] == fmt.MISSING and out.loc["1", "n"] == "177"
    assert out.loc["1/2", "params"] == "201,438,200"
    with pytest.raises(ValueError, match="index must be one of"):
        fmt.table(df, ["n"], index="budget")
    with pytest.raises(TypeError, match="DataFrame"):
        fmt.table([1, 2])


def test_scalar_formatters():
    assert fmt.compute(999) == "999" and fmt.compute(14_015_648) == "14.0M" and fmt.compute(2.5e11) == "250G"
    assert fmt.count(1e6) == "1,000,000" and fmt.count(math.nan) == fmt.MISSING
    assert fmt.accuracy(0.12345) == "0.123" and fmt.number(0.000123456) == "0.000123"
    assert fmt.number(0.51) == "0.510" and fmt.number(100.4) == "100" and fmt.number(1e-5) == "1.00e-05"
    assert fmt.number(1234.5) == "1,234" and fmt.number(-0.0) == "0"
    assert fmt.value((64, 64, 3, 3)) == "64×64×3×3" and fmt.value([8, 16, 32]) == "8-16-32"


def test_table_keeps_two_level_columns_and_reads_their_last_level():
    """A side-by-side comparison (``pd.concat({...}, axis=1)``, notebook 08) keeps its two header rows; each
    column is formatted by its own name, and ``index`` finds the column ``reset_index`` made of the index."""
    layers = pd.DataFrame(
        {
            "layer": ["blocks.0.mlp.fc1", "blocks.1.mlp.fc1"],
            "diversity": [0.123456, 0.0004321],
            "params": [1536.0, 1536.0],
            "acc_mean": [0.51234, 0.4],
            "acc_ci95": [0.0123, float("nan")],
        }
    ).set_index("layer")
    both = pd.concat({"trained": layers, "untrained": layers.assign(diversity=float("nan"))}, axis=1)
    out = fmt.table(both.reset_index(), index="layer")
    assert isinstance(out.columns, pd.MultiIndex)
    assert out.index.name == "layer" and out.index.tolist() == ["blocks.0.mlp.fc1", "blocks.1.mlp.fc1"]
    assert list(out.columns) == [
        ("trained", "diversity"),
        ("trained", "params"),
        ("trained", "acc (mean ± 95% CI)"),
        ("untrained", "params"),  # the all-missing column is gone
        ("untrained", "acc (mean ± 95% CI)"),
    ]
    first = out.loc["blocks.0.mlp.fc1"]
    assert first[("trained", "diversity")] == "0.123" and first[("trained", "params")] == "1,536"
    assert first[("trained", "acc (mean ± 95% CI)")] == "0.512 ± 0.012"
    assert out.loc["blocks.1.mlp.fc1", ("trained", "diversity")] == "0.000432"
    assert out.loc["blocks.1.mlp.fc1", ("untrained", "acc (mean ± 95% CI)")] == "0.400"
    assert fmt.table(both).index.tolist() == [1, 2]  # no index asked: rows numbered from 1


def test_table_decimals_per_column():
    df = pd.DataFrame({"method": ["Grad-CAM", "IG"], "r": [0.123456, -0.5], "x": [0.123456, 12.0]})
    out = fmt.table(df, decimals={"r": 2, "image 0": 1})  # an absent name is no error
    assert out["r"].tolist() == ["0.12", "-0.50"]
    assert out["x"].tolist() == ["0.123", "12"]  # other columns keep their rule
    s = pd.DataFrame({"acc_mean": [0.51234], "acc_ci95": [0.01234]})
    assert fmt.table(s, decimals={"acc": 2}).iloc[0, 0] == "0.51 ± 0.01"  # a mean/CI pair by its stem


def test_table_leaves_knobs_of_static_nets_empty():
    """A results table (notebook 04): b, cell_in, sharing_range do not apply to a static net, whatever the
    table holds there (load_results gives it b=1 and sharing_range "-")."""
    df = pd.DataFrame(
        {
            "method": ["static", "kw", "kw"],
            "b": [1.0, 1.0, 2.0],
            "cell_in": [float("nan"), 1.0, 0.5],
            "sharing_range": ["-", "stage", "layer"],
            "params": [1000, 4000, 8000],
        }
    )
    out = fmt.table(df)
    assert out.iloc[0][["b", "cell_in", "sharing_range"]].tolist() == [fmt.MISSING] * 3
    assert out.iloc[1][["b", "cell_in", "sharing_range"]].tolist() == ["1", "1", "stage"]
    assert out.iloc[0]["params"] == "1,000"
    # also when the method column is left out of the shown columns, and after empty rows are dropped
    gap = pd.concat([df.iloc[[1]].assign(params=float("nan"), b=float("nan"), cell_in=float("nan")), df])
    out = fmt.table(gap, ["b", "sharing_range", "params"])
    assert out["b"].tolist() == [fmt.MISSING, "1", "2"] and out["sharing_range"].iloc[0] == fmt.MISSING
