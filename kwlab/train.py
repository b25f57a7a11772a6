"""Training runs: a typed :class:`RunConfig`, a :class:`Trainer` and :func:`fit`.

One run = one model trained on one dataset with one recipe. The loop is deliberately plain:

* SGD (momentum, Nesterov off) or AdamW; no weight decay on 1-D parameters (norms, biases), as in
  the official KW code (warehouse cells are >= 2-D and do get weight decay);
* learning rate per iteration: linear warmup from 0 over ``warmup_epochs``, then cosine to ``min_lr``;
* the attention temperature of dynamic layers is set every iteration from
  :class:`kwlab.temperature.TemperatureSchedule` (KW: 1 -> 0 over ``temperature_epochs``);
* AMP (bf16, or fp16 with a grad scaler) and channels_last on CUDA; DDP when launched by torchrun;
* a checkpoint at the end of every epoch (model, optimizer, scheduler, scaler, RNG states, callbacks'
  states, metric history) that resumes the run exactly: the data order of each epoch is a function
  of ``(seed, epoch)`` (see :class:`kwlab.data.DeviceLoader`), so nothing else is needed.

Run directory layout (all files written atomically: tmp file + ``os.replace``)::

    config.json     resolved RunConfig + git revision + environment
    metrics.jsonl   one line per finished epoch
    checkpoint.pt   state after the last finished epoch (torch.load(weights_only=True))
    probe/          the probe's tables on test images after training (dynamic models; kwlab.probe.load)
    probe_history.parquet  probe summaries during training (when probe_every > 0)
    results.json    written last: the run is finished when it exists

Temperature span for short runs. KW anneals tau from 1 to 0 over ``temperature_epochs`` (official: 20
of 300 epochs; 15 of 150 for MobileNetV2). With ``temperature_epochs=None`` (default) kwlab uses
``min(official, 0.25 * epochs)``: the official span on long runs, a quarter of the run on short ones.
Scaling the official *fraction* (1/15) to a 5-epoch run anneals within a third of an epoch, and KW
then stays near chance; a quarter of the run keeps the one-hot-init phase long enough.

Explained in notebooks/03_train_cifar.ipynb.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import platform
import random
import time
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import Tensor, nn

from .callbacks import Callback
from .layers.base import set_temperature
from .models import RESNET_PRESETS
from .temperature import TemperatureSchedule
from .utils import git_revision

__all__ = ["RunConfig", "Trainer", "fit", "build_model", "count_macs", "git_revision", "atomic_write_text",
           "atomic_torch_save", "ConfigError", "METHODS", "PRESETS"]

METHODS = ("static", "kw", "condconv", "dyconv", "odconv", "kerneldna")
PRESETS = tuple(RESNET_PRESETS)  # every arch accepts a subset; create_model says which
SHARING = ("layer", "stage", "network")
ATTENTIONS = ("caf", "caf_noinit", "softmax", "sigmoid")
OPTIMIZERS = ("sgd", "adamw")
DEVICES = ("auto", "cpu", "cuda")
# method -> (temperature start, end, official anneal epochs)
_TEMPERATURE = {"kw": (1.0, 0.0, 20.0), "dyconv": (30.0, 1.0, 10.0), "odconv": (30.0, 1.0, 10.0)}
_KW_FIELDS = ("preset", "budget", "cell_in", "cell_out", "sharing", "attention_norm", "spatial_partition", "zero_cell")
_DYNAMIC_FIELDS = ("attention", "reduction")


class ConfigError(ValueError):
    """A run or sweep configuration is invalid (raised before any training starts)."""


@dataclass
class RunConfig:
    """Everything that defines one training run (saved as config.json in the run directory).

    Model: ``arch``, ``method`` ("static" or a dynamic method), ``preset`` ("1/4x".."4x") and its
    overrides ``budget``, ``cell_in``, ``cell_out``, ``sharing``, ``attention``, ``reduction`` (None = the
    preset's value), ``drop_path_rate``, ``model_kwargs`` (extra keyword arguments of create_model).
    Data: ``data`` ("synthetic", "cifar10", "cifar100" or an ImageFolder path), ``data_root``,
    ``image_size``, ``classes``, ``train_samples``/``test_samples`` (caps), ``augment``.
    Optimisation: ``epochs``, ``batch_size`` (global), ``optimizer`` ("sgd"|"adamw"), ``lr``, ``momentum``,
    ``weight_decay``, ``label_smoothing``, ``warmup_epochs``, ``min_lr``, ``temperature_epochs`` (None:
    ``min(official, 0.25 * epochs)``), ``temperature_start``/``temperature_end`` (None: the method's).
    Runtime: ``seed``, ``device`` ("auto"|"cpu"|"cuda"), ``amp``, ``channels_last`` (CUDA only),
    ``probe_every`` (training steps between probe recordings; 0 = off), ``probe_samples``, ``checkpoint`` (keep the
    final checkpoint), ``recipe`` (name of the recipe the fields came from; informational).
    """

    arch: str = "resnet20_cifar"
    method: str = "static"
    preset: str | None = None
    budget: float | None = None
    cell_in: float | None = None
    cell_out: float | None = None
    sharing: str | None = None
    attention_norm: str | None = None      # KW: "batch" (official), "layer" or "none"
    spatial_partition: bool | None = None  # KW: cut kernels into 1x1 spatial cells (official: True)
    zero_cell: bool | None = None          # KW: the extra zero-cell slot (official: True)
    attention: str | None = None
    reduction: float | None = None
    drop_path_rate: float = 0.0
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    data: str = "synthetic"
    data_root: str | None = None
    image_size: int | None = None
    classes: str | None = None
    train_samples: int | None = None
    test_samples: int | None = None
    augment: bool = True
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    warmup_epochs: float = 0.0
    min_lr: float = 0.0
    temperature_epochs: float | None = None
    temperature_start: float | None = None
    temperature_end: float | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    probe_every: int = 0
    probe_samples: int = 512
    checkpoint: bool = True
    recipe: str | None = None

    # ------------------------------------------------------------------ construction and validation
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, base: "RunConfig | None" = None) -> "RunConfig":
        """Build a config from ``values`` (type-checked; ``recipe`` fills the fields not given).

        Raises:
            ConfigError: unknown field (with the closest name), wrong type, or impossible combination.
        """
        values = dict(values)
        start = asdict(base) if base is not None else {}
        recipe = values.get("recipe", start.get("recipe"))
        merged: dict[str, Any] = {}
        if recipe is not None and "recipe" in values:
            from .recipes import get_recipe  # noqa: PLC0415

            try:
                merged.update(get_recipe(str(recipe)))
            except ValueError as err:
                raise ConfigError(str(err)) from None
        merged = {**start, **merged, **values}
        hints = typing.get_type_hints(cls)
        names = cls.field_names()
        for key in merged:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"unknown config field {key!r}{hint} (fields: {', '.join(names)})")
        coerced = {k: _coerce(k, v, hints[k]) for k, v in merged.items()}
        config = cls(**coerced)
        config.validate()
        return config

    @classmethod
    def from_recipe(cls, name: str, **overrides: Any) -> "RunConfig":
        """Config of recipe ``name`` with ``overrides`` applied."""
        return cls.from_dict({"recipe": name, **overrides})

    def replace(self, **changes: Any) -> "RunConfig":
        """A copy with ``changes`` applied (type-checked and validated)."""
        return RunConfig.from_dict(changes, base=self)

    def validate(self) -> None:
        """Check allowed values and combinations; raise :class:`ConfigError` naming the field."""
        _choice("method", self.method, METHODS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("device", self.device, DEVICES)
        if self.preset is not None:
            _choice("preset", self.preset, PRESETS)
        if self.sharing is not None:
            _choice("sharing", self.sharing, SHARING)
        if self.attention is not None:
            _choice("attention", self.attention, ATTENTIONS)
        if self.attention_norm is not None:
            _choice("attention_norm", self.attention_norm, ("batch", "layer", "none"))
        if self.method != "kw":
            given = [f for f in _KW_FIELDS if getattr(self, f) is not None]
            if given:
                raise ConfigError(f"{', '.join(f'{f}={getattr(self, f)!r}' for f in given)} only apply to "
                                  f"method='kw' (got method={self.method!r}); remove them or set method='kw'")
        if self.method == "static":
            given = [f for f in _DYNAMIC_FIELDS if getattr(self, f) is not None]
            if given:
                raise ConfigError(f"{', '.join(given)} only apply to dynamic methods (got method='static')")
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr}
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{name} must be > 0, got {value}")
        nonneg = {"weight_decay": self.weight_decay, "warmup_epochs": self.warmup_epochs, "min_lr": self.min_lr,
                  "drop_path_rate": self.drop_path_rate, "probe_every": self.probe_every,
                  "momentum": self.momentum}
        for name, value in nonneg.items():
            if value < 0:
                raise ConfigError(f"{name} must be >= 0, got {value}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.warmup_epochs > self.epochs:
            raise ConfigError(f"warmup_epochs={self.warmup_epochs} exceeds epochs={self.epochs}")
        if self.temperature_epochs is not None and self.temperature_epochs < 0:
            raise ConfigError(f"temperature_epochs must be >= 0, got {self.temperature_epochs}")
        for name in ("train_samples", "test_samples", "image_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1 (or null), got {value}")
        if self.budget is not None and self.budget <= 0:
            raise ConfigError(f"budget must be > 0, got {self.budget}")

    # ------------------------------------------------------------------ derived values
    def resolved_temperature(self) -> tuple[float, float, float] | None:
        """``(start, end, epochs)`` of the temperature anneal, or None when the method has none."""
        if self.method not in _TEMPERATURE:
            return None
        start, end, official = _TEMPERATURE[self.method]
        if self.method == "kw":
            official = _official_temperature_epochs(self.arch, official)
        span = self.temperature_epochs if self.temperature_epochs is not None else min(official, 0.25 * self.epochs)
        start = self.temperature_start if self.temperature_start is not None else start
        end = self.temperature_end if self.temperature_end is not None else end
        return start, end, float(span)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _official_temperature_epochs(arch: str, default: float) -> float:
    """The registry's official KW anneal span for ``arch`` (ResNet/ConvNeXt 20, MobileNetV2 15)."""
    if ":" not in arch:
        try:
            from .models import model_entry  # noqa: PLC0415

            return float(model_entry(arch).temperature_epochs)
        except (ImportError, ValueError, KeyError):
            pass
    return 15.0 if arch.startswith("mobilenetv2") else default


def _choice(name: str, value: Any, allowed: Sequence[str]) -> None:
    if value not in allowed:
        close = difflib.get_close_matches(str(value), allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{name}={value!r} is not allowed{hint}; allowed: {list(allowed)}")


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against the field's type hint; ints are accepted for floats."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(name, value, arg)
            except ConfigError as err:
                errors.append(err)
        raise ConfigError(f"{name}={value!r} has type {type(value).__name__}; expected "
                          f"{' or '.join(_type_name(a) if a is not type(None) else 'null' for a in args)}")
    if hint is Any:
        return value
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name}={value!r} has type {type(value).__name__}; expected a mapping")
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - no other field types
        return value
    raise ConfigError(f"{name}={value!r} has type {type(value).__name__}; expected {_type_name(hint)}")


# ----------------------------------------------------------------------------------------------------
# Small utilities
# ----------------------------------------------------------------------------------------------------

def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new file, never a partial one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through a tmp file + ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _is_dist() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' but torch.cuda.is_available() is False; use device='cpu' or 'auto'")
    return torch.device(name)


def build_model(config: RunConfig, num_classes: int) -> nn.Module:
    """The model of ``config``: ``kwlab.create_model`` for registered archs, or ``"module:function"``.

    A ``"module:function"`` arch is called as ``function(num_classes=..., **model_kwargs)``; for
    ``method="kw"`` the static model is then converted with :func:`kwlab.convert.kernelwarehouse`.
    """
    overrides = {k: getattr(config, k) for k in (*_KW_FIELDS, *_DYNAMIC_FIELDS) if getattr(config, k) is not None}
    if config.drop_path_rate:
        overrides["drop_path_rate"] = config.drop_path_rate
    if ":" in config.arch:
        import importlib  # noqa: PLC0415

        module_name, _, fn_name = config.arch.partition(":")
        try:
            fn = getattr(importlib.import_module(module_name), fn_name)
        except (ImportError, AttributeError) as err:
            raise ConfigError(f"arch={config.arch!r}: cannot import {fn_name!r} from {module_name!r} ({err})") from None
        model = fn(num_classes=num_classes, **config.model_kwargs)
        if config.method == "static":
            return model
        if config.method != "kw":
            raise ConfigError(f"arch={config.arch!r} (a custom builder) supports method 'static' or 'kw', "
                              f"got {config.method!r}")
        from .convert import kernelwarehouse  # noqa: PLC0415

        preset = overrides.pop("preset", None)
        overrides.pop("drop_path_rate", None)
        settings = {**(RESNET_PRESETS[preset] if preset is not None else {}), **overrides}  # generic presets
        return kernelwarehouse(model, **settings)
    from .models import create_model  # noqa: PLC0415

    return create_model(config.arch, method=config.method, num_classes=num_classes, **overrides,
                        **config.model_kwargs)


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass on a zero input of ``input_shape`` (e.g. (1, 3, 32, 32)).

    Counted with :class:`torch.utils.flop_counter.FlopCounterMode` (MACs = FLOPs / 2) in eval mode, so it
    includes the attention and the kernel assembly of dynamic layers.
    """
    from torch.utils.flop_counter import FlopCounterMode  # noqa: PLC0415

    was_training = model.training
    model.eval()
    p = next(model.parameters(), None)
    x = torch.zeros(*input_shape, device=p.device if p is not None else "cpu")
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // 2


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
                             "python_version": random.getstate()[0]}
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
        callbacks: :class:`kwlab.callbacks.Callback` objects (a probe is added when ``probe_every > 0``).
        model: use this model instead of :func:`build_model` (its config fields are then informational).
        data: a preloaded :class:`kwlab.data.ImageData` (default: loaded from ``config``).
        progress: show tqdm bars.

    Attributes:
        model, optimizer, scheduler, history (list of per-epoch metric dicts), step (global iteration),
        epoch (next epoch to run), run_dir, config, data, train_loader, test_loader.
    """

    def __init__(self, config: RunConfig, run_dir: str | os.PathLike | None = None, *,
                 callbacks: Iterable[Callback] = (), model: nn.Module | None = None, data: Any = None,
                 progress: bool = True) -> None:
        from .data import DeviceLoader, load_data  # noqa: PLC0415

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
        self.use_amp = bool(config.amp and cuda)
        self.amp_dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16
        self.channels_last = bool(config.channels_last and cuda)

        self.data = data if data is not None else load_data(
            config.data, root=config.data_root, image_size=config.image_size, train_samples=config.train_samples,
            test_samples=config.test_samples, classes=config.classes, seed=config.seed)
        _seed_everything(config.seed)
        net = model if model is not None else build_model(config, self.data.num_classes)
        net = net.to(self.device)
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.model = net
        self.ddp_model: nn.Module = net
        if _is_dist():
            from torch.nn.parallel import DistributedDataParallel  # noqa: PLC0415

            self.ddp_model = DistributedDataParallel(net, device_ids=[self.device.index] if cuda else None)
        image_dtype = torch.float32
        common = dict(mean=self.data.mean, std=self.data.std, device=self.device, channels_last=self.channels_last,
                      dtype=image_dtype)
        self.train_loader = DeviceLoader(self.data.train_images, self.data.train_labels,
                                         batch_size=min(config.batch_size, len(self.data.train_labels)),
                                         train=True, seed=config.seed, crop_padding=4 if config.augment else 0,
                                         flip=config.augment, rank=self.rank, world_size=self.world_size, **common)
        self.test_loader = DeviceLoader(self.data.test_images, self.data.test_labels,
                                        batch_size=max(config.batch_size, 256), train=False, **common)
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
        self.temperature = None if temp is None else TemperatureSchedule(
            self.iters_per_epoch, epochs=temp[2], start=temp[0], end=temp[1])
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.callbacks: list[Callback] = list(callbacks)
        if config.probe_every > 0 and not any(type(cb).__name__ == "ProbeCallback" for cb in self.callbacks):
            from .probe import ProbeCallback  # noqa: PLC0415 - written alongside; imported lazily

            self.callbacks.append(ProbeCallback(every=config.probe_every))
        self.history: list[dict[str, Any]] = []
        self.step = 0
        self.epoch = 0
        self.best_acc = 0.0
        self.params = sum(p.numel() for p in self.model.parameters())
        self.macs: int | None = None
        self.resumed_from: int | None = None
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if (self.run_dir / "checkpoint.pt").exists():
                self.load_checkpoint(self.run_dir / "checkpoint.pt")
                self.resumed_from = self.epoch
            elif self.is_main:
                self._write_config()

    # ------------------------------------------------------------------ setup helpers
    def _make_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        decay, no_decay = [], []
        for p in self.model.parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 else decay).append(p)
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999))

    def _write_config(self) -> None:
        assert self.run_dir is not None
        info = {"config": self.config.to_dict(), "git_revision": git_revision(),
                "resolved": {"temperature": self.config.resolved_temperature(), "device": str(self.device),
                             "world_size": self.world_size, "num_classes": self.data.num_classes,
                             "image_size": self.data.image_size, "train_samples": len(self.data.train_labels),
                             "test_samples": len(self.data.test_labels), "iters_per_epoch": self.iters_per_epoch,
                             "amp": self.use_amp, "channels_last": self.channels_last},
                "environment": {"torch": torch.__version__, "python": platform.python_version(),
                                "host": platform.node()}}
        atomic_write_text(self.run_dir / "config.json", json.dumps(info, indent=2, default=str) + "\n")

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "rng": _rng_state(self.device), "callbacks": {k: cb.state_dict() for k, cb in _keyed(self.callbacks)},
                "history": json.dumps(self.history), "epoch": self.epoch, "step": self.step,
                "best_acc": self.best_acc}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        for key, cb in _keyed(self.callbacks):
            if key in state["callbacks"]:
                cb.load_state_dict(state["callbacks"][key])
        self.history = json.loads(state["history"])
        self.epoch, self.step, self.best_acc = int(state["epoch"]), int(state["step"]), float(state["best_acc"])
        _set_rng_state(state["rng"], self.device)

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        atomic_torch_save(self.state_dict(), path)

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        self.load_state_dict(torch.load(path, map_location=self.device, weights_only=True))

    # ------------------------------------------------------------------ loop
    def _call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training set; returns loss, acc, lr, temperature, throughput, time."""
        from tqdm.auto import tqdm  # noqa: PLC0415

        self.ddp_model.train()
        self.train_loader.set_epoch(epoch)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        tau = None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        bar = tqdm(self.train_loader, desc=f"epoch {epoch + 1}/{self.config.epochs}", leave=False,
                   disable=not (self.progress and self.is_main), mininterval=0.5)
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
            self._call("on_step_end", self.step, x, y, logits.detach(), float(loss_d) if self.callbacks else math.nan)
            self.step += 1
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - start
        totals = self._all_reduce(torch.stack([loss_sum.float(), correct.float(),
                                               torch.tensor(float(seen), device=self.device)]))
        return {"train_loss": float(totals[0] / totals[2]), "train_acc": float(totals[1] / totals[2]),
                "lr": float(self.optimizer.param_groups[0]["lr"]),
                "temperature": None if tau is None else float(tau),
                "throughput": float(totals[2]) / elapsed, "epoch_time": elapsed}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Loss and accuracy on the test set (sharded over DDP ranks)."""
        self.ddp_model.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        seen = torch.zeros((), device=self.device)
        criterion = nn.CrossEntropyLoss(reduction="sum")
        for i, (x, y) in enumerate(self.test_loader):
            if self.world_size > 1 and i % self.world_size != self.rank:
                continue
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
                logits = self.model(x)
            loss_sum += criterion(logits.float(), y)
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
        totals = self._all_reduce(torch.stack([loss_sum, correct, seen]))
        return {"test_loss": float(totals[0] / totals[2]), "test_acc": float(totals[1] / totals[2])}

    def _all_reduce(self, t: Tensor) -> Tensor:
        if _is_dist():
            import torch.distributed as dist  # noqa: PLC0415

            dist.all_reduce(t)
        return t

    def fit(self) -> dict[str, Any]:
        """Train the remaining epochs; returns the results dict (also saved as results.json)."""
        from tqdm.auto import tqdm  # noqa: PLC0415

        cfg = self.config
        if self.macs is None:
            try:
                self.macs = count_macs(self.model, (1, 3, self.data.image_size, self.data.image_size))
            except Exception:  # a model the flop counter cannot trace: report no MACs rather than fail
                self.macs = -1
        self._call("on_fit_start")
        bar = tqdm(range(self.epoch, cfg.epochs), desc=self.run_dir.name if self.run_dir else "fit",
                   initial=self.epoch, total=cfg.epochs, disable=not (self.progress and self.is_main), leave=False)
        for epoch in bar:
            metrics = {"epoch": epoch + 1, **self.train_epoch(epoch), **self.evaluate()}
            self.best_acc = max(self.best_acc, metrics["test_acc"])
            self.history.append(metrics)
            self._call("on_epoch_end", epoch, metrics)
            self.epoch = epoch + 1
            bar.set_postfix(loss=f"{metrics['train_loss']:.3f}", acc=f"{metrics['test_acc']:.3f}")
            if self.run_dir is not None and self.is_main:
                self.save_checkpoint(self.run_dir / "checkpoint.pt")
                atomic_write_text(self.run_dir / "metrics.jsonl",
                                  "".join(json.dumps(m) + "\n" for m in self.history))
        self._call("on_fit_end")
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
            "params": self.params, "macs": self.macs, "epochs_done": len(self.history),
            "final_acc": last.get("test_acc"), "best_acc": self.best_acc, "final_loss": last.get("test_loss"),
            "final_train_loss": last.get("train_loss"), "final_train_acc": last.get("train_acc"),
            "throughput": sum(timed) / len(timed) if timed else None,
            "train_time": sum(m["epoch_time"] for m in self.history),
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


