"""Code the dynamic conv layers share, beside the protocol of :mod:`kwlab.layers.base`: the whole-kernel
bank of CondConv, DY-Conv and ODConv (:class:`KernelBankConv2d`), the ``nn.Conv2d`` geometry every dynamic
conv holds (:func:`set_conv_geometry`) and prints (:func:`conv_repr`), the per-kernel ``nn.Conv2d`` init
(:func:`init_kernels_like_conv`) and the description of official checkpoint layouts
(:class:`OfficialLayout`). Each method's own rule stays in its file.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.fx
from torch import Tensor, nn

from kwlab.ops import dynamic_conv

from .base import DynamicLayer, check_positive_int, conv_geometry, like_conv

# dynamic_conv is fx-wrapped where it is defined; wrapping its name here too keeps the call a leaf
# when a model using this module is traced with torch.fx.symbolic_trace.
torch.fx.wrap("dynamic_conv")

__all__ = ["KernelBankConv2d", "OfficialLayout", "conv_repr", "init_kernels_like_conv", "set_conv_geometry"]


class OfficialLayout(NamedTuple):
    """How a module's ``state_dict`` keys differ from the official code's (relative names).

    Attributes:
        stacks: official stacked tensor -> the kwlab tensors it holds along its first axis, in order
            (e.g. ``"static_filter_attn" -> ("kids.0.filter_scale", "kids.1.filter_scale", ...)``).
        renames: ``(official prefix, kwlab prefix)`` pairs (e.g. ``("se.0.se.", "kids.0.attention.")``).
    """

    stacks: dict[str, tuple[str, ...]]
    renames: tuple[tuple[str, str], ...] = ()


def set_conv_geometry(
    layer: nn.Module,
    in_channels: int,
    out_channels: int,
    kernel_size,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    padding_mode: str = "zeros",
    *,
    dim: int = 2,
    asymmetric_same: bool = False,
) -> None:
    """Check ``nn.ConvNd``-style arguments (:func:`kwlab.layers.base.conv_geometry`) and set them on ``layer``
    as ``nn.ConvNd`` holds them: ``in_channels``, ``out_channels``, ``groups``, and ``kernel_size``,
    ``stride``, ``padding``, ``dilation`` as ``dim``-tuples (``padding`` may stay "same"/"valid")."""
    geo = conv_geometry(
        dim,
        in_channels,
        out_channels,
        kernel_size,
        stride,
        padding,
        dilation,
        groups,
        padding_mode,
        asymmetric_same=asymmetric_same,
    )
    layer.in_channels, layer.out_channels, layer.groups = in_channels, out_channels, groups
    layer.kernel_size, layer.stride = geo["kernel_size"], geo["stride"]
    layer.padding, layer.dilation = geo["padding"], geo["dilation"]


def conv_repr(layer: nn.Module) -> str:
    """The ``nn.Conv2d``-style head of a dynamic conv's ``extra_repr``."""
    s = (
        f"{layer.in_channels}, {layer.out_channels}, kernel_size={layer.kernel_size}, "
        f"stride={layer.stride}, padding={layer.padding}"
    )
    if layer.dilation != (1, 1):
        s += f", dilation={layer.dilation}"
    if layer.groups != 1:
        s += f", groups={layer.groups}"
    if getattr(layer, "bias", None) is None:
        s += ", bias=False"
    return s


def init_kernels_like_conv(weight: Tensor, bias: Tensor | None) -> None:
    """Initialise each kernel ``weight[e]`` (and ``bias[e]``) like ``nn.Conv2d.reset_parameters``."""
    for e in range(weight.shape[0]):
        nn.init.kaiming_uniform_(weight[e], a=math.sqrt(5))
        if bias is not None:
            fan_in = weight[e][0].numel()
            bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            nn.init.uniform_(bias[e], -bound, bound)


class KernelBankConv2d(DynamicLayer):
    """Base of the whole-kernel methods (CondConv, DY-Conv, ODConv): ``nn.Conv2d`` geometry and a bank
    ``weight`` of K kernels ``(K, O, I/groups, kh, kw)``.

    Subclasses call :meth:`_init_bank` and set ``self.attention``; the default forward mixes the bank with
    ``alpha (B, 1, K)`` (and a per-kernel bias ``(K, O)`` when there is one) and runs
    :func:`kwlab.ops.dynamic_conv`.
    """

    def _init_bank(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride,
        padding,
        dilation,
        groups: int,
        padding_mode: str,
        count_name: str,
        count: int,
        bias_shape: tuple[int, ...] | None,
        factory: dict,
    ) -> None:
        set_conv_geometry(
            self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, padding_mode
        )
        setattr(self, count_name, check_positive_int(count_name, count))
        self.algorithm = "auto"
        self._kernel_shape = (out_channels, in_channels // groups, *self.kernel_size)
        self.weight = nn.Parameter(torch.empty(count, *self._kernel_shape, **factory))
        self.bias = nn.Parameter(torch.empty(*bias_shape, **factory)) if bias_shape is not None else None

    def per_sample_kernel(self, alpha: Tensor) -> tuple[Tensor, Tensor | None]:
        """Kernels ``(B, O, I/g, kh, kw)`` and biases ``(B, O)`` (or None) for ``alpha`` (B, 1, K)."""
        r = alpha[:, 0]
        weight = (r @ self.weight.flatten(1)).view(-1, *self._kernel_shape)
        bias = None if self.bias is None else r @ self.bias
        return weight, bias

    def effective_kernels(self, x: Tensor) -> Tensor:
        """``sum_k alpha_bk W_k`` ``(B, O, I/g, kh, kw)`` (the per-kernel bias is the constant ``c_b``)."""
        return self.per_sample_kernel(self.attention(x))[0]

    def forward(self, x: Tensor) -> Tensor:
        weight, bias = self.per_sample_kernel(self.attention(x))
        return dynamic_conv(
            x, weight, bias, self.stride, self.padding, self.dilation, self.groups, self.algorithm
        )

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, **kwargs: Any) -> KernelBankConv2d:
        """A layer with ``conv``'s geometry whose every kernel (and per-kernel bias) copies ``conv``."""
        layer = like_conv(cls, conv, **kwargs)
        with torch.no_grad():
            layer.weight.copy_(conv.weight.unsqueeze(0).expand_as(layer.weight))
            if conv.bias is not None:
                layer.bias.copy_(conv.bias.expand_as(layer.bias))
        return layer.train(conv.training)
