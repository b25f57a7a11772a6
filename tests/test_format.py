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
        "label", "model_kwargs", "allowed", "params", "macs", "final_acc (mean ± 95% CI)", "ratio",
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
    assert fmt.value((64, 64, 3, 3)) == "64×64×3×3" and fmt.value([8, 16, 32]) == "8-16-32"
