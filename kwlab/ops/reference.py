"""Slow, obviously-correct references that every fast path is tested against."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["conv_nd", "per_sample_conv"]

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def conv_nd(dim: int):
    """``F.conv1d``/``conv2d``/``conv3d`` for ``dim`` spatial dimensions."""
    try:
        return _CONV[dim]
    except KeyError:
        raise ValueError(f"only 1, 2 or 3 spatial dimensions are supported, got {dim}") from None


def per_sample_conv(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0, dilation=1, groups: int = 1
) -> Tensor:
    """Run sample ``b`` of ``x`` with kernel ``weight[b]``, one plain convolution at a time.

    Args:
        x: ``(B, C, *spatial)``.
        weight: per-sample kernels ``(B, O, C/groups, *k)``.
        bias: ``(O,)``, ``(B, O)`` or None.
    """
    conv = conv_nd(x.dim() - 2)
    outs = []
    for i in range(x.shape[0]):
        b = None
        if bias is not None:
            b = bias[i] if bias.dim() == 2 else bias
        outs.append(conv(x[i : i + 1], weight[i], b, stride, padding, dilation, groups))
    return torch.cat(outs, 0)
