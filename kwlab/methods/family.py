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

Conversion is transactional: :func:`plan_family` first plans every layer and builds each new layer on the
meta device (so every layer is validated, shapes, groups, padding modes and ``padding="same"`` with an even
kernel included, without allocating anything); only then are the real layers built, and only when every one
of them was built are they swapped in. A selected conv that the method cannot represent, a pattern that
matches no conv, or a plan that converts nothing raises a ValueError naming each layer and why, and the
model is left exactly as it was. ``plan_family(model, method).frame()`` is the plan table (one row per
conv-like layer: converted or static, and why; parameters before and after), like
:func:`kwlab.plan_kernelwarehouse`'s.

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

import torch
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
    "plan_family",
    "FamilyPlan",
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


@dataclass
class FamilyPlan:
    """What :func:`convert` does to a model, decided (and validated) before anything is replaced.

    Attributes:
        method: the method ("condconv", "dyconv", "odconv", "kerneldna").
        layers: converted conv -> its KernelDNA parent (None for the other methods), in conversion order.
        left_static: every other conv of the model (``nn.Conv1d/2d/3d``, transposed convs, dynamic layers)
            -> why it stays as it is.
        refused: selected convs the method's layer cannot represent -> the layer's own error (any entry
            makes :func:`convert` refuse the whole conversion).
        static_params: parameters of each listed conv as it is now.
        converted_params: parameters each converted layer will hold (a KernelDNA child: without the
            parent's kernel, which it shares).
        static_parameters: parameters of the whole model as it is now.
    """

    method: str
    layers: dict[str, str | None] = field(default_factory=dict)
    left_static: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    static_params: dict[str, int] = field(default_factory=dict)
    converted_params: dict[str, int] = field(default_factory=dict)
    static_parameters: int = 0

    def table(self) -> list[dict]:
        """One row per conv of the model: layer, status ("converted", "static" or "refused"), reason,
        parent (KernelDNA), static_params and params (after conversion)."""
        rows = []
        for name, count in self.static_params.items():
            if name in self.layers:
                status, reason = "converted", ""
            elif name in self.refused:
                status, reason = "refused", self.refused[name]
            else:
                status, reason = "static", self.left_static.get(name, "")
            rows.append(
                dict(
                    layer=name,
                    status=status,
                    reason=reason,
                    parent=self.layers.get(name) or "",
                    static_params=count,
                    params=self.converted_params.get(name, count),
                )
            )
        return rows

    def totals(self) -> dict:
        """The whole model before and after: parameters, their ratio, and layer counts."""
        replaced = sum(self.static_params[n] for n in self.layers)
        added = sum(self.converted_params[n] for n in self.layers)
        converted = self.static_parameters - replaced + added
        return dict(
            static_model=self.static_parameters,
            converted_model=converted,
            ratio=converted / self.static_parameters if self.static_parameters else float("nan"),
            converted_layers=len(self.layers),
            static_layers=len(self.left_static),
            refused_layers=len(self.refused),
        )

    def frame(self):
        """``(pandas.DataFrame of table() indexed by layer, totals())`` (needs pandas, the "lab" extra)."""
        import pandas as pd  # noqa: PLC0415 - optional dependency

        columns = ["layer", "status", "reason", "parent", "static_params", "params"]
        return pd.DataFrame(self.table(), columns=columns).set_index("layer"), self.totals()

    def check(self) -> None:
        """Raise what :func:`convert` raises for this plan (refused layers, or nothing to convert)."""
        if self.refused:
            listed = "; ".join(f"{n}: {why}" for n, why in self.refused.items())
            raise ValueError(
                f"cannot convert {len(self.refused)} selected conv(s) to {self.method!r}, so nothing was "
                f"converted: {listed}. Leave them static with exclude={list(self.refused)!r} "
                "(or change them)."
            )
        if not self.layers:
            reasons = list(self.left_static.items())
            listed = "; ".join(f"{n}: {why}" for n, why in reasons[:8]) or "the model has no conv"
            if len(reasons) > 8:
                listed += f"; and {len(reasons) - 8} more (plan_family(...).frame() lists every layer)"
            raise ValueError(
                f"method {self.method!r} would convert no layer of this model, so nothing was converted "
                f"({listed}). It converts nn.Conv2d layers (include=[...] selects them by name)."
            )


def _why_static(name: str, module: nn.Module) -> str:
    if isinstance(module, DynamicLayer):
        return f"already a dynamic layer ({type(module).__name__})"
    return f"{type(module).__name__}: the method converts nn.Conv2d layers only"


def _meta_twin(conv: nn.Conv2d) -> nn.Conv2d:
    """An ``nn.Conv2d`` on the meta device with ``conv``'s geometry (no memory, nothing copied)."""
    return nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        conv.bias is not None,
        conv.padding_mode,
        device="meta",
        dtype=conv.weight.dtype,
    )


