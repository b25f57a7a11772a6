"""ODConv: Omni-Dimensional Dynamic Convolution (Li, Zhou, Yao; ICLR 2022).

OpenReview: https://openreview.net/forum?id=DmpCfq6Mg39 ; code: https://github.com/OSVAI/ODConv

Aggregation rule, per sample (four attentions from one shared squeeze)::

    h    = ReLU(BN(fc(GAP(x))))                          fc: 1x1 conv I -> Hd, Hd = max(int(I/16), 16)
    a_c  = sigmoid(channel_fc(h) / T)   (B, I)           input channels
    a_f  = sigmoid(filter_fc(h) / T)    (B, O)           output filters   (skipped for depthwise convs)
    a_s  = sigmoid(spatial_fc(h) / T)   (B, kh, kw)      kernel taps      (skipped for 1x1 convs)
    a_w  = softmax(kernel_fc(h) / T)    (B, n)           the n kernels    (skipped for n = 1)
    y    = [ (sum_i a_w,i * (a_s * W_i)) * (x . a_c) ] . a_f

As in the official code, ``a_c`` and ``a_f`` multiply the activations (equivalent to scaling the kernel's
input/output axes, cheaper), and a 1x1 conv with n = 1 runs as a plain convolution between the two
scalings. A *skipped* attention is a tensor of ones of the documented shape (the official code returns
the float 1.0, which breaks shape-inspecting tools: OSVAI/ODConv issue #13).

Protocol: ``layer.attention(x)`` reports the **kernel attention** ``a_w`` as alpha ``(B, 1, n)``; all four
come from ``layer.attention.all_attentions(x)`` (an :class:`ODConvAttentions` tuple, no hooks needed); the
layer calls ``layer.attention(x)`` (the kernel attention, which the probe records) and takes the other heads
of that call with ``attention.pop_heads()``.
``attention.frozen_alpha`` freezes the kernel attention only; the other three stay input-dependent.

Temperature: ``T`` divides the logits of all four attentions; the official recipe anneals it linearly
30 -> 1 over the first 10 epochs (``TemperatureSchedule(iters, epochs=10, start=30.0, end=1.0)``, see
``kwlab.methods.METHODS["odconv"]``). A fresh layer sits at step 0 of that schedule: T = 30.

``attention="constant"`` (kwlab's control, not the paper's): :class:`ODConvConstantAttention` replaces the
squeeze and the four heads by four learned constants ``z_c (I)``, ``z_f (O)``, ``z_s (kh*kw)``, ``z_w (n)``
(the skipped heads stay skipped), the same for every sample, each through its own sigmoid/softmax divided
by the same T. They start at 0: channel, filter and spatial attentions 0.5 and a uniform kernel softmax,
the centre of what the official init gives at T = 30. Parameters: the kernels as before, the attention's
``I*Hd + 2*Hd + (Hd + 1)*(I + O + kh*kw + n)`` (for the heads that exist) replaced by ``I + O + kh*kw + n``.

Batch size 1 in training mode: BatchNorm cannot compute statistics from one value per channel (the
attention's map is 1x1 after GAP), the failure reported in OSVAI/ODConv issue #27. kwlab's
:class:`BatchNorm2dSafe` then normalises with the running statistics, as in eval mode, and leaves them
unchanged (same rule as the KW attention). Any other batch behaves exactly like ``nn.BatchNorm2d``.
When a model is traced with ``torch.fx``, the train/eval flag of that BatchNorm is fixed at trace time.

Parameter names follow the official ``modules/odconv.py`` (``weight``, ``attention.fc``, ``attention.bn``,
``attention.{channel,filter,spatial,kernel}_fc``), so official checkpoints map one to one.
Checked against the official code (OSVAI/ODConv, commit 0901cc1) and its README: ResNet18 with
ODConv on every block conv has 11.94M (n = 1) and 44.90M (n = 4) parameters.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn

from kwlab.ops import dynamic_conv

from .bank import KernelBankConv2d, conv_repr
from .base import (
    DynamicAttention,
    TemperatureContract,
    check_attention_mode,
    check_divisor,
    check_positive_int,
    fold_input_scale,
    init_attention_head,
)
from .norm import BatchNorm2dSafe

torch.fx.wrap("dynamic_conv")

__all__ = ["ODConv2d", "ODConvAttention", "ODConvConstantAttention", "ODConvAttentions"]

#: the official schedule: the softmax divisor T goes 30 -> 1 over the first 10 epochs; evaluation at T = 1
ODCONV_TEMPERATURE = TemperatureContract(
    "softmax divisor T of all four heads (30 -> 1); evaluated at T = 1", 30.0, 1.0, 10.0
)


class ODConvAttentions(NamedTuple):
    """The four ODConv attentions of a batch (skipped ones are tensors of ones)."""

    channel: Tensor  #: (B, I) input-channel attention
    filter: Tensor  #: (B, O) output-filter attention
    spatial: Tensor  #: (B, kh, kw) kernel-tap attention
    kernel: Tensor  #: (B, 1, n) kernel attention, = ``attention(x)``


class ODConvAttention(DynamicAttention):
    """The official ODConv attention (one squeeze, four heads).

    Args:
        in_channels, out_channels, kernel_size, groups: the conv's geometry (decide which heads exist).
        num_kernels: n.
        reduction: hidden width ``Hd = max(int(in_channels * reduction), min_hidden)``.
        min_hidden: floor of the hidden width (official 16).
        temperature: initial T (30, the start of the official schedule).
    """

    temperature_contract = ODCONV_TEMPERATURE

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, int],
        groups: int,
        num_kernels: int,
        *,
        reduction: float = 1 / 16,
        min_hidden: int = 16,
        temperature: float = 30.0,
        device=None,
        dtype=None,
    ) -> None:
        if not reduction > 0:
            raise ValueError(f"reduction must be > 0, got {reduction!r}")
        check_positive_int("min_hidden", min_hidden)
        check_divisor(temperature)
        super().__init__(1, num_kernels, temperature=temperature)
        factory = dict(device=device, dtype=dtype)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = tuple(kernel_size)
        self.hidden = max(int(in_channels * reduction), min_hidden)
        self.fc = nn.Conv2d(in_channels, self.hidden, 1, bias=False, **factory)
        self.bn = BatchNorm2dSafe(self.hidden, **factory)
        self.channel_fc = nn.Conv2d(self.hidden, in_channels, 1, **factory)
        depthwise = in_channels == groups and in_channels == out_channels
        self.filter_fc = None if depthwise else nn.Conv2d(self.hidden, out_channels, 1, **factory)
        taps = self.kernel_size[0] * self.kernel_size[1]
        self.spatial_fc = None if taps == 1 else nn.Conv2d(self.hidden, taps, 1, **factory)
        self.kernel_fc = None if num_kernels == 1 else nn.Conv2d(self.hidden, num_kernels, 1, **factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official init: 1x1 convs kaiming-normal (fan_out, relu) with zero bias; BN weight 1, bias 0."""
        init_attention_head(self)

    def squeeze(self, x: Tensor) -> Tensor:
        """Shared hidden code ``h = ReLU(BN(fc(GAP(x))))``, ``(B, Hd, 1, 1)``."""
        return F.relu(self.bn(self.fc(F.adaptive_avg_pool2d(x, 1))))

    def _kernel(self, h: Tensor) -> Tensor:
        if self.kernel_fc is None:
            return h.new_ones(h.shape[0], 1, 1)
        return torch.softmax(self.kernel_fc(h).flatten(1) / self.temperature, dim=-1).unsqueeze(1)

    def coefficients(self, x: Tensor) -> Tensor:
        """Kernel attention ``(B, 1, n)`` (only this head is evaluated)."""
        return self._kernel(self.squeeze(x))

    def all_attentions(self, x: Tensor) -> ODConvAttentions:
        """All four attentions for the layer input ``x`` ``(B, I, H, W)``.

        The kernel attention passes through ``tap`` and honours ``frozen_alpha`` exactly like ``forward``.
        """
        h = self.squeeze(x)
        t = self.temperature
        b = h.shape[0]
        channel = torch.sigmoid(self.channel_fc(h).flatten(1) / t)
        if self.filter_fc is None:
            filt = h.new_ones(b, self.out_channels)
        else:
            filt = torch.sigmoid(self.filter_fc(h).flatten(1) / t)
        if self.spatial_fc is None:
            spatial = h.new_ones(b, *self.kernel_size)
        else:
            spatial = torch.sigmoid(self.spatial_fc(h).flatten(1) / t).view(-1, *self.kernel_size)
        if self.frozen_alpha is not None:
            kernel = self.frozen_alpha.unsqueeze(0).expand(b, -1, -1)
        else:
            kernel = self.tap(self._kernel(h))
        return ODConvAttentions(channel, filt, spatial, kernel)

    def forward(self, x: Tensor) -> Tensor:
        """Kernel attention ``alpha (B, 1, n)`` (what the probe and ``freeze_attention`` see); the heads of
        the same call are kept for the layer, which takes them with :meth:`pop_heads` right after."""
        heads = self.all_attentions(x)
        self._heads = heads
        return heads.kernel

    def pop_heads(self) -> ODConvAttentions:
        """The :class:`ODConvAttentions` of the last :meth:`forward` call (cleared when taken)."""
        heads = self.__dict__.pop("_heads", None)
        if heads is None:
            raise RuntimeError("pop_heads() without a forward: call attention(x) first")
        return heads

    def extra_repr(self) -> str:
        heads = [n for n in ("filter", "spatial", "kernel") if getattr(self, f"{n}_fc") is None]
        return f"hidden={self.hidden}, num_kernels={self.num_cells}, skipped={heads}"


