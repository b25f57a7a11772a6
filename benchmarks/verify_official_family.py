"""Check kwlab's DCD and FDConv against their official code, number for number.

Given local checkouts of liyunsheng13/dcd and/or Linwei-Chen/FDConv (never vendored into kwlab), this builds
the official models, compares parameter counts and MACs (``kwlab.count_macs`` on the meta device at
1x3x224x224) with ``create_model(arch, method=...)``, loads the official weights into kwlab with
:func:`kwlab.load_official` and compares logits in eval mode (random weights and BatchNorm statistics, so
every attention is far from its init). It prints one line per case and exits non-zero on any mismatch.

    python benchmarks/verify_official_family.py --dcd /path/to/dcd --fdconv /path/to/FDConv

* DCD: ``models/imagenet/resnet_dcd.py`` and ``mobilenetv2_dcd.py`` are plain PyTorch and run as they are.
  ResNet-18/50 and MobileNetV2 1.0 (``fc_squeeze=16``, the README's): counts, MACs and logits (BatchNorm
  statistics calibrated on one random batch, see ``_calibrate``; the official ResNet needs 224 px inputs:
  its pool is ``AvgPool2d(7)``).
* FDConv: ``FDConv_detection/mmdet_custom/FDConv.py`` imports mmcv (only to register the class) and timm
  (an unused initialiser); both are replaced by stand-ins for this process. The official layer is put in
  place of every conv kwlab converts (the official ResNet wiring: block convs passing the gating) in a kwlab
  ResNet, so both models share every other module and key.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import sys
import types
import warnings
from pathlib import Path

import torch
from torch import nn

import kwlab
from kwlab.layers.fdconv import FDConv2d
from kwlab.utils import count_macs, count_parameters


def _module_from(path: Path, name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fdconv_module(root: Path) -> types.ModuleType:
    """The official FDConv.py with stand-ins for ``mmcv.cnn.CONV_LAYERS`` and ``timm.models.layers``."""

    class _Registry:
        def register_module(self, *args, **kwargs):
            return lambda cls: cls

    stand_ins = {
        "mmcv": types.ModuleType("mmcv"),
        "mmcv.cnn": types.ModuleType("mmcv.cnn"),
        "timm": types.ModuleType("timm"),
        "timm.models": types.ModuleType("timm.models"),
        "timm.models.layers": types.ModuleType("timm.models.layers"),
    }
    stand_ins["mmcv.cnn"].CONV_LAYERS = _Registry()
    stand_ins["timm.models.layers"].trunc_normal_ = lambda *a, **k: None
    try:
        import matplotlib.pyplot  # noqa: F401
    except ImportError:
        stand_ins["matplotlib"] = types.ModuleType("matplotlib")
        stand_ins["matplotlib.pyplot"] = types.ModuleType("matplotlib.pyplot")
    saved = {k: sys.modules.get(k) for k in stand_ins}
    sys.modules.update(stand_ins)
    try:
        return _module_from(root / "FDConv_detection/mmdet_custom/FDConv.py", "fdconv_official")
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def _randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Weights scaled at random and BatchNorm statistics away from their init (attentions far from init)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                p.mul_(torch.rand(p.shape, generator=g) + 0.5)
                if any(s in name for s in ("fc_", "KSM", "FBM", "kernel_fc", "fc.")):
                    p.add_(torch.randn(p.shape, generator=g) * p.std().clamp_min(1e-3))
            else:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def _calibrate(model: nn.Module, size: int) -> nn.Module:
    """BatchNorm statistics of one train-mode batch: DCD's latent BatchNorm takes a product of activations,
    so with arbitrary statistics eval-mode activations square from layer to layer and overflow (the official
    model gives NaN logits at init in eval mode)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        model.train()(torch.randn(8, 3, size, size, generator=torch.Generator().manual_seed(2)))
    return model.eval()


def _counts(official_builder, kwlab_builder) -> tuple[int, int, int, int]:
    with torch.device("meta"):
        off, own = official_builder(), kwlab_builder()
    shape = (1, 3, 224, 224)
    return count_parameters(off), count_parameters(own), count_macs(off, shape), count_macs(own, shape)


