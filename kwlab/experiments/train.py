"""Training runs: a typed :class:`RunConfig`, a :class:`Trainer` and :func:`fit`.

One run = one model trained on one dataset with one recipe. The loop is deliberately plain:

* SGD (momentum, Nesterov, as timm's "sgd" in the official code) or AdamW; no weight decay on 1-D
  parameters (norms, biases), as in
  the official KW code (warehouse cells are >= 2-D and do get weight decay);
* learning rate per iteration: linear warmup from 0 over ``warmup_epochs``, then cosine to ``min_lr``;
* the attention temperature of dynamic layers is set every iteration from
  :class:`kwlab.methods.temperature.TemperatureSchedule` (KW: 1 -> 0 over ``temperature_epochs``);
* AMP (bf16, or fp16 with a grad scaler) and channels_last on CUDA by default, on CPU when asked explicitly
  (``amp="bf16"``, ``channels_last="always"``); ``compile`` wraps the training model in ``torch.compile``
  (graph breaks are counted into the results); DDP when launched by torchrun (see :class:`Trainer`);
* a checkpoint at the end of every epoch (model, optimizer, scheduler, scaler, RNG states, callbacks'
  states, metric history) that resumes the run exactly: the data order of each epoch is a function
  of ``(seed, epoch)`` (see :class:`kwlab.experiments.data.DeviceLoader`), so nothing else is needed.

Run directory layout (all files written atomically: tmp file + ``os.replace``)::

    config.json     resolved RunConfig + git revision + environment
    metrics.jsonl   one line per finished epoch
    checkpoint.pt   state after the last finished epoch (torch.load(weights_only=True))
    probe/          the probe's tables on test images after training (dynamic models; see
                    kwlab.instruments.probe.load)
    probe_history.parquet  probe summaries during training (when probe_every > 0)
    results.json    written last: the run is finished when it exists

A run directory belongs to one config: checkpoint.pt and results.json store its
:meth:`RunConfig.training_hash` (every field but :data:`kwlab.experiments.config.RUNTIME_FIELDS`), and
resuming or re-fitting under a config that differs in a hashed field raises :class:`ConfigError` listing the
fields that differ. A changed runtime field (``checkpoint``, ``device``, ``probe_every``) resumes, and
config.json is rewritten with the current values. An unreadable checkpoint (truncated, empty, or holding
code) raises an error that names the file.

Temperature span. KW anneals tau from 1 to 0 over ``temperature_epochs`` (official: 20 of 300 epochs, i.e.
6,260 of ~94,000 optimizer steps for ResNet at batch 4096; 15 of 150 for MobileNetV2) or over
``temperature_steps`` optimizer steps. With neither (default) kwlab uses ``min(official, 0.25 * epochs)``
epochs. On short runs this is far fewer steps than the official anneal, and the measurements in
data/results/cifar10_resnet20_handover show what that costs: with the official attention init the learned
attention has not taken over the init pattern's function when tau reaches 0 (the *handover*), so test
accuracy drops at the end of the anneal and recovers only as far as the remaining steps allow. The log and
the results warn about such anneals (:func:`kwlab.methods.temperature.anneal_note`), and while the anneal
runs every epoch also measures ``test_acc_tau0``: the test accuracy at tau = 0, what the net computes
without the pattern (after the anneal it equals ``test_acc`` and is not measured twice).

Explained in notebooks/03_train_cifar.ipynb.
"""

from __future__ import annotations

import copy
import json
import math
import os
import platform
import random
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kwlab.experiments.callbacks import Callback
from kwlab.experiments.config import ConfigError, RunConfig
from kwlab.layers.base import dynamic_layers, set_temperature
from kwlab.methods import get_method
from kwlab.methods.temperature import TemperatureSchedule, anneal_note
from kwlab.utils import (
    CheckpointError,
    atomic_torch_save,
    atomic_write_text,
    count_macs,
    git_revision,
    load_torch_file,
)