def _final_probe(trainer: "Trainer") -> dict[str, float]:
    """Probe the trained model on up to ``probe_samples`` test images; save the tables to run_dir/probe.

    Returns the headline numbers (means over layers): probe_neg_frac, probe_effective_cells,
    probe_diversity, probe_class_distance, probe_entropy. Empty for models without dynamic layers.
    """
    from .layers.base import dynamic_layers  # noqa: PLC0415
    from .probe import Probe  # noqa: PLC0415

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
    summary = probe.summary()
    out = {}
    for column in ("neg_frac", "effective_cells", "diversity", "class_distance", "entropy"):
        values = summary[column].dropna()
        out[f"probe_{column}"] = float(values.mean()) if len(values) else float("nan")
    return out


def fit(config: RunConfig, run_dir: str | os.PathLike | None = None, *, callbacks: Iterable[Callback] = (),
        progress: bool = True, **kwargs: Any) -> dict[str, Any]:
    """Train ``config`` (resuming from ``run_dir``'s checkpoint if any) and return its results.

    A run directory that already holds results.json is not trained again: its results are returned.
    """
    if run_dir is not None and (Path(run_dir) / "results.json").exists():
        return json.loads((Path(run_dir) / "results.json").read_text())
    trainer = Trainer(config, run_dir, callbacks=callbacks, progress=progress, **kwargs)
    return trainer.fit()
