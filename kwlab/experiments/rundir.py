"""A run directory's records: which config it belongs to (:func:`check_run_dir`), ``config.json``
(:func:`write_config_record`), ``model.safetensors`` (:func:`write_model_safetensors`), and the parts of
a checkpoint that are not the model's (RNG states, callback states keyed by class name).

The files themselves are listed in :mod:`kwlab.experiments.train`; every write is atomic (tmp file +
``os.replace``).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kwlab.experiments.callbacks import Callback
from kwlab.experiments.config import ConfigError, RunConfig
from kwlab.logs import get_logger
from kwlab.utils import atomic_write, atomic_write_text, git_revision, take_pid_lock

__all__ = [
    "RunContext",
    "check_run_dir",
    "hold_run_dir",
    "record_problem",
    "config_record",
    "keyed_callbacks",
    "mismatch_message",
    "rng_state",
    "set_rng_state",
    "write_config_record",
    "write_model_safetensors",
]

_log = get_logger("train")


def mismatch_message(config: RunConfig, stored: dict[str, Any], where: Path) -> str:
    """The error for a run directory (or checkpoint) of another config: the fields that differ."""
    diffs = config.differences(stored) if stored else []
    what = "; ".join(diffs[:12]) if diffs else "the stored config is not recorded"
    return (
        f"{where} belongs to another config ({what}). Use another run directory (--out) for the new config, "
        f"or delete {where} to train it again"
    )


def check_run_dir(config: RunConfig, run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """Check that ``run_dir``'s records (results.json, else config.json) belong to ``config``.

    Only the hashed fields count (:meth:`RunConfig.training_hash`). Returns the stored results when the run is
    finished, else None.

    Raises:
        ConfigError: the directory holds a run of another config; the message lists the fields that differ.
    """
    run_dir = Path(run_dir)
    results_file, config_file = run_dir / "results.json", run_dir / "config.json"
    stored_cfg: dict[str, Any] = {}
    if config_file.exists():
        try:
            stored_cfg = json.loads(config_file.read_text()).get("config", {})
        except (json.JSONDecodeError, AttributeError):
            raise ConfigError(f"{config_file} is not a kwlab config record; delete {run_dir}") from None
    results = None
    if results_file.exists():
        problem = record_problem(results_file)
        if problem is not None:
            raise ConfigError(
                f"{results_file} is not a finished run's record ({problem}); delete it to train the run again"
            )
        results = json.loads(results_file.read_text())
        if results["config_hash"] != config.training_hash():
            raise ConfigError(mismatch_message(config, stored_cfg, run_dir))
        return results
    if stored_cfg and config.differences(stored_cfg):
        raise ConfigError(mismatch_message(config, stored_cfg, run_dir))
    return results


#: The key a record must hold to count: results.json and config.json both carry the run's training hash.
RECORD_KEY = "config_hash"


def record_problem(path: str | os.PathLike) -> str | None:
    """Why the run record ``path`` (a run directory's results.json or config.json) cannot be read as one:
    not JSON (truncated), not a mapping (``[]``), or without the run's ``config_hash`` (``{}``); None for a
    sound record."""
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        return f"cannot be read: {err}"
    except json.JSONDecodeError as err:
        return f"not valid JSON, e.g. truncated: {err}"
    if not isinstance(value, dict):
        return f"a JSON {type(value).__name__}, not a mapping"
    if RECORD_KEY not in value:
        return f"no {RECORD_KEY!r} key" + (" (an empty mapping)" if not value else "")
    if path.name == "config.json" and not isinstance(value.get("config"), dict):
        return "no 'config' mapping"
    return None


_RUN_LOCK = ".run.lock"


@contextlib.contextmanager
def hold_run_dir(run_dir: str | os.PathLike | None):
    """Hold the advisory lock ``run_dir/.run.lock`` (``fcntl.flock``, with this process's pid) while a run
    writes the directory: a second process that would train into a run directory still being written by a
    live process is refused (the lock goes with its holder, even one killed outright; the file is removed when
    the run returns). Only rank 0 of a
    torchrun job (the rank that writes) takes it.

    Raises:
        ConfigError: another live process holds the lock (names its pid).
    """
    if run_dir is None or os.environ.get("RANK", "0") != "0":
        yield
        return
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / _RUN_LOCK
    if path.is_dir():
        raise ConfigError(f"{path} is a directory; it must be kwlab's lock file: delete it")
    handle, holder = take_pid_lock(path)
    if handle is None:
        raise ConfigError(
            f"{run_dir} is being written by another live process ({holder}, lock {path}); wait for it to "
            f"finish or stop it (a torchrun job of a killed sweep: kill its process group), then re-run"
        )
    try:
        yield
        path.unlink(missing_ok=True)  # a run that returns leaves no lock file behind
    finally:
        handle.close()


@dataclass(frozen=True)
class RunContext:
    """What a run's records need to know about it: the config, where it is written, and what the config
    resolved to on this machine. The trainer makes one (:meth:`Trainer.run_context
    <kwlab.experiments.train.Trainer.run_context>`); :func:`config_record` and :func:`write_config_record`
    read it (never the trainer itself)."""

    config: RunConfig
    run_dir: Path | None
    resumed: bool
    builder: str | None
    anneal_steps: int | None
    total_steps: int
    device: str
    world_size: int
    num_classes: int
    data: str
    image_size: int
    train_samples: int
    test_samples: int
    train_eval_samples: int
    iters_per_epoch: int
    amp: bool
    amp_dtype: str | None
    channels_last: bool
    notes: tuple[str, ...]
    compile: str | None


def config_record(context: RunContext) -> dict[str, Any]:
    """What ``config.json`` holds for a run: the config and its hash, the git revision, what the config
    resolved to on this machine (``context``), and the environment."""
    config = context.config
    return {
        "config": config.to_dict(),
        "config_hash": config.training_hash(),
        "git_revision": git_revision(),
        "resolved": {
            "builder": context.builder,
            "temperature": config.resolved_temperature(),
            "anneal_steps": context.anneal_steps,
            "total_steps": context.total_steps,
            "device": context.device,
            "world_size": context.world_size,
            "num_classes": context.num_classes,
            "data": context.data,
            "image_size": context.image_size,
            "train_samples": context.train_samples,
            "test_samples": context.test_samples,
            "train_eval_samples": context.train_eval_samples,
            "iters_per_epoch": context.iters_per_epoch,
            "amp": context.amp,
            "amp_dtype": context.amp_dtype,
            "channels_last": context.channels_last,
            "notes": list(context.notes),
            "compile": context.compile,
        },
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "host": platform.node(),
            "machine": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cpus)",
            "threads": torch.get_num_threads(),
        },
    }


def write_config_record(context: RunContext) -> Path:
    """Write :func:`config_record` to ``context.run_dir/config.json``. A resumed run keeps the revision it
    started with as ``git_revision`` (today's goes to ``git_revision_resumed`` when it differs)."""
    if context.run_dir is None:
        raise ValueError("write_config_record: the run has no run_dir")
    info = config_record(context)
    path = Path(context.run_dir) / "config.json"
    if context.resumed and path.exists():
        try:
            started = json.loads(path.read_text()).get("git_revision")
        except (json.JSONDecodeError, AttributeError):
            started = None
        if started and started != info["git_revision"]:
            info["git_revision_resumed"], info["git_revision"] = info["git_revision"], started
    atomic_write_text(path, json.dumps(info, indent=2, default=str) + "\n")
    return path


def rng_state(device: torch.device) -> dict[str, Any]:
    """torch's, Python's (and CUDA's on a CUDA device) global RNG states, as plain containers and tensors."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), None))
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def keyed_callbacks(callbacks: Sequence[Callback]) -> list[tuple[str, Callback]]:
    """Callbacks keyed by class name (``Name``, ``Name#1``, ...) so states survive a changed callback list."""
    counts: dict[str, int] = {}
    out = []
    for cb in callbacks:
        name = type(cb).__name__
        out.append((name if name not in counts else f"{name}#{counts[name]}", cb))
        counts[name] = counts.get(name, 0) + 1
    return out


def write_model_safetensors(
    model: nn.Module, path: str | os.PathLike, metadata: dict[str, str] | None = None
) -> Path | None:
    """Write ``model.state_dict()`` (the temperatures included) to ``path`` as safetensors, atomically.

    Every tensor is written from its own contiguous CPU copy, so tied or strided tensors load back with
    ``model.load_state_dict(safetensors.torch.load_file(path))``. ``metadata`` (text to text) goes into the
    file's header. Returns the path, or None (with a warning) when the safetensors package is missing.
    """
    try:
        from safetensors.torch import save_file  # noqa: PLC0415 - optional dependency (the lab extra)
    except ImportError:
        _log.warning("model.safetensors not written: pip install safetensors (kwlab's lab extra has it)")
        return None
    state = {
        k: v.detach().to("cpu", copy=True).contiguous()
        for k, v in model.state_dict().items()
        if isinstance(v, torch.Tensor)
    }
    header = {"format": "pt", **(metadata or {})}
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=header))
    return Path(path)