__all__ = ["RunConfig", "Trainer", "fit", "build_model", "check_run_dir", "resolve_builder", "ConfigError"]


def _is_dist() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' but torch.cuda.is_available() is False; use device='cpu' or 'auto'")
    return torch.device(name)


def _resolve_amp(amp: bool | str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``config.amp`` on ``device`` (None: fp32); refuses what the device cannot run."""
    cuda = device.type == "cuda"
    if amp is False:
        return None
    if amp is True:  # automatic: where it pays, i.e. on CUDA
        if not cuda:
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "fp16":
        if not cuda:
            raise ConfigError(
                f"amp='fp16' needs a CUDA device (fp16 training uses a CUDA grad scaler), the run is on "
                f"{device}; use amp='bf16' (any device), amp=True (bf16/fp16 on CUDA, off on CPU) or False"
            )
        return torch.float16
    if cuda and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"amp='bf16': {device} does not support bfloat16; use amp='fp16' or True")
    return torch.bfloat16


def _graph_breaks() -> int:
    """Graph breaks torch.compile (dynamo) has counted in this process so far."""
    from torch._dynamo.utils import counters  # noqa: PLC0415

    return int(sum(counters["graph_break"].values()))


def build_model(config: RunConfig, num_classes: int) -> nn.Module:
    """The model of ``config``: ``kwlab.create_model`` for registered archs, or ``"module:function"``.

    A ``"module:function"`` arch is called as ``function(num_classes=..., **model_kwargs)`` and then converted
    by ``config.method``'s row of the method table with the same settings as a registered arch (the row's
    ``train_options``, e.g. KW's official init; KW: the generic presets of :data:`kwlab.methods.KW_PRESETS`).
    """
    spec = get_method(config.method)
    preset, options = config.method_options()
    if ":" in config.arch:
        fn = resolve_builder(config.arch)
        model = fn(num_classes=num_classes, **config.model_kwargs)
        if not isinstance(model, nn.Module):
            raise ConfigError(
                f"arch={config.arch!r}: {describe_builder(fn)} returned {type(model).__name__}, "
                f"not an nn.Module"
            )
        if spec.converter is None:
            return model
        return spec.converter(model, **{**spec.train_options, **spec.preset_options(preset), **options})
    from kwlab.models import create_model  # noqa: PLC0415

    if config.drop_path_rate:
        options["drop_path_rate"] = config.drop_path_rate
    return create_model(
        config.arch,
        method=config.method,
        preset=preset,
        num_classes=num_classes,
        **options,
        **config.model_kwargs,
    )


def resolve_builder(arch: str):
    """The callable named by a ``"module:function"`` arch, imported through the torchvision guard.

    Sweep and config files are trusted input: a custom arch runs the named function with the file's
    ``model_kwargs``, like Hydra's ``_target_``. The modules in
    :data:`kwlab.experiments.config.BLOCKED_ARCH_MODULES` (torch.hub, builtins, os, subprocess, ...) are
    refused by the config check; the resolved callable is printed in the run log and written to config.json.
    """
    from kwlab._compat import import_module  # noqa: PLC0415 - torchvision/timm builders need the guard

    module_name, _, fn_name = arch.partition(":")
    try:
        obj: Any = import_module(module_name)
        for part in fn_name.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"arch={arch!r}: cannot import {fn_name!r} from {module_name!r} ({err})") from None
    if not callable(obj) or isinstance(obj, type(os)):
        raise ConfigError(f"arch={arch!r}: {fn_name!r} in {module_name!r} is not a function")
    return obj


def describe_builder(fn: Any) -> str:
    """``module.qualname (file)`` of a resolved builder, for the run log."""
    import inspect  # noqa: PLC0415

    name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
    try:
        where = inspect.getsourcefile(fn)
    except TypeError:
        where = None
    return f"{name} ({where})" if where else name


def _check_image_size(model: nn.Module, config: RunConfig, size: int, device: torch.device) -> None:
    """One forward pass of a single zero image in eval mode: an arch that cannot run at ``size`` fails here,
    before training, with a ConfigError naming image_size."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            model(torch.zeros(1, 3, size, size, device=device))
    except (RuntimeError, ValueError) as err:
        first = next((ln for ln in str(err).splitlines() if ln.strip()), "")
        raise ConfigError(
            f"image_size={size} is too small for arch={config.arch!r}: a forward pass of one {size}x{size} "
            f"image fails ({type(err).__name__}: {first[:200]}); use a larger image_size"
        ) from None
    finally:
        model.train(was_training)


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), None))
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


