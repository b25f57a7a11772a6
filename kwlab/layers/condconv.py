"""CondConv: Conditionally Parameterized Convolutions (Yang, Bender, Le, Ngiam; NeurIPS 2019).

arXiv: https://arxiv.org/abs/1904.04971

Aggregation rule, per sample::

    r(x) = sigmoid(R @ GAP(x) + c)            (B, E)   one Linear, NOT normalised, no temperature
    W(x) = sum_e r_e(x) W_e,  b(x) = sum_e r_e(x) b_e

``attention="constant"`` (kwlab's control, not the paper's): :class:`CondConvConstantRouting` replaces the
routing Linear by E learned logits ``z``, the same for every sample, through the same sigmoid (CondConv has
no temperature). They start at 0: every routing weight 0.5, the centre of the dynamic routing at init (its
Linear's outputs are small). Parameters: the experts as before, the routing's ``I*E + E`` replaced by ``E``.

Checked against the paper (Yang et al., NeurIPS 2019, eq. 1-2) and the timm
implementation (``timm/layers/cond_conv2d.py``). Differences from timm: the routing function lives in
the layer (timm shares one routing Linear across the expand/depthwise/project convs of a block), and
only zero padding is supported (no TF "same" padding).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from kwlab.utils import moved_names

from . import bank
from .bank import conv_repr, init_kernels_like_conv
from .base import DynamicAttention, check_attention_mode

__all__ = ["CondConv2d", "CondConvRouting", "CondConvConstantRouting"]

__getattr__ = moved_names("kwlab.layers.condconv", {"KernelBankConv2d": "kwlab.layers.bank"})


class CondConvRouting(DynamicAttention):
    """CondConv routing function: ``sigmoid(Linear(GAP(x)))``, returned as alpha ``(B, 1, E)``.

    The ``temperature`` exists for the protocol but has no effect (CondConv has none).

    Args:
        in_channels: channels of the layer's input.
        num_experts: E, the number of expert kernels.
    """

    uses_temperature = False

    def __init__(self, in_channels: int, num_experts: int, *, device=None, dtype=None) -> None:
        super().__init__(1, num_experts, temperature=1.0)
        self.fc = nn.Linear(in_channels, num_experts, device=device, dtype=dtype)

    def coefficients(self, x: Tensor) -> Tensor:
        """``x``: ``(B, I, H, W)`` -> routing weights ``(B, 1, E)`` in (0, 1)."""
        return torch.sigmoid(self.fc(x.mean((2, 3)))).unsqueeze(1)


class CondConvConstantRouting(DynamicAttention):
    """kwlab's input-independent control of CondConv: ``sigmoid(z)`` of E learned logits ``z``, the same for
    every sample, alpha ``(B, 1, E)``. ``z`` starts at 0 (every routing weight 0.5). No temperature.

    Args:
        num_experts: E.
    """

    uses_temperature = False
    input_dependent = False

    def __init__(self, num_experts: int, *, device=None, dtype=None) -> None:
        super().__init__(1, num_experts, temperature=1.0)
        self.z = nn.Parameter(torch.zeros(num_experts, device=device, dtype=dtype))

    def reset_parameters(self) -> None:
        """``z = 0``: every routing weight 0.5."""
        nn.init.zeros_(self.z)

    def coefficients(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.z).view(1, 1, -1).expand(x.shape[0], -1, -1)


class CondConv2d(bank.KernelBankConv2d):  # KernelBankConv2d's one address: kwlab.layers.bank
    """Conditionally parameterised 2D convolution: a sigmoid-routed sum of ``num_experts`` kernels.

    Args mirror ``nn.Conv2d`` (``bias`` defaults to False: the layers are followed by BatchNorm).

    Args:
        num_experts: E, number of expert kernels (timm default 4; the ResNet18 "8x" table row uses 8).
        attention: "dynamic" (the paper's routing, default) or "constant" (kwlab's control:
            :class:`CondConvConstantRouting`, E learned logits starting at 0, no input dependence).

    Shapes:
        x ``(B, in_channels, H, W)`` -> ``(B, out_channels, H', W')``.
        ``weight``: ``(E, O, I/groups, kh, kw)``, ``bias``: ``(E, O)``.
        ``attention(x)``: routing ``(B, 1, E)``.

    Experts and their biases are initialised like ``nn.Conv2d`` (kaiming-uniform a=sqrt(5)); the routing
    Linear keeps PyTorch's default init.
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
        num_experts: int = 4,
        attention: str = "dynamic",
        padding_mode: str = "zeros",
        device=None,
        dtype=None,
    ) -> None:
        check_attention_mode(attention, "CondConv2d (method 'condconv')")
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
            "num_experts",
            num_experts,
            (num_experts, out_channels) if bias else None,
            factory,
        )
        if attention == "constant":
            self.attention = CondConvConstantRouting(num_experts, **factory)
        else:
            self.attention = CondConvRouting(in_channels, num_experts, **factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_kernels_like_conv(self.weight, self.bias)
        if isinstance(self.attention, CondConvConstantRouting):
            self.attention.reset_parameters()
            return
        self.attention.fc.reset_parameters()

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, **kwargs: Any) -> CondConv2d:
        """A CondConv2d with ``conv``'s geometry whose every expert is a copy of ``conv``'s weight (and bias).

        The output is then ``(sum_e r_e(x)) * conv(x)``: CondConv's routing is not normalised.
        """
        return super().from_conv(conv, **kwargs)

    def extra_repr(self) -> str:
        extra = ", attention='constant'" if not self.attention.input_dependent else ""
        return conv_repr(self) + f", num_experts={self.num_experts}" + extra
