"""From a :class:`RunConfig` to the pieces a run trains with: the process and device, the model, the data
loaders, the optimizer and its schedule, the temperature schedule, and the instruments (callbacks).

Each function reads the config and returns one piece; :class:`kwlab.experiments.train.Trainer` calls them in
a fixed order (the order the RNG is drawn in is part of a run's reproducibility: seed, then model, then
loaders). :func:`build_model` is also the one path from a config to its model for the sweep's parameter
budgets and the notebooks.
"""

from __future__ import annotations

import inspect
import math
import os
import random
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from kwlab._compat import import_module
from kwlab.experiments.callbacks import Callback, FinalProbeCallback, ProbeCallback
from kwlab.experiments.config import ConfigError, RunConfig
from kwlab.experiments.data import ImageData, load_data
from kwlab.experiments.loader import DeviceLoader
from kwlab.experiments.scalar_log import ScalarLogCallback
from kwlab.layers.base import dynamic_layers
from kwlab.methods import get_method
from kwlab.methods.temperature import TemperatureSchedule, anneal_note
from kwlab.models import create_model

__all__ = [
    "build_model",
    "check_image_size",
    "describe_builder",
    "graph_breaks",
    "handover_note",
    "instruments",
    "is_distributed",
    "load_config_data",
    "make_loaders",
    "make_train_eval_loader",
    "make_optimizer",
    "make_scheduler",
    "make_temperature",
    "place_model",
    "process_group",
    "resolve_amp",
    "resolve_builder",
    "resolve_device",
    "seed_everything",
    "TRAIN_EVAL_SEED",
    "train_eval_indices",
    "uses_channels_last",
]


# ----------------------------------------------------------------------------------------------------
# Process and device
# ----------------------------------------------------------------------------------------------------


def is_distributed() -> bool:
    """Whether this process is one of several launched by torchrun (``WORLD_SIZE > 1``)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def resolve_device(name: str) -> torch.device:
    """``config.device`` as a device: ``"auto"`` is CUDA where available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' but torch.cuda.is_available() is False; use device='cpu' or 'auto'")
    return torch.device(name)


def process_group(config: RunConfig) -> tuple[int, int, torch.device]:
    """``(rank, world_size, device)`` of this process; under torchrun also joins the process group (NCCL on
    CUDA, gloo on CPU) and selects the local GPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if not is_distributed():
        return rank, world_size, resolve_device(config.device)
    import torch.distributed as dist  # noqa: PLC0415 - only under torchrun

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if config.device != "cpu" and torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world_size, device


def resolve_amp(amp: bool | str, device: torch.device) -> torch.dtype | None:
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


def uses_channels_last(config: RunConfig, device: torch.device) -> bool:
    """``config.channels_last`` resolved: ``"always"``, or True on CUDA."""
    return config.channels_last == "always" or (config.channels_last is True and device.type == "cuda")


def graph_breaks() -> int:
    """Graph breaks torch.compile (dynamo) has counted in this process so far."""
    from torch._dynamo.utils import counters  # noqa: PLC0415 - loads dynamo only for compiled runs

    return int(sum(counters["graph_break"].values()))


def seed_everything(seed: int) -> None:
    """Seed Python's, torch's and numpy's global RNGs."""
    random.seed(seed)
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


# ----------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------


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

        def builder() -> nn.Module:
            model = fn(num_classes=num_classes, **config.model_kwargs)
            if not isinstance(model, nn.Module):
                raise ConfigError(
                    f"arch={config.arch!r}: {describe_builder(fn)} returned {type(model).__name__}, "
                    f"not an nn.Module"
                )
            return model

        return spec.build(builder, preset=preset, options=options, guarded=True)
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
    name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
    try:
        where = inspect.getsourcefile(fn)
    except TypeError:
        where = None
    return f"{name} ({where})" if where else name


def check_image_size(model: nn.Module, config: RunConfig, size: int, device: torch.device) -> None:
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


