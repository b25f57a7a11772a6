"""ResNets: ImageNet ResNet-18/50 (torchvision shapes) and CIFAR ResNet-20/18 (3x3 stem, no max-pool).

The networks are plain static ConvNets; ``create_model(..., method="kw")`` converts them with
:func:`resnet_kw_stage_rule`, which reproduces the official KW grouping (``models/kw_resnet.py``):

* static: the stem conv, the classifier, and (ResNet-50) block 0's first 1x1 conv of ``layer1`` and the
  stride-1 downsample of ``layer1``;
* stage s (``layer{s+1}``) has warehouse ``stage{s}``, shared by the stage's convs *and* by the
  transition convs that read stage-s channels: the first conv of the next stage's block 0 (stride 2
  for BasicBlock) and the next stage's downsample conv ("warehouse handover").
Module names and registration order follow the official code, so cells are allocated in the same order.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial

from torch import Tensor, nn

from kwlab.methods.kw_options import KW_PRESETS

from .registry import ModelEntry, register_model

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "resnet_kw_stage_rule", "DropPath"]


class DropPath(nn.Module):
    """Stochastic depth on the residual branch (per sample)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = downsample
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(identity + self.drop_path(out))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        width = channels
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, channels * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(identity + self.drop_path(out))


class ResNet(nn.Module):
    """A ResNet with an ImageNet stem (7x7/2 conv + max-pool) or a CIFAR stem (3x3/1 conv).

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage.
        widths: base channels per stage.
        num_classes: classifier outputs.
        stem: "imagenet" or "cifar".
        dropout: dropout before the classifier (official KW ResNet: a ``dropout`` module).
        drop_path_rate: stochastic depth on every residual branch.
    """

    def __init__(
        self,
        block: type[nn.Module],
        layers: list[int],
        widths: tuple[int, ...] = (64, 128, 256, 512),
        num_classes: int = 1000,
        stem: str = "imagenet",
        dropout: float = 0.0,
        drop_path_rate: float = 0.0,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")
        if len(widths) != len(layers):
            raise ValueError(f"widths ({len(widths)}) and layers ({len(layers)}) must have the same length")
        self.block = block
        self.in_channels = widths[0]
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_chans, widths[0], 7, 2, 3, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if stem == "imagenet" else nn.Identity()
        for i, (n, w) in enumerate(zip(layers, widths)):
            self.add_module(f"layer{i + 1}", self._make_layer(w, n, 1 if i == 0 else 2, drop_path_rate))
        self.num_stages = len(layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.num_features = widths[-1] * block.expansion
        self.fc = nn.Linear(self.num_features, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, channels: int, blocks: int, stride: int, drop_path: float) -> nn.Sequential:
        downsample = None
        out = channels * self.block.expansion
        if stride != 1 or self.in_channels != out:
            downsample = nn.Sequential(
                nn.Conv2d(self.in_channels, out, 1, stride, bias=False), nn.BatchNorm2d(out)
            )
        layers = [self.block(self.in_channels, channels, stride, downsample, drop_path)]
        self.in_channels = out
        layers += [self.block(out, channels, 1, None, drop_path) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.forward_features(x)).flatten(1)
        return self.fc(self.dropout(x))

    def kw_stage_rule(self, name: str, module: nn.Module) -> str | None:
        """The official KW warehouse of a conv (None: kept static). See :func:`resnet_kw_stage_rule`."""
        return resnet_kw_stage_rule(name, module, bottleneck=self.block is Bottleneck)


_BLOCK_CONV = re.compile(r"^layer(\d+)\.(\d+)\.(conv\d|downsample\.0)$")


def resnet_kw_stage_rule(name: str, module: nn.Module, *, bottleneck: bool = False) -> str | None:
    """Official KW grouping of a ResNet conv by qualified name (``layer2.0.conv1`` -> ``"stage0"``)."""
    m = _BLOCK_CONV.match(name)
    if m is None:
        return None  # stem conv, classifier: static
    stage = int(m.group(1)) - 1
    block = int(m.group(2))
    conv = m.group(3)
    if conv == "downsample.0":
        if module.stride[0] == 1:
            return None  # official: enabled only for stride != 1
        return f"stage{stage - 1}"
    if block == 0 and conv == "conv1":
        handover = stage - 1
        if handover < 0:
            if bottleneck:
                return None  # ResNet-50 layer1.0.conv1: "stage -1", static
            handover = 0
        return f"stage{handover}"
    return f"stage{stage}"


Builder = Callable[..., nn.Module]


# ------------------------------------------------------------------------------------------ registry
_R50_PRESETS = {**KW_PRESETS, "1/2x": dict(KW_PRESETS["1/2x"], nonlocal_basis_ratio=0.0625)}
_RESNET_KW = ("dropout", "drop_path_rate", "in_chans", "widths")


def _resnet20(num_classes: int = 10, widths: tuple[int, ...] = (16, 32, 64), **kw) -> ResNet:
    return ResNet(BasicBlock, [3, 3, 3], widths=widths, num_classes=num_classes, stem="cifar", **kw)


def _resnet8(num_classes: int = 10, widths: tuple[int, ...] = (16, 32, 64), **kw) -> ResNet:
    return ResNet(BasicBlock, [1, 1, 1], widths=widths, num_classes=num_classes, stem="cifar", **kw)


for _name, _builder, _presets, _size, _description in (
    ("resnet18", partial(ResNet, BasicBlock, [2, 2, 2, 2]), KW_PRESETS, 224, "ResNet-18 (ImageNet)"),
    ("resnet50", partial(ResNet, Bottleneck, [3, 4, 6, 3]), _R50_PRESETS, 224, "ResNet-50 (ImageNet)"),
    (
        "resnet18_cifar",
        partial(ResNet, BasicBlock, [2, 2, 2, 2], stem="cifar"),
        KW_PRESETS,
        32,
        "ResNet-18 with a 3x3 stem and no max-pool (CIFAR)",
    ),
    ("resnet20_cifar", _resnet20, KW_PRESETS, 32, "ResNet-20 (16-32-64, CIFAR) with 1x1-conv shortcuts"),
    ("resnet8_cifar", _resnet8, KW_PRESETS, 32, "ResNet-8: one block per stage (small tasks)"),
):
    register_model(
        ModelEntry(_name, _builder, _RESNET_KW, {"kw": _presets}, (3, _size, _size), description=_description)
    )
