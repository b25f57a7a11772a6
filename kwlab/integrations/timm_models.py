"""kwlab's KW ResNets as timm models: ``timm.create_model("kw_resnet18.1x")`` after importing this module.

As a timm plugin does, importing this module registers the models in timm's registry (when timm is
installed; :func:`register_timm_models` does it explicitly and names timm when it is missing). One entrypoint
per kwlab ResNet, ``kw_<arch>`` (``kw_resnet18``, ``kw_resnet50``, ``kw_resnet18_cifar``,
``kw_resnet20_cifar``, ``kw_resnet8_cifar``), whose pretrained tags are the KW presets with ``/`` written
``_`` (``kw_resnet18.1x`` (default), ``.2x``, ``.4x``, ``.1_2x``, ``.1_4x``). The model is kwlab's
(``kwlab.create_model(arch, method="kw", preset=...)``, randomly initialised: no weights are published), built
through timm's ``build_model_with_cfg`` so that it carries a ``pretrained_cfg`` and its reconstruction
arguments (the preset among them). timm's local Hugging Face round trip then works::

    import kwlab.integrations.timm_models  # registers kw_resnet18, ... (through kwlab's torchvision guard)

    model = timm.create_model("kw_resnet18.1_2x", num_classes=10)
    timm.models.save_for_hf(model, "out/kw_r18")
    again = timm.create_model("local-dir:out/kw_r18", pretrained=True)  # the same weights and temperatures
"""

from __future__ import annotations

import importlib.util
from typing import Any

from torch import nn

from kwlab._compat import import_timm
from kwlab.models import create_model, model_entry

__all__ = ["register_timm_models", "TIMM_ARCHS", "timm_tag"]

#: The kwlab archs registered as ``kw_<arch>`` (their stem conv is ``conv1``, their classifier ``fc``).
TIMM_ARCHS = ("resnet18", "resnet50", "resnet18_cifar", "resnet20_cifar", "resnet8_cifar")

#: timm's registry reads an entrypoint's pretrained configs from its module's ``default_cfgs``.
default_cfgs: dict[str, Any] = {}


def timm_tag(preset: str) -> str:
    """The timm pretrained tag of a KW preset (``"1/2x"`` -> ``"1_2x"``: timm reads a ``/`` as a hub path)."""
    return preset.replace("/", "_")


def _preset_of(tag: Any, arch: str) -> str:
    presets = {timm_tag(p): p for p in model_entry(arch).presets_for("kw")}
    name = getattr(tag, "tag", tag)
    if isinstance(tag, dict):
        name = tag.get("tag")
    if name in (None, ""):
        return "1x"
    if name not in presets:
        raise ValueError(f"kw_{arch}: unknown tag {name!r}; the KW presets: {sorted(presets)}")
    return presets[name]


def _builder(arch: str):
    def build(num_classes: int = 1000, in_chans: int = 3, preset: str = "1x", **kwargs: Any) -> nn.Module:
        model = create_model(
            arch, method="kw", preset=preset, num_classes=num_classes, in_chans=in_chans, **kwargs
        )
        model.num_classes = num_classes
        return model

    return build


def _entrypoint(arch: str, timm: Any):
    name = f"kw_{arch}"

    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        preset = kwargs.pop("preset", None) or _preset_of(kwargs.get("pretrained_cfg"), arch)
        model = timm.models.build_model_with_cfg(_builder(arch), name, pretrained, preset=preset, **kwargs)
        model._model_args = {**getattr(model, "_model_args", {}), "preset": preset}  # saved by save_for_hf
        return model

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"kwlab's KW {arch} (``kwlab.create_model({arch!r}, method='kw', preset=...)``)."
    return entrypoint


def register_timm_models() -> list[str]:
    """Register ``kw_<arch>`` for every arch of :data:`TIMM_ARCHS` in timm's registry (once); returns the
    names. Raises ImportError naming timm when it is not installed."""
    timm = import_timm()
    names = []
    for arch in TIMM_ARCHS:
        name = f"kw_{arch}"
        names.append(name)
        if name in globals():
            continue
        entry = model_entry(arch)
        size = entry.input_size
        cfg = dict(
            url="", num_classes=10 if size[1] <= 64 else 1000, input_size=size, pool_size=None,
            crop_pct=1.0 if size[1] <= 64 else 0.875, interpolation="bilinear",
            mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), first_conv="conv1", classifier="fc",
        )  # fmt: skip
        presets = sorted(entry.presets_for("kw"), key=lambda p: p != "1x")  # the first tag is the default
        default_cfgs.update(
            timm.models.generate_default_cfgs({f"{name}.{timm_tag(p)}": dict(cfg) for p in presets})
        )
        fn = _entrypoint(arch, timm)
        globals()[name] = fn
        timm.models.register_model(fn)
    return names


if importlib.util.find_spec("timm") is not None:
    register_timm_models()
