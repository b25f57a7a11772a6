"""Turn any model into a KernelWarehouse model: :func:`kernelwarehouse`.

The conversion plans the warehouses from the model's own layers
(:func:`kwlab.layers.warehouse.plan_warehouses`) and replaces each selected ``nn.Conv1d/2d/3d`` and
``nn.Linear`` in place by its KW counterpart drawing from its warehouse. The first layer of a warehouse
(registration order) owns it as its child ``warehouse``; :func:`kwlab.warehouses` lists them.

The options are one :class:`~kwlab.methods.kw_options.KWOptions` (the keywords of :func:`kernelwarehouse`),
checked once; the selection rules are :mod:`kwlab.methods.kw_rules`, the plan and its size guard
:mod:`kwlab.methods.kw_plan`, and this module builds.

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
  ``attention_share_warning`` (:data:`~kwlab.methods.kw_options.ATTENTION_SHARE_WARNING`, 0.5).
  Squeeze-excitation convs (1x1 on a
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
worst warehouses. The default memory budget (``"auto"``,
:func:`~kwlab.methods.kw_plan.default_memory_budget`) is a quarter of the
memory of the model's device (RAM for CPU and meta models, the GPU's memory for CUDA ones): training with
Adam holds about four copies of every parameter (weights, gradients, two moments). ``max_param_ratio=None``
and ``max_memory_bytes=None`` lift the limits. With ``b = 1/q`` only the blocks that the init
pattern keeps are copied (the model then starts as a block-sparse approximation). ``init="kaiming"``
uses the official initialisation. Converted layers start at temperature 1, the start of the official
schedule.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kwlab.layers.kernelwarehouse import KW_LAYERS, Warehouse, _KWConvNd, init_cells
from kwlab.layers.warehouse import KWPlan, owned_cells
from kwlab.ops import split_kernel
from kwlab.utils import moved_names

from .kw_options import KWOptions as _KWOptions
from .kw_plan import check_plan as _check_plan
from .kw_plan import plan_for, warn_attention_share
from .surgery import set_module

__all__ = [
    "kernelwarehouse",
    "build_kernelwarehouse",
]

#: Public names that lived here once -> their one home; importing one from here raises an error naming it.
__getattr__ = moved_names(
    __name__,
    {
        "plan_kernelwarehouse": "kwlab.methods",
        "check_plan": "kwlab.methods.kw_plan",
        "default_memory_budget": "kwlab.methods.kw_plan",
        "KWOptions": "kwlab.methods",
        "SharingRule": "kwlab.methods.kw_options",
        "layer_kind": "kwlab.methods.kw_rules",
        "generic_stage_rule": "kwlab.methods.kw_rules",
        "SHARING": "kwlab.methods.kw_options",
        "KW_PRESETS": "kwlab.methods",
        "KW_OPTIONS": "kwlab.methods.kw_options",
        "ATTENTION_SHARE_WARNING": "kwlab.methods.kw_options",
    },
)


def kernelwarehouse(model: nn.Module, options: _KWOptions | None = None, /, **keywords: Any) -> nn.Module:
    """Replace the convolutions and linear layers of ``model`` by KernelWarehouse layers, in place.

    Args:
        model: any ``nn.Module``.
        options: a :class:`~kwlab.methods.kw_options.KWOptions` (default: the defaults); ``keywords`` are
            applied on top.
        **keywords: the fields of :class:`kwlab.methods.KWOptions` (``kw_options.KW_OPTIONS``):
            ``budget``, ``cell_in``, ``cell_out``, ``sharing``, ``include``/``exclude``, ``init``, the
            attention's settings, ``warehouse_options``/``warehouse_order``, ``temperature``, ``algorithm``,
            ``example_input``, ``classifier``/``squeeze_excitation``, ``attention_ratio`` and the guard's
            ``max_param_ratio``, ``max_memory_bytes`` and ``attention_share_warning``.
    Returns:
        The same ``model``, converted (the plan it followed: :func:`plan_kernelwarehouse`).
    """
    opts = _KWOptions.from_keywords(options, **keywords)
    if any(isinstance(m, _KWConvNd) for m in model.modules()):
        raise ValueError("model already contains KernelWarehouse layers; convert a static model")
    plan = plan_for(model, opts)
    ref = next(iter(model.parameters()), None)
    _check_plan(
        plan, opts.max_param_ratio, opts.max_memory_bytes, device=ref.device if ref is not None else None
    )
    warn_attention_share(plan, opts.attention_share_warning, stacklevel=2)
    return build_kernelwarehouse(model, plan, opts)


def build_kernelwarehouse(model: nn.Module, plan: KWPlan, opts: _KWOptions) -> nn.Module:
    """Build every KW layer of ``plan`` (checked), then swap them all into ``model``; returns ``model``."""
    ref = next(iter(model.parameters()), None)
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
        new = KW_LAYERS[lp.spec.kind](
            **_layer_args(module),
            warehouse=wh,
            owns_warehouse=lp.warehouse not in owned,
            start_cell=lp.start_cell,
            attention=opts.attention,
            attention_norm=opts.attention_norm,
            zero_cell=opts.zero_cell,
            nonlocal_basis_ratio=opts.nonlocal_basis_ratio,
            attention_init=opts.attention_init,
            temperature=opts.temperature,
            algorithm=opts.algorithm,
            device=module.weight.device,
            dtype=module.weight.dtype,
        )
        owned.add(lp.warehouse)
        new.train(module.training)
        init_cells(wh.cells, lp.start_cell, lp.end_cell)
        if opts.init == "static":
            _fill_from_static(new, module)
        built[name] = new
    for name, new in built.items():  # then swap them in, which cannot fail
        if name == "":  # a lone conv/linear layer: the KW layer takes its place (returned)
            model = new
        else:
            set_module(model, name, new)
    model.kw_warehouse_order = list(
        plan.warehouses
    )  # official `weights` index order (kwlab.methods.official)
    model.kw_warehouse_order_given = opts.warehouse_order is not None  # load_official trusts a given order
    return model


def _layer_args(module: nn.Module) -> dict:
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
