"""MobileNetV2 (Sandler et al., 2018) as a plain static ConvNet, plus its official KernelWarehouse wiring.

Checked against OSVAI/KernelWarehouse ``models/mobilenetv2.py``, ``models/kw_mobilenetv2.py`` and
``models/kw1d2x_mobilenetv2.py``. Module names and registration order are the official ones
(``features.{k}``, ``conv``, ``dropout``, ``classifier``), so cells are allocated in the official order.

KW stages. The 7 inverted-residual groups (t, c, n, s) map to KW stages ``[1, 2, 3, 4, 5, 6, 6]``; the
stem is stage 0 and the last 1x1 conv belongs to stage 6. The first block of a group that starts a new
KW stage reads the previous stage's channels and is *handed over* to the previous stage's warehouses
(as for ResNet). Everything but the classifier is KW. Warehouse keys (official fused name in brackets):

* ``"stage0_conv0"``: the stem 3x3 conv [``stage0_conv0``];
* ``"stage{s}_dwconv"``: the depthwise 3x3 convs of stage s [``stage{s}_layer_dwconv0``];
* pointwise 1x1 convs, by preset:

  - 1x (official ``sharing_range=["layer", "pwconv"]``): expand and project convs of a stage share
    ``"stage{s}_pwconv"`` [``stage{s}_layer_pwconv``];
  - 4x (``["layer"]``): expand ``"stage{s}_pwconv0"`` and project ``"stage{s}_pwconv1"`` are separate
    [``stage{s}_layer_pwconv0`` / ``1``];
  - the last 1x1 conv (320c -> 1280) goes with stage 6's project convs.

* 1/2x (the special ``KW1d2x_MobileNetV2``; its ``sharing_range=tuple("layer")`` fuses names by single
  characters, which amounts to the 4x grouping): the 1x1 convs of blocks in KW stages 1-5 stay static,
  stage 6 and the last conv are KW, every depthwise conv is KW, and the classifier becomes a
  :class:`~kwlab.layers.KWLinear` (warehouse ``"classifier"``). Attention reduction 1/32; per
  warehouse (official order) budget / cell_in / cell_out are 1 except ``stage6_pwconv0`` and
  ``stage6_pwconv1`` (1/2, 1/2, 1/2) and ``classifier`` (1/2, 0.025, 1).

Presets: "1/2x", "1x", "4x" (official) and "2x" (1x grouping with budget 2, not in the paper).
With ``sharing="stage"`` (the preset default) the preset's official grouping is used; "layer",
"network" or a callable override it (the 1/2x per-warehouse options then do not apply).

Official checkpoints: see :func:`official_key_map`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from torch import Tensor, nn

from .registry import ModelEntry, register_model

__all__ = [
    "MobileNetV2",
    "InvertedResidual",
    "ConvBNReLU",
    "make_divisible",
    "mobilenetv2_kw_rule",
    "official_key_map",
    "warehouse_order",
    "MOBILENETV2_PRESETS",
    "HALF_WAREHOUSE_OPTIONS",
    "INVERTED_RESIDUAL_SETTING",
    "KW_STAGE_SETTING",
]

#: (expand ratio t, output channels c, blocks n, first stride s) of the 7 groups (width 1.0).
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
#: KW stage of each group (official ``kw_stage_setting``).
KW_STAGE_SETTING = (1, 2, 3, 4, 5, 6, 6)

_CLASSIFIER_PREFIX = re.compile(r"^classifier\.1\.(?:conv\.)?")


def official_key_map(official_key: str) -> str:
    """Official MobileNetV2 ``state_dict`` key -> kwlab key.

    The official static model and the 1/2x KW model wrap the classifier as ``nn.Sequential(Dropout,
    Linear)`` (``classifier.1.weight``; the 1/2x KWLinear wraps a KWConv1d: ``classifier.1.conv.*``),
    while kwlab (like the official 1x/4x KW model) has ``dropout`` and ``classifier`` side by side.
    Every other key is unchanged: ``warehouse_manager.weights.{i}`` is left as is (it maps to the
    owner of the i-th warehouse in official creation order, which :func:`kwlab.load_official` resolves).
    """
    return _CLASSIFIER_PREFIX.sub("classifier.", official_key)


def official_key_unmap(key: str, model: nn.Module) -> str:
    """Inverse of :func:`official_key_map`: kwlab key -> the official key of the same tensor.

    The official static MobileNetV2 and the 1/2x KW model keep the classifier at index 1 of a Sequential;
    the official 1x/4x KW models (static ``nn.Linear`` classifier next to ``dropout``) do not.
    """
    cfg = getattr(model, "kwlab_config", {}) or {}
    wrapped = cfg.get("method") == "static" or not isinstance(model.classifier, nn.Linear)
    if wrapped and key.startswith("classifier."):
        return "classifier.1." + key[len("classifier.") :]
    return key


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to a multiple of ``divisor`` (not below ``min_value``, and not more than 10% down)."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvBNReLU(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> ReLU6, children ``0``, ``1``, ``2``."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 1
    ) -> None:
        super().__init__(
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride,
                (kernel_size - 1) // 2,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """Expand 1x1 (if t != 1) -> depthwise 3x3 -> project 1x1 (linear), residual when shapes allow.

    Children: ``conv`` = ``[ConvBNReLU(expand)], ConvBNReLU(dw), Conv2d(project), BatchNorm2d``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = int(round(in_channels * expand_ratio))
        self.stride = stride
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU(in_channels, hidden, kernel_size=1))
        layers += [
            ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 for ``(B, in_chans, H, W)`` images (ImageNet: 224x224) -> logits ``(B, num_classes)``.

    Args:
        num_classes: classifier outputs.
        width_mult: channel multiplier (registered: 1.0 "mobilenetv2_100", 0.5 "mobilenetv2_050").
        dropout: dropout before the classifier (official default 0).
        round_nearest: channels are rounded to multiples of this.
        in_chans: input channels.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        width_mult: float = 1.0,
        dropout: float = 0.0,
        round_nearest: int = 8,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        if not width_mult > 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult}")
        channels = make_divisible(32 * width_mult, round_nearest)
        self.last_channel = make_divisible(1280 * max(1.0, width_mult), round_nearest)
        features: list[nn.Module] = [ConvBNReLU(in_chans, channels, stride=2)]
        stages = [0]  # KW stage of each features[k]
        for g, (t, c, n, s) in enumerate(INVERTED_RESIDUAL_SETTING):
            out = make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                features.append(InvertedResidual(channels, out, s if i == 0 else 1, t))
                handover = i == 0 and g > 0 and KW_STAGE_SETTING[g] != KW_STAGE_SETTING[g - 1]
                stages.append(KW_STAGE_SETTING[g] - 1 if handover else KW_STAGE_SETTING[g])
                channels = out
        features.append(ConvBNReLU(channels, self.last_channel, kernel_size=1))
        stages.append(KW_STAGE_SETTING[-1])
        self.features = nn.Sequential(*features)
        self.kw_stages: tuple[int, ...] = tuple(stages)
        self.num_features = self.last_channel
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(self.last_channel, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x).mean((2, 3))
        return self.classifier(self.dropout(x))

    def kw_rule(
        self,
        pointwise: str = "shared",
        static_pointwise_stages: Iterable[int] = (),
        kw_classifier: bool = False,
    ) -> Callable[[str, nn.Module], str | None]:
        """A sharing rule ``(name, module) -> key | None`` for this network (:func:`mobilenetv2_kw_rule`)."""
        return partial(
            mobilenetv2_kw_rule,
            stages=self.kw_stages,
            pointwise=pointwise,
            static_pointwise_stages=tuple(static_pointwise_stages),
            kw_classifier=kw_classifier,
        )

    def kw_stage_rule(self, name: str, module: nn.Module) -> str | None:
        """The official 1x grouping (expand and project 1x1 convs of a stage share a warehouse)."""
        return mobilenetv2_kw_rule(name, module, stages=self.kw_stages)


