"""kwlab.experiments.sweep: grid expansion, validation before training, resumable runs, results table,
executors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from kwlab.experiments.config import ConfigError, RunConfig
from kwlab.experiments.results import collect_results
from kwlab.experiments.spec import SweepSpec, expand, load_sweep, parse_overrides, run_ids
from kwlab.experiments.sweep import run_sweep
from kwlab.experiments.train import fit
from kwlab.testing import tiny_run

ROOT = Path(__file__).resolve().parents[1]
BASE = tiny_run(train_samples=48, test_samples=24, epochs=2)
SCORE_COLUMNS = ["final_acc", "best_acc", "final_loss", "final_train_loss", "params", "macs"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _spec(**changes) -> SweepSpec:
    d = {
        "name": "t",
        "seeds": 1,  # one run per configuration (the default is 3; see tests/test_findings.py)
        "base": dict(BASE),
        "runs": [{"method": "static"}, {"method": "kw", "preset": ["1/2x", "1x"]}],
    }
    d.update(changes)
    return SweepSpec.from_dict(d)


def _write(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec))
    return path


# ------------------------------------------------------------------------------------------- expansion
def test_grid_times_runs_with_sub_grids():
    spec = _spec(
        grid={"seed": [0, 1]},
        runs=[
            {"method": "static"},
            {"method": "kw", "preset": ["1/2x", "1x"], "sharing": ["layer", "stage"]},
        ],
    )
    configs = expand(spec)
    got = sorted((c.method, c.preset, c.sharing, c.seed) for c in configs)
    ref = sorted(
        [("static", None, None, s) for s in (0, 1)]
        + [("kw", p, sh, s) for p in ("1/2x", "1x") for sh in ("layer", "stage") for s in (0, 1)]
    )
    assert got == ref
    ids = run_ids(configs)
    assert len(set(ids)) == len(ids)
    assert all("epochs" not in i for i in ids)  # only varying fields name the directory
    assert run_ids(expand(spec)) == ids  # stable across calls


def test_set_overrides_force_scalars_and_replace_grid_axes(tmp_path):
    path = _write(tmp_path / "s.yaml", {"name": "t", "base": BASE, "grid": {"seed": [0, 1]}})
    spec = load_sweep(path, ["epochs=1", "seed=[5]", "lr=0.2"])
    configs = expand(spec)
    assert [(c.epochs, c.seed, c.lr) for c in configs] == [(1, 5, 0.2)]
    assert parse_overrides(["preset=1/2x", "x=[1, 2]", "y="]) == {"preset": "1/2x", "x": [1, 2], "y": None}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["oops"])


@pytest.mark.parametrize(
    "change, message",
    [
        ({"base": {**BASE, "epoch": 2}}, "unknown config field 'epoch'.*(?i:did you mean) 'epochs'"),
        ({"base": {**BASE, "epochs": "two"}}, "epochs='two'.*expected int"),
        ({"runs": [{"method": "static", "preset": "1x"}]}, "not a field of method='static'"),
        ({"grid": {"seed": 3}}, "'grid' must map fields to non-empty lists"),
        ({"gird": {}}, "unknown sweep key 'gird'.*(?i:did you mean) 'grid'"),
    ],
)
def test_bad_input_is_refused_before_training(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        run_sweep(
            _spec(**change) if "gird" not in change else SweepSpec.from_dict({"name": "t", **change}),
            tmp_path / "out",
            progress=False,
        )
    assert not (tmp_path / "out" / "runs").exists()


def test_missing_dataset_and_unknown_arch_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="no_such_data"):
        run_sweep(
            _spec(base={**BASE, "data": str(tmp_path / "no_such_data")}), tmp_path / "o1", progress=False
        )
    with pytest.raises(ConfigError, match="resnet21"):
        run_sweep(_spec(base={**BASE, "arch": "resnet21"}), tmp_path / "o2", progress=False)
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_output_dir_of_another_sweep_is_refused(tmp_path):
    spec = _spec(runs=[{"method": "static"}], base={**BASE, "epochs": 1})
    run_sweep(spec, tmp_path / "out", progress=False)
    with pytest.raises(ConfigError, match="holds a different sweep"):
        run_sweep(_spec(name="other", runs=[{"method": "static"}]), tmp_path / "out", progress=False)


def test_a_sweep_resumes_from_finished_runs_copied_into_an_empty_directory(tmp_path):
    """A committed study keeps each finished run's config, results and metrics (no checkpoints, no
    sweep.json): copied into a new directory's runs/, they count as finished; anything else is refused."""
    spec = _spec(runs=[{"method": "static"}, {"method": "kw", "preset": "1x"}], base={**BASE, "epochs": 1})
    first = run_sweep(spec, tmp_path / "a", progress=False)
    kept = first["run_id"].iloc[0]
    records = tmp_path / "b" / "runs" / kept
    records.mkdir(parents=True)
    for name in ("config.json", "results.json", "metrics.jsonl"):
        shutil.copy(tmp_path / "a" / "runs" / kept / name, records / name)
    before = (records / "results.json").read_bytes()
    again = run_sweep(spec, tmp_path / "b", progress=False)
    assert (records / "results.json").read_bytes() == before  # not trained again
    pd.testing.assert_frame_equal(again[SCORE_COLUMNS], first[SCORE_COLUMNS])
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds no sweep.json"):
        run_sweep(spec, tmp_path / "c", progress=False)


