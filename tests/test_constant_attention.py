"""``attention="constant"``: learned, input-independent mixing through the method's own normalisation and
temperature (issue 28 item 2), for KW, DY-Conv, CondConv, ODConv and KernelDNA; DCD and FDConv refuse it.

Every check is against a hand computation: the coefficients by formula from the constants, the layer output
against a static conv whose weight is the mixture computed here, the parameter counts by formula.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import kwlab
from kwlab.experiments.config import ConfigError, RunConfig
from kwlab.experiments.setup import build_model
from kwlab.layers.attention import KWConstantAttention, attention_parameter_count
from kwlab.layers.base import dynamic_layers
from kwlab.layers.condconv import CondConv2d
from kwlab.layers.dyconv import DynamicConv2d
from kwlab.layers.kerneldna import KernelDNAConv2d
from kwlab.layers.kernelwarehouse import KWConv2d
from kwlab.layers.odconv import ODConv2d

torch.set_num_threads(1)

C, OUT = 8, 12


def _x(seed: int, b: int = 3, c: int = C, hw: int = 7) -> torch.Tensor:
    return torch.randn(b, c, hw, hw, generator=torch.Generator().manual_seed(seed))


def _randomise(module: nn.Module, seed: int = 1) -> None:
    """Give every constant a random value (the inits are all 0 / one-hot, which would hide mistakes)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.rsplit(".", 1)[-1].endswith("z"):
                p.copy_(torch.randn(p.shape, generator=gen))


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------------------------ (a) reference outputs
def test_dyconv_constant_is_the_static_conv_of_its_mixture():
    torch.manual_seed(0)
    layer = DynamicConv2d(C, OUT, 3, padding=1, bias=True, num_kernels=4, attention="constant")
    _randomise(layer)
    kwlab.set_temperature(layer, 0.25)
    t = 1 + 29 * 0.25
    alpha = torch.exp(layer.attention.z / t) / torch.exp(layer.attention.z / t).sum()  # softmax by hand
    w = sum(alpha[k] * layer.weight[k] for k in range(4))
    b = sum(alpha[k] * layer.bias[k] for k in range(4))
    x1, x2 = _x(1), _x(2) * 5 + 1
    a1, a2 = layer.attention(x1), layer.attention(x2)
    assert a1.shape == (3, 1, 4)
    assert torch.equal(a1, a2) and torch.equal(a1[0], a1[2])  # no input dependence
    torch.testing.assert_close(a1[0, 0], alpha, rtol=1e-6, atol=1e-7)
    for x in (x1, x2):
        torch.testing.assert_close(layer(x), F.conv2d(x, w, b, padding=1), rtol=1e-5, atol=1e-5)


def test_condconv_constant_is_the_static_conv_of_its_mixture():
    torch.manual_seed(0)
    layer = CondConv2d(C, OUT, 3, padding=1, bias=True, num_experts=3, attention="constant")
    _randomise(layer)
    r = 1 / (1 + torch.exp(-layer.attention.z))  # sigmoid by hand
    w = sum(r[e] * layer.weight[e] for e in range(3))
    b = sum(r[e] * layer.bias[e] for e in range(3))
    x1, x2 = _x(1), _x(2) - 3
    assert torch.equal(layer.attention(x1), layer.attention(x2))
    torch.testing.assert_close(layer.attention(x1)[1, 0], r, rtol=1e-6, atol=1e-7)
    for x in (x1, x2):
        torch.testing.assert_close(layer(x), F.conv2d(x, w, b, padding=1), rtol=1e-5, atol=1e-5)


def test_kerneldna_constant_is_the_static_conv_of_its_gated_kernel():
    torch.manual_seed(0)
    layer = KernelDNAConv2d(C, OUT, 3, padding=1, attention="constant")
    _randomise(layer)
    with torch.no_grad():
        layer.spatial_scale.normal_()
        layer.filter_scale.normal_()
    g = 1 / (1 + torch.exp(-layer.attention.z))  # sigmoid by hand, one gain per input channel
    w = layer.parent_weight * (1 + layer.spatial_scale) * (1 + layer.filter_scale) * g.view(1, -1, 1, 1)
    x1, x2 = _x(1), _x(2) * 2
    assert torch.equal(layer.attention(x1), layer.attention(x2))
    for x in (x1, x2):
        torch.testing.assert_close(layer(x), F.conv2d(x, w, None, padding=1), rtol=1e-5, atol=1e-5)


