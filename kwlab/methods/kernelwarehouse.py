"""Turn any model into a KernelWarehouse model: :func:`kernelwarehouse`.

The conversion plans the warehouses from the model's own layers
(:func:`kwlab.layers.warehouse.plan_warehouses`) and replaces each selected ``nn.Conv1d/2d/3d`` and
``nn.Linear`` in place by its KW counterpart drawing from its warehouse. The first layer of a warehouse
(registration order) owns it as its child ``warehouse``; :func:`kwlab.warehouses` lists them.

Sharing rules (``sharing=``):

* ``"layer"``: every layer has its own warehouse (key: the layer's qualified name);
* ``"stage"`` (default): layers of one stage share. A kwlab model defines its stages (the official
  grouping, see :mod:`kwlab.models`). Any other model is traced once (``example_input``, default two
  224x224 images; shape only, under FakeTensorMode) and a stage is the set of same-kind layers
  (``conv2d``, ``dwconv2d``, ``gconv2d`` for grouped, ``linear``) that read one resolution, key e.g.
  ``"conv2d@56x56"``; a stride-2 transition conv joins the stage of the resolution it reads. Within a
  stage, layers join the first warehouse (in execution order) whose attention stays at most
  ``attention_ratio`` (0.5) x its cells; otherwise a new one (``"conv2d@56x56/1"``). A layer whose attention
  outweighs its cells even alone (depthwise and narrow layers, a small CNN's) gets a warehouse of its own, as
  the official code converts every such layer (its MobileNetV2 converts the stem and each depthwise conv);
  the plan table shows each warehouse's ``attention_share`` and the conversion warns above
  ``attention_share_warning`` (:data:`ATTENTION_SHARE_WARNING`, 0.5). Squeeze-excitation convs (1x1 on a
  pooled input; ``squeeze_excitation=True``), the classifier head (the last layer run, unless the model is
  that one layer; ``classifier=True``), layers the cell ratios cannot cut, padding modes other than zeros
  and ``padding="same"`` with an even kernel stay static; ``plan.left_static`` says why for each;
* ``"names"``: the earlier name rule: the stage of ``layer2.0.conv1`` is the part of its name before the
  first numeric component (``layer2``), a layer without one is its own stage, one warehouse per kind;
* ``"network"``: one warehouse per kind for the whole network;
* a callable ``rule(qualified_name, module) -> key | None``; None keeps that layer static.

The conversion is all or nothing: the plan is checked and every KW layer built before the first one is
swapped in, so a refusal leaves the model as it was. A lone ``nn.Conv2d``/``nn.Linear`` converts too (the
KW layer is returned).

``init="static"`` fills the owned cells from the existing weights (and copies biases), so that at
temperature 1 with a whole budget the converted model computes the original function: fine-tuning a
pretrained network into KW starts exactly where it was. Before anything is allocated the plan is
checked: above ``max_param_ratio`` (4) x the static parameters, a b < 1 plan that is not smaller than
static, or parameters (at the model's dtype) above ``max_memory_bytes`` raises a ValueError naming the
worst warehouses. The default memory budget (``"auto"``, :func:`default_memory_budget`) is a quarter of the
memory of the model's device (RAM for CPU and meta models, the GPU's memory for CUDA ones): training with
Adam holds about four copies of every parameter (weights, gradients, two moments). ``max_param_ratio=None``
and ``max_memory_bytes=None`` lift the limits. With ``b = 1/q`` only the blocks that the init
pattern keeps are copied (the model then starts as a block-sparse approximation). ``init="kaiming"``
uses the official initialisation. Converted layers start at temperature 1, the start of the official
schedule.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

from kwlab.layers.attention import (
    ATTENTION_FUNCTIONS,
    ATTENTION_NORMS,
    attention_parameter_count,
    check_attention_init,
)
from kwlab.layers.base import check_tau
from kwlab.layers.kernelwarehouse import KW_LAYERS, Warehouse, _KWConvNd, init_cells
from kwlab.layers.warehouse import (
    KWPlan,
    LayerSpec,
    WarehouseOptions,
    check_budget,
    owned_cell_count,
    owned_cells,
    plan_warehouses,
    warehouse_cell_shape,
    with_options,
)
from kwlab.ops import split_kernel

from .surgery import _CONV_LIKE, check_patterns, matches, resolution, set_module, trace_layers

__all__ = [
    "kernelwarehouse",
    "plan_kernelwarehouse",
    "check_plan",
    "default_memory_budget",
    "SharingRule",
    "layer_kind",
    "generic_stage_rule",
    "SHARING",
    "KW_PRESETS",
    "KW_OPTIONS",
    "ATTENTION_SHARE_WARNING",
]

SharingRule = Callable[[str, nn.Module], str | None]
SHARING = ("stage", "names", "layer", "network")

#: The official KW presets of the ResNets (configs/resnet18/*.json): budget b = cell_num_ratio and the
#: cell ratios. They are also the presets of a model kwlab does not know
#: (``kwlab.convert(model, "kw", preset=...)``).
KW_PRESETS = {
    "1/4x": dict(budget=0.25, cell_in=0.5, cell_out=0.5),
    "1/2x": dict(budget=0.5, cell_in=0.5, cell_out=0.5),
    "1x": dict(budget=1, cell_in=1.0, cell_out=1.0),
    "2x": dict(budget=2, cell_in=1.0, cell_out=1.0),
    "4x": dict(budget=4, cell_in=1.0, cell_out=1.0),
}

#: Keyword options of :func:`kernelwarehouse` (what presets, ``create_model`` overrides and
#: ``kwlab.convert`` may set).
KW_OPTIONS = (
    "budget",
    "cell_in",
    "cell_out",
    "sharing",
    "attention",
    "attention_norm",
    "reduction",
    "spatial_partition",
    "zero_cell",
    "nonlocal_basis_ratio",
    "attention_init",
    "init",
    "warehouse_options",
    "warehouse_order",
    "include",
    "exclude",
    "temperature",
    "algorithm",
    "example_input",
    "classifier",
    "squeeze_excitation",
    "attention_ratio",
    "max_param_ratio",
    "max_memory_bytes",
    "attention_share_warning",
)
_CONVERTIBLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)

#: :func:`kernelwarehouse` warns when the attention holds more than this share of the converted layers'
#: parameters (attention / (warehouse cells + attention), ``plan.totals()["attention_share"]``): the
#: attention then outweighs the kernels it mixes (narrow or depthwise layers; a small CNN).
ATTENTION_SHARE_WARNING = 0.5


def layer_kind(module: nn.Module) -> str:
    """``conv1d``/``conv2d``/``conv3d``/``linear``, with a ``dw`` prefix for depthwise convs."""
    if isinstance(module, nn.Linear):
        return "linear"
    d = len(module.kernel_size)
    depthwise = module.groups > 1 and module.groups == module.in_channels
    return f"{'dw' if depthwise else ''}conv{d}d"


def generic_stage_rule(name: str, module: nn.Module) -> str:
    """The default stage of a layer of a model that has no notion of stage (see the module docstring)."""
    parts = name.split(".")
    stage = []
    for p in parts:
        if p.isdigit():
            break
        stage.append(p)
    if len(stage) == len(parts):
        stage = parts
    return ".".join(stage) + ":" + layer_kind(module)


def _match(name: str, patterns) -> bool:
    return matches(name, patterns)  # one semantics for every method: kwlab.methods.surgery


def _check_patterns(param: str, patterns, names: list[str]) -> None:
    """Every pattern in ``include``/``exclude`` must match at least one conv/linear layer."""
    check_patterns(param, patterns, names, "conv/linear layer")


def _builtin_rule(model: nn.Module, sharing) -> SharingRule | None:
    """The rule for ``sharing`` when it needs no trace (None: the traced stage rule)."""
    if sharing not in SHARING:
        raise ValueError(
            f"sharing must be one of {SHARING} or a callable (name, module) -> key, got {sharing!r}"
        )
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


def _spec(name: str, module: nn.Module) -> LayerSpec:
    if isinstance(module, nn.Linear):
        return LayerSpec(name, "linear", module.in_features, module.out_features, (1,), 1)
    d = len(module.kernel_size)
    return LayerSpec(
        name, f"conv{d}d", module.in_channels, module.out_channels, tuple(module.kernel_size), module.groups
    )


def _layer_args(name: str, module: nn.Module) -> dict:
    if isinstance(module, nn.Linear):
        return dict(
            in_features=module.in_features, out_features=module.out_features, bias=module.bias is not None
        )
    return dict(
        in_channels=module.in_channels,
        out_channels=module.out_channels,
        kernel_size=module.kernel_size,
        stride=module.stride,
        padding=module.padding,
        dilation=module.dilation,
        groups=module.groups,
        bias=module.bias is not None,
    )


_set_module = set_module  # the one set_module (kwlab.methods.surgery)


def _why_not_convertible(module: nn.Module) -> str | None:
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
            spec = _spec(name, module)
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


def plan_kernelwarehouse(
    model: nn.Module,
    *,
    budget: float = 1.0,
    cell_in: float = 1.0,
    cell_out: float = 1.0,
    sharing: str | SharingRule = "stage",
    include=None,
    exclude=None,
    reduction: float = 1 / 16,
    spatial_partition: bool = True,
    warehouse_options: Mapping[str, Mapping] | None = None,
    warehouse_order: Iterable[str] | None = None,
    attention_norm: str = "batch",
    zero_cell: bool = True,
    nonlocal_basis_ratio: float = 1.0,
    example_input=None,
    classifier: bool = False,
    squeeze_excitation: bool = False,
    attention_ratio: float = 0.5,
) -> KWPlan:
    """The warehouse plan :func:`kernelwarehouse` makes for the static ``model``, without building anything.

    Arguments as in :func:`kernelwarehouse`. ``plan.layers`` lists the layers to convert in allocation order,
    ``plan.warehouses`` the warehouses in creation order, ``plan.left_static`` the conv/linear layers
    that stay static and why; ``plan.warehouse_table()`` has one row per warehouse (n, m, cell and
    attention parameters by formula), ``plan.totals()`` the whole model against the static one, and
    ``plan.frame()`` both for a notebook. Explained in notebooks/02_kernelwarehouse_anatomy.ipynb.
    """
    check_budget(budget)
    if attention_norm not in ATTENTION_NORMS:
        raise ValueError(f"attention_norm must be one of {ATTENTION_NORMS}, got {attention_norm!r}")
    if not (
        isinstance(attention_ratio, (int, float)) and attention_ratio > 0 and math.isfinite(attention_ratio)
    ):
        raise ValueError(f"attention_ratio must be a finite number > 0, got {attention_ratio!r}")
    base = WarehouseOptions(budget, cell_in, cell_out, spatial_partition, reduction)
    overrides = dict(warehouse_options or {})
    per_key = {k: with_options(base, v, f"warehouse_options[{k!r}]") for k, v in overrides.items()}

    def options_for(key: str) -> WarehouseOptions:
        return per_key.get(key, base)

    attn = dict(norm=attention_norm, zero_cell=zero_cell, nonlocal_basis_ratio=nonlocal_basis_ratio)
    named = [(n, m) for n, m in model.named_modules() if isinstance(m, _CONV_LIKE)]
    _check_patterns("include", include, [n for n, _ in named])
    _check_patterns("exclude", exclude, [n for n, _ in named])
    left_static: dict[str, str] = {}
    candidates = []
    for name, module in named:
        why = _why_not_convertible(module)
        if why is None and include is not None and not _match(name, include):
            why = "not matched by include"
        if why is None and exclude is not None and _match(name, exclude):
            why = "matched by exclude"
        if why is not None:
            left_static[name] = why
        else:
            candidates.append((name, module))

    generic = not callable(sharing) and getattr(model, "kw_stage_rule", None) is None
    rule = sharing if callable(sharing) else _builtin_rule(model, sharing)
    trace = None
    if generic:
        try:
            trace = trace_layers(model, example_input)
        except ValueError:
            if rule is None or example_input is not None:
                raise
    elif example_input is not None:
        trace_layers(model, example_input)  # a wrong example input is an error on every path
    if trace is not None:
        kept = []
        # the head is the last conv/linear layer run, whether or not include/exclude selected it
        executed = sorted((n for n, _ in named if n in trace), key=lambda n: trace[n].order)
        last = executed[-1] if executed else None
        for name, module in candidates:
            t = trace.get(name)
            if t is None:
                left_static[name] = "not called in the traced forward pass"
            elif (
                not squeeze_excitation
                and not isinstance(module, nn.Linear)
                and (
                    all(k == 1 for k in module.kernel_size)
                    and all(r == 1 for r in resolution(module, t.in_shape))
                )
                and name != last
                and name != ""
            ):
                left_static[name] = "squeeze-excitation conv (1x1 on a pooled input); squeeze_excitation=True"
            elif not classifier and name == last and name != "":  # a lone layer is no head
                left_static[name] = "classifier head (the last layer run); classifier=True converts it"
            else:
                kept.append((name, module))
        candidates = kept

    if rule is None:
        auto = _traced_stages(candidates, trace, options_for, attn, attention_ratio, left_static)
        pairs = [(n, m, auto.get(n)) for n, m in candidates]
    else:
        pairs = []
        for name, module in candidates:
            key = rule(name, module)
            if key is not None and not isinstance(key, str):
                raise ValueError(
                    f"sharing rule returned {key!r} for layer {name!r}; "
                    "keys must be strings (or None: static)"
                )
            if callable(sharing) and rule(name, module) != key:
                raise ValueError(
                    f"sharing rule returned different keys for layer {name!r} on two calls; it must be a "
                    f"function of (name, module) only"
                )
            if key is None:
                left_static.setdefault(name, "the sharing rule returned None")
            pairs.append((name, module, key))
    specs = [_spec(n, m) for n, m, k in pairs if k is not None]
    keys = [k for _, _, k in pairs if k is not None]
    if not specs:
        raise ValueError(
            f"no layer to convert: the sharing rule and include={include!r}/exclude={exclude!r} "
            f"left all of the model's {len(named)} conv/linear layers static ("
            + "; ".join(f"{n}: {w}" for n, w in list(left_static.items())[:4])
            + (", ..." if len(left_static) > 4 else "")
            + ")"
        )
    unknown = set(overrides) - set(keys)
    if unknown:
        raise ValueError(
            f"warehouse_options names warehouses that do not exist: {sorted(unknown)}; "
            f"warehouses are {sorted(set(keys))}"
        )
    options = {k: options_for(k) for k in dict.fromkeys(keys)}
    plan = plan_warehouses(specs, keys, options, order=warehouse_order)
    for key, wp in plan.warehouses.items():
        plan.attention[key] = sum(
            attention_parameter_count(
                plan.layers[n].spec.in_channels,
                plan.layers[n].num_mixtures,
                wp.num_cells,
                budget=wp.options.budget,
                reduction=wp.options.reduction,
                **attn,
            )
            for n in wp.layers
        )
    plan.left_static.update((n, w) for n, w in left_static.items() if n not in plan.layers)
    plan.static_parameters = sum(p.numel() for p in model.parameters())
    ref = next((p for p in model.parameters() if p.is_floating_point()), None)
    plan.element_size = ref.element_size() if ref is not None else torch.get_default_dtype().itemsize
    return plan


def default_memory_budget(device: torch.device | str | None = None) -> int:
    """The default ``max_memory_bytes``: a quarter of the memory of ``device`` (bytes).

    CUDA: the GPU's total memory; anything else (CPU, meta, None): the machine's physical memory
    (``os.sysconf``), or 32 GiB where the platform does not report it (8 GiB budget). A quarter because
    training with Adam holds about four copies of every parameter (weights, gradients, two moments).
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda" and torch.cuda.is_available():
        total = torch.cuda.get_device_properties(device).total_memory
    else:
        try:
            total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            total = 32 * 2**30
    return int(total) // 4


