"""Attention figures: one layer's coefficients (heatmap, histogram), per-layer statistics of a probe table
(negative fraction, cell usage, the statistics side by side, several models compared).
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from kwlab.instruments.statistics import statistic_label

from .style import (
    _DIVERGING,
    _NEG,
    _POS,
    _SEQUENTIAL,
    _fig_ax,
    _layer_ticks,
    _one_layer,
    _require,
    _sequential_imshow,
    _signed_imshow,
    _stacked_axes,
    _table,
)

__all__ = [
    "attention_heatmap",
    "attention_by_label",
    "alpha_histogram",
    "negative_fraction",
    "cell_usage",
    "layer_stats",
    "layer_comparison",
]


def _panel_label(column: str) -> str:
    """A statistic's label (:func:`~kwlab.instruments.statistics.statistic_label`) wrapped for a narrow
    panel's y axis."""
    return textwrap.fill(statistic_label(column), 22)


def attention_heatmap(
    data: Any,
    layer: str | None = None,
    *,
    by: str = "sample",
    sample: int | None = None,
    ax: Axes | None = None,
    title: str | None = None,
    vmax: float | None = None,
    signed: bool | None = None,
) -> Figure:
    """Heatmap of attention for one layer: a diverging map centred on 0 for signed attention (CAF), a
    sequential map from 0 for non-negative attention (softmax, sigmoid).

    Args:
        data: :meth:`Probe.samples` table (layer, sample, mixture, cell, alpha), a probe, or a 2-D array
            ``(rows, cells)`` drawn as is.
        layer: the layer to draw (required when the table holds several).
        by: ``"sample"``: rows are samples, value = alpha averaged over the layer's mixtures (exact for
            whole-kernel methods, m = 1); ``"mixture"``: rows are mixtures, value = alpha of ``sample`` (or
            averaged over the kept samples when ``sample`` is None).
        vmax: the colour scale's limit (+-vmax signed, 0..vmax otherwise); pass the same value to panels
            that are compared. None: this panel's largest ``|alpha|``.
        signed: force the diverging (True) or the sequential (False) map; None: diverging exactly when a
            value is negative.
    """
    if by not in ("sample", "mixture"):
        raise ValueError(f"by must be 'sample' or 'mixture', got {by!r}")
    if isinstance(data, np.ndarray) or (hasattr(data, "detach") and hasattr(data, "numpy")):
        values = np.asarray(data.detach().cpu().numpy() if hasattr(data, "detach") else data, dtype=float)
        if values.ndim != 2:
            raise ValueError(f"an array must be 2-D (rows, cells), got shape {values.shape}")
        rows_label = "sample" if by == "sample" else "mixture"
        name = layer or ""
    else:
        df = _table(data, "samples")
        _require(df, ["layer", "sample", "mixture", "cell", "alpha"], "attention_heatmap")
        df, name = _one_layer(df, layer)
        if by == "sample":
            values = df.pivot_table(index="sample", columns="cell", values="alpha", aggfunc="mean").to_numpy()
            rows_label = "sample"
        else:
            if sample is not None:
                if sample not in set(df["sample"]):
                    raise ValueError(
                        f"sample must be one of the kept samples 0..{df['sample'].max()}, got {sample}"
                    )
                df = df[df["sample"] == sample]
            values = df.pivot_table(
                index="mixture", columns="cell", values="alpha", aggfunc="mean"
            ).to_numpy()
            rows_label = "mixture"
    fig, ax = _fig_ax(ax)
    if signed is None:
        signed = bool(np.nanmin(values) < 0) if values.size else False
    if signed:
        _signed_imshow(fig, ax, values, "alpha (signed)", vmax)
    else:
        if values.size and np.nanmin(values) < 0:
            raise ValueError("signed=False but the data hold negative values: use signed=True or None")
        _sequential_imshow(fig, ax, values, "alpha", vmax)
    ax.set_xlabel("warehouse cell")
    ax.set_ylabel(rows_label)
    what = {
        "sample": "per sample (mean over mixtures)",
        "mixture": "per mixture" + (f" (sample {sample})" if sample is not None else " (mean over samples)"),
    }
    ax.set_title(title or f"Attention {name} {what[by]}".replace("  ", " "))
    return fig


def _by_label_values(table: Any) -> tuple[np.ndarray, list[Any], list[tuple[str, int, int]]]:
    """(labels x columns) mean attention of a :meth:`Probe.per_class` table, its labels and its columns
    ``(layer, mixture, cell)`` with the layers in the table's order."""
    df = _table(table, "per_class")
    _require(df, ["layer", "label", "mixture", "cell", "mean_alpha"], "attention_by_label")
    layers = list(dict.fromkeys(df["layer"]))
    grid = df.pivot_table(index="label", columns=["layer", "mixture", "cell"], values="mean_alpha")
    columns = [c for layer in layers for c in grid.columns if c[0] == layer]
    return grid[columns].to_numpy(dtype=float), list(grid.index), columns