def _odconv_reference_weight(layer: ODConv2d, t: float) -> torch.Tensor:
    """The static kernel an ODConv with constant attentions computes: every attention folded into it."""
    att = layer.attention
    sig = lambda z: 1 / (1 + torch.exp(-z / t))  # noqa: E731
    kernel = torch.exp(att.kernel_z / t) / torch.exp(att.kernel_z / t).sum()
    w = sum(kernel[i] * layer.weight[i] for i in range(layer.num_kernels))
    w = w * sig(att.spatial_z).view(1, 1, *layer.kernel_size)  # taps
    w = w * sig(att.channel_z).view(1, -1, 1, 1)  # input channels (groups = 1)
    return w * sig(att.filter_z).view(-1, 1, 1, 1)  # output filters


def test_odconv_constant_is_the_static_conv_of_its_four_heads():
    torch.manual_seed(0)
    layer = ODConv2d(C, OUT, 3, padding=1, num_kernels=4, attention="constant")
    _randomise(layer)
    kwlab.set_temperature(layer, 0.1)
    w = _odconv_reference_weight(layer, 1 + 29 * 0.1)
    x1, x2 = _x(1), _x(2) * 3
    h1, h2 = layer.attention.all_attentions(x1), layer.attention.all_attentions(x2)
    for a, b in zip(h1, h2):
        assert torch.equal(a, b)
        assert torch.equal(a[0], a[-1])
    for x in (x1, x2):
        torch.testing.assert_close(layer(x), F.conv2d(x, w, None, padding=1), rtol=1e-5, atol=1e-5)


def test_kw_constant_alpha_by_formula_and_whole_kernel_cells():
    """Whole-kernel cells (no spatial partition, cell ratios 1): the kernel is sum_t alpha_t E_t."""
    torch.manual_seed(0)
    layer = KWConv2d(
        C,
        OUT,
        3,
        padding=1,
        budget=3,
        spatial_partition=False,
        attention="constant",
        attention_init="pattern",
    )
    att = layer.attention
    assert isinstance(att, KWConstantAttention) and att.num_mixtures == 1 and att.num_cells == 3
    _randomise(layer)
    tau = 0.3
    kwlab.set_temperature(layer, tau)
    z = att.z
    zhat = z / (z.abs().sum(-1, keepdim=True) + 1e-3)
    full = (1 - tau) * zhat + tau * att.init_pattern  # (1, 4): three cells and the zero cell
    alpha = full[:, :3]
    x1, x2 = _x(1), _x(2) + 2
    assert torch.equal(att(x1), att(x2))
    torch.testing.assert_close(att(x1)[2], alpha, rtol=1e-6, atol=1e-7)
    cells = layer.warehouse.cells  # (3, OUT, C, 3, 3)
    w = sum(alpha[0, t] * cells[t] for t in range(3))
    for x in (x1, x2):
        torch.testing.assert_close(layer(x), F.conv2d(x, w, None, padding=1), rtol=1e-5, atol=1e-5)


def test_kw_constant_partitioned_cells_match_the_layer_kernel():
    """The default 1x1 cells: every sample gets the same kernel, and the layer is the static conv of it."""
    torch.manual_seed(0)
    layer = KWConv2d(C, OUT, 3, padding=1, budget=2, attention="constant")
    _randomise(layer)
    kwlab.set_temperature(layer, 0.5)
    x1, x2 = _x(1), _x(2) * -2
    k1, k2 = layer.kernel(x1), layer.kernel(x2)
    assert torch.equal(k1[0], k2[1])
    torch.testing.assert_close(layer(x2), F.conv2d(x2, k1[0], None, padding=1), rtol=1e-5, atol=1e-5)


