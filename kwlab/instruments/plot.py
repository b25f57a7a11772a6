"""Every kwlab figure: attention statistics, sweep results, learning curves, warehouse plans, kernel cells
and attribution maps.

Every function takes data (a tidy DataFrame from :class:`kwlab.Probe` / :func:`kwlab.instruments.probe.load` /
:meth:`kwlab.ProbeCallback.history` / a sweep table, or an array) and an optional matplotlib ``ax``, and
returns the :class:`~matplotlib.figure.Figure`. Nothing here calls ``plt.show()``. Where a function expects a
probe table it also accepts the probe (or a loaded :class:`~kwlab.instruments.probe.ProbeResult`) itself.

Signed attention is drawn with a diverging colour map centred on 0 (red: positive, blue: negative);
non-negative data (softmax or sigmoid attention, usage) with a sequential map starting at 0, so that a colour
never stands for a value the data cannot take. Panels that are compared take one scale (``vmax=``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from kwlab.ops.layout import cell_index_map

__all__ = [
    "attention_heatmap",
    "alpha_histogram",
    "negative_fraction",
    "negative_fraction_over_training",
    "cell_usage",
    "layer_stats",
    "layer_comparison",
    "accuracy_vs_params",
    "metric_vs_knob",
    "learning_curves",
    "over_training",
    "params_vs_budget",
    "warehouse_plan",
    "kernel_cells",
    "to_image",
    "attribution_grid",
]

_NEG = "#3b6fb6"  # blue: negative coefficients
_POS = "#c8553d"  # red: positive coefficients
_DIVERGING = "RdBu_r"  # signed data only, centred on 0
_SEQUENTIAL = "viridis"  # non-negative data (softmax / sigmoid attention, usage counts)


def _table(data: Any, name: str) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        return data
    method = getattr(data, name, None)
    if callable(method):
        return method()
    raise TypeError(
        f"data must be a DataFrame (or an object with a {name}() method, e.g. a Probe), "
        f"got {type(data).__name__}"
    )


def _fig_ax(ax: Axes | None, figsize: tuple[float, float] = (6.0, 4.0)) -> tuple[Figure, Axes]:
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} needs columns {list(columns)}; missing {missing} (got {list(df.columns)})")


def _one_layer(df: pd.DataFrame, layer: str | None) -> tuple[pd.DataFrame, str]:
    layers = list(dict.fromkeys(df["layer"]))
    if layer is None:
        if len(layers) != 1:
            raise ValueError(f"layer must name one of {layers} (the data holds several layers)")
        layer = layers[0]
    if layer not in layers:
        raise ValueError(f"layer must be one of {layers}, got {layer!r}")
    return df[df["layer"] == layer], layer


def _signed_imshow(fig: Figure, ax: Axes, values: np.ndarray, label: str, lim: float | None = None) -> None:
    if lim is None:
        lim = float(np.nanmax(np.abs(values))) if values.size else 1.0
    lim = lim if lim > 0 else 1.0
    im = ax.imshow(values, aspect="auto", cmap=_DIVERGING, vmin=-lim, vmax=lim, interpolation="nearest")
    fig.colorbar(im, ax=ax, label=label)
    _integer_ticks(ax)


def _sequential_imshow(
    fig: Figure, ax: Axes, values: np.ndarray, label: str, vmax: float | None = None
) -> None:
    """Non-negative values: a sequential map from 0 (dark) to ``vmax`` (bright), no negative half."""
    if vmax is None:
        vmax = float(np.nanmax(values)) if values.size else 1.0
    vmax = vmax if vmax > 0 else 1.0
    im = ax.imshow(values, aspect="auto", cmap=_SEQUENTIAL, vmin=0.0, vmax=vmax, interpolation="nearest")
    fig.colorbar(im, ax=ax, label=label)
    _integer_ticks(ax)


def _integer_ticks(ax: Axes) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _layer_ticks(ax: Axes, names: Sequence[str]) -> None:
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=9)


# ------------------------------------------------------------------------------------- attention tables
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
    ylabels = {"neg_frac": "share of alpha < 0", "neg_mass": "share of |alpha| that is negative"}
    ax.set_ylabel(ylabels.get(column, column))
    ax.set_xlabel("layer")
    ax.set_ylim(0, max(1e-3, float(np.nanmax(df[column].to_numpy())) * 1.15) if len(df) else 1)
    ax.set_title(title or ("Negative attention per layer" + (" (mass)" if column == "neg_mass" else "")))
    return fig


def negative_fraction_over_training(
    data: Any,
    *,
    column: str = "neg_frac",
    layers: Sequence[str] | None = None,
    x: str = "step",
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """One line per layer of ``column`` over training steps.

    Args:
        data: :meth:`ProbeCallback.history` table (step, epoch, layer, neg_frac, ...) or the callback.
        layers: the layers to draw (default all).
        x: ``"step"`` or ``"epoch"``.
    """
    df = _table(data, "history")
    _require(df, [x, "layer", column], "negative_fraction_over_training")
    names = list(dict.fromkeys(df["layer"])) if layers is None else list(layers)
    unknown = [n for n in names if n not in set(df["layer"])]
    if unknown:
        raise ValueError(
            f"layers {unknown} are not in the history; it has {list(dict.fromkeys(df['layer']))}"
        )
    fig, ax = _fig_ax(ax)
    cmap = plt.get_cmap("viridis")
    for i, name in enumerate(names):
        part = df[df["layer"] == name].sort_values(x)
        ax.plot(part[x], part[column], color=cmap(i / max(len(names) - 1, 1)), label=name, linewidth=1.2)
    ax.set_xlabel("training step" if x == "step" else x)
    ax.set_ylabel({"neg_frac": "share of alpha < 0"}.get(column, column))
    if len(names) <= 12:
        ax.legend(fontsize=7, ncol=2)
    else:  # too many lines for a legend: colour encodes depth
        sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, len(names) - 1))
        ax.figure.colorbar(sm, ax=ax, label="layer index (depth)")
    ax.set_title(title or f"{column} over training")
    return fig


def cell_usage(
    data: Any,
    warehouse: str | None = None,
    *,
    value: str = "mean_abs",
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Layer x cell matrix of a warehouse (``value``: ``"mean_abs"``, ``"top_count"`` or ``"top_frac"``).

    Args:
        data: :meth:`Probe.cell_usage` table (layer, warehouse, cell, ...) or a probe.
        warehouse: which bank to draw; None draws every warehouse, one panel each (needs ``ax=None`` when
            there are several).
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
        im = a.imshow(mat.to_numpy(dtype=float), aspect="auto", cmap="magma", vmin=0, interpolation="nearest")
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
        fig, axs = plt.subplots(
            len(columns),
            1,
            figsize=(max(8.0, 0.45 * len(df) + 2), 2.6 * len(columns) + 0.8),
            sharex=True,
            squeeze=False,
        )
        axes = list(axs[:, 0])
    else:
        if len(axes) != len(columns):
            raise ValueError(f"axes must hold one Axes per column ({len(columns)}), got {len(axes)}")
        fig = axes[0].figure
    labels = {
        "diversity": "diversity (mean pairwise\ncosine distance)",
        "effective_cells": "effective cells\nexp(entropy)",
        "entropy": "entropy (nats)",
        "zero_mass": "zero-cell mass",
    }
    pos = np.arange(len(df))
    for a, col in zip(axes, columns):
        a.bar(pos, df[col].to_numpy(dtype=float), color="#5a8f5a")
        if col == "effective_cells" and "num_cells" in df.columns:
            a.scatter(pos, df["num_cells"], marker="_", s=200, color="black", label="n (cells)", zorder=3)
            a.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside: covers no bar
        a.set_ylabel(labels.get(col, _STAT_LABELS.get(col, col)))
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
            :func:`kwlab.instruments.probe.degenerate_layers`, whose statistics are degenerate.
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
    fig, axes = plt.subplots(
        len(columns), 1, figsize=(max(8.0, 0.45 * len(order) + 2), 2.3 * len(columns) + 1.2),
        sharex=True, squeeze=False,
    )
    axes = list(axes[:, 0])
    for a, col in zip(axes, columns):
        for j, (name, df) in enumerate(frames.items()):
            values = df.set_index("layer")[col].reindex(order).to_numpy(dtype=float)
            bars = a.bar(pos + (j - (k - 1) / 2) * width, values, width=width, color=colors[j % len(colors)],
                         label=name)
            for bar, layer in zip(bars, order):
                if layer in marked:
                    bar.set_hatch("///")
                    bar.set_edgecolor("black")
        a.set_ylabel(_STAT_LABELS.get(col, col), fontsize=9)
        a.grid(alpha=0.3, axis="y")
    axes[-1].set_xticks(pos)
    axes[-1].set_xticklabels([f"{n} †" if n in marked else n for n in order], rotation=60, ha="right",
                             fontsize=9)
    for tick, n in zip(axes[-1].get_xticklabels(), order):
        if n in marked:
            tick.set_color("0.45")
    axes[-1].set_xlabel("layer" + ("   († degenerate: one coefficient per image, hatched)" if marked else ""))
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=10, frameon=False,
               bbox_to_anchor=(0.5, 1.0))
    fig.suptitle(title or "Attention statistics per layer", y=1.04)
    fig.tight_layout()
    return fig


_STAT_LABELS = {
    "neg_frac": "share of\nalpha < 0",
    "neg_mass": "negative share\nof |alpha|",
    "effective_cells": "effective cells\nexp(entropy)",
    "diversity": "diversity\n(cosine distance)",
    "class_distance": "class distance",
    "zero_mass": "zero-cell mass",
    "entropy": "entropy (nats)",
}


# ---------------------------------------------------------------------------------------------- sweeps
def _budget_text(value) -> str:
    """``2.0`` -> ``"b=2"``, ``0.25`` -> ``"b=1/4"``; anything else as text."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if v != v:  # NaN
        return ""
    if v >= 1 and v == int(v):
        return f"b={int(v)}"
    if 0 < v < 1 and abs(1 / v - round(1 / v)) < 1e-6:
        return f"b=1/{round(1 / v)}"
    return f"b={v:g}"