# ------------------------------------------------------------------------------------------- running
def test_results_table_and_skipping_finished_runs(tmp_path):
    spec = _spec()
    df = run_sweep(spec, tmp_path / "out", progress=False)
    assert len(df) == 3 and set(df["method"]) == {"static", "kw"}
    on_disk = pd.read_csv(tmp_path / "out" / "results.csv")
    assert list(on_disk["run_id"]) == list(df["run_id"])
    for field in RunConfig.field_names():  # "options": a column only where a run holds a method's knobs
        assert field in on_disk.columns or field == "options"
    for col in (
        "params",
        "macs",
        "best_acc",
        "final_acc",
        "throughput",
        "probe_neg_frac",
        "probe_effective_cells",
        "probe_diversity",
        "git_revision",
    ):
        assert col in on_disk.columns
    kw = on_disk[on_disk["method"] == "kw"]
    assert kw["probe_neg_frac"].between(0, 1).all() and kw["probe_effective_cells"].ge(1).all()
    assert on_disk[on_disk["method"] == "static"]["probe_neg_frac"].isna().all()
    # best accuracy is the max over the per-epoch history
    for _, row in on_disk.iterrows():
        hist = pd.read_json(tmp_path / "out" / "runs" / row["run_id"] / "metrics.jsonl", lines=True)
        assert row["best_acc"] == pytest.approx(hist["test_acc"].max())
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "out" / "runs").glob("*/results.json")}
    again = run_sweep(spec, tmp_path / "out", progress=False)
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    pd.testing.assert_frame_equal(again[SCORE_COLUMNS], df[SCORE_COLUMNS])


def _sweep_cmd(config: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "kwlab",
        "sweep",
        str(config),
        "--out",
        str(out),
        "--no-report",
        "--no-progress",
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def test_sigkill_mid_sweep_then_resume_equals_uninterrupted_run(tmp_path):
    spec = {
        "name": "kill",
        "seeds": 1,
        "base": {**BASE, "epochs": 3, "train_samples": 96},
        "runs": [{"method": "static"}, {"method": "kw", "preset": "1x"}],
    }
    config = _write(tmp_path / "kill.yaml", spec)
    reference = run_sweep(load_sweep(config), tmp_path / "ref", progress=False)
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        _sweep_cmd(config, out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + 60
    try:  # kill while the second run is between checkpoints: one run finished, one half-done
        while time.time() < deadline and proc.poll() is None:
            finished = list(out.glob("runs/*/results.json"))
            partial = [
                p for p in out.glob("runs/*/checkpoint.pt") if not (p.parent / "results.json").exists()
            ]
            if finished and partial:
                break
            time.sleep(0.05)
        assert proc.poll() is None, (
            f"sweep ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        )
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(list(out.glob("runs/*/results.json"))) == 1
    survived = pd.read_csv(out / "results.csv")
    assert len(survived) == 1  # the finished result survived the kill
    done = subprocess.run(_sweep_cmd(config, out), env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = pd.read_csv(out / "results.csv")
    ref = reference.set_index("run_id")[SCORE_COLUMNS].sort_index()
    got = resumed.set_index("run_id")[SCORE_COLUMNS].sort_index()
    pd.testing.assert_frame_equal(got, ref, check_exact=True)


def test_processes_and_submitit_local_executors_match_sequential(tmp_path):
    spec = _spec(base={**BASE, "epochs": 1})
    seq = run_sweep(spec, tmp_path / "seq", progress=False).set_index("run_id")[SCORE_COLUMNS].sort_index()
    par = (
        run_sweep(
            _spec(base={**BASE, "epochs": 1}),
            tmp_path / "par",
            executor="processes",
            workers=2,
            progress=False,
        )
        .set_index("run_id")[SCORE_COLUMNS]
        .sort_index()
    )
    pd.testing.assert_frame_equal(par, seq)
    pytest.importorskip("submitit")
    sub = (
        run_sweep(
            _spec(
                base={**BASE, "epochs": 1}, runs=[{"method": "kw", "preset": "1x"}], executor={"threads": 1}
            ),
            tmp_path / "sub",
            executor="submitit-local",
            progress=False,
        )
        .set_index("run_id")[SCORE_COLUMNS]
        .sort_index()
    )
    kw_id = [i for i in seq.index if "kw" in i and "preset=1x" in i][0]
    assert sub.iloc[0].to_dict() == pytest.approx(seq.loc[kw_id].to_dict())


def test_collect_results_ignores_unfinished_runs(tmp_path):
    run_sweep(_spec(runs=[{"method": "static"}], base={**BASE, "epochs": 1}), tmp_path / "o", progress=False)
    (tmp_path / "o" / "runs" / "half").mkdir()
    (tmp_path / "o" / "runs" / "half" / "config.json").write_text("{}")
    assert len(collect_results(tmp_path / "o", write=False)) == 1


# ------------------------------------------------------------------------------------- short anneals
def test_a_sweep_warns_once_about_short_anneals_with_the_count_and_a_fit_still_warns(tmp_path, capsys):
    run_sweep(_spec(), tmp_path / "sw", progress=True, log=lambda *a: None)  # runs would warn with bars
    warnings = [line for line in capsys.readouterr().err.splitlines() if "kwlab: warning:" in line]
    assert len(warnings) == 1 and "2 of 3 runs" in warnings[0], warnings
    notes = [
        json.loads(p.read_text()).get("anneal_note")
        for p in (tmp_path / "sw" / "runs").glob("*/results.json")
    ]
    assert sum(bool(n) for n in notes) == 2  # each run keeps its own record
    fit(RunConfig.from_dict({**BASE, "method": "kw", "preset": "1x", "epochs": 1}), progress=True)
    assert capsys.readouterr().err.count("kwlab: warning: the temperature anneal spans") == 1
