"""Issue 12: runs that never lie, never lose work, and never run code nobody asked for.

One test per item: config-hash refusal, two sweeps in one directory, SIGTERM to a processes sweep, a
truncated checkpoint, a crafted CIFAR pickle, a crafted checkpoint, refused values, the YAML float, CLI
errors. Everything is tiny (8x8 images, a few hundred samples, static ResNet-20 of widths 4-8-8).
"""

from __future__ import annotations

import fcntl
import json
import os
import pickle
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch import nn

import kwlab
from kwlab.cli import main
from kwlab.experiments.config import ConfigError, RunConfig
from kwlab.experiments.data import load_data
from kwlab.experiments.data_readers import UnsafeDataError
from kwlab.experiments.results import collect_results
from kwlab.experiments.spec import SweepSpec, load_sweep
from kwlab.experiments.sweep import run_sweep
from kwlab.experiments.train import Trainer, fit
from kwlab.methods.official import OfficialCheckpointError, load_official
from kwlab.testing import tiny_run
from kwlab.utils import CheckpointError, atomic_torch_save

ROOT = Path(__file__).resolve().parents[1]
TINY = tiny_run(epochs=2, augment=False)

pytestmark = pytest.mark.usefixtures("one_thread")


class _Stop(Exception):
    pass


class _StopAfterEpoch(kwlab.experiments.callbacks.Callback):
    """Dies in the second epoch, after the first epoch's checkpoint was written."""

    def on_epoch_end(self, trainer, epoch, metrics):  # noqa: D102
        if epoch >= 1:
            raise _Stop