def test_kw_constant_inits():
    """pattern: z = beta, so z^ = beta / (1 + 1e-3); official: all mass on the zero cell (learned term 0 over
    the cells, finite gradient); without a zero cell the official init falls back to the pattern."""
    pattern = KWConv2d(
        C, OUT, 3, padding=1, budget=2, attention="constant", attention_init="pattern"
    ).attention
    torch.testing.assert_close(pattern.z, pattern.init_pattern)
    kwlab.set_temperature(pattern, 0.0)
    torch.testing.assert_close(pattern(_x(0)), pattern.init_pattern[:, :-1].expand(3, -1, -1) / 1.001)
    official = KWConv2d(C, OUT, 3, padding=1, budget=2, attention="constant").attention
    assert torch.equal(official.z[:, :-1], torch.zeros_like(official.z[:, :-1]))
    assert torch.equal(official.z[:, -1], torch.ones(official.num_mixtures))
    kwlab.set_temperature(official, 0.0)
    assert official(_x(0)).abs().max() == 0
    no_zero = KWConv2d(C, OUT, 3, padding=1, budget=2, zero_cell=False, attention="constant").attention
    torch.testing.assert_close(no_zero.z, no_zero.init_pattern)


# ------------------------------------------------------------------------------------ (b) parameter counts
def test_parameter_counts_by_formula():
    k, taps = 4, 9
    dy = DynamicConv2d(C, OUT, 3, num_kernels=k)
    hd = max(int(C * 0.25), 1)
    assert _count(DynamicConv2d(C, OUT, 3, num_kernels=k, attention="constant")) == (
        _count(dy) - (C * hd + hd * k + k) + k
    )
    cc = CondConv2d(C, OUT, 3, num_experts=k)
    assert _count(CondConv2d(C, OUT, 3, num_experts=k, attention="constant")) == _count(cc) - (C * k + k) + k
    od = ODConv2d(C, OUT, 3, num_kernels=k)
    hd = max(int(C / 16), 16)
    head = C * hd + 2 * hd + (hd + 1) * (C + OUT + taps + k)
    assert _count(ODConv2d(C, OUT, 3, num_kernels=k, attention="constant")) == _count(od) - head + (
        C + OUT + taps + k
    )
    # ODConv's skipped heads stay skipped: depthwise (no filter head), 1x1 (no spatial), n = 1 (no kernel)
    dw = ODConv2d(C, C, 3, groups=C, num_kernels=1, attention="constant").attention
    assert dw.filter_z is None and dw.kernel_z is None and _count(dw) == C + taps
    pw = ODConv2d(C, OUT, 1, num_kernels=2, attention="constant").attention
    assert pw.spatial_z is None and _count(pw) == C + OUT + 2
    dna = KernelDNAConv2d(C, OUT, 3, reduction=4)
    hd = max(C // 4, 1)
    dna_head = C * hd + 2 * hd + hd * C + C
    assert _count(KernelDNAConv2d(C, OUT, 3, attention="constant")) == _count(dna) - dna_head + C
    kw = KWConv2d(C, OUT, 3, budget=2)
    m, n = kw.num_mixtures, kw.warehouse.num_cells
    assert _count(kw.attention) == attention_parameter_count(C, m, n, budget=2)
    hidden = 16
    assert _count(kw.attention) == C * hidden + 2 * hidden + (hidden + 1) * m * (n + 1)
    assert _count(KWConv2d(C, OUT, 3, budget=2, attention="constant")) == _count(kw) - _count(
        kw.attention
    ) + m * (n + 1)


@pytest.mark.parametrize(
    ("arch", "method"),
    [
        ("resnet20_cifar", "kw"),
        ("resnet20_cifar", "dyconv"),
        ("resnet20_cifar", "condconv"),
        ("resnet20_cifar", "odconv"),
        ("mobilenetv2_050", "kerneldna"),  # the official KernelDNA model
    ],
)
def test_model_parameters_kernels_unchanged_head_replaced(arch, method):
    """A whole network: the same kernels (warehouse part), only the attention part changes, to the constants'
    size; the KW plan's attention count (by formula) says the same."""
    torch.manual_seed(0)
    dyn = kwlab.create_model(arch, method=method, num_classes=10)
    torch.manual_seed(0)
    con = kwlab.create_model(arch, method=method, num_classes=10, attention="constant")
    bd, bc = kwlab.parameter_breakdown(dyn), kwlab.parameter_breakdown(con)
    for part in ("static", "warehouse", "other"):
        assert bd[part] == bc[part], part
    constants = sum(
        p.numel() for _, layer in dynamic_layers(con) for n, p in layer.attention.named_parameters()
    )
    assert bc["attention"] == constants
    assert all(
        n.endswith("z") for _, layer in dynamic_layers(con) for n, _ in layer.attention.named_parameters()
    )
    assert bc["total"] == bd["total"] - bd["attention"] + constants
    if method == "kw":
        expected = sum(
            layer.num_mixtures * (layer.warehouse.num_cells + 1) for _, layer in dynamic_layers(con)
        )
        assert constants == expected
        # the same warehouses as the dynamic net
        assert [(n, lay.bank) for n, lay in dynamic_layers(dyn)] == [
            (n, lay.bank) for n, lay in dynamic_layers(con)
        ]
        net = kwlab.create_model("resnet20_cifar", method="static", num_classes=10)
        plan = kwlab.plan_kernelwarehouse(net, attention="constant")
        assert plan.totals()["attention"] == expected


# ------------------------------------------------------------------------------------ (c) gradients
@pytest.mark.parametrize(
    "make",
    [
        lambda: DynamicConv2d(C, OUT, 3, padding=1, attention="constant"),
        lambda: CondConv2d(C, OUT, 3, padding=1, attention="constant"),
        lambda: ODConv2d(C, OUT, 3, padding=1, attention="constant"),
        lambda: KernelDNAConv2d(C, OUT, 3, padding=1, attention="constant"),
        lambda: KWConv2d(C, OUT, 3, padding=1, budget=2, attention="constant"),
        lambda: KWConv2d(C, OUT, 3, padding=1, budget=2, attention="constant", attention_init="pattern"),
    ],
)
def test_gradients_reach_the_constants(make):
    torch.manual_seed(0)
    layer = make()
    kwlab.set_temperature(layer, 0.5)  # KW: at tau = 1 the learned term has weight 0
    _randomise(layer)
    (layer(_x(3)) ** 2).mean().backward()
    constants = [(n, p) for n, p in layer.attention.named_parameters()]
    assert constants and all(n.endswith("z") for n, _ in constants)
    for name, p in constants:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


# ------------------------------------------------------------------------------------ (d) temperature
def test_dyconv_temperature_flattens_the_constant_softmax():
    layer = DynamicConv2d(C, OUT, 3, num_kernels=4, attention="constant")
    with torch.no_grad():
        layer.attention.z.copy_(torch.tensor([3.0, 0.0, -1.0, 0.5]))
    z, x = layer.attention.z.detach(), _x(0)
    kwlab.set_temperature(layer, 1.0)  # T = 30
    a30 = layer.attention(x)[0, 0]
    kwlab.set_temperature(layer, 0.0)  # T = 1
    a1 = layer.attention(x)[0, 0]
    torch.testing.assert_close(a30, torch.exp(z / 30) / torch.exp(z / 30).sum())
    torch.testing.assert_close(a1, torch.exp(z) / torch.exp(z).sum())
    assert a30.max() < a1.max() and a30.min() > a1.min()  # flatter at T = 30
    fresh = DynamicConv2d(C, OUT, 3, num_kernels=4, attention="constant")
    torch.testing.assert_close(fresh.attention(x)[0, 0], torch.full((4,), 0.25))  # z = 0: uniform


def test_odconv_temperature_divides_every_constant_head():
    layer = ODConv2d(C, OUT, 3, num_kernels=3, attention="constant")
    _randomise(layer)
    att, x = layer.attention, _x(0)
    for tau in (1.0, 0.0):
        kwlab.set_temperature(layer, tau)
        t = 1 + 29 * tau
        h = att.all_attentions(x)
        torch.testing.assert_close(h.channel[0], torch.sigmoid(att.channel_z / t))
        torch.testing.assert_close(h.filter[0], torch.sigmoid(att.filter_z / t))
        torch.testing.assert_close(h.spatial[0].flatten(), torch.sigmoid(att.spatial_z / t))
        torch.testing.assert_close(h.kernel[0, 0], torch.softmax(att.kernel_z / t, -1))
        torch.testing.assert_close(att(x), h.kernel)


def test_kw_and_condconv_temperature():
    """KW: the blend weight tau as in the dynamic CAF; CondConv has no temperature (left alone)."""
    layer = KWConv2d(C, OUT, 3, budget=2, attention="constant")
    _randomise(layer)
    att, x = layer.attention, _x(0)
    zhat = att.z / (att.z.abs().sum(-1, keepdim=True) + 1e-3)
    for tau in (1.0, 0.6, 0.0):
        kwlab.set_temperature(layer, tau)
        want = ((1 - tau) * zhat + tau * att.init_pattern)[:, :-1]
        torch.testing.assert_close(att(x)[1], want)
    cc = CondConv2d(C, OUT, 3, attention="constant")
    _randomise(cc)
    before = cc.attention(x)
    kwlab.set_temperature(cc, 0.0)
    assert torch.equal(cc.attention(x), before)


# ------------------------------------------------------------------------------------ (e) bad values
@pytest.mark.parametrize("cls", [DynamicConv2d, CondConv2d, ODConv2d, KernelDNAConv2d])
@pytest.mark.parametrize("bad", ["Constant", 1, None, "static"])
def test_family_layers_refuse_bad_values(cls, bad):
    with pytest.raises(ValueError, match=r"attention must be one of \('dynamic', 'constant'\)"):
        cls(C, OUT, 3, attention=bad)


def test_kw_refuses_bad_values():
    for bad in ("Constant", 1, "dynamic"):
        with pytest.raises(ValueError, match="attention must be one of"):
            KWConv2d(C, OUT, 3, attention=bad)
    with pytest.raises(
        ValueError, match=r"attention must be one of \[.*'constant'\] for method='kw'.*got 'Constant'"
    ):
        kwlab.create_model("resnet20_cifar", method="kw", attention="Constant", num_classes=10)


@pytest.mark.parametrize("method", ["dyconv", "condconv", "odconv", "kerneldna"])
def test_front_doors_refuse_bad_values(method):
    net = nn.Sequential(nn.Conv2d(3, C, 3), nn.Conv2d(C, OUT, 3))
    if method == "kerneldna":  # the official models' front door (the conversion is kwlab's pairing)
        with pytest.raises(ValueError, match=r"attention must be one of \['dynamic', 'constant'\]"):
            kwlab.create_model("resnet18", method=method, attention="Constant", num_classes=10)
    allowed = r"attention must be one of \['dynamic', 'constant'\] for method="
    for bad in ("Constant", 1):
        with pytest.raises(ValueError, match=rf"{allowed}'{method}', got {bad!r}"):
            kwlab.convert(net, method, attention=bad)
        with pytest.raises(ValueError, match=rf"{allowed}'{method}' for resnet20_cifar, got {bad!r}"):
            kwlab.create_model("resnet20_cifar", method=method, attention=bad, num_classes=10)
    assert all(isinstance(m, nn.Conv2d) for m in net)  # refused before anything changed
    with pytest.raises(ConfigError, match=rf"{allowed}'{method}', got 'Constant'. Did you mean 'constant'"):
        RunConfig.from_dict({"method": method, "attention": "Constant"})
    with pytest.raises(ConfigError, match="attention=1 has type int"):
        RunConfig.from_dict({"method": method, "attention": 1})


@pytest.mark.parametrize(("method", "why"), [("dcd", "Phi"), ("fdconv", "KSM")])
def test_methods_without_the_control_say_why(method, why):
    with pytest.raises(
        ValueError, match=rf"attention='constant'.*method='{method}'.*{why}.*freeze_attention"
    ):
        kwlab.convert(nn.Sequential(nn.Conv2d(3, 32, 3), nn.Conv2d(32, 32, 3)), method, attention="constant")
    with pytest.raises(
        ConfigError, match=rf"attention='constant' is not a field of method='{method}': .*{why}"
    ):
        RunConfig.from_dict({"method": method, "attention": "constant"})
    assert "no `attention='constant'` yet" in kwlab.METHODS[method].description


# ------------------------------------------------------------------------------------ (f) config round trip
@pytest.mark.parametrize(
    ("method", "values"),
    [
        ("dyconv", {"preset": "2x"}),
        ("condconv", {"preset": "2x"}),
        ("odconv", {"preset": "2x"}),
        ("kw", {"attention_init": "pattern"}),
        ("kerneldna", {"arch": "resnet18"}),
    ],
)
def test_config_round_trip(method, values):
    config = RunConfig.from_dict({"method": method, "attention": "constant", **values})
    again = RunConfig.from_dict(config.to_dict())
    assert again == config and again.training_hash() == config.training_hash()
    assert config.training_hash() != RunConfig.from_dict({"method": method, **values}).training_hash()
    torch.manual_seed(0)
    net = build_model(config, 10)
    torch.manual_seed(0)
    arch = values.pop("arch", "resnet20_cifar")
    direct = kwlab.create_model(arch, method=method, num_classes=10, attention="constant", **values)
    layers = list(dynamic_layers(net))
    assert layers and all(not lay.attention.input_dependent for _, lay in layers)
    assert kwlab.parameter_breakdown(net) == kwlab.parameter_breakdown(direct)
    for (a, pa), (b, pb) in zip(net.state_dict().items(), direct.state_dict().items()):
        assert a == b and torch.equal(pa, pb), a


def test_convert_front_door():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, C, 3), nn.Conv2d(C, OUT, 3), nn.Conv2d(OUT, OUT, 3))
    kwlab.convert(net, "condconv", attention="constant")
    assert isinstance(net[1], CondConv2d) and not net[1].attention.input_dependent
    assert "attention='constant'" in repr(net[1])


