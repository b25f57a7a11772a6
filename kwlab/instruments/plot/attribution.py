"""Attribution figures: images next to their attribution maps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .style import _DIVERGING

__all__ = ["to_image", "attribution_grid"]


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
