"""The method table: :data:`METHODS`, one :class:`Method` row per method, and the one conversion front door
(:func:`convert`).

A row says which layer the method uses, how a static network is converted (a KW converter, or for the
family the :class:`~kwlab.methods.wiring.Wiring` that derives one), which presets it has, what its
temperature means and how it is scheduled, which :class:`kwlab.experiments.RunConfig` fields apply to it,
and which options its converter accepts. ``create_model``, ``RunConfig``, the CLI and :func:`list_methods`
all read this table, so a new method is one layer file plus one row.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from torch import nn

from kwlab.layers.attention import ATTENTION_FUNCTIONS, KWAttention
from kwlab.layers.base import ATTENTION_MODES, NO_TEMPERATURE, DynamicLayer, TemperatureContract
from kwlab.layers.condconv import CondConv2d
from kwlab.layers.dcd import DCDConv2d, DCDLinear
from kwlab.layers.dyconv import DYCONV_TEMPERATURE, DynamicConv2d
from kwlab.layers.fdconv import FDConv2d, fdconv_applies
from kwlab.layers.kerneldna import KernelDNAConv2d
from kwlab.layers.kernelwarehouse import KWConv2d
from kwlab.layers.odconv import ODCONV_TEMPERATURE, ODConv2d
from kwlab.utils import Registry, suggest

from .conversion import converter_for
from .kernelwarehouse import kernelwarehouse
from .kw_options import KW_OPTIONS, KW_PRESETS, KWOptions
from .option_types import check_option_types
from .row_options import build, check_knob, describe, kw_size, options_type
from .surgery import trace_layers
from .temperature import TemperatureSchedule
from .wiring import Wiring, dcd_accepts

__all__ = [
    "Method",
    "METHODS",
    "METHOD_FIELDS",
    "method_fields",
    "list_methods",
    "get_method",
    "convert",
    "take_knobs",
    "option_owner",
    "methods_markdown",
]


@dataclass(frozen=True)
class Method:
    """One method: everything kwlab needs to know about it.

    Attributes:
        name: the key (``method=`` everywhere).
        layer: its layer class (None for "static").
        converter: ``converter(model, *, preset, **options) -> model`` (None for "static"; a family row
            passes None and gets :func:`kwlab.methods.conversion.converter_for` its wiring).
        presets: "arch" (KW: each arch's official presets, ``"1x"`` by default), "count" (``"Nx"`` sets the
            kernel count), or "none".
        options: keyword options the converter accepts (``create_model`` overrides, ``kwlab.convert``).
        config_fields: the ``RunConfig`` fields that configure this method (:data:`METHOD_FIELDS`, the
            union over the rows, is derived from them).
        temperature: the temperature contract (meaning, start -> end, official anneal epochs).
        count_option: the option a "Nx" preset sets (presets == "count").
        description, reference: one line each, for ``list_methods`` and the docs.
        train_options: options added when a model is built to be trained from scratch (``create_model``,
            the trainer's ``build_model``), before the preset's and the caller's (KW: its official init,
            ``init="kaiming"``, instead of cells copied from the static weights).
        wiring: the family's :class:`~kwlab.methods.wiring.Wiring` (which convs the layer takes, its
            defaults, its rule); None for a method that does not swap convs one for one (static, KW).
        attentions: the values of its ``attention`` option (the first is the default): KW's functions
            (:data:`kwlab.layers.attention.ATTENTION_FUNCTIONS`), the family's ``("dynamic", "constant")``
            (:data:`kwlab.layers.base.ATTENTION_MODES`); empty: the method has no ``attention`` option.
        no_attention: why a method without an ``attention`` option has no ``attention="constant"`` control
            (said when one is asked for).
        options_class: the frozen dataclass of its options (KW: :class:`kwlab.methods.KWOptions`); None:
            derived from ``options`` and the layer's keywords (:attr:`options_type`).
        size: ``size(values, arch_presets) -> {"budget", "cell_in", "cell_out"}`` of one configuration (KW:
            its preset's, overridden by the fields); None: a method without budget or cells (b = m = 1).

    A run's knobs: the options that are ``RunConfig`` fields are listed in ``config_fields``; every other
    option of the row is a knob a run holds in ``RunConfig.options`` (given flat in a sweep file or
    ``--set``, like a field), so a new method's new knob needs no edit outside its layer and its row.
    """

    name: str
    layer: type[DynamicLayer] | None
    converter: Callable[..., nn.Module] | None
    presets: str
    options: tuple[str, ...]
    config_fields: tuple[str, ...]
    temperature: TemperatureContract = NO_TEMPERATURE
    count_option: str | None = None
    description: str = ""
    reference: str = ""
    train_options: Mapping[str, Any] = field(default_factory=dict)
    wiring: Wiring | None = None
    attentions: tuple[str, ...] = ()
    no_attention: str = ""
    options_class: type | None = None
    size: Callable[..., dict[str, float]] | None = None

    def __post_init__(self) -> None:
        derived = getattr(self.converter, "from_wiring", False)  # dataclasses.replace derives it anew
        if self.wiring is not None and (self.converter is None or derived):
            object.__setattr__(self, "converter", converter_for(self))

    @cached_property
    def options_type(self) -> type:
        """The frozen dataclass of this method's options (:func:`kwlab.methods.row_options.options_type`):
        its fields are :attr:`options`, typed and defaulted by the layer's keywords and the wiring."""
        return options_type(self)

    def parse_options(self, options: Mapping[str, Any], where: str = "") -> Any:
        """``options`` as an instance of :attr:`options_type`, after :meth:`check_options`: every rule of the
        options is the row's (KW: :class:`~kwlab.methods.KWOptions`'s checks, e.g.
        ``attention_init="pattern"`` needs a function with a pattern); a ValueError names the option and its
        allowed values."""
        self.check_options(options, where)
        if self.converter is None:
            return self.options_type()
        return self.options_type(**options)

    #: b, m and the label parts of one configuration (:func:`kwlab.methods.row_options.describe`).
    describe = describe
    #: the one merge of train options, presets and options into a model
    #: (:func:`kwlab.methods.row_options.build`).
    build = build

    def schedule(self, iters_per_epoch: int, epochs: float | None = None) -> TemperatureSchedule | None:
        """The anneal (tau 1 -> 0) over ``epochs`` (default: the official span); None without temperature."""
        if not self.temperature.active:
            return None
        span = self.temperature.epochs if epochs is None else epochs
        return TemperatureSchedule(iters_per_epoch, epochs=span, start=1.0, end=0.0)

    def preset_options(
        self, preset: str | None, arch_presets: Mapping[str, Mapping[str, Any]] | None = None, where: str = ""
    ) -> dict[str, Any]:
        """The options a preset stands for; a clear error for a preset this method does not have."""
        if self.presets == "arch":
            table = KW_PRESETS if arch_presets is None else arch_presets
            preset = "1x" if preset is None else preset
            if preset not in table:
                raise ValueError(
                    f"preset={preset!r} is not a KW preset{where}; allowed: {list(table)}."
                    f"{suggest(str(preset), table)}"
                )
            return dict(table[preset])
        if preset is None:
            return {}
        if self.presets == "count":
            m = re.fullmatch(r"\s*(\d+)\s*[x\u00d7]\s*", str(preset))
            if m is not None and int(m.group(1)) >= 1:
                return {self.count_option: int(m.group(1))}
            raise ValueError(
                f"preset for method {self.name!r} must be 'Nx' (the kernel count: '1x', '2x', "
                f"'4x', '8x', ...), got {preset!r}"
            )
        raise ValueError(f"method {self.name!r} has no presets, got preset={preset!r}")

    def check_options(self, options: Mapping[str, Any], where: str = "") -> None:
        """Refuse options this method does not take, naming the allowed ones, and options of the wrong type
        (:func:`kwlab.methods.option_types.check_option_types`: an :class:`OptionError`)."""
        unknown = sorted(k for k in options if k not in self.options)
        if "attention" in unknown and self.no_attention:
            raise ValueError(
                f"option attention={options['attention']!r} does not apply to method={self.name!r}{where}: "
                f"{self.no_attention}"
            )
        if "attention" in options and "attention" not in unknown:
            self.check_attention(options["attention"], where)
        if unknown:
            owners = sorted(m.name for m in METHODS.values() if unknown[0] in m.options)
            elsewhere = (
                f" ({unknown[0]!r} belongs to method {', '.join(map(repr, owners))})" if owners else ""
            )
            raise ValueError(
                f"option(s) {unknown} do not apply to method={self.name!r}{where}{elsewhere}; "
                f"allowed: {list(self.options)}.{suggest(unknown[0], self.options)}"
            )
        check_option_types(options, self.name)
        for name, value in options.items():
            check_knob(self, name, value)

    def check_attention(self, value: Any, where: str = "") -> None:
        """Refuse an ``attention`` value this method does not have, naming the option, the method and the
        allowed values."""
        if not isinstance(value, str) or value not in self.attentions:
            raise ValueError(
                f"attention must be one of {list(self.attentions)} for method={self.name!r}{where}, got "
                f"{value!r}.{suggest(str(value), self.attentions)}"
            )


def _kw_converter(model: nn.Module, *, preset: str | None = None, presets=None, **options: Any) -> nn.Module:
    settings = (
        METHODS["kw"].preset_options(preset, presets) if (preset is not None or presets is not None) else {}
    )
    return kernelwarehouse(model, **{**settings, **options})


_PATTERNS = ("include", "exclude")
_CONSTANT = "; `attention='constant'`: learned constants in place of the attention head (a control)"
#: Why these methods have no ``attention="constant"`` control (each would have one; neither is built yet).
_NO_CONSTANT = {
    "dcd": (
        "its input dependence is the channel scale Lambda(x) and the dynamic channel fusion Phi(x); constant "
        "ones would fold into a static kernel plus a static low-rank term, a control kwlab does not build "
        "yet; use freeze_attention to measure dependence"
    ),
    "fdconv": (
        "its input dependence is the KSM global/local attention and the frequency band modulation; "
        "constant ones would be a static Fourier-parametrised kernel, a control kwlab does not build yet; "
        "use freeze_attention to measure dependence"
    ),
}

#: Every method row by name; a new method is ``METHODS.register(name, Method(name, ...))``.
METHODS: Registry[Method] = Registry("method", {
    m.name: m
    for m in (
        Method("static", None, None, "none", (), (), description="the plain network"),
        Method(
            "kw",
            KWConv2d,
            _kw_converter,
            "arch",
            KW_OPTIONS,
            (
                "preset",
                "budget",
                "cell_in",
                "cell_out",
                "sharing",
                "attention",
                "attention_norm",
                "spatial_partition",
                "zero_cell",
                "attention_init",
                "reduction",
            ),
            KWAttention.temperature_contract,
            description="KernelWarehouse: kernels cut into cells mixed from warehouses shared across layers",
            reference="Li & Yao, ICML 2024; OSVAI/KernelWarehouse",
            train_options={"init": "kaiming"},
            attentions=ATTENTION_FUNCTIONS,
            options_class=KWOptions,
            size=kw_size,
        ),
        Method(
            "condconv",
            CondConv2d,
            None,
            "count",
            ("num_experts", "attention", "init", *_PATTERNS),
            ("preset", "attention", "init"),
            NO_TEMPERATURE,
            "num_experts",
            description="CondConv: sigmoid-routed mixture of expert kernels" + _CONSTANT,
            reference="Yang et al. 2019; block convs, stem and downsample static",
            wiring=Wiring({"num_experts": 8}),  # the ResNet18 "8x" row
            attentions=ATTENTION_MODES,
        ),
        Method(
            "dyconv",
            DynamicConv2d,
            None,
            "count",
            ("num_kernels", "reduction", "temperature", "attention", "init", *_PATTERNS),
            ("preset", "reduction", "attention", "init"),
            DYCONV_TEMPERATURE,
            "num_kernels",
            description="DY-Conv: softmax mixture of whole kernels" + _CONSTANT,
            reference="Chen et al. 2020; every conv but the stem",
            wiring=Wiring({"num_kernels": 4}, static_downsample=False),
            attentions=ATTENTION_MODES,
        ),
        Method(
            "odconv",
            ODConv2d,
            None,
            "count",
            ("num_kernels", "reduction", "min_hidden", "temperature", "attention", "init", *_PATTERNS),
            ("preset", "reduction", "attention", "init"),
            ODCONV_TEMPERATURE,
            "num_kernels",
            description=(
                "ODConv: four attentions (channel, filter, spatial, kernel) over a kernel bank" + _CONSTANT
            ),
            reference="Li et al. 2022; OSVAI/ODConv models/od_resnet.py",
            wiring=Wiring({"num_kernels": 4}),
            attentions=ATTENTION_MODES,
        ),
        Method(
            "kerneldna",
            KernelDNAConv2d,
            None,
            "none",
            ("wiring", "reduction", "stages", "attention", *_PATTERNS),
            ("reduction", "attention"),
            NO_TEMPERATURE,
            description=(
                "KernelDNA: child convs share a parent kernel through input-channel gates; "
                "`attention='constant'`: a learned constant gate in place of the SE gate (a control)"
            ),
            reference="arXiv 2503.23379; haiduo/KernelDNA",
            wiring=Wiring({"reduction": 4}, pairing=True),
            attentions=ATTENTION_MODES,
        ),
        Method(
            "dcd",
            DCDConv2d,
            None,
            "none",
            ("pool", "latent_dim", "squeeze", "classifier", *_PATTERNS),
            (),
            NO_TEMPERATURE,
            description=(
                "DCD: static kernel, channel scale and a low-rank dynamic channel fusion P Phi(x) Q^T "
                "computed on activations; no temperature (none in the official code); "
                "no `attention='constant'` yet"
            ),
            reference="Li et al., ICLR 2021; liyunsheng13/dcd models/imagenet/resnet_dcd.py",
            wiring=Wiring(
                accepts=dcd_accepts,
                rule="DCD's official wiring makes the dense block convs of ResNets and MobileNetV2 dynamic",
                classifier=DCDLinear.from_linear,
            ),
            no_attention=_NO_CONSTANT["dcd"],
        ),
        Method(
            "fdconv",
            FDConv2d,
            None,
            "none",
            ("kernel_num", "param_ratio", "reduction", "near_identity", *_PATTERNS),
            (),
            NO_TEMPERATURE,
            description=(
                "FDConv: disjoint Fourier-band kernels with KSM global/local attention and frequency band "
                "modulation; no temperature schedule (kernel_temp fixed at 1); no `attention='constant'` yet"
            ),
            reference="Chen et al., CVPR 2025; Linwei-Chen/FDConv FDConv_detection/mmdet_custom/FDConv.py",
            wiring=Wiring(
                {"kernel_num": 64},  # the mmdet config
                accepts=fdconv_applies,
                rule=(
                    "FDConv's official gating takes convs with min(in, out) > 16 and a 1x1 or 3x3 kernel, "
                    "stem and downsample static"
                ),
            ),
            no_attention=_NO_CONSTANT["fdconv"],
        ),
    )
})


def method_fields() -> tuple[str, ...]:
    """RunConfig fields that configure a method: the union of every row's ``config_fields``, in table order
    (derived, never written out: a new row's field is a method field everywhere at once)."""
    return tuple(dict.fromkeys(f for m in METHODS.values() for f in m.config_fields))


#: :func:`method_fields` of the built-in table (read the function where rows may be added at run time).
METHOD_FIELDS: tuple[str, ...] = method_fields()


def take_knobs(values: dict[str, Any], fields: Any) -> dict[str, Any]:
    """Pop from ``values`` (config values with a ``method``) the options of that method's row that are not
    in ``fields`` and return them: a sweep file or ``--set`` gives a method's knobs flat, ``RunConfig`` holds
    them in ``options``. Nothing for an unknown method (refused later, by name)."""
    method = values.get("method", "static")
    row = METHODS.get(method) if isinstance(method, str) else None
    keys = [k for k in values if k not in fields and k in row.options] if row is not None else []
    return {k: values.pop(k) for k in keys}


def option_owner(key: str, method: Any) -> str:
    """For an unknown config field that is an option of other methods: which ones ('' if none)."""
    owners = sorted(m.name for m in METHODS.values() if key in m.options)
    if not owners:
        return ""
    return (
        f" {key!r} is an option of method {', '.join(map(repr, owners))}, not of "
        f"method={method or 'static'!r} (a method's options are given flat, with that method)"
    )


def list_methods() -> list[str]:
    """Names of every method (``method=`` of create_model, RunConfig and the CLI), sorted."""
    return sorted(METHODS)


def get_method(name: str) -> Method:
    """The :class:`Method` row of ``name``; a clear error naming the allowed methods otherwise."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown method {name!r}; allowed: {list_methods()}.{suggest(str(name), METHODS)}"
        ) from None


def convert(model: nn.Module, method: str, *, preset: str | None = None, **options: Any) -> nn.Module:
    """Convert the static ``model`` in place into ``method`` (one front door for every method); returns it.

    Args:
        model: any ``nn.Module`` (for KW a module of any kind; for the family: its ``nn.Conv2d`` layers).
        method: a name from :func:`list_methods` other than "static".
        preset: KW: "1/4x" .. "4x" (the generic presets of :data:`KW_PRESETS`); CondConv/DY-Conv/ODConv: "Nx".
        **options: the method's options (``METHODS[method].options``), e.g. ``budget=2, sharing="layer"`` for
            KW, ``num_kernels=4`` for ODConv, ``classifier=True`` for DCD's dynamic classifier or
            ``kernel_num=4`` for FDConv, and ``include``/``exclude`` patterns.

    All or nothing: every layer is planned and validated before the first is replaced, so a ValueError
    (a layer the method cannot represent, a pattern that matches nothing, nothing to convert, KW's size
    guard) leaves ``model`` as it was. A lone ``nn.Conv2d`` (KW: also ``nn.Linear``) returns its new layer.
    The plans: :func:`plan_kernelwarehouse` and :func:`kwlab.methods.family.plan_family`.

    ``example_input`` (the batch KW traces a generic model with) is accepted by every method, so a loop over
    methods can pass one keyword set: a method that does not trace still runs a shape-only trace on it, so a
    batch the model cannot take is an error on every path, and otherwise it changes nothing. Likewise an
    option of another method given as ``None`` (its "not set") and ``attention_share_warning`` (KW's warning
    threshold) change nothing for a method without them and are accepted; any other value of an option the
    method does not take is refused by name.
    """
    spec = get_method(method)
    if spec.converter is None:
        raise ValueError(
            f"method='static' converts nothing; choose one of {[m for m in list_methods() if m != 'static']}"
        )
    if "example_input" in options and "example_input" not in spec.options:
        example_input = options.pop("example_input")
        if example_input is not None and not isinstance(model, (nn.Conv2d, nn.Linear)):
            trace_layers(model, example_input)  # a wrong example input is an error for every method
    for key in [k for k in options if k not in spec.options]:
        if options[key] is None or key == "attention_share_warning":
            del options[key]  # changes nothing for this method
    spec.check_options(options)
    return spec.converter(model, preset=preset, **options)


def methods_markdown() -> str:
    """The method table as Markdown (the README's copy is generated by this and checked by a test)."""
    presets = {
        "arch": "KW presets of the arch ('1/4x' .. '4x')",
        "count": "'Nx': the kernel count",
        "none": "-",
    }
    rows = [
        "| method | what it is | presets | temperature (tau 1 -> 0 maps to) | RunConfig fields |",
        "|---|---|---|---|---|",
    ]
    for m in METHODS.values():
        t = m.temperature
        temp = f"{t.meaning}; official anneal {t.epochs:g} epochs" if t.active else "none"
        fields = ", ".join(f"`{f}`" for f in m.config_fields) or "-"
        rows.append(f"| `{m.name}` | {m.description} | {presets[m.presets]} | {temp} | {fields} |")
    return "\n".join(rows) + "\n"