def accuracy_vs_params(
    data: pd.DataFrame,
    *,
    x: str = "params",
    y: str = "accuracy",
    hue: str = "method",
    label: str | None = "budget",
    ax: Axes | None = None,
    logx: bool = False,
    title: str | None = None,
    chance: float | None = None,
    legend: bool = False,
) -> Figure:
    """Scatter of accuracy against parameter count.

    Two styles. ``legend=False``: one colour per ``hue`` value, each point annotated with its ``label``
    (``label="budget"`` writes ``b=1/2``; a static net has no budget and no annotation). ``legend=True``
    (for runs repeated over seeds): one colour per configuration (``hue`` + ``label``; squares: static),
    the seeds as small dots, their mean with a 95% t-interval, and every configuration named in a legend
    beside the axes with its parameter count, so no two labels can overlap and points of different size
    never share a name.

    Args:
        data: one row per run or per (method, budget) with columns ``x``, ``y``, ``hue`` (and ``label``).
        x: parameter-count column (drawn in millions when values exceed 10^5).
        chance: draw the chance level (dashed, in the legend) and start the y-axis at 0.
    """
    _require(data, [x, y, hue] + ([label] if label else []), "accuracy_vs_params")
    fig, ax = _fig_ax(ax, (9.0, 4.5) if legend else (6.0, 4.0))
    scale = 1e6 if float(data[x].max()) > 1e5 else 1.0
    if legend:
        keys = [hue] + ([label] if label else [])
        for i, (key, part) in enumerate(data.groupby(keys, sort=False)):
            key = key if isinstance(key, tuple) else (key,)
            name = str(key[-1]) if label else str(key[0])
            colour = f"C{i % 10}"
            marker = "s" if str(key[0]) == "static" else "o"
            xs, ys = part[x].to_numpy(dtype=float) / scale, part[y].to_numpy(dtype=float)
            ax.scatter(xs, ys, color=colour, marker=marker, s=12, alpha=0.45, zorder=2)
            half = _ci95(ys)
            ax.errorbar(
                xs.mean(), ys.mean(), yerr=half if half == half else None, fmt=marker, color=colour,
                markersize=7, capsize=4, zorder=3,
                label=f"{name} ({_count_text(part[x].mean())} params, n={len(ys)})",
            )
    else:
        for i, (method, part) in enumerate(data.groupby(hue, sort=False)):
            ax.scatter(part[x] / scale, part[y], color=f"C{i}", label=str(method), s=36, zorder=3)
            if label and (label != "budget" or str(method) != "static"):  # a static net has no budget
                for _, row in part.iterrows():
                    text = _budget_text(row[label]) if label == "budget" else str(row[label])
                    ax.annotate(
                        text,
                        (row[x] / scale, row[y]),
                        textcoords="offset points",
                        xytext=(4, 4),
                        fontsize=9,
                        color=f"C{i}",
                    )
    if chance is not None:
        ax.axhline(chance, color="0.3", linestyle="--", linewidth=1, label=f"chance ({chance:g})")
        ax.autoscale_view()
        ax.set_ylim(0, max(2 * chance, ax.get_ylim()[1] * 1.05))  # room for every interval
    if logx:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("parameters (M)" if scale > 1 else x)
    ax.set_ylabel(y)
    ax.grid(alpha=0.3)
    if legend:  # beside the axes: it never covers a point; the chance line last
        handles, names = ax.get_legend_handles_labels()
        order = sorted(range(len(names)), key=lambda i: names[i].startswith("chance ("))
        ax.legend([handles[i] for i in order], [names[i] for i in order],
                  fontsize=9, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                  title="mean ± 95% CI; dots: seeds" if data.groupby([hue] + ([label] if label else []))
                  .size().max() > 1 else None, title_fontsize=9)
        fig.tight_layout()
    else:
        ax.legend(title=hue, fontsize=9)
    ax.set_title(title or f"{y} vs parameters")
    return fig


