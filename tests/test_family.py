"""CondConv, DY-Conv, ODConv, KernelDNA and kwlab.methods.family.convert, against explicit formulas.

Every layer is compared with a plain per-sample convolution (kwlab.ops.per_sample_conv) of a kernel
built here from the layer's parameters by the paper's formula, forward and gradients.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

import kwlab
from kwlab.layers.base import set_temperature
from kwlab.layers.condconv import CondConv2d
from kwlab.layers.dyconv import DynamicConv2d
from kwlab.layers.kerneldna import KernelDNAConv2d
from kwlab.layers.odconv import ODConv2d
from kwlab.methods import family
from kwlab.ops import per_sample_conv

torch.manual_seed(0)
ATOL = 1e-5


# ----------------------------------------------------------------------------------------------- helpers
def _gap(x):
    return x.mean((2, 3))


def _bn_train(h, bn):
    """Training-mode batch norm written out: batch mean and biased variance over the batch."""
    mean = h.mean(0)
    var = h.var(0, unbiased=False)
    return (h - mean) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias


def _input_index(out_channels, in_channels, groups):
    """idx[o, c] = the input channel that kernel entry W[o, c] reads (grouped conv layout)."""
    o = torch.arange(out_channels)[:, None]
    c = torch.arange(in_channels // groups)[None, :]
    return (o // (out_channels // groups)) * (in_channels // groups) + c


def _compare(layer, reference, x, params):
    """Forward values and gradients of ``layer(x)`` vs ``reference(x)`` w.r.t. x and ``params``."""
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    y1 = layer(x1)
    g = torch.randn_like(y1)
    grads1 = torch.autograd.grad(y1, [x1, *params], g)
    y2 = reference(x2)
    grads2 = torch.autograd.grad(y2, [x2, *params], g)
    torch.testing.assert_close(y1, y2, atol=ATOL, rtol=1e-4)
    for a, b in zip(grads1, grads2, strict=False):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=1e-4)


def _tiny_resnet(num_blocks=(2, 2), widths=(8, 16)):
    """A torchvision-shaped ResNet: conv1 stem, layerN.M.conv1/conv2, layerN.0.downsample.0, fc."""
    from kwlab.models.resnet import BasicBlock, ResNet

    return ResNet(BasicBlock, list(num_blocks), widths=widths, num_classes=5, stem="cifar")


def _randomise_bn(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)


# ----------------------------------------------------------------------------------------------- CondConv
@pytest.mark.parametrize("groups,bias", [(1, True), (2, False)])
def test_condconv_matches_formula(groups, bias):
    layer = CondConv2d(4, 6, 3, stride=2, padding=1, dilation=1, groups=groups, bias=bias, num_experts=3)
    x = torch.randn(3, 4, 7, 7)

    def reference(x):
        r = torch.sigmoid(_gap(x) @ layer.attention.fc.weight.T + layer.attention.fc.bias)  # (B, E)
        w = torch.stack([sum(r[b, e] * layer.weight[e] for e in range(3)) for b in range(x.shape[0])])
        bb = None if layer.bias is None else r @ layer.bias
        return per_sample_conv(x, w, bb, 2, 1, 1, groups)

    params = [layer.weight, layer.attention.fc.weight, layer.attention.fc.bias]
    params += [layer.bias] if bias else []
    _compare(layer, reference, x, params)
    assert layer.attention(x).shape == (3, 1, 3)


def _first_kernel_conv(layer) -> nn.Conv2d:
    """A 3 -> 5, 3x3 ``nn.Conv2d`` holding the first kernel (and bias) of a kernel-bank layer."""
    conv = nn.Conv2d(3, 5, 3, padding=1)
    conv.weight.data.copy_(layer.weight[0])
    conv.bias.data.copy_(layer.bias[0])
    return conv


def test_condconv_one_expert_is_scaled_conv():
    layer = CondConv2d(3, 5, 3, padding=1, bias=True, num_experts=1)
    conv = _first_kernel_conv(layer)
    x = torch.randn(2, 3, 6, 6)
    r = layer.attention(x)[:, 0, 0]
    torch.testing.assert_close(layer(x), r[:, None, None, None] * conv(x), atol=ATOL, rtol=1e-4)


# ----------------------------------------------------------------------------------------------- DY-Conv
@pytest.mark.parametrize("groups,bias", [(1, True), (2, False)])
def test_dyconv_matches_formula(groups, bias):
    layer = DynamicConv2d(
        4, 6, (3, 1), stride=(1, 2), padding=(1, 0), groups=groups, bias=bias, num_kernels=4
    )
    set_temperature(layer, 2 / 29)  # anneal position -> T = 1 + 29 * tau = 3
    x = torch.randn(3, 4, 6, 5)
    att = layer.attention

    def reference(x):
        z = F.relu(_gap(x) @ att.fc1.weight.T) @ att.fc2.weight.T + att.fc2.bias
        pi = torch.softmax(z / 3.0, -1)
        w = torch.einsum("bk,koihw->boihw", pi, layer.weight)
        bb = None if layer.bias is None else pi @ layer.bias
        return per_sample_conv(x, w, bb, (1, 2), (1, 0), 1, groups)

    params = [layer.weight, att.fc1.weight, att.fc2.weight, att.fc2.bias] + ([layer.bias] if bias else [])
    _compare(layer, reference, x, params)
    assert att.hidden == 1  # max(int(4 * 0.25), 1)
    torch.testing.assert_close(att(x).sum(-1), torch.ones(3, 1))


def test_dyconv_one_kernel_is_conv_and_frozen_alpha():
    layer = DynamicConv2d(3, 5, 3, padding=1, bias=True, num_kernels=1)
    conv = _first_kernel_conv(layer)
    x = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(layer(x), conv(x), atol=ATOL, rtol=1e-4)
    # frozen attention: the layer becomes the static conv with the fixed mixture
    layer = DynamicConv2d(3, 5, 3, padding=1, num_kernels=3)
    layer.attention.frozen_alpha = torch.tensor([[0.2, 0.0, 0.8]])
    w = 0.2 * layer.weight[0] + 0.8 * layer.weight[2]
    torch.testing.assert_close(layer(x), F.conv2d(x, w, None, 1, 1), atol=ATOL, rtol=1e-4)


# ----------------------------------------------------------------------------------------------- ODConv
@pytest.mark.parametrize(
    "cin,cout,k,groups,n",
    [(8, 6, 3, 1, 4), (8, 8, 3, 8, 2), (8, 6, 3, 2, 3), (8, 6, 1, 1, 1), (8, 6, 1, 1, 2)],
)
def test_odconv_matches_formula(cin, cout, k, groups, n):
    layer = ODConv2d(
        cin, cout, k, stride=1, padding=k // 2, groups=groups, num_kernels=n, reduction=0.25, min_hidden=4
    )
    set_temperature(layer, 1 / 29)  # T = 2
    att = layer.attention
    with torch.no_grad():  # non-trivial BN affine
        att.bn.weight.uniform_(0.5, 1.5)
        att.bn.bias.uniform_(-0.5, 0.5)
    x = torch.randn(4, cin, 5, 5)
    idx = _input_index(cout, cin, groups)

    def head(fc, h):
        return h @ fc.weight.flatten(1).T + fc.bias

    def reference(x):
        h = F.relu(_bn_train(_gap(x) @ att.fc.weight.flatten(1).T, att.bn))  # (B, Hd)
        a_c = torch.sigmoid(head(att.channel_fc, h) / 2)  # (B, I)
        a_f = torch.ones(4, cout) if att.filter_fc is None else torch.sigmoid(head(att.filter_fc, h) / 2)
        a_s = (
            torch.ones(4, k, k)
            if att.spatial_fc is None
            else torch.sigmoid(head(att.spatial_fc, h) / 2).view(4, k, k)
        )
        a_w = torch.ones(4, 1) if att.kernel_fc is None else torch.softmax(head(att.kernel_fc, h) / 2, -1)
        kernels = []
        for b in range(4):
            w = sum(a_w[b, i] * a_s[b] * layer.weight[i] for i in range(n))  # (O, I/g, k, k)
            w = w * a_c[b][idx][:, :, None, None] * a_f[b][:, None, None, None]
            kernels.append(w)
        return per_sample_conv(x, torch.stack(kernels), None, 1, k // 2, 1, groups)

    params = [layer.weight, att.fc.weight, att.bn.weight, att.channel_fc.weight, att.channel_fc.bias]
    params += [m.weight for m in (att.filter_fc, att.spatial_fc, att.kernel_fc) if m is not None]
    _compare(layer, reference, x, params)
    # skipped attentions are tensors of ones with the documented shapes (OSVAI/ODConv issue #13)
    a = att.all_attentions(x)
    assert a.channel.shape == (4, cin) and a.filter.shape == (4, cout) and a.spatial.shape == (4, k, k)
    assert a.kernel.shape == (4, 1, n)
    assert (att.filter_fc is None) == (cin == cout == groups)
    assert (att.spatial_fc is None) == (k == 1) and (att.kernel_fc is None) == (n == 1)
    for t, head_fc in ((a.filter, att.filter_fc), (a.spatial, att.spatial_fc), (a.kernel, att.kernel_fc)):
        if head_fc is None:
            assert torch.equal(t, torch.ones_like(t))
    torch.testing.assert_close(att(x), a.kernel)


def test_odconv_fixed_attentions_reduce_to_conv():
    """Channel/filter/spatial heads forced to 1 and a uniform kernel attention: conv with the mean kernel."""
    layer = ODConv2d(6, 4, 3, padding=1, num_kernels=3).eval()
    with torch.no_grad():
        for fc in (
            layer.attention.channel_fc,
            layer.attention.filter_fc,
            layer.attention.spatial_fc,
            layer.attention.kernel_fc,
        ):
            fc.weight.zero_()
            fc.bias.fill_(1e3 if fc is not layer.attention.kernel_fc else 0.0)
    conv = nn.Conv2d(6, 4, 3, padding=1, bias=False)
    conv.weight.data.copy_(layer.weight.mean(0))
    x = torch.randn(2, 6, 5, 5)
    torch.testing.assert_close(layer(x), conv(x), atol=ATOL, rtol=1e-4)


def _resnet18(device="meta"):
    from kwlab.models.resnet import BasicBlock, ResNet

    with torch.device(device):
        return ResNet(BasicBlock, [2, 2, 2, 2], num_classes=1000)


def _count(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("preset,expected", [("1x", 11.94), ("4x", 44.90)])
def test_odconv_resnet18_param_counts(preset, expected):
    """OSVAI/ODConv README: ResNet18 + ODConv 1x 11.94M, 4x 44.90M."""
    model = kwlab.convert(_resnet18(), "odconv", preset=preset)
    assert round(_count(model) / 1e6, 2) == expected
    assert isinstance(model.conv1, nn.Conv2d) and not isinstance(model.conv1, ODConv2d)
    assert type(model.layer2[0].downsample[0]) is nn.Conv2d
    assert isinstance(model.layer1[0].conv1, ODConv2d) and isinstance(model.layer4[1].conv2, ODConv2d)


@pytest.mark.parametrize(
    "arch,preset,expected",
    [
        ("resnet50", "1x", 28.64),
        ("resnet50", "4x", 90.67),
        ("mobilenetv2_100", "1x", 4.94),
        ("mobilenetv2_100", "4x", 11.51),
        ("mobilenetv2_050", "4x", 4.44),
    ],
)
def test_odconv_create_model_param_counts(arch, preset, expected):
    """OSVAI/ODConv README numbers through kwlab.create_model(arch, method="odconv", preset=...)."""
    import kwlab

    with torch.device("meta"):
        model = kwlab.create_model(arch, method="odconv", preset=preset)
    assert round(_count(model) / 1e6, 2) == expected


# ----------------------------------------------------------------------------------------------- KernelDNA
@pytest.mark.parametrize("k,groups", [(3, 1), (3, 2), (1, 1)])
def test_kerneldna_matches_formula(k, groups):
    parent = nn.Conv2d(8, 6, k, padding=k // 2, groups=groups, bias=False)
    layer = KernelDNAConv2d(8, 6, k, stride=2, padding=k // 2, groups=groups, bias=True, parent=parent)
    assert layer.parent_weight is parent.weight
    assert (layer.spatial_scale is None) == (k == 1)
    with torch.no_grad():
        if layer.spatial_scale is not None:
            layer.spatial_scale.uniform_(-0.5, 0.5)
        layer.filter_scale.uniform_(-0.5, 0.5)
    att = layer.attention
    x = torch.randn(3, 8, 7, 7)
    idx = _input_index(6, 8, groups)

    def reference(x):
        h = F.relu(_bn_train(_gap(x) @ att.fc1.weight.flatten(1).T, att.bn))
        g = torch.sigmoid(h @ att.fc2.weight.flatten(1).T + att.fc2.bias)  # (B, I)
        w = parent.weight * layer.filter_scale.add(1)
        if layer.spatial_scale is not None:
            w = w * layer.spatial_scale.add(1)
        kernels = torch.stack([w * g[b][idx][:, :, None, None] for b in range(3)])
        return per_sample_conv(x, kernels, layer.bias, 2, k // 2, 1, groups)

    params = [parent.weight, layer.filter_scale, layer.bias, att.fc1.weight, att.fc2.weight, att.fc2.bias]
    params += [layer.spatial_scale] if layer.spatial_scale is not None else []
    _compare(layer, reference, x, params)
    assert att(x).shape == (3, 1, 8)


def test_kerneldna_bad_parent():
    with pytest.raises(ValueError, match="parent"):
        KernelDNAConv2d(8, 6, 3, parent=nn.Conv2d(8, 6, 1))


# ----------------------------------------------------------------------------------------------- conversion
def test_convert_dyconv_reproduces_static_model():
    model = _tiny_resnet()
    _randomise_bn(model)
    model.eval()
    x = torch.randn(2, 3, 12, 12)
    expected = model(x)
    converted = family.convert(copy.deepcopy(model), "dyconv", num_kernels=3)
    # wiring: stem static, downsample converted
    assert type(converted.conv1) is nn.Conv2d
    assert isinstance(converted.layer2[0].downsample[0], DynamicConv2d)
    assert converted.layer2[0].downsample[0].bank == "layer2.0.downsample.0"
    # random (non-uniform) attention: still the static output
    for m in converted.modules():
        if isinstance(m, DynamicConv2d):
            with torch.no_grad():
                m.attention.fc2.weight.normal_(0, 3.0)
    set_temperature(converted, 1.0)
    torch.testing.assert_close(converted(x), expected, atol=1e-4, rtol=1e-4)


def test_convert_condconv_and_odconv_layer_rules():
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=True)
    x = torch.randn(2, 4, 5, 5)
    cc = kwlab.convert(copy.deepcopy(conv), "condconv", preset="4x")
    assert cc.num_experts == 4
    r = cc.attention(x)[:, 0].sum(-1)
    torch.testing.assert_close(cc(x), r[:, None, None, None] * conv(x), atol=ATOL, rtol=1e-4)
    od = family.convert(copy.deepcopy(conv), "odconv").eval()
    with torch.no_grad():
        for fc in (od.attention.channel_fc, od.attention.filter_fc, od.attention.spatial_fc):
            fc.weight.zero_()
            fc.bias.fill_(1e3)
    torch.testing.assert_close(od(x), conv(x), atol=ATOL, rtol=1e-4)
    # wiring on a ResNet: stem and downsample static, all block convs converted
    model = family.convert(_tiny_resnet(), "condconv", exclude="layer2.1")
    kinds = {n: type(m).__name__ for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, CondConv2d))}
    assert kinds["conv1"] == "Conv2d" and kinds["layer2.0.downsample.0"] == "Conv2d"
    assert kinds["layer1.0.conv1"] == "CondConv2d" and kinds["layer2.1.conv2"] == "Conv2d"
    assert model.layer1[0].conv1.num_experts == 8
    # a second conversion never reaches into dynamic layers (ODConv's attention is made of 1x1 convs)
    od_model = family.convert(_tiny_resnet(), "odconv")
    before = {n for n, m in od_model.named_modules() if isinstance(m, nn.Conv2d)}
    family.convert(od_model, "dyconv")
    assert isinstance(od_model.layer1[0].conv1.attention.fc, nn.Conv2d)
    assert family.conversion_plan(od_model, "dyconv") == []
    assert {n for n, m in od_model.named_modules() if isinstance(m, DynamicConv2d)} == {
        "layer2.0.downsample.0"
    } and len(before) > 1


def test_convert_kerneldna_pairs_and_reproduces():
    model = _tiny_resnet(num_blocks=(2, 3))
    _randomise_bn(model)
    with torch.no_grad():  # give later blocks their future parents' kernels, so sharing changes nothing
        for blk in list(model.layer1)[1:]:
            blk.conv1.weight.copy_(model.layer1[0].conv1.weight)  # layer1.0.conv1 is 8 -> 8 too
            blk.conv2.weight.copy_(model.layer1[0].conv2.weight)
        for blk in list(model.layer2)[1:]:
            blk.conv1.weight.copy_(model.layer2[0].conv2.weight)  # layer2.0.conv1 is 8 -> 16: no match
            blk.conv2.weight.copy_(model.layer2[0].conv2.weight)
    model.eval()
    x = torch.randn(2, 3, 10, 10)
    expected = model(x)
    converted = family.convert(copy.deepcopy(model), "kerneldna")
    pairs = {n: m.parent_name for n, m in converted.named_modules() if isinstance(m, KernelDNAConv2d)}
    assert pairs == {
        "layer1.1.conv1": "layer1.0.conv1",
        "layer1.1.conv2": "layer1.0.conv2",
        "layer2.1.conv1": "layer2.0.conv2",
        "layer2.1.conv2": "layer2.0.conv2",
        "layer2.2.conv1": "layer2.0.conv2",
        "layer2.2.conv2": "layer2.0.conv2",
    }
    assert converted.layer2[2].conv1.parent_weight is converted.layer2[0].conv2.weight
    assert converted.layer2[2].conv1.stride == (1, 1)
    for m in converted.modules():  # gate frozen at 1: children are exactly their parents
        if isinstance(m, KernelDNAConv2d):
            m.attention.frozen_alpha = torch.ones(1, m.in_channels)
    torch.testing.assert_close(converted(x), expected, atol=1e-4, rtol=1e-4)
    # the shared kernel is counted once
    saved = sum(m.parent_weight.numel() for m in converted.modules() if isinstance(m, KernelDNAConv2d))
    added = sum(
        p.numel()
        for m in converted.modules()
        if isinstance(m, KernelDNAConv2d)
        for n, p in m.named_parameters()
        if n != "parent_weight"
    )
    assert _count(converted) == _count(model) - saved + added
    with pytest.raises(ValueError, match="stages"):
        family.convert(copy.deepcopy(model), "kerneldna", stages=["layer9"])


def test_convert_bad_input():
    with pytest.raises(ValueError, match="method must be one of"):
        family.convert(_tiny_resnet(), "kw2")
    with pytest.raises(ValueError, match="preset"):
        kwlab.convert(_tiny_resnet(), "kerneldna", preset="4x")
    with pytest.raises(ValueError, match="include"):
        family.convert(_tiny_resnet(), "dyconv", include=3)
    with pytest.raises(ValueError, match="num_experts"):
        CondConv2d(4, 4, 3, num_experts=0)
    with pytest.raises(ValueError, match="groups"):
        ODConv2d(4, 6, 3, groups=4)


def test_methods_table_schedules():
    od = kwlab.METHODS["odconv"]
    s = od.schedule(100)
    assert s.total_steps == 1000  # the official 10 epochs
    assert s.at_step(-1) == pytest.approx(1.0) and s.at_step(999) == pytest.approx(0.0)
    # the anneal position maps to ODConv's divisor: 30 at the start, 1 at the end, linear between
    assert od.temperature.value(s.at_step(-1)) == pytest.approx(30.0)
    assert od.temperature.value(s.at_step(499)) == pytest.approx(1 + 29 * 0.5)
    assert od.temperature.value(s.at_step(999)) == pytest.approx(1.0)
    assert kwlab.METHODS["condconv"].schedule(100) is None


# ----------------------------------------------------------------------------------------------- batch 1, fx
def _all_layers():
    return [
        CondConv2d(6, 8, 3, padding=1),
        DynamicConv2d(6, 8, 3, padding=1, stride=2),
        ODConv2d(6, 8, 3, padding=1, num_kernels=2),
        ODConv2d(6, 8, 1, num_kernels=1),
        KernelDNAConv2d(6, 8, 3, padding=1),
    ]


@pytest.mark.parametrize("layer", _all_layers(), ids=lambda m: type(m).__name__)
def test_batch_one_train_mode_uses_running_stats(layer):
    """Batch 1 in train mode works, equals eval mode (BN falls back to running stats), stats untouched."""
    x = torch.randn(1, 6, 5, 5, requires_grad=True)
    state = copy.deepcopy(layer.state_dict())
    layer.train()
    y = layer(x)
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for k, v in layer.state_dict().items():
        if "num_batches_tracked" not in k:
            assert torch.equal(v, state[k]), k
    torch.testing.assert_close(y, layer.eval()(x), atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("layer", _all_layers(), ids=lambda m: type(m).__name__)
def test_fx_trace(layer):
    layer.eval()
    traced = torch.fx.symbolic_trace(layer)
    for b in (1, 3):
        x = torch.randn(b, 6, 5, 5)
        torch.testing.assert_close(traced(x), layer(x), atol=ATOL, rtol=1e-4)


def test_fx_trace_converted_resnet():
    model = family.convert(_tiny_resnet(), "odconv").eval()
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(traced(x), model(x), atol=ATOL, rtol=1e-4)