def attention_by_label(
    data: Any,
    *,
    label_names: Sequence[str] | None = None,
    relative: bool = True,
    vmax: float | None = None,
    title: str | None = None,
) -> Figure:
    """The attention per label (rows) and per layer, mixture and cell (columns): does it route by the label?

    One panel per model, stacked on one colour scale, the layers side by side (a line between two layers,
    the layer's name under its columns).

    Args:
        data: a :meth:`Probe.per_class` table (or a probe recorded with labels), or a mapping ``{name: table
            or probe}`` to compare models (e.g. a dynamic net and its constant-attention control).
        label_names: names of the labels 0, 1, ... (default: the label values).
        relative: True: each column minus its mean over the labels, on a diverging map centred on 0 -- what
            changes with the label. The plain means hide it wherever every label leans on the same cells.
            False: the mean attention itself (sequential from 0 for non-negative attention, diverging when a
            value is negative).
        vmax: the colour scale's limit for every panel (None: the largest ``|value|`` of all panels).
    """
    tables = dict(data) if isinstance(data, Mapping) else {"": data}
    if not tables:
        raise ValueError("data is an empty mapping: give at least one per_class table or probe")
    panels = {name: _by_label_values(table) for name, table in tables.items()}
    needed = sorted({int(v) for _, labels, _ in panels.values() for v in labels})
    if label_names is not None and needed and (needed[0] < 0 or needed[-1] >= len(label_names)):
        raise ValueError(
            f"label_names must name every label 0..{needed[-1]} (a sequence of {needed[-1] + 1} strings), "
            f"got {len(label_names)} names"
        )
    if relative:
        panels = {n: (v - v.mean(axis=0, keepdims=True), lab, col) for n, (v, lab, col) in panels.items()}
    everything = np.concatenate([v.ravel() for v, _, _ in panels.values()])
    signed = relative or bool(np.nanmin(everything) < 0)
    lim = vmax if vmax is not None else float(np.nanmax(np.abs(everything))) if everything.size else 1.0
    lim = lim if lim > 0 else 1.0
    widest = max(v.shape[1] for v, _, _ in panels.values())
    heights = [0.3 * v.shape[0] + 1.1 for v, _, _ in panels.values()]
    fig, axs = plt.subplots(
        len(panels), 1, figsize=(max(8.0, 0.24 * widest + 3.0), sum(heights) + 0.8), squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )  # fmt: skip
    axes = list(axs[:, 0])
    image = None
    for ax, (name, (values, labels, columns)) in zip(axes, panels.items()):
        image = ax.imshow(
            values, aspect="auto", interpolation="nearest", cmap=_DIVERGING if signed else _SEQUENTIAL,
            vmin=-lim if signed else 0.0, vmax=lim,
        )  # fmt: skip
        names = [label_names[int(v)] if label_names is not None else str(v) for v in labels]
        ax.set_yticks(range(len(labels)), names, fontsize=10)
        ax.set_ylabel(name, fontsize=11)
        layers = [c[0] for c in columns]
        starts = [i for i, layer in enumerate(layers) if i == 0 or layer != layers[i - 1]]
        for i in starts[1:]:
            ax.axvline(i - 0.5, color="k", linewidth=1.2)
        ends = starts[1:] + [len(layers)]
        ax.set_xticks([(a + b - 1) / 2 for a, b in zip(starts, ends)])
        ax.set_xticklabels([layers[a] for a in starts], rotation=30, ha="right", fontsize=10)
        ax.tick_params(axis="x", length=0)
    same_columns = all(col == next(iter(panels.values()))[2] for _, _, col in panels.values())
    if same_columns:  # one set of layer names, under the last panel
        for ax in axes[:-1]:
            ax.set_xticklabels([])
    what = "minus its mean over the labels" if relative else ""
    cbar = fig.colorbar(image, ax=axes, shrink=0.9, pad=0.02)
    cbar.set_label(f"mean attention {what}".strip(), fontsize=10)
    fig.suptitle(title or "attention per label (rows), cells of each layer (columns)", fontsize=12)
    return fig