class ODConvConstantAttention(ODConvAttention):
    """kwlab's input-independent control of ODConv: four learned constants through the official four
    functions and temperature (see the module doc); the same protocol as :class:`ODConvAttention`
    (``attention(x)`` is the kernel attention, ``all_attentions``, ``pop_heads``, ``frozen_alpha``).

    Parameters ``channel_z (I)``, ``filter_z (O)``, ``spatial_z (kh*kw)``, ``kernel_z (n)``; a head the
    official code skips (filter for depthwise convs, spatial for 1x1, kernel for n = 1) is None. All start
    at 0 (sigmoid 0.5, uniform softmax).

    Args:
        in_channels, out_channels, kernel_size, groups: the conv's geometry (decide which heads exist).
        num_kernels: n.
        temperature: initial T (30).
    """

    input_dependent = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, int],
        groups: int,
        num_kernels: int,
        *,
        temperature: float = 30.0,
        device=None,
        dtype=None,
    ) -> None:
        check_divisor(temperature)
        DynamicAttention.__init__(self, 1, num_kernels, temperature=temperature)
        factory = dict(device=device, dtype=dtype)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = tuple(kernel_size)
        depthwise = in_channels == groups and in_channels == out_channels
        taps = self.kernel_size[0] * self.kernel_size[1]
        z = lambda n: nn.Parameter(torch.zeros(n, **factory))  # noqa: E731
        self.channel_z = z(in_channels)
        self.filter_z = None if depthwise else z(out_channels)
        self.spatial_z = None if taps == 1 else z(taps)
        self.kernel_z = None if num_kernels == 1 else z(num_kernels)

    def reset_parameters(self) -> None:
        """Every constant 0 (sigmoid 0.5, uniform softmax)."""
        for p in (self.channel_z, self.filter_z, self.spatial_z, self.kernel_z):
            if p is not None:
                nn.init.zeros_(p)

    def _constant_kernel(self, b) -> Tensor:
        if self.kernel_z is None:
            return self.channel_z.new_ones(b, 1, 1)
        return torch.softmax(self.kernel_z / self.temperature, dim=-1).view(1, 1, -1).expand(b, -1, -1)

    def coefficients(self, x: Tensor) -> Tensor:
        """Kernel attention ``(B, 1, n)``, the same for every sample."""
        return self._constant_kernel(x.shape[0])

    def all_attentions(self, x: Tensor) -> ODConvAttentions:
        """All four attentions (the same for every sample of ``x``); the kernel attention passes through
        ``tap`` and honours ``frozen_alpha`` as in :class:`ODConvAttention`."""
        t = self.temperature
        b = x.shape[0]
        channel = torch.sigmoid(self.channel_z / t).view(1, -1).expand(b, -1)
        if self.filter_z is None:
            filt = self.channel_z.new_ones(b, self.out_channels)
        else:
            filt = torch.sigmoid(self.filter_z / t).view(1, -1).expand(b, -1)
        if self.spatial_z is None:
            spatial = self.channel_z.new_ones(b, *self.kernel_size)
        else:
            spatial = torch.sigmoid(self.spatial_z / t).view(1, *self.kernel_size).expand(b, -1, -1)
        if self.frozen_alpha is not None:
            kernel = self.frozen_alpha.unsqueeze(0).expand(b, -1, -1)
        else:
            kernel = self.tap(self._constant_kernel(b))
        return ODConvAttentions(channel, filt, spatial, kernel)

    def extra_repr(self) -> str:
        heads = [n for n in ("filter", "spatial", "kernel") if getattr(self, f"{n}_z") is None]
        return f"constant, num_kernels={self.num_cells}, skipped={heads}"