def _check_memory_budget(max_memory_bytes) -> None:
    if max_memory_bytes is None or max_memory_bytes == "auto":
        return
    ok = isinstance(max_memory_bytes, (int, float)) and not isinstance(max_memory_bytes, bool)
    if not (ok and max_memory_bytes > 0 and math.isfinite(max_memory_bytes)):
        raise ValueError(
            f"max_memory_bytes must be a number of bytes > 0, 'auto' or None, got {max_memory_bytes!r}"
        )


def check_plan(
    plan: KWPlan,
    max_param_ratio: float | None = 4.0,
    max_memory_bytes: float | str | None = "auto",
    *,
    device: torch.device | str | None = None,
) -> None:
    """Refuse (ValueError) a plan whose converted model would exceed ``max_param_ratio`` x the static
    model's parameters, (any warehouse with b < 1) would not be smaller than the static model, or whose
    parameters would take more than ``max_memory_bytes`` bytes (``"auto"``: :func:`default_memory_budget`
    of ``device``). None lifts a limit."""
    _check_memory_budget(max_memory_bytes)
    t = plan.totals()
    fixes = (
        "share less (sharing='stage' traces resolution stages; 'layer' shares nothing), use larger cells "
        "(cell_in/cell_out closer to 1, or per-warehouse warehouse_options), leave the worst layers static "
        "(exclude=[...])"
    )
    small = any(wp.options.budget < 1 for wp in plan.warehouses.values())
    too_big = max_param_ratio is not None and t["ratio"] > max_param_ratio
    if max_param_ratio is not None and (too_big or (small and t["ratio"] >= 1)):
        what = (
            f"more than max_param_ratio={max_param_ratio}x"
            if too_big
            else "not smaller than the static model although budget < 1:"
        )
        raise ValueError(
            f"refusing to build a KernelWarehouse model {what} the static one.\n{plan.summary()}\n"
            f"To change it: {fixes}, or pass max_param_ratio=None to build it anyway. "
            "kwlab.plan_kernelwarehouse(...) shows the plan without building it."
        )
    if max_memory_bytes is not None:
        auto = max_memory_bytes == "auto"
        limit = default_memory_budget(device) if auto else max_memory_bytes
        if t["converted_bytes"] > limit:
            where = f" (the default: a quarter of the memory of {torch.device(device or 'cpu')})"
            raise ValueError(
                f"refusing to build a KernelWarehouse model whose parameters would take "
                f"{t['converted_bytes'] / 1e9:.3g} GB ({plan.element_size} bytes each), more than "
                f"max_memory_bytes={int(limit):,} ({limit / 1e9:.3g} GB){where if auto else ''}.\n"
                f"{plan.summary()}\nTo change it: {fixes}, or pass a larger max_memory_bytes "
                "(None builds it anyway). kwlab.plan_kernelwarehouse(...) shows the plan without building it."
            )


