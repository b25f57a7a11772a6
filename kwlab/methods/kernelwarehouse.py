"""Turn any model into a KernelWarehouse model: :func:`kernelwarehouse`.

The conversion plans the warehouses from the model's own layers (:func:`kwlab.layers.warehouse.plan_warehouses`)
and replaces each selected ``nn.Conv1d/2d/3d`` and ``nn.Linear`` in place by its KW counterpart drawing from
its warehouse. The first layer of a warehouse (registration order) owns it as its child ``warehouse``;
:func:`kwlab.warehouses` lists them.

Sharing rules (``sharing=``):

* ``"layer"``: every layer has its own warehouse (key: the layer's qualified name);
* ``"stage"`` (default): layers of one stage share. A kwlab model defines its stages (the official
  grouping, see :mod:`kwlab.models`). Any other model is grouped by this documented rule: the stage of
  ``layer2.0.conv1`` is the part of its qualified name before the first numeric component
  (``layer2``); a layer without a numeric component is its own stage. Within a stage, layers of different
  kinds never share: the key also holds the kind (``conv2d``, ``dwconv2d`` for depthwise, ``linear``, ...).
  E.g. torchvision's resnet18 gets one warehouse per ``layerK`` (plus one each for ``conv1`` and ``fc``);
  its mobilenet_v2 gets one warehouse per kind for the whole ``features`` trunk;
* ``"network"``: one warehouse per kind for the whole network;
* a callable ``rule(qualified_name, module) -> key | None``; None keeps that layer static.

``init="static"`` fills the owned cells from the existing weights (and copies biases), so that at
temperature 1 with a whole budget the converted model computes the original function: fine-tuning a
pretrained network into KW starts exactly where it was. With ``b = 1/q`` only the blocks that the init
pattern keeps are copied (the model then starts as a block-sparse approximation). ``init="kaiming"``
uses the official initialisation. Converted layers start at temperature 1, the start of the official
schedule.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

from kwlab.layers.attention import ATTENTION_FUNCTIONS, ATTENTION_NORMS
from kwlab.layers.kernelwarehouse import KW_LAYERS, Warehouse, _KWConvNd, init_cells
from kwlab.layers.warehouse import KWPlan, LayerSpec, WarehouseOptions, check_budget, plan_warehouses
from kwlab.ops import split_kernel

__all__ = [
    "kernelwarehouse",
    "plan_kernelwarehouse",
    "SharingRule",
    "layer_kind",
    "generic_stage_rule",
    "SHARING",
    "KW_PRESETS",
    "KW_OPTIONS",
]

SharingRule = Callable[[str, nn.Module], str | None]
SHARING = ("layer", "stage", "network")

#: The official KW presets of the ResNets (configs/resnet18/*.json): budget b = cell_num_ratio and the cell
#: ratios. They are also the presets of a model kwlab does not know (``kwlab.convert(model, "kw", preset=...)``).
KW_PRESETS = {
    "1/4x": dict(budget=0.25, cell_in=0.5, cell_out=0.5),
    "1/2x": dict(budget=0.5, cell_in=0.5, cell_out=0.5),
    "1x": dict(budget=1, cell_in=1.0, cell_out=1.0),
    "2x": dict(budget=2, cell_in=1.0, cell_out=1.0),
    "4x": dict(budget=4, cell_in=1.0, cell_out=1.0),
}

#: Keyword options of :func:`kernelwarehouse` (what presets, ``create_model`` overrides and ``kwlab.convert`` may set).
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
    "init",
    "warehouse_options",
    "warehouse_order",
    "include",
    "exclude",
    "temperature",
    "algorithm",
)
_CONVERTIBLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


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
    if callable(patterns):
        return bool(patterns(name))
    if isinstance(patterns, str):
        patterns = [patterns]
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _resolve_rule(model: nn.Module, sharing) -> SharingRule:
    if callable(sharing):
        return sharing
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
    return stage_rule if stage_rule is not None else generic_stage_rule


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
    if getattr(module, "padding_mode", "zeros") != "zeros":
        raise ValueError(
            f"layer {name!r} uses padding_mode={module.padding_mode!r}; KW layers support 'zeros' only"
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


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


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
) -> KWPlan:
    """The warehouse plan :func:`kernelwarehouse` makes for the static ``model``, without building anything.

    Arguments as in :func:`kernelwarehouse`. ``plan.layers`` lists the layers to convert in allocation order,
    ``plan.warehouses`` the warehouses in creation order; ``pandas.DataFrame(plan.table())`` shows it.
    Explained in notebooks/02_kernelwarehouse_anatomy.ipynb.
    """
    check_budget(budget)
    rule = _resolve_rule(model, sharing)
    specs, keys = [], []
    for name, module in model.named_modules():
        if type(module) not in _CONVERTIBLE:
            continue
        if include is not None and not _match(name, include):
            continue
        if exclude is not None and _match(name, exclude):
            continue
        key = rule(name, module)
        if key is None:
            continue
        specs.append(_spec(name, module))
        keys.append(str(key))
    if not specs:
        convertible = [n for n, m in model.named_modules() if type(m) in _CONVERTIBLE]
        raise ValueError(
            f"no layer to convert: the sharing rule and include={include!r}/exclude={exclude!r} "
            f"matched none of the model's {len(convertible)} conv/linear layers "
            f"({', '.join(convertible[:8])}{', ...' if len(convertible) > 8 else ''})"
        )
    base = WarehouseOptions(budget, cell_in, cell_out, spatial_partition, reduction)
    overrides = dict(warehouse_options or {})
    unknown = set(overrides) - set(keys)
    if unknown:
        raise ValueError(
            f"warehouse_options names warehouses that do not exist: {sorted(unknown)}; "
            f"warehouses are {sorted(set(keys))}"
        )
    options = {k: WarehouseOptions(**{**base.__dict__, **overrides.get(k, {})}) for k in dict.fromkeys(keys)}
    return plan_warehouses(specs, keys, options, order=warehouse_order)


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
    warehouse_options: Mapping[str, Mapping] | None = None,
    warehouse_order: Iterable[str] | None = None,
    temperature: float = 1.0,
    algorithm: str = "auto",
) -> nn.Module:
    """Replace the convolutions and linear layers of ``model`` by KernelWarehouse layers, in place.

    Args:
        model: any ``nn.Module``.
        budget: b, cells in a warehouse / cells cut from its layers: 1, 2, 3, 4, ... or 1/2, 1/3, 1/4, ...
        cell_in, cell_out: cell channels as a fraction of the channel gcd of a warehouse's layers.
        sharing: "layer", "stage", "network" or a rule ``(qualified_name, module) -> key | None``.
        include, exclude: glob patterns (or a predicate) on qualified names selecting layers to convert.
        init: "static" (fill cells from the current weights) or "kaiming" (official init).
        attention, attention_norm, reduction, spatial_partition, zero_cell, nonlocal_basis_ratio: see
            :class:`kwlab.layers.KWAttention` and :class:`kwlab.layers.WarehouseOptions`.
        warehouse_options: per-warehouse overrides of budget/cell_in/cell_out/spatial_partition/reduction.
        warehouse_order: creation order of the warehouses (official ``weights`` index order).
        temperature: initial temperature of every layer.
    Returns:
        The same ``model``, converted (the plan it followed: :func:`plan_kernelwarehouse`).
    """
    if init not in ("static", "kaiming"):
        raise ValueError(f"init must be 'static' or 'kaiming', got {init!r}")
    if attention not in ATTENTION_FUNCTIONS:
        raise ValueError(f"attention must be one of {ATTENTION_FUNCTIONS}, got {attention!r}")
    if attention_norm not in ATTENTION_NORMS:
        raise ValueError(f"attention_norm must be one of {ATTENTION_NORMS}, got {attention_norm!r}")
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
    )

    ref = next(iter(model.parameters()), None)
    factory = dict(device=ref.device, dtype=ref.dtype) if ref is not None else {}
    by_key = {
        key: Warehouse(wp.num_cells, wp.cell_shape, wp.options, key=key, **factory)
        for key, wp in plan.warehouses.items()
    }
    owned: set[str] = set()

    for name, lp in plan.layers.items():
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
            temperature=temperature,
            algorithm=algorithm,
            **factory,
        )
        owned.add(lp.warehouse)
        new.train(module.training)
        init_cells(wh.cells, lp.start_cell, lp.end_cell)
        if init == "static":
            _fill_from_static(new, module)
        _set_module(model, name, new)
    model.kw_warehouse_order = list(
        plan.warehouses
    )  # official `weights` index order (see kwlab.methods.official)
    return model


@torch.no_grad()
def _fill_from_static(layer: _KWConvNd, module: nn.Module) -> None:
    """Copy a static layer's weight into the cells that the init pattern of ``layer`` points at."""
    weight = module.weight
    if isinstance(module, nn.Linear):
        weight = weight.unsqueeze(-1)
    pieces = split_kernel(weight, layer.layout)  # (m, o_c, i_c, *k_c)
    beta = layer.attention.init_pattern[:, : layer.warehouse.num_cells]
    rows, cells = beta.nonzero(as_tuple=True)  # mixture j -> its owned cell
    layer.warehouse.cells[cells] = pieces[rows].to(layer.warehouse.cells.dtype)
    if module.bias is not None and layer.bias is not None:
        layer.bias.copy_(module.bias)
