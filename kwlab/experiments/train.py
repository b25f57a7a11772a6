"""Training runs: a typed :class:`RunConfig`, a :class:`Trainer` and :func:`fit`.

One run = one model trained on one dataset with one recipe. The loop is deliberately plain:

* SGD (momentum, Nesterov, as timm's "sgd" in the official code) or AdamW; no weight decay on 1-D parameters
  (norms, biases), as in the official KW code (warehouse cells are >= 2-D and do get weight decay);
* learning rate per iteration: linear warmup from 0 over ``warmup_epochs``, then cosine to ``min_lr``; the
  attention temperature set every iteration (:class:`kwlab.methods.temperature.TemperatureSchedule`);
* AMP (bf16, or fp16 with a grad scaler) and channels_last on CUDA by default, on CPU when asked explicitly
  (``amp="bf16"``, ``channels_last="always"``); ``compile`` wraps the training model in ``torch.compile``
  (graph breaks are counted into the results); DDP when launched by torchrun (see :class:`Trainer`);
* a checkpoint at the end of every epoch (model, optimizer, scheduler, scaler, RNG states, callbacks'
  states, metric history) that resumes the run exactly: the data order of each epoch is a function
  of ``(seed, epoch)`` (see :class:`kwlab.experiments.loader.DeviceLoader`), so nothing else is needed.

Run directory layout (all files written atomically: tmp file + ``os.replace``)::

    config.json     resolved RunConfig + git revision + environment
    metrics.jsonl   one line per finished epoch (train_acc: running mean over the augmented training
                    batches; train_acc_clean: the clean train accuracy, see below)
    checkpoint.pt   state after the last finished epoch (torch.load(weights_only=True))
    model.safetensors  the trained model's state_dict (temperatures included), written beside the final
                    checkpoint.pt when it is kept (``checkpoint: true``; safetensors.torch.load_file)
    probe/          the probe's tables on test images after training (dynamic models;
                    kwlab.experiments.callbacks.FinalProbeCallback; read with kwlab.instruments.load)
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

Clean train accuracy. ``train_acc`` is a running mean over the epoch's augmented batches while the weights
move, so it cannot say whether a net is capacity-bound. After every epoch the trainer also measures
``train_acc_clean`` (:func:`kwlab.experiments.accuracies.clean_train_accuracy`): eval mode, no augmentation,
the evaluation temperature, on a fixed subset of the training set (``train_eval_samples`` images, the same
in every epoch and every run: :func:`kwlab.experiments.setup.train_eval_indices`). It reads no RNG and
changes no state, so training is bit-identical with it on or off; the results keep its last value as
``final_train_acc_clean``.

The pieces of a run come from :mod:`kwlab.experiments.setup` (config -> device, model, loaders, optimizer,
schedules, callbacks); the run directory's records from :mod:`kwlab.experiments.rundir`; the accuracies
beyond the plain one from :mod:`kwlab.experiments.accuracies`. This module holds the loop.

Explained in notebooks/03_train_cifar.ipynb.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kwlab.experiments import setup
from kwlab.experiments.accuracies import (
    NONFINITE_COLUMNS,
    clean_train_accuracy,
    finite,
    nan_min,
    nonfinite_notes,
    tau0_accuracies,
)
from kwlab.experiments.callbacks import Callback
from kwlab.experiments.columns import Column
from kwlab.experiments.config import MAX_ANNEAL_FACTOR
from kwlab.experiments.config import ConfigError as _ConfigError
from kwlab.experiments.config import RunConfig as _RunConfig
from kwlab.experiments.rundir import (
    RunContext,
    hold_run_dir,
    keyed_callbacks,
    mismatch_message,
    rng_state,
    set_rng_state,
    write_config_record,
    write_model_safetensors,
)
from kwlab.experiments.rundir import (
    check_run_dir as _check_run_dir,
)
from kwlab.experiments.setup import (
    build_model as _build_model,
)
from kwlab.experiments.setup import (
    describe_builder as _describe_builder,
)
from kwlab.experiments.setup import (
    graph_breaks,
    is_distributed,
)
from kwlab.experiments.setup import (
    resolve_builder as _resolve_builder,
)
from kwlab.layers.base import set_temperature
from kwlab.logs import get_logger
from kwlab.utils import (
    CheckpointError,
    atomic_torch_save,
    atomic_write_text,
    count_macs,
    load_torch_file,
    moved_names,
)
from kwlab.utils import progress_bar as tqdm

_log = get_logger("train")

__all__ = [
    "TRAINER_COLUMNS",
    "Trainer",
    "fit",
]

#: Public names that lived here once -> their one home; importing one from here raises an error naming it.
__getattr__ = moved_names(
    __name__,
    {
        "RunConfig": "kwlab.experiments",
        "build_model": "kwlab.experiments",
        "check_run_dir": "kwlab.experiments.rundir",
        "resolve_builder": "kwlab.experiments.setup",
        "ConfigError": "kwlab.experiments",
        "describe_builder": "kwlab.experiments.setup",
        "frozen_accuracies": "kwlab.experiments.accuracies",
        "recalibrate_batchnorm": "kwlab.experiments.accuracies",
        "RECALIBRATION_BATCHES": "kwlab.experiments.accuracies",
    },
)


#: The keys :meth:`Trainer.results` writes, in the order it writes them (the callbacks' own, e.g.
#: :attr:`FinalProbeCallback.columns <kwlab.experiments.callbacks.FinalProbeCallback>`, come before the
#: last two, :func:`~kwlab.experiments.accuracies.nonfinite_notes`'): the declaration the results tables
#: derive from (:mod:`kwlab.experiments.columns`).
TRAINER_COLUMNS = (
    Column("params", "budget", "parameters"),
    Column("macs", "budget", "MACs"),
    Column("epochs_done", "record", "epochs done"),
    Column("final_acc", "metric", "final test accuracy", True),
    Column("final_acc_tau0", "metric", "final test accuracy at tau = 0", True),
    Column(
        "min_acc_tau0_recal", "metric", "lowest test accuracy at tau = 0 after BatchNorm recalibration", True
    ),
    Column("min_acc_tau0", "metric", "lowest test accuracy at tau = 0", True),
    Column("best_acc", "metric", "best test accuracy", True),
    Column("final_loss", "metric", "final test loss", False),
    Column("final_train_loss", "metric", "final train loss", False),
    Column("final_train_acc", "metric", "final train accuracy (augmented)", True),
    Column("final_train_acc_clean", "metric", "final train accuracy (clean)", True),
    Column("throughput", "metric", "throughput (images/s)", True),
    Column("train_time", "metric", "training time (s)", False),
    Column("config_hash", "record", "config hash"),
    Column("anneal_steps", "budget", "anneal steps"),
    Column("total_steps", "budget", "optimizer steps"),
    Column("anneal_note", "provenance", "anneal note"),
    Column("notes", "record", "notes"),
    Column("amp_dtype", "record", "autocast dtype used"),
    Column("channels_last_used", "record", "channels_last used"),
    Column("compile_mode", "record", "torch.compile mode used"),
    Column("graph_breaks", "record", "graph breaks"),
    Column("world_size", "record", "processes"),
    Column("rank_param_spread", "record", "parameter spread across ranks"),
    *NONFINITE_COLUMNS,
)


class Trainer:
    """Trains ``config``'s model; resumes from ``run_dir/checkpoint.pt`` when it exists.

    Args:
        config: the run.
        run_dir: where config, metrics, checkpoints and results go (None: keep everything in memory).
        callbacks: :class:`kwlab.experiments.callbacks.Callback` objects (the instruments the config asks for
            are added after them: :func:`kwlab.experiments.setup.instruments`).
        model: use this model instead of :func:`build_model` (its config fields are then informational).
        data: a preloaded :class:`kwlab.experiments.data.ImageData` (default: loaded from ``config``).
        progress: show tqdm bars.
        anneal_warning: print the short-anneal warning (:attr:`anneal_note`; kept in the results either
            way). A sweep turns it off and prints one warning for all its runs.

    Attributes:
        model, optimizer, scheduler, history (list of per-epoch metric dicts), step (global iteration),
        epoch (next epoch to run), run_dir, config, data, train_loader, test_loader, train_eval_loader.
    """

    def __init__(
        self,
        config: _RunConfig,
        run_dir: str | os.PathLike | None = None,
        *,
        callbacks: Iterable[Callback] = (),
        model: nn.Module | None = None,
        data: Any = None,
        progress: bool = True,
        anneal_warning: bool = True,
    ) -> None:
        config.validate()
        self.config, self.progress = config, progress
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.rank, self.world_size, self.device = setup.process_group(config)
        self.is_main = self.rank == 0
        amp_dtype = setup.resolve_amp(config.amp, self.device)
        self.use_amp = amp_dtype is not None
        self.amp_dtype = amp_dtype if amp_dtype is not None else torch.bfloat16  # (unused when off)
        self.channels_last = setup.uses_channels_last(config, self.device)
        self.compile_mode: str | None = ("default" if config.compile is True else config.compile) or None
        # the order of the next steps is the order the RNG is drawn in: data, seed, model, loaders
        self.data = data if data is not None else setup.load_config_data(config)
        setup.seed_everything(config.seed)
        custom = model is None and ":" in config.arch
        self.builder = _describe_builder(_resolve_builder(config.arch)) if custom else None
        if self.builder is not None and self.is_main:
            _log.info("arch %r -> %s", config.arch, self.builder)
        net = model if model is not None else _build_model(config, self.data.num_classes)
        self.model = setup.place_model(net, config, self.data.image_size, self.device, self.channels_last)
        self._graph_breaks_before = graph_breaks() if self.compile_mode is not None else 0
        self.ddp_model: nn.Module = setup.training_model(self.model, self.device, self.compile_mode)
        self.train_loader, self.test_loader = setup.make_loaders(
            self.data, config, self.device, self.channels_last, self.rank, self.world_size
        )
        #: the fixed training subset of the clean train accuracy (None when ``train_eval_samples=0``)
        self.train_eval_loader = setup.make_train_eval_loader(
            self.data, config, self.device, self.channels_last
        )
        self.iters_per_epoch = len(self.train_loader)
        self.optimizer = setup.make_optimizer(self.model, config)
        self.scheduler = setup.make_scheduler(self.optimizer, config, self.iters_per_epoch)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.total_steps = self.iters_per_epoch * config.epochs
        self.anneal_steps = config.anneal_steps(self.iters_per_epoch)
        _check_anneal_span(config, self.anneal_steps, self.total_steps)
        self.temperature = setup.make_temperature(config, self.iters_per_epoch)
        self.anneal_note = setup.handover_note(self.model, self.anneal_steps, self.total_steps)
        if self.anneal_note and self.is_main and progress and anneal_warning:
            _log.warning("%s", self.anneal_note)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        #: notes: instruments the config asks for that do not apply to this run (recorded in config.json)
        self.callbacks, self.notes = setup.instruments(config, self.model, callbacks)
        for note in self.notes if self.is_main else ():
            _log.info("%s", note)
        self.history: list[dict[str, Any]] = []
        self.step, self.epoch, self.best_acc = 0, 0, 0.0
        self.params = sum(p.numel() for p in self.model.parameters())
        self.macs: int | None = None
        self.resumed_from: int | None = None
        if self.run_dir is not None:
            self._open_run_dir()

    def _open_run_dir(self) -> None:
        """Check the directory belongs to this config, resume from its checkpoint, write config.json."""
        assert self.run_dir is not None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        _check_run_dir(self.config, self.run_dir)
        if (self.run_dir / "checkpoint.pt").exists():
            self.load_checkpoint(self.run_dir / "checkpoint.pt")
            self.resumed_from = self.epoch
        if self.is_main:
            write_config_record(self.run_context())

    def run_context(self) -> RunContext:
        """What the run's records need (:class:`kwlab.experiments.rundir.RunContext`), read off this
        trainer now."""
        data = self.data
        return RunContext(
            config=self.config,
            run_dir=self.run_dir,
            resumed=self.resumed_from is not None,
            builder=self.builder,
            anneal_steps=self.anneal_steps,
            total_steps=self.total_steps,
            device=str(self.device),
            world_size=self.world_size,
            num_classes=data.num_classes,
            data=data.name,
            image_size=data.image_size,
            train_samples=len(data.train_labels),
            test_samples=len(data.test_labels),
            train_eval_samples=self.train_eval_loader.num_samples
            if self.train_eval_loader is not None
            else 0,
            iters_per_epoch=self.iters_per_epoch,
            amp=self.use_amp,
            amp_dtype=str(self.amp_dtype).removeprefix("torch.") if self.use_amp else None,
            channels_last=self.channels_last,
            notes=tuple(self.notes),
            compile=self.compile_mode,
        )

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything an exact resume needs (a callback with an empty state stores nothing)."""
        states = {k: cb.state_dict() for k, cb in keyed_callbacks(self.callbacks)}
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(self.device),
            "callbacks": {k: state for k, state in states.items() if state},
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
        for key, cb in keyed_callbacks(self.callbacks):
            if key in state["callbacks"]:
                cb.load_state_dict(state["callbacks"][key])
        self.history = json.loads(state["history"])
        self.epoch, self.step, self.best_acc = (
            int(state["epoch"]),
            int(state["step"]),
            float(state["best_acc"]),
        )
        set_rng_state(state["rng"], self.device)

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
            raise _ConfigError(mismatch_message(self.config, stored_config, Path(path).parent))
        self.load_state_dict(state)

    # ------------------------------------------------------------------ loop
    def _call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    def _wants_step_loss(self) -> bool:
        """Whether a callback reads ``on_step_end`` (the loss is then read from the device every step)."""
        return any(
            getattr(type(cb), "on_step_end", None) is not Callback.on_step_end for cb in self.callbacks
        )

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training set; returns loss, acc, lr, temperature, throughput, time."""
        self.ddp_model.train()
        self.train_loader.set_epoch(epoch)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        tau = None
        wants_loss = self._wants_step_loss()
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
                "on_step_end", self.step, x, y, logits.detach(), float(loss_d) if wants_loss else math.nan
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

    def evaluate(self, model: nn.Module | None = None) -> dict[str, float]:
        """Loss and accuracy on the test set (sharded over DDP ranks), of ``model`` (default: the trained
        model)."""
        loss, acc = self.loss_and_accuracy(self.test_loader, model)
        return {"test_loss": loss, "test_acc": acc}

    @torch.no_grad()
    def loss_and_accuracy(self, loader: Iterable, model: nn.Module | None = None) -> tuple[float, float]:
        """Mean loss and accuracy of ``model`` (default: the trained model) over ``loader``'s batches, in
        eval mode at the model's current temperature, under the run's autocast; under DDP each rank takes
        every ``world_size``-th batch and the sums are all-reduced. Leaves the model in eval mode."""
        net = self.model if model is None else model
        net.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        seen = torch.zeros((), device=self.device)
        nonfinite = torch.zeros((), device=self.device)  # samples whose logits hold NaN or inf
        criterion = nn.CrossEntropyLoss(reduction="sum")
        for i, (x, y) in enumerate(loader):
            if self.world_size > 1 and i % self.world_size != self.rank:
                continue
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
                logits = net(x)
            loss_sum += criterion(logits.float(), y)
            correct += (logits.argmax(1) == y).sum()
            nonfinite += (~torch.isfinite(logits).all(1)).sum()
            seen += len(y)
        totals = self._all_reduce(torch.stack([loss_sum, correct, seen, nonfinite]))
        # an accuracy read from NaN logits is the argmax of NaN, not a number: NaN (see nonfinite_notes)
        acc = float(totals[1] / totals[2]) if totals[3] == 0 else math.nan
        return float(totals[0] / totals[2]), acc

    def _all_reduce(self, t: Tensor) -> Tensor:
        if is_distributed():
            import torch.distributed as dist  # noqa: PLC0415 - only under torchrun

            dist.all_reduce(t)
        return t

    def _rank_param_spread(self) -> float | None:
        """Under DDP: max - min over ranks of a parameter fingerprint (0.0 when every rank holds the same
        weights, as DDP's gradient all-reduce should keep them); None in a single process."""
        if not is_distributed():
            return None
        import torch.distributed as dist  # noqa: PLC0415 - only under torchrun

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
            metrics.update(clean_train_accuracy(self))
            metrics.update(tau0_accuracies(self, metrics))
            if not math.isnan(metrics["test_acc"]):  # max(0.3, nan) is 0.3 but max(0.0, nan) is 0.0
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
        self._call("on_fit_end")  # the final probe (FinalProbeCallback) runs here, last
        self.rank_param_spread = self._rank_param_spread()
        results = self.results()
        if self.run_dir is not None and self.is_main:
            if not cfg.checkpoint and (self.run_dir / "checkpoint.pt").exists():
                (self.run_dir / "checkpoint.pt").unlink()
            if cfg.checkpoint:
                write_model_safetensors(
                    self.model, self.run_dir / "model.safetensors", {"config_hash": cfg.training_hash()}
                )
            atomic_write_text(self.run_dir / "results.json", json.dumps(results, indent=2) + "\n")
        return results

    def results(self) -> dict[str, Any]:
        """Headline numbers of the run (after :meth:`fit`; declared in :data:`TRAINER_COLUMNS`), then the
        callbacks' fields (:meth:`Callback.result_fields`, e.g. the final probe's)."""
        last = self.history[-1] if self.history else {}
        timed = [m["throughput"] for m in self.history[1:]] or [m["throughput"] for m in self.history]
        out: dict[str, Any] = {
            "params": self.params,
            "macs": self.macs,
            "epochs_done": len(self.history),
            "final_acc": last.get("test_acc"),
            "final_acc_tau0": last.get("test_acc_tau0"),
            "min_acc_tau0_recal": nan_min(m.get("test_acc_tau0_recal") for m in self.history),
            "min_acc_tau0": nan_min(m.get("test_acc_tau0") for m in self.history),
            "best_acc": self.best_acc if any(finite(m.get("test_acc")) for m in self.history) else math.nan,
            "final_loss": last.get("test_loss"),
            "final_train_loss": last.get("train_loss"),
            "final_train_acc": last.get("train_acc"),
            "final_train_acc_clean": last.get("train_acc_clean"),
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
            "graph_breaks": graph_breaks() - self._graph_breaks_before if self.compile_mode else None,
            "world_size": self.world_size,
            "rank_param_spread": getattr(self, "rank_param_spread", None),
        }
        for cb in self.callbacks:
            fields = getattr(cb, "result_fields", None)
            if fields is not None:
                out.update(fields(self))
        return nonfinite_notes(out, self.history, self.model)


def _check_anneal_span(config: _RunConfig, anneal_steps: int | None, total_steps: int) -> None:
    """Refuse ``temperature_steps`` more than :data:`MAX_ANNEAL_FACTOR` x the run's optimizer steps (before
    the first step; ``temperature_epochs`` is checked by :meth:`RunConfig.validate`)."""
    if config.temperature_steps is None or anneal_steps is None:
        return
    if anneal_steps > MAX_ANNEAL_FACTOR * max(total_steps, 1):
        raise _ConfigError(
            f"temperature_steps={config.temperature_steps} is more than {MAX_ANNEAL_FACTOR}x the run "
            f"({total_steps} optimizer steps): tau would barely move; allowed: 0 <= temperature_steps <= "
            f"{MAX_ANNEAL_FACTOR * total_steps}"
        )


def fit(
    config: _RunConfig,
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
    with hold_run_dir(run_dir):  # a directory another live process writes is refused
        if run_dir is not None and (Path(run_dir) / "results.json").exists():
            return _check_run_dir(config, run_dir)
        trainer = Trainer(config, run_dir, callbacks=callbacks, progress=progress, **kwargs)
        return trainer.fit()
