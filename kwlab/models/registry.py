"""Model registry and :func:`create_model`.

``create_model(arch, method="static" | "kw" | ..., preset=None, num_classes=1000, **overrides)`` builds the
static network of ``arch`` and, for a dynamic method, converts it. KW presets ("1/4x", "1/2x", "1x", "2x",
"4x") reproduce the official configs of each arch; overrides change any field.
"""
from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from torch import nn

__all__ = ["ModelEntry", "register_model", "create_model", "list_models", "model_entry", "KW_FIELDS",
           "list_methods", "register_method"]

#: Keyword arguments of :func:`kwlab.kernelwarehouse` that presets and overrides may set.
KW_FIELDS = ("budget", "cell_in", "cell_out", "sharing", "attention", "attention_norm", "reduction",
             "spatial_partition", "zero_cell", "nonlocal_basis_ratio", "init", "warehouse_options",
             "warehouse_order", "include", "exclude", "temperature", "algorithm")


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
    """

    name: str
    builder: Callable[..., nn.Module]
    model_kwargs: tuple[str, ...] = ()
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    input_size: tuple[int, int, int] = (3, 224, 224)
    temperature_epochs: float = 20.0
    kw_prepare: Callable[..., dict] | None = None
    description: str = ""


_MODELS: dict[str, ModelEntry] = {}
_METHODS: dict[str, Callable[..., nn.Module] | None] = {"static": None, "kw": None}


def register_model(entry: ModelEntry) -> ModelEntry:
    """Add an architecture to the registry (a duplicate name is an error)."""
    if entry.name in _MODELS:
        raise ValueError(f"model {entry.name!r} is already registered")
    _MODELS[entry.name] = entry
    return entry


def register_method(name: str, convert: Callable[..., nn.Module]) -> None:
    """Register a dynamic method: ``convert(model, entry, preset, **overrides) -> model``."""
    _METHODS[name] = convert


def list_models(pattern: str = "*") -> list[str]:
    """Registered architecture names matching a glob ``pattern``, sorted."""
    return sorted(n for n in _MODELS if fnmatch.fnmatchcase(n, pattern))


def list_methods() -> list[str]:
    """Methods ``create_model`` accepts."""
    _load_family()
    return sorted(_METHODS)


def _suggest(value: str, options) -> str:
    close = difflib.get_close_matches(value, list(options), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def model_entry(arch: str) -> ModelEntry:
    """The :class:`ModelEntry` of ``arch`` (clear error for an unknown name)."""
    try:
        return _MODELS[arch]
    except KeyError:
        raise ValueError(f"unknown arch {arch!r}; available: {', '.join(list_models())}.{_suggest(arch, _MODELS)}") \
            from None


def _load_family() -> None:
    try:  # the family of other dynamic methods registers itself when importable
        from .. import family  # noqa: F401
    except ImportError:
        pass


def create_model(arch: str, *, method: str = "static", preset: str | None = None, num_classes: int = 1000,
                 **overrides: Any) -> nn.Module:
    """Build a registered architecture, static or dynamic.

    Args:
        arch: a name from :func:`list_models` (e.g. "resnet18", "resnet20_cifar").
        method: "static", "kw", or another method from :func:`list_methods`.
        preset: KW preset ("1/4x", "1/2x", "1x", "2x", "4x"); default "1x" for method "kw".
        num_classes: classifier outputs.
        **overrides: builder arguments of the arch (e.g. ``drop_path_rate``) and, for KW, any field of
            :data:`KW_FIELDS` (budget, cell_in, cell_out, sharing, attention, reduction, ...).
    Returns:
        The model, with ``model.kwlab_config`` recording how it was built.
    """
    entry = model_entry(arch)
    if method not in _METHODS:
        _load_family()
    if method not in _METHODS:
        raise ValueError(f"unknown method {method!r}; available: {', '.join(sorted(_METHODS))}."
                         f"{_suggest(method, _METHODS)}")
    if method == "static" and preset is not None:
        raise ValueError(f"preset={preset!r} needs a dynamic method (method='kw'); method='static' has no presets")
    model_kw = {k: v for k, v in overrides.items() if k in entry.model_kwargs}
    rest = {k: v for k, v in overrides.items() if k not in entry.model_kwargs}
    if method == "static" and rest:
        allowed = entry.model_kwargs
        bad = sorted(rest)
        raise ValueError(f"unknown override(s) {bad} for {arch} with method='static'; allowed: {list(allowed)}."
                         f"{_suggest(bad[0], allowed)}")
    model = entry.builder(num_classes=num_classes, **model_kw)
    config: dict[str, Any] = dict(arch=arch, method=method, preset=preset, num_classes=num_classes, **overrides)
    if method == "kw":
        model = _to_kw(model, entry, preset, rest)
    elif method != "static":
        model = _METHODS[method](model, entry, preset, **rest)
    model.kwlab_config = config
    return model


def _to_kw(model: nn.Module, entry: ModelEntry, preset: str | None, overrides: dict[str, Any]) -> nn.Module:
    from ..convert import kernelwarehouse

    preset = "1x" if preset is None else preset
    if preset not in entry.presets:
        raise ValueError(f"unknown preset {preset!r} for {entry.name}; available: {', '.join(entry.presets)}."
                         f"{_suggest(preset, entry.presets)}")
    unknown = [k for k in overrides if k not in KW_FIELDS]
    if unknown:
        allowed = list(KW_FIELDS) + list(entry.model_kwargs)
        raise ValueError(f"unknown override(s) {unknown} for {entry.name} with method='kw'; allowed: {allowed}."
                         f"{_suggest(unknown[0], allowed)}")
    settings = dict(init="kaiming")
    settings.update(entry.presets[preset])
    settings.update(overrides)
    if entry.kw_prepare is not None:
        settings = entry.kw_prepare(model, preset, settings)
    return kernelwarehouse(model, **settings)
