"""The official KernelDNA models (haiduo/KernelDNA @ a8cb91a, ``models/KDNA_*.py``), built from kwlab layers.

``create_model(arch, method="kerneldna")`` builds these for resnet18, resnet50, mobilenetv2_100 and
mobilenetv2_050 (``wiring="pairing"`` gives kwlab's pairing heuristic instead, see
:mod:`kwlab.methods.family`). Every child is a :class:`~kwlab.layers.KernelDNAConv2d` sharing its parent's
``weight``; module names follow the official ones, so official checkpoints map by the few renames each
module declares in ``official_layout()`` (:func:`kwlab.load_official`, :func:`kwlab.to_official`).

* ResNet18: ``layer3`` and ``layer4`` become one :class:`KernelDNABasicStage` each: three residual blocks
  from three distinct 3x3 kernels (conv1 strided; conv2 used 3x, conv3 2x). Depth 18 -> 22 weight layers:
  9,240,798 params, 2.277 GMACs (static 11.69M, 1.82 GMACs).
* ResNet50: ``layer3`` = strided transition + 3 x (child bottleneck, parent bottleneck), seven bottlenecks
  (torchvision: six); ``layer4`` = transition, child, parent. 22,778,060 params, 4.308 GMACs (static 4.09).
* MobileNetV2 (dropout 0): the c32/c64/c96/c160 groups become :class:`KernelDNACluster` s at features 6,
  10, 13, 16 (features 4, 5, 7-9, 11, 12, 14, 15 are empty): transition, 1/2/1/1 children, parent; the
  children share the parent's expand and project 1x1 kernels. Same depth and MACs as static:
  3,136,840 / 1,878,232 params, 0.301 / 0.097 GMACs.

So the ResNet gains partly come from extra depth and compute. Init per arch as the official code:
ResNet18 stages kaiming-normal (fan_out) for every conv with the gate's output bias at PyTorch's default;
ResNet50 layer3/4 PyTorch's default init everywhere; MobileNetV2 clusters normal(0, sqrt(2 / (k*k*out)))
with zero biases. BN 1/0 and S = F = 0 (every child equals its parent) everywhere. kwlab extension: the
gates' BatchNorm accepts batch 1 in training mode (the official one crashes).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from functools import partial
from typing import Any

from torch import Tensor, nn

from kwlab.layers.bank import OfficialLayout
from kwlab.layers.base import check_attention_mode
from kwlab.layers.kerneldna import KernelDNAConstantGate, KernelDNAConv2d

from .mobilenetv2 import MobileNetV2, make_divisible
from .registry import register_method_builder
from .resnet import BasicBlock, Bottleneck, ResNet

__all__ = [
    "KernelDNABasicStage",
    "KernelDNABottleneck",
    "KernelDNAChildBottleneck",
    "KernelDNALayer3",
    "KernelDNALayer4",
    "KernelDNAInvertedResidual",
    "KernelDNAChildInvertedResidual",
    "KernelDNACluster",
    "KernelDNAMobileNetV2",
    "kerneldna_resnet18",
    "kerneldna_resnet50",
    "kerneldna_mobilenetv2",
]


def _child(parent: nn.Conv2d, reduction: int = 4) -> KernelDNAConv2d:
    """A stride-1 child of ``parent`` (same padding), no bias."""
    p = parent
    child = KernelDNAConv2d(
        p.in_channels, p.out_channels, p.kernel_size, 1, p.kernel_size[0] // 2, parent=p, reduction=reduction
    )
    return child


def _constant_gates(model: nn.Module, attention: str) -> nn.Module:
    """``attention="constant"``: every child's SE gate replaced by a :class:`KernelDNAConstantGate` (after the
    official build, so the rest of the model is built from the same random draws as the dynamic one)."""
    check_attention_mode(attention, "the official KernelDNA models")
    if attention == "constant":
        for m in model.modules():
            if isinstance(m, KernelDNAConv2d):
                w = m.parent_weight
                m.attention = KernelDNAConstantGate(m.in_channels, device=w.device, dtype=w.dtype)
    return model


def _check_no_options(arch: str, options: dict[str, Any]) -> None:
    if options:
        raise ValueError(
            f"option(s) {sorted(options)} do not apply to the official KernelDNA {arch} (its gates are "
            f"fixed: rd 4, 24 on MobileNetV2's project side); they apply to wiring='pairing' (kwlab's "
            f"heuristic)"
        )


# ---------------------------------------------------------------------------------------------- ResNet18
class KernelDNABasicStage(nn.Module):
    """Official ResNet18 ``NewLayer``: three residual blocks from 3 distinct 3x3 kernels.

    ``conv1`` (strided, never a parent), parents ``conv2`` (children ``kids.0``, ``kids.1``) and ``conv3``
    (child ``kids.2``), each child followed by ``bns.i``. Forward::

        A: relu(bns0(kid0(relu(bn1(conv1 x)))) + downsample(x))
        B: relu(bn2(conv2(relu(bns1(kid1 x)))) + x)
        C: relu(bn3(conv3(relu(bns2(kid2 x)))) + x)
    """

    def __init__(self, in_channels: int, channels: int, stride: int = 2, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = nn.Identity() if downsample is None else downsample
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels)
        self.kids = nn.ModuleList([_child(self.conv2), _child(self.conv2), _child(self.conv3)])
        self.bns = nn.ModuleList([nn.BatchNorm2d(channels) for _ in range(3)])
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official init: every conv kaiming-normal (fan_out, relu), conv biases (the gates' FC2) at PyTorch's
        default uniform, BN 1/0, S = F = 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                m.reset_parameters()
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()
            elif isinstance(m, KernelDNAConv2d):
                nn.init.zeros_(m.filter_scale)
                nn.init.zeros_(m.spatial_scale)

    def forward(self, x: Tensor) -> Tensor:
        identity = self.downsample(x)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bns[0](self.kids[0](x)) + identity)
        x = self.relu(self.bn2(self.conv2(self.relu(self.bns[1](self.kids[1](x))))) + x)
        return self.relu(self.bn3(self.conv3(self.relu(self.bns[2](self.kids[2](x))))) + x)

    def official_layout(self) -> OfficialLayout:
        return OfficialLayout(
            {
                "static_spatial_attn": tuple(f"kids.{i}.spatial_scale" for i in range(3)),
                "static_filter_attn": tuple(f"kids.{i}.filter_scale" for i in range(3)),
            },
            tuple((f"se.{i}.se.", f"kids.{i}.attention.") for i in range(3)),
        )


def kerneldna_resnet18(num_classes: int = 1000, *, attention: str = "dynamic", **options: Any) -> ResNet:
    """Official KernelDNA ResNet18: resnet18 with ``layer3``/``layer4`` as :class:`KernelDNABasicStage`
    (``attention="constant"``: kwlab's constant-gate control)."""
    _check_no_options("resnet18", options)
    model = ResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
    for name in ("layer3", "layer4"):
        block0 = getattr(model, name)[0]
        stage = KernelDNABasicStage(
            block0.conv1.in_channels, block0.conv1.out_channels, block0.conv1.stride[0], block0.downsample
        )
        setattr(model, name, stage)
    return _constant_gates(model, attention)


# ---------------------------------------------------------------------------------------------- ResNet50
class KernelDNABottleneck(nn.Module):
    """Official ResNet50 ``Block``: ``layers`` = 1x1 -> 3x3 (stride) -> 1x1 with BNs; optional 1x1
    projection ``downsample`` (``conv``, ``bn``). PyTorch's default init (official layer3/4: no re-init)."""

    def __init__(self, dim: int, in_channels: int | None = None, stride: int = 1, downsample: bool = False):
        super().__init__()
        inp, out = in_channels or 4 * dim, 4 * dim
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (
            nn.Sequential(
                OrderedDict(conv=nn.Conv2d(inp, out, 1, stride, bias=False), bn=nn.BatchNorm2d(out))
            )
            if downsample
            else nn.Identity()
        )
        self.layers = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(inp, dim, 1, bias=False),
                bn1=nn.BatchNorm2d(dim),
                relu=self.relu,
                conv2=nn.Conv2d(dim, dim, 3, stride, 1, bias=False),
                bn2=nn.BatchNorm2d(dim),
                relu2=self.relu,
                conv3=nn.Conv2d(dim, out, 1, bias=False),
                bn3=nn.BatchNorm2d(out),
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.layers(x) + self.downsample(x))