# ----------------------------------------------------------------------------------------------------
# Trainer
# ----------------------------------------------------------------------------------------------------


class Trainer:
    """Trains ``config``'s model; resumes from ``run_dir/checkpoint.pt`` when it exists.

    Args:
        config: the run.
        run_dir: where config, metrics, checkpoints and results go (None: keep everything in memory).
        callbacks: :class:`kwlab.experiments.callbacks.Callback` objects (a probe is added when
            ``probe_every > 0``).
        model: use this model instead of :func:`build_model` (its config fields are then informational).
        data: a preloaded :class:`kwlab.experiments.data.ImageData` (default: loaded from ``config``).
        progress: show tqdm bars.

    Attributes:
        model, optimizer, scheduler, history (list of per-epoch metric dicts), step (global iteration),
        epoch (next epoch to run), run_dir, config, data, train_loader, test_loader.
    """

    def __init__(
        self,
        config: RunConfig,
        run_dir: str | os.PathLike | None = None,
        *,
        callbacks: Iterable[Callback] = (),
        model: nn.Module | None = None,
        data: Any = None,
        progress: bool = True,
    ) -> None:
        from kwlab.experiments.data import DeviceLoader, load_data  # noqa: PLC0415

        config.validate()
        self.config = config
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.progress = progress
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if _is_dist():
            import torch.distributed as dist  # noqa: PLC0415

            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            if config.device != "cpu" and torch.cuda.is_available():
                torch.cuda.set_device(local_rank)
                self.device = torch.device("cuda", local_rank)
            else:
                self.device = torch.device("cpu")
            if not dist.is_initialized():
                dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        else:
            self.device = _resolve_device(config.device)
        self.is_main = self.rank == 0
        cuda = self.device.type == "cuda"
        amp_dtype = _resolve_amp(config.amp, self.device)
        self.use_amp = amp_dtype is not None
        self.amp_dtype = amp_dtype if amp_dtype is not None else torch.bfloat16  # (unused when off)
        self.channels_last = config.channels_last == "always" or (config.channels_last is True and cuda)
        compile_mode = "default" if config.compile is True else config.compile
        self.compile_mode: str | None = compile_mode or None

        self.data = (
            data
            if data is not None
            else load_data(
                config.data,
                root=config.data_root,
                image_size=config.image_size,
                train_samples=config.train_samples,
                test_samples=config.test_samples,
                classes=config.classes,
                seed=config.seed,
            )
        )
        _seed_everything(config.seed)
        self.builder = (
            describe_builder(resolve_builder(config.arch)) if model is None and ":" in config.arch else None
        )
        if self.builder is not None and self.is_main:
            print(f"kwlab: arch {config.arch!r} -> {self.builder}", file=sys.stderr)
        net = model if model is not None else build_model(config, self.data.num_classes)
        net = net.to(self.device)
        _check_image_size(net, config, self.data.image_size, self.device)
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.model = net
        self.ddp_model: nn.Module = net
        if _is_dist():
            from torch.nn.parallel import DistributedDataParallel  # noqa: PLC0415

            self.ddp_model = DistributedDataParallel(net, device_ids=[self.device.index] if cuda else None)
        self._graph_breaks_before = _graph_breaks() if self.compile_mode is not None else 0
        if self.compile_mode is not None:  # compiled around DDP, so that dynamo splits at its buckets
            self.ddp_model = torch.compile(self.ddp_model, mode=self.compile_mode)
        image_dtype = torch.float32
        common = dict(
            mean=self.data.mean,
            std=self.data.std,
            device=self.device,
            channels_last=self.channels_last,
            dtype=image_dtype,
        )
        self.train_loader = DeviceLoader(
            self.data.train_images,
            self.data.train_labels,
            batch_size=min(config.batch_size, len(self.data.train_labels)),
            train=True,
            seed=config.seed,
            crop_padding=4 if config.augment else 0,
            flip=config.augment,
            rank=self.rank,
            world_size=self.world_size,
            **common,
        )
        self.test_loader = DeviceLoader(
            self.data.test_images,
            self.data.test_labels,
            batch_size=max(config.batch_size, 256),
            train=False,
            **common,
        )
        self.iters_per_epoch = len(self.train_loader)
        self.optimizer = self._make_optimizer()
        total = self.iters_per_epoch * config.epochs
        warmup = int(round(self.iters_per_epoch * config.warmup_epochs))
        ratio = config.min_lr / config.lr

        def lr_lambda(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, total - warmup)
            return ratio + (1 - ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)
        temp = config.resolved_temperature()
        self.total_steps = total
        self.anneal_steps = config.anneal_steps(self.iters_per_epoch)
        self.temperature = (
            None
            if temp is None
            else TemperatureSchedule(
                self.iters_per_epoch,
                epochs=temp[2] or 0.0,
                start=temp[0],
                end=temp[1],
                steps=config.temperature_steps,
            )
        )
        blends_pattern = any(  # attention blended with a one-hot init pattern (KW's CAF): the handover
            getattr(layer.attention, "function", None) == "caf" for _, layer in dynamic_layers(self.model)
        )
        self.anneal_note = anneal_note(self.anneal_steps, total) if blends_pattern else None
        if self.anneal_note and self.is_main and progress:
            print(f"kwlab: warning: {self.anneal_note}", file=sys.stderr)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.callbacks: list[Callback] = list(callbacks)
        #: instruments the config asks for that do not apply to this run (recorded in config.json)
        self.notes: list[str] = []
        if config.probe_every > 0 and not any(type(cb).__name__ == "ProbeCallback" for cb in self.callbacks):
            from kwlab.experiments.callbacks import ProbeCallback  # noqa: PLC0415

            if next(dynamic_layers(self.model), None) is None:
                self.notes.append(
                    f"probe_every={config.probe_every} skipped: the {config.method} model has no dynamic "
                    f"layers to probe"
                )
            else:
                self.callbacks.append(ProbeCallback(every=config.probe_every))
        for note in self.notes if self.is_main else ():
            print(f"kwlab: {note}", file=sys.stderr)
        self.history: list[dict[str, Any]] = []
        self.step = 0
        self.epoch = 0
        self.best_acc = 0.0
        self.params = sum(p.numel() for p in self.model.parameters())
        self.macs: int | None = None
        self.resumed_from: int | None = None
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            check_run_dir(config, self.run_dir)
            if (self.run_dir / "checkpoint.pt").exists():
                self.load_checkpoint(self.run_dir / "checkpoint.pt")
                self.resumed_from = self.epoch
            if self.is_main:
                self._write_config()

    # ------------------------------------------------------------------ setup helpers
    def _make_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        decay, no_decay = [], []
        for p in self.model.parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 else decay).append(p)
        groups = [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999))

    def _write_config(self) -> None:
        assert self.run_dir is not None
        info = {
            "config": self.config.to_dict(),
            "config_hash": self.config.training_hash(),
            "git_revision": git_revision(),
            "resolved": {
                "builder": self.builder,
                "temperature": self.config.resolved_temperature(),
                "anneal_steps": self.anneal_steps,
                "total_steps": self.total_steps,
                "device": str(self.device),
                "world_size": self.world_size,
                "num_classes": self.data.num_classes,
                "data": self.data.name,
                "image_size": self.data.image_size,
                "train_samples": len(self.data.train_labels),
                "test_samples": len(self.data.test_labels),
                "iters_per_epoch": self.iters_per_epoch,
                "amp": self.use_amp,
                "amp_dtype": str(self.amp_dtype).removeprefix("torch.") if self.use_amp else None,
                "channels_last": self.channels_last,
                "notes": self.notes,
                "compile": self.compile_mode,
            },
            "environment": {
                "torch": torch.__version__,
                "python": platform.python_version(),
                "host": platform.node(),
                "machine": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cpus)",
                "threads": torch.get_num_threads(),
            },
        }
        previous = self.run_dir / "config.json"
        if self.resumed_from is not None and previous.exists():  # keep the revision the run started with
            try:
                started = json.loads(previous.read_text()).get("git_revision")
            except (json.JSONDecodeError, AttributeError):
                started = None
            if started and started != info["git_revision"]:
                info["git_revision_resumed"], info["git_revision"] = info["git_revision"], started
        atomic_write_text(previous, json.dumps(info, indent=2, default=str) + "\n")

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": _rng_state(self.device),
            "callbacks": {k: cb.state_dict() for k, cb in _keyed(self.callbacks)},
            "history": json.dumps(self.history),
            "epoch": self.epoch,
            "step": self.step,
            "best_acc": self.best_acc,
            "config_hash": self.config.training_hash(),
            "config": json.dumps(self.config.to_dict(), default=str),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        for key, cb in _keyed(self.callbacks):
            if key in state["callbacks"]:
                cb.load_state_dict(state["callbacks"][key])
        self.history = json.loads(state["history"])
        self.epoch, self.step, self.best_acc = (
            int(state["epoch"]),
            int(state["step"]),
            float(state["best_acc"]),
        )
        _set_rng_state(state["rng"], self.device)

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        atomic_torch_save(self.state_dict(), path)

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Resume from ``path``; refuses another config's checkpoint, names the file when it is unreadable."""
        try:
            state = load_torch_file(path, map_location=self.device)
        except CheckpointError as err:
            raise CheckpointError(
                f"cannot resume: {err}. Delete {path} to restart this run from epoch 0"
            ) from None
        stored = state.get("config_hash") if isinstance(state, dict) else None
        if stored is not None and stored != self.config.training_hash():
            stored_config = json.loads(state.get("config", "{}"))
            raise ConfigError(_mismatch(self.config, stored_config, Path(path).parent))
        self.load_state_dict(state)

    # ------------------------------------------------------------------ loop
    def _call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training set; returns loss, acc, lr, temperature, throughput, time."""
        from kwlab.utils import progress_bar as tqdm  # noqa: PLC0415

        self.ddp_model.train()
        self.train_loader.set_epoch(epoch)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        tau = None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        bar = tqdm(
            self.train_loader,
            desc=f"epoch {epoch + 1}/{self.config.epochs}",
            leave=False,
            disable=not (self.progress and self.is_main),
            mininterval=0.5,
        )
        for x, y in bar:
            if self.temperature is not None:
                tau = self.temperature.at_step(self.step)
                set_temperature(self.model, tau)
            self._call("on_step_start", self.step)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
                logits = self.ddp_model(x)
                loss = self.criterion(logits, y)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            loss_d = loss.detach()
            loss_sum += loss_d * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
            self._call(
                "on_step_end", self.step, x, y, logits.detach(), float(loss_d) if self.callbacks else math.nan
            )
            self.step += 1
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - start
        totals = self._all_reduce(
            torch.stack([loss_sum.float(), correct.float(), torch.tensor(float(seen), device=self.device)])
        )
        return {
            "train_loss": float(totals[0] / totals[2]),
            "train_acc": float(totals[1] / totals[2]),
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "temperature": None if tau is None else float(tau),
            "throughput": float(totals[2]) / elapsed,
            "epoch_time": elapsed,
        }

    @torch.no_grad()
    def evaluate(self, model: nn.Module | None = None) -> dict[str, float]:
        """Loss and accuracy on the test set (sharded over DDP ranks), of ``model`` (default: the trained
        model)."""
        net = self.model if model is None else model
        net.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        seen = torch.zeros((), device=self.device)
        criterion = nn.CrossEntropyLoss(reduction="sum")
        for i, (x, y) in enumerate(self.test_loader):
            if self.world_size > 1 and i % self.world_size != self.rank:
                continue
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
                logits = net(x)
            loss_sum += criterion(logits.float(), y)
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
        totals = self._all_reduce(torch.stack([loss_sum, correct, seen]))
        return {"test_loss": float(totals[0] / totals[2]), "test_acc": float(totals[1] / totals[2])}

    def _test_acc_tau0(self, metrics: dict[str, Any]) -> dict[str, float | None]:
        """Test accuracy at tau = 0 while the anneal runs (the net without its init pattern), twice:

        * ``test_acc_tau0``: the trained model at tau = 0 with its BatchNorm running statistics, which were
          collected at tau > 0 (what the net gives if the anneal stopped here);
        * ``test_acc_tau0_recal``: a copy of it whose BatchNorm statistics are measured again at tau = 0 on
          :data:`RECALIBRATION_BATCHES` training batches (no gradient, the training RNG untouched): the
          function the learned attention carries, apart from the statistics it was trained with.

        After the anneal both equal ``test_acc`` (not measured again); None for methods without a temperature.
        """
        tau = metrics.get("temperature")
        if self.temperature is None or tau is None:
            return {"test_acc_tau0": None, "test_acc_tau0_recal": None}
        if tau == 0.0:
            return {"test_acc_tau0": metrics["test_acc"], "test_acc_tau0_recal": metrics["test_acc"]}
        try:
            set_temperature(self.model, 0.0)
            plain = self.evaluate()["test_acc"]
        finally:
            set_temperature(self.model, tau)
        net = copy.deepcopy(self.model)
        set_temperature(net, 0.0)
        recalibrate_batchnorm(net, self.train_loader, RECALIBRATION_BATCHES)
        return {"test_acc_tau0": plain, "test_acc_tau0_recal": self.evaluate(net)["test_acc"]}

    def _all_reduce(self, t: Tensor) -> Tensor:
        if _is_dist():
            import torch.distributed as dist  # noqa: PLC0415

            dist.all_reduce(t)
        return t

    def _rank_param_spread(self) -> float | None:
        """Under DDP: max - min over ranks of a parameter fingerprint (0.0 when every rank holds the same
        weights, as DDP's gradient all-reduce should keep them); None in a single process."""
        if not _is_dist():
            return None
        import torch.distributed as dist  # noqa: PLC0415

        with torch.no_grad():
            weights = torch.arange(1, 8, dtype=torch.float64, device=self.device)
            fp = sum(
                (p.double().flatten()[:7] * weights[: min(7, p.numel())]).sum() + p.double().sum()
                for p in self.model.parameters()
            )
            hi, lo = fp.clone(), -fp.clone()
            dist.all_reduce(hi, op=dist.ReduceOp.MAX)
            dist.all_reduce(lo, op=dist.ReduceOp.MAX)
        return float(hi + lo)

    def fit(self) -> dict[str, Any]:
        """Train the remaining epochs; returns the results dict (also saved as results.json)."""
        from kwlab.utils import progress_bar as tqdm  # noqa: PLC0415

        cfg = self.config
        if self.macs is None:
            try:
                self.macs = count_macs(self.model, (1, 3, self.data.image_size, self.data.image_size))
            except Exception:  # a model the flop counter cannot trace: report no MACs rather than fail
                self.macs = -1
        self._call("on_fit_start")
        bar = tqdm(
            range(self.epoch, cfg.epochs),
            desc=self.run_dir.name if self.run_dir else "fit",
            initial=self.epoch,
            total=cfg.epochs,
            disable=not (self.progress and self.is_main),
            leave=False,
        )
        for epoch in bar:
            metrics = {"epoch": epoch + 1, **self.train_epoch(epoch), **self.evaluate()}
            metrics.update(self._test_acc_tau0(metrics))
            self.best_acc = max(self.best_acc, metrics["test_acc"])
            self.history.append(metrics)
            self._call("on_epoch_end", epoch, metrics)
            self.epoch = epoch + 1
            bar.set_postfix(loss=f"{metrics['train_loss']:.3f}", acc=f"{metrics['test_acc']:.3f}")
            if self.run_dir is not None and self.is_main:
                self.save_checkpoint(self.run_dir / "checkpoint.pt")
                atomic_write_text(
                    self.run_dir / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in self.history)
                )
        self._call("on_fit_end")
        self.rank_param_spread = self._rank_param_spread()
        self.probe_headline = _final_probe(self)
        results = self.results()
        if self.run_dir is not None and self.is_main:
            if not cfg.checkpoint and (self.run_dir / "checkpoint.pt").exists():
                (self.run_dir / "checkpoint.pt").unlink()
            atomic_write_text(self.run_dir / "results.json", json.dumps(results, indent=2) + "\n")
        return results

    def results(self) -> dict[str, Any]:
        """Headline numbers of the run (after :meth:`fit`)."""
        last = self.history[-1] if self.history else {}
        timed = [m["throughput"] for m in self.history[1:]] or [m["throughput"] for m in self.history]
        out: dict[str, Any] = {
            "params": self.params,
            "macs": self.macs,
            "epochs_done": len(self.history),
            "final_acc": last.get("test_acc"),
            "final_acc_tau0": last.get("test_acc_tau0"),
            "min_acc_tau0_recal": min(
                (m["test_acc_tau0_recal"] for m in self.history if m.get("test_acc_tau0_recal") is not None),
                default=None,
            ),
            "min_acc_tau0": min(
                (m["test_acc_tau0"] for m in self.history if m.get("test_acc_tau0") is not None), default=None
            ),
            "best_acc": self.best_acc,
            "final_loss": last.get("test_loss"),
            "final_train_loss": last.get("train_loss"),
            "final_train_acc": last.get("train_acc"),
            "throughput": sum(timed) / len(timed) if timed else None,
            "train_time": sum(m["epoch_time"] for m in self.history),
            "config_hash": self.config.training_hash(),
            "anneal_steps": self.anneal_steps,
            "total_steps": self.total_steps,
            "anneal_note": self.anneal_note,
            "notes": "; ".join(self.notes) or None,
            # what the runtime switches resolved to on this device (names distinct from the config fields)
            "amp_dtype": str(self.amp_dtype).removeprefix("torch.") if self.use_amp else None,
            "channels_last_used": self.channels_last,
            "compile_mode": self.compile_mode,
            "graph_breaks": _graph_breaks() - self._graph_breaks_before if self.compile_mode else None,
            "world_size": self.world_size,
            "rank_param_spread": getattr(self, "rank_param_spread", None),
        }
        out.update(getattr(self, "probe_headline", {}))
        return out


