"""Check kwlab against the official KernelWarehouse code, number for number.

Given a local checkout of OSVAI/KernelWarehouse (never vendored into kwlab), this builds each official KW
model from its config, compares the parameter count with kwlab's, loads the official model's state_dict
into the kwlab model with :func:`kwlab.load_official`, and compares logits in eval mode at several
temperatures. It prints one line per model and exits non-zero on any mismatch.

    python benchmarks/verify_official.py --official /path/to/KernelWarehouse [--archs resnet18 resnet50]

The official models import ``timm`` only for ``DropPath`` and ``register_model``; when timm is not
installed, a minimal stand-in for those two names is put on ``sys.path`` for this process.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import torch

import kwlab

# (kwlab arch, kwlab preset, official config file, official model function)
CASES = [
    ("resnet18", "1/4x", "resnet18/kw1d4x_resnet18.json", None),
    ("resnet18", "1/2x", "resnet18/kw1d2x_resnet18.json", None),
    ("resnet18", "1x", "resnet18/kw1x_resnet18.json", None),
    ("resnet18", "2x", "resnet18/kw2x_resnet18.json", None),
    ("resnet18", "4x", "resnet18/kw4x_resnet18.json", None),
    ("resnet50", "1/2x", "resnet50/kw1d2x_resnet50.json", None),
    ("resnet50", "1x", "resnet50/kw1x_resnet50.json", None),
    ("resnet50", "4x", "resnet50/kw4x_resnet50.json", None),
    ("mobilenetv2_100", "1/2x", "mobilenetv2_100/kw1d2x_mobilenetv2_100.json", None),
    ("mobilenetv2_100", "1x", "mobilenetv2_100/kw1x_mobilenetv2_100.json", None),
    ("mobilenetv2_100", "4x", "mobilenetv2_100/kw4x_mobilenetv2_100.json", None),
    ("mobilenetv2_050", "1/2x", "mobilenetv2_050/kw1d2x_mobilenetv2_050.json", None),
    ("mobilenetv2_050", "1x", "mobilenetv2_050/kw1x_mobilenetv2_050.json", None),
    ("mobilenetv2_050", "4x", "mobilenetv2_050/kw4x_mobilenetv2_050.json", None),
    ("convnext_tiny", "1x", "convnext/kw1x_convnext_tiny.json", None),
]
MODEL_ARGS = (
    "reduction",
    "cell_num_ratio",
    "cell_inplane_ratio",
    "cell_outplane_ratio",
    "sharing_range",
    "nonlocal_basis_ratio",
)


def _timm_stand_in() -> None:
    try:
        import timm  # noqa: F401

        return
    except ImportError:
        pass

    class DropPath(torch.nn.Module):
        def __init__(self, p: float = 0.0) -> None:
            super().__init__()
            self.p = p

        def forward(self, x):
            return x

    timm = types.ModuleType("timm")
    models = types.ModuleType("timm.models")
    layers = types.ModuleType("timm.models.layers")
    registry = types.ModuleType("timm.models.registry")
    layers.DropPath = DropPath
    layers.trunc_normal_ = torch.nn.init.trunc_normal_
    registry.register_model = lambda fn: fn
    timm.models, models.layers, models.registry = models, layers, registry
    sys.modules.update(
        {"timm": timm, "timm.models": models, "timm.models.layers": layers, "timm.models.registry": registry}
    )


def _official_model(root: Path, config: dict):
    name = config["model"]
    module = {
        "kw_resnet": "models.kw_resnet",
        "kw_mobilenetv2": "models.kw_mobilenetv2",
        "kw1d2x_mobilenetv2": "models.kw1d2x_mobilenetv2",
        "kw_convnext": "models.kw_convnext",
    }
    key = next(k for k in sorted(module, key=len, reverse=True) if name.startswith(k))
    mod = __import__(module[key], fromlist=["x"])
    kwargs = {k: config[k] for k in MODEL_ARGS if k in config}
    return getattr(mod, name)(num_classes=1000, **kwargs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", required=True, type=Path, help="path of a KernelWarehouse checkout")
    parser.add_argument("--archs", nargs="*", default=None, help="only these kwlab archs")
    parser.add_argument("--size", type=int, default=64, help="input resolution for the logit check")
    args = parser.parse_args()
    root = args.official.resolve()
    if not (root / "modules" / "kernel_warehouse.py").is_file():
        parser.error(f"{root} is not a KernelWarehouse checkout (no modules/kernel_warehouse.py)")
    _timm_stand_in()
    sys.path.insert(0, str(root))
    torch.manual_seed(0)
    failures = 0
    for arch, preset, cfg_file, _ in CASES:
        if args.archs and arch not in args.archs:
            continue
        if arch not in kwlab.list_models():
            print(f"{arch:16s} {preset:5s} SKIP (arch not registered in kwlab)")
            continue
        config = json.loads((root / "configs" / cfg_file).read_text())
        official = _official_model(root, config).eval()
        ours = kwlab.create_model(arch, method="kw", preset=preset).eval()
        n_off = sum(p.numel() for p in official.parameters())
        n_our = sum(p.numel() for p in ours.parameters())
        # random BN running statistics, so that the check covers them; eval mode, as the issue asks. The
        # logits of a random-weight MobileNetV2 get tiny this way (~1e-20), which float32 compares at full
        # relative precision. Statistics calibrated on a batch instead put these random deep nets in a regime
        # that amplifies float rounding ~3x per block (measured: per-block outputs agree to 7e-7, chained
        # outputs drift), so they would test the conditioning of the net, not kwlab.
        with torch.no_grad():
            for m in official.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.running_mean.normal_(0, 0.1)
                    m.running_var.uniform_(0.5, 1.5)
        kwlab.load_official(ours, official.state_dict())
        x = torch.randn(4, 3, args.size, args.size)
        worst, scale = 0.0, float("inf")
        for tau in (0.0, 0.37, 1.0):
            official.net_update_temperature(tau)
            kwlab.set_temperature(ours, tau)
            with torch.no_grad():
                a, b = official(x), ours(x)
            worst = max(worst, ((a - b).abs().max() / a.abs().max()).item())
            scale = min(scale, a.abs().max().item())
        ok = n_off == n_our and worst < 1e-4 and scale > 1e-30
        failures += not ok
        print(
            f"{arch:16s} {preset:5s} params official {n_off / 1e6:7.2f}M kwlab {n_our / 1e6:7.2f}M "
            f"max rel logit diff {worst:.2e} (smallest max|logit| {scale:.1e})  {'OK' if ok else 'MISMATCH'}"
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
