"""Sweep result figures: accuracy against parameters (mean and 95% interval over seeds, each point named by
its budget) and one metric against a knob.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from kwlab.instruments.intervals import t_half_width
from kwlab.instruments.left_out import left_out_text, split_nonfinite

from .style import _ci95, _fig_ax, _require

__all__ = ["accuracy_vs_params", "metric_vs_knob"]


def _finite_runs(data: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The rows whose numbers are finite, and the text that counts the rest ("1 run left out: non-finite
    test loss"; :func:`kwlab.instruments.left_out.split_nonfinite`)."""

    kept, left = split_nonfinite(data)
    return kept, left_out_text(left)


def _note_left_out(ax: Axes, text: str) -> None:
    if text:
        ax.text(0.01, 0.01, text, transform=ax.transAxes, fontsize=7, color="0.35", va="bottom")


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
    data, left_out = _finite_runs(data)  # runs with non-finite numbers: not drawn, counted on the axes
    fig, ax = _fig_ax(ax, (9.0, 4.5) if legend else (6.0, 4.0))
    _note_left_out(ax, left_out)
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
                xs.mean(),
                ys.mean(),
                yerr=half if half == half else None,
                fmt=marker,
                color=colour,
                markersize=7,
                capsize=4,
                zorder=3,
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
        ax.legend(
            [handles[i] for i in order],
            [names[i] for i in order],
            fontsize=9,
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),
            borderaxespad=0.0,
            title="mean ± 95% CI; dots: seeds"
            if data.groupby([hue] + ([label] if label else [])).size().max() > 1
            else None,
            title_fontsize=9,
        )
        fig.tight_layout()
    else:
        ax.legend(title=hue, fontsize=9)
    ax.set_title(title or f"{y} vs parameters")
    return fig


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
    points: bool = False,
) -> Figure:
    """Line of ``y`` against a knob ``x`` (mean over repeated rows, e.g. seeds, with error bars).

    Args:
        data: tidy table with columns ``x``, ``y`` (and ``hue``: one line per value).
        error: ``"std"`` (±1 sample std) or ``"ci95"`` (half-width of the 95% t-interval of the mean).
        chance: draw this chance level (dashed) and start the y-axis at 0, so that differences of a few
            points near chance do not fill the panel and look like trends.
        points: also draw every row (e.g. each seed) as a small dot of its line's colour, so that seeds
            which split into two modes show as two clusters instead of hiding inside one wide interval.
    """
    _require(data, [x, y] + ([hue] if hue else []), "metric_vs_knob")
    if error not in ("std", "ci95"):
        raise ValueError(f"error must be 'std' or 'ci95', got {error!r}")
    data, left_out = _finite_runs(data)  # runs with non-finite numbers: not drawn, counted on the axes
    fig, ax = _fig_ax(ax)
    _note_left_out(ax, left_out)
    groups = data.groupby(hue, sort=False) if hue else [(None, data)]
    for i, (key, part) in enumerate(groups):
        stats = part.groupby(x)[y].agg(["mean", "std", "count"]).sort_index()
        if error == "ci95":
            stats["std"] = t_half_width(stats["std"].to_numpy(), stats["count"].to_numpy())
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
        if points:
            ax.scatter(part[x], part[y], s=14, color=f"C{i}", alpha=0.45, linewidths=0, zorder=3)
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