class KernelDNAChildBottleneck(nn.Module):
    """Official ``Block_Share3x3``: own 1x1s and BNs; ``conv2`` is a child of ``parent``'s 3x3 (gate rd 4)."""

    def __init__(self, parent: KernelDNABottleneck):
        super().__init__()
        dim = parent.layers.conv2.out_channels
        self.relu = nn.ReLU(inplace=True)
        self.half1 = nn.Sequential(
            OrderedDict(conv1=nn.Conv2d(4 * dim, dim, 1, bias=False), bn1=nn.BatchNorm2d(dim), relu=self.relu)
        )
        self.conv2 = _child(parent.layers.conv2)
        for fc in (self.conv2.attention.fc1, self.conv2.attention.fc2):
            fc.reset_parameters()  # PyTorch default, as every module of the official layer3/4
        self.half2 = nn.Sequential(
            OrderedDict(
                bn2=nn.BatchNorm2d(dim),
                relu2=self.relu,
                conv3=nn.Conv2d(dim, 4 * dim, 1, bias=False),
                bn3=nn.BatchNorm2d(4 * dim),
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.half2(self.conv2(self.half1(x))) + x)

    def official_layout(self) -> OfficialLayout:
        return OfficialLayout({}, (("half1.se.se.", "conv2.attention."),))


class KernelDNALayer3(nn.Module):
    """Official ResNet50 ``NewLayer3``: ``block0`` (strided transition), then ``kids.i``, ``parents.i`` in
    turn; ``kids.i``'s 3x3 is a child of ``parents.i``'s."""

    def __init__(self, dim: int = 256, n: int = 3):
        super().__init__()
        self.block0 = KernelDNABottleneck(dim, 2 * dim, stride=2, downsample=True)
        self.parents = nn.ModuleList([KernelDNABottleneck(dim) for _ in range(n)])
        self.kids = nn.ModuleList([KernelDNAChildBottleneck(p) for p in self.parents])

    def forward(self, x: Tensor) -> Tensor:
        x = self.block0(x)
        for kid, parent in zip(self.kids, self.parents):
            x = parent(kid(x))
        return x

    def official_layout(self) -> OfficialLayout:
        n = len(self.kids)
        return OfficialLayout(
            {
                "static_filter_attn": tuple(f"kids.{i}.conv2.filter_scale" for i in range(n)),
                "static_spatial_attn": tuple(f"kids.{i}.conv2.spatial_scale" for i in range(n)),
            }
        )


class KernelDNALayer4(nn.Module):
    """Official ResNet50 ``NewLayer4``: ``block0`` (transition), ``blocks.i`` (children of ``last_block``'s
    3x3), ``last_block``."""

    def __init__(self, dim: int = 512, n_kids: int = 1):
        super().__init__()
        self.block0 = KernelDNABottleneck(dim, 2 * dim, stride=2, downsample=True)
        self.last_block = KernelDNABottleneck(dim)
        self.blocks = nn.ModuleList([KernelDNAChildBottleneck(self.last_block) for _ in range(n_kids)])

    def forward(self, x: Tensor) -> Tensor:
        x = self.block0(x)
        for block in self.blocks:
            x = block(x)
        return self.last_block(x)

    def official_layout(self) -> OfficialLayout:
        n = len(self.blocks)
        return OfficialLayout(
            {
                "static_filter_attn2": tuple(f"blocks.{i}.conv2.filter_scale" for i in range(n)),
                "static_spatial_attn": tuple(f"blocks.{i}.conv2.spatial_scale" for i in range(n)),
            }
        )


def kerneldna_resnet50(num_classes: int = 1000, *, attention: str = "dynamic", **options: Any) -> ResNet:
    """Official KernelDNA ResNet50: resnet50 with :class:`KernelDNALayer3` and :class:`KernelDNALayer4`
    (``attention="constant"``: kwlab's constant-gate control)."""
    _check_no_options("resnet50", options)
    model = ResNet(Bottleneck, [3, 4, 6, 3], num_classes=num_classes)
    model.layer3 = KernelDNALayer3(256, 3)
    model.layer4 = KernelDNALayer4(512, 1)
    return _constant_gates(model, attention)


# ---------------------------------------------------------------------------------------------- MobileNetV2
def _inverted_layers(inp: int, out: int, stride: int) -> nn.Sequential:
    hidden = 6 * inp
    act = nn.ReLU6(inplace=True)
    return nn.Sequential(
        OrderedDict(
            pw1=nn.Conv2d(inp, hidden, 1, bias=False),
            bn1=nn.BatchNorm2d(hidden),
            act1=act,
            dw=nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            bn2=nn.BatchNorm2d(hidden),
            act2=act,
            pw2=nn.Conv2d(hidden, out, 1, bias=False),
            bn3=nn.BatchNorm2d(out),
        )
    )


class KernelDNAInvertedResidual(nn.Module):
    """Official ``TransitionIB`` (``residual=False``) / ``SameIB`` (``residual=True``): expand-6 block."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, residual: bool = True):
        super().__init__()
        if residual and (stride != 1 or in_channels != out_channels):
            raise ValueError("a residual inverted block needs stride 1 and in_channels == out_channels")
        self.residual = residual
        self.layers = _inverted_layers(in_channels, out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x) + x if self.residual else self.layers(x)


class KernelDNAChildInvertedResidual(nn.Module):
    """Official ``ShareIB``: ``pw1`` child of the parent's expand (gate rd 4), own depthwise ``dwconv``,
    ``pw2`` child of the parent's project (gate rd 24); filter scales only (1x1), residual."""

    def __init__(self, parent: KernelDNAInvertedResidual):
        super().__init__()
        hidden, c = parent.layers.pw1.out_channels, parent.layers.pw1.in_channels
        self.act = nn.ReLU6(inplace=True)
        self.pw1 = _child(parent.layers.pw1, reduction=4)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.pw2 = _child(parent.layers.pw2, reduction=24)
        self.bn3 = nn.BatchNorm2d(c)

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.bn1(self.pw1(x)))
        h = self.act(self.bn2(self.dwconv(h)))
        return self.bn3(self.pw2(h)) + x

    def official_layout(self) -> OfficialLayout:
        return OfficialLayout({}, (("se1.se.", "pw1.attention."), ("se3.se.", "pw2.attention.")))


