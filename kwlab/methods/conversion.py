"""The family's conversion of one :class:`kwlab.methods.Method` row that carries a :class:`Wiring`: plan every
layer on the meta device (:class:`FamilyPlan`), then build them all, then swap them in (all or nothing).

The rows are passed in, never looked up: :mod:`kwlab.methods.table` derives each family row's converter from
:func:`converter_for`, and :mod:`kwlab.methods.family` is the same conversion by method name. The wiring
rules themselves are in :mod:`kwlab.methods.wiring`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from kwlab.layers.base import DynamicLayer, like_conv

from .surgery import Patterns, matches, set_module
from .wiring import check_kerneldna_wiring, kerneldna_pairs, plain_convs, wired_convs

__all__ = ["FamilyPlan", "plan_row", "convert_row", "converter_for"]


@dataclass
class FamilyPlan:
    """What :func:`kwlab.methods.family.convert` does to a model, decided (and validated) before anything is
    replaced.

    Attributes:
        method: the method ("condconv", "dyconv", "odconv", "kerneldna", "dcd", "fdconv").
        layers: converted conv -> its KernelDNA parent (None for the other methods), in conversion order.
        left_static: every other conv of the model (``nn.Conv1d/2d/3d``, transposed convs, dynamic layers)
            -> why it stays as it is.
        refused: selected convs the method's layer cannot represent -> the layer's own error (any entry
            makes the conversion refuse as a whole).
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
        """A pandas DataFrame of :meth:`table` indexed by layer, with :meth:`totals` in its
        ``attrs["totals"]`` (needs pandas, the "lab" extra)."""
        import pandas as pd  # noqa: PLC0415 - optional dependency

        columns = ["layer", "status", "reason", "parent", "static_params", "params"]
        frame = pd.DataFrame(self.table(), columns=columns).set_index("layer")
        frame.attrs["totals"] = self.totals()
        return frame

    def check(self) -> None:
        """Raise what the conversion raises for this plan (refused layers, or nothing to convert)."""
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


#: the options that choose layers; every other option is the layer's keyword
_SELECTION = ("include", "exclude", "stages", "wiring")


def _why_static(module: nn.Module) -> str:
    if isinstance(module, DynamicLayer):
        return f"already a dynamic layer ({type(module).__name__})"
    return f"{type(module).__name__}: the method converts nn.Conv2d layers only"


def _meta_twin(conv: nn.Conv2d) -> nn.Conv2d:
    """An ``nn.Conv2d`` on the meta device with ``conv``'s geometry (no memory, nothing copied)."""
    return like_conv(nn.Conv2d, conv, device="meta")


def _check_pairing_options(row, stages, wiring: str) -> None:
    """``stages``/``wiring`` belong to a pairing wiring (KernelDNA) only."""
    if not row.wiring.pairing and (stages != "late" or wiring != "pairing"):
        raise ValueError(
            f"stages and wiring are only used by method 'kerneldna', got stages={stages!r}, "
            f"wiring={wiring!r} for {row.name!r}"
        )
    if row.wiring.pairing:
        check_kerneldna_wiring(wiring)


def plan_row(
    model: nn.Module,
    row,
    *,
    include: Patterns = None,
    exclude: Patterns = None,
    stages: str | Sequence[str] = "late",
    wiring: str = "pairing",
    init: str = "static",
    **layer_kwargs: Any,
) -> FamilyPlan:
    """The plan :func:`convert_row` follows for the method ``row`` (a :class:`kwlab.methods.Method` with a
    wiring), without changing ``model``.

    Every selected conv's new layer is built on the meta device, so anything the layer refuses (a padding
    mode, ``padding="same"`` with an even kernel, groups, a bad keyword) is in ``plan.refused`` before any
    real tensor exists.
    """
    spec, method = row.wiring, row.name
    kwargs = {**spec.defaults, **layer_kwargs}
    _check_pairing_options(row, stages, wiring)
    check_init(row, init)
    # the layer keywords first, on a plain 3x3 conv: a bad keyword is the keyword's error, not every layer's
    probe = nn.Conv2d(16, 16, 3, padding=1, device="meta")
    if spec.accepts is None or spec.accepts(probe) is None:  # FDConv's gating refuses this probe conv
        row.layer.from_conv(probe, **kwargs)
    plain = plain_convs(model)
    plan = FamilyPlan(method, static_parameters=sum(p.numel() for p in model.parameters()))
    plain_names = {n for n, _ in plain}
    inside = [n for n, m in model.named_modules() if isinstance(m, DynamicLayer)]
    for name, module in model.named_modules():
        if not isinstance(module, (nn.modules.conv._ConvNd, DynamicLayer)):
            continue
        if name in plain_names:
            plan.static_params[name] = sum(p.numel() for p in module.parameters())
        elif not any(name.startswith(d + ".") or (d == "" and name) for d in inside):
            plan.static_params[name] = sum(p.numel() for p in module.parameters())
            plan.left_static[name] = _why_static(module)
    names = wired_convs(model, spec, include=include, exclude=exclude)
    chosen = set(names)
    stem = plain[0][0] if plain else None
    for name, conv in plain:
        if name in chosen:
            continue
        placed = spec.keeps_static(name, stem)
        if include is not None:
            plan.left_static[name] = "not matched by include"
        elif exclude is not None and matches(name, exclude, "exclude") and placed is None:
            plan.left_static[name] = "matched by exclude"
        elif placed is not None:
            plan.left_static[name] = f"{placed}: {method} keeps it static"
        else:
            plan.left_static[name] = f"{method}'s rule: {spec.accepts(conv)}"
    modules = dict(plain)
    if spec.pairing:
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
        twin = _meta_twin(modules[name])
        try:
            if parent is None:
                layer = row.layer.from_conv(twin, **kwargs)
            else:
                layer = row.layer.from_conv(twin, parent=_meta_twin(modules[parent]), **kwargs)
        except (ValueError, TypeError) as err:
            plan.refused[name] = str(err).splitlines()[0] if str(err) else type(err).__name__
            continue
        shared = layer.parent_weight.numel() if parent is not None else 0
        plan.layers[name] = parent
        plan.converted_params[name] = sum(p.numel() for p in layer.parameters()) - shared
    return plan


