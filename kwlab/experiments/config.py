"""The typed run configuration: :class:`RunConfig`, its coercion and validation, and :class:`ConfigError`.

A config is checked before any work starts: every field's type, the allowed values (method choices come from
the method table, :data:`kwlab.methods.METHODS`), and combinations (a KW-only field with another method).
Explained in notebooks/03_train_cifar.ipynb.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from kwlab.experiments.recipes import get_recipe
from kwlab.methods import METHODS, get_method, method_fields, option_owner, take_knobs
from kwlab.models import model_entry
from kwlab.utils import suggest

__all__ = [
    "RunConfig",
    "ConfigError",
    "OPTIMIZERS",
    "DEVICES",
    "AMP_MODES",
    "CHANNELS_LAST_MODES",
    "COMPILE_MODES",
    "LOG_TARGETS",
    "RUNTIME_FIELDS",
    "LATER_FIELDS",
    "BLOCKED_ARCH_MODULES",
    "log_targets",
]

OPTIMIZERS = ("sgd", "adamw")
DEVICES = ("auto", "cpu", "cuda")
#: ``amp``: True (default) = autocast where it pays, i.e. on CUDA (bf16 where supported, else fp16 with a grad
#: scaler) and off on CPU; "bf16" = bf16 autocast on every device (CPU included); "fp16" = fp16 autocast with
#: a grad scaler (CUDA only); False = fp32.
AMP_MODES = (True, False, "bf16", "fp16")
#: ``channels_last``: True (default) = on CUDA only; "always" = on every device (CPU included); False = off.
CHANNELS_LAST_MODES = (True, False, "always")
#: ``compile``: False (default) = eager; True or a ``torch.compile`` mode = the training step's model is
#: compiled (inductor) on every device.
COMPILE_MODES = (False, True, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
#: ``log_to``: where the trainer also logs its per-epoch scalars (None: nowhere): one of these or a list of
#: them (:mod:`kwlab.experiments.scalar_log`).
LOG_TARGETS = ("tensorboard", "wandb")

#: Fields left out of :meth:`RunConfig.training_hash`: they change where a run executes or what is kept on
#: disk, not what is trained or reported. ``checkpoint`` (keep the final checkpoint), ``device`` (the
#: resolved device is recorded in config.json), ``compile`` (the same model and math, other kernels),
#: ``probe_every`` (the training probe only reads activations:
#: it consumes no randomness and changes no weight; a changed value applies from the resumed step on) and
#: ``recipe`` (informational: the fields it filled are hashed themselves) and ``log_to`` (where the scalars
#: are also logged). Every other field -- including ``probe_samples``, which changes the reported probe
#: numbers -- is hashed.
RUNTIME_FIELDS = ("checkpoint", "device", "compile", "probe_every", "recipe", "log_to")

#: Fields added after results were first committed, with their defaults: a field at its default is left out
#: of :meth:`RunConfig.training_hash` (and of :meth:`RunConfig.training_dict`), so every config written
#: before the field existed keeps its hash (its run directories resume, ``kwlab reproduce`` matches).
LATER_FIELDS: dict[str, Any] = {
    "temperature_steps": None,
    "attention_init": None,
    "train_eval_samples": None,
    "init": None,
    "options": {},
}

#: ``arch="module:function"`` may not name these modules (or their submodules): they run programs, load
#: code or pickles, or reach the interpreter. Sweep files stay trusted input all the same (see build_model).
BLOCKED_ARCH_MODULES = tuple(
    """builtins os posix nt sys subprocess shutil importlib runpy code codeop pickle marshal shelve ctypes
    socket pty multiprocessing concurrent threading signal pdb webbrowser tempfile io pathlib operator
    functools eval exec setuptools pip distutils yaml dill joblib cloudpickle numpy.load torch.hub
    torch.load torch.jit torch.package torch.utils.cpp_extension torch.serialization torch.compiler
    torch._dynamo torch.ops""".split()
)


class ConfigError(ValueError):
    """A run or sweep configuration is invalid (raised before any training starts)."""


@dataclass
class RunConfig:
    """Everything that defines one training run (saved as config.json in the run directory).

    Model: ``arch``, ``method`` ("static" or a dynamic method), ``preset`` ("1/4x".."4x") and its
    overrides ``budget``, ``cell_in``, ``cell_out``, ``sharing``, ``attention``, ``reduction`` (None = the
    preset's value), ``drop_path_rate``, ``model_kwargs`` (extra keyword arguments of create_model).
    Data: ``data`` ("auto", "synthetic", "cifar10", "cifar100" or an ImageFolder path), ``data_root``,
    ``image_size``, ``classes``, ``train_samples``/``test_samples`` (caps), ``augment``.
    Optimisation: ``epochs``, ``batch_size`` (global), ``optimizer`` ("sgd"|"adamw"), ``lr``, ``momentum``,
    ``weight_decay``, ``label_smoothing``, ``warmup_epochs``, ``min_lr`` (0; the official recipes' 1e-6 is set
    by :mod:`kwlab.experiments.recipes`), ``temperature_epochs`` (None: ``min(official, 0.25 * epochs)``) or
    ``temperature_steps`` (the anneal span in optimizer steps; give one of the two),
    ``temperature_start``/``temperature_end`` (anneal positions in
    [0, 1], None: 1 -> 0; each method maps them to its own temperature, see
    :class:`kwlab.layers.TemperatureContract`).
    Which model fields apply to which method: ``kwlab.methods.METHODS[method].config_fields``. Every other
    option of the method's row (``METHODS[method].options``: DY-Conv's ``num_kernels``, a new method's new
    knob) is given the same way, flat (``num_kernels: 8`` in a sweep file, ``--set num_kernels=8``), and held
    in ``options``, checked by the row (its :attr:`~kwlab.methods.Method.options_type`).
    Runtime: ``seed``, ``device`` ("auto"|"cpu"|"cuda"), ``amp`` (:data:`AMP_MODES`: True = CUDA only,
    "bf16" on every device), ``channels_last`` (:data:`CHANNELS_LAST_MODES`: True = CUDA only, "always" on
    every device), ``compile`` (:data:`COMPILE_MODES`: ``torch.compile`` of the training model),
    ``probe_every`` (training steps between probe recordings; 0 = off), ``probe_samples``,
    ``train_eval_samples`` (training images of the clean train accuracy measured after every epoch, a
    fixed subset: :func:`kwlab.experiments.setup.train_eval_indices`; None = ``min(train set,
    max(test set, 2000))``, 0 = off), ``checkpoint``
    (keep the final checkpoint), ``recipe`` (name of the recipe the fields came from; informational),
    ``log_to`` (:data:`LOG_TARGETS`: "tensorboard", "wandb" or a list of them; None = off).
    Floats must be finite; numeric strings (YAML 1.1 reads ``1e-3`` as one) are accepted for float fields.
    :meth:`training_hash` covers every field but :data:`RUNTIME_FIELDS`.
    """

    arch: str = "resnet20_cifar"
    method: str = "static"
    preset: str | None = None
    budget: float | None = None
    cell_in: float | None = None
    cell_out: float | None = None
    sharing: str | None = None
    attention_norm: str | None = None  # KW: "batch" (official), "layer" or "none"
    spatial_partition: bool | None = None  # KW: cut kernels into 1x1 spatial cells (official: True)
    zero_cell: bool | None = None  # KW: the extra zero-cell slot (official: True)
    attention_init: str | None = None  # KW: "official" (default) or kwlab's "pattern" (see KWAttention)
    attention: str | None = None  # KW: ATTENTION_FUNCTIONS; the family: "dynamic" or "constant" (METHODS)
    reduction: float | None = None
    init: str | None = None  # CondConv, DY-Conv, ODConv: "static" (None: copies) or "kaiming" (official)
    drop_path_rate: float = 0.0
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)  # the row's knobs that are not fields
    data: str = "auto"  # CIFAR-10 where found, else synthetic with a notice (data.resolve_auto)
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
    temperature_steps: int | None = None
    temperature_start: float | None = None
    temperature_end: float | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool | str = True
    channels_last: bool | str = True
    compile: bool | str = False
    probe_every: int = 0
    probe_samples: int = 512
    train_eval_samples: int | None = None
    checkpoint: bool = True
    recipe: str | None = None
    log_to: str | list[str] | None = None

    # ------------------------------------------------------------------ construction and validation
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def model_fields(cls) -> tuple[str, ...]:
        """The fields that decide which model is built (the one list; sweeps key models by it): ``arch``,
        ``method``, every method's fields (:func:`kwlab.methods.method_fields`, derived from the method
        table), ``drop_path_rate`` and ``model_kwargs``. The number of classes comes from the data."""
        return ("arch", "method", *method_fields(), "options", "drop_path_rate", "model_kwargs")

    def method_options(self) -> tuple[str | None, dict[str, Any]]:
        """``(preset, options)``: the preset and the other set method fields, as the converter takes them."""
        spec = get_method(self.method)
        options = {k: getattr(self, k) for k in spec.config_fields if getattr(self, k) is not None}
        options.update(self.options)
        return options.pop("preset", None), options

    def model_key(self) -> str:
        """A canonical string of :meth:`model_fields`: equal keys build the same model."""
        return _canonical({k: getattr(self, k) for k in self.model_fields()})

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, base: RunConfig | None = None) -> RunConfig:
        """Build a config from ``values`` (type-checked; ``recipe`` fills the fields not given).

        ``values`` may be any mapping (a dict, ``types.MappingProxyType``, OmegaConf's ``DictConfig`` from a
        Hydra structured config): mappings and sequences inside it become plain dicts and lists.

        Raises:
            ConfigError: unknown field (with the closest name), wrong type, or impossible combination.
        """
        if not isinstance(values, Mapping):
            raise ConfigError(f"values must be a mapping of RunConfig fields, got {type(values).__name__}")
        values = {k: _plain(v) for k, v in values.items()}
        start = asdict(base) if base is not None else {}
        recipe = values.get("recipe", start.get("recipe"))
        merged: dict[str, Any] = {}
        if recipe is not None and "recipe" in values:
            try:
                merged.update(get_recipe(str(recipe)))
            except ValueError as err:
                raise ConfigError(str(err)) from None
        merged = {**start, **merged, **values}
        names = cls.field_names()
        knobs = take_knobs(merged, names)  # a method's knobs given flat: held as its row's options
        if knobs:
            merged["options"] = {**dict(merged.get("options") or {}), **knobs}
        hints = typing.get_type_hints(cls)
        for key in merged:
            if key not in names:
                owner = option_owner(key, merged.get("method"))
                raise ConfigError(
                    f"unknown config field {key!r}.{suggest(key, names)}{owner} (fields: {', '.join(names)})"
                )
        coerced = {k: _coerce(k, v, hints[k]) for k, v in merged.items()}
        config = cls(**coerced)
        config.validate()
        return config

    @classmethod
    def from_recipe(cls, name: str, **overrides: Any) -> RunConfig:
        """Config of recipe ``name`` with ``overrides`` applied."""
        return cls.from_dict({"recipe": name, **overrides})

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with ``changes`` applied (type-checked and validated)."""
        return RunConfig.from_dict(changes, base=self)

    def validate(self) -> None:
        """Check allowed values and combinations; raise :class:`ConfigError` naming the field."""
        _choice("method", self.method, list(METHODS))
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("device", self.device, DEVICES)
        _choice("amp", self.amp, AMP_MODES)
        _choice("channels_last", self.channels_last, CHANNELS_LAST_MODES)
        _choice("compile", self.compile, COMPILE_MODES)
        log_targets(self.log_to)
        spec = get_method(self.method)
        given = [f for f in method_fields() if getattr(self, f) is not None and f not in spec.config_fields]
        if given:
            users = sorted(m.name for m in METHODS.values() if given[0] in m.config_fields)
            if given[0] == "attention" and spec.no_attention:
                raise ConfigError(
                    f"attention={self.attention!r} is not a field of method={self.method!r}: "
                    f"{spec.no_attention} (attention applies to {users})"
                )
            raise ConfigError(
                f"{', '.join(f'{f}={getattr(self, f)!r}' for f in given)}: not a field of "
                f"method={self.method!r} ({given[0]} applies to {users}); the fields of "
                f"{self.method!r} are {list(spec.config_fields)}"
            )
        _check_knobs(self, spec)
        if self.preset is not None:
            arch_presets = _arch_presets(self.arch) if spec.presets == "arch" else None
            try:
                spec.preset_options(self.preset, arch_presets, f" for arch {self.arch!r}")
            except ValueError as err:
                raise ConfigError(str(err)) from None
        _check_arch(self.arch)
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value) and "float" in str(hints[f.name]):
                raise ConfigError(f"{f.name} must be a finite number, got {value}")
        try:  # the method's own rules, from its row (KW: KWOptions; the family: its options type)
            spec.parse_options(self.method_options()[1])
        except (ValueError, TypeError) as err:
            raise ConfigError(str(err)) from None
        for name in ("temperature_start", "temperature_end"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ConfigError(
                    f"{name} must be an anneal position in [0, 1] (1 = start, 0 = end), got {value}"
                )
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr}
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{name} must be > 0, got {value}")
        nonneg = {
            "weight_decay": self.weight_decay,
            "warmup_epochs": self.warmup_epochs,
            "min_lr": self.min_lr,
            "drop_path_rate": self.drop_path_rate,
            "probe_every": self.probe_every,
            "momentum": self.momentum,
        }
        for name, value in nonneg.items():
            if value < 0:
                raise ConfigError(f"{name} must be >= 0, got {value}")
        _check_ranges(self)
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.warmup_epochs > self.epochs:
            raise ConfigError(f"warmup_epochs={self.warmup_epochs} exceeds epochs={self.epochs}")
        if self.temperature_epochs is not None and self.temperature_epochs < 0:
            raise ConfigError(f"temperature_epochs must be >= 0, got {self.temperature_epochs}")
        if self.temperature_steps is not None:
            if self.temperature_steps < 0:
                raise ConfigError(f"temperature_steps must be >= 0, got {self.temperature_steps}")
            if self.temperature_epochs is not None:
                raise ConfigError(
                    f"temperature_epochs={self.temperature_epochs} and "
                    f"temperature_steps={self.temperature_steps} both set the anneal span; give one of them"
                )
        for name in ("train_samples", "test_samples", "image_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1 (or null), got {value}")
        if self.train_eval_samples is not None and (
            isinstance(self.train_eval_samples, bool)
            or not isinstance(self.train_eval_samples, int)
            or self.train_eval_samples < 0
        ):
            raise ConfigError(
                f"train_eval_samples must be an integer >= 0 (training images of the clean train accuracy; "
                f"0 = off, null = the default), got {self.train_eval_samples!r}"
            )

    # ------------------------------------------------------------------ derived values
    def resolved_temperature(self) -> tuple[float, float, float | None] | None:
        """``(start, end, epochs)`` of the anneal position tau, or None when the method has no temperature.

        ``epochs`` is None when ``temperature_steps`` gives the span in optimizer steps instead."""
        contract = get_method(self.method).temperature
        if not contract.active:
            return None
        official = _official_anneal_span(self.arch, self.method)
        span = (
            self.temperature_epochs
            if self.temperature_epochs is not None
            else min(official, 0.25 * self.epochs)
        )
        start = self.temperature_start if self.temperature_start is not None else 1.0
        end = self.temperature_end if self.temperature_end is not None else 0.0
        return start, end, None if self.temperature_steps is not None else float(span)

    def anneal_steps(self, iters_per_epoch: int) -> int | None:
        """The anneal span in optimizer steps for ``iters_per_epoch`` steps an epoch (None: none)."""
        temp = self.resolved_temperature()
        if temp is None:
            return None
        if self.temperature_steps is not None:
            return int(self.temperature_steps)
        return int(round(iters_per_epoch * temp[2]))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def training_dict(self) -> dict[str, Any]:
        """The fields that change what is trained or reported: every field but :data:`RUNTIME_FIELDS` (and
        the :data:`LATER_FIELDS` at their defaults)."""
        return {
            k: v
            for k, v in self.to_dict().items()
            if k not in RUNTIME_FIELDS and not (k in LATER_FIELDS and v == LATER_FIELDS[k])
        }

    def training_hash(self) -> str:
        """SHA-1 (16 hex digits) of :meth:`training_dict`; stored in checkpoint.pt and results.json so a run
        directory is never resumed or reported under another config."""
        text = _canonical(self.training_dict())
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    def differences(self, other: dict[str, Any]) -> list[str]:
        """``["lr: 0.1 (stored) -> 0.2 (now)", ...]`` for the hashed fields where ``other`` (a stored
        config dict) differs from this config."""
        mine = self.training_dict()
        for key, default in LATER_FIELDS.items():
            mine.setdefault(key, default)
        out = []
        for key in mine:
            theirs = other.get(key, LATER_FIELDS.get(key, "<absent>"))
            if _canonical(theirs) != _canonical(mine[key]):
                out.append(f"{key}: {theirs!r} (stored) -> {mine[key]!r} (now)")
        return out


