"""Convert a static ConvNet into one of KernelWarehouse's relatives: CondConv, DY-Conv, ODConv, KernelDNA,
DCD, FDConv.

``convert(model, method)`` swaps ``nn.Conv2d`` layers in place for the method's layer and returns the
model. Each converted layer starts from the static conv it replaces (every expert/kernel is a copy of
its weight and bias), so:

* DY-Conv reproduces the static output exactly, for any attention (its mixture is convex);
* CondConv gives ``(sum_e r_e(x)) * conv(x)`` (sigmoid routing is not normalised);
* ODConv reproduces it where the channel, filter and spatial attentions equal 1;
* KernelDNA children take their *parent's* kernel; with the gate at 1 they reproduce the parent conv.

Default wiring on a ResNet (the ``wiring`` field of each :data:`kwlab.methods.METHODS` row, a
:class:`~kwlab.methods.wiring.Wiring`), following the reference digest (sections 2-4):

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
   (:func:`kwlab.methods.surgery.select`, the rule of every method and the probe; the wiring rules are in
   :mod:`kwlab.methods.wiring`);
5. explicit layer keywords win over the defaults (``kwlab.convert(model, m, preset="Nx")`` sets the kernel
   count of condconv/dyconv/odconv).

Conversion is transactional (:mod:`kwlab.methods.conversion`): :func:`plan_family` first plans every layer and
builds each new layer on the meta device (so every layer is validated, shapes, groups, padding modes and
``padding="same"`` with an even kernel included, without allocating anything); only then are the real layers
built, and only when every one of them was built are they swapped in. A selected conv that the method cannot
represent, a pattern that matches no conv, or a plan that converts nothing raises a ValueError naming each
layer and why, and the model is left exactly as it was. ``plan_family(model, method).frame()`` is the plan
table (one row per conv-like layer: converted or static, and why; parameters before and after), like
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

Constant attention: ``attention="constant"`` (CondConv, DY-Conv, ODConv, KernelDNA) builds each layer with
learned constants in place of its attention head (kwlab's control for input dependence; see each layer's
module doc); a conversion with it keeps the same wiring. DCD and FDConv refuse it (their rows say why).

Temperatures: DY-Conv and ODConv anneal T from 30 to 1 over 10 epochs (their rows in
:data:`kwlab.methods.METHODS` hold the contract); new layers start at T = 30.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from torch import nn

from kwlab.utils import moved_names

from .conversion import FamilyPlan as _FamilyPlan
from .conversion import convert_row, plan_row
from .surgery import Patterns
from .table import METHODS, Method
from .wiring import Wiring as _Wiring
from .wiring import wired_convs

__all__ = [
    "WIRING",
    "family_method",
    "convert",
    "conversion_plan",
    "plan_family",
]

#: Public names that lived here once -> their one home; importing one from here raises an error naming it.
__getattr__ = moved_names(
    __name__,
    {
        "Wiring": "kwlab.methods",
        "KERNELDNA_WIRINGS": "kwlab.methods.wiring",
        "FamilyPlan": "kwlab.methods.conversion",
        "find_stages": "kwlab.methods.wiring",
        "kerneldna_pairs": "kwlab.methods.wiring",
    },
)


class _WiringView(Mapping):
    """``{method: Wiring}`` read from the :data:`~kwlab.methods.METHODS` rows that have one (read-only, live:
    a row added at run time shows here at once)."""

    def __getitem__(self, method: str) -> _Wiring:
        row = METHODS.get(method)
        if row is None or row.wiring is None:
            raise KeyError(method)
        return row.wiring

    def __iter__(self) -> Iterator[str]:
        return (name for name, row in METHODS.items() if row.wiring is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"WIRING({dict(self)!r})"


#: The family's wirings by method name: derived from :data:`~kwlab.methods.METHODS` (each row's ``wiring``).
WIRING: Mapping[str, _Wiring] = _WiringView()


def family_method(method: str) -> Method:
    """The :data:`~kwlab.methods.METHODS` row of a family method (one with a wiring); an error naming them
    otherwise."""
    row = METHODS.get(method) if isinstance(method, str) else None
    if row is None or row.wiring is None:
        raise ValueError(f"method must be one of {sorted(WIRING)}, got {method!r}")
    return row


def conversion_plan(
    model: nn.Module, method: str, *, include: Patterns = None, exclude: Patterns = None
) -> list[str]:
    """Qualified names of the convs :func:`convert` would replace (KernelDNA: candidates before pairing)."""
    return wired_convs(model, family_method(method).wiring, include=include, exclude=exclude)


def plan_family(model: nn.Module, method: str, **options: Any) -> _FamilyPlan:
    """The plan :func:`convert` follows (options as there), without changing ``model``.

    Every selected conv's new layer is built on the meta device, so anything the layer refuses (a padding
    mode, ``padding="same"`` with an even kernel, groups, a bad keyword) is in ``plan.refused`` before any
    real tensor exists. ``plan.frame()`` is the table; ``plan.check()`` raises what ``convert`` raises.
    """
    return plan_row(model, family_method(method), **options)


def convert(model: nn.Module, method: str, **options: Any) -> nn.Module:
    """Replace ``nn.Conv2d`` layers of ``model`` (in place) by ``method``'s dynamic layer; returns ``model``.

    Args:
        model: a static network; a lone ``nn.Conv2d`` is allowed (the new layer is then returned).
        method: a method whose row has a wiring (``list(WIRING)``: "condconv", "dyconv", "odconv",
            "kerneldna", "dcd", "fdconv").
        **options:
            ``include``: glob patterns / module prefixes; if given, exactly the matching convs are candidates
            (the method's default wiring is then ignored).
            ``exclude``: patterns of convs to keep static.
            ``stages``: KernelDNA only: "late" (default), "all" or stage names.
            ``wiring``: KernelDNA only: "pairing" (the default here, and the only wiring a conversion can do;
            see the module docstring).
            ``classifier``: DCD only: True also swaps the last ``nn.Linear`` for its dynamic classifier.
            Any other option goes to the layer (e.g. ``num_kernels=2``, ``reduction=1/8``,
            ``temperature=1.0``), over the wiring's defaults.

    Each new layer gets ``_bank`` = its qualified name, the same device/dtype and train/eval mode. All or
    nothing: the plan (:func:`plan_family`) is validated and every new layer built before the first one is
    swapped in; a ValueError (a layer the method cannot represent, a pattern that matches nothing, nothing
    to convert) leaves ``model`` exactly as it was.
    """
    return convert_row(model, family_method(method), **options)