class _RunsCode:
    """Unpickling this calls os.system(command): what a crafted pickle does."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def tiny_patch_net(num_classes: int = 10) -> nn.Module:
    """A ConvNeXt-like patchify stem (kernel 16, stride 16): needs image_size >= 16."""
    return nn.Sequential(nn.Conv2d(3, 4, 16, stride=16), nn.Flatten(), nn.LazyLinear(num_classes))


# ------------------------------------------------------------------------------------------------ item 1
def test_run_dir_refuses_another_config_and_names_the_fields(tmp_path):
    cfg = RunConfig.from_dict(TINY)
    results = fit(cfg, tmp_path / "r", progress=False)
    assert results["config_hash"] == cfg.training_hash()
    # a changed field that changes what is trained: refused, saying what differs and what to do
    with pytest.raises(ConfigError, match=r"lr: 0\.05 \(stored\) -> 0\.2 \(now\).*another run directory"):
        fit(cfg.replace(lr=0.2), tmp_path / "r", progress=False)
    # a runtime field (keep the final checkpoint or not) does not invalidate the finished run
    assert fit(cfg.replace(checkpoint=False), tmp_path / "r", progress=False) == results
    # resuming an interrupted run under another config is refused too (checkpoint and config.json)
    with pytest.raises(_Stop):
        Trainer(cfg, tmp_path / "half", callbacks=[_StopAfterEpoch()], progress=False).fit()
    assert (tmp_path / "half" / "checkpoint.pt").exists()
    with pytest.raises(ConfigError, match=r"weight_decay: 0\.0005 \(stored\) -> 0\.001 \(now\)"):
        Trainer(cfg.replace(weight_decay=1e-3), tmp_path / "half", progress=False)
    (tmp_path / "half" / "config.json").unlink()  # the checkpoint alone still knows its config
    with pytest.raises(ConfigError, match=r"epochs: 2 \(stored\) -> 3 \(now\)"):
        Trainer(cfg.replace(epochs=3), tmp_path / "half", progress=False)
    # a changed runtime field resumes, and config.json is rewritten with what is running now
    trainer = Trainer(cfg.replace(probe_every=5), tmp_path / "half", progress=False)
    assert trainer.resumed_from == 1
    assert json.loads((tmp_path / "half" / "config.json").read_text())["config"]["probe_every"] == 5


# ------------------------------------------------------------------------------------------------ item 2
def _spec(name="two", seeds=(0,), **base) -> SweepSpec:
    return SweepSpec.from_dict(
        {"name": name, "base": {**TINY, "epochs": 1, **base}, "grid": {"seed": list(seeds)}}
    )


def test_two_sweeps_in_one_directory(tmp_path):
    out = tmp_path / "out"
    first = run_sweep(_spec(seeds=(0,)), out, progress=False)
    assert len(first) == 1
    # a second sweep while the first holds the directory: refused before any training
    with open(out / ".sweep.lock", "a+") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write(f"pid {os.getpid()}\n")
        held.flush()
        with pytest.raises(ConfigError, match="another sweep is running"):
            run_sweep(_spec(seeds=(1,)), out, progress=False)
    assert len(list((out / "runs").iterdir())) == 1
    # the same name with an edited grid: the earlier spec's finished run stays in the table
    before = json.loads((out / "sweep.json").read_text())["spec_hash"]
    second = run_sweep(_spec(seeds=(1,)), out, progress=False)
    meta = json.loads((out / "sweep.json").read_text())
    assert meta["spec_hash"] != before and [h["spec_hash"] for h in meta["history"]] == [before]
    table = pd.read_csv(out / "results.csv")
    assert sorted(table["seed"]) == [0, 1] and len(second) == 2
    assert dict(zip(table["seed"], table["in_current_spec"])) == {0: False, 1: True}
    assert len(collect_results(out, write=False)) == 2
    # a different sweep name is still refused
    with pytest.raises(ConfigError, match="holds a different sweep"):
        run_sweep(_spec(name="other"), out, progress=False)


# ------------------------------------------------------------------------------------------------ item 3
def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_to_processes_sweep_stops_workers_then_resumes(tmp_path):
    base = {**TINY, "epochs": 3, "train_samples": 192}
    spec = {"name": "term", "base": base, "grid": {"seed": [0, 1]}, "executor": {"kind": "processes"}}
    config = tmp_path / "term.yaml"
    config.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "kwlab", "sweep", str(config), "--out", str(out), "--workers", "2"]
    cmd += ["--no-report", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and proc.poll() is None:
            ckpts = out.glob("runs/*/checkpoint.pt")
            if [p for p in ckpts if not (p.parent / "results.json").exists()]:
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"sweep ended before the signal: {proc.stderr.read()[-2000:]}"
        workers = _children(proc.pid)
        assert workers
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    errors = [ln for ln in stderr.splitlines() if ln.startswith("kwlab sweep: error:")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert errors[0].startswith("kwlab sweep: error: sweep interrupted by SIGTERM") and "resume" in errors[0]

    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.1)
    assert not [p for p in workers if _alive(p)], "orphaned worker processes"
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*") if p.is_file()}
    time.sleep(1.0)  # nobody is still training and writing
    assert {p: p.stat().st_mtime_ns for p in stamps if p.exists()} == stamps
    assert (out / "results.csv").exists()
    ckpts = out.glob("runs/*/checkpoint.pt")
    assert [p for p in ckpts if not (p.parent / "results.json").exists()]  # an interrupted run to resume
    # re-running resumes (in-process and sequential here, to keep the test short)
    run_sweep(load_sweep(config), out, executor="sequential", progress=False)
    table = pd.read_csv(out / "results.csv")
    assert sorted(table["seed"]) == [0, 1] and (table["epochs_done"] == 3).all()
    reference = fit(RunConfig.from_dict({**base, "seed": 0}), tmp_path / "ref0", progress=False)
    reference1 = fit(RunConfig.from_dict({**base, "seed": 1}), tmp_path / "ref1", progress=False)
    got = table.set_index("seed")["final_loss"].to_dict()
    assert got == {0: reference["final_loss"], 1: reference1["final_loss"]}  # resumed runs equal fresh ones


# ------------------------------------------------------------------------------------------------ item 4
def test_truncated_or_empty_checkpoint_names_the_file(tmp_path, monkeypatch):
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    atomic_torch_save({"x": torch.ones(3)}, tmp_path / "a.pt")
    assert synced, "atomic_torch_save must fsync before the rename"
    monkeypatch.undo()
    cfg = RunConfig.from_dict(TINY)
    with pytest.raises(_Stop):
        Trainer(cfg, tmp_path / "r", callbacks=[_StopAfterEpoch()], progress=False).fit()
    ckpt = tmp_path / "r" / "checkpoint.pt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"{ckpt}.*truncated.*Delete {ckpt}"):
        Trainer(cfg, tmp_path / "r", progress=False)
    ckpt.write_bytes(b"")
    with pytest.raises(CheckpointError, match=f"{ckpt} is empty"):
        Trainer(cfg, tmp_path / "r", progress=False)


# ------------------------------------------------------------------------------------------------ item 5
def test_crafted_cifar_pickle_does_not_run(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "ran"
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), "labels": [0, 1]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"n{i}" for i in range(10)]}, f)
    assert load_data("cifar10", root=tmp_path, download=False).train_images.shape == (10, 32, 32, 3)
    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump({"data": _RunsCode(f"touch {marker}"), "labels": [0, 1]}, f)
    with pytest.raises(UnsafeDataError, match=r"data_batch_3.*calls posix\.system.*refusing"):
        load_data("cifar10", root=tmp_path, download=False)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------ items 7, 11
def test_crafted_checkpoint_is_refused_as_code(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    torch.save({"model": _RunsCode(f"touch {marker}")}, path)
    model = kwlab.create_model("resnet20_cifar", method="kw", preset="1x", num_classes=10)
    with pytest.raises(OfficialCheckpointError) as info:
        load_official(model, path)
    text = str(info.value)
    assert "holds code" in text and "posix.system" in text and str(path) in text
    assert "weights_only=False" not in text and "set to `False`" not in text and "False" not in text
    assert not marker.exists()
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(OfficialCheckpointError, match="empty.pth is empty"):
        load_official(model, tmp_path / "empty.pth")
    with pytest.raises(OfficialCheckpointError, match="is a directory"):
        load_official(model, tmp_path)
    # the trainer's resume path refuses it the same way
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": _RunsCode(f"touch {marker}")}, run / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="holds code"):
        Trainer(RunConfig.from_dict(TINY), run, progress=False)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------ items 6, 8
@pytest.mark.parametrize(
    "change, message",
    [
        ({"lr": float("nan")}, "lr must be a finite number"),
        ({"lr": float("inf")}, "lr must be a finite number"),
        ({"momentum": float("-inf")}, "momentum must be a finite number"),
        ({"method": "kw", "budget": float("inf")}, "budget must be a finite number"),
        ({"method": "kw", "temperature_start": float("nan")}, "temperature_start"),
        ({"method": "kw", "temperature_end": 1.5}, r"temperature_end must be an anneal position in \[0, 1\]"),
        ({"arch": None}, "arch=None"),
        ({"arch": "torch.hub:load"}, "'torch.hub' is not a model builder"),
        ({"arch": "builtins:eval"}, "'builtins' is not a model builder"),
        ({"arch": "os:system"}, "'os' is not a model builder"),
        ({"arch": "subprocess:run"}, "'subprocess' is not a model builder"),
        ({"arch": "torch:hub.load"}, "'torch.hub' is not a model builder"),
    ],
)
def test_bad_values_are_refused_with_the_parameter_name(change, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_dict({**TINY, **change})


def test_image_size_too_small_for_the_arch_and_the_builder_is_logged(tmp_path, capsys):
    arch = "test_reliability:tiny_patch_net"
    cfg = RunConfig.from_dict({**TINY, "arch": arch, "model_kwargs": {}})
    with pytest.raises(ConfigError, match=r"image_size=8 is too small for arch='test_reliability:tiny_patch"):
        Trainer(cfg, tmp_path / "small", progress=False)
    assert not (tmp_path / "small" / "checkpoint.pt").exists()
    trainer = Trainer(cfg.replace(image_size=16), tmp_path / "ok", progress=False)
    assert "test_reliability.tiny_patch_net" in capsys.readouterr().err
    info = json.loads((tmp_path / "ok" / "config.json").read_text())
    assert info["resolved"]["builder"].startswith("test_reliability.tiny_patch_net") and trainer.epoch == 0


# ------------------------------------------------------------------------------------------------ item 10
def test_yaml_float_strings_are_numbers():
    values = yaml.safe_load("lr: 1e-3\nweight_decay: 5e-4\nmin_lr: 0\n")
    assert values["lr"] == "1e-3"  # YAML 1.1: no dot, so a string
    cfg = RunConfig.from_dict({**TINY, **values})
    assert (cfg.lr, cfg.weight_decay, cfg.min_lr) == (1e-3, 5e-4, 0.0)
    with pytest.raises(ConfigError, match="lr='fast' has type str; expected float"):
        RunConfig.from_dict({**TINY, "lr": "fast"})
    with pytest.raises(ConfigError, match="lr must be a finite number"):
        RunConfig.from_dict({**TINY, "lr": "nan"})


# ------------------------------------------------------------------------------------------------ item 13
def _one_line_error(capsys, argv, command, code=2):
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == code, err
    assert len(err) >= 1 and err[-1].startswith(f"kwlab {command}: error: ")
    assert not any(line.startswith("Traceback") for line in err)
    return err[-1]


def test_cli_errors_are_one_line_with_exit_code_and_debug_shows_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbase: {lr: [1,\n")
    line = _one_line_error(capsys, ["sweep", str(bad), "--out", str(tmp_path / "o")], "sweep")
    assert f"cannot parse YAML in {bad} at line 3" in line
    with pytest.raises(yaml.YAMLError):
        main(["--debug", "sweep", str(bad), "--out", str(tmp_path / "o")])
    # a zip whose member is damaged: the path and the member are named
    zpath = tmp_path / "imgs.zip"
    from PIL import Image

    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as zf:
        for split in ("train", "val"):
            for c in ("a", "b"):
                img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8))
                buf = __import__("io").BytesIO()
                img.save(buf, format="PNG")
                zf.writestr(f"{split}/{c}/0.png", buf.getvalue())
    raw = bytearray(zpath.read_bytes())
    info = zipfile.ZipFile(zpath).getinfo("train/a/0.png")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    raw[start : start + 20] = bytes(20)
    zpath.write_bytes(bytes(raw))
    argv = ["train", "--set", f"data={zpath}", "--set", "image_size=8", "--set", "device=cpu"]
    argv += ["--set", "epochs=1", "--out", str(tmp_path / "t"), "--no-progress"]
    env = os.environ.get("KWLAB_CACHE")
    os.environ["KWLAB_CACHE"] = str(tmp_path / "cache")
    try:
        line = _one_line_error(capsys, argv, "train")
    finally:
        os.environ.pop("KWLAB_CACHE") if env is None else os.environ.update(KWLAB_CACHE=env)
    assert str(zpath) in line and "'train/a/0.png'" in line
    # a garbage results.csv given to report
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "results.csv").write_text("x;y\n\x00\x01;2\n")
    line = _one_line_error(capsys, ["report", str(tmp_path / "g")], "report")
    assert "not a kwlab results table" in line
    # the final "N runs failed" of a sweep (the run fails its image-size check)
    spec = {
        "name": "fail",
        "base": {**TINY, "arch": "test_reliability:tiny_patch_net", "model_kwargs": {}},
        "grid": {"seed": [0]},
    }
    (tmp_path / "fail.yaml").write_text(yaml.safe_dump(spec))
    argv = ["sweep", str(tmp_path / "fail.yaml"), "--out", str(tmp_path / "f"), "--no-report"]
    argv.append("--no-progress")
    line = _one_line_error(capsys, argv, "sweep", code=1)
    assert "1 of 1 runs failed" in line
    assert "image_size=8 is too small" in next((tmp_path / "f" / "runs").glob("*/error.txt")).read_text()


# ------------------------------------------------------------------------------------------------ item 14
def test_one_torchvision_guard_serves_every_path():
    """In a fresh interpreter (where a bare ``import torchvision`` may fail on the op schemas): timm, the
    ``torchvision.models:resnet18`` builder and torchvision itself all import through kwlab._compat."""
    import importlib.util

    if importlib.util.find_spec("timm") is None or importlib.util.find_spec("torchvision") is None:
        pytest.skip("needs timm and torchvision")
    code = (
        "import kwlab._compat as c\n"
        "from kwlab.experiments.config import RunConfig\n"
        "from kwlab.experiments import build_model\n"
        "m = build_model(RunConfig.from_dict({'arch': 'torchvision.models:resnet18'}), 7)\n"
        "assert m.fc.out_features == 7, m.fc\n"
        "assert c.import_timm().create_model('resnet18', num_classes=3).fc.out_features == 3\n"
        "assert c.import_torchvision().models.resnet18 is not None\n"
        "assert c.define_torchvision_op_schemas() is False  # schemas exist now: nothing left to define\n"
        "print('ok')\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