def alpha_histogram(
    data: Any, layer: str | None = None, *, ax: Axes | None = None, title: str | None = None
) -> Figure:
    """Signed histogram of alpha (share of coefficients per bin), the negative side shaded.

    Args:
        data: :meth:`Probe.histogram` table (layer, bin_left, bin_right, count) or a probe.
        layer: one layer, or None to pool every layer in the table.
    """
    df = _table(data, "histogram")
    _require(df, ["layer", "bin_left", "bin_right", "count"], "alpha_histogram")
    if layer is not None:
        df, _ = _one_layer(df, layer)
    pooled = df.groupby(["bin_left", "bin_right"], as_index=False)["count"].sum().sort_values("bin_left")
    left = pooled["bin_left"].to_numpy()
    width = pooled["bin_right"].to_numpy() - left
    share = pooled["count"].to_numpy() / max(pooled["count"].sum(), 1)
    neg = pooled["bin_right"].to_numpy() <= 0
    fig, ax = _fig_ax(ax)
    ax.axvspan(min(left.min(), 0.0), 0.0, color="0.85", zorder=0, label="negative side")
    ax.bar(
        left,
        share,
        width=width,
        align="edge",
        color=np.where(neg, _NEG, _POS),
        edgecolor="white",
        linewidth=0.3,
    )
    ax.axvline(0.0, color="0.3", linewidth=0.8)
    occupied = np.nonzero(share)[0]
    if occupied.size:  # fixed bins: show the occupied range (plus a bin each side), not the empty tails
        lo, hi = left[max(occupied[0] - 1, 0)], left[min(occupied[-1] + 1, len(left) - 1)] + width[-1]
        ax.set_xlim(min(lo, -width[0]), max(hi, width[-1]))
        if occupied.size < 6:
            ax.text(
                0.02,
                0.86,
                f"only {occupied.size} bins occupied: pass finer Probe(bins=...)",
                transform=ax.transAxes,
                va="top",
                fontsize=8,
                color="0.35",
            )
    ax.set_xlabel("alpha")
    ax.set_ylabel("share of coefficients")
    ax.text(0.02, 0.95, f"negative: {share[neg].sum():.1%}", transform=ax.transAxes, va="top")
    ax.legend(loc="upper right")
    ax.set_title(title or f"Signed attention histogram ({layer or 'all layers'})")
    return fig


def negative_fraction(
    data: Any, *, column: str = "neg_frac", ax: Axes | None = None, title: str | None = None
) -> Figure:
    """Bars of the negative fraction (or ``column="neg_mass"``) per layer, in model order.

    Args:
        data: :meth:`Probe.summary` table or a probe.
    """
    df = _table(data, "summary")
    _require(df, ["layer", column], "negative_fraction")
    fig, ax = _fig_ax(ax, (max(4.0, 0.35 * len(df) + 2), 4.0))
    ax.bar(range(len(df)), df[column].to_numpy(), color=_NEG)
    _layer_ticks(ax, list(df["layer"]))
    ax.set_ylabel(statistic_label(column))
    ax.set_xlabel("layer")
    ax.set_ylim(0, max(1e-3, float(np.nanmax(df[column].to_numpy())) * 1.15) if len(df) else 1)
    ax.set_title(title or ("Negative attention per layer" + (" (mass)" if column == "neg_mass" else "")))
    return fig


def cell_usage(
    data: Any,
    warehouse: str | None = None,
    *,
    value: str = "mean_abs",
    ax: Axes | None = None,
    vmax: float | None = None,
    title: str | None = None,
) -> Figure:
    """Layer x cell matrix of a warehouse (``value``: ``"mean_abs"``, ``"top_count"`` or ``"top_frac"``).

    Args:
        data: :meth:`Probe.cell_usage` table (layer, warehouse, cell, ...) or a probe.
        warehouse: which bank to draw; None draws every warehouse, one panel each (needs ``ax=None`` when
            there are several).
        vmax: the top of the colour scale (default: each panel's largest value); pass one value to panels
            that are compared, e.g. the largest over them, so that a colour means the same in each.
    """
    df = _table(data, "cell_usage")
    _require(df, ["layer", "warehouse", "cell", value], "cell_usage")
    banks = list(dict.fromkeys(df["warehouse"]))
    if warehouse is not None:
        if warehouse not in banks:
            raise ValueError(f"warehouse must be one of {banks}, got {warehouse!r}")
        banks = [warehouse]
    if len(banks) > 1 and ax is not None:
        raise ValueError(f"the table holds several warehouses {banks}: pass warehouse= to draw into one ax")
    if ax is None:
        heights = [max(1.5, 0.35 * df[df["warehouse"] == b]["layer"].nunique() + 1.2) for b in banks]
        fig, axes = plt.subplots(
            len(banks), 1, figsize=(7, sum(heights)), squeeze=False, gridspec_kw={"height_ratios": heights}
        )
        axes = list(axes[:, 0])
    else:
        fig, axes = ax.figure, [ax]
    label = {
        "mean_abs": "mean |alpha|",
        "top_count": "times strongest cell",
        "top_frac": "share of mixtures where strongest",
    }.get(value, value)
    for bank, a in zip(banks, axes):
        part = df[df["warehouse"] == bank]
        order = list(dict.fromkeys(part["layer"]))
        mat = part.pivot_table(index="layer", columns="cell", values=value, aggfunc="sum").reindex(order)
        im = a.imshow(
            mat.to_numpy(dtype=float), aspect="auto", cmap="magma", vmin=0, vmax=vmax, interpolation="nearest"
        )
        fig.colorbar(im, ax=a, label=label)
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.set_yticks(range(len(order)))
        a.set_yticklabels(order, fontsize=8)
        a.set_xlabel("warehouse cell")
        a.set_ylabel("layer")
        a.set_title(title or f"Cell usage of warehouse {bank!r}")
    fig.tight_layout()
    return fig