def _logits(official: nn.Module, own: nn.Module, size: int) -> float:
    kwlab.load_official(own, official.state_dict())
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = official.eval()(x), own.eval()(x)
    return float((a - b).abs().max() / a.abs().max())


def check_dcd(root: Path, tol: float) -> bool:
    resnet = _module_from(root / "models/imagenet/resnet_dcd.py", "resnet_dcd_official")
    mbv2 = _module_from(root / "models/imagenet/mobilenetv2_dcd.py", "mobilenetv2_dcd_official")
    ok = True
    cases = [
        ("resnet18", resnet.resnet18_dcd),
        ("resnet50", resnet.resnet50_dcd),
        ("mobilenetv2_100", lambda **kw: mbv2.mobilenetv2_dcd(fc_squeeze=16, **kw)),
    ]
    for arch, build in cases:
        p_off, p_own, m_off, m_own = _counts(build, lambda a=arch: kwlab.create_model(a, method="dcd"))
        line = f"dcd {arch}: params {p_off} vs {p_own}, MACs {m_off} vs {m_own}"
        torch.manual_seed(0)
        official = _calibrate(_randomise(build(num_classes=10)), 224)
        diff = _logits(official, kwlab.create_model(arch, method="dcd", num_classes=10), 224)
        line += f", max rel logit diff {diff:.2e}"
        good = p_off == p_own and m_off == m_own and diff < tol
        print(("OK   " if good else "FAIL ") + line)
        ok &= good
    return ok


def _official_fdconv_resnet(fd: types.ModuleType, arch: str, kernel_num: int) -> nn.Module:
    model = kwlab.create_model(arch, num_classes=10)
    names = [
        n
        for n, m in kwlab.create_model(arch, method="fdconv", kernel_num=kernel_num).named_modules()
        if isinstance(m, FDConv2d)
    ]
    for name in names:
        conv = model.get_submodule(name)
        with contextlib.redirect_stdout(io.StringIO()):  # the official layer prints its kernel_num
            new = fd.FDConv(
                conv.in_channels,
                conv.out_channels,
                kernel_size=conv.kernel_size,
                stride=conv.stride,
                padding=conv.padding,
                dilation=conv.dilation,
                bias=False,
                kernel_num=kernel_num,
            )
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, new)
    return model


def check_fdconv(root: Path, tol: float) -> bool:
    fd = _fdconv_module(root)
    ok = True
    for arch in ("resnet50", "resnet18"):
        with torch.device("meta"):
            static = count_parameters(kwlab.create_model(arch, num_classes=10))
        official = _official_fdconv_resnet(fd, arch, 64)
        own = kwlab.create_model(arch, method="fdconv", num_classes=10)
        p_off, p_own = count_parameters(official), count_parameters(own)
        shape = (1, 3, 64, 64)
        m_off, m_own = count_macs(official, shape), count_macs(own, shape)
        torch.manual_seed(0)
        diff = _logits(_randomise(official), own, 64)
        good = p_off == p_own and m_off == m_own and diff < tol
        print(
            ("OK   " if good else "FAIL ")
            + f"fdconv {arch} (kernel_num 64): params {p_off} vs {p_own} (+{p_own - static:,} over static), "
            f"MACs at 64 px {m_off} vs {m_own}, max rel logit diff {diff:.2e}"
        )
        ok &= good
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dcd", type=Path, help="path of a liyunsheng13/dcd checkout")
    parser.add_argument("--fdconv", type=Path, help="path of a Linwei-Chen/FDConv checkout")
    parser.add_argument("--tol", type=float, default=1e-4, help="largest relative logit difference")
    args = parser.parse_args()
    if args.dcd is None and args.fdconv is None:
        parser.error("give --dcd PATH and/or --fdconv PATH")
    warnings.filterwarnings("ignore", message="torch.meshgrid")
    torch.set_num_threads(1)
    ok = True
    if args.dcd is not None:
        ok &= check_dcd(args.dcd, args.tol)
    if args.fdconv is not None:
        ok &= check_fdconv(args.fdconv, args.tol)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
