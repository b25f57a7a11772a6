"""``log_to`` (issue 31, item 3): the trainer's scalars in TensorBoard and W&B (offline), read back and
compared with the run's own records (metrics.jsonl, results.json, the probe history); a runtime field that
changes no hash; refused values named. Skipped where tensorboard / wandb is not installed (the dev extra
installs both)."""

from __future__ import annotations

import json
import struct

import pytest

from kwlab.experiments import ConfigError, RunConfig, fit
from kwlab.experiments.callbacks import load_history
from kwlab.testing import tiny_run

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(**changes) -> RunConfig:
    # 2 epochs of 4 steps, the anneal over 6; the probe records steps 0, 3, 6 (two in epoch 1, one in epoch 2)
    fields = {"method": "kw", "preset": "1x", "epochs": 2, "probe_every": 3, "temperature_steps": 6}
    return RunConfig.from_dict(tiny_run(**{**fields, **changes}))


def _tensorboard_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _expected(run_dir) -> dict[str, list[tuple[int, float]]]:
    """What the run's own records say was logged, by tag: (optimizer step, value)."""
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    results = json.loads((run_dir / "results.json").read_text())
    steps_per_epoch = results["total_steps"] // len(history)
    want: dict[str, list[tuple[int, float]]] = {}
    for row in history:
        for key, value in row.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                want.setdefault(key, []).append((row["epoch"] * steps_per_epoch, float(value)))
    probe = load_history(run_dir)
    for step, rows in probe.groupby("step"):
        for column in ("neg_frac", "effective_cells"):
            want.setdefault(f"probe/{column}", []).append((int(step), float(rows[column].mean())))
    for key in ("probe_neg_frac", "final_acc_frozen"):
        want[f"final/{key}"] = [(results["total_steps"], float(results[key]))]
    return want


def test_tensorboard_holds_the_runs_own_numbers(tmp_path):
    pytest.importorskip("tensorboard")
    run_dir = tmp_path / "run"
    results = fit(_config(log_to="tensorboard"), run_dir, progress=False)
    got = _tensorboard_scalars(run_dir / "tensorboard")
    want = _expected(run_dir)
    for tag in ("test_acc", "train_acc", "train_acc_clean", "train_loss", "temperature", "lr", "epoch"):
        assert tag in want, tag  # the history has it ...
    for tag, points in want.items():  # ... and TensorBoard holds the same points (float32 in the event file)
        assert [s for s, _ in got[tag]] == [s for s, _ in points], tag
        assert [v for _, v in got[tag]] == pytest.approx([v for _, v in points], rel=1e-6, abs=1e-7), tag
    assert [s for s, _ in got["probe/neg_frac"]] == [0, 3, 6]
    assert got["test_acc"][-1][1] == pytest.approx(results["final_acc"], rel=1e-6)
    assert got["temperature"][0][1] > got["temperature"][-1][1]  # the anneal, as the trainer set it


def test_log_to_is_a_runtime_field():
    base = _config()
    for value in ("tensorboard", ["wandb"], ["tensorboard", "wandb"]):
        config = base.replace(log_to=value)
        assert config.training_hash() == base.training_hash()
        assert config.differences(base.to_dict()) == []


@pytest.mark.parametrize("value", ["tb", ["tensorboard", "tensorboard"], 3, ["wandb", None], {"a": 1}])
def test_bad_log_to_is_refused_naming_the_field_and_allowed_values(value):
    with pytest.raises(ConfigError, match=r"log_to=.*allowed: null, one of \['tensorboard', 'wandb'\]"):
        _config(log_to=value)


def test_without_a_run_directory_nothing_is_logged_and_it_says_so(caplog):
    pytest.importorskip("tensorboard")
    import logging

    logger = logging.getLogger("kwlab")
    logger.addHandler(caplog.handler)
    try:
        fit(_config(log_to="tensorboard", probe_every=0), None, progress=False)
    finally:
        logger.removeHandler(caplog.handler)
    assert any("writes into the run directory; this run has none" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------------------------- W&B
def _wandb_history(run_file) -> list[dict]:
    """The history rows of an offline W&B run file (``run-<id>.wandb``: a 7-byte header, then LevelDB-log
    records of 32 KiB blocks, each a protobuf ``Record``)."""
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending, rows = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # the block's tail is padding
            pos += block - pos % block
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        if length == 0 and kind == 0:
            pos += block - pos % block
            continue
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})  # fmt: skip
    return rows


def test_wandb_offline_run_holds_the_runs_own_numbers(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "run"
    fit(_config(log_to=["tensorboard", "wandb"]), run_dir, progress=False)
    files = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    rows = _wandb_history(files[0])
    got: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        for key, value in row.items():
            if not key.startswith("_"):
                got.setdefault(key, []).append((row["_step"], value))
    want = _expected(run_dir)
    for tag, points in want.items():
        assert [s for s, _ in got[tag]] == [s for s, _ in points], tag
        assert [v for _, v in got[tag]] == pytest.approx([v for _, v in points], rel=1e-12), tag
    assert _tensorboard_scalars(run_dir / "tensorboard").keys() == got.keys()