#: The largest ``image_size`` (pixels of a side) a run may ask for: larger sizes are refused before any image
#: is made (100,000 pixels a side would be terabytes of synthetic data).
MAX_IMAGE_SIZE = 4096
#: The seeds a run may use: integers in [0, 2**31) (synthetic data seed their generators with 2 * seed + 1).
MAX_SEED = 2**31 - 1
#: An anneal may be longer than the run (tau then ends before 0; a recipe shortened for a smoke test), but
#: not by more than this factor: at 100x tau moves by 1% in the whole run.
MAX_ANNEAL_FACTOR = 100


def _check_ranges(config: RunConfig) -> None:
    """The range checks of :meth:`RunConfig.validate` that name a field and its allowed values."""
    if not 0 <= config.seed <= MAX_SEED:
        raise ConfigError(f"seed={config.seed!r}: allowed: an integer in [0, {MAX_SEED}]")
    if config.probe_samples < 0:
        raise ConfigError(
            f"probe_samples={config.probe_samples!r}: allowed: an integer >= 0 (images the final probe "
            f"records; 0 = no final probe)"
        )
    if config.min_lr > config.lr:
        raise ConfigError(
            f"min_lr={config.min_lr!r} exceeds lr={config.lr!r}: allowed: 0 <= min_lr <= lr (the schedule's "
            f"floor)"
        )
    if not 0 <= config.momentum < 1:
        raise ConfigError(f"momentum={config.momentum!r}: allowed: a number in [0, 1)")
    if not 0 <= config.drop_path_rate < 1:
        raise ConfigError(
            f"drop_path_rate={config.drop_path_rate!r}: allowed: a probability in [0, 1) (0 = off)"
        )
    if config.image_size is not None and config.image_size > MAX_IMAGE_SIZE:
        raise ConfigError(
            f"image_size={config.image_size!r}: allowed: an integer in [1, {MAX_IMAGE_SIZE}] (pixels a side) "
            f"or null (the dataset's size)"
        )
    if config.temperature_steps is not None and not get_method(config.method).temperature.active:
        raise ConfigError(
            f"temperature_steps={config.temperature_steps!r} does not apply to method={config.method!r}: it "
            f"has no temperature (methods with one: "
            f"{sorted(m.name for m in METHODS.values() if m.temperature.active)}); leave it null"
        )
    span = config.temperature_epochs
    if span is not None and span > MAX_ANNEAL_FACTOR * config.epochs:
        raise ConfigError(
            f"temperature_epochs={span!r} is more than {MAX_ANNEAL_FACTOR}x the run "
            f"(epochs={config.epochs}): tau would barely move; allowed: 0 <= temperature_epochs <= "
            f"{MAX_ANNEAL_FACTOR} * epochs"
        )


