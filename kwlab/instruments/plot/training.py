"""Figures over training: the negative fraction per layer, learning curves of several runs, and one
statistic over training with its 95% interval over seeds and the anneal position tau.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from kwlab.instruments.intervals import t_half_width
from kwlab.instruments.statistics import statistic_label

from .style import _fig_ax, _require, _table

__all__ = ["negative_fraction_over_training", "learning_curves", "over_training"]


#: Labels of the history columns that are not probe statistics (those are named by their ``label``).
_CURVE_LABELS = {
    "train_loss": "training loss",
    "test_loss": "test loss",
    "train_acc": "training accuracy",
    "test_acc": "test accuracy",
    "train_acc_clean": "clean train accuracy (eval mode, fixed subset)",
    "temperature": "temperature tau (end of epoch)",
    "lr": "learning rate",
    "test_acc_tau0": "test accuracy at tau = 0",
    "test_acc_tau0_recal": "test accuracy at tau = 0, BatchNorm recalibrated",
}


def _label(column: str) -> str:
    return _CURVE_LABELS.get(column) or statistic_label(column)


def _records(history: Any) -> list[Mapping[str, Any]]:
    return history.to_dict("records") if isinstance(history, pd.DataFrame) else list(history)


def _curve(history: Any, metric: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of ``metric`` in one history, NaN, None and absent epochs dropped."""
    pairs = [
        (r["epoch"], r[metric])
        for r in _records(history)
        if r.get(metric) is not None and r[metric] == r[metric]
    ]
    return [float(e) for e, _ in pairs], [float(v) for _, v in pairs]


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
    ax.set_ylabel(statistic_label(column))
    if len(names) <= 12:
        ax.legend(fontsize=7, ncol=2)
    else:  # too many lines for a legend: colour encodes depth
        sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, len(names) - 1))
        bar = ax.figure.colorbar(sm, ax=ax, label="layer index (depth)")
        bar.locator = MaxNLocator(integer=True)  # layers are counted: no fractional ticks
        bar.update_ticks()
    ax.set_title(title or f"{column} over training")
    return fig


def learning_curves(
    histories: Mapping[str, Any],
    metrics: str | Sequence[str] = ("train_loss", "test_acc"),
    *,
    axes: Axes | Sequence[Axes] | None = None,
    chance: float | None = None,
    clean_train: bool = True,
    title: str | None = None,
) -> Figure:
    """One panel per metric, one line per run, against the epoch.

    Args:
        histories: run name -> per-epoch records: ``Trainer.history`` (a list of dicts with ``epoch`` and
            metrics) or a DataFrame with an ``epoch`` column (e.g. a run's ``metrics.jsonl``).
        metrics: one metric name or several (one panel each). A run without a metric (or only NaN) has no
            line in that panel; a metric that no run has raises ValueError naming the metrics there are.
        axes: one Axes per metric (a single Axes for a single metric); None makes a new figure.
        chance: the chance accuracy (e.g. ``1 / num_classes``): the accuracy panels (a metric whose name
            contains ``acc``) get a dashed line there, labelled in the legend, and a y axis from 0, so that
            a gap near chance looks as small as it is.
        clean_train: in the ``test_acc`` panel, draw each run's clean train accuracy (``train_acc_clean``:
            eval mode, no augmentation, a fixed training subset) as a dashed line of the run's colour beside
            its test accuracy (runs recorded without it have no dashed line). A net whose clean train
            accuracy sits at its test accuracy is not fitting its training set better than new images.
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
            if clean_train and metric == "test_acc":
                cx, cy = _curve(histories[run], "train_acc_clean")
                if cx:
                    ax.plot(cx, cy, linestyle="--", color=f"C{i % 10}", label=f"{run} (train, clean)")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(_label(metric))
        ax.set_title(_label(metric))
        ax.grid(alpha=0.3)
        if chance is not None and "acc" in metric:
            ax.axhline(chance, color="0.3", linestyle="--", linewidth=1, label=f"chance ({chance:.2f})")
            ax.set_ylim(bottom=0)
        if ax.lines and len(histories) <= 12:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
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
    order: Sequence[Any] | None = None,
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
        order: the ``hue`` values in the order of their colours C0, C1, ... (e.g. a summary table's order, so
            that every figure of a report gives a configuration one colour); values not in it follow, sorted.
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
    if order is not None and keys != [None]:
        keys = [k for k in dict.fromkeys(order) if k in keys] + [k for k in keys if k not in set(order)]
    for i, key in enumerate(keys):
        rows = per_run if key is None else per_run[per_run[hue] == key]
        stats = rows.groupby(x)[column].agg(["mean", "std", "count"]).reset_index()
        half = t_half_width(stats["std"].to_numpy(), stats["count"].to_numpy())
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
    ax.set_ylabel(_label(column))
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
    ax.set_title(title or _label(column) + " (mean, 95% CI over seeds)", fontsize=9)
    fig.tight_layout()
    return fig