_CONV_NAME = re.compile(r"^features\.(\d+)\.(?:0|conv\.(\d+)(\.0)?)$")
_POINTWISE = ("shared", "separate")


def mobilenetv2_kw_rule(
    name: str,
    module: nn.Module,
    *,
    stages: tuple[int, ...],
    pointwise: str = "shared",
    static_pointwise_stages: tuple[int, ...] = (),
    kw_classifier: bool = False,
) -> str | None:
    """Official KW warehouse of a MobileNetV2 layer (None: kept static).

    Args:
        name: qualified name (``features.3.conv.1.0``).
        module: the layer.
        stages: KW stage of each ``features[k]`` (after handover), :attr:`MobileNetV2.kw_stages`.
        pointwise: "shared" (expand and project convs of a stage share ``stage{s}_pwconv``; official 1x)
            or "separate" (``stage{s}_pwconv0`` / ``stage{s}_pwconv1``; official 4x and 1/2x).
        static_pointwise_stages: KW stages whose blocks keep their 1x1 convs static (1/2x: 1-5).
        kw_classifier: make the classifier a KWLinear with warehouse ``"classifier"`` (1/2x).
    """
    if pointwise not in _POINTWISE:
        raise ValueError(f"pointwise must be one of {_POINTWISE}, got {pointwise!r}")
    if name == "classifier":
        return "classifier" if kw_classifier else None
    m = _CONV_NAME.match(name)
    if m is None or not isinstance(module, nn.Conv2d):
        return None
    k = int(m.group(1))
    stage = stages[k]
    if k == 0:
        return "stage0_conv0"
    if module.groups > 1:
        return f"stage{stage}_dwconv"
    last = k == len(stages) - 1
    if not last and stage in static_pointwise_stages:
        return None
    if pointwise == "shared":
        return f"stage{stage}_pwconv"
    project = last or m.group(3) is None  # a bare conv in ``conv`` is the linear projection
    return f"stage{stage}_pwconv{1 if project else 0}"


