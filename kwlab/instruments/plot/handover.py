"""The handover as one figure: test accuracy at the current tau and at tau = 0 against tau, one colour per
configuration (official vs pattern init), with 95% t-intervals over seeds.

KW mixes ``alpha = (1 - tau) * learned + tau * pattern``. While tau anneals from 1 to 0 the accuracy at the
current tau is what the net computes; the accuracy at tau = 0 is what its learned attention alone computes.
The learned attention *takes over* when the two curves meet before tau reaches 0 (the net no longer needs
the pattern); where the tau = 0 curve stays low until the end, the pattern carried the net and the drop at
tau = 0 is the handover that failed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from kwlab.instruments.intervals import t_half_width

from .style import _fig_ax, _require, _table

__all__ = ["handover_story"]


def _by_tau(rows: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per epoch: tau (mean over seeds), and ``column``'s mean and 95% t half-width over seeds."""
    grouped = rows.groupby("epoch")
    out = pd.DataFrame(
        {
            "tau": grouped["temperature"].mean(),
            "mean": grouped[column].mean(),
            "std": grouped[column].std(ddof=1),
            "n": grouped[column].count(),
        }
    ).dropna(subset=["tau", "mean"])
    out["half"] = t_half_width(out["std"].fillna(0.0).to_numpy(), out["n"].to_numpy())
    return out.sort_index()


def handover_story(
    epochs: Any,
    *,
    chance: float | None = None,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Test accuracy at the current tau (solid) and at tau = 0 (dashed) against tau, per configuration.

    Args:
        epochs: the per-epoch table of several runs (:func:`kwlab.experiments.handover.epoch_table`): columns
            ``label`` (one per configuration), ``seed``, ``epoch``, ``temperature`` (tau at the end of the
            epoch), ``test_acc`` and ``test_acc_tau0`` (runs without a tau = 0 measurement are left out).
        chance: draw chance accuracy as a dotted line.

    The x axis runs from tau = 1 (left, the start of the anneal) to 0 (right); epochs after the anneal all sit
    at tau = 0. Bands: 95% t-intervals over seeds, where a configuration has several.
    """
    df = _table(epochs, "epochs")
    _require(df, ["label", "epoch", "temperature", "test_acc", "test_acc_tau0"], "handover_story")
    df = df.assign(
        **{c: pd.to_numeric(df[c], errors="coerce") for c in ("temperature", "test_acc", "test_acc_tau0")}
    )
    df = df[df["test_acc_tau0"].notna() & df["temperature"].notna()]
    if df.empty:
        raise ValueError("handover_story needs epochs with a test_acc_tau0 and a temperature (KW runs)")
    fig, ax = _fig_ax(ax, (7.0, 4.5))
    colors = iter(["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9"] * 10)
    for label, rows in df.groupby("label", sort=False):
        color = next(colors)
        for column, style, what in (
            ("test_acc", "-", "at the current tau"),
            ("test_acc_tau0", "--", "at tau = 0"),
        ):
            curve = _by_tau(rows, column)
            x, y = curve["tau"].to_numpy(float), curve["mean"].to_numpy(float)
            half = curve["half"].to_numpy(float)
            ax.plot(x, y, style, color=color, marker="o", markersize=3, label=f"{label}: {what}")
            if np.any(half > 0):
                ax.fill_between(x, y - half, y + half, color=color, alpha=0.15, linewidth=0)
    if chance is not None:
        ax.axhline(chance, color="0.4", linestyle=":", linewidth=1, label=f"chance ({chance:.2f})")
    ax.set_xlim(1.02, -0.02)  # training runs left to right as tau falls
    ax.set_xlabel("anneal position tau (1: the one-hot pattern, 0: the learned attention alone)")
    ax.set_ylabel("test accuracy")
    ax.set_title(title or "The handover: accuracy at the current tau (solid) and at tau = 0 (dashed)")
    ax.legend(fontsize=9, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
