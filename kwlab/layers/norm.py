"""Batch-1-safe BatchNorm for attention heads (the most reported crash of dynamic convolutions).

A training-mode ``nn.BatchNorm1d/2d`` cannot compute batch statistics from one value per channel
(batch 1 after global pooling), which crashes the official KW, ODConv and FDConv attention when a
detector builds its model with a batch of one. These drop-in subclasses normalise such a batch with the
running statistics (as in eval mode) and leave those statistics unchanged; every other batch behaves
exactly as the torch layer. The state_dict keys are the torch layer's.
"""

from __future__ import annotations

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["batch_safe_batch_norm", "BatchNorm1dSafe", "BatchNorm2dSafe"]


@torch.fx.wrap
def batch_safe_batch_norm(
    x: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    num_batches_tracked: Tensor | None,
    training: bool,
    momentum: float | None,
    eps: float,
) -> Tensor:
    """``F.batch_norm`` that falls back to the running statistics when a training batch has a single
    value per channel (e.g. batch 1 on a 1x1 map); the running statistics are then left unchanged."""
    # a Python bool also when the batch is symbolic (torch.compile / export): the branch guards on the shape
    # relation instead of handing F.batch_norm a SymBool (a graph break and a recompile per batch size)
    use_batch = False
    if training and (running_mean is None or x.numel() > x.shape[1]):
        use_batch = True
    factor = 0.0 if momentum is None else momentum
    if use_batch and num_batches_tracked is not None:
        num_batches_tracked.add_(1)
        if momentum is None:
            factor = 1.0 / float(num_batches_tracked)
    return F.batch_norm(x, running_mean, running_var, weight, bias, use_batch, factor, eps)


class _SafeForward:
    def forward(self, x: Tensor) -> Tensor:
        return batch_safe_batch_norm(
            x,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            self.num_batches_tracked,
            self.training,
            self.momentum,
            self.eps,
        )


class BatchNorm1dSafe(_SafeForward, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` that accepts a training batch of one sample (uses the running statistics)."""


class BatchNorm2dSafe(_SafeForward, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` that accepts a training batch with one value per channel (uses running stats)."""
