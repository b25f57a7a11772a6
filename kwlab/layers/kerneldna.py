"""KernelDNA: child convolutions derived from a shared parent kernel (Huang, Zhang, Ren; 2025).

arXiv: https://arxiv.org/abs/2503.23379 ; code: https://github.com/haiduo/KernelDNA

Child rule (a *static* modulation of the parent plus an input-dependent gate)::

    W_i  = W_p * (1 + S_i) * (1 + F_i)       S_i (1, 1, kh, kw): per-tap scale (absent for 1x1)
                                             F_i (O, 1, 1, 1):   per-output-filter scale; both zero-init
    g(x) = sigmoid(FC2(ReLU(BN(FC1(GAP(x))))))   SE gate on the child's INPUT channels, FC1: I -> I/rd
                                                 (no bias), FC2: I/rd -> I (bias), rd = 4 (24 on the
                                                 MobileNetV2 project side)
    y    = conv(x * g(x), W_i)               one dense conv for the whole batch (no per-sample kernel)

So a child is a parent conv with ODConv's input-channel attention alone; at init (S = F = 0) its kernel is
the parent's. ``S`` and ``F`` do not depend on the input and fold into a static kernel at inference.
The official ResNet50 writes the product as ``(1 + F)(1 + S)``: only float rounding differs (~1e-7).

Protocol: ``layer.attention(x)`` reports the gate as alpha ``(B, 1, I)``: the "bank" of a KernelDNA layer
is its input channels. The ``temperature`` has no effect (KernelDNA has no temperature).
What the probe's statistics mean for a gate: alpha is I independent sigmoids in (0, 1), not a mixture
(it does not sum to 1), so "entropy", "top-k share" and "effective cells" describe how the gate's mass is
spread over input channels after normalising it to sum 1 (uniform gate = maximal entropy), and the mean
alpha per entry is the average channel gain; there is no zero cell. ``kwlab.freeze_attention`` replaces
the gate by a fixed per-channel gain, which makes the child a static conv.
Batch size 1 in training mode: the gate's BatchNorm uses the running statistics for that forward (see
:class:`kwlab.layers.odconv.BatchNorm2dSafe`; the official model crashes there).

``attention="constant"`` (kwlab's control, not the paper's): :class:`KernelDNAConstantGate` replaces the SE
gate by I learned logits ``z``, the same for every sample, through the same sigmoid (no temperature). They
start at 0: every channel gain 0.5, the centre of the dynamic gate at init. The child is then a static conv
(the gate folds into its kernel's input axis); it differs from the dynamic child by input dependence only.
Parameters: the gate's ``I*Hd + 2*Hd + Hd*I + I`` replaced by ``I``.

Sharing: ``KernelDNAConv2d(..., parent=conv)`` shares ``conv.weight`` (the very same Parameter, so
``model.parameters()`` lists it once). A shared kernel is saved once, under the parent's name: the child's
``state_dict`` leaves out ``parent_weight`` and ``load_state_dict`` does not ask for it. With
``parent=None`` the layer owns its kernel and saves it as ``parent_weight``.

Wiring: the official KernelDNA models (ResNet18/50, MobileNetV2 1.0/0.5: extra depth in the ResNets,
1x1 sharing inside each MobileNetV2 group) are built by :mod:`kwlab.models.kerneldna`
(``create_model(arch, method="kerneldna")``). :func:`kwlab.methods.family.convert` with
``wiring="pairing"`` is a kwlab heuristic (same-shape convs of later blocks become children), not the
paper's. Checked against the official code (commit a8cb91a, ``models/KDNA_*.py``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kwlab.utils import moved_names

from .bank import conv_repr, set_conv_geometry
from .base import (
    DynamicAttention,
    DynamicLayer,
    check_attention_mode,
    check_positive_int,
    fold_input_scale,
    like_conv,
)
from .norm import BatchNorm2dSafe

__all__ = ["KernelDNAConv2d", "KernelDNAGate", "KernelDNAConstantGate"]

__getattr__ = moved_names("kwlab.layers.kerneldna", {"OfficialLayout": "kwlab.layers.bank"})


def _drop_shared_kernel(module: KernelDNAConv2d, state_dict, prefix: str, local_metadata) -> None:
    """A shared kernel is saved under its parent's name only."""
    if module.shares_parent:
        state_dict.pop(prefix + "parent_weight", None)


