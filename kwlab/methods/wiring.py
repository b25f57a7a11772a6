"""Where a family method puts its layer: the :class:`Wiring` a :class:`kwlab.methods.Method` row carries, and
the rules that read it (which convs are candidates, which stay static, KernelDNA's stages and pairs).

Nothing here builds a layer; :mod:`kwlab.methods.conversion` plans and swaps, and
:mod:`kwlab.methods.family` documents each method's wiring on a ResNet.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from kwlab.layers.base import DynamicLayer

from .surgery import Patterns, check_patterns, matches, select

__all__ = [
    "Wiring",
    "KERNELDNA_WIRINGS",
    "KERNELDNA_OFFICIAL_ARCHS",
    "dcd_accepts",
    "is_shortcut",
    "plain_convs",
    "wired_convs",
    "find_stages",
    "kerneldna_pairs",
    "check_kerneldna_wiring",
]


@dataclass(frozen=True)
class Wiring:
    """How a method that swaps convs (the family) is wired into a network: a field of its
    :class:`kwlab.methods.Method` row (which names the layer class and says everything else).

    Attributes:
        defaults: layer keywords used unless overridden.
        static_stem: keep the first conv static.
        static_downsample: keep downsample/shortcut convs static.
        accepts: ``accepts(conv) -> None`` if the method's rule takes ``conv``, else the reason it does not
            (DCD: dense convs only; FDConv: the official gating). Applies to the default wiring only: convs
            named by ``include`` go to the layer, which refuses what it cannot do by name.
        rule: one line naming the rule behind ``accepts`` (said when it takes no conv of a model).
        pairing: KernelDNA: children share a same-shape parent's kernel (``stages=`` and ``wiring=`` options;
            the converter's default ``wiring="official"`` is the official models, which are not a conversion).
        classifier: ``classifier(linear) -> layer`` for the ``classifier=True`` option (DCD's dynamic head).
    """

    defaults: Mapping[str, Any] = field(default_factory=dict)
    static_stem: bool = True
    static_downsample: bool = True
    accepts: Callable[[nn.Conv2d], str | None] | None = None
    rule: str = ""
    pairing: bool = False
    classifier: Callable[[nn.Linear], nn.Module] | None = None

    def keeps_static(self, name: str, stem: str | None) -> str | None:
        """Why the default wiring keeps conv ``name`` static by its place (``stem``: the first conv)."""
        if self.static_stem and name == stem:
            return "the stem (the first conv)"
        if self.static_downsample and is_shortcut(name):
            return "a downsample/shortcut conv"
        return None


def dcd_accepts(conv: nn.Conv2d) -> str | None:
    """DCD's rule: dense convs whose padding keeps the size of the strided 1x1 dynamic path (the official
    models never make a grouped conv dynamic: MobileNetV2's depthwise convs stay static)."""
    if conv.groups != 1:
        return f"groups={conv.groups}: DCD makes dense convs dynamic only"
    pad = conv.padding if isinstance(conv.padding, tuple) else None
    if pad is None or any(2 * p != d * (k - 1) for p, d, k in zip(pad, conv.dilation, conv.kernel_size)):
        return f"padding {conv.padding!r} changes the output size of the strided 1x1 dynamic path"
    return None


_SHORTCUT_WORDS = ("downsample", "shortcut")

#: KernelDNA wirings: "official" (the paper's models, built by create_model) and "pairing" (kwlab heuristic).
KERNELDNA_WIRINGS = ("official", "pairing")
#: archs with an official KernelDNA model (``create_model(arch, method="kerneldna")``).
KERNELDNA_OFFICIAL_ARCHS = ("resnet18", "resnet50", "mobilenetv2_100", "mobilenetv2_050")


def is_shortcut(name: str) -> bool:
    """A name component contains "downsample" or "shortcut" (torchvision's ``layer2.0.downsample.0``)."""
    return any(word in part for part in name.split(".") for word in _SHORTCUT_WORDS)


def plain_convs(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """Every ``nn.Conv2d`` of ``model`` except those inside a dynamic layer (e.g. ODConv's attention)."""
    dynamic = [n for n, m in model.named_modules() if isinstance(m, DynamicLayer)]
    return [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and not any(n == d or n.startswith(d + ".") or d == "" for d in dynamic)
    ]


def wired_convs(
    model: nn.Module, wiring: Wiring, *, include: Patterns = None, exclude: Patterns = None
) -> list[str]:
    """Qualified names of the convs ``wiring`` takes (KernelDNA: candidates before pairing).

    Without ``include`` the wiring applies (stem, downsample convs and ``accepts``); an ``include`` replaces
    it by exactly the matching convs. ``exclude`` then drops convs (:func:`kwlab.methods.surgery.select`).
    """
    convs = plain_convs(model)
    if include is None:  # the method's wiring; an include replaces it
        stem = convs[0][0] if convs else None
        wired = [
            n
            for n, m in convs
            if wiring.keeps_static(n, stem) is None and (wiring.accepts is None or wiring.accepts(m) is None)
        ]
        check_patterns("exclude", exclude, [n for n, _ in convs], "conv")  # may name a conv already static
        return [n for n in wired if not matches(n, exclude, "exclude")]
    return [n for n, _ in select(convs, include, exclude, what="conv")]


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
    """``{child conv name: parent conv name}`` for the KernelDNA pairing rule (:mod:`kwlab.methods.family`).

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
                if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1) and not is_shortcut(rel)
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


def check_kerneldna_wiring(wiring: str) -> None:
    """Refuse a KernelDNA ``wiring=`` option that is not a conversion (``"official"``) or not known."""
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
