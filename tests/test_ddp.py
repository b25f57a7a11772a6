"""DDP under torchrun on this CPU (gloo, 2 processes x 1 thread): ``torchrun --standalone --nproc_per_node=2
-m kwlab train ...`` trains a KW model, only rank 0 writes the run directory, both ranks end with the same
weights, the result equals a single process with the same global batch, resume works, and a rank that dies
ends the run with an error naming it.

The model is BatchNorm-free (:func:`kwlab.testing.plain_convnet`, KW with ``attention_norm="none"``) and
augmentation is off: under DDP each rank normalises its own share of the batch (no SyncBatchNorm), so a
BatchNorm model is *not* expected to equal the single process, and each rank draws its own crops.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from kwlab.experiments.callbacks import Callback
from kwlab.experiments.config import RunConfig
from kwlab.experiments.train import Trainer
from kwlab.testing import tiny_run

ROOT = Path(__file__).resolve().parents[1]
DATA = os.environ.get("KWLAB_DATA")
BASE = tiny_run(
    arch="kwlab.testing:plain_convnet",
    model_kwargs={"width": 32},
    method="kw",
    attention_norm="none",
    augment=False,
    epochs=2,
    batch_size=16,
    train_samples=64,
    test_samples=32,
    probe_samples=16,
)


def _sets(config: dict) -> list[str]:
    return [arg for k, v in config.items() for arg in ("--set", f"{k}={json.dumps(v)}")]


def _torchrun(config: dict, out: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "kwlab", "train", *_sets(config), "--out", str(out), "--no-progress"]
    # a session of its own: on a timeout the whole group (torchrun and its workers) is killed, no orphan
    pipe = subprocess.PIPE
    proc = subprocess.Popen(cmd, env=env, stdout=pipe, stderr=pipe, text=True, cwd=ROOT, start_new_session=1)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        scale = max(1.0, b[name].abs().max().item())
        # 8 SGD steps; DDP averages two half-batch gradient means instead of one full-batch mean: only the
        # fp32 summation order differs
        assert (a[name] - b[name]).abs().max().item() <= 1e-5 * scale, name


class _StopAfterFirstEpoch(Callback):
    def on_step_start(self, trainer, step):  # noqa: ANN001
        if step == trainer.iters_per_epoch:  # epoch 1's checkpoint is on disk
            raise KeyboardInterrupt


def test_ddp_equals_single_process_and_resumes(tmp_path, one_thread):
    ddp = _torchrun(BASE, tmp_path / "ddp")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    results = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert results["world_size"] == 2
    assert results["rank_param_spread"] == 0.0  # both ranks hold the same weights
    resolved = json.loads((tmp_path / "ddp" / "config.json").read_text())["resolved"]
    assert resolved["world_size"] == 2 and resolved["device"] == "cpu"

    single = Trainer(RunConfig.from_dict(BASE), tmp_path / "single", progress=False)
    ref = single.fit()
    assert ref["world_size"] == 1 and ref["rank_param_spread"] is None
    # only rank 0 wrote: the same files as the single process, no leftovers of a second writer
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == sorted(
        p.name for p in (tmp_path / "single").iterdir()
    )
    assert results["config_hash"] == ref["config_hash"]
    for key in ("final_train_loss", "final_loss"):
        assert abs(results[key] - ref[key]) <= 1e-5 * abs(ref[key]), key
    assert results["final_acc"] == ref["final_acc"]
    # the clean train accuracy is sharded and summed like the test accuracy: the same number
    assert results["final_train_acc_clean"] == ref["final_train_acc_clean"] is not None
    _assert_same_weights(_weights(tmp_path / "ddp"), _weights(tmp_path / "single"))

    # resume: a run stopped after epoch 1 (single process) is finished by torchrun, equal to the uninterrupted
    with pytest.raises(KeyboardInterrupt):
        stopper = [_StopAfterFirstEpoch()]
        Trainer(RunConfig.from_dict(BASE), tmp_path / "resumed", callbacks=stopper, progress=False).fit()
    assert not (tmp_path / "resumed" / "results.json").exists()
    resumed = _torchrun(BASE, tmp_path / "resumed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    history = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in history] == [1, 2]
    _assert_same_weights(_weights(tmp_path / "resumed"), _weights(tmp_path / "ddp"))


def test_a_rank_that_dies_ends_the_run_with_an_error_naming_it(tmp_path):
    start = time.perf_counter()
    config = {**BASE, "model_kwargs": {"width": 32, "fail_on_rank": 1}}
    proc = _torchrun(config, tmp_path / "dies", timeout=120)
    assert proc.returncode != 0
    assert time.perf_counter() - start < 120  # rank 0 does not hang in a collective
    text = proc.stdout + proc.stderr
    assert "failing on rank 1" in text
    assert "ChildFailedError" in text or "failed" in text.lower()
    assert not (tmp_path / "dies" / "results.json").exists()


@pytest.mark.skipif(
    not DATA or not Path(DATA, "cifar10-jpg.zip").exists(), reason="needs KWLAB_DATA/cifar10-jpg.zip"
)
def test_ddp_trains_on_real_cifar10(tmp_path):
    config = {**BASE, "data": "cifar10", "image_size": None, "epochs": 1, "train_samples": 128}
    proc = _torchrun(config, tmp_path / "cifar")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "cifar" / "results.json").read_text())
    resolved = json.loads((tmp_path / "cifar" / "config.json").read_text())["resolved"]
    assert resolved["data"] == "cifar10" and resolved["train_samples"] == 128
    assert results["world_size"] == 2 and results["rank_param_spread"] == 0.0
    assert 0 < results["final_train_loss"] < 10


def test_torchrun_executor_runs_a_sweep_under_ddp_and_records_a_failed_run(tmp_path, monkeypatch):
    from kwlab.experiments.spec import SweepSpec
    from kwlab.experiments.sweep import run_sweep

    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    spec = SweepSpec.from_dict(
        {
            "name": "ddp-sweep",
            "base": BASE,
            "seeds": 1,
            "runs": [{"model_kwargs": {"width": 32}}, {"model_kwargs": {"width": 32, "fail_on_rank": 1}}],
            "executor": {"kind": "torchrun", "nproc_per_node": 2, "threads": 1},
        }
    )
    with pytest.raises(RuntimeError, match="1 of 2 runs failed"):
        run_sweep(spec, tmp_path / "sweep", progress=False, log=lambda *_: None)
    runs = sorted((tmp_path / "sweep" / "runs").iterdir())
    finished = [r for r in runs if (r / "results.json").exists()]
    failed = [r for r in runs if (r / "error.txt").exists()]
    assert len(finished) == 1 and len(failed) == 1
    assert "failing on rank 1" in (failed[0] / "error.txt").read_text()
    results = json.loads((finished[0] / "results.json").read_text())
    assert results["world_size"] == 2 and results["rank_param_spread"] == 0.0
    # the run equals the same config trained by one process (BatchNorm-free net, see the module docstring)
    single = Trainer(RunConfig.from_dict(BASE), tmp_path / "single", progress=False).fit()
    assert results["config_hash"] == single["config_hash"]
    _assert_same_weights(_weights(finished[0]), _weights(tmp_path / "single"))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"nproc_per_node": 0}, "nproc_per_node must be an integer >= 1"),
        ({"nproc_per_node": "2"}, "nproc_per_node must be an integer >= 1"),
        ({"torchrun_args": "--standalone"}, "torchrun_args must be a list of strings"),
        ({"gpus": 2}, "does not take \\['gpus'\\]"),
        ({"workers": 2}, "does not take \\['workers'\\]"),
    ],
)
def test_torchrun_executor_refuses_bad_options_when_the_spec_loads(options, message):
    from kwlab.experiments.config import ConfigError
    from kwlab.experiments.spec import SweepSpec

    with pytest.raises(ConfigError, match=message):
        SweepSpec.from_dict({"name": "x", "base": BASE, "executor": {"kind": "torchrun", **options}})


def test_torchrun_executor_command_line():
    from kwlab.experiments.executors import make_executor

    # the CLI's --workers overrides the file's nproc_per_node
    assert make_executor({"kind": "torchrun", "nproc_per_node": 4}, workers=3).nproc_per_node == 3
    ex = make_executor({"kind": "torchrun", "nproc_per_node": 4, "torchrun_args": ["--nnodes=2"]})
    cmd = ex.command(Path("c.yaml"), Path("runs/a"))
    assert cmd[1:] == [
        "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=4",
        "-m", "kwlab", "train", "c.yaml", "--out", "runs/a", "--no-progress",
    ]  # fmt: skip