def test_dynamic_default_unchanged():
    """attention="dynamic" is the default: the same layer, bit for bit, from the same seed."""
    for cls in (DynamicConv2d, CondConv2d, ODConv2d, KernelDNAConv2d):
        torch.manual_seed(0)
        a = cls(C, OUT, 3)
        torch.manual_seed(0)
        b = cls(C, OUT, 3, attention="dynamic")
        assert a.attention.input_dependent and repr(a) == repr(b)
        for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
            assert ka == kb and torch.equal(va, vb)
    assert RunConfig().training_hash() == RunConfig.from_dict({}).training_hash()


# ------------------------------------------------------------------------------------ instruments
@pytest.mark.parametrize("method", ["kw", "dyconv", "condconv", "odconv", "kerneldna"])
def test_probe_freeze_and_temperature_on_constant_nets(method):
    torch.manual_seed(0)
    extra = {"attention_init": "pattern"} if method == "kw" else {}
    if method == "kerneldna":
        net = kwlab.create_model("resnet20_cifar", num_classes=10)
        kwlab.convert(net, "kerneldna", wiring="pairing", stages="all", attention="constant")
    else:
        net = kwlab.create_model(
            "resnet20_cifar", method=method, num_classes=10, attention="constant", **extra
        )
    for _, layer in dynamic_layers(net):
        _randomise(layer)
    kwlab.set_temperature(net, 0.3)
    assert kwlab.get_temperature(net) in (None, pytest.approx(0.3))
    net.eval()
    x = torch.randn(6, 3, 32, 32)
    with kwlab.Probe(net, keep=6) as probe:
        y = net(x)
    summary = probe.summary()
    assert len(summary) == len(list(dynamic_layers(net)))
    assert (summary["n_samples"] == 6).all()
    assert summary["sample_variation"].abs().max() < 1e-6  # every sample's attention is the same
    if method == "kw":  # the learned term z^ is seen through learned_tap
        assert summary["learned_own_share"].notna().all()
        assert summary["learned_sample_variation"].abs().max() < 1e-6
    with kwlab.freeze_attention(net, x):
        torch.testing.assert_close(net(x), y, rtol=1e-4, atol=1e-5)  # the mean of a constant is itself
    torch.testing.assert_close(net(x), y)