def _ci95(values: np.ndarray) -> float:
    """Half-width of the 95% t-interval of the mean (NaN for fewer than two values)."""
    values = values[~np.isnan(values)]
    if len(values) < 2:
        return float("nan")
    from scipy import stats as st  # noqa: PLC0415

    return float(values.std(ddof=1) * st.t.ppf(0.975, len(values) - 1) / np.sqrt(len(values)))


def _count_text(v: float) -> str:
    """``2_512_000`` -> ``2.51M``; ``73_000`` -> ``73k``."""
    v = float(v)
    if v >= 1e6:
        return f"{v / 1e6:.3g}M"
    if v >= 1e3:
        return f"{v / 1e3:.3g}k"
    return f"{v:.0f}"


def metric_vs_knob(
    data: pd.DataFrame,
    x: str,
    y: str,
    *,
    hue: str | None = None,
    ax: Axes | None = None,
    logx: bool = False,
    title: str | None = None,
    error: str = "std",
    chance: float | None = None,
) -> Figure:
    """Line of ``y`` against a knob ``x`` (mean over repeated rows, e.g. seeds, with error bars).

    Args:
        data: tidy table with columns ``x``, ``y`` (and ``hue``: one line per value).
        error: ``"std"`` (±1 sample std) or ``"ci95"`` (half-width of the 95% t-interval of the mean).
        chance: draw this chance level (dashed) and start the y-axis at 0, so that differences of a few
            points near chance do not fill the panel and look like trends.
    """
    _require(data, [x, y] + ([hue] if hue else []), "metric_vs_knob")
    if error not in ("std", "ci95"):
        raise ValueError(f"error must be 'std' or 'ci95', got {error!r}")
    fig, ax = _fig_ax(ax)
    groups = data.groupby(hue, sort=False) if hue else [(None, data)]
    for i, (key, part) in enumerate(groups):
        stats = part.groupby(x)[y].agg(["mean", "std", "count"]).sort_index()
        if error == "ci95":
            from scipy import stats as st  # noqa: PLC0415

            stats["std"] = (
                stats["std"] * st.t.ppf(0.975, (stats["count"] - 1).clip(lower=1)) / np.sqrt(stats["count"])
            )
        err = stats["std"].where(stats["count"] > 1)
        ax.errorbar(
            stats.index,
            stats["mean"],
            yerr=err.fillna(0.0) if err.notna().any() else None,
            marker="o",
            capsize=3,
            color=f"C{i}",
            label=None if key is None else str(key),
        )
    if logx:
        ax.set_xscale("log")
    if chance is not None:
        ax.axhline(chance, color="0.3", linestyle="--", linewidth=1, label=f"chance ({chance:g})")
        top = max(float(np.nanmax(data[y].to_numpy(dtype=float))) * 1.15, 2 * chance)
        ax.set_ylim(0, top)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.grid(alpha=0.3)
    if hue or chance is not None:
        ax.legend(title=hue, fontsize=8)
    ax.set_title(title or f"{y} vs {x}")
    return fig


