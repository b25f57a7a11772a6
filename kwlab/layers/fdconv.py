"""FDConv: Frequency Dynamic Convolution (Chen et al., CVPR 2025; arXiv 2503.18783;
code: https://github.com/Linwei-Chen/FDConv, ``FDConv_detection/mmdet_custom/FDConv.py``).

Three parts, all written from the official code (commit bf7a33d):

* **FDW (Fourier disjoint weight).** The kernel ``(O, I, k, k)`` is laid out as the matrix ``[O*k, I*k]``
  (row ``o*k + kh``, column ``i*k + kw``) and stored as its ``rfft2`` (real/imag pairs divided by
  ``min(O, I) // 2``) in ``dft_weight`` ``(param_ratio, O*k, I*k//2 + 1, 2)``. The ``F = O*k*(I*k//2 + 1)``
  coefficients are sorted by radial frequency ``|(f_h, f_w)|`` and cut into ``kernel_num`` equal,
  disjoint bands. Per sample::

      spectrum(x) = alpha_scale * sum_r  a_{r, band(c)}(x) * dft_weight[r, c]      for every coefficient c
      W_fdw(x)    = irfft2(spectrum(x)) laid back to (O, I, k, k)

  with ``alpha_scale = min(O, I) // 2 * kernel_num * param_ratio``. So the parameter count stays ~|W|.
* **KSM-global** (``attention``; official ``KSM_Global``): ``h = StarReLU(BN(fc(GAP(x))))`` (StarReLU:
  ``s * relu(z)^2 + b``, learnable s, b), then four heads with bias: channel ``2 sigmoid (B, I)``,
  filter ``2 sigmoid (B, O)``, spatial ``2 sigmoid (B, k, k)`` (none for 1x1), kernel
  ``2 sigmoid(z / kernel_temp) / n`` ``(B, n)``, ``n = kernel_num * param_ratio`` (none for n = 1).
  Hidden width ``max(int(I * reduction), 16)``, reduction 1/16.
* **KSM-local** (official ``KSM_Local``): an ECA-style ``Conv1d(1, O*k*k, ks)`` over the LayerNorm'd channel
  descriptor ``GAP(x)`` (``ks = round(log2(I)/2 + 0.5) // 2 * 2 + 1``, Python's round), giving a dense
  element-wise attention ``2 sigmoid`` of shape ``(B, O, I, k, k)``.
* **FBM (frequency band modulation)**, 3x3 convs only (official ``use_fbm_if_k_in=[3]``): the input ``x`` is
  split with rfft2 low-pass masks (cutoff ``0.5 / f``, ``f`` in (2, 4, 8), Chebyshev frequency norm, masks
  built on a 64 x 64 grid and nearest-resized to the input, as the official cache does) into three
  high-frequency bands and a low band; band ``j`` is multiplied by ``2 sigmoid(conv3x3_j(x))``
  ``(B, 1, H, W)``; the low band passes unchanged.

Forward: ``y = [ (W_fdw(x) * spatial * local) conv (FBM(x) * channel) ] * filter + bias``, one per-sample
kernel through :func:`kwlab.ops.dynamic_conv` (the official code folds channel and filter into the kernel on
small maps; the result is the same).

Gating (official): FDConv is used only where ``min(I, O) > 16`` and ``k`` is 1 or 3; elsewhere a plain conv.
:class:`FDConv2d` refuses other geometries by name; ``kwlab.convert(..., "fdconv")`` leaves those convs as
``nn.Conv2d``. kwlab adds two conditions the official code would crash on: ``groups == 1`` (the FDW matrix
holds dense kernels) and ``kernel_num`` dividing ``F`` (the official band split is a reshape).

Init: the official init (KSM-global convs kaiming-normal fan_out, bias 0, BN 1/0; channel, spatial and kernel
heads then N(0, 1e-6); KSM-local weights 1e-6; FBM convs N(0, 1e-6), bias 0). At init every attention is
then ~1 and the kernel attention is ``1/n`` per band, so the assembled kernel is the stored kernel exactly
(the sum of all bands) and the layer computes its conv up to ~1e-5 (a converted ResNet-18: logits
within ~1e-4 relative). One official quirk: the filter head's
re-initialisation tests ``isinstance(self.func_filter, nn.Conv2d)`` on a bound method and never runs, so
officially ``filter_fc`` keeps its kaiming init and the filter attention starts away from 1.
``near_identity=True`` (kwlab's default, as the official code intends) gives ``filter_fc`` the N(0, 1e-6) init
too, so a converted layer computes the original conv at init; ``near_identity=False`` is the official quirk.

Protocol: ``layer.attention(x)`` reports the kernel (band) attention as alpha ``(B, 1, n)``; it does not
sum to 1 (``2 sigmoid / n``). ``frozen_alpha`` freezes it; the other attentions stay input-dependent.
No temperature schedule: ``kernel_temp`` and the heads' divisor are fixed at 1 (official config); the
``temperature`` has no effect.

Parameter names: ``dft_weight``, ``bias``, ``KSM_Local.*``, ``FBM.*`` as official; the official
``KSM_Global.*`` is ``attention.*`` (:meth:`FDConv2d.official_layout` declares the rename). Batch size 1
in training mode: the KSM-global BatchNorm uses its running statistics for that forward (official:
crashes, FDConv issue #20).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn

from kwlab.ops import dynamic_conv

from .bank import OfficialLayout, conv_repr, set_conv_geometry
from .base import DynamicAttention, DynamicLayer, check_positive_int, like_conv
from .norm import BatchNorm2dSafe

torch.fx.wrap("dynamic_conv")

__all__ = [
    "FDConv2d",
    "FDConvAttention",
    "FDConvAttentions",
    "FrequencyBandModulation",
    "KernelSpatialModulationLocal",
    "StarReLU",
    "fdconv_applies",
    "frequency_bands",
    "FDCONV_MIN_CHANNELS",
    "FDCONV_KERNEL_SIZES",
]

#: official gating: FDConv only where min(I, O) > 16 ...
FDCONV_MIN_CHANNELS = 16
#: ... and the (square) kernel size is one of these
FDCONV_KERNEL_SIZES = (1, 3)


def fdconv_applies(conv: nn.Module) -> str | None:
    """None if FDConv may replace ``conv``, else the reason it may not (the official gating, plus kwlab's
    ``groups == 1`` and square-kernel conditions, which the official layout cannot do without)."""
    if not isinstance(conv, nn.Conv2d):
        return f"not an nn.Conv2d ({type(conv).__name__})"
    i, o = conv.in_channels, conv.out_channels
    kh, kw = conv.kernel_size
    if min(i, o) <= FDCONV_MIN_CHANNELS:
        return f"min(in_channels, out_channels) = {min(i, o)} <= {FDCONV_MIN_CHANNELS} (official gating)"
    if kh != kw or kh not in FDCONV_KERNEL_SIZES:
        return f"kernel_size {conv.kernel_size} not 1x1 or 3x3 (official gating)"
    if conv.groups != 1:
        return f"groups={conv.groups}: the Fourier weight holds dense kernels only"
    return None


def _frequency_grid(rows: int, cols: int) -> Tensor:
    """Official ``get_fft2freq(rows, cols, use_rfft=True)`` grid: ``(rows, cols//2 + 1, 2)`` of (f_h, f_w)."""
    fh = torch.fft.fftfreq(rows)
    fw = torch.fft.rfftfreq(cols)
    return torch.stack(torch.meshgrid(fh, fw, indexing="ij"), dim=-1)


def frequency_bands(rows: int, cols: int, kernel_num: int) -> Tensor:
    """Band of every rfft2 coefficient of a ``rows x cols`` matrix, ``(rows, cols//2 + 1)`` (long).

    The coefficients are sorted by radial frequency (``torch.sort`` of the flattened distances, as the
    official code does) and cut into ``kernel_num`` equal consecutive runs.
    """
    dist = torch.norm(_frequency_grid(rows, cols), dim=-1)
    _, order = torch.sort(dist.view(-1))
    total = order.numel()
    if total % kernel_num:
        raise ValueError(
            f"kernel_num={kernel_num} must divide the {total} rfft2 coefficients of the {rows} x {cols} "
            f"kernel matrix (the official band split is a reshape); divisors near it: "
            f"{[d for d in (1, 2, 4, 8, 16, 32, 64, 128) if total % d == 0]}"
        )
    bands = torch.empty(total, dtype=torch.long)
    bands[order] = torch.arange(total) // (total // kernel_num)
    return bands.view(rows, cols // 2 + 1)


class StarReLU(nn.Module):
    """``scale * relu(x)^2 + bias`` with learnable scalars (MetaFormer's StarReLU; official KSM-global)."""

    def __init__(self, scale: float = 1.0, bias: float = 0.0, device=None, dtype=None) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((1,), float(scale), device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.full((1,), float(bias), device=device, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * F.relu(x) ** 2 + self.bias


class FDConvAttentions(NamedTuple):
    """The KSM-global attentions of a batch (a skipped head is a tensor of ones)."""

    channel: Tensor  #: (B, I)
    filter: Tensor  #: (B, O)
    spatial: Tensor  #: (B, k, k)
    kernel: Tensor  #: (B, 1, n) band attention, = ``attention(x)``


class FDConvAttention(DynamicAttention):
    """KSM-global: ``h = StarReLU(BN(fc(GAP(x))))`` and four ``2 sigmoid`` heads (module docstring)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        num_bands: int,
        *,
        reduction: float = 0.0625,
        min_channel: int = 16,
        kernel_temp: float = 1.0,
        att_multi: float = 2.0,
        device=None,
        dtype=None,
    ) -> None:
        if not (isinstance(reduction, (int, float)) and reduction > 0):
            raise ValueError(f"reduction must be a number > 0 (official 1/16), got {reduction!r}")
        if not (isinstance(kernel_temp, (int, float)) and math.isfinite(kernel_temp) and kernel_temp > 0):
            raise ValueError(f"kernel_temp must be a finite number > 0 (official 1.0), got {kernel_temp!r}")
        super().__init__(1, num_bands, temperature=1.0)
        factory = dict(device=device, dtype=dtype)
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.kernel_temp, self.att_multi = float(kernel_temp), float(att_multi)
        self.hidden = max(int(in_channels * reduction), min_channel)
        self.fc = nn.Conv2d(in_channels, self.hidden, 1, bias=False, **factory)
        self.bn = BatchNorm2dSafe(self.hidden, **factory)
        self.relu = StarReLU(**factory)
        self.channel_fc = nn.Conv2d(self.hidden, in_channels, 1, **factory)
        self.filter_fc = nn.Conv2d(self.hidden, out_channels, 1, **factory)
        taps = kernel_size * kernel_size
        self.spatial_fc = None if taps == 1 else nn.Conv2d(self.hidden, taps, 1, **factory)
        self.kernel_fc = None if num_bands == 1 else nn.Conv2d(self.hidden, num_bands, 1, **factory)

    def reset_parameters(self, near_identity: bool = True) -> None:
        """Official init (module docstring); ``near_identity`` also gives ``filter_fc`` N(0, 1e-6)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.bn.reset_parameters()
        nn.init.ones_(self.relu.scale)
        nn.init.zeros_(self.relu.bias)
        small = [self.channel_fc, self.spatial_fc, self.kernel_fc]
        if near_identity:
            small.append(self.filter_fc)
        for m in small:
            if m is not None:
                nn.init.normal_(m.weight, std=1e-6)

    def squeeze(self, x: Tensor) -> Tensor:
        """``h = StarReLU(BN(fc(GAP(x))))`` ``(B, hidden, 1, 1)``."""
        return self.relu(self.bn(self.fc(F.adaptive_avg_pool2d(x, 1))))

    def _kernel(self, h: Tensor) -> Tensor:
        if self.kernel_fc is None:
            return h.new_ones(h.shape[0], 1, 1)
        n = self.num_cells
        return (torch.sigmoid(self.kernel_fc(h).flatten(1) / self.kernel_temp) * 2.0 / n).unsqueeze(1)

    def coefficients(self, x: Tensor, h: Tensor | None = None) -> Tensor:
        """Band attention ``(B, 1, n)``."""
        return self._kernel(self.squeeze(x) if h is None else h)

    def forward(self, x: Tensor, h: Tensor | None = None) -> Tensor:
        """Band attention as alpha ``(B, 1, n)``; the layer passes its ``h`` so the squeeze runs once."""
        if self.frozen_alpha is not None:
            return self.frozen_alpha.unsqueeze(0).expand(x.shape[0], -1, -1)
        return self.tap(self.coefficients(x, h))

    def heads(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Channel ``(B, I)``, filter ``(B, O)`` and spatial ``(B, k, k)`` attentions from ``h``."""
        b, k = h.shape[0], self.kernel_size
        channel = torch.sigmoid(self.channel_fc(h).flatten(1)) * self.att_multi
        filt = torch.sigmoid(self.filter_fc(h).flatten(1)) * self.att_multi
        if self.spatial_fc is None:
            spatial = h.new_ones(b, k, k)
        else:
            spatial = (torch.sigmoid(self.spatial_fc(h).flatten(1)) * self.att_multi).view(b, k, k)
        return channel, filt, spatial

    def all_attentions(self, x: Tensor) -> FDConvAttentions:
        h = self.squeeze(x)
        return FDConvAttentions(*self.heads(h), self(x, h))

    def extra_repr(self) -> str:
        return f"hidden={self.hidden}, bands={self.num_cells}, kernel_temp={self.kernel_temp}"


class KernelSpatialModulationLocal(nn.Module):
    """KSM-local: ``Conv1d(1, out_n, ks)`` over ``LayerNorm(GAP(x))`` -> logits ``(B, I, out_n)``."""

    def __init__(self, channels: int, out_n: int, device=None, dtype=None) -> None:
        super().__init__()
        factory = dict(device=device, dtype=dtype)
        self.kernel = round(math.log2(channels) / 2 + 0.5) // 2 * 2 + 1
        self.conv = nn.Conv1d(1, out_n, self.kernel, padding=(self.kernel - 1) // 2, bias=False, **factory)
        self.norm = nn.LayerNorm(channels, **factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.constant_(self.conv.weight, 1e-6)
        self.norm.reset_parameters()

    def forward(self, pooled: Tensor) -> Tensor:
        """``pooled`` ``(B, I)`` -> logits ``(B, out_n, I)``."""
        return self.conv(self.norm(pooled).unsqueeze(1))


class FrequencyBandModulation(nn.Module):
    """FBM: split ``x`` into rfft2 frequency bands and scale each high band by a learned spatial map."""

    def __init__(
        self, channels: int, k_list: tuple[int, ...] = (2, 4, 8), max_size: int = 64, device=None, dtype=None
    ) -> None:
        super().__init__()
        self.k_list = tuple(k_list)
        self.freq_weight_conv_list = nn.ModuleList(
            nn.Conv2d(channels, 1, 3, padding=1, bias=True, device=device, dtype=dtype) for _ in self.k_list
        )
        grid = _frequency_grid(max_size, max_size).abs().amax(dim=-1)
        masks = torch.stack([grid < 0.5 / f + 1e-8 for f in self.k_list]).unsqueeze(1)
        self.register_buffer("cached_masks", masks if device is None else masks.to(device), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for conv in self.freq_weight_conv_list:
            nn.init.normal_(conv.weight, std=1e-6)
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):  # the FFT runs in float32, as the official code's
            x = x.float()
        h, w = x.shape[-2:]
        spectrum = torch.fft.rfft2(x, norm="ortho")
        masks = F.interpolate(self.cached_masks.to(x.dtype), size=(h, w // 2 + 1), mode="nearest")
        out, rest = 0.0, x
        for j, conv in enumerate(self.freq_weight_conv_list):
            low = torch.fft.irfft2(spectrum * masks[j], s=(h, w), norm="ortho")
            out = out + torch.sigmoid(conv(x)) * 2.0 * (rest - low)
            rest = low
        return out + rest


@functools.lru_cache(maxsize=64)
def _cached_bands(rows: int, cols: int, kernel_num: int) -> Tensor:
    # always computed on the CPU, whatever device context the caller builds in: a model first built under
    # ``with torch.device("meta")`` (the trainer's and sweep's pre-check) must not leave a meta tensor here
    with torch.device("cpu"):
        bands = frequency_bands(rows, cols, kernel_num)
    assert bands.device.type == "cpu", bands.device
    return bands


def _build_bands(out_channels: int, in_channels: int, k: int, kernel_num: int, device=None) -> Tensor:
    """The band map of a layer on ``device`` (None: the current default device, e.g. inside
    ``with torch.device("meta")``). Sorting the frequencies is the slow part, so layers of one shape share
    one CPU map from a cache; each layer gets its own copy on its device."""
    bands = _cached_bands(out_channels * k, in_channels * k, kernel_num)
    target = torch.device(device) if device is not None else torch.empty(0).device
    return bands.clone() if target.type == "cpu" else bands.to(target)


class FDConv2d(DynamicLayer):
    """Frequency dynamic 2D convolution (module docstring).

    Args mirror ``nn.Conv2d`` (``groups`` must be 1; ``bias``: a static bias added last, as official).

    Args:
        kernel_num: n, the number of disjoint frequency bands (official mmdet config: 64; the class default
            in the official file is 4).
        param_ratio: copies of the spectrum (official 1); the band attention has ``kernel_num * param_ratio``
            entries.
        reduction: KSM-global hidden width ``max(int(I * reduction), 16)`` (1/16).
        kernel_temp: divisor of the band attention's logits (official 1.0, fixed: no schedule).
        use_ksm_local: the dense local attention (official True).
        use_fbm: FBM on the input; None: the official rule (3x3 convs only).
        near_identity: init ``filter_fc`` N(0, 1e-6) like the other heads (see the module docstring).

    Shapes:
        x ``(B, I, H, W)`` -> ``(B, O, H', W')``; ``dft_weight`` ``(param_ratio, O*k, I*k//2 + 1, 2)``;
        ``attention(x)``: band attention ``(B, 1, kernel_num * param_ratio)``.
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
        kernel_num: int = 64,
        param_ratio: int = 1,
        reduction: float = 0.0625,
        kernel_temp: float = 1.0,
        use_ksm_local: bool = True,
        use_fbm: bool | None = None,
        near_identity: bool = True,
        padding_mode: str = "zeros",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        set_conv_geometry(
            self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, padding_mode
        )
        check_positive_int("kernel_num", kernel_num)
        check_positive_int("param_ratio", param_ratio)
        probe = nn.Conv2d(in_channels, out_channels, self.kernel_size, groups=groups, device="meta")
        reason = fdconv_applies(probe)
        if reason is not None:
            raise ValueError(
                f"FDConv does not apply to this conv: {reason}. The official code uses FDConv only where "
                f"min(in_channels, out_channels) > {FDCONV_MIN_CHANNELS} and kernel_size is 1 or 3 "
                f"(groups=1); "
                f"keep such a conv a plain nn.Conv2d (kwlab.convert(model, 'fdconv') does)"
            )
        self.kernel_num, self.param_ratio = kernel_num, param_ratio
        k = self.kernel_size[0]
        factory = dict(device=device, dtype=dtype)
        bands = _build_bands(out_channels, in_channels, k, kernel_num, device)
        self.register_buffer("bands", bands, persistent=False)
        self.alpha_scale = min(out_channels, in_channels) // 2 * kernel_num * param_ratio
        self.dft_weight = nn.Parameter(
            torch.empty(param_ratio, out_channels * k, in_channels * k // 2 + 1, 2, **factory)
        )
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self.attention = FDConvAttention(
            in_channels,
            out_channels,
            k,
            kernel_num * param_ratio,
            reduction=reduction,
            kernel_temp=kernel_temp,
            **factory,
        )
        self.KSM_Local = None
        if use_ksm_local:
            self.KSM_Local = KernelSpatialModulationLocal(in_channels, out_channels * k * k, **factory)
        use_fbm = k == 3 if use_fbm is None else bool(use_fbm)
        self.FBM = FrequencyBandModulation(in_channels, **factory) if use_fbm else None
        self.near_identity = bool(near_identity)
        self.algorithm = "auto"
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """A fresh kernel (kaiming-uniform a = sqrt(5), nn.Conv2d's init) stored as its spectrum; official
        attention init."""
        o, i, k = self.out_channels, self.in_channels, self.kernel_size[0]
        weight = torch.empty(o, i, k, k, device=self.dft_weight.device, dtype=self.dft_weight.dtype)
        if weight.device.type != "meta":
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
        self.load_kernel(weight)
        if self.bias is not None:
            bound = 1.0 / math.sqrt(i * k * k)
            nn.init.uniform_(self.bias, -bound, bound)
        self.attention.reset_parameters(self.near_identity)
        if self.KSM_Local is not None:
            self.KSM_Local.reset_parameters()
        if self.FBM is not None:
            self.FBM.reset_parameters()

    @torch.no_grad()
    def load_kernel(self, weight: Tensor) -> None:
        """Store the spatial kernel ``weight`` ``(O, I, k, k)`` as ``dft_weight`` (the official conversion:
        ``rfft2`` of the ``[O*k, I*k]`` layout over ``min(O, I) // 2``, repeated ``param_ratio`` times)."""
        o, i, k = self.out_channels, self.in_channels, self.kernel_size[0]
        if tuple(weight.shape) != (o, i, k, k):
            raise ValueError(f"weight must have shape {(o, i, k, k)}, got {tuple(weight.shape)}")
        if weight.device.type == "meta":
            return
        matrix = weight.permute(0, 2, 1, 3).reshape(o * k, i * k)
        spectrum = torch.fft.rfft2(matrix.float(), dim=(0, 1))
        pairs = torch.stack([spectrum.real, spectrum.imag], dim=-1) / (min(o, i) // 2)
        self.dft_weight.copy_(pairs.unsqueeze(0).expand_as(self.dft_weight))

    def fdw_kernel(self, band_attention: Tensor) -> Tensor:
        """The per-sample FDW kernels ``(B, O, I, k, k)`` for band attention ``(B, 1, n)``."""
        o, i, k = self.out_channels, self.in_channels, self.kernel_size[0]
        b = band_attention.shape[0]
        att = band_attention.reshape(b, self.param_ratio, self.kernel_num)
        per_coef = att[:, :, self.bands]  # (B, R, O*k, I*k//2+1)
        spectrum = (per_coef.unsqueeze(-1) * self.dft_weight.unsqueeze(0)).sum(1) * self.alpha_scale
        spatial = torch.fft.irfft2(torch.view_as_complex(spectrum.contiguous()), s=(o * k, i * k), dim=(1, 2))
        return spatial.reshape(b, o, k, i, k).permute(0, 1, 3, 2, 4)

    def kernel(self) -> Tensor:
        """The static kernel the spectrum holds (all bands at weight 1/n, i.e. the kernel at init)."""
        n = self.kernel_num * self.param_ratio
        ones = self.dft_weight.new_full((1, 1, n), 1.0 / n)
        return self.fdw_kernel(ones)[0] / self.param_ratio

    def effective_kernels(self, x: Tensor) -> Tensor:
        """``filter_o * channel_i * spatial * local * W_fdw(band_b)`` ``(B, O, I, k, k)``: the kernel the
        layer convolves the *modulated* input with; the frequency band modulation of the input (FBM, 3x3
        layers) is an input-dependent transform of ``x`` before the kernel and is not in it, so
        ``self(x)[b] = conv(FBM(x)_b, W_b) + bias``."""
        att = self.attention.all_attentions(x)
        b = x.shape[0]
        o, i, k = self.out_channels, self.in_channels, self.kernel_size[0]
        weight = self.fdw_kernel(att.kernel) * att.spatial[:, None, None]
        if self.KSM_Local is not None:
            logits = self.KSM_Local(F.adaptive_avg_pool2d(x, 1).flatten(1))
            weight = (
                weight
                * torch.sigmoid(logits.view(b, o, k, k, i).permute(0, 1, 4, 2, 3))
                * self.attention.att_multi
            )
        weight = weight * att.channel[:, None, :, None, None]
        return weight * att.filter[:, :, None, None, None]

    def forward(self, x: Tensor) -> Tensor:
        pooled = F.adaptive_avg_pool2d(x, 1)
        h = self.attention.squeeze(x)
        band = self.attention(x, h)
        channel, filt, spatial = self.attention.heads(h)
        b = x.shape[0]
        o, i, k = self.out_channels, self.in_channels, self.kernel_size[0]
        weight = self.fdw_kernel(band) * spatial[:, None, None]
        if self.KSM_Local is not None:
            logits = self.KSM_Local(pooled.flatten(1))  # (B, O*k*k, I)
            local = torch.sigmoid(logits.view(b, o, k, k, i).permute(0, 1, 4, 2, 3))
            weight = weight * local * self.attention.att_multi
        if self.FBM is not None:
            x = self.FBM(x)
        x = x * channel[:, :, None, None]
        y = dynamic_conv(x, weight, None, self.stride, self.padding, self.dilation, 1, self.algorithm)
        y = y * filt[:, :, None, None]
        if self.bias is not None:
            y = y + self.bias[:, None, None]
        return y

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, **kwargs: Any) -> FDConv2d:
        """An FDConv whose spectrum holds ``conv``'s kernel (the official conversion) and bias."""
        layer = like_conv(cls, conv, **kwargs)
        layer.load_kernel(conv.weight.detach())
        if conv.bias is not None:
            with torch.no_grad():
                layer.bias.copy_(conv.bias)
        return layer.train(conv.training)

    def official_layout(self) -> OfficialLayout:
        """Official keys: ``KSM_Global.*`` is ``attention.*`` here; the rest is unchanged."""
        return OfficialLayout({}, (("KSM_Global.", "attention."),))

    def extra_repr(self) -> str:
        return conv_repr(self) + f", kernel_num={self.kernel_num}, param_ratio={self.param_ratio}"
