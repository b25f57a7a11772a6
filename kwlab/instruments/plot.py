"""Plots of attention statistics and sweep results.

Every function takes data (a tidy DataFrame from :class:`kwlab.Probe` / :func:`kwlab.instruments.probe.load` /
:meth:`kwlab.ProbeCallback.history` / a sweep table, or an array) and an optional matplotlib ``ax``, and
returns the :class:`~matplotlib.figure.Figure`. Nothing here calls ``plt.show()``. Where a function expects a
probe table it also accepts the probe (or a loaded :class:`~kwlab.instruments.probe.ProbeResult`) itself.

Signed attention is drawn with a diverging colour map centred on 0 (red: positive, blue: negative).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = [
    "attention_heatmap",
    "alpha_histogram",
    "negative_fraction",
    "negative_fraction_over_training",
    "cell_usage",
    "layer_stats",
    "accuracy_vs_params",
    "metric_vs_knob",
]

_NEG = "#3b6fb6"  # blue: negative coefficients
_POS = "#c8553d"  # red: positive coefficients
_DIVERGING = "RdBu_r"


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


def _integer_ticks(ax: Axes) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _layer_ticks(ax: Axes, names: Sequence[str]) -> None:
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)


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
) -> Figure:
    """Heatmap of signed attention for one layer.

    Args:
        data: :meth:`Probe.samples` table (layer, sample, mixture, cell, alpha), a probe, or a 2-D array
            ``(rows, cells)`` drawn as is.
        layer: the layer to draw (required when the table holds several).
        by: ``"sample"``: rows are samples, value = alpha averaged over the layer's mixtures (exact for
            whole-kernel methods, m = 1); ``"mixture"``: rows are mixtures, value = alpha of ``sample`` (or
            averaged over the kept samples when ``sample`` is None).
        vmax: the colour scale's limit (+-vmax); pass the same value to panels that are compared. None: this
            panel's largest ``|alpha|``.
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
    _signed_imshow(fig, ax, values, "alpha (signed)", vmax)
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
            figsize=(max(4.0, 0.35 * len(df) + 2), 2.8 * len(columns)),
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
            a.legend(fontsize=7)
        a.set_ylabel(labels.get(col, col))
    _layer_ticks(axes[-1], list(df["layer"]))
    axes[-1].set_xlabel("layer")
    axes[0].set_title(title or "Attention statistics per layer")
    fig.tight_layout()
    return fig


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
) -> Figure:
    """Scatter of accuracy against parameter count, one colour per method, points labelled by budget.

    Args:
        data: one row per run or per (method, budget) with columns ``x``, ``y``, ``hue`` (and ``label``).
        x: parameter-count column (drawn in millions when values exceed 10^5).
    """
    _require(data, [x, y, hue] + ([label] if label else []), "accuracy_vs_params")
    fig, ax = _fig_ax(ax)
    scale = 1e6 if float(data[x].max()) > 1e5 else 1.0
    for i, (method, part) in enumerate(data.groupby(hue, sort=False)):
        ax.scatter(part[x] / scale, part[y], color=f"C{i}", label=str(method), s=36, zorder=3)
        if label and str(method) != "static":  # a static net has no budget to label
            for _, row in part.iterrows():
                text = _budget_text(row[label]) if label == "budget" else str(row[label])
                ax.annotate(
                    text,
                    (row[x] / scale, row[y]),
                    textcoords="offset points",
                    xytext=(4, 4),
                    fontsize=7,
                    color=f"C{i}",
                )
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel("parameters (M)" if scale > 1 else x)
    ax.set_ylabel(y)
    ax.grid(alpha=0.3)
    ax.legend(title=hue, fontsize=8)
    ax.set_title(title or f"{y} vs parameters")
    return fig


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
