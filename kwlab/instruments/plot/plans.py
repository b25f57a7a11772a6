"""Warehouse plan figures: parameters against the budget b, one plan's warehouses (cells n against
mixtures m), and a kernel cut into its cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from kwlab.ops.layout import cell_index_map

from .style import _DIVERGING, _POS, _fig_ax, _require

__all__ = ["params_vs_budget", "warehouse_plan", "kernel_cells"]


def params_vs_budget(table: pd.DataFrame, *, ax: Axes | None = None, title: str | None = None) -> Figure:
    """Parameters (millions) against the budget b, one line per cell ratio, the static model dashed.

    Args:
        table: :func:`kwlab.teaching.budget_table` (columns budget, budget_label, cell_ratio,
            cell_ratio_label, allowed, n, params, static_params); rows with ``allowed=False`` are left out.
    """
    _require(
        table,
        ["budget", "budget_label", "cell_ratio", "cell_ratio_label", "allowed", "n", "params"]
        + ["static_params"],
        "params_vs_budget",
    )
    fig, ax = _fig_ax(ax, (6.5, 4.0))
    ok = table[table["allowed"].astype(bool)]
    for i, (_ratio, part) in enumerate(ok.groupby("cell_ratio", sort=False)):
        part = part.sort_values("budget")
        m = part["m"].iloc[0] if "m" in part.columns and part["m"].nunique() == 1 else None
        ax.plot(
            part["budget"],
            part["params"] / 1e6,
            marker="o",
            color=f"C{i}",
            label=f"cell ratio {part['cell_ratio_label'].iloc[0]}"
            + (f": m = {int(m):,}, n = b·m" if m is not None else ""),
        )
    ax.axhline(table["static_params"].iloc[0] / 1e6, color="0.3", linestyle="--", label="static model")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ticks = table.drop_duplicates("budget").sort_values("budget")
    ax.set_xticks(ticks["budget"].tolist())
    ax.set_xticklabels(ticks["budget_label"].tolist())
    ax.set_xlim(ticks["budget"].min() / 1.3, ticks["budget"].max() * 1.8)
    ax.set_xlabel("budget b (cells in warehouse / cells cut from layers)")
    ax.set_ylabel("parameters (millions, log scale)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=9, loc="upper left")
    ax.set_title(title or "KW parameter count vs budget b (m cells cut, n warehouse cells)")
    return fig


def warehouse_plan(
    plan: Any,
    static_params: int | None = None,
    params: int | None = None,
    *,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Bars per warehouse of a :class:`~kwlab.layers.KWPlan`: mixtures m cut from its layers (summed) and
    cells n it holds (log scale when they differ by more than 30x).

    ``static_params`` and ``params`` (the KW model's count) only go into the default title.
    """
    fig, ax = _fig_ax(ax, (6.5, 3.8))
    keys = list(plan.warehouses)
    m = [sum(plan.layers[n].num_mixtures for n in plan.warehouses[k].layers) for k in keys]
    n = [plan.warehouses[k].num_cells for k in keys]
    pos = np.arange(len(keys))
    bars_m = ax.bar(pos - 0.2, m, width=0.4, color="#5a8f5a", label="m: cells cut from the layers")
    ax.bar_label(bars_m, fontsize=9)
    ax.bar_label(ax.bar(pos + 0.2, n, width=0.4, color=_POS, label="n: cells in the warehouse"), fontsize=9)
    log = bool(keys) and max(m + n) / max(min(m + n), 1) > 30
    if log:
        ax.set_yscale("log")
    ax.set_xticks(pos)
    ax.set_xticklabels([f"{k}\n{plan.warehouses[k].cell_shape}" for k in keys], fontsize=9)
    ax.set_xlabel("warehouse (cell shape o_c, i_c, k_c...)")
    ax.set_ylabel("number of cells" + (" (log scale)" if log else ""))
    ax.margins(y=0.3 if not log else 0.15)
    if log:
        ax.set_ylim(top=ax.get_ylim()[1] * 8)
    ax.legend(fontsize=9, loc="upper center", ncol=2)  # in the headroom above the bars
    if title is None:
        title = "Warehouse plan"
        if params is not None and static_params:
            title += f": {params / 1e6:.2f}M params ({params / static_params:.2f}x static)"
    ax.set_title(title)
    fig.tight_layout()
    return fig


def _tile(kernel: Any) -> np.ndarray:
    """``(O, I, kh, kw)`` -> ``(O*kh, I*kw)``: one kh x kw tile per (output, input) channel pair."""
    o, i, kh, kw = kernel.shape
    return kernel.permute(0, 2, 1, 3).reshape(o * kh, i * kw).detach().cpu().numpy()


def kernel_cells(
    weight: Any, layout: Any, *, axes: Sequence[Axes] | None = None, title: str | None = None
) -> Figure:
    """Two panels: a 2-D conv kernel's values, and the cell (mixture index j) each weight belongs to.

    The kernel ``(O, I, kh, kw)`` is drawn as an ``O x I`` grid of ``kh x kw`` tiles (rows: output channels,
    columns: input channels); black lines separate the tiles. ``layout`` is a :class:`kwlab.ops.CellLayout`
    and the index map is :func:`kwlab.ops.cell_index_map`.
    """
    if weight.dim() != 4:
        raise ValueError(f"weight must be a 2-d conv kernel (O, I, kh, kw), got shape {tuple(weight.shape)}")
    if tuple(weight.shape) != tuple(layout.weight_shape):
        raise ValueError(
            f"weight shape {tuple(weight.shape)} does not match layout.weight_shape {layout.weight_shape}"
        )
    if axes is None:
        fig, grid = plt.subplots(1, 2, figsize=(12, 5.2))
        axes = list(grid)
    elif len(axes) != 2:
        raise ValueError(f"axes must hold two Axes (values, cells), got {len(axes)}")
    fig = axes[0].figure
    o, i, kh, kw = weight.shape
    values = _tile(weight)
    lim = float(np.abs(values).max()) or 1.0
    im = axes[0].imshow(values, cmap=_DIVERGING, vmin=-lim, vmax=lim, interpolation="nearest")
    fig.colorbar(im, ax=axes[0], label="weight value", fraction=0.046)
    idx = _tile(cell_index_map(layout))
    m = layout.num_mixtures
    im = axes[1].imshow(idx, cmap="turbo", vmin=-0.5, vmax=m - 0.5, interpolation="nearest")
    fig.colorbar(im, ax=axes[1], label="cell (mixture) index j", fraction=0.046)
    if idx.size <= 400:
        for (r, c), j in np.ndenumerate(idx):
            axes[1].text(c, r, str(j), ha="center", va="center", fontsize=7, color="white")
    for ax in axes:
        for r in range(1, o):
            ax.axhline(r * kh - 0.5, color="black", linewidth=1.2)
        for c in range(1, i):
            ax.axvline(c * kw - 0.5, color="black", linewidth=1.2)
        ax.set_xticks([c * kw + (kw - 1) / 2 for c in range(i)])
        ax.set_xticklabels([str(c) for c in range(i)])
        ax.set_yticks([r * kh + (kh - 1) / 2 for r in range(o)])
        ax.set_yticklabels([str(r) for r in range(o)])
        ax.set_xlabel(f"input channel (each tile: {kh}x{kw} kernel)")
        ax.set_ylabel("output channel")
    axes[0].set_title("kernel W")
    axes[1].set_title(f"cut into m={m} cells of shape {layout.cell_shape}")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
