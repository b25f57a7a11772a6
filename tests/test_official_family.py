"""Official checkpoints of the family methods load at their own evaluation temperature.

ODConv: an official-layout state_dict (OSVAI/ODConv ``modules/odconv.py`` names) loads with no extra
arguments and every ODConv layer then computes the official formula at T = 1, checked against a functional
reference written from that formula on the official tensors.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import kwlab
from kwlab.layers.odconv import ODConv2d
from kwlab.methods import METHODS
from kwlab.methods.official import load_official, to_official

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".attention." in name:  # logits of order 1-3, so the temperature matters
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 if name.endswith(".bias") else 0.3))
            elif p.dim() > 1:
                p.mul_(torch.rand(p.shape, generator=g) + 0.5)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def _official_odconv(x: torch.Tensor, sd: dict, p: str, layer: ODConv2d, t: float = 1.0) -> torch.Tensor:
    """OSVAI/ODConv ``ODConv2d._forward_impl_common`` on official tensors (prefix ``p``) at temperature t."""
    a = f"{p}.attention"
    b, i, h, w = x.shape
    bn = [sd[f"{a}.bn.{s}"] for s in ("running_mean", "running_var", "weight", "bias")]
    z = F.relu(
        F.batch_norm(F.conv2d(F.adaptive_avg_pool2d(x, 1), sd[f"{a}.fc.weight"]), *bn, False, 0.0, 1e-5)
    )

    def head(name):
        return F.conv2d(z, sd[f"{a}.{name}.weight"], sd[f"{a}.{name}.bias"])

    weight = sd[f"{p}.weight"]  # (n, O, I/g, k, k)
    n, o, _, k, _ = weight.shape
    channel = torch.sigmoid(head("channel_fc").view(b, -1, 1, 1) / t)
    filt = torch.sigmoid(head("filter_fc").view(b, -1, 1, 1) / t) if f"{a}.filter_fc.weight" in sd else 1.0
    if f"{a}.spatial_fc.weight" in sd:
        spatial = torch.sigmoid(head("spatial_fc").view(b, 1, 1, 1, k, k) / t)
    else:
        spatial = 1.0
    kernel = torch.softmax(head("kernel_fc").view(b, -1, 1, 1, 1, 1) / t, 1) if n > 1 else 1.0
    agg = (spatial * kernel * weight.unsqueeze(0)).sum(1).view(-1, i // layer.groups, k, k)
    y = F.conv2d(
        (x * channel).reshape(1, -1, h, w),
        agg,
        None,
        layer.stride,
        layer.padding,
        layer.dilation,
        layer.groups * b,
    )
    return y.view(b, o, y.shape[-2], y.shape[-1]) * filt


@pytest.mark.parametrize("preset,n", [("1x", 1), ("4x", 4)])
def test_odconv_official_layout_loads_at_t1(preset, n, tmp_path):
    source = _randomise(kwlab.create_model("resnet18", method="odconv", preset=preset, num_classes=10))
    sd = to_official(source)
    # the official key layout of one block conv (modules/odconv.py): no kwlab-only buffers
    conv = {k for k in sd if k.startswith("layer2.1.conv1.")}
    heads = ("channel_fc", "filter_fc", "spatial_fc") + (("kernel_fc",) if n > 1 else ())
    expected = {"layer2.1.conv1.weight", "layer2.1.conv1.attention.fc.weight"}
    expected |= {f"layer2.1.conv1.attention.bn.{s}" for s in BN}
    expected |= {f"layer2.1.conv1.attention.{h}.{s}" for h in heads for s in ("weight", "bias")}
    assert conv == expected and sd["layer2.1.conv1.weight"].shape == (n, 128, 128, 3, 3)
    path = tmp_path / "od.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)

    model = kwlab.create_model("resnet18", method="odconv", preset=preset, num_classes=10)  # fresh: T = 30
    load_official(model, path)  # no temperature argument: ODConv's own evaluation temperature
    layers = {name: m for name, m in model.named_modules() if isinstance(m, ODConv2d)}
    assert len(layers) == 16
    assert {float(m.attention.temperature) for m in layers.values()} == {METHODS["odconv"].temperature.end}
    assert METHODS["odconv"].temperature.end == 1.0

    seen = {}
    hooks = [
        m.register_forward_hook(lambda mod, inp, out, name=name: seen.__setitem__(name, (inp[0], out)))
        for name, m in layers.items()
    ]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits = model.eval()(x)
        for h in hooks:
            h.remove()
        assert torch.isfinite(logits).all()
        for name, (inp, out) in seen.items():
            ref = _official_odconv(inp, sd, name, layers[name])
            assert (out - ref).abs().max() / ref.abs().max() < 1e-5, name
            # the same layer at the start-of-anneal T = 30 is far from it: the default is what matters
            if name == "layer2.1.conv1":
                far = _official_odconv(inp, sd, name, layers[name], t=30.0)
                assert (far - ref).abs().max() / ref.abs().max() > 1e-2
        # the source model (built at T = 30) gives the same logits once set to its eval position tau = 0
        torch.testing.assert_close(logits, kwlab.set_temperature(source, 0.0)(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "method,preset", [("kw", "1x"), ("dyconv", "2x"), ("odconv", "2x"), ("condconv", "2x")]
)
def test_load_official_sets_each_methods_eval_temperature(method, preset):
    source = kwlab.create_model("resnet20_cifar", method=method, preset=preset)
    sd = to_official(source)
    model = kwlab.create_model("resnet20_cifar", method=method, preset=preset)
    kwlab.set_temperature(model, 1.0)  # start of the anneal
    load_official(model, sd)
    contract = METHODS[method].temperature
    stored = {
        float(m.temperature)
        for m in model.modules()
        if isinstance(m, kwlab.layers.base.DynamicAttention) and m.temperature_contract.active
    }
    if contract.active:
        assert stored == {contract.end} and kwlab.get_temperature(model) == 0.0
    else:
        assert stored == set() and kwlab.get_temperature(model) is None
    load_official(model, sd, temperature=0.5)  # an explicit anneal position still wins
    if contract.active:
        assert kwlab.get_temperature(model) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="temperature must be 'eval'"):
        load_official(model, sd, temperature="end")