def log_targets(log_to: Any) -> tuple[str, ...]:
    """``log_to`` as a tuple of :data:`LOG_TARGETS` (``()`` for None); :class:`ConfigError` naming the field,
    the value's type and the allowed values otherwise."""
    if log_to is None:
        return ()
    values = [log_to] if isinstance(log_to, str) else log_to
    if (
        not isinstance(values, (list, tuple))
        or not all(isinstance(v, str) and v in LOG_TARGETS for v in values)
        or len(set(values)) != len(values)
    ):
        raise ConfigError(
            f"log_to={log_to!r} ({type(log_to).__name__}): allowed: null, one of {list(LOG_TARGETS)} or a "
            f"list of them without repeats"
        )
    return tuple(values)


def _check_knobs(config: RunConfig, spec) -> None:
    """The knobs a config holds in ``options``: options of its method's row that are not fields, each of
    the type the row declares (:meth:`kwlab.methods.Method.check_options`)."""
    names = config.field_names()
    for key in config.options:
        if key in names:
            raise ConfigError(f"options={{{key!r}: ...}}: {key!r} is a field; give it as {key}=...")
    try:
        spec.check_options(config.options, " (a knob held in RunConfig.options)")
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _official_anneal_span(arch: str, method: str) -> float:
    """The official anneal span of ``method`` on ``arch`` (:meth:`kwlab.models.ModelEntry.anneal_span`; a
    custom ``"module:function"`` arch: the method's temperature contract)."""
    if ":" not in arch:
        try:
            return float(model_entry(arch).anneal_span(method))
        except ValueError as err:
            raise ConfigError(str(err)) from None
    return float(get_method(method).temperature.epochs)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _check_arch(arch: str) -> None:
    """Refuse ``"module:function"`` archs that name an escape hatch (:data:`BLOCKED_ARCH_MODULES`)."""
    if not isinstance(arch, str) or not arch:
        raise ConfigError(f"arch must be a registered arch name or 'module:function', got {arch!r}")
    if ":" not in arch:
        return
    module, _, fn = arch.partition(":")
    if not module or not fn or not all(part.isidentifier() for part in [*module.split("."), *fn.split(".")]):
        raise ConfigError(f"arch={arch!r}: a custom builder is written 'package.module:function'")
    target = f"{module}.{fn}"
    for blocked in BLOCKED_ARCH_MODULES:
        if any(name == blocked or name.startswith(blocked + ".") for name in (module, target)):
            raise ConfigError(
                f"arch={arch!r}: {blocked!r} is not a model builder and is refused (it can run programs or "
                f"load code); give a function that returns an nn.Module, e.g. 'torchvision.models:resnet18'"
            )