class KernelDNACluster(nn.Module):
    """Official ``ShareCluster``: ``transition`` (stride, no residual), ``blocks`` (children), ``last_block``
    (the parent). Init: every conv normal(0, sqrt(2 / (k*k*out))), conv biases 0, BN 1/0, F = 0."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, n_kids: int):
        super().__init__()
        self.transition = KernelDNAInvertedResidual(in_channels, out_channels, stride, residual=False)
        self.last_block = KernelDNAInvertedResidual(out_channels, out_channels)
        self.blocks = nn.ModuleList([KernelDNAChildInvertedResidual(self.last_block) for _ in range(n_kids)])
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()
            elif isinstance(m, KernelDNAConv2d):
                nn.init.zeros_(m.filter_scale)

    def forward(self, x: Tensor) -> Tensor:
        x = self.transition(x)
        for block in self.blocks:
            x = block(x)
        return self.last_block(x)

    def official_layout(self) -> OfficialLayout:
        n = len(self.blocks)
        return OfficialLayout(
            {
                "static_filter_attn1": tuple(f"blocks.{i}.pw1.filter_scale" for i in range(n)),
                "static_filter_attn3": tuple(f"blocks.{i}.pw2.filter_scale" for i in range(n)),
            }
        )


#: (features index of the cluster, emptied indices, base output channels, stride, children)
_CLUSTERS = (
    (6, (4, 5), 32, 2, 1),
    (10, (7, 8, 9), 64, 2, 2),
    (13, (11, 12), 96, 1, 1),
    (16, (14, 15), 160, 2, 1),
)


class KernelDNAMobileNetV2(MobileNetV2):
    """Official KernelDNA MobileNetV2 (dropout 0): :class:`KernelDNACluster` s at features 6, 10, 13, 16."""

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0):
        super().__init__(num_classes=num_classes, width_mult=width_mult, dropout=0.0)
        for index, emptied, c, stride, n_kids in _CLUSTERS:
            inp = self.features[emptied[0]].conv[0][0].in_channels
            out = make_divisible(c * width_mult)
            for i in emptied:
                self.features[i] = nn.Sequential()
            self.features[index] = KernelDNACluster(inp, out, stride, n_kids)

    def official_layout(self) -> OfficialLayout:
        # the official classifier is nn.Sequential(Dropout(0), Linear)
        return OfficialLayout({}, (("classifier.1.", "classifier."),))


def kerneldna_mobilenetv2(
    num_classes: int = 1000, width_mult: float = 1.0, *, attention: str = "dynamic", **options: Any
) -> MobileNetV2:
    """Official KernelDNA MobileNetV2 at ``width_mult`` 1.0 (``get_mobilenet_v2``) or 0.5 (``..._1d2``)
    (``attention="constant"``: kwlab's constant-gate control)."""
    _check_no_options(f"mobilenetv2 x{width_mult}", options)
    return _constant_gates(KernelDNAMobileNetV2(num_classes, width_mult), attention)


register_method_builder("resnet18", "kerneldna", kerneldna_resnet18)
register_method_builder("resnet50", "kerneldna", kerneldna_resnet50)
register_method_builder("mobilenetv2_100", "kerneldna", partial(kerneldna_mobilenetv2, width_mult=1.0))
register_method_builder("mobilenetv2_050", "kerneldna", partial(kerneldna_mobilenetv2, width_mult=0.5))
