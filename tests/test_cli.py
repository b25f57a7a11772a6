"""kwlab.cli: train / sweep / report commands, --set parsing, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from kwlab.cli import main
from kwlab.testing import tiny_run

BASE = tiny_run(train_samples=48, test_samples=24)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_train_with_config_file_and_set_overrides(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({**BASE, "lr": 0.5}))
    rc = main(
        [
            "train",
            str(cfg),
            "--set",
            "lr=0.02",
            "--set",
            "seed=3",
            "--out",
            str(tmp_path / "r"),
            "--no-progress",
        ]
    )
    assert rc == 0
    saved = json.loads((tmp_path / "r" / "config.json").read_text())["config"]
    assert saved["lr"] == 0.02 and saved["seed"] == 3 and saved["model_kwargs"] == {"widths": [4, 8, 8]}
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "r" / "results.json").read_text())


def test_bad_field_is_a_clear_error_with_exit_code_2(tmp_path, capsys):
    rc = main(["train", "--set", "learning_rate=0.1", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown config field 'learning_rate'" in err
    assert not (tmp_path / "r").exists()


def test_sweep_then_report(tmp_path, capsys):
    spec = {
        "name": "cli",
        "seeds": 2,
        "base": BASE,
        "runs": [
            {"method": "static"},
            {"method": "kw", "preset": ["1/2x", "1x"], "sharing": ["layer", "stage"]},
        ],
    }
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    rc = main(["sweep", str(path), "--out", str(tmp_path / "out"), "--set", "epochs=1", "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    page = tmp_path / "out" / "report" / "index.html"
    assert f"report: {page}" in out
    df = pd.read_csv(tmp_path / "out" / "results.csv")
    assert len(df) == 5 * 2  # five configurations, two seeds each
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert len(summary) == 5 and set(summary["n_seeds"]) == {2}
    html = page.read_text()
    for png in (
        "accuracy_vs_params.png",
        "accuracy_vs_budget.png",
        "diversity_vs_budget.png",
        "accuracy_vs_sharing.png",
        "training_curves.png",
        "negative_fraction.png",
        "cell_usage.png",
        "attention_heatmap.png",
    ):
        assert (page.parent / png).stat().st_size > 1000, png
        assert png in html
    for run_id in df["run_id"]:
        assert run_id.split(",")[0] in html or "static" in html
    assert main(["report", str(tmp_path / "out"), "--out", str(tmp_path / "rep2")]) == 0
    assert (tmp_path / "rep2" / "index.html").exists()


def test_report_of_missing_dir_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "results.csv" in capsys.readouterr().err


def test_recipes_lists_every_recipe(capsys):
    from kwlab.experiments.recipes import list_recipes

    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines] == list_recipes()


def test_module_entry_point_and_console_script():
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "kwlab", "--help"], capture_output=True, text=True, cwd=root)
    assert done.returncode == 0 and "sweep" in done.stdout and "report" in done.stdout
    import tomllib

    scripts = tomllib.loads((root / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["kwlab"] == "kwlab.cli:main"