def layer_stats(
    data: Any,
    columns: Sequence[str] = ("diversity", "effective_cells"),
    *,
    axes: Sequence[Axes] | None = None,
    title: str | None = None,
) -> Figure:
    """One bar panel per statistic (default diversity and effective number of cells), one bar per layer.

    For ``effective_cells`` a black tick marks the layer's number of cells ``n`` (the maximum).

    Args:
        data: :meth:`Probe.summary` table or a probe.
    """
    df = _table(data, "summary")
    _require(df, ["layer", *columns], "layer_stats")
    if axes is None:
        fig, axes = _stacked_axes(len(columns), len(df), 2.6, 0.8)
    else:
        if len(axes) != len(columns):
            raise ValueError(f"axes must hold one Axes per column ({len(columns)}), got {len(axes)}")
        fig = axes[0].figure
    pos = np.arange(len(df))
    for a, col in zip(axes, columns):
        a.bar(pos, df[col].to_numpy(dtype=float), color="#5a8f5a")
        if col == "effective_cells" and "num_cells" in df.columns:
            a.scatter(pos, df["num_cells"], marker="_", s=200, color="black", label="n (cells)", zorder=3)
            a.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside: covers no bar
        a.set_ylabel(_panel_label(col))
    _layer_ticks(axes[-1], list(df["layer"]))
    axes[-1].set_xlabel("layer")
    axes[0].set_title(title or "Attention statistics per layer")
    fig.tight_layout()
    return fig


def layer_comparison(
    tables: Mapping[str, Any],
    columns: Sequence[str] = ("neg_mass", "effective_cells", "diversity", "class_distance"),
    *,
    degenerate: Sequence[str] = (),
    colors: Sequence[str] = (_POS, "0.6", "#5a8f5a", "#3b6fb6"),
    title: str | None = None,
) -> Figure:
    """Per-layer bars of several nets side by side, one full-width panel per statistic (stacked, so layer
    names stay readable at 1280x720); the legend sits above the panels and covers no bar.

    Args:
        tables: net name -> :meth:`Probe.summary` table (or a probe); the first sets the layer order.
        degenerate: layers to mark (hatched bars, names in grey with a dagger): e.g.
            :func:`kwlab.instruments.statistics.degenerate_layers`, whose statistics are degenerate.
    """
    frames = {name: _table(t, "summary") for name, t in tables.items()}
    if not frames:
        raise ValueError("tables must hold at least one net")
    for name, df in frames.items():
        _require(df, ["layer", *columns], f"layer_comparison ({name})")
    order = list(dict.fromkeys(next(iter(frames.values()))["layer"]))
    marked = set(degenerate)
    unknown = marked - set(order)
    if unknown:
        raise ValueError(f"degenerate layers {sorted(unknown)} are not in the tables; layers: {order}")
    k = len(frames)
    width = 0.8 / k
    pos = np.arange(len(order))
    fig, axes = _stacked_axes(len(columns), len(order), 2.3, 1.2)
    for a, col in zip(axes, columns):
        for j, (name, df) in enumerate(frames.items()):
            values = df.set_index("layer")[col].reindex(order).to_numpy(dtype=float)
            bars = a.bar(
                pos + (j - (k - 1) / 2) * width,
                values,
                width=width,
                color=colors[j % len(colors)],
                label=name,
            )
            for bar, layer in zip(bars, order):
                if layer in marked:
                    bar.set_hatch("///")
                    bar.set_edgecolor("black")
        a.set_ylabel(_panel_label(col), fontsize=9)
        a.grid(alpha=0.3, axis="y")
    axes[-1].set_xticks(pos)
    axes[-1].set_xticklabels(
        [f"{n} †" if n in marked else n for n in order], rotation=60, ha="right", fontsize=9
    )
    for tick, n in zip(axes[-1].get_xticklabels(), order):
        if n in marked:
            tick.set_color("0.45")
    axes[-1].set_xlabel("layer" + ("   († degenerate: one coefficient per image, hatched)" if marked else ""))
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="upper center",
        ncol=len(labels),
        fontsize=10,
        frameon=False,
        bbox_to_anchor=(0.5, 1.0),
    )
    fig.suptitle(title or "Attention statistics per layer", y=1.04)
    fig.tight_layout()
    return fig
