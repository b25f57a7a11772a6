"""KernelWarehouse's selection rules: which conv/linear layers convert, and which warehouse each one joins
(the sharing rules of :mod:`kwlab.methods.kernelwarehouse`'s docstring). Nothing here sizes or builds a
warehouse; :mod:`kwlab.methods.kw_plan` does.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import nn

from kwlab.layers.attention import attention_parameter_count
from kwlab.layers.warehouse import LayerSpec, WarehouseOptions, owned_cell_count, warehouse_cell_shape

from .kw_options import KWOptions, SharingRule
from .surgery import _CONV_LIKE, check_patterns, matches, resolution, trace_layers

__all__ = ["layer_kind", "generic_stage_rule", "layer_spec", "why_not_convertible", "warehouse_keys"]

_CONVERTIBLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def layer_kind(module: nn.Module) -> str:
    """``conv1d``/``conv2d``/``conv3d``/``linear``, with a ``dw`` prefix for depthwise convs."""
    if isinstance(module, nn.Linear):
        return "linear"
    d = len(module.kernel_size)
    depthwise = module.groups > 1 and module.groups == module.in_channels
    return f"{'dw' if depthwise else ''}conv{d}d"


def generic_stage_rule(name: str, module: nn.Module) -> str:
    """The "names" stage of a layer of a model that has no notion of stage (the part of its name before the
    first numeric component, and its kind)."""
    parts = name.split(".")
    stage = []
    for p in parts:
        if p.isdigit():
            break
        stage.append(p)
    if len(stage) == len(parts):
        stage = parts
    return ".".join(stage) + ":" + layer_kind(module)


def _builtin_rule(model: nn.Module, sharing: str) -> SharingRule | None:
    """The rule for ``sharing`` when it needs no trace (None: the traced stage rule)."""
    stage_rule: SharingRule | None = getattr(model, "kw_stage_rule", None)
    if sharing == "layer":
        if stage_rule is not None:
            return lambda n, m: None if stage_rule(n, m) is None else n
        return lambda n, m: n
    if sharing == "network":
        if stage_rule is not None:
            return lambda n, m: None if stage_rule(n, m) is None else "network:" + layer_kind(m)
        return lambda n, m: "network:" + layer_kind(m)
    if stage_rule is not None:
        return stage_rule
    return generic_stage_rule if sharing == "names" else None


def layer_spec(name: str, module: nn.Module) -> LayerSpec:
    """The shape of a conv/linear layer as the warehouse planner reads it."""
    if isinstance(module, nn.Linear):
        return LayerSpec(name, "linear", module.in_features, module.out_features, (1,), 1)
    d = len(module.kernel_size)
    return LayerSpec(
        name, f"conv{d}d", module.in_channels, module.out_channels, tuple(module.kernel_size), module.groups
    )


def why_not_convertible(module: nn.Module) -> str | None:
    """Why KW cannot convert this conv/linear-like layer (None: it can)."""
    if type(module) not in _CONVERTIBLE:
        base = next((c.__name__ for c in _CONVERTIBLE if isinstance(module, c)), None)
        if base is None:
            return f"{type(module).__name__}: KW has no counterpart (transposed convs are not supported)"
        return (
            f"{type(module).__name__} is a subclass of {base}; its owner may use the weight directly "
            f"(as nn.MultiheadAttention's out_proj), so it stays static"
        )
    if getattr(module, "padding_mode", "zeros") != "zeros":
        return f"padding_mode={module.padding_mode!r}: KW layers support 'zeros' only"
    if getattr(module, "padding", None) == "same" and any(
        d * (k - 1) % 2 for k, d in zip(module.kernel_size, module.dilation)
    ):
        return (
            f"padding='same' with kernel_size={module.kernel_size}, dilation={module.dilation} pads one side "
            "more than the other, which KW layers do not support"
        )
    return None


def _warehouse_cost(key, specs, opts, attn) -> tuple[int, int] | None:
    """(cell parameters, attention parameters) of one warehouse holding ``specs``; None if not plannable."""
    shape = warehouse_cell_shape(key, specs, opts)
    cell = math.prod(shape)
    ms = [s.weight_numel // cell for s in specs]
    n = max(int(sum(ms) * float(opts.budget)), 1)
    if sum(owned_cell_count(m, opts.budget) for m in ms) != n:
        return None
    att = sum(
        attention_parameter_count(s.in_channels, m, n, budget=opts.budget, reduction=opts.reduction, **attn)
        for s, m in zip(specs, ms)
    )
    return n * cell, att


def _traced_stages(
    candidates: list[tuple[str, nn.Module]],
    trace: dict,
    options_for: Callable[[str], WarehouseOptions],
    attn: dict,
    attention_ratio: float,
    left_static: dict[str, str],
) -> dict[str, str]:
    """The traced stage rule: name -> warehouse key (see the module docstring)."""
    groups: dict[str, list[tuple[str, nn.Module]]] = {}
    for name, module in sorted(candidates, key=lambda nm: trace[nm[0]].order):
        res = resolution(module, trace[name].in_shape)
        kind = layer_kind(module)
        if kind.startswith("conv") and module.groups > 1:
            kind = "g" + kind
        groups.setdefault(f"{kind}@{'x'.join(map(str, res)) or 'vector'}", []).append((name, module))
    keys: dict[str, str] = {}
    for stage, members in groups.items():
        parts: list[list[LayerSpec]] = []
        for name, module in members:
            spec = layer_spec(name, module)
            placed = False
            for part in parts:
                key = stage if part is parts[0] else f"{stage}/{parts.index(part)}"
                try:
                    cost = _warehouse_cost(key, [*part, spec], options_for(key), attn)
                except ValueError:
                    cost = None
                if cost is not None and cost[1] <= attention_ratio * cost[0]:
                    part.append(spec)
                    placed = True
                    break
            if placed:
                continue
            key = stage if not parts else f"{stage}/{len(parts)}"
            try:
                cost = _warehouse_cost(key, [spec], options_for(key), attn)
            except ValueError as err:  # cell ratios that cannot cut this layer: static, and said so
                left_static[name] = str(err).split(". Allowed")[0]
                continue
            if cost is None:
                b = options_for(key).budget
                left_static[name] = (
                    f"budget={b} needs its mixtures in whole q*q blocks (the 1/q init pattern); smaller "
                    f"cell_in/cell_out convert it"
                    if b < 1
                    else "its cells cannot be planned with these cell ratios"
                )
            else:  # a narrow or depthwise layer too: its own warehouse, as the official code converts it
                parts.append([spec])
        for i, part in enumerate(parts):
            for spec in part:
                keys[spec.name] = stage if i == 0 else f"{stage}/{i}"
    return keys


def _selected(named: list[tuple[str, nn.Module]], opts: KWOptions, left_static: dict[str, str]) -> list:
    """The layers ``include``/``exclude`` select among those KW can convert (the rest: ``left_static``)."""
    check_patterns("include", opts.include, [n for n, _ in named], "conv/linear layer")
    check_patterns("exclude", opts.exclude, [n for n, _ in named], "conv/linear layer")
    candidates = []
    for name, module in named:
        why = why_not_convertible(module)
        if why is None and opts.include is not None and not matches(name, opts.include):
            why = "not matched by include"
        if why is None and opts.exclude is not None and matches(name, opts.exclude):
            why = "matched by exclude"
        if why is not None:
            left_static[name] = why
        else:
            candidates.append((name, module))
    return candidates


def _traced_keep(named, candidates, trace: dict, opts: KWOptions, left_static: dict[str, str]) -> list:
    """Of the traced candidates, drop those never run, squeeze-excitation convs and the classifier head."""
    kept = []
    # the head is the last conv/linear layer run, whether or not include/exclude selected it
    executed = sorted((n for n, _ in named if n in trace), key=lambda n: trace[n].order)
    last = executed[-1] if executed else None
    for name, module in candidates:
        t = trace.get(name)
        if t is None:
            left_static[name] = "not called in the traced forward pass"
        elif (
            not opts.squeeze_excitation
            and not isinstance(module, nn.Linear)
            and (
                all(k == 1 for k in module.kernel_size)
                and all(r == 1 for r in resolution(module, t.in_shape))
            )
            and name != last
            and name != ""
        ):
            left_static[name] = "squeeze-excitation conv (1x1 on a pooled input); squeeze_excitation=True"
        elif not opts.classifier and name == last and name != "":  # a lone layer is no head
            left_static[name] = "classifier head (the last layer run); classifier=True converts it"
        else:
            kept.append((name, module))
    return kept


def warehouse_keys(
    model: nn.Module, opts: KWOptions
) -> tuple[list[tuple[str, nn.Module, str | None]], dict[str, str], int]:
    """Every selected layer with its warehouse key (None: static), why each other layer stays static, and
    the number of conv/linear layers of ``model``."""
    named = [(n, m) for n, m in model.named_modules() if isinstance(m, _CONV_LIKE)]
    left_static: dict[str, str] = {}
    candidates = _selected(named, opts, left_static)
    sharing = opts.sharing
    generic = not callable(sharing) and getattr(model, "kw_stage_rule", None) is None
    rule = sharing if callable(sharing) else _builtin_rule(model, sharing)
    trace = None
    if generic:
        try:
            trace = trace_layers(model, opts.example_input)
        except ValueError:
            if rule is None or opts.example_input is not None:
                raise
    elif opts.example_input is not None:
        trace_layers(model, opts.example_input)  # a wrong example input is an error on every path
    if trace is not None:
        candidates = _traced_keep(named, candidates, trace, opts, left_static)
    if rule is None:
        auto = _traced_stages(
            candidates, trace, opts.warehouse_for, opts.attention_kwargs, opts.attention_ratio, left_static
        )
        return [(n, m, auto.get(n)) for n, m in candidates], left_static, len(named)
    pairs = []
    for name, module in candidates:
        key = rule(name, module)
        if key is not None and not isinstance(key, str):
            raise ValueError(
                f"sharing rule returned {key!r} for layer {name!r}; keys must be strings (or None: static)"
            )
        if callable(sharing) and rule(name, module) != key:
            raise ValueError(
                f"sharing rule returned different keys for layer {name!r} on two calls; it must be a "
                f"function of (name, module) only"
            )
        if key is None:
            left_static.setdefault(name, "the sharing rule returned None")
        pairs.append((name, module, key))
    return pairs, left_static, len(named)