def convert_row(model: nn.Module, row, **options: Any) -> nn.Module:
    """Replace ``nn.Conv2d`` layers of ``model`` (in place) by the layer of method ``row``; returns ``model``.

    Options as in :func:`kwlab.methods.family.convert` (``include``, ``exclude``, ``stages``, ``wiring``; the
    rest go to the layer). Each new layer gets ``_bank`` = its qualified name, the same device/dtype and
    train/eval mode. All or nothing: the plan (:func:`plan_row`) is validated and every new layer built
    before the first one is swapped in.
    """
    spec = row.wiring
    init = options.pop("init", "static")
    check_init(row, init)
    classifier = options.pop("classifier", False) if spec.classifier is not None else False
    if not isinstance(classifier, bool):
        raise ValueError(f"classifier must be True or False (DCD's dynamic classifier), got {classifier!r}")
    kwargs = {**spec.defaults, **{k: v for k, v in options.items() if k not in _SELECTION}}
    if isinstance(model, nn.Conv2d):  # a lone conv (KernelDNA: a standalone layer owning its kernel)
        _check_pairing_options(row, options.get("stages", "late"), options.get("wiring", "pairing"))
        layer = row.layer.from_conv(model, **kwargs)
        if init == "kaiming":
            layer.reset_parameters()
        return layer
    plan = plan_row(model, row, **options)
    if not plan.layers and spec.accepts is not None and options.get("include") is None:
        raise ValueError(_nothing_to_convert(model, row))
    plan.check()
    modules = dict(model.named_modules())
    built: dict[str, nn.Module] = {}
    with torch.no_grad():
        for name, parent in plan.layers.items():
            if parent is None:
                layer = row.layer.from_conv(modules[name], **kwargs)
            else:
                layer = row.layer.from_conv(modules[name], parent=modules[parent], **kwargs)
                layer.parent_name = parent
            if init == "kaiming":  # the official from-scratch init: every kernel drawn on its own
                layer.reset_parameters()
            layer._bank = name
            built[name] = layer
        if classifier:
            linears = [n for n, m in model.named_modules() if type(m) is nn.Linear]
            if not linears:
                raise ValueError("classifier=True needs an nn.Linear classifier; the model has none")
            head = spec.classifier(modules[linears[-1]])
            head._bank = linears[-1]
            built[linears[-1]] = head
    for name, layer in built.items():  # nothing below can fail: the swap is all or nothing
        set_module(model, name, layer)
    return model


#: ``init`` of the kernel-bank methods (CondConv, DY-Conv, ODConv): "static" copies the static conv into every
#: kernel (the converted net computes the static function: the start for a pretrained net), "kaiming" draws
#: every kernel on its own with the layer's ``reset_parameters`` (the official code's init for training from
#: scratch). Trained from scratch, "static" is a symmetric start: with a constant attention every kernel gets
#: the same gradient, so the kernels never separate and the learned constants get no gradient at all.
FAMILY_INITS = ("static", "kaiming")


def check_init(row, init: Any) -> None:
    """Refuse an ``init`` the method does not take (only rows that list ``init`` among their options)."""
    if init == "static":
        return
    if "init" not in row.options:
        raise ValueError(f"option init={init!r} does not apply to method={row.name!r}")
    if not isinstance(init, str) or init not in FAMILY_INITS:
        raise ValueError(f"init must be one of {list(FAMILY_INITS)} for method={row.name!r}, got {init!r}")


def _nothing_to_convert(model: nn.Module, row) -> str:
    """Why the default wiring of ``row`` takes no conv of ``model`` (counts per reason)."""
    spec = row.wiring
    convs = plain_convs(model)
    stem = convs[0][0] if convs else None
    reasons: dict[str, int] = {}
    for name, conv in convs:
        placed = spec.keeps_static(name, stem)
        if placed is not None:
            why = f"{placed.removeprefix('a ').split(' (')[0]} (kept static)"
        else:
            why = spec.accepts(conv) or "accepted"
            why = why.split(":")[0] if why.startswith("groups=") else why
        reasons[why] = reasons.get(why, 0) + 1
    found = "; ".join(f"{n} x {r}" for r, n in reasons.items()) or "no nn.Conv2d at all"
    return (
        f"method {row.name!r} finds no conv to convert in {type(model).__name__}: {spec.rule}; this model's "
        f"convs: {found}. Name layers with include= to force a choice (the layer refuses what it cannot do)."
    )


def converter_for(row) -> Callable[..., nn.Module]:
    """The converter a row with a wiring gets (``converter(model, *, preset=None, **options)``): the
    preset's options, then :func:`convert_row`. A pairing wiring (KernelDNA) defaults to
    ``wiring="official"``, which refuses and names ``create_model`` (its official models are no
    conversion)."""

    def converter(model: nn.Module, *, preset: str | None = None, **options: Any) -> nn.Module:
        if row.wiring.pairing:
            options.setdefault("wiring", "official")
        return convert_row(model, row, **{**row.preset_options(preset), **options})

    converter.__name__ = f"convert_{row.name}"
    converter.from_wiring = True
    return converter
