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

from kwlab.methods import get_method
from kwlab.utils import suggest

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
        presets: KW preset name -> :func:`kwlab.kernelwarehouse` keyword arguments (official configs).
        input_size: ``(C, H, W)`` the arch is meant for.
        temperature_epochs: official KW anneal span in epochs (ResNet/ConvNeXt 20, MobileNetV2 15).
        kw_prepare: optional ``fn(model, preset, settings) -> settings`` run before KW conversion, for
            archs whose official KW variant needs per-warehouse options.
        method_builders: method -> ``builder(num_classes=..., **options)`` building that method's official
            model directly (KernelDNA rebuilds stages instead of converting convs); used unless the options
            ask for another wiring (``wiring`` other than "official").
    """

    name: str
    builder: Callable[..., nn.Module]
    model_kwargs: tuple[str, ...] = ()
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    input_size: tuple[int, int, int] = (3, 224, 224)
    temperature_epochs: float = 20.0
    kw_prepare: Callable[..., dict] | None = None
    description: str = ""
    method_builders: Mapping[str, Callable[..., nn.Module]] = field(default_factory=dict)


_MODELS: dict[str, ModelEntry] = {}


def register_model(entry: ModelEntry) -> ModelEntry:
    """Add an architecture to the registry (a duplicate name is an error)."""
    if entry.name in _MODELS:
        raise ValueError(f"model {entry.name!r} is already registered")
    _MODELS[entry.name] = entry
    return entry


def register_method_builder(arch: str, method: str, builder: Callable[..., nn.Module]) -> None:
    """Let ``create_model(arch, method=method)`` build ``method``'s official model with ``builder``."""
    entry = model_entry(arch)
    if method in entry.method_builders:
        raise ValueError(f"model {arch!r} already has a builder for method {method!r}")
    _MODELS[arch] = replace(entry, method_builders={**entry.method_builders, method: builder})


def list_models(pattern: str = "*") -> list[str]:
    """Registered architecture names matching a glob ``pattern``, sorted."""
    return sorted(n for n in _MODELS if fnmatch.fnmatchcase(n, pattern))


def model_entry(arch: str) -> ModelEntry:
    """The :class:`ModelEntry` of ``arch`` (clear error for an unknown name)."""
    if not isinstance(arch, str):
        raise ValueError(
            f"arch must be a model name (str), got {arch!r}; available: {', '.join(list_models())}"
        )
    try:
        return _MODELS[arch]
    except KeyError:
        raise ValueError(
            f"unknown arch {arch!r}; available: {', '.join(list_models())}.{suggest(arch, _MODELS)}"
        ) from None


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
    except ValueError as err:
        raise ValueError(f"{err} (or a builder argument of {arch}: {list(entry.model_kwargs)})") from None
    if spec.converter is None and preset is not None:
        raise ValueError(f"preset={preset!r} needs a dynamic method; method='static' has no presets")
    settings = spec.preset_options(preset, entry.presets, where) if spec.converter is not None else {}
    config: dict[str, Any] = dict(
        arch=arch, method=method, preset=preset, num_classes=num_classes, **overrides
    )
    official = entry.method_builders.get(spec.name)
    if official is not None and options.get("wiring", "official") == "official":
        rest = {k: v for k, v in options.items() if k != "wiring"}
        model = official(num_classes=num_classes, **model_kw, **rest)
        model.kwlab_config = config
        return model
    model = entry.builder(num_classes=num_classes, **model_kw)
    if spec.name == "kw":
        # trained from scratch: the official init. A registered arch follows its official wiring, which is
        # never refused for its size (a narrow net's attention can outweigh its cells: parameter_breakdown
        # and the results tables report it, and it is not warned about); pass max_param_ratio to have the
        # guard check it too.
        settings = {
            "init": "kaiming",
            "max_param_ratio": None,
            "attention_share_warning": None,
            **settings,
            **options,
        }
        if entry.kw_prepare is not None:
            settings = entry.kw_prepare(model, "1x" if preset is None else preset, settings)
        model = spec.converter(model, **settings)
    elif spec.converter is not None:
        model = spec.converter(model, **settings, **options)
    model.kwlab_config = config
    return model