#: 1/2x per-warehouse options (official ``KW1d2x_MobileNetV2`` tuples, warehouses 6, 8 and 9).
HALF_WAREHOUSE_OPTIONS = {
    "stage6_pwconv0": dict(budget=0.5, cell_in=0.5, cell_out=0.5),
    "stage6_pwconv1": dict(budget=0.5, cell_in=0.5, cell_out=0.5),
    "classifier": dict(budget=0.5, cell_in=0.025, cell_out=1.0),
}

#: Official KW configs (``configs/mobilenetv2_*/kw*.json``; reduction is the model default 1/16).
MOBILENETV2_PRESETS: dict[str, dict[str, Any]] = {
    "1/2x": dict(budget=1, cell_in=1.0, cell_out=1.0, reduction=1 / 32, sharing="stage"),
    "1x": dict(budget=1, cell_in=1.0, cell_out=1.0, reduction=1 / 16, sharing="stage"),
    "2x": dict(budget=2, cell_in=1.0, cell_out=1.0, reduction=1 / 16, sharing="stage"),
    "4x": dict(budget=4, cell_in=1.0, cell_out=1.0, reduction=1 / 16, sharing="stage"),
}


def warehouse_order(model: nn.Module, rule: Callable[[str, nn.Module], str | None]) -> list[str]:
    """Warehouse keys in official creation order (index in ``warehouse_manager.weights``).

    The official code reserves a warehouse when it constructs a layer, in the order the layers are
    built, which for MobileNetV2 and ConvNeXt is their registration order; so the creation order is the
    order in which the keys first appear over the model's layers.
    """
    keys: dict[str, None] = {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            key = rule(name, module)
            if key is not None:
                keys.setdefault(key, None)
    return list(keys)


def _kw_prepare(model: MobileNetV2, preset: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Resolve ``sharing="stage"`` to the preset's official grouping (and 1/2x per-warehouse options)."""
    if settings.get("sharing", "stage") != "stage":
        return settings
    settings = dict(settings)
    if preset == "1/2x":
        rule = model.kw_rule("separate", static_pointwise_stages=(1, 2, 3, 4, 5), kw_classifier=True)
        user = dict(settings.get("warehouse_options") or {})
        merged = {k: {**v, **user.get(k, {})} for k, v in HALF_WAREHOUSE_OPTIONS.items()}
        settings["warehouse_options"] = {**user, **merged}
    elif preset == "4x":
        rule = model.kw_rule("separate")
    else:
        rule = model.kw_rule("shared")
    settings["sharing"] = rule
    if settings.get("warehouse_order") is None:
        settings["warehouse_order"] = warehouse_order(model, rule)
    return settings


_MODEL_KW = ("dropout", "in_chans")
_DESCRIPTION = (
    "MobileNetV2 ({w}x width, ImageNet 224). KW: everything but the classifier; official recipe "
    "150 epochs SGD lr 0.05 wd 4e-5, temperature annealed over 15 epochs."
)

for _name, _width in (("mobilenetv2_100", 1.0), ("mobilenetv2_050", 0.5)):
    register_model(
        ModelEntry(
            _name,
            partial(MobileNetV2, width_mult=_width),
            _MODEL_KW,
            {"kw": MOBILENETV2_PRESETS},
            input_size=(3, 224, 224),
            anneal_epochs={"kw": 15.0},  # the official MobileNetV2 recipe (150 epochs) anneals over 15
            prepare={"kw": _kw_prepare},
            official_key_map=official_key_map,
            official_key_unmap=official_key_unmap,
            description=_DESCRIPTION.format(w=_width),
        )
    )