# ---------------------------------------------------------------------------------------------- training
_CURVE_LABELS = {
    "train_loss": "training loss",
    "test_loss": "test loss",
    "train_acc": "training accuracy",
    "test_acc": "test accuracy",
    "temperature": "temperature tau (end of epoch)",
    "lr": "learning rate",
    "test_acc_tau0": "test accuracy at tau = 0",
    "test_acc_tau0_recal": "test accuracy at tau = 0, BatchNorm recalibrated",
    "learned_own_share": "learned attention's weight on the pattern's cell",
    "learned_to_pattern_norm": "||learned term|| / ||pattern term||",
    "sample_variation": "sample variation of the attention",
    "learned_sample_variation": "sample variation of the learned attention",
}


def _curve(history: Any, metric: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of ``metric`` in one history, NaN and absent epochs dropped."""
    pairs = [(r["epoch"], r[metric]) for r in _records(history) if metric in r and r[metric] == r[metric]]
    return [float(e) for e, _ in pairs], [float(v) for _, v in pairs]


def learning_curves(
    histories: Mapping[str, Any],
    metrics: str | Sequence[str] = ("train_loss", "test_acc"),
    *,
    axes: Axes | Sequence[Axes] | None = None,
    title: str | None = None,
) -> Figure:
    """One panel per metric, one line per run, against the epoch.

    Args:
        histories: run name -> per-epoch records: ``Trainer.history`` (a list of dicts with ``epoch`` and
            metrics) or a DataFrame with an ``epoch`` column (e.g. a run's ``metrics.jsonl``).
        metrics: one metric name or several (one panel each). A run without a metric (or only NaN) has no
            line in that panel; a metric that no run has raises ValueError naming the metrics there are.
        axes: one Axes per metric (a single Axes for a single metric); None makes a new figure.
    """
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    if not names:
        raise ValueError("metrics must name at least one metric")
    curves = {m: {run: _curve(h, m) for run, h in histories.items()} for m in names}
    empty = [m for m in names if histories and not any(xs for xs, _ in curves[m].values())]
    if empty:
        seen = sorted({k for h in histories.values() for r in _records(h) for k in r} - {"epoch"})
        raise ValueError(f"metrics {empty} are in no history; the histories hold {seen}")
    if axes is None:
        fig, grid = plt.subplots(1, len(names), figsize=(4.3 * len(names), 3.6), squeeze=False)
        axes = list(grid[0])
    else:
        axes = [axes] if isinstance(axes, Axes) else list(axes)
        if len(axes) != len(names):
            raise ValueError(f"axes must hold one Axes per metric ({len(names)}), got {len(axes)}")
        fig = axes[0].figure
    for ax, metric in zip(axes, names):
        for i, (run, (xs, ys)) in enumerate(curves[metric].items()):
            if xs:
                ax.plot(xs, ys, marker="o", markersize=3, color=f"C{i % 10}", label=run)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(_CURVE_LABELS.get(metric, metric))
        ax.set_title(_CURVE_LABELS.get(metric, metric))
        ax.grid(alpha=0.3)
        if ax.lines and len(histories) <= 12:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _records(history: Any) -> list[Mapping[str, Any]]:
    return history.to_dict("records") if isinstance(history, pd.DataFrame) else list(history)


# ----------------------------------------------------------------------------------- warehouse planning
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


# ------------------------------------------------------------------------------------------ kernel cells
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


# ------------------------------------------------------------------------------------------- attributions
def to_image(x: Any, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """A normalised image tensor ``(3, H, W)`` back to an ``(H, W, 3)`` array in [0, 1] for ``imshow``."""
    m = np.asarray(mean, dtype=np.float64).reshape(3, 1, 1)
    s = np.asarray(std, dtype=np.float64).reshape(3, 1, 1)
    img = x.detach().cpu().double().numpy() * s + m
    return np.clip(img, 0.0, 1.0).transpose(1, 2, 0)


def attribution_grid(
    images: Any,
    maps: Mapping[str, Any],
    mean: Sequence[float],
    std: Sequence[float],
    *,
    column_titles: Sequence[str] | None = None,
    title: str | None = None,
) -> Figure:
    """Images in the first row, one row per attribution map below, signed maps on a diverging scale.

    Args:
        images: ``(B, 3, H, W)`` normalised images (``mean``/``std`` undo the normalisation).
        maps: row label -> attributions ``(B, C, H, W)`` (summed over channels) or ``(B, H, W)``. Each row is
            scaled by its own largest ``|value|`` (one colour bar per row), so rows of different methods or
            models compare in shape, not in absolute size.
        column_titles: one string per image (e.g. "label / prediction").
    """
    b = images.shape[0]
    if column_titles is not None and len(column_titles) != b:
        raise ValueError(f"column_titles must hold one title per image ({b}), got {len(column_titles)}")
    rows = len(maps) + 1
    fig, axes = plt.subplots(rows, b, figsize=(1.9 * b + 1.2, 1.9 * rows), squeeze=False)
    for j in range(b):
        axes[0, j].imshow(to_image(images[j], mean, std))
        if column_titles is not None:
            axes[0, j].set_title(column_titles[j], fontsize=8)
    axes[0, 0].set_ylabel("image", fontsize=9)
    for r, (label, attr) in enumerate(maps.items(), start=1):
        a = attr.detach().float().cpu()
        if a.dim() == 4:
            a = a.sum(1)
        lim = float(a.abs().max()) or 1.0
        for j in range(b):
            im = axes[r, j].imshow(
                a[j].numpy(), cmap=_DIVERGING, vmin=-lim, vmax=lim, interpolation="nearest"
            )
        axes[r, 0].set_ylabel(label, fontsize=9)
        fig.colorbar(im, ax=list(axes[r]), fraction=0.02, pad=0.01, label="attribution")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    return fig


def over_training(
    frame: pd.DataFrame,
    column: str,
    *,
    x: str = "step",
    hue: str | None = "label",
    ax: Axes | None = None,
    chance: float | None = None,
    tau: bool = True,
    logy: bool = False,
    title: str | None = None,
) -> Figure:
    """One statistic over training, one line per ``hue`` value: the mean over seeds with its 95% t-interval.

    Args:
        frame: tidy rows with columns ``x``, ``column`` and optionally ``hue``, ``seed`` and ``layer`` (a
            :meth:`kwlab.ProbeCallback.history` or a run's metrics.jsonl, several runs concatenated): the
            layers of one run at one ``x`` are averaged first, then the seeds.
        column: the statistic (e.g. ``learned_own_share``, ``sample_variation``, ``test_acc_tau0``).
        x: the x axis column (``step`` for probe histories, ``epoch`` for metrics).
        hue: the column that names a configuration (None: one line).
        chance: draw the chance level as a dotted line (in the legend).
        tau: with a ``temperature`` column, draw the anneal position tau (mean over runs) on a right axis.
        logy: logarithmic y axis (ratios); non-finite values are left out.
    """
    _require(frame, [x, column], "over_training")
    df = frame.copy()
    df[column] = pd.to_numeric(df[column], errors="coerce")
    df = df[np.isfinite(df[column])]
    if df.empty:
        raise ValueError(f"{column!r} has no finite values to plot")
    groups = [g for g in (hue, "seed") if g is not None and g in df.columns]
    per_run = df.groupby([*groups, x], sort=True)[column].mean().reset_index()
    fig, ax = _fig_ax(ax, (6.4, 3.8))
    keys = list(dict.fromkeys(per_run[hue])) if hue is not None and hue in per_run else [None]
    for i, key in enumerate(keys):
        rows = per_run if key is None else per_run[per_run[hue] == key]
        stats = rows.groupby(x)[column].agg(["mean", "std", "count"]).reset_index()
        half = _t_half_width(stats["std"].to_numpy(), stats["count"].to_numpy())
        color = f"C{i % 10}"
        n = int(stats["count"].max())
        ax.plot(stats[x], stats["mean"], color=color, label=f"{key if key is not None else column} (n={n})")
        ok = np.isfinite(half)
        if ok.any():
            ax.fill_between(
                stats[x][ok], (stats["mean"] - half)[ok], (stats["mean"] + half)[ok], color=color, alpha=0.2
            )
    if chance is not None:
        ax.axhline(chance, color="0.4", linestyle=":", linewidth=1, label=f"chance ({chance:g})")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("training step" if x == "step" else x)
    ax.set_ylabel(_CURVE_LABELS.get(column, column))
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if tau and "temperature" in df.columns:
        # one dashed schedule per configuration, in its colour (configurations may anneal differently)
        right = ax.twinx()
        for i, key in enumerate(keys):
            rows = df if key is None else df[df[hue] == key]
            t = rows.groupby(x)["temperature"].mean().dropna()
            right.plot(t.index, t.to_numpy(), color=f"C{i % 10}", linestyle="--", linewidth=0.9, alpha=0.7)
        right.set_ylim(-0.05, 1.05)
        right.set_ylabel("anneal position tau (dashed)")
        if right.lines:
            handles.append(right.lines[0])
            labels.append("tau (dashed, per configuration)")
    ax.legend(handles, labels, fontsize=7, loc="best")
    ax.set_title(title or _CURVE_LABELS.get(column, column) + " (mean, 95% CI over seeds)", fontsize=9)
    fig.tight_layout()
    return fig


def _t_half_width(std: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Half-widths of 95% t-intervals of means (NaN for fewer than 2 values)."""
    from scipy import stats as st

    out = np.full(len(std), np.nan)
    ok = count >= 2
    out[ok] = st.t.ppf(0.975, count[ok] - 1) * std[ok] / np.sqrt(count[ok])
    return out