def _arch_presets(arch: str):
    """The KW presets of a registered arch (None for a custom builder: the generic presets)."""
    if ":" in arch:
        return None
    from kwlab.models import model_entry  # noqa: PLC0415 - the model zoo is imported when first needed

    try:
        return model_entry(arch).presets_for("kw")
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _choice(name: str, value: Any, allowed: Sequence[str]) -> None:
    if isinstance(value, str) and value.lower() in ("true", "false") and any(a is True for a in allowed):
        raise ConfigError(
            f"{name}={value!r} is a string; allowed: {list(allowed)}: write the boolean "
            f"{value.lower()} unquoted (YAML/JSON), {value.capitalize()} in Python"
        )
    if value not in allowed:
        raise ConfigError(
            f"{name}={value!r} is not allowed; allowed: {list(allowed)}.{suggest(str(value), allowed)}"
        )


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _plain(value: Any) -> Any:
    """``value`` with every non-dict mapping turned into a dict and every non-list/tuple sequence (OmegaConf's
    ``ListConfig``) into a list, recursively; dicts, lists, tuples and scalars keep their type."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value] if isinstance(value, list) else tuple(_plain(v) for v in value)
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [_plain(v) for v in value]
    return value


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
        raise ConfigError(
            f"{name}={value!r} has type {type(value).__name__}; expected "
            f"{' or '.join(_type_name(a) if a is not type(None) else 'null' for a in args)}"
        )
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
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value.strip())
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - no other field types
        return value
    raise ConfigError(f"{name}={value!r} has type {type(value).__name__}; expected {_type_name(hint)}")
