"""Model registry and :func:`create_model`.

``create_model(arch, method="static" | "kw" | ..., preset=None, num_classes=1000, **overrides)`` builds the
static network of ``arch`` and, for a dynamic method, converts it. KW presets ("1/4x", "1/2x", "1x", "2x",
"4x") reproduce the official configs of each arch; overrides change any field.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn

from kwlab.methods import KW_PRESETS, get_method
from kwlab.methods.option_types import OptionError
from kwlab.utils import Registry, suggest

__all__ = [
    "ModelEntry",
    "register_model",
    "register_method_builder",
    "create_model",
    "list_models",
    "model_entry",
]


@dataclass(frozen=True)
class ModelEntry:
    """A registered architecture.

    Args:
        name: registry name (``"resnet18"``).
        builder: ``builder(num_classes=..., **model_kwargs) -> nn.Module`` building the static network.
        model_kwargs: builder arguments that ``create_model`` accepts as overrides.
        presets: method -> its presets on this arch (preset name -> options; for KW the official configs,
            :func:`kwlab.kernelwarehouse` keyword arguments); default: KW's generic presets
            :data:`kwlab.methods.KW_PRESETS`. Read it with :meth:`presets_for`.
        input_size: ``(C, H, W)`` the arch is meant for.
        anneal_epochs: method -> this arch's official anneal span in epochs, where it differs from the
            span of the method's temperature contract (``METHODS[m].temperature.epochs``; KW: 20). Only
            MobileNetV2 has one (KW 15). Read it with :meth:`anneal_span`.
        prepare: method -> ``fn(model, preset, settings) -> settings`` run before that method's conversion,
            for archs whose official variant needs per-layer options (KW's per-warehouse options).
        method_builders: method -> ``builder(num_classes=..., **options)`` building that method's official
            model directly (KernelDNA rebuilds stages instead of converting convs); used unless the options
            ask for another wiring (``wiring`` other than "official").
        official_key_map: ``fn(official_key) -> kwlab key`` for archs whose module names differ from the
            official code's (:func:`kwlab.load_official`); None: the same names.
        official_key_unmap: ``fn(kwlab_key, model) -> official key``, the inverse (:func:`kwlab.to_official`).
        official_tensor_map: ``fn(kwlab_key, tensor) -> tensor`` for tensors the official code stores in
            another shape.

    ``create_model`` hands the three official maps to the model it builds (``model.kwlab_official_maps``),
    so :mod:`kwlab.methods.official` reads them without importing the models.
    """

    name: str
    builder: Callable[..., nn.Module]
    model_kwargs: tuple[str, ...] = ()
    presets: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=lambda: {"kw": KW_PRESETS})
    input_size: tuple[int, int, int] = (3, 224, 224)
    anneal_epochs: Mapping[str, float] = field(default_factory=dict)
    prepare: Mapping[str, Callable[..., dict]] = field(default_factory=dict)
    description: str = ""
    method_builders: Mapping[str, Callable[..., nn.Module]] = field(default_factory=dict)
    official_key_map: Callable[[str], str] | None = None
    official_key_unmap: Callable[[str, nn.Module], str] | None = None
    official_tensor_map: Callable[..., Any] | None = None

    def anneal_span(self, method: str) -> float | None:
        """The official anneal span of ``method`` on this arch, in epochs (None: the method has no
        temperature): :attr:`anneal_epochs` where given, else the method's temperature contract."""
        contract = get_method(method).temperature
        if not contract.active:
            return None
        return float(self.anneal_epochs.get(method, contract.epochs))

    def official_maps(self) -> dict[str, Callable[..., Any]]:
        """The official maps this entry declares: ``{"key_map": ..., "key_unmap": ..., "tensor_map": ...}``
        (only those given)."""
        maps = {
            "key_map": self.official_key_map,
            "key_unmap": self.official_key_unmap,
            "tensor_map": self.official_tensor_map,
        }
        return {k: v for k, v in maps.items() if v is not None}

    def presets_for(self, method: str) -> Mapping[str, Mapping[str, Any]] | None:
        """``method``'s presets on this arch (preset name -> options); None: the method's own (a count
        preset "Nx", KW's generic :data:`kwlab.methods.KW_PRESETS`)."""
        return self.presets.get(method)


#: Every architecture by name; extended by :func:`register_model` (its one way in).
_MODELS: Registry[ModelEntry] = Registry("model")


def register_model(entry: ModelEntry) -> ModelEntry:
    """Add an architecture to the registry (a duplicate name is an error)."""
    return _MODELS.register(entry.name, entry)


def register_method_builder(arch: str, method: str, builder: Callable[..., nn.Module]) -> None:
    """Let ``create_model(arch, method=method)`` build ``method``'s official model with ``builder``."""
    entry = model_entry(arch)
    if method in entry.method_builders:
        raise ValueError(f"model {arch!r} already has a builder for method {method!r}")
    _MODELS.unregister(arch)  # the entry is frozen: its successor takes its name
    _MODELS.register(arch, replace(entry, method_builders={**entry.method_builders, method: builder}))


def list_models(pattern: str = "*") -> list[str]:
    """Registered architecture names matching a glob ``pattern``, sorted."""
    return sorted(n for n in _MODELS if fnmatch.fnmatchcase(n, pattern))


def model_entry(arch: str) -> ModelEntry:
    """The :class:`ModelEntry` of ``arch`` (clear error for an unknown name)."""
    if not isinstance(arch, str):
        raise ValueError(
            f"arch must be a model name (str), got {arch!r}; available: {', '.join(list_models())}"
        )
    if arch not in _MODELS:
        raise ValueError(
            f"unknown arch {arch!r}; available: {', '.join(list_models())}.{suggest(arch, _MODELS)}"
        )
    return _MODELS[arch]


def create_model(
    arch: str, *, method: str = "static", preset: str | None = None, num_classes: int = 1000, **overrides: Any
) -> nn.Module:
    """Build a registered architecture, static or dynamic.

    Args:
        arch: a name from :func:`list_models` (e.g. "resnet18", "resnet20_cifar").
        method: a name from :func:`kwlab.list_methods` ("static", "kw", "condconv", ...).
        preset: KW: "1/4x", "1/2x", "1x" (default), "2x", "4x" (the arch's official configs);
            CondConv/DY-Conv/ODConv: "Nx", the kernel count.
        num_classes: classifier outputs.
        **overrides: builder arguments of the arch (e.g. ``drop_path_rate``) and the method's options
            (``kwlab.methods.METHODS[method].options``: for KW budget, cell_in, cell_out, sharing, ...).
    Returns:
        The model, with ``model.kwlab_config`` recording how it was built.
    """
    entry = model_entry(arch)
    spec = get_method(method)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    model_kw = {k: v for k, v in overrides.items() if k in entry.model_kwargs}
    options = {k: v for k, v in overrides.items() if k not in entry.model_kwargs}
    where = f" for {arch}"
    try:
        spec.check_options(options, where)
    except OptionError:
        raise
    except ValueError as err:
        raise ValueError(f"{err} (or a builder argument of {arch}: {list(entry.model_kwargs)})") from None
    if spec.converter is None and preset is not None:
        raise ValueError(f"preset={preset!r} needs a dynamic method; method='static' has no presets")
    config: dict[str, Any] = dict(
        arch=arch, method=method, preset=preset, num_classes=num_classes, **overrides
    )
    official = entry.method_builders.get(spec.name)
    if official is not None and options.get("wiring", "official") == "official":
        spec.preset_options(preset, entry.presets_for(spec.name), where)
        rest = {k: v for k, v in options.items() if k != "wiring"}
        model = official(num_classes=num_classes, **model_kw, **rest)
        return _record(model, entry, config)
    # trained from scratch (the row's train_options: KW's official init). A registered arch follows its
    # official wiring, which is never refused for its size (a narrow net's attention can outweigh its cells:
    # parameter_breakdown and the results tables report it) nor warned about: the row's build leaves a
    # method's size guard off unless max_param_ratio is passed, KW's attention-share warning unless
    # attention_share_warning is.
    model = spec.build(
        lambda: entry.builder(num_classes=num_classes, **model_kw),
        preset=preset,
        options=options,
        arch_presets=entry.presets_for(spec.name),
        prepare=entry.prepare.get(spec.name),  # the arch's own presets need it (KW's per-warehouse options)
        where=where,
    )
    return _record(model, entry, config)


def _record(model: nn.Module, entry: ModelEntry, config: dict[str, Any]) -> nn.Module:
    """Attach how ``model`` was built (``kwlab_config``) and its arch's official maps."""
    model.kwlab_config = config
    maps = entry.official_maps()
    if maps:
        model.kwlab_official_maps = maps
    return model
