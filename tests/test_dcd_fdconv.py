"""DCD and FDConv: each layer against a functional forward written from the official formulas, parameter
counts and MACs equal to the official code's, the official checkpoint layouts, FDConv's gating and its
near-identity conversion, and the attention protocol.

The official numbers below were measured by running the official code (liyunsheng13/dcd @ 6a5e27f,
Linwei-Chen/FDConv @ bf7a33d) with ``benchmarks/verify_official_family.py``, which also compares logits
against the official modules themselves; these tests need no checkout.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import kwlab
from kwlab.layers.base import NO_TEMPERATURE
from kwlab.layers.dcd import DCDConv2d, DCDLinear
from kwlab.layers.fdconv import FDConv2d, frequency_bands
from kwlab.methods.official import OfficialCheckpointError, load_official, to_official
from kwlab.utils import count_macs, count_parameters

#: official parameter counts and MACs (kwlab.count_macs at 1x3x224x224, 1000 classes); ResNet-18: the KW and
#: ODConv papers' table lists DCD at 14.70M
DCD_OFFICIAL = {
    "resnet18": (14_703_332, 1_883_045_531),
    "resnet50": (29_835_056, 4_372_631_098),
    "mobilenetv2_100": (5_720_028, 398_388_084),  # fc_squeeze=16, the README's commands
}
#: FDConv ResNet-50 (kernel_num 64, every bottleneck conv): parameters over the static net (README: "+3.6M")
#: and MACs of the 10-class model at 1x3x64x64, both from the official code
FDCONV_R50_INCREMENT = 3_647_120
FDCONV_R50_MACS_64PX = 452_238_000


def _randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter and BatchNorm statistic away from its init, so every attention matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return module.eval()


def _official_keys(layer: nn.Module) -> dict[str, torch.Tensor]:
    """The layer's tensors under the official names (``kwlab.to_official`` on a one-layer model)."""
    return to_official(nn.ModuleDict({"m": layer}))


def _bn(t: dict, name: str, v: torch.Tensor) -> torch.Tensor:
    shape = (1, -1) + (1,) * (v.dim() - 2)
    scale = t[f"{name}.weight"] / torch.sqrt(t[f"{name}.running_var"] + 1e-5)
    return (v - t[f"{name}.running_mean"].view(shape)) * scale.view(shape) + t[f"{name}.bias"].view(shape)


def _hsig(v: torch.Tensor) -> torch.Tensor:
    return torch.clamp(v + 3.0, 0.0, 6.0) / 3.0


# ------------------------------------------------------------------------------------------------------ DCD
def _dcd_reference(x: torch.Tensor, t: dict, p: str, stride: int, padding: int, pool: int | None):
    """Official ``conv_dy``/``conv_basic_dy``/``DYCls`` (eval) from the formula, one sample at a time:
    ``y = Lambda * (W0 x) + P (BN_b(Phi BN_a(Q x)) + BN_a(Q x))``, Phi and Lambda from the descriptor."""
    conv = x.dim() == 4
    outs = []
    for xb in x:
        xb = xb.unsqueeze(0)
        d = (F.adaptive_avg_pool2d(xb, pool).flatten(1) if conv else xb) @ t[f"{p}.fc.0.weight"].T
        d = d * _hsig(d @ t[f"{p}.fc.1.fc.0.weight"].T)
        latent = int(math.isqrt(t[f"{p}.fc_phi.weight"].shape[0]))
        phi = (d @ t[f"{p}.fc_phi.weight"].T).view(latent, latent)
        lam = _hsig(d @ t[f"{p}.fc_scale.weight"].T)
        if conv:
            static = F.conv2d(xb, t[f"{p}.conv.weight"], t.get(f"{p}.conv.bias"), stride, padding)
            z = _bn(t, f"{p}.bn1", F.conv2d(xb, t[f"{p}.q.weight"], None, stride))
            mixed = torch.einsum("lm,bmhw->blhw", phi, z)
            b2 = _bn(t, f"{p}.bn2", mixed.flatten(2)).view_as(z)
            outs.append(lam[:, :, None, None] * static + F.conv2d(b2 + z, t[f"{p}.p.weight"]))
        else:
            static = xb @ t[f"{p}.cls.weight"].T + t[f"{p}.cls.bias"]
            z = _bn(t, f"{p}.bn1", xb @ t[f"{p}.cls_q.weight"].T)
            b2 = _bn(t, f"{p}.bn2", z @ phi.T)
            outs.append(lam * static + (b2 + z) @ t[f"{p}.cls_p.weight"].T)
    return torch.cat(outs)