def _fill_shared_kernel(module: KernelDNAConv2d, state_dict, prefix: str, *args: Any) -> None:
    """Loading: the shared kernel comes with the parent; the child's slot gets the kernel it already holds."""
    if module.shares_parent:
        state_dict.setdefault(prefix + "parent_weight", module.parent_weight.detach())


class KernelDNAGate(DynamicAttention):
    """SE gate on the input channels, ``sigmoid(FC2(ReLU(BN(FC1(GAP(x))))))``, alpha ``(B, 1, I)``.

    Args:
        in_channels: I.
        reduction: rd; hidden width ``max(I // rd, 1)`` (official 4; 24 on MobileNetV2's 6x-expanded width).
    """

    uses_temperature = False  # KernelDNA has no temperature

    def __init__(self, in_channels: int, *, reduction: int = 4, device=None, dtype=None) -> None:
        check_positive_int("reduction", reduction)
        super().__init__(1, in_channels, temperature=1.0)
        factory = dict(device=device, dtype=dtype)
        self.hidden = max(in_channels // reduction, 1)
        self.fc1 = nn.Conv2d(in_channels, self.hidden, 1, bias=False, **factory)
        self.bn = BatchNorm2dSafe(self.hidden, **factory)
        self.fc2 = nn.Conv2d(self.hidden, in_channels, 1, **factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """1x1 convs kaiming-normal (fan_out, relu) as in the official models; FC2 bias 0; BN 1/0."""
        for m in (self.fc1, self.fc2):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.fc2.bias)
        self.bn.reset_parameters()

    def coefficients(self, x: Tensor) -> Tensor:
        h = F.relu(self.bn(self.fc1(F.adaptive_avg_pool2d(x, 1))))
        return torch.sigmoid(self.fc2(h)).flatten(1).unsqueeze(1)


class KernelDNAConstantGate(DynamicAttention):
    """kwlab's input-independent control of the KernelDNA gate: ``sigmoid(z)`` of I learned logits ``z``, the
    same for every sample, alpha ``(B, 1, I)``. ``z`` starts at 0 (every gain 0.5). No temperature.

    Args:
        in_channels: I.
    """

    uses_temperature = False
    input_dependent = False

    def __init__(self, in_channels: int, *, device=None, dtype=None) -> None:
        super().__init__(1, in_channels, temperature=1.0)
        self.z = nn.Parameter(torch.zeros(in_channels, device=device, dtype=dtype))

    def reset_parameters(self) -> None:
        """``z = 0``: every channel gain 0.5."""
        nn.init.zeros_(self.z)

    def coefficients(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.z).view(1, 1, -1).expand(x.shape[0], -1, -1)


class KernelDNAConv2d(DynamicLayer):
    """A KernelDNA child conv: the parent's kernel, statically modulated, on SE-gated inputs.

    Args mirror ``nn.Conv2d`` (``bias``: a static bias of the child, default False).

    Args:
        parent: the ``nn.Conv2d`` whose ``weight`` this child shares (shape ``(O, I/groups, kh, kw)`` and
            ``groups`` must match); None: the layer owns a fresh kernel (kaiming-normal, fan_out).
            The child keeps its own stride, padding and dilation.
        reduction: rd of the input gate (4).
        attention: "dynamic" (the SE gate, default) or "constant" (kwlab's control:
            :class:`KernelDNAConstantGate`, I learned logits starting at 0, no input dependence).

    Shapes:
        x ``(B, in_channels, H, W)`` -> ``(B, out_channels, H', W')``; ``parent_weight``
        ``(O, I/groups, kh, kw)``; ``spatial_scale`` ``(1, 1, kh, kw)`` or None (1x1);
        ``filter_scale`` ``(O, 1, 1, 1)``; ``attention(x)``: gate ``(B, 1, I)``.
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
        parent: nn.Conv2d | None = None,
        reduction: int = 4,
        attention: str = "dynamic",
        padding_mode: str = "zeros",
        device=None,
        dtype=None,
    ) -> None:
        check_attention_mode(attention, "KernelDNAConv2d (method 'kerneldna')")
        super().__init__()
        set_conv_geometry(
            self,
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            padding_mode,
            asymmetric_same=True,  # F.conv2d on the whole kernel pads like nn.Conv2d
        )
        shape = (out_channels, in_channels // groups, *self.kernel_size)
        factory = dict(device=device, dtype=dtype)
        self.shares_parent = False
        if parent is None:
            self.parent_weight = nn.Parameter(torch.empty(shape, **factory))
            nn.init.kaiming_normal_(self.parent_weight, mode="fan_out", nonlinearity="relu")
        else:
            weight = getattr(parent, "weight", None)
            if (
                not isinstance(weight, nn.Parameter)
                or tuple(weight.shape) != shape
                or getattr(parent, "groups", groups) != groups
            ):
                raise ValueError(
                    f"parent must be a conv with weight shape {shape} and groups={groups}, got "
                    f"{type(parent).__name__} with weight "
                    f"{None if weight is None else tuple(weight.shape)}"
                )
            self.parent_weight = weight
        self.shares_parent = parent is not None
        self.parent_name = ""  # set by kwlab.methods.family.convert, for display
        self.spatial_scale = (
            None
            if self.kernel_size == (1, 1)
            else nn.Parameter(torch.zeros(1, 1, *self.kernel_size, **factory))
        )
        self.filter_scale = nn.Parameter(torch.zeros(out_channels, 1, 1, 1, **factory))
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        if self.bias is not None:
            bound = 1.0 / math.sqrt(shape[1] * shape[2] * shape[3])
            nn.init.uniform_(self.bias, -bound, bound)
        if attention == "constant":
            check_positive_int("reduction", reduction)
            self.attention = KernelDNAConstantGate(in_channels, **factory)
        else:
            self.attention = KernelDNAGate(in_channels, reduction=reduction, **factory)
        self.register_state_dict_post_hook(_drop_shared_kernel)
        self.register_load_state_dict_pre_hook(_fill_shared_kernel)

    def reset_parameters(self) -> None:
        """Zero the static modulation (child = parent), re-initialise the gate; keep the shared kernel."""
        if self.spatial_scale is not None:
            nn.init.zeros_(self.spatial_scale)
        nn.init.zeros_(self.filter_scale)
        self.attention.reset_parameters()

    def kernel(self) -> Tensor:
        """The child's static kernel ``W_p * (1 + S) * (1 + F)``, ``(O, I/groups, kh, kw)``."""
        w = self.parent_weight
        if self.spatial_scale is not None:
            w = w * (1 + self.spatial_scale)
        return w * (1 + self.filter_scale)

    def effective_kernels(self, x: Tensor) -> Tensor:
        """The child's static kernel with the input gate folded in, ``(B, O, I/g, kh, kw)``."""
        gate = self.attention(x)[:, 0]
        return fold_input_scale(
            self.kernel().unsqueeze(0).expand(gate.shape[0], -1, -1, -1, -1), gate, self.groups
        )

    def forward(self, x: Tensor) -> Tensor:
        gate = self.attention(x)
        x = x * gate[:, 0, :, None, None]
        return F.conv2d(x, self.kernel(), self.bias, self.stride, self.padding, self.dilation, self.groups)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, *, parent: nn.Conv2d | None = None, **kwargs: Any) -> KernelDNAConv2d:
        """Replace ``conv`` by a child of ``parent`` (``conv``'s own weight is dropped, its bias kept);
        with ``parent=None`` the layer copies ``conv``'s weight into its own kernel."""
        layer = like_conv(cls, conv, parent=parent, **kwargs)
        with torch.no_grad():
            if parent is None:
                layer.parent_weight.copy_(conv.weight)
            if conv.bias is not None:
                layer.bias.copy_(conv.bias)
        return layer.train(conv.training)

    def extra_repr(self) -> str:
        s = conv_repr(self)
        s += ", attention='constant'" if not self.attention.input_dependent else ""
        return s + (f", parent={self.parent_name!r}" if self.parent_name else "")