def test_kw_conversion_keeps_the_dynamic_warehouses():
    """A generic conversion (traced stages, split where the attention would outweigh the cells): the
    constant control gets the very warehouses of the dynamic net, although its own attention is tiny."""

    def net():
        torch.manual_seed(0)
        convs = [nn.Conv2d(16, 16, 3, padding=1, bias=False) for _ in range(4)]
        return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), *convs, nn.Flatten(), nn.Linear(16 * 8 * 8, 10))

    x = torch.randn(2, 3, 8, 8)
    opts = dict(max_param_ratio=None, example_input=x, attention_share_warning=None)
    dyn, con = net(), net()
    kwlab.convert(dyn, "kw", **opts)
    kwlab.convert(con, "kw", attention="constant", **opts)
    banks = [(n, lay.bank, lay.warehouse.num_cells) for n, lay in dynamic_layers(dyn)]
    assert len({b for _, b, _ in banks}) > 1  # the rule did split the stage here
    assert banks == [(n, lay.bank, lay.warehouse.num_cells) for n, lay in dynamic_layers(con)]
    constant_plan = kwlab.plan_kernelwarehouse(net(), attention="constant", **opts)
    assert constant_plan.totals()["attention"] == sum(
        lay.num_mixtures * (lay.warehouse.num_cells + 1) for _, lay in dynamic_layers(con)
    )
