"""Convert a static ConvNet into one of KernelWarehouse's relatives: CondConv, DY-Conv, ODConv, KernelDNA,
DCD, FDConv.

``convert(model, method)`` swaps ``nn.Conv2d`` layers in place for the method's layer and returns the
model. Each converted layer starts from the static conv it replaces (every expert/kernel is a copy of
its weight and bias), so:

* DY-Conv reproduces the static output exactly, for any attention (its mixture is convex);
* CondConv gives ``(sum_e r_e(x)) * conv(x)`` (sigmoid routing is not normalised);
* ODConv reproduces it where the channel, filter and spatial attentions equal 1;
* KernelDNA children take their *parent's* kernel; with the gate at 1 they reproduce the parent conv.

Default wiring on a ResNet (``WIRING[method]``), following the reference digest (sections 2-4):

============ ======================= ==================== =========================================
method       converted               kept static          layer defaults
============ ======================= ==================== =========================================
condconv     every conv but...       stem, downsample     ``num_experts=8`` (the ResNet18 "8x" row)
dyconv       every conv but...       stem                 ``num_kernels=4`` (downsample converted)
odconv       every conv but...       stem, downsample     ``num_kernels=4``, reduction 1/16, min 16
kerneldna    ``wiring="pairing"``     stem, downsample,    ``reduction=4``; last two stages
             only (kwlab heuristic): parents (block 0)
             later blocks' spatial
             convs of a stage
dcd          dense convs but...      stem, downsample,    official widths (``pool=1``; the DCD
                                     grouped convs        ResNets use 2 for basic blocks);
                                                          ``classifier=True``: ``DYCls``
fdconv       convs passing the       stem, downsample,    ``kernel_num=64`` (mmdet config)
             official gating         min(I, O) <= 16,
             (min(I, O) > 16,        other kernels,
             k in {1, 3})            grouped convs
============ ======================= ==================== =========================================

DCD and FDConv find nothing to convert in the ViTs (their only conv is the patch embedding, the stem) and
refuse by name. On ConvNeXt both rules take the pointwise 1x1 convs (a kwlab extension: neither method has
an official ConvNeXt). The official DCD ResNets and MobileNetV2 are built by
``create_model(arch, method="dcd")`` (:mod:`kwlab.models.dcd`); FDConv's official wiring is this
conversion. A converted FDConv layer holds the static kernel exactly and, with its heads at their
N(0, 1e-6) init, computes the static conv (up to ~1e-5); a DCD layer keeps the static kernel as ``W0`` but
adds its dynamic path, so it does not.

KernelDNA's default ``wiring="official"`` is not a conversion: the official models rebuild stages (extra
depth in the ResNets, 1x1 sharing inside each MobileNetV2 group) and are built by
``create_model(arch, method="kerneldna")`` for resnet18, resnet50, mobilenetv2_100 and mobilenetv2_050
(:mod:`kwlab.models.kerneldna`). ``kwlab.convert(model, "kerneldna")`` therefore needs
``wiring="pairing"``.

Rules (in this order):

1. candidates: every ``nn.Conv2d`` of ``model`` (an already dynamic layer is never touched);
2. if ``include`` is None, the method's wiring applies: the *stem* (the first conv in registration order)
   and, where the method keeps them static, *downsample* convs (a name component containing
   "downsample" or "shortcut", e.g. torchvision's ``layer2.0.downsample.0``) are dropped. If ``include``
   is given it replaces that wiring: exactly the convs matching it are candidates;
3. convs matching ``exclude`` are dropped;
4. patterns (str or sequence of str) match a qualified name by ``fnmatch`` or as a module prefix
   (``"layer4"`` matches ``layer4.1.conv2``), and a pattern that matches no conv is an error
   (:func:`kwlab.methods.surgery.select`, the rule of every method and the probe);
5. explicit layer keywords win over the defaults (``kwlab.convert(model, m, preset="Nx")`` sets the kernel
   count of condconv/dyconv/odconv).

KernelDNA pairing (``wiring="pairing"``; a kwlab heuristic, NOT the paper's wiring; ``stages=`` keyword,
default ``"late"``): a *stage* is an ``nn.Sequential`` or
``nn.ModuleList`` whose children are all blocks (non-conv modules that contain a conv); ``"late"`` takes the
last two stages found (ResNet: ``layer3``, ``layer4``, the stages the official code rebuilds), ``"all"``
every stage, or
pass stage names. In a stage, a candidate spatial conv (kernel > 1x1) of block j > 0 becomes a child of
the same-shape (weight shape and groups) conv of the earliest block that has one; same relative name is
preferred (``layerX.0.conv2`` for every 3x3 of a ResNet18 stage). Parents stay static ``nn.Conv2d``.
The official KernelDNA ResNets instead rebuild the stage with extra depth (and ResNet50 never shares the
strided transition's 3x3, which this rule does); use ``wiring="official"`` for those.
The rule is tuned for ResNets: torchvision-style MobileNetV2 has no stage containers (``features`` is one
stage), so its depthwise convs get paired across groups and the SE gates (rd 4 on 6x-expanded widths) make
the model larger (5.00M vs 3.50M static; official KernelDNA MBv2 shares the 1x1 convs instead: 3.14M).

Parameter counts of a torchvision-shaped ResNet18 (1000 classes) under the default wiring, checked in
tests/test_family.py where a published number exists: ODConv 1x 11.94M and 4x 44.90M (README: same);
DY-Conv 4x 45.47M (KW/ODConv table: 45.47M); CondConv 8x 88.62M (table: 81.35M; that row's wiring is
not documented and no kwlab wiring reproduces it); KernelDNA pairing 6.12M (official wiring, with its extra
depth: 9.24M, see :mod:`kwlab.models.kerneldna`).

Temperatures: DY-Conv and ODConv anneal T from 30 to 1 over 10 epochs (their rows in
:data:`kwlab.methods.METHODS` hold the contract); new layers start at T = 30.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from kwlab.layers.base import DynamicLayer
from kwlab.layers.condconv import CondConv2d
from kwlab.layers.dcd import DCDConv2d, DCDLinear
from kwlab.layers.dyconv import DynamicConv2d
from kwlab.layers.fdconv import FDConv2d, fdconv_applies
from kwlab.layers.kerneldna import KernelDNAConv2d
from kwlab.layers.odconv import ODConv2d

from .surgery import Patterns, check_patterns, matches, select, set_module

__all__ = [
    "Wiring",
    "WIRING",
    "KERNELDNA_WIRINGS",
    "convert",
    "convert_kerneldna",
    "conversion_plan",
    "find_stages",
    "kerneldna_pairs",
]


@dataclass(frozen=True)
class Wiring:
    """Where a family method puts its layer in a ResNet-like network (its row in :data:`kwlab.methods.METHODS`
    says everything else).

    Attributes:
        layer: the layer class (has ``from_conv``).
        defaults: layer keywords used unless overridden.
        static_stem: keep the first conv static.
        static_downsample: keep downsample/shortcut convs static.
        accepts: ``accepts(conv) -> None`` if the method's rule takes ``conv``, else the reason it does not
            (DCD: dense convs only; FDConv: the official gating). Applies to the default wiring only: convs
            named by ``include`` go to the layer, which refuses what it cannot do by name.
    """

    layer: type[DynamicLayer]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    static_stem: bool = True
    static_downsample: bool = True
    accepts: Callable[[nn.Conv2d], str | None] | None = None


def _dcd_accepts(conv: nn.Conv2d) -> str | None:
    """DCD's rule: dense convs whose padding keeps the size of the strided 1x1 dynamic path (the official
    models never make a grouped conv dynamic: MobileNetV2's depthwise convs stay static)."""
    if conv.groups != 1:
        return f"groups={conv.groups}: DCD makes dense convs dynamic only"
    pad = conv.padding if isinstance(conv.padding, tuple) else None
    if pad is None or any(2 * p != d * (k - 1) for p, d, k in zip(pad, conv.dilation, conv.kernel_size)):
        return f"padding {conv.padding!r} changes the output size of the strided 1x1 dynamic path"
    return None