def place_model(
    net: nn.Module, config: RunConfig, image_size: int, device: torch.device, channels_last: bool
) -> nn.Module:
    """``net`` on ``device`` (channels_last when asked), after checking that it runs at ``image_size``."""
    net = net.to(device)
    check_image_size(net, config, image_size, device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net


def training_model(net: nn.Module, device: torch.device, compile_mode: str | None) -> nn.Module:
    """The module the loop calls: ``net`` wrapped in DDP under torchrun, then in ``torch.compile`` when asked
    (compiled around DDP, so that dynamo splits the graph at its buckets)."""
    wrapped = net
    if is_distributed():
        from torch.nn.parallel import DistributedDataParallel  # noqa: PLC0415 - only under torchrun

        wrapped = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if compile_mode is not None:
        wrapped = torch.compile(wrapped, mode=compile_mode)
    return wrapped


# ----------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------


def load_config_data(config: RunConfig) -> ImageData:
    """The dataset ``config`` names, at its image size and sample counts (:func:`load_data`)."""
    return load_data(
        config.data,
        root=config.data_root,
        image_size=config.image_size,
        train_samples=config.train_samples,
        test_samples=config.test_samples,
        classes=config.classes,
        seed=config.seed,
    )


def make_loaders(
    data: ImageData,
    config: RunConfig,
    device: torch.device,
    channels_last: bool,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[DeviceLoader, DeviceLoader]:
    """The training loader (shuffled per ``(seed, epoch)``, augmented when ``config.augment``, sharded over
    ranks) and the test loader (in order, batches of at least 256)."""
    common = dict(
        mean=data.mean, std=data.std, device=device, channels_last=channels_last, dtype=torch.float32
    )
    train = DeviceLoader(
        data.train_images,
        data.train_labels,
        batch_size=min(config.batch_size, len(data.train_labels)),
        train=True,
        seed=config.seed,
        crop_padding=4 if config.augment else 0,
        flip=config.augment,
        rank=rank,
        world_size=world_size,
        **common,
    )
    test = DeviceLoader(
        data.test_images, data.test_labels, batch_size=max(config.batch_size, 256), train=False, **common
    )
    return train, test


#: Seed of the private generator that picks the clean train accuracy's subset (:func:`train_eval_indices`):
#: a constant, so the subset is the same in every epoch and every run of a sweep, whatever the run's seed.
TRAIN_EVAL_SEED = 20_241_207


def train_eval_indices(train_size: int, test_size: int, samples: int | None) -> Tensor | None:
    """The training images of the clean train accuracy: a fixed random subset, sorted.

    ``samples`` is ``config.train_eval_samples``: None = ``min(train_size, max(test_size, 2000))``, 0 =
    off (returns None), larger than the training set = all of it. The subset is drawn by a generator seeded
    with :data:`TRAIN_EVAL_SEED` (independent of the run's seed; the global RNG is not touched), so it is a
    function of ``(train_size, samples)`` alone.
    """
    k = min(train_size, max(test_size, 2000)) if samples is None else min(int(samples), train_size)
    if k <= 0:
        return None
    g = torch.Generator().manual_seed(TRAIN_EVAL_SEED)
    return torch.randperm(train_size, generator=g)[:k].sort().values


def make_train_eval_loader(
    data: ImageData, config: RunConfig, device: torch.device, channels_last: bool
) -> DeviceLoader | None:
    """The loader of the clean train accuracy: the :func:`train_eval_indices` subset of the training
    images, in order, without augmentation, in batches like the test loader (None when off). Building it
    draws no randomness."""
    idx = train_eval_indices(len(data.train_labels), len(data.test_labels), config.train_eval_samples)
    if idx is None:
        return None
    return DeviceLoader(
        data.train_images[idx],
        data.train_labels[idx],
        batch_size=max(config.batch_size, 256),
        train=False,
        mean=data.mean,
        std=data.std,
        device=device,
        channels_last=channels_last,
        dtype=torch.float32,
    )


# ----------------------------------------------------------------------------------------------------
# Optimizer and schedules
# ----------------------------------------------------------------------------------------------------


def make_optimizer(model: nn.Module, config: RunConfig) -> torch.optim.Optimizer:
    """SGD (Nesterov when ``momentum > 0``) or AdamW; weight decay on parameters of >= 2 dimensions only."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0)
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.999))


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: RunConfig, iters_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Learning rate per iteration: linear warmup from 0 over ``warmup_epochs``, then cosine to ``min_lr``."""
    total = iters_per_epoch * config.epochs
    warmup = int(round(iters_per_epoch * config.warmup_epochs))
    ratio = config.min_lr / config.lr

    def lr_lambda(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return ratio + (1 - ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)


def make_temperature(config: RunConfig, iters_per_epoch: int) -> TemperatureSchedule | None:
    """The attention temperature per optimizer step (None for methods without a temperature)."""
    temp = config.resolved_temperature()
    if temp is None:
        return None
    return TemperatureSchedule(
        iters_per_epoch, epochs=temp[2] or 0.0, start=temp[0], end=temp[1], steps=config.temperature_steps
    )


def handover_note(model: nn.Module, anneal_steps: int | None, total_steps: int) -> str | None:
    """:func:`kwlab.methods.temperature.anneal_note` for a model whose attention is blended with a one-hot
    init pattern (KW's CAF: the handover); None for other models."""
    blending = [
        layer.attention
        for _, layer in dynamic_layers(model)
        if getattr(layer.attention, "function", None) == "caf"
    ]
    if not blending:
        return None
    pattern_init = all(getattr(a, "attention_init", None) == "pattern" for a in blending)
    return anneal_note(anneal_steps, total_steps, pattern_init=pattern_init)


# ----------------------------------------------------------------------------------------------------
# Instruments
# ----------------------------------------------------------------------------------------------------


def instruments(
    config: RunConfig, model: nn.Module, callbacks: Iterable[Callback] = ()
) -> tuple[list[Callback], list[str]]:
    """``callbacks`` plus the instruments the config asks for, and notes on those that do not apply.

    * ``probe_every > 0``: a :class:`ProbeCallback` (unless one is given), for models with dynamic layers;
    * ``probe_samples > 0``: a :class:`FinalProbeCallback` for models with dynamic layers;
    * ``log_to``: a :class:`kwlab.experiments.scalar_log.ScalarLogCallback`, last (it logs the final probe).
    """
    out = list(callbacks)
    notes: list[str] = []
    dynamic = next(dynamic_layers(model), None) is not None
    if config.probe_every > 0 and not any(type(cb).__name__ == "ProbeCallback" for cb in out):
        if dynamic:
            out.append(ProbeCallback(every=config.probe_every))
        else:
            notes.append(
                f"probe_every={config.probe_every} skipped: the {config.method} model has no dynamic "
                f"layers to probe"
            )
    if config.probe_samples > 0 and dynamic:
        out.append(FinalProbeCallback(config.probe_samples))
    if config.log_to:
        out.append(ScalarLogCallback(config.log_to))
    return out, notes