class ODConv2d(KernelBankConv2d):
    """Omni-dimensional dynamic 2D convolution.

    Args mirror ``nn.Conv2d`` (``bias`` defaults to False as in the official code; if True, a *static*
    per-output bias is added after the filter attention, an extension for converting biased convs).

    Args:
        num_kernels: n, the kernel count ("ODConv (1x)" is n = 1, "(4x)" is n = 4; official default 4).
        reduction: attention hidden width ``max(int(in_channels * reduction), min_hidden)`` (1/16).
        min_hidden: 16.
        temperature: initial T of all four attentions (see the module docstring).
        attention: "dynamic" (the official attention, default) or "constant" (kwlab's control:
            :class:`ODConvConstantAttention`, four learned constants starting at 0, no input dependence).

    Shapes:
        x ``(B, in_channels, H, W)`` -> ``(B, out_channels, H', W')``;
        ``weight``: ``(n, O, I/groups, kh, kw)``;
        ``attention(x)``: kernel attention ``(B, 1, n)``; ``attention.all_attentions(x)``: see
        :class:`ODConvAttentions`.
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
        reduction: float = 1 / 16,
        min_hidden: int = 16,
        temperature: float = 30.0,
        attention: str = "dynamic",
        padding_mode: str = "zeros",
        device=None,
        dtype=None,
    ) -> None:
        check_attention_mode(attention, "ODConv2d (method 'odconv')")
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
            (out_channels,) if bias else None,
            factory,
        )
        # 1x1 with a single kernel: the kernel is static up to a per-sample scalar -> plain conv
        self._static_kernel = self.kernel_size == (1, 1) and num_kernels == 1
        if attention == "constant":
            if not reduction > 0:
                raise ValueError(f"reduction must be > 0, got {reduction!r}")
            check_positive_int("min_hidden", min_hidden)
            self.attention = ODConvConstantAttention(
                in_channels,
                out_channels,
                self.kernel_size,
                groups,
                num_kernels,
                temperature=temperature,
                **factory,
            )
        else:
            self.attention = ODConvAttention(
                in_channels,
                out_channels,
                self.kernel_size,
                groups,
                num_kernels,
                reduction=reduction,
                min_hidden=min_hidden,
                temperature=temperature,
                **factory,
            )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official init: each kernel kaiming-normal (fan_out, relu); static bias 0; attention as official."""
        for i in range(self.num_kernels):
            nn.init.kaiming_normal_(self.weight[i], mode="fan_out", nonlinearity="relu")
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        self.attention.reset_parameters()

    def effective_kernels(self, x: Tensor) -> Tensor:
        """All four attentions folded into one kernel per sample: ``filter_o * channel_i * spatial *
        sum_k kernel_k W_k`` ``(B, O, I/g, kh, kw)``."""
        att = self.attention.all_attentions(x)
        weight = (att.kernel[:, 0] @ self.weight.flatten(1)).view(-1, *self._kernel_shape)
        weight = weight * att.spatial[:, None, None] * att.filter[:, :, None, None, None]
        return fold_input_scale(weight, att.channel, self.groups)

    def forward(self, x: Tensor) -> Tensor:
        self.attention(x)  # through the module, so that the probe's hooks see the kernel attention
        att = self.attention.pop_heads()
        x = x * att.channel[:, :, None, None]
        if self._static_kernel:
            y = F.conv2d(x, self.weight[0], None, self.stride, self.padding, self.dilation, self.groups)
            scale = att.filter * att.kernel[:, 0]
        else:
            weight = (att.kernel[:, 0] @ self.weight.flatten(1)).view(-1, *self._kernel_shape)
            weight = weight * att.spatial[:, None, None]
            y = dynamic_conv(
                x, weight, None, self.stride, self.padding, self.dilation, self.groups, self.algorithm
            )
            scale = att.filter
        y = y * scale[:, :, None, None]
        if self.bias is not None:
            y = y + self.bias[:, None, None]
        return y

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, **kwargs: Any) -> ODConv2d:
        """An ODConv2d with ``conv``'s geometry whose n kernels (and static bias) copy ``conv``.

        Its output equals ``conv(x)`` only where the channel, filter and spatial attentions are 1.
        """
        return super().from_conv(conv, **kwargs)

    def extra_repr(self) -> str:
        extra = ", attention='constant'" if not self.attention.input_dependent else ""
        return conv_repr(self) + f", num_kernels={self.num_kernels}" + extra