WIRING: dict[str, Wiring] = {
    "condconv": Wiring(CondConv2d, {"num_experts": 8}),
    "dyconv": Wiring(DynamicConv2d, {"num_kernels": 4}, static_downsample=False),
    "odconv": Wiring(ODConv2d, {"num_kernels": 4}),
    "kerneldna": Wiring(KernelDNAConv2d, {"reduction": 4}),
    "dcd": Wiring(DCDConv2d, {}, accepts=_dcd_accepts),
    "fdconv": Wiring(FDConv2d, {"kernel_num": 64}, accepts=fdconv_applies),
}

_SHORTCUT_WORDS = ("downsample", "shortcut")

#: KernelDNA wirings: "official" (the paper's models, built by create_model) and "pairing" (kwlab heuristic).
KERNELDNA_WIRINGS = ("official", "pairing")
#: archs with an official KernelDNA model (``create_model(arch, method="kerneldna")``).
KERNELDNA_OFFICIAL_ARCHS = ("resnet18", "resnet50", "mobilenetv2_100", "mobilenetv2_050")


def _is_shortcut(name: str) -> bool:
    return any(word in part for part in name.split(".") for word in _SHORTCUT_WORDS)


def _plain_convs(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """Every ``nn.Conv2d`` of ``model`` except those inside a dynamic layer (e.g. ODConv's attention)."""
    dynamic = [n for n, m in model.named_modules() if isinstance(m, DynamicLayer)]
    return [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and not any(n == d or n.startswith(d + ".") or d == "" for d in dynamic)
    ]


def conversion_plan(
    model: nn.Module, method: str, *, include: Patterns = None, exclude: Patterns = None
) -> list[str]:
    """Qualified names of the convs :func:`convert` would replace (KernelDNA: candidates before pairing)."""
    spec = _method(method)
    convs = _plain_convs(model)
    if include is None:  # the method's wiring; an include replaces it
        stem = convs[0][0] if convs else None
        wired = [
            (n, m)
            for n, m in convs
            if not (spec.static_stem and n == stem)
            and not (spec.static_downsample and _is_shortcut(n))
            and (spec.accepts is None or spec.accepts(m) is None)
        ]
        check_patterns("exclude", exclude, [n for n, _ in convs], "conv")  # may name a conv already static
        return [n for n, _ in wired if not matches(n, exclude, "exclude")]
    return [n for n, _ in select(convs, include, exclude, what="conv")]


def _method(method: str) -> Wiring:
    if method not in WIRING:
        raise ValueError(f"method must be one of {sorted(WIRING)}, got {method!r}")
    return WIRING[method]


_replace = set_module  # the one set_module (kwlab.methods.surgery)


def find_stages(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Outermost ``nn.Sequential``/``nn.ModuleList`` containers whose children are all blocks (>= 2 of them).

    A block is a module that is not itself a conv but contains one. ResNet: ``layer1`` .. ``layer4``.
    """
    found: list[tuple[str, nn.Module]] = []

    def is_block(m: nn.Module) -> bool:
        return not isinstance(m, nn.Conv2d) and any(isinstance(s, nn.Conv2d) for s in m.modules())

    def visit(prefix: str, module: nn.Module) -> None:
        for child_name, child in module.named_children():
            name = f"{prefix}.{child_name}" if prefix else child_name
            kids = list(child.children())
            container = isinstance(child, (nn.Sequential, nn.ModuleList))
            if container and len(kids) >= 2 and all(map(is_block, kids)):
                found.append((name, child))
            else:
                visit(name, child)

    visit("", model)
    return found


def kerneldna_pairs(
    model: nn.Module, *, stages: str | Sequence[str] = "late", candidates: Sequence[str] | None = None
) -> dict[str, str]:
    """``{child conv name: parent conv name}`` for the KernelDNA pairing rule (module docstring).

    Args:
        stages: "late" (last two stages), "all", or stage names (see :func:`find_stages`).
        candidates: conv names allowed to become children (default: all).
    """
    all_stages = find_stages(model)
    if isinstance(stages, str) and stages in ("late", "all"):
        chosen = all_stages[-2:] if stages == "late" else all_stages
    elif isinstance(stages, str) or not isinstance(stages, Sequence):
        raise ValueError(f"stages must be 'late', 'all' or a sequence of stage names, got {stages!r}")
    else:
        by_name = dict(all_stages)
        missing = [s for s in stages if s not in by_name]
        if missing:
            raise ValueError(f"stages {missing} are not stages of the model; found {sorted(by_name)}")
        chosen = [(s, by_name[s]) for s in stages]
    allowed = None if candidates is None else set(candidates)
    pairs: dict[str, str] = {}
    for stage_name, stage in chosen:
        # shape key -> [(relative name, full name)] of the first block holding that shape
        parents: dict[tuple, list[tuple[str, str]]] = {}
        for block_name, block in stage.named_children():
            block_convs = [
                (rel, m)
                for rel, m in block.named_modules()
                if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1) and not _is_shortcut(rel)
            ]
            new_keys: dict[tuple, list[tuple[str, str]]] = {}
            for rel, conv in block_convs:
                full = f"{stage_name}.{block_name}.{rel}"
                key = (tuple(conv.weight.shape), conv.groups)
                if key in parents:
                    if allowed is None or full in allowed:
                        options = parents[key]
                        same = [f for r, f in options if r == rel]
                        pairs[full] = same[0] if same else options[0][1]
                else:
                    new_keys.setdefault(key, []).append((rel, full))
            for key, convs in new_keys.items():
                parents.setdefault(key, convs)
    return pairs


def convert(
    model: nn.Module,
    method: str,
    *,
    include: Patterns = None,
    exclude: Patterns = None,
    stages: str | Sequence[str] = "late",
    wiring: str = "pairing",
    **layer_kwargs: Any,
) -> nn.Module:
    """Replace ``nn.Conv2d`` layers of ``model`` (in place) by ``method``'s dynamic layer; returns ``model``.

    Args:
        model: a static network; a lone ``nn.Conv2d`` is allowed (the new layer is then returned).
        method: one of ``WIRING`` ("condconv", "dyconv", "odconv", "kerneldna").
        include: glob patterns / module prefixes; if given, exactly the matching convs are candidates
            (the method's default wiring is then ignored).
        exclude: patterns of convs to keep static.
        stages: KernelDNA only: "late", "all" or stage names.
        wiring: KernelDNA only: "pairing" (the only wiring a conversion can do; see the module docstring).
        **layer_kwargs: passed to the layer (e.g. ``num_kernels=2``, ``reduction=1/8``, ``temperature=1.0``).

    Each new layer gets ``_bank`` = its qualified name, the same device/dtype and train/eval mode.
    """
    spec = _method(method)
    classifier = layer_kwargs.pop("classifier", False) if method == "dcd" else False
    if not isinstance(classifier, bool):
        raise ValueError(f"classifier must be True or False (DCD's dynamic classifier), got {classifier!r}")
    kwargs = {**spec.defaults, **layer_kwargs}
    if method != "kerneldna" and (stages != "late" or wiring != "pairing"):
        raise ValueError(
            f"stages and wiring are only used by method 'kerneldna', got stages={stages!r}, "
            f"wiring={wiring!r} for {method!r}"
        )
    if method == "kerneldna":
        _check_wiring(wiring)
    if isinstance(model, nn.Conv2d):  # a lone conv (KernelDNA: a standalone layer owning its kernel)
        return spec.layer.from_conv(model, **kwargs)
    names = conversion_plan(model, method, include=include, exclude=exclude)
    modules = dict(model.named_modules())
    if method == "kerneldna":
        pairs = kerneldna_pairs(model, stages=stages, candidates=names)
        for child, parent in pairs.items():
            layer = KernelDNAConv2d.from_conv(modules[child], parent=modules[parent], **kwargs)
            layer.parent_name = parent
            layer._bank = child
            _replace(model, child, layer)
        return model
    if not names and spec.accepts is not None and include is None:
        raise ValueError(_nothing_to_convert(model, method))
    for name in names:
        try:
            layer = spec.layer.from_conv(modules[name], **kwargs)
        except ValueError as err:
            raise ValueError(f"method {method!r} cannot convert {name!r}: {err}") from None
        layer._bank = name
        _replace(model, name, layer)
    if classifier:
        linears = [n for n, m in model.named_modules() if type(m) is nn.Linear]
        if not linears:
            raise ValueError("classifier=True needs an nn.Linear classifier; the model has none")
        last = linears[-1]
        head = DCDLinear.from_linear(modules[last])
        head._bank = last
        _replace(model, last, head)
    return model


def _nothing_to_convert(model: nn.Module, method: str) -> str:
    """Why ``method``'s default wiring takes no conv of ``model`` (counts per reason)."""
    spec = WIRING[method]
    convs = _plain_convs(model)
    reasons: dict[str, int] = {}
    for i, (name, conv) in enumerate(convs):
        if spec.static_stem and i == 0:
            why = "the stem (kept static)"
        elif spec.static_downsample and _is_shortcut(name):
            why = "downsample/shortcut (kept static)"
        else:
            why = spec.accepts(conv) or "accepted"
            why = why.split(":")[0] if why.startswith("groups=") else why
        reasons[why] = reasons.get(why, 0) + 1
    found = "; ".join(f"{n} x {r}" for r, n in reasons.items()) or "no nn.Conv2d at all"
    rule = {
        "dcd": "DCD's official wiring makes the dense block convs of ResNets and MobileNetV2 dynamic",
        "fdconv": (
            "FDConv's official gating takes convs with min(in, out) > 16 and a 1x1 or 3x3 kernel, "
            "stem and downsample static"
        ),
    }[method]
    return (
        f"method {method!r} finds no conv to convert in {type(model).__name__}: {rule}; this model's convs: "
        f"{found}. Name layers with include= to force a choice (the layer refuses what it cannot do)."
    )


def _check_wiring(wiring: str) -> None:
    if wiring not in KERNELDNA_WIRINGS:
        raise ValueError(f"wiring must be one of {list(KERNELDNA_WIRINGS)}, got {wiring!r}")
    if wiring == "official":
        raise ValueError(
            "wiring='official' (the default of method 'kerneldna') is not a conversion: the official "
            "KernelDNA models rebuild whole stages and are built by "
            f"create_model(arch, method='kerneldna') for {list(KERNELDNA_OFFICIAL_ARCHS)}. To convert "
            "another network, pass wiring='pairing' "
            "(kwlab's same-shape pairing heuristic, not the paper's wiring)."
        )


def convert_kerneldna(
    model: nn.Module, *, preset: str | None = None, wiring: str = "official", **options: Any
) -> nn.Module:
    """The "kerneldna" converter of :data:`kwlab.methods.METHODS`: ``wiring="pairing"`` converts ``model``
    with kwlab's pairing heuristic; ``"official"`` (default) refuses, naming ``create_model`` (see above)."""
    if preset is not None:
        raise ValueError(f"method 'kerneldna' has no presets, got preset={preset!r}")
    _check_wiring(wiring)
    return convert(model, "kerneldna", wiring=wiring, **options)
