"""The figures' shared style: colours (signed data diverging around 0, non-negative data sequential from 0),
the table and axes helpers, and the 95% t-intervals every figure draws.
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

from kwlab.instruments.intervals import mean_ci

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


def _stacked_axes(rows: int, layers: int, height: float, extra: float) -> tuple[Figure, list[Axes]]:
    """``rows`` panels of ``height`` inches stacked over one shared layer axis wide enough for ``layers``."""
    fig, axs = plt.subplots(
        rows, 1, figsize=(max(8.0, 0.45 * layers + 2), height * rows + extra), sharex=True, squeeze=False
    )
    return fig, list(axs[:, 0])


def _ci95(values: np.ndarray) -> float:
    """Half-width of the 95% t-interval of the mean of ``values`` (NaN ignored; NaN for fewer than two):
    :func:`kwlab.instruments.intervals.mean_ci`."""
    return mean_ci(values)[2]