def kernelwarehouse(
    model: nn.Module,
    *,
    budget: float = 1.0,
    cell_in: float = 1.0,
    cell_out: float = 1.0,
    sharing: str | SharingRule = "stage",
    include=None,
    exclude=None,
    init: str = "static",
    attention: str = "caf",
    attention_norm: str = "batch",
    reduction: float = 1 / 16,
    spatial_partition: bool = True,
    zero_cell: bool = True,
    nonlocal_basis_ratio: float = 1.0,
    attention_init: str = "official",
    warehouse_options: Mapping[str, Mapping] | None = None,
    warehouse_order: Iterable[str] | None = None,
    temperature: float = 1.0,
    algorithm: str = "auto",
    example_input=None,
    classifier: bool = False,
    squeeze_excitation: bool = False,
    attention_ratio: float = 0.5,
    max_param_ratio: float | None = 4.0,
    max_memory_bytes: float | str | None = "auto",
    attention_share_warning: float | None = ATTENTION_SHARE_WARNING,
) -> nn.Module:
    """Replace the convolutions and linear layers of ``model`` by KernelWarehouse layers, in place.

    Args:
        model: any ``nn.Module``.
        budget: b, cells in a warehouse / cells cut from its layers: 1, 2, 3, 4, ... or 1/2, 1/3, 1/4, ...
        cell_in, cell_out: cell channels as a fraction of the channel gcd of a warehouse's layers (the product
            must be a whole divisor of the gcd; anything else raises).
        sharing: "stage" (traced resolution stages; a kwlab model's official stages), "names" (stage = name
            before the first numeric part), "layer", "network" or a rule
            ``(qualified_name, module) -> key | None``.
        include, exclude: glob patterns or module prefixes (or a predicate) on qualified names selecting
            layers to convert (:func:`kwlab.methods.surgery.select`); a pattern that matches no conv/linear
            layer is an error.
        init: "static" (fill cells from the current weights) or "kaiming" (official init).
        attention, attention_norm, reduction, spatial_partition, zero_cell, nonlocal_basis_ratio: see
            :class:`kwlab.layers.KWAttention` and :class:`kwlab.layers.WarehouseOptions`.
        attention_init: "official" (the official attention init) or "pattern" (kwlab's: the attention alone
            reproduces the init pattern at init, so tau = 0 and tau = 1 start close; see KWAttention).
        warehouse_options: per-warehouse overrides of budget/cell_in/cell_out/spatial_partition/reduction.
        warehouse_order: creation order of the warehouses (official ``weights`` index order).
        temperature: initial temperature of every layer.
        example_input: the batch the model is traced with (generic models; default: 2 images of 224x224).
        classifier, squeeze_excitation: also convert the classifier head / SE convs (generic models).
        attention_ratio: the traced stage rule keeps a warehouse's attention <= this x its cells.
        max_param_ratio: refuse (ValueError, before allocating) a plan above this x the static parameters,
            or a b < 1 plan that is not smaller than static; None builds any plan.
        max_memory_bytes: refuse a plan whose parameters (at the model's dtype) exceed this many bytes;
            "auto": a quarter of the device's memory (:func:`default_memory_budget`); None: no limit.
        attention_share_warning: warn (UserWarning) when the attention holds more than this share of the
            converted layers' parameters (``plan.totals()["attention_share"]``); None: never.
    Returns:
        The same ``model``, converted (the plan it followed: :func:`plan_kernelwarehouse`).
    """
    if init not in ("static", "kaiming"):
        raise ValueError(f"init must be 'static' or 'kaiming', got {init!r}")
    if attention not in ATTENTION_FUNCTIONS:
        raise ValueError(f"attention must be one of {ATTENTION_FUNCTIONS}, got {attention!r}")
    check_attention_init(attention_init, attention)
    if max_param_ratio is not None and not (
        isinstance(max_param_ratio, (int, float)) and max_param_ratio > 0 and math.isfinite(max_param_ratio)
    ):
        raise ValueError(f"max_param_ratio must be a finite number > 0 or None, got {max_param_ratio!r}")
    _check_memory_budget(max_memory_bytes)
    if attention_share_warning is not None and not (
        isinstance(attention_share_warning, (int, float))
        and not isinstance(attention_share_warning, bool)
        and 0 <= attention_share_warning <= 1
    ):
        raise ValueError(
            f"attention_share_warning must be a share in [0, 1] or None, got {attention_share_warning!r}"
        )
    check_tau(temperature, "temperature")
    if any(isinstance(m, _KWConvNd) for m in model.modules()):
        raise ValueError("model already contains KernelWarehouse layers; convert a static model")
    plan = plan_kernelwarehouse(
        model,
        budget=budget,
        cell_in=cell_in,
        cell_out=cell_out,
        sharing=sharing,
        include=include,
        exclude=exclude,
        reduction=reduction,
        spatial_partition=spatial_partition,
        warehouse_options=warehouse_options,
        warehouse_order=warehouse_order,
        attention_norm=attention_norm,
        zero_cell=zero_cell,
        nonlocal_basis_ratio=nonlocal_basis_ratio,
        example_input=example_input,
        classifier=classifier,
        squeeze_excitation=squeeze_excitation,
        attention_ratio=attention_ratio,
    )
    ref = next(iter(model.parameters()), None)
    check_plan(plan, max_param_ratio, max_memory_bytes, device=ref.device if ref is not None else None)
    totals = plan.totals()
    if attention_share_warning is not None and totals["attention_share"] > attention_share_warning:
        worst = max(plan.warehouse_table(), key=lambda r: r["attention_share"])
        warnings.warn(
            f"the KW attention holds {totals['attention_share']:.0%} of the converted layers' parameters "
            f"({totals['attention']:,} attention vs {totals['warehouse']:,} warehouse cells), more than "
            f"attention_share_warning={attention_share_warning:.0%}: narrow or depthwise layers (worst: "
            f"warehouse {worst['warehouse']!r}, {worst['attention_share']:.0%}). The official code converts "
            "them all the same; plan_kernelwarehouse(...).frame() shows the share per warehouse, and "
            "exclude=[...] keeps layers static.",
            UserWarning,
            stacklevel=2,
        )

    factory = dict(device=ref.device, dtype=ref.dtype) if ref is not None else {}
    by_key = {
        key: Warehouse(wp.num_cells, wp.cell_shape, wp.options, key=key, **factory)
        for key, wp in plan.warehouses.items()
    }
    owned: set[str] = set()
    built: dict[str, nn.Module] = {}
    for name, lp in plan.layers.items():  # build every layer first: a failure leaves the model untouched
        module = model.get_submodule(name)
        wh = by_key[lp.warehouse]
        layer_cls = KW_LAYERS[lp.spec.kind]
        new = layer_cls(
            **_layer_args(name, module),
            warehouse=wh,
            owns_warehouse=lp.warehouse not in owned,
            start_cell=lp.start_cell,
            attention=attention,
            attention_norm=attention_norm,
            zero_cell=zero_cell,
            nonlocal_basis_ratio=nonlocal_basis_ratio,
            attention_init=attention_init,
            temperature=temperature,
            algorithm=algorithm,
            device=module.weight.device,
            dtype=module.weight.dtype,
        )
        owned.add(lp.warehouse)
        new.train(module.training)
        init_cells(wh.cells, lp.start_cell, lp.end_cell)
        if init == "static":
            _fill_from_static(new, module)
        built[name] = new
    for name, new in built.items():  # then swap them in, which cannot fail
        if name == "":  # a lone conv/linear layer: the KW layer takes its place (returned)
            model = new
        else:
            _set_module(model, name, new)
    model.kw_warehouse_order = list(
        plan.warehouses
    )  # official `weights` index order (see kwlab.methods.official)
    model.kw_warehouse_order_given = warehouse_order is not None  # load_official trusts a given order
    return model


@torch.no_grad()
def _fill_from_static(layer: _KWConvNd, module: nn.Module) -> None:
    """Copy a static layer's weight into the cells that the init pattern of ``layer`` points at (computed
    from the plan, not read back from the pattern, so that it works on the meta device too)."""
    weight = module.weight
    if isinstance(module, nn.Linear):
        weight = weight.unsqueeze(-1)
    pieces = split_kernel(weight, layer.layout)  # (m, o_c, i_c, *k_c)
    rows, cells = owned_cells(layer.num_mixtures, layer.start_cell, layer.warehouse.options.budget)
    device = layer.warehouse.cells.device
    rows_t = torch.tensor(rows, dtype=torch.long, device=device)
    cells_t = torch.tensor(cells, dtype=torch.long, device=device)
    layer.warehouse.cells[cells_t] = pieces[rows_t].to(layer.warehouse.cells.dtype)
    if module.bias is not None and layer.bias is not None:
        layer.bias.copy_(module.bias)