def _keyed(callbacks: Sequence[Callback]) -> list[tuple[str, Callback]]:
    """Callbacks keyed by class name (``Name``, ``Name#1``, ...) so states survive a changed callback list."""
    counts: dict[str, int] = {}
    out = []
    for cb in callbacks:
        name = type(cb).__name__
        out.append((name if name not in counts else f"{name}#{counts[name]}", cb))
        counts[name] = counts.get(name, 0) + 1
    return out


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np  # noqa: PLC0415

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover
        pass


def _final_probe(trainer: Trainer) -> dict[str, float]:
    """Probe the trained model on up to ``probe_samples`` test images; save the tables to run_dir/probe.

    Returns ``final_acc_frozen(_recal)`` (:func:`frozen_accuracies`) and the headline numbers (means over
    layers,
    :func:`kwlab.instruments.probe.headline`): probe_neg_frac, probe_effective_cells, ...
    (:data:`kwlab.instruments.probe.HEADLINE`). Empty for models without dynamic layers.
    """
    from kwlab.instruments.probe import Probe, headline  # noqa: PLC0415

    model = trainer.model
    if trainer.config.probe_samples <= 0 or next(dynamic_layers(model), None) is None:
        return {}
    batches = max(1, -(-trainer.config.probe_samples // trainer.test_loader.batch_size))
    was_training = model.training
    model.eval()
    try:
        with Probe(model, keep=16) as probe:
            probe.record_loader(trainer.test_loader, max_batches=batches, progress=False)
    finally:
        model.train(was_training)
    if trainer.run_dir is not None and trainer.is_main:
        probe.save(trainer.run_dir / "probe", config=trainer.config)
    return {**frozen_accuracies(trainer, batches), **headline(probe.summary())}


#: Training batches that :func:`recalibrate_batchnorm` runs for ``test_acc_tau0_recal``.
RECALIBRATION_BATCHES = 20


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, loader: Iterable, batches: int) -> nn.Module:
    """Measure every BatchNorm's running statistics again: reset them, then run ``batches`` batches of
    ``loader`` through ``model`` in train mode (cumulative averages, no gradient, the global RNG restored
    afterwards). Returns ``model`` in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.random.fork_rng(devices=[]):
        for i, batch in enumerate(loader):
            if i >= batches:
                break
            model(batch[0] if isinstance(batch, (tuple, list)) else batch)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return model.eval()


def frozen_accuracies(trainer: Trainer, batches: int) -> dict[str, float]:
    """Test accuracy with every dynamic layer's attention frozen to its mean over the first ``batches`` test
    batches (:func:`kwlab.freeze_attention`): the net made static, twice.

    ``final_acc_frozen`` keeps the BatchNorm statistics the net was trained with (dynamic kernels);
    ``final_acc_frozen_recal`` measures them again for the frozen net (:func:`recalibrate_batchnorm`, on a
    copy).
    ``final_acc - final_acc_frozen_recal`` is what the input-dependence of the attention adds (the *dynamic
    gain*); the gap to ``final_acc_frozen`` also counts the stale statistics.
    """
    from kwlab.instruments.freeze import freeze_attention  # noqa: PLC0415

    with freeze_attention(trainer.model, trainer.test_loader, max_batches=batches):
        plain = trainer.evaluate()["test_acc"]
        net = copy.deepcopy(trainer.model)  # keeps the frozen attention
    recalibrate_batchnorm(net, trainer.train_loader, RECALIBRATION_BATCHES)
    return {"final_acc_frozen": plain, "final_acc_frozen_recal": trainer.evaluate(net)["test_acc"]}


def _mismatch(config: RunConfig, stored: dict[str, Any], where: Path) -> str:
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
        try:
            results = json.loads(results_file.read_text())
        except json.JSONDecodeError:
            raise ConfigError(f"{results_file} is not valid JSON; delete it to train the run again") from None
        stored_hash = results.get("config_hash") if isinstance(results, dict) else None
        if stored_hash is not None:
            if stored_hash != config.training_hash():
                raise ConfigError(_mismatch(config, stored_cfg, run_dir))
            return results
    if stored_cfg and config.differences(stored_cfg):
        raise ConfigError(_mismatch(config, stored_cfg, run_dir))
    return results


def fit(
    config: RunConfig,
    run_dir: str | os.PathLike | None = None,
    *,
    callbacks: Iterable[Callback] = (),
    progress: bool = True,
    **kwargs: Any,
) -> dict[str, Any]:
    """Train ``config`` (resuming from ``run_dir``'s checkpoint if any) and return its results.

    A run directory that already holds results.json is not trained again: its results are returned, after
    checking that they belong to ``config`` (see :func:`check_run_dir`).
    """
    if run_dir is not None and (Path(run_dir) / "results.json").exists():
        return check_run_dir(config, run_dir)
    trainer = Trainer(config, run_dir, callbacks=callbacks, progress=progress, **kwargs)
    return trainer.fit()
