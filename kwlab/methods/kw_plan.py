"""KernelWarehouse's plan and its guard: :func:`plan_kernelwarehouse` sizes every warehouse from the layers
the selection rules (:mod:`kwlab.methods.kw_rules`) give it, without building anything; :func:`check_plan`
refuses a plan too large for the model or the device, and :func:`warn_attention_share` says when the
attention outweighs the cells it mixes.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch
from torch import nn

from kwlab.layers.attention import attention_parameter_count
from kwlab.layers.warehouse import KWPlan, plan_warehouses

from .kw_options import KWOptions
from .kw_rules import layer_spec, warehouse_keys

__all__ = ["plan_kernelwarehouse", "plan_for", "check_plan", "default_memory_budget", "warn_attention_share"]


def plan_kernelwarehouse(model: nn.Module, options: KWOptions | None = None, /, **keywords: Any) -> KWPlan:
    """The warehouse plan :func:`kwlab.kernelwarehouse` makes for the static ``model``, without building
    anything.

    Options as in :func:`kwlab.kernelwarehouse` (keywords, or a :class:`~kwlab.methods.kw_options.KWOptions`
    with keywords applied on top). ``plan.layers`` lists the layers to convert in allocation order,
    ``plan.warehouses`` the warehouses in creation order, ``plan.left_static`` the conv/linear layers
    that stay static and why; ``plan.warehouse_table()`` has one row per warehouse (n, m, cell and
    attention parameters by formula), ``plan.totals()`` the whole model against the static one, and
    ``plan.frame()`` both for a notebook. Explained in notebooks/02_kernelwarehouse_anatomy.ipynb.
    """
    return plan_for(model, KWOptions.from_keywords(options, **keywords))


def plan_for(model: nn.Module, opts: KWOptions) -> KWPlan:
    """:func:`plan_kernelwarehouse` for options already made."""
    pairs, left_static, count = warehouse_keys(model, opts)
    specs = [layer_spec(n, m) for n, m, k in pairs if k is not None]
    keys = [k for _, _, k in pairs if k is not None]
    if not specs:
        raise ValueError(
            f"no layer to convert: the sharing rule and include={opts.include!r}/exclude={opts.exclude!r} "
            f"left all of the model's {count} conv/linear layers static ("
            + "; ".join(f"{n}: {w}" for n, w in list(left_static.items())[:4])
            + (", ..." if len(left_static) > 4 else "")
            + ")"
        )
    unknown = set(opts.warehouse_options or {}) - set(keys)
    if unknown:
        raise ValueError(
            f"warehouse_options names warehouses that do not exist: {sorted(unknown)}; "
            f"warehouses are {sorted(set(keys))}"
        )
    options = {k: opts.warehouse_for(k) for k in dict.fromkeys(keys)}
    plan = plan_warehouses(specs, keys, options, order=opts.warehouse_order)
    for key, wp in plan.warehouses.items():
        plan.attention[key] = sum(
            attention_parameter_count(
                plan.layers[n].spec.in_channels,
                plan.layers[n].num_mixtures,
                wp.num_cells,
                budget=wp.options.budget,
                reduction=wp.options.reduction,
                function=opts.attention,
                **opts.attention_kwargs,
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
    KWOptions(max_param_ratio=max_param_ratio, max_memory_bytes=max_memory_bytes)  # the limits' one check
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


def warn_attention_share(plan: KWPlan, limit: float | None, stacklevel: int = 2) -> None:
    """Warn (UserWarning) when the attention holds more than ``limit`` of the converted layers' parameters."""
    totals = plan.totals()
    if limit is None or totals["attention_share"] <= limit:
        return
    worst = max(plan.warehouse_table(), key=lambda r: r["attention_share"])
    warnings.warn(
        f"the KW attention holds {totals['attention_share']:.0%} of the converted layers' parameters "
        f"({totals['attention']:,} attention vs {totals['warehouse']:,} warehouse cells), more than "
        f"attention_share_warning={limit:.0%}: narrow or depthwise layers (worst: "
        f"warehouse {worst['warehouse']!r}, {worst['attention_share']:.0%}). The official code converts "
        "them all the same; plan_kernelwarehouse(...).frame() shows the share per warehouse, and "
        "exclude=[...] keeps layers static.",
        UserWarning,
        stacklevel=stacklevel + 1,
    )
