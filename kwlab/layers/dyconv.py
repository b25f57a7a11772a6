"""DY-Conv: Dynamic Convolution, Attention over Convolution Kernels (Chen et al., CVPR 2020).

arXiv: https://arxiv.org/abs/1912.03458

Aggregation rule, per sample::

    z(x)  = FC2(ReLU(FC1(GAP(x))))            FC1: C -> C/4 (no bias), FC2: C/4 -> K (with bias)
    pi(x) = softmax(z(x) / T)                 (B, K), a convex combination
    W(x)  = sum_k pi_k(x) W_k,  b(x) = sum_k pi_k(x) b_k

Temperature ``T``: the paper anneals it linearly from 30 to 1 over the first 10 epochs, then keeps 1,
so that early attention is near-uniform and every kernel gets trained. In kwlab ``T`` is the
``attention.temperature`` (set with :func:`kwlab.set_temperature`; schedule
``TemperatureSchedule(iters_per_epoch, epochs=10, start=30.0, end=1.0)``, see
``kwlab.methods.METHODS["dyconv"]``). A fresh layer sits at step 0 of that schedule: T = 30.
The stored T must be a finite number > 0 (the constructor refuses others; ``kwlab.set_temperature`` maps
the anneal position tau in [0, 1] to T = 1 + 29 * tau).

``attention="constant"`` (kwlab's control, not the paper's): :class:`DyConvConstantAttention` replaces the
head FC1/FC2 by K learned logits ``z``, the same for every sample, through the same ``softmax(z / T)`` and
the same temperature. They start at 0: a uniform softmax, which is what DY-Conv's attention gives at
T = 30 anyway (its logits at init are small, divided by 30). Parameters: the kernels as before, the head's
``C*Hd + Hd*K + K`` replaced by ``K``.

There is no official code. Checked against the paper (Chen et al., CVPR 2020, eq. 1-3 and sec. 4)
and the widely used reimplementation kaijieshi7/Dynamic-convolution-Pytorch; differences from the
latter: hidden width ``max(int(C * reduction), 1)`` (not ``int(C/4) + 1``) and kernels initialised like
``nn.Conv2d``. Because the mixture is convex, a layer whose K kernels all equal ``W`` *is* the static
conv ``W`` for any attention (used by :func:`kwlab.methods.family.convert`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn

from .bank import KernelBankConv2d, conv_repr, init_kernels_like_conv
from .base import DynamicAttention, TemperatureContract, check_attention_mode, check_divisor

__all__ = ["DynamicConv2d", "DyConvAttention", "DyConvConstantAttention"]

#: the paper's schedule: the softmax divisor T goes 30 -> 1 over the first 10 epochs
DYCONV_TEMPERATURE = TemperatureContract("softmax divisor T (30 -> 1); evaluated at T = 1", 30.0, 1.0, 10.0)


class DyConvAttention(DynamicAttention):
    """DY-Conv kernel attention ``softmax(FC2(ReLU(FC1(GAP(x)))) / T)``, alpha ``(B, 1, K)``.

    Args:
        in_channels: C, channels of the layer's input.
        num_kernels: K.
        reduction: hidden width = ``max(int(C * reduction), 1)`` (paper: C/4).
        temperature: initial T (30, the start of the paper's schedule).
    """

    temperature_contract = DYCONV_TEMPERATURE

    def __init__(
        self,
        in_channels: int,
        num_kernels: int,
        *,
        reduction: float = 0.25,
        temperature: float = 30.0,
        device=None,
        dtype=None,
    ) -> None:
        if not reduction > 0:
            raise ValueError(f"reduction must be > 0, got {reduction!r}")
        check_divisor(temperature)
        super().__init__(1, num_kernels, temperature=temperature)
        factory = dict(device=device, dtype=dtype)
        self.hidden = max(int(in_channels * reduction), 1)
        self.fc1 = nn.Linear(in_channels, self.hidden, bias=False, **factory)
        self.fc2 = nn.Linear(self.hidden, num_kernels, **factory)

    def logits(self, x: Tensor) -> Tensor:
        """Raw logits z ``(B, K)`` for the layer input ``x`` ``(B, C, H, W)``."""
        return self.fc2(F.relu(self.fc1(x.mean((2, 3)))))

    def coefficients(self, x: Tensor) -> Tensor:
        return torch.softmax(self.logits(x) / self.temperature, dim=-1).unsqueeze(1)


class DyConvConstantAttention(DynamicAttention):
    """kwlab's input-independent control of DY-Conv: ``softmax(z / T)`` of K learned logits ``z``, the same
    for every sample, alpha ``(B, 1, K)``. ``z`` starts at 0 (a uniform softmax: what the dynamic attention
    gives at T = 30). The temperature contract is DY-Conv's (T = 30 -> 1).

    Args:
        num_kernels: K.
        temperature: initial T (30).
    """

    temperature_contract = DYCONV_TEMPERATURE
    input_dependent = False

    def __init__(self, num_kernels: int, *, temperature: float = 30.0, device=None, dtype=None) -> None:
        check_divisor(temperature)
        super().__init__(1, num_kernels, temperature=temperature)
        self.z = nn.Parameter(torch.zeros(num_kernels, device=device, dtype=dtype))

    def reset_parameters(self) -> None:
        """``z = 0``: the uniform softmax."""
        nn.init.zeros_(self.z)

    def coefficients(self, x: Tensor) -> Tensor:
        alpha = torch.softmax(self.z / self.temperature, dim=-1)
        return alpha.view(1, 1, -1).expand(x.shape[0], -1, -1)


class DynamicConv2d(KernelBankConv2d):
    """Dynamic convolution (DY-Conv): a softmax-attention mixture of ``num_kernels`` kernels (and biases).

    Args mirror ``nn.Conv2d`` (``bias`` defaults to False: the layers are followed by BatchNorm).

    Args:
        num_kernels: K (paper: 4).
        reduction: attention hidden width ``max(int(C * reduction), 1)``.
        temperature: initial softmax temperature (see the module docstring for the schedule).
        attention: "dynamic" (the paper's, default) or "constant" (kwlab's control:
            :class:`DyConvConstantAttention`, K learned logits starting at 0, no input dependence).

    Shapes:
        x ``(B, in_channels, H, W)`` -> ``(B, out_channels, H', W')``.
        ``weight``: ``(K, O, I/groups, kh, kw)``, ``bias``: ``(K, O)``.
        ``attention(x)``: ``(B, 1, K)``, rows sum to 1.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = False,
        *,
        num_kernels: int = 4,
        reduction: float = 0.25,
        temperature: float = 30.0,
        attention: str = "dynamic",
        padding_mode: str = "zeros",
        device=None,
        dtype=None,
    ) -> None:
        check_attention_mode(attention, "DynamicConv2d (method 'dyconv')")
        super().__init__()
        factory = dict(device=device, dtype=dtype)
        self._init_bank(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            padding_mode,
            "num_kernels",
            num_kernels,
            (num_kernels, out_channels) if bias else None,
            factory,
        )
        if attention == "constant":
            if not reduction > 0:
                raise ValueError(f"reduction must be > 0, got {reduction!r}")
            self.attention = DyConvConstantAttention(num_kernels, temperature=temperature, **factory)
        else:
            self.attention = DyConvAttention(
                in_channels, num_kernels, reduction=reduction, temperature=temperature, **factory
            )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Each kernel like ``nn.Conv2d``; attention Linears with PyTorch's default init (constant: z = 0)."""
        init_kernels_like_conv(self.weight, self.bias)
        if isinstance(self.attention, DyConvConstantAttention):
            self.attention.reset_parameters()
            return
        self.attention.fc1.reset_parameters()
        self.attention.fc2.reset_parameters()

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, **kwargs: Any) -> DynamicConv2d:
        """A DynamicConv2d with ``conv``'s geometry whose K kernels (and biases) all copy ``conv``.

        Because the attention is convex, its output equals ``conv(x)`` for any attention.
        """
        return super().from_conv(conv, **kwargs)

    def extra_repr(self) -> str:
        extra = ", attention='constant'" if not self.attention.input_dependent else ""
        return conv_repr(self) + f", num_kernels={self.num_kernels}" + extra