@pytest.mark.parametrize(
    "cin,cout,k,stride,pool", [(64, 128, 3, 2, 2), (64, 64, 3, 1, 1), (256, 64, 1, 1, 1), (24, 144, 1, 1, 2)]
)
def test_dcd_conv_matches_the_official_formula(cin, cout, k, stride, pool, one_thread):
    layer = _randomise(DCDConv2d(cin, cout, k, stride, k // 2, pool=pool))
    t = _official_keys(layer)
    # the official conv_dy/conv_basic_dy key set: the attention's Linears sit on the layer there
    bn = {f"m.bn{i}.{s}" for i in (1, 2) for s in ("weight", "bias", "running_mean", "running_var")}
    bn |= {"m.bn1.num_batches_tracked", "m.bn2.num_batches_tracked"}
    weights = ("conv", "q", "p", "fc.0", "fc.1.fc.0", "fc_phi", "fc_scale")
    assert set(t) == bn | {f"m.{w}.weight" for w in weights}
    x = torch.randn(3, cin, 9, 7)
    with torch.no_grad():
        y, ref = layer(x), _dcd_reference(x, t, "m", stride, k // 2, pool)
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def test_dcd_classifier_matches_the_official_formula(one_thread):
    layer = _randomise(DCDLinear(512, 10))
    t = _official_keys(layer)
    assert {"m.cls.weight", "m.cls.bias", "m.cls_q.weight", "m.cls_p.weight", "m.fc_phi.weight"} <= set(t)
    x = torch.randn(4, 512)
    with torch.no_grad():
        y, ref = layer(x), _dcd_reference(x, t, "m", 1, 0, None)
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


@pytest.mark.parametrize("arch", sorted(DCD_OFFICIAL))
def test_dcd_official_models_have_the_official_counts_and_macs(arch):
    with torch.device("meta"):
        model = kwlab.create_model(arch, method="dcd")
    assert (count_parameters(model), count_macs(model, (1, 3, 224, 224))) == DCD_OFFICIAL[arch]
    layers = dict(kwlab.layers.dynamic_layers(model))
    # wiring: stem and downsample convs static, classifier dynamic; MobileNetV2: depthwise convs static
    assert not any(n.startswith("conv1") or "downsample" in n for n in layers)
    head = "classifier" if arch.startswith("mobilenet") else "fc"
    assert isinstance(layers.pop(head), DCDLinear)
    expected = {"resnet18": 16, "resnet50": 48, "mobilenetv2_100": 32}[arch]  # MBv2: 16 blocks x 2 1x1 convs
    assert len(layers) == expected and all(isinstance(m, DCDConv2d) for m in layers.values())
    if arch == "resnet18":  # basic blocks: 2x2-pooled descriptor, L = floor(sqrt(4 I))
        assert (layers["layer1.0.conv1"].latent_dim, layers["layer4.1.conv2"].latent_dim) == (16, 45)


def test_dcd_official_checkpoint_layout_loads(tmp_path, one_thread):
    source = kwlab.create_model("resnet20_cifar", method="dcd", widths=(16, 16, 32), num_classes=10)
    _randomise(source, seed=3)
    sd = to_official(source)
    assert {k for k in sd if k.startswith("classifier.")} >= {
        "classifier.0.cls.weight",
        "classifier.0.fc.0.weight",
    }
    assert "layer2.0.conv1.fc_phi.weight" in sd and not any(".attention." in k for k in sd)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = source(x)
    for prefix in ("classifier.0.", "classifier.1."):  # official: classifier.1 when trained with dropout
        renamed = {("module." + k).replace("classifier.0.", prefix): v for k, v in sd.items()}
        path = tmp_path / "dcd.pth"
        torch.save({"state_dict": renamed}, path)
        model = load_official(
            kwlab.create_model("resnet20_cifar", method="dcd", widths=(16, 16, 32), num_classes=10), path
        )
        with torch.no_grad():
            torch.testing.assert_close(model.eval()(x), expected)
    # each layer of the loaded model computes the official formula on the official tensors
    layer = model.layer2[0].conv1
    seen = {}
    handle = layer.register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0]))
    with torch.no_grad():
        model(x)
        handle.remove()
        ref = _dcd_reference(seen["x"], sd, "layer2.0.conv1", 2, 1, 2)
        torch.testing.assert_close(layer(seen["x"]), ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
    other = kwlab.create_model("resnet20_cifar", method="dcd", widths=(16, 32, 32), num_classes=10)
    with pytest.raises(OfficialCheckpointError, match="shape differs"):
        load_official(other, sd)


def test_dcd_converts_a_torchvision_resnet18_into_the_official_model():
    from kwlab._compat import import_torchvision

    tv = import_torchvision()
    with torch.device("meta"):
        model = kwlab.convert(tv.models.resnet18(), "dcd", pool=2, classifier=True)
    layers = dict(kwlab.layers.dynamic_layers(model))
    assert isinstance(layers.pop("fc"), DCDLinear) and len(layers) == 16
    assert not any("downsample" in n or n == "conv1" for n in layers)
    # torchvision's ResNet-18 has the official ResNet_dcd's shapes: the same count (and MACs) as the official
    assert (count_parameters(model), count_macs(model, (1, 3, 224, 224))) == DCD_OFFICIAL["resnet18"]


def test_dcd_mobilenetv2_official_checkpoint_layout_loads(one_thread):
    source = _randomise(kwlab.create_model("mobilenetv2_050", method="dcd", num_classes=10), seed=4)
    sd = to_official(source)
    # official MobileNetV2_dcd names (mobilenetv2_dcd.py): DYModule at conv.0 / conv.6 of an expansion-6
    # block, the first block's project conv at conv.3, the last 1x1 conv at the top level, DYCls at
    # classifier.0 (the benchmark checks the full key set against the official module: equal)
    for key in (
        "features.2.conv.0.conv_q.weight",
        "features.2.conv.0.fc.1.fc.0.weight",
        "features.2.conv.3.weight",
        "features.2.conv.6.fc_phi.weight",
        "features.2.conv.7.running_var",
        "features.1.conv.3.weight",
        "conv.0.weight",
        "classifier.0.cls_p.weight",
    ):
        assert key in sd, key
    assert len(sd) == len(source.state_dict()) - sum(
        k.endswith("attention.temperature") for k in source.state_dict()
    )
    model = load_official(kwlab.create_model("mobilenetv2_050", method="dcd", num_classes=10), sd)
    for m in (source, model):  # calibrated statistics (see the DCD docstring: eval needs trained ones)
        for bn in m.modules():
            if isinstance(bn, nn.modules.batchnorm._BatchNorm):
                bn.momentum = 1.0
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        source.train()(x), model.train()(x)
        torch.testing.assert_close(model.eval()(x), source.eval()(x))


def test_dcd_bad_input():
    with pytest.raises(ValueError, match="padding must keep the output size"):
        DCDConv2d(32, 32, 3, padding=0)
    with pytest.raises(ValueError, match="squeeze must be a whole number >= 1"):
        DCDConv2d(4, 8, 1)  # L = 2, S = max(4, 4) // 16 = 0: too narrow for the official rule
    with pytest.raises(ValueError, match="pool must be 1"):
        DCDConv2d(32, 32, 1, pool=3)
    with pytest.raises(ValueError, match=r"option\(s\) \['kernel_num'\] do not apply to method='dcd'"):
        kwlab.create_model("resnet18", method="dcd", kernel_num=4)
    with pytest.raises(ValueError, match="classifier must be True or False"):
        kwlab.convert(kwlab.create_model("resnet20_cifar"), "dcd", classifier="yes")


# --------------------------------------------------------------------------------------------------- FDConv
def _fbm_reference(x: torch.Tensor, t: dict, p: str) -> torch.Tensor:
    """Official FBM: Chebyshev low-pass masks (cutoff 0.5/f on a 64 x 64 rfft grid, nearest-resized)."""
    h, w = x.shape[-2:]
    grid = (
        torch.stack(torch.meshgrid(torch.fft.fftfreq(64), torch.fft.rfftfreq(64), indexing="ij"), -1)
        .abs()
        .amax(-1)
    )
    spectrum = torch.fft.rfft2(x, norm="ortho")
    out, rest = torch.zeros_like(x), x
    for j, f in enumerate((2, 4, 8)):
        mask = F.interpolate(
            (grid < 0.5 / f + 1e-8).float()[None, None], size=(h, w // 2 + 1), mode="nearest"
        )
        low = torch.fft.irfft2(spectrum * mask[0], s=(h, w), norm="ortho")
        gate = 2 * torch.sigmoid(
            F.conv2d(
                x,
                t[f"{p}.FBM.freq_weight_conv_list.{j}.weight"],
                t[f"{p}.FBM.freq_weight_conv_list.{j}.bias"],
                padding=1,
            )
        )
        out = out + gate * (rest - low)
        rest = low
    return out + rest


def _fdconv_reference(x: torch.Tensor, t: dict, p: str, stride: int, padding: int, kernel_num: int):
    """Official ``FDConv.forward`` (eval, param_ratio 1) from the formulas, one sample at a time, with the
    band sum written as a loop over the bands."""
    o, rows = t[f"{p}.KSM_Global.filter_fc.weight"].shape[0], t[f"{p}.dft_weight"].shape[1]
    i = t[f"{p}.KSM_Global.channel_fc.weight"].shape[0]
    k = rows // o
    bands = frequency_bands(o * k, i * k, kernel_num)
    scale = min(o, i) // 2 * kernel_num
    g = f"{p}.KSM_Global"
    outs = []
    for xb in x:
        xb = xb.unsqueeze(0)
        pooled = xb.mean((2, 3), keepdim=True)
        z = _bn(t, f"{g}.bn", F.conv2d(pooled, t[f"{g}.fc.weight"]))
        h = t[f"{g}.relu.scale"] * F.relu(z) ** 2 + t[f"{g}.relu.bias"]

        def head(name, h=h):
            return F.conv2d(h, t[f"{g}.{name}.weight"], t[f"{g}.{name}.bias"]).flatten()

        band_att = 2 * torch.sigmoid(head("kernel_fc")) / kernel_num
        spectrum = torch.zeros(rows, i * k // 2 + 1, 2)
        for j in range(kernel_num):
            spectrum[bands == j] += scale * band_att[j] * t[f"{p}.dft_weight"][0][bands == j]
        w = torch.fft.irfft2(torch.view_as_complex(spectrum), s=(o * k, i * k), dim=(0, 1))
        w = w.view(o, k, i, k).permute(0, 2, 1, 3)
        if k > 1:
            w = w * (2 * torch.sigmoid(head("spatial_fc"))).view(k, k)
        ln = F.layer_norm(
            pooled.flatten(1), (i,), t[f"{p}.KSM_Local.norm.weight"], t[f"{p}.KSM_Local.norm.bias"]
        )
        pad = (t[f"{p}.KSM_Local.conv.weight"].shape[-1] - 1) // 2
        local = F.conv1d(ln.unsqueeze(1), t[f"{p}.KSM_Local.conv.weight"], padding=pad)  # (1, O*k*k, I)
        w = w * 2 * torch.sigmoid(local[0].view(o, k, k, i).permute(0, 3, 1, 2))
        xin = _fbm_reference(xb, t, p) if k == 3 else xb
        xin = xin * (2 * torch.sigmoid(head("channel_fc"))).view(1, -1, 1, 1)
        y = F.conv2d(xin, w, None, stride, padding) * (2 * torch.sigmoid(head("filter_fc"))).view(1, -1, 1, 1)
        outs.append(y + t[f"{p}.bias"].view(1, -1, 1, 1))
    return torch.cat(outs)


@pytest.mark.parametrize("cin,cout,k,stride,n", [(32, 48, 3, 1, 4), (24, 32, 3, 2, 8), (64, 40, 1, 1, 8)])
def test_fdconv_matches_the_official_formula(cin, cout, k, stride, n, one_thread):
    layer = _randomise(FDConv2d(cin, cout, k, stride, k // 2, bias=True, kernel_num=n))
    with torch.no_grad():  # smaller Fourier weights keep the assembled kernel at a usual scale
        layer.dft_weight.mul_(0.01)
    t = _official_keys(layer)
    official = {"m.dft_weight", "m.bias", "m.KSM_Local.conv.weight", "m.KSM_Local.norm.weight"}
    official |= {f"m.KSM_Global.{h}.weight" for h in ("fc", "channel_fc", "filter_fc", "kernel_fc")}
    assert official <= set(t) and not any(".attention." in key for key in t)
    assert ("m.FBM.freq_weight_conv_list.2.weight" in t) == (k == 3)  # FBM on 3x3 convs only
    x = torch.randn(2, cin, 10, 12)
    with torch.no_grad():
        y, ref = layer(x), _fdconv_reference(x, t, "m", stride, k // 2, n)
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


@pytest.mark.parametrize("rows,cols,n", [(96, 96, 4), (192, 64, 64), (48, 72, 8)])
def test_fdconv_bands_are_disjoint_equal_and_ordered_by_frequency(rows, cols, n):
    bands = frequency_bands(rows, cols, n)
    assert bands.shape == (rows, cols // 2 + 1)
    assert torch.bincount(bands.flatten(), minlength=n).tolist() == [bands.numel() // n] * n
    fh, fw = torch.fft.fftfreq(rows), torch.fft.rfftfreq(cols)
    radius = (fh[:, None] ** 2 + fw[None, :] ** 2).sqrt()
    top = [radius[bands == j].max() for j in range(n)]
    low = [radius[bands == j].min() for j in range(n)]
    assert all(top[j] <= low[j + 1] + 1e-7 for j in range(n - 1))  # band j lies below band j + 1


def test_fdconv_gating_refuses_by_name_and_conversion_keeps_those_convs_static():
    for args, match in (
        ((16, 32, 3), r"min\(in_channels, out_channels\) = 16 <= 16"),
        ((32, 32, 5), "not 1x1 or 3x3"),
        ((32, 32, (1, 3)), "not 1x1 or 3x3"),
    ):
        with pytest.raises(ValueError, match=match):
            FDConv2d(*args)
    with pytest.raises(ValueError, match="groups=2"):
        FDConv2d(32, 32, 3, groups=2)
    with pytest.raises(ValueError, match="kernel_num=64 must divide the 4704"):
        FDConv2d(32, 32, 3)  # 96 x (96 // 2 + 1) coefficients
    model = kwlab.create_model("resnet18_cifar", widths=(16, 32, 64, 64), num_classes=10)
    kwlab.convert(model, "fdconv", kernel_num=4)
    converted = {n for n, _ in kwlab.layers.dynamic_layers(model)}
    # layer1 and layer2.0.conv1 (16 -> 32) are gated out; the stem and the downsample convs stay static
    expected = {f"layer{s}.{b}.conv{c}" for s in (2, 3, 4) for b in (0, 1) for c in (1, 2)}
    assert converted == expected - {"layer2.0.conv1"}
    with pytest.raises(ValueError, match="finds no conv to convert"):
        kwlab.convert(kwlab.create_model("resnet20_cifar", widths=(8, 16, 16)), "fdconv")


@pytest.mark.parametrize("near_identity", [True, False])
def test_fdconv_conversion_reproduces_the_static_model_at_init(near_identity, one_thread):
    torch.manual_seed(0)
    static = kwlab.create_model("resnet18_cifar", widths=(32, 32, 64, 64), num_classes=10).eval()
    model = kwlab.convert(copy.deepcopy(static), "fdconv", kernel_num=8, near_identity=near_identity).eval()
    # the Fourier weight holds the pretrained kernel exactly (all bands at their init weight 1/n)
    layer = model.layer2[1].conv1
    torch.testing.assert_close(layer.kernel(), static.layer2[1].conv1.weight, rtol=0, atol=1e-6)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        a, b = static(x), model(x)
    rel = ((a - b).abs().max() / a.abs().max()).item()
    if near_identity:
        assert rel < 1e-3  # every attention is 1 up to the N(0, 1e-6) head init
    else:  # the official quirk: filter_fc keeps its kaiming init, so the filter attention starts away from 1
        assert rel > 1e-2


def test_fdconv_converted_torchvision_model_computes_the_original_function(one_thread):
    from kwlab._compat import import_torchvision

    tv = import_torchvision()
    torch.manual_seed(0)
    static = tv.models.resnet18(num_classes=10).eval()
    model = kwlab.convert(copy.deepcopy(static), "fdconv")  # official kernel_num 64
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        a, b = static(x), model.eval()(x)
    assert ((a - b).abs().max() / a.abs().max()).item() < 1e-3  # 16 layers of attentions at 1 +- ~1e-5
    assert sum(isinstance(m, FDConv2d) for m in model.modules()) == 16


def test_fdconv_resnet50_has_the_official_increment_and_macs():
    with torch.device("meta"):
        static = kwlab.create_model("resnet50", num_classes=10)
        model = kwlab.create_model("resnet50", method="fdconv", num_classes=10)
    increment = count_parameters(model) - count_parameters(static)
    assert increment == FDCONV_R50_INCREMENT and round(increment / 1e6, 1) == 3.6  # README: +3.6M
    assert count_macs(model, (1, 3, 64, 64)) == FDCONV_R50_MACS_64PX
    assert sum(isinstance(m, FDConv2d) for m in model.modules()) == 48


def test_fdconv_official_checkpoint_layout_loads(tmp_path, one_thread):
    build = lambda n: kwlab.create_model(  # noqa: E731
        "resnet18_cifar", method="fdconv", widths=(32, 32, 64, 64), num_classes=10, kernel_num=n
    )
    source = _randomise(build(8), seed=5)
    sd = to_official(source)
    assert "layer2.1.conv1.KSM_Global.kernel_fc.weight" in sd and "layer2.1.conv1.dft_weight" in sd
    torch.save({"model": sd}, tmp_path / "fd.pth")
    model = load_official(build(8), tmp_path / "fd.pth")
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), source(x))
    with pytest.raises(OfficialCheckpointError, match="kernel_fc"):
        load_official(build(4), sd)  # a checkpoint trained with another band count


# ------------------------------------------------------------------------------------ protocol, temperature
def _small(method: str) -> nn.Module:
    torch.manual_seed(0)
    if method == "dcd":
        return kwlab.create_model("resnet20_cifar", method="dcd", widths=(16, 16, 32), num_classes=10)
    return kwlab.create_model(
        "resnet18_cifar", method="fdconv", widths=(32, 32, 64, 64), num_classes=10, kernel_num=4
    )


def _layer_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    seen = {}
    layers = dict(kwlab.layers.dynamic_layers(model))
    handles = [
        m.register_forward_pre_hook(lambda m, a, n=n: seen.setdefault(n, a[0])) for n, m in layers.items()
    ]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return seen


@pytest.mark.parametrize("method", ["dcd", "fdconv"])
def test_attention_protocol_probe_and_freeze(method, one_thread):
    model = _randomise(_small(method), seed=1)
    x = torch.randn(4, 3, 16, 16)
    layers = dict(kwlab.layers.dynamic_layers(model))
    inputs = _layer_inputs(model, x)
    with torch.no_grad():
        dynamic = {n: layers[n].attention(inputs[n]) for n in layers}
    assert any(not torch.allclose(a[0], a[1]) for a in dynamic.values())  # input-dependent before freezing
    with kwlab.freeze_attention(model, x) as frozen:  # measured through the probe's hooks
        assert set(frozen.alphas) == set(layers)
        for name, layer in layers.items():
            m, n = layer.attention.num_mixtures, layer.attention.num_cells
            assert frozen.alphas[name].shape == (m, n)  # DCD: Phi (L, L); FDConv: band attention (1, n)
            torch.testing.assert_close(frozen.alphas[name], dynamic[name].mean(0))
            with torch.no_grad():
                alpha = layer.attention(inputs[name])
            assert all(torch.equal(a, frozen.alphas[name]) for a in alpha)
    assert all(layer.attention.frozen_alpha is None for layer in layers.values())


@pytest.mark.parametrize("method", ["dcd", "fdconv"])
def test_neither_method_has_a_temperature(method, one_thread):
    assert kwlab.METHODS[method].temperature == NO_TEMPERATURE
    model = _randomise(_small(method), seed=2)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        before = model(x)
        kwlab.set_temperature(model, 0.3)
        torch.testing.assert_close(model(x), before, rtol=0, atol=0)
    assert kwlab.get_temperature(model) is None
