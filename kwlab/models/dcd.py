"""The official DCD models (liyunsheng13/dcd ``models/imagenet/resnet_dcd.py``, ``mobilenetv2_dcd.py``), built
by ``create_model(arch, method="dcd")``.

* ResNets (``ResNet_dcd``): every block conv is a :class:`~kwlab.layers.DCDConv2d` (basic blocks:
  ``conv_basic_dy``, 2x2-pooled descriptor, ``pool=2``; bottlenecks: ``conv_dy``, ``pool=1``), the stem and
  the 1x1 downsample convs stay static, and the classifier is the dynamic ``DYCls``
  (:class:`~kwlab.layers.DCDLinear`, L = S = 32). Registered for resnet18, resnet50 and the CIFAR ResNets
  (resnet18_cifar, resnet20_cifar: the same basic-block rule on kwlab's CIFAR stems).
* MobileNetV2 (``MobileNetV2_dcd``): the expand and project 1x1 convs of every block with expansion 6 are
  ``DYModule`` (:func:`~kwlab.layers.dcd.mobilenetv2_widths`, ``fc_squeeze=16`` as in the README's
  commands; the code's default is 8); the stem, the depthwise convs, the first block (expansion 1) and the
  last 1x1 conv stay static; the classifier is ``DYCls``. Linear layers N(0, 0.01) with zero bias (the
  official init).

Parameter counts equal the official code's (checked by running it, tests/test_dcd_fdconv.py holds the
numbers): ResNet-18 14,703,332 (the KW/ODConv table's 14.70M), ResNet-50 29,835,056, MobileNetV2 1.0
(``fc_squeeze=16``) 5,720,028.

Official checkpoints load with ``kwlab.load_official``: the ResNets' official classifier is ``classifier.0``
(``classifier.1`` with dropout) where kwlab has ``fc``, and the attention Linears live in each layer's
``attention``; MobileNetV2's module names differ more (:class:`DCDMobileNetV2` lists them).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from torch import nn

from kwlab.layers.bank import OfficialLayout
from kwlab.layers.dcd import DCDConv2d, DCDLinear, mobilenetv2_widths
from kwlab.methods import family
from kwlab.methods.surgery import set_module

from .mobilenetv2 import MobileNetV2
from .registry import register_method_builder
from .resnet import BasicBlock, Bottleneck, ResNet

__all__ = ["DCDResNet", "DCDMobileNetV2", "dcd_resnet", "dcd_mobilenetv2", "DCD_MOBILENETV2_FC_SQUEEZE"]

#: the README's ``--fc-squeeze`` for MobileNetV2 (code default 8)
DCD_MOBILENETV2_FC_SQUEEZE = 16

_CLASSIFIER_RENAMES = tuple(
    (f"classifier.{i}.{off}", f"fc.{own}")
    for i in (0, 1)
    for off, own in (
        ("fc_phi.", "attention.fc_phi."),
        ("fc_scale.", "attention.fc_scale."),
        ("fc.", "attention.fc."),
        ("", ""),
    )
)


class DCDResNet(ResNet):
    """A :class:`ResNet` that maps the official ``ResNet_dcd`` checkpoint keys (its classifier)."""

    def official_layout(self) -> OfficialLayout:
        return OfficialLayout({}, _CLASSIFIER_RENAMES)


_DYMODULE = (
    ("conv_q.", "q."),
    ("conv_p.", "p."),
    ("fc_phi.", "attention.fc_phi."),
    ("fc_scale.", "attention.fc_scale."),
    ("fc.", "attention.fc."),
    ("conv.", "conv."),
    ("bn1.", "bn1."),
    ("bn2.", "bn2."),
)


class DCDMobileNetV2(MobileNetV2):
    """A :class:`MobileNetV2` that maps the official ``MobileNetV2_dcd`` checkpoint keys.

    Official -> kwlab: an expansion-6 block's ``conv.{0,1,3,4,6,7}`` are ``conv.{0.0, 0.1, 1.0, 1.1, 2, 3}``
    (``DYModule``'s ``conv_q``/``conv_p`` are ``q``/``p``, its attention Linears sit in ``attention``); the
    first block's ``conv.{0,1,3,4}`` are ``conv.{0.0, 0.1, 1, 2}``; the last 1x1 conv ``conv.{0,1}`` is
    ``features.18.{0,1}``; the classifier ``classifier.0`` (``classifier.1`` with dropout) is ``classifier``.
    """

    def official_layout(self) -> OfficialLayout:
        last = len(self.features) - 1
        renames = [("conv.", f"features.{last}.")]
        for k in range(1, last):
            p = f"features.{k}.conv."
            if len(self.features[k].conv) == 4:
                renames += [
                    (p + o, p + w) for o, w in (("1.", "0.1."), ("3.", "1.0."), ("4.", "1.1."), ("7.", "3."))
                ]
                for o, w in (("0.", "0.0."), ("6.", "2.")):
                    renames += [(p + o + a, p + w + b) for a, b in _DYMODULE]
            else:
                renames += [
                    (p + o, p + w) for o, w in (("0.", "0.0."), ("1.", "0.1."), ("3.", "1."), ("4.", "2."))
                ]
        renames += [(off, "classifier." + own.removeprefix("fc.")) for off, own in _CLASSIFIER_RENAMES]
        return OfficialLayout({}, tuple(renames))


def _check(arch: str, options: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"option(s) {unknown} do not apply to the official DCD {arch}; allowed: {list(allowed)} "
            f"(or convert a static model with kwlab.convert(model, 'dcd', ...))"
        )


def dcd_resnet(
    block: type[nn.Module],
    layers: list[int],
    num_classes: int = 1000,
    *,
    arch: str = "resnet",
    **kwargs: Any,
) -> DCDResNet:
    """A DCD ResNet: block convs DCD (``pool=2`` for basic blocks, 1 for bottlenecks), dynamic classifier."""
    model_kw = {
        k: kwargs.pop(k) for k in ("widths", "stem", "dropout", "drop_path_rate", "in_chans") if k in kwargs
    }
    _check(arch, kwargs, ("pool", "latent_dim", "squeeze", "classifier", "include", "exclude"))
    model = DCDResNet(block, layers, num_classes=num_classes, **model_kw)
    options = {"pool": 2 if block is BasicBlock else 1, "classifier": True, **kwargs}
    return family.convert(model, "dcd", **options)


def dcd_mobilenetv2(num_classes: int = 1000, width_mult: float = 1.0, **kwargs: Any) -> MobileNetV2:
    """The official DCD MobileNetV2 (module docstring)."""
    model_kw = {k: kwargs.pop(k) for k in ("dropout", "in_chans") if k in kwargs}
    _check("mobilenetv2", kwargs, ())
    model = DCDMobileNetV2(num_classes=num_classes, width_mult=width_mult, **model_kw)
    for name, conv in list(model.named_modules()):
        if not isinstance(conv, nn.Conv2d) or conv.kernel_size != (1, 1) or conv.groups != 1:
            continue
        parts = name.split(".")  # features.{k}.conv.{0.0 | 2} (blocks), features.{last}.0 (last conv)
        block = model.features[int(parts[1])]
        if len(parts) < 4 or parts[2] != "conv" or len(block.conv) != 4:  # not an expansion-6 block
            continue
        widths = mobilenetv2_widths(conv.in_channels, conv.out_channels, DCD_MOBILENETV2_FC_SQUEEZE)
        layer = DCDConv2d.from_conv(conv, **widths)
        layer._bank = name
        set_module(model, name, layer)
    model.classifier = DCDLinear(model.last_channel, num_classes)
    model.classifier._bank = "classifier"
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


for _arch, _block, _layers, _extra in (
    ("resnet18", BasicBlock, [2, 2, 2, 2], {}),
    ("resnet50", Bottleneck, [3, 4, 6, 3], {}),
    ("resnet18_cifar", BasicBlock, [2, 2, 2, 2], {"stem": "cifar"}),
):
    register_method_builder(_arch, "dcd", partial(dcd_resnet, _block, _layers, arch=_arch, **_extra))


def _dcd_resnet20(num_classes: int = 10, **kwargs: Any) -> DCDResNet:
    kwargs.setdefault("widths", (16, 32, 64))
    return dcd_resnet(BasicBlock, [3, 3, 3], num_classes, arch="resnet20_cifar", stem="cifar", **kwargs)


register_method_builder("resnet20_cifar", "dcd", _dcd_resnet20)
register_method_builder("mobilenetv2_100", "dcd", partial(dcd_mobilenetv2, width_mult=1.0))
register_method_builder("mobilenetv2_050", "dcd", partial(dcd_mobilenetv2, width_mult=0.5))