def plan_family(
    model: nn.Module,
    method: str,
    *,
    include: Patterns = None,
    exclude: Patterns = None,
    stages: str | Sequence[str] = "late",
    wiring: str = "pairing",
    **layer_kwargs: Any,
) -> FamilyPlan:
    """The plan :func:`convert` follows (arguments as there), without changing ``model``.

    Every selected conv's new layer is built on the meta device, so anything the layer refuses (a padding
    mode, ``padding="same"`` with an even kernel, groups, a bad keyword) is in ``plan.refused`` before any
    real tensor exists. ``plan.frame()`` is the table; ``plan.check()`` raises what ``convert`` raises.
    """
    spec = _method(method)
    kwargs = {**spec.defaults, **layer_kwargs}
    if method != "kerneldna" and (stages != "late" or wiring != "pairing"):
        raise ValueError(
            f"stages and wiring are only used by method 'kerneldna', got stages={stages!r}, "
            f"wiring={wiring!r} for {method!r}"
        )
    if method == "kerneldna":
        _check_wiring(wiring)
    # the layer keywords first, on a plain 3x3 conv: a bad keyword is the keyword's error, not every layer's
    probe = nn.Conv2d(16, 16, 3, padding=1, device="meta")
    if spec.accepts is None or spec.accepts(probe) is None:  # FDConv's gating refuses this probe conv
        spec.layer.from_conv(probe, **kwargs)
    plain = _plain_convs(model)
    plan = FamilyPlan(method, static_parameters=sum(p.numel() for p in model.parameters()))
    plain_names = {n for n, _ in plain}
    inside = [n for n, m in model.named_modules() if isinstance(m, DynamicLayer)]
    for name, module in model.named_modules():
        is_conv = isinstance(module, nn.modules.conv._ConvNd)
        if not (is_conv or isinstance(module, DynamicLayer)):
            continue
        if name in plain_names:
            plan.static_params[name] = sum(p.numel() for p in module.parameters())
        elif not any(name.startswith(d + ".") or (d == "" and name) for d in inside):
            plan.static_params[name] = sum(p.numel() for p in module.parameters())
            plan.left_static[name] = _why_static(name, module)
    names = conversion_plan(model, method, include=include, exclude=exclude)
    chosen = set(names)
    stem = plain[0][0] if plain else None
    for name, _ in plain:
        if name in chosen:
            continue
        if include is not None:
            plan.left_static[name] = "not matched by include"
        elif exclude is not None and matches(name, exclude, "exclude") and not (
            (spec.static_stem and name == stem) or (spec.static_downsample and _is_shortcut(name))
        ):
            plan.left_static[name] = "matched by exclude"
        elif spec.static_stem and name == stem:
            plan.left_static[name] = f"the stem (the first conv): {method} keeps it static"
        else:
            plan.left_static[name] = f"a downsample/shortcut conv: {method} keeps it static"
    modules = dict(plain)
    if method == "kerneldna":
        pairs = kerneldna_pairs(model, stages=stages, candidates=names)
        parents = set(pairs.values())
        for name in names:
            if name in parents:
                plan.left_static[name] = "a KernelDNA parent: stays static, its kernel is shared"
            elif name not in pairs:
                plan.left_static[name] = (
                    f"no same-shape conv in an earlier block of a chosen stage (stages={stages!r})"
                )
        targets = [(child, pairs[child]) for child in names if child in pairs]
    else:
        targets = [(name, None) for name in names]
    for name, parent in targets:
        conv = modules[name]
        try:
            twin = _meta_twin(conv)
            if parent is None:
                layer = spec.layer.from_conv(twin, **kwargs)
            else:
                layer = KernelDNAConv2d.from_conv(twin, parent=_meta_twin(modules[parent]), **kwargs)
        except (ValueError, TypeError) as err:
            plan.refused[name] = str(err).splitlines()[0] if str(err) else type(err).__name__
            continue
        shared = layer.parent_weight.numel() if parent is not None else 0
        plan.layers[name] = parent
        plan.converted_params[name] = sum(p.numel() for p in layer.parameters()) - shared
    return plan


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

    Each new layer gets ``_bank`` = its qualified name, the same device/dtype and train/eval mode. All or
    nothing: the plan (:func:`plan_family`) is validated and every new layer built before the first one is
    swapped in; a ValueError (a layer the method cannot represent, a pattern that matches nothing, nothing
    to convert) leaves ``model`` exactly as it was.
    """
    spec = _method(method)
    classifier = layer_kwargs.pop("classifier", False) if method == "dcd" else False
    if not isinstance(classifier, bool):
        raise ValueError(f"classifier must be True or False (DCD's dynamic classifier), got {classifier!r}")
    if isinstance(model, nn.Conv2d):  # a lone conv (KernelDNA: a standalone layer owning its kernel)
        kwargs = {**spec.defaults, **layer_kwargs}
        if method != "kerneldna" and (stages != "late" or wiring != "pairing"):
            raise ValueError(f"stages and wiring are only used by method 'kerneldna', not {method!r}")
        if method == "kerneldna":
            _check_wiring(wiring)
        return spec.layer.from_conv(model, **kwargs)
    plan = plan_family(
        model, method, include=include, exclude=exclude, stages=stages, wiring=wiring, **layer_kwargs
    )
    if not plan.layers and spec.accepts is not None and include is None:
        raise ValueError(_nothing_to_convert(model, method))
    plan.check()
    kwargs = {**spec.defaults, **layer_kwargs}
    modules = dict(model.named_modules())
    built: dict[str, nn.Module] = {}
    with torch.no_grad():
        for name, parent in plan.layers.items():
            if parent is None:
                layer = spec.layer.from_conv(modules[name], **kwargs)
            else:
                layer = KernelDNAConv2d.from_conv(modules[name], parent=modules[parent], **kwargs)
                layer.parent_name = parent
            layer._bank = name
            built[name] = layer
        if classifier:
            linears = [n for n, m in model.named_modules() if type(m) is nn.Linear]
            if not linears:
                raise ValueError("classifier=True needs an nn.Linear classifier; the model has none")
            head = DCDLinear.from_linear(modules[linears[-1]])
            head._bank = linears[-1]
            built[linears[-1]] = head
    for name, layer in built.items():  # nothing below can fail: the swap is all or nothing
        _replace(model, name, layer)
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
