"""DCD: Dynamic Convolution Decomposition (Li et al., ICLR 2021, "Revisiting Dynamic Convolution via Matrix
Decomposition"; arXiv 2103.08756; code: https://github.com/liyunsheng13/dcd).

Decomposition, per sample::

    W(x) = Lambda(x) W0 + P Phi(x) Q^T

``W0`` is a static kernel, ``Lambda(x)`` a diagonal scale of the output channels, ``Q`` (I -> L) and ``P``
(L -> O) static projections to and from a latent space of L << I channels, and ``Phi(x)`` an L x L
*dynamic channel fusion* matrix. As in the official code (``conv_dy``, ``conv_basic_dy``, ``DYModule``,
``DYCls``) nothing is assembled per sample; the layer works on activations::

    d   = SE_small(FC(GAP_p(x)))            GAP_p: p x p average pool (p = 1, or 2 in ResNet-18's blocks),
                                            FC: I*p*p -> S (no bias), SE_small(d) = d * hsigmoid(Linear(d))
    Phi = reshape(fc_phi(d), L, L)          fc_phi: S -> L*L (no bias), unconstrained (signed)
    Lam = hsigmoid(fc_scale(d))             fc_scale: S -> O (no bias); hsigmoid(z) = relu6(z + 3) / 3
    z   = BN_a(q(x))                        q: 1x1 conv I -> L with the layer's stride (no bias)
    y   = Lam * conv(x; W0) + p(BN_b(Phi z) + z)     p: 1x1 conv L -> O; BN_b normalises (B, L, H*W)

so the dynamic path is a 1x1 convolution even when ``W0`` is 3x3, and ``+ z`` is an identity in latent
space. ``hsigmoid`` is the official ``relu6(z + 3) / 3`` (range [0, 2]; not torch's ``Hardsigmoid``, which
divides by 6).

Width rules (official):

* ``pool=1`` (``conv_dy``, the ResNet-50 bottleneck convs): ``L = floor(sqrt(I))``,
  ``S = max(I, L^2) // 16``;
* ``pool=2`` (``conv_basic_dy``, the ResNet-18 basic-block convs): the descriptor has 4I entries,
  ``L = floor(sqrt(4I))``, ``S = max(max(4I, L^2) // 16, 4)``;
* MobileNetV2 (``DYModule``, 1x1 convs only): :func:`mobilenetv2_widths`;
* the dynamic classifier ``DYCls`` (:class:`DCDLinear`): ``L = S = 32``.

Protocol: ``layer.attention(x)`` reports ``Phi`` as alpha ``(B, L, L)``: L mixtures (latent outputs), each
drawing from the L latent inputs; it is signed and not normalised. ``layer.attention.scale(code)`` is the
channel scale ``Lambda`` ``(B, O)``. ``attention.frozen_alpha`` freezes ``Phi``; ``Lambda`` stays
input-dependent (as ODConv's other heads do). DCD has no temperature: the ``temperature`` has no
effect and ``kwlab.set_temperature`` leaves it alone.

Parameter names follow the official code (``conv``, ``q``, ``p``, ``bn1``, ``bn2``; ``cls``, ``cls_q``,
``cls_p`` in the classifier), except that the attention's ``fc``, ``fc_phi`` and ``fc_scale`` live in the
child ``attention``; :meth:`DCDConv2d.official_layout` declares that rename for ``kwlab.load_official``.
Batch size 1 in training mode: the latent BatchNorms of the classifier (and of a conv on a 1x1 map) use
their running statistics for that forward (the official layers crash there).

Eval mode needs trained BatchNorm statistics: ``BN_b`` normalises ``Phi(x) z``, a product of two
activations, so with a fresh model's running statistics activations square from layer to layer and
overflow (the official ``resnet18_dcd`` gives NaN logits in eval mode at init as well). Train first, or
calibrate the statistics on a few batches in train mode, before probing or evaluating.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .bank import OfficialLayout, conv_repr, set_conv_geometry
from .base import DynamicAttention, DynamicLayer, check_positive_int, like_conv
from .norm import BatchNorm1dSafe, BatchNorm2dSafe

__all__ = [
    "DCDAttention",
    "DCDConv2d",
    "DCDLinear",
    "dcd_widths",
    "mobilenetv2_widths",
    "hsigmoid",
]

#: the official code's attention names -> kwlab's (relative to the layer)
_RENAMES = (("fc.", "attention.fc."), ("fc_phi.", "attention.fc_phi."), ("fc_scale.", "attention.fc_scale."))


def hsigmoid(x: Tensor) -> Tensor:
    """The official DCD ``Hsigmoid``: ``relu6(x + 3) / 3``, in [0, 2] (1 at x = 0)."""
    return F.relu6(x + 3.0) / 3.0


def dcd_widths(in_channels: int, pool: int = 1) -> tuple[int, int]:
    """``(L, S)``: the official latent width and squeeze width of a ResNet DCD conv.

    ``pool=1`` (``conv_dy``): ``L = floor(sqrt(I))``, ``S = max(I, L^2) // 16``. ``pool=2``
    (``conv_basic_dy``): ``L = floor(sqrt(4I))``, ``S = max(max(4I, L^2) // 16, 4)``.
    """
    if pool not in (1, 2):
        raise ValueError(f"pool must be 1 (bottleneck rule) or 2 (basic-block rule), got {pool!r}")
    descriptor = in_channels * pool * pool
    latent = math.isqrt(descriptor)
    squeeze = max(descriptor, latent**2) // 16
    if pool == 2:
        squeeze = max(squeeze, 4)
    return latent, squeeze


def mobilenetv2_widths(in_channels: int, out_channels: int, fc_squeeze: int = 16) -> dict[str, int]:
    """Official MobileNetV2 ``DYModule`` widths: ``dict(pool, latent_dim, squeeze)``.

    Expanding convs (I < O) pool 2x2 (descriptor 4I, reduction 8), projecting ones pool 1x1 (reduction 2);
    ``L = min(I*mul // r, O // r)`` with r doubled until ``L^2 <= 2 * I * mul``, floored at 4;
    ``S = max(max(I * mul, L^2) // fc_squeeze, 4)``. The README's MobileNetV2 commands use
    ``fc_squeeze=16`` (the code's argparse default is 8).
    """
    check_positive_int("fc_squeeze", fc_squeeze)
    mul, reduction = (4, 8) if in_channels < out_channels else (1, 2)
    latent = min(in_channels * mul // reduction, out_channels // reduction)
    while latent**2 > in_channels * mul * 2:
        reduction *= 2
        latent = min(in_channels * mul // reduction, out_channels // reduction)
    latent = max(latent, 4)
    squeeze = max(max(in_channels * mul, latent**2) // fc_squeeze, 4)
    return dict(pool=2 if mul == 4 else 1, latent_dim=latent, squeeze=squeeze)


class _SEModuleSmall(nn.Module):
    """``d * hsigmoid(Linear(d))`` (official ``SEModule_small``; the Linear is ``fc.0``)."""

    def __init__(self, channels: int, **factory: Any) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(channels, channels, bias=False, **factory))

    def forward(self, d: Tensor) -> Tensor:
        return d * hsigmoid(self.fc(d))


class DCDAttentions(NamedTuple):
    """Both DCD attentions of a batch."""

    phi: Tensor  #: (B, L, L) dynamic channel fusion, = ``attention(x)``
    scale: Tensor  #: (B, O) output-channel scale Lambda


class DCDAttention(DynamicAttention):
    """The DCD attention: descriptor -> ``Phi (B, L, L)`` (alpha) and ``Lambda (B, O)``.

    Args:
        descriptor: length of the pooled descriptor (``I * pool^2``; ``in_features`` for the classifier).
        latent_dim: L.
        squeeze: S, the hidden width.
        out_channels: O (length of Lambda).
        pool: average-pool size for a 4-D input (1 or 2); None: the input already is a vector (classifier).
    """

    def __init__(
        self,
        descriptor: int,
        latent_dim: int,
        squeeze: int,
        out_channels: int,
        *,
        pool: int | None = 1,
        device=None,
        dtype=None,
    ) -> None:
        for name, value in (("latent_dim", latent_dim), ("squeeze", squeeze)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"{name} must be a whole number >= 1, got {value!r} (descriptor of {descriptor} "
                    f"entries); pass latent_dim= / squeeze= explicitly for such a narrow layer"
                )
        super().__init__(latent_dim, latent_dim, temperature=1.0)
        factory = dict(device=device, dtype=dtype)
        self.pool = pool
        self.latent_dim, self.squeeze_dim = latent_dim, squeeze
        self.fc = nn.Sequential(
            nn.Linear(descriptor, squeeze, bias=False, **factory), _SEModuleSmall(squeeze, **factory)
        )
        self.fc_phi = nn.Linear(squeeze, latent_dim * latent_dim, bias=False, **factory)
        self.fc_scale = nn.Linear(squeeze, out_channels, bias=False, **factory)

    def reset_parameters(self) -> None:
        """PyTorch's Linear init (the official ResNet leaves the Linears at their default)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                m.reset_parameters()

    def code(self, x: Tensor) -> Tensor:
        """The shared descriptor code ``d`` ``(B, S)`` of the layer input ``x``."""
        if self.pool is not None:
            x = F.adaptive_avg_pool2d(x, self.pool).flatten(1)
        return self.fc(x)

    def coefficients(self, x: Tensor, code: Tensor | None = None) -> Tensor:
        """``Phi`` ``(B, L, L)`` (from ``code`` when the caller already has it)."""
        d = self.code(x) if code is None else code
        return self.fc_phi(d).view(-1, self.latent_dim, self.latent_dim)

    def forward(self, x: Tensor, code: Tensor | None = None) -> Tensor:
        """``Phi`` as alpha ``(B, L, L)``; the layer passes its ``code`` (the descriptor is computed once)."""
        if self.frozen_alpha is not None:
            return self.frozen_alpha.unsqueeze(0).expand(x.shape[0], -1, -1)
        return self.tap(self.coefficients(x, code))

    def scale(self, code: Tensor) -> Tensor:
        """``Lambda = hsigmoid(fc_scale(d))`` ``(B, O)``."""
        return hsigmoid(self.fc_scale(code))

    def all_attentions(self, x: Tensor) -> DCDAttentions:
        """``Phi`` (through ``tap``, honouring ``frozen_alpha``) and ``Lambda`` for the layer input ``x``."""
        d = self.code(x)
        return DCDAttentions(self(x, d), self.scale(d))

    def extra_repr(self) -> str:
        return f"pool={self.pool}, latent_dim={self.latent_dim}, squeeze={self.squeeze_dim}"


#: What to do when a DCD net gives non-finite outputs in eval mode (the warning and the run's notes).
DCD_REMEDY = (
    "DCD in eval mode normalises its latent products with BatchNorm running statistics, and with barely "
    "trained ones they overflow (the official DCD model gives NaN too): train more steps, or before "
    "evaluating run a few tens of batches through the model in train mode under torch.no_grad() so the "
    "running statistics (momentum 0.1) forget their init (a fresh DCD ResNet-20 needed 10-30 such batches "
    "in kwlab's tests; resetting them and measuring on a few batches, recalibrate_batchnorm, did not suffice)"
)


def _bn_affine(bn: nn.Module, u: Tensor) -> tuple[Tensor, Tensor]:
    """``(scale, shift)`` per channel with ``bn(u) = scale * u + shift`` for this batch ``u (B, C, ...)``:
    the batch statistics where :func:`kwlab.layers.norm.batch_safe_batch_norm` uses them (training mode,
    more than one value per channel), else the running statistics. Reads ``bn``, updates nothing."""
    if bn.training and (bn.running_mean is None or u.numel() > u.shape[1]):
        dims = [d for d in range(u.dim()) if d != 1]
        mean, var = u.mean(dims), u.var(dims, unbiased=False)
    else:
        mean, var = bn.running_mean, bn.running_var
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -mean * scale + (bn.bias if bn.bias is not None else 0.0)
    return scale, shift


def _dcd_kernels(
    layer: nn.Module, x: Tensor, w0: Tensor, q: Tensor, p: Tensor, latent_in: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """``(Lambda (B, O), W0, M (B, O, I))``: DCD's per-sample kernel is ``Lambda_b W0 + M_b`` (``M_b`` at
    the centre tap), ``M_b = P (diag(s2) Phi_b + 1) diag(s1) Q`` with ``s1``, ``s2`` the scales of the
    latent BatchNorms (:func:`_bn_affine`); ``latent_in`` is ``q(x)``."""
    att = layer.attention.all_attentions(x)
    s1, c1 = _bn_affine(layer.bn1, latent_in)
    b, lat = latent_in.shape[:2]
    z = latent_in * s1.view(1, -1, *([1] * (latent_in.dim() - 2))) + c1.view(
        1, -1, *([1] * (latent_in.dim() - 2))
    )
    s2, _ = _bn_affine(layer.bn2, torch.matmul(att.phi, z.reshape(b, lat, -1)))
    eye = torch.eye(lat, dtype=att.phi.dtype, device=att.phi.device)
    mix = (s2[None, :, None] * att.phi + eye) * s1[None, None, :]  # (B, L, L)
    return att.scale, w0, p @ mix @ q  # (B, O, I)


def _check_eval_output(layer: nn.Module, x: Tensor, out: Tensor) -> None:
    """Warn, once per layer, where a DCD layer first turns finite inputs into non-finite outputs in eval
    mode (fresh BatchNorm statistics: see the module docstring), saying what to do; the layers after it,
    which only pass the NaN on, stay silent. Skipped while compiling or tracing, on the meta device and for
    fake tensors (no values there)."""
    if getattr(layer, "_nonfinite_warned", False) or not isinstance(out, Tensor):
        return
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or out.device.type == "meta":
        return
    from torch._subclasses.fake_tensor import FakeTensor  # noqa: PLC0415 - torch's private fake-tensor module, only on this guard's path

    if isinstance(out, FakeTensor) or bool(torch.isfinite(out).all()) or not bool(torch.isfinite(x).all()):
        return
    layer._nonfinite_warned = True
    warnings.warn(
        f"{type(layer).__name__}({layer.extra_repr()}) turns finite inputs into non-finite outputs (NaN or "
        f"inf) in eval mode. {DCD_REMEDY}",
        RuntimeWarning,
        stacklevel=3,
    )


def _latent_mix(phi: Tensor, z: Tensor, bn: nn.Module) -> Tensor:
    """``BN_b(Phi z) + z`` for ``z`` ``(B, L, N)``."""
    return bn(torch.matmul(phi, z)) + z


class DCDConv2d(DynamicLayer):
    """Dynamic convolution decomposition: ``Lambda(x) * conv(x; W0) + P (BN(Phi(x) Q x) + Q x)``.

    Args mirror ``nn.Conv2d`` (``bias`` defaults to False as in the official code; a bias belongs to the
    static ``conv`` and is scaled by Lambda with it).

    Args:
        latent_dim: L (default: the official rule of ``pool``, see :func:`dcd_widths`).
        squeeze: S (default: the official rule of ``pool``).
        pool: 1 (``conv_dy``: bottleneck and generic convs) or 2 (``conv_basic_dy``: basic blocks,
            MobileNetV2's expanding convs).

    The dynamic path is a strided 1x1 conv, so the static conv must keep the same output size:
    ``2 * padding == dilation * (kernel_size - 1)`` in each dimension.

    Shapes:
        x ``(B, I, H, W)`` -> ``(B, O, H', W')``; ``conv.weight`` ``(O, I/groups, kh, kw)``; ``q.weight``
        ``(L, I, 1, 1)``; ``p.weight`` ``(O, L, 1, 1)``; ``attention(x)``: Phi ``(B, L, L)``.
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
        latent_dim: int | None = None,
        squeeze: int | None = None,
        pool: int = 1,
        padding_mode: str = "zeros",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        set_conv_geometry(
            self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, padding_mode
        )
        rule_latent, rule_squeeze = dcd_widths(in_channels, pool)
        latent = rule_latent if latent_dim is None else latent_dim
        squeeze = rule_squeeze if squeeze is None else squeeze
        pads = self._padding_pairs()
        if any(2 * p != d * (k - 1) for p, d, k in zip(pads, self.dilation, self.kernel_size)):
            raise ValueError(
                f"padding must keep the output size of DCD's strided 1x1 dynamic path: "
                f"2 * padding == dilation * (kernel_size - 1) in each dimension, got kernel_size="
                f"{self.kernel_size}, padding={padding!r}, dilation={self.dilation}"
            )
        factory = dict(device=device, dtype=dtype)
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            self.kernel_size,
            self.stride,
            padding,
            self.dilation,
            groups,
            bias,
            **factory,
        )
        self.attention = DCDAttention(
            in_channels * pool * pool, latent, squeeze, out_channels, pool=pool, **factory
        )
        self.q = nn.Conv2d(in_channels, latent, 1, self.stride, 0, bias=False, **factory)
        self.p = nn.Conv2d(latent, out_channels, 1, 1, 0, bias=False, **factory)
        self.bn1 = BatchNorm2dSafe(latent, **factory)
        self.bn2 = BatchNorm1dSafe(latent, **factory)
        self.reset_parameters()

    def _padding_pairs(self) -> tuple[int, int]:
        if self.padding == "valid":
            return (0, 0)
        if self.padding == "same":
            if self.stride != (1, 1):
                raise ValueError("padding='same' needs stride 1 (as in nn.Conv2d)")
            return tuple(d * (k - 1) // 2 for d, k in zip(self.dilation, self.kernel_size))
        return self.padding

    @property
    def latent_dim(self) -> int:
        return self.attention.latent_dim

    @property
    def bias(self) -> Tensor | None:
        """The static conv's bias (scaled by Lambda with it)."""
        return self.conv.bias

    def reset_parameters(self) -> None:
        """Official ResNet init: convs normal(0, sqrt(2 / (k*k*O))) (kaiming fan_out), BN 1/0, Linears at
        PyTorch's default."""
        for m in (self.conv, self.q, self.p):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if self.conv.bias is not None:
            nn.init.zeros_(self.conv.bias)
        self.bn1.reset_parameters()
        self.bn2.reset_parameters()
        self.attention.reset_parameters()

    def effective_kernels(self, x: Tensor) -> Tensor:
        """``Lambda_b W0 + P (diag(s2) Phi_b + 1) diag(s1) Q`` ``(B, O, I, kh, kw)``, the second term at the
        centre tap (the dynamic path is a strided 1x1 convolution there). ``s1``, ``s2`` are the latent
        BatchNorms' scales for this batch (batch statistics in training mode, running ones in eval mode);
        their shifts and the static bias make the constant ``c_b``. ``groups == 1`` only."""
        if self.groups != 1:
            raise NotImplementedError("DCDConv2d.effective_kernels: groups > 1 has no dense latent path")
        scale, w0, m = _dcd_kernels(
            self, x, self.conv.weight, self.q.weight[:, :, 0, 0], self.p.weight[:, :, 0, 0], self.q(x)
        )
        weight = scale[:, :, None, None, None] * w0
        ch, cw = ((k - 1) // 2 for k in self.kernel_size)
        weight[:, :, :, ch, cw] += m
        return weight

    def forward(self, x: Tensor) -> Tensor:
        code = self.attention.code(x)
        phi = self.attention(x, code)
        r = self.conv(x) * self.attention.scale(code)[:, :, None, None]
        z = self.bn1(self.q(x))
        b, c, h, w = z.shape
        z = _latent_mix(phi, z.reshape(b, c, h * w), self.bn2).view(b, c, h, w)
        out = self.p(z) + r
        if not self.training:
            _check_eval_output(self, x, out)
        return out

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, **kwargs: Any) -> DCDConv2d:
        """A DCD layer whose static kernel ``W0`` (and bias) is ``conv``'s; Q, P and the attention are new."""
        layer = like_conv(cls, conv, **kwargs)
        with torch.no_grad():
            layer.conv.weight.copy_(conv.weight)
            if conv.bias is not None:
                layer.conv.bias.copy_(conv.bias)
        return layer.train(conv.training)

    def official_layout(self) -> OfficialLayout:
        """The official ``conv_dy`` keys differ only in the attention's prefix (``fc``, ``fc_phi``,
        ``fc_scale`` sit on the layer itself there)."""
        return OfficialLayout({}, _RENAMES)

    def extra_repr(self) -> str:
        return conv_repr(self) + f", latent_dim={self.latent_dim}"


class DCDLinear(DynamicLayer):
    """DCD's dynamic classifier (official ``DYCls``): ``Lambda(x) * cls(x) + P (BN(Phi(x) Q x) + Q x)``.

    Args:
        in_features, out_features, bias: as ``nn.Linear`` (the static ``cls`` has the bias).
        latent_dim: L (official 32).
        squeeze: S (official 32).

    Shapes: x ``(B, in_features)`` -> ``(B, out_features)``; ``attention(x)``: Phi ``(B, L, L)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        latent_dim: int = 32,
        squeeze: int = 32,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        check_positive_int("in_features", in_features)
        check_positive_int("out_features", out_features)
        factory = dict(device=device, dtype=dtype)
        self.in_features, self.out_features = in_features, out_features
        self.cls = nn.Linear(in_features, out_features, bias=bias, **factory)
        self.attention = DCDAttention(in_features, latent_dim, squeeze, out_features, pool=None, **factory)
        self.cls_q = nn.Linear(in_features, latent_dim, bias=False, **factory)
        self.cls_p = nn.Linear(latent_dim, out_features, bias=False, **factory)
        self.bn1 = BatchNorm1dSafe(latent_dim, **factory)
        self.bn2 = BatchNorm1dSafe(latent_dim, **factory)

    @property
    def latent_dim(self) -> int:
        return self.attention.latent_dim

    @property
    def bias(self) -> Tensor | None:
        return self.cls.bias

    def effective_kernels(self, x: Tensor) -> Tensor:
        """``Lambda_b W + P (diag(s2) Phi_b + 1) diag(s1) Q`` ``(B, O, I)`` (as :class:`DCDConv2d`)."""
        scale, w0, m = _dcd_kernels(
            self, x, self.cls.weight, self.cls_q.weight, self.cls_p.weight, self.cls_q(x)
        )
        return scale[:, :, None] * w0 + m

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2:
            raise ValueError(f"DCDLinear expects (B, in_features) inputs, got shape {tuple(x.shape)}")
        code = self.attention.code(x)
        phi = self.attention(x, code)
        r = self.cls(x) * self.attention.scale(code)
        z = self.bn1(self.cls_q(x))
        z = self.bn2(torch.matmul(phi, z.unsqueeze(-1)).squeeze(-1)) + z
        out = self.cls_p(z) + r
        if not self.training:
            _check_eval_output(self, x, out)
        return out

    @classmethod
    def from_linear(cls, linear: nn.Linear, **kwargs: Any) -> DCDLinear:
        """A dynamic classifier whose static ``cls`` copies ``linear``."""
        layer = cls(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            device=linear.weight.device,
            dtype=linear.weight.dtype,
            **kwargs,
        )
        with torch.no_grad():
            layer.cls.weight.copy_(linear.weight)
            if linear.bias is not None:
                layer.cls.bias.copy_(linear.bias)
        return layer.train(linear.training)

    def official_layout(self) -> OfficialLayout:
        return OfficialLayout({}, _RENAMES)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, latent_dim={self.latent_dim}"
