"""KernelWarehouse core: layers against explicit formulas, models against the official numbers."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import kwlab
from kwlab.layers import KWConv1d, KWConv2d, KWConv3d, KWLinear
from kwlab.layers.attention import init_pattern
from kwlab.methods.official import OfficialCheckpointError, load_official, to_official

torch.set_num_threads(2)


def explicit_kernel(alpha: torch.Tensor, cells: torch.Tensor, layer) -> torch.Tensor:
    """Per-sample kernel by the paper's definition, with plain loops: mixture j = (s*G_o + o)*G_i + i fills
    output block o, input block i, spatial cell s with sum_t alpha[j, t] * E_t."""
    lay = layer.layout
    b = alpha.shape[0]
    oc, ic = lay.cell_out, lay.cell_in
    kc = math.prod(lay.cell_kernel)
    w = torch.zeros(b, lay.out_channels, lay.in_per_group, math.prod(lay.kernel_size), dtype=alpha.dtype)
    for s in range(lay.groups_spatial):
        for o in range(lay.groups_out):
            for i in range(lay.groups_in):
                j = (s * lay.groups_out + o) * lay.groups_in + i
                mixed = torch.einsum("bt,t...->b...", alpha[:, j], cells).reshape(b, oc, ic, kc)
                w[:, o * oc : (o + 1) * oc, i * ic : (i + 1) * ic, s * kc : (s + 1) * kc] = mixed
    return w.reshape(b, lay.out_channels, lay.in_per_group, *lay.kernel_size)


def per_sample(layer, x):
    """Reference forward: the attention's alpha, the explicit kernel, one plain conv per sample."""
    alpha = layer.attention(
        x if not isinstance(layer, KWLinear) else x.reshape(x.shape[0], -1, x.shape[-1]).transpose(1, 2)
    )
    w = explicit_kernel(alpha, layer.warehouse.cells, layer)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[layer.dim]
    outs = []
    for n in range(x.shape[0]):
        if isinstance(layer, KWLinear):
            tok = x[n].reshape(-1, x.shape[-1])
            outs.append(
                (tok @ w[n, :, :, 0].T + (layer.bias if layer.bias is not None else 0)).reshape(
                    *x.shape[1:-1], -1
                )
            )
        else:
            outs.append(
                conv(
                    x[n : n + 1], w[n], layer.bias, layer.stride, layer.padding, layer.dilation, layer.groups
                )[0]
            )
    return torch.stack(outs)


CASES = [
    ("conv1d b=2", lambda: KWConv1d(6, 8, 3, stride=2, padding=1, budget=2), (5, 6, 11)),
    ("conv2d b=1 bias", lambda: KWConv2d(8, 12, 3, padding=1, bias=True), (3, 8, 7, 7)),
    (
        "conv2d groups=2 b=4",
        lambda: KWConv2d(8, 8, 3, padding=2, dilation=2, groups=2, budget=4),
        (4, 8, 6, 6),
    ),
    (
        "conv2d b=1/2 half cells",
        lambda: KWConv2d(8, 8, 3, padding=1, budget=0.5, cell_in=0.5, cell_out=0.5),
        (3, 8, 5, 5),
    ),
    (
        "conv2d b=1/4",
        lambda: KWConv2d(8, 8, 3, stride=2, padding=1, budget=0.25, cell_in=0.5, cell_out=0.5),
        (2, 8, 6, 6),
    ),
    ("conv2d depthwise", lambda: KWConv2d(6, 6, 3, padding=1, groups=6), (3, 6, 5, 5)),
    (
        "conv2d no partition",
        lambda: KWConv2d(4, 6, 3, padding=1, spatial_partition=False, budget=2),
        (3, 4, 5, 5),
    ),
    ("conv3d", lambda: KWConv3d(4, 6, 3, padding=1), (2, 4, 4, 4, 4)),
    ("linear tokens", lambda: KWLinear(10, 6, budget=2), (3, 5, 10)),
    ("linear 2d", lambda: KWLinear(10, 6, cell_in=0.5), (4, 10)),
]


@pytest.mark.parametrize("name,make,shape", CASES, ids=[c[0] for c in CASES])
def test_layer_equals_per_sample_reference(name, make, shape):
    torch.manual_seed(0)
    layer = make().double().train()
    kwlab.set_temperature(layer, 0.3)
    x = torch.randn(*shape, dtype=torch.double, requires_grad=True)
    y = layer(x)
    layer_ref = copy.deepcopy(layer)
    x_ref = x.detach().clone().requires_grad_(True)
    y_ref = per_sample(layer_ref, x_ref)
    torch.testing.assert_close(y, y_ref)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    (y_ref * g).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)
    torch.testing.assert_close(layer.warehouse.cells.grad, layer_ref.warehouse.cells.grad)
    torch.testing.assert_close(layer.attention.fc2.weight.grad, layer_ref.attention.fc2.weight.grad)


def test_caf_matches_formula():
    torch.manual_seed(1)
    layer = KWConv2d(8, 8, 3, padding=1, budget=2).eval()
    att = layer.attention
    x = torch.randn(3, 8, 5, 5)
    tau = 0.25
    kwlab.set_temperature(layer, tau)
    p = x.mean(dim=(2, 3))
    h = F.relu(
        F.batch_norm(
            att.fc1(p),
            att.norm1.running_mean,
            att.norm1.running_var,
            att.norm1.weight,
            att.norm1.bias,
            False,
            0.0,
            att.norm1.eps,
        )
    )
    z = att.fc2(h).reshape(3, att.num_mixtures, att.num_cells + 1)
    z = z / (z.abs().sum(-1, keepdim=True) + 1e-3)
    expected = ((1 - tau) * z + tau * att.init_pattern)[..., :-1]
    torch.testing.assert_close(att(x), expected)
    assert att(x).shape == (3, 9, 18)


def test_init_pattern_follows_official_rule():
    # b >= 1: mixture j points at cell start + j*b
    beta = init_pattern(4, 12, start_cell=4, budget=2)
    assert beta.argmax(1).tolist() == [4, 6, 8, 10]
    # b = 1/2: mixture j owns a new cell iff j % 2 == (j // 2) % 2, else the zero cell (index n)
    beta = init_pattern(8, 5, start_cell=1, budget=0.5)
    expected = []
    cursor = 1
    for j in range(8):
        if j % 2 == (j // 2) % 2:
            expected.append(cursor)
            cursor += 1
        else:
            expected.append(5)
    assert beta.argmax(1).tolist() == expected
    assert beta.sum().item() == 8


def test_other_attention_functions():
    torch.manual_seed(2)
    x = torch.randn(2, 8, 4, 4)
    for fn in ("softmax", "sigmoid", "caf_noinit"):
        layer = KWConv2d(8, 8, 3, padding=1, attention=fn).eval()
        kwlab.set_temperature(layer, 0.5)
        z = layer.attention.logits(x)
        if fn == "softmax":
            expected = torch.softmax(z / (1 + 29 * 0.5), -1)
        elif fn == "sigmoid":
            expected = torch.sigmoid(z / (1 + 29 * 0.5))
        else:
            expected = z / (z.abs().sum(-1, keepdim=True) + 1e-3)
        torch.testing.assert_close(layer.attention(x), expected[..., :-1])


@pytest.mark.parametrize("budget", [1, 2])
def test_tau1_equals_static_net_from_assigned_cells(budget):
    torch.manual_seed(3)
    kw = kwlab.create_model("resnet20_cifar", method="kw", budget=budget, num_classes=10).eval()
    kwlab.set_temperature(kw, 1.0)
    static = kwlab.create_model("resnet20_cifar", num_classes=10).eval()
    sd = {k: v for k, v in kw.state_dict().items() if k in static.state_dict()}
    for name, layer in kwlab.dynamic_layers(kw):
        cells = layer.warehouse.cells
        lay = layer.layout
        owned = cells[
            layer.start_cell + torch.arange(lay.num_mixtures) * budget
        ]  # mixture j -> cell start + j*b
        alpha = torch.zeros(1, lay.num_mixtures, cells.shape[0])
        alpha[
            0, torch.arange(lay.num_mixtures), layer.start_cell + torch.arange(lay.num_mixtures) * budget
        ] = 1
        sd[name + ".weight"] = explicit_kernel(alpha, cells, layer)[0]
        assert owned.shape[0] == lay.num_mixtures
    static.load_state_dict(sd)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(kw(x), static(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("budget", [1, 2])
def test_conversion_reproduces_torchvision_resnet18(budget):
    from kwlab._compat import import_torchvision

    tv = pytest.importorskip("torchvision") if False else import_torchvision()
    torch.manual_seed(4)
    net = tv.models.resnet18(num_classes=10).eval()
    with torch.no_grad():  # non-trivial BN statistics
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = net(x)
    kwlab.kernelwarehouse(net, budget=budget, init="static", sharing="names", classifier=True).eval()
    assert any(True for _ in kwlab.dynamic_layers(net))
    with torch.no_grad():
        out = net(x)
    assert ((out - ref).abs().max() / ref.abs().max()).item() < 1e-5
    keys = set(kwlab.warehouses(net))
    assert {"layer1:conv2d", "layer4:conv2d", "conv1:conv2d", "fc:linear"} <= keys


RESNET_COUNTS = [
    ("resnet18", "static", None, 11.69),
    ("resnet50", "static", None, 25.56),
    ("resnet18", "kw", "1/4x", 4.03),
    ("resnet18", "kw", "1/2x", 7.43),
    ("resnet18", "kw", "1x", 11.93),
    ("resnet18", "kw", "2x", 23.24),
    ("resnet18", "kw", "4x", 45.86),
    ("resnet50", "kw", "1/2x", 17.64),
    ("resnet50", "kw", "1x", 28.05),
    ("resnet50", "kw", "4x", 102.02),
]


@pytest.mark.parametrize("arch,method,preset,millions", RESNET_COUNTS)
def test_parameter_counts_match_official(arch, method, preset, millions):
    model = kwlab.create_model(arch, method=method, preset=preset)
    assert round(kwlab.count_parameters(model) / 1e6, 2) == millions


def test_resnet18_warehouses_match_official_plan():
    model = kwlab.create_model("resnet18", method="kw", preset="1x")
    whs = kwlab.warehouses(model)
    assert [w.num_cells for w in whs.values()] == [56, 47, 47, 27]  # reference §1.6
    assert [w.cell_shape[:2] for w in whs.values()] == [(64, 64), (128, 128), (256, 256), (512, 512)]
    assert model.layer2[0].conv1.warehouse.key == "stage0"  # handover to the previous stage
    assert model.layer2[0].downsample[0].warehouse.key == "stage0"
    assert model.layer2[0].conv2.warehouse.key == "stage1"
    assert isinstance(model.conv1, nn.Conv2d) and isinstance(model.fc, nn.Linear)
    r50 = kwlab.create_model("resnet50", method="kw", preset="1x")
    assert type(r50.layer1[0].conv1) is nn.Conv2d and type(r50.layer1[0].downsample[0]) is nn.Conv2d


def test_sharing_ranges():
    layer = kwlab.create_model("resnet20_cifar", method="kw", sharing="layer")
    stage = kwlab.create_model("resnet20_cifar", method="kw", sharing="stage")
    network = kwlab.create_model("resnet20_cifar", method="kw", sharing="network")
    n_dyn = len(list(kwlab.dynamic_layers(layer)))
    assert len(kwlab.warehouses(layer)) == n_dyn
    assert len(kwlab.warehouses(stage)) == 3
    assert len(kwlab.warehouses(network)) == 1
    # same enabled layers whatever the range
    assert n_dyn == len(list(kwlab.dynamic_layers(network)))
    custom = kwlab.create_model(
        "resnet20_cifar",
        method="kw",
        sharing=lambda n, m: "blocks" if n.startswith("layer") and m.kernel_size == (3, 3) else None,
    )
    assert set(kwlab.warehouses(custom)) == {"blocks"}


def test_gradcheck_tiny_layer():
    torch.manual_seed(5)
    layer = KWConv2d(4, 4, 3, padding=1, budget=2, attention_norm="none").double()
    kwlab.set_temperature(layer, 0.4)
    x = torch.randn(2, 4, 3, 3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda inp: layer(inp), (x,))


def test_fx_trace_and_compile():
    torch.manual_seed(6)
    model = kwlab.create_model("resnet20_cifar", method="kw", num_classes=10).eval()
    kwlab.set_temperature(model, 0.5)
    x = torch.randn(2, 3, 16, 16)
    traced = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        ref = model(x)
        torch.testing.assert_close(traced(x), ref)
    layer = KWConv2d(4, 6, 3, padding=1).eval()
    compiled = torch.compile(layer, backend="aot_eager")
    xx = torch.randn(2, 4, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(compiled(xx), layer(xx))


def test_state_dict_round_trip_and_buffers():
    torch.manual_seed(7)
    a = kwlab.create_model("resnet20_cifar", method="kw", preset="2x", num_classes=10).eval()
    kwlab.set_temperature(a, 0.2)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = kwlab.create_model("resnet20_cifar", method="kw", preset="2x", num_classes=10).eval()
    b.load_state_dict(torch.load(buf, weights_only=True))
    assert kwlab.get_temperature(b) == pytest.approx(0.2)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))
    # shared cells appear once
    cells = [k for k in a.state_dict() if k.endswith("warehouse.cells")]
    assert len(cells) == 3


def test_batch_size_one_train_mode_uses_running_stats():
    torch.manual_seed(8)
    model = kwlab.create_model("resnet20_cifar", method="kw", num_classes=10)
    model.train()
    model(torch.randn(4, 3, 16, 16))  # populate running stats
    att = model.layer1[0].conv1.attention
    before = att.norm1.running_mean.clone()
    x = torch.randn(1, 3, 16, 16)
    alpha_train = att(torch.randn(1, 16, 8, 8))
    torch.testing.assert_close(att.norm1.running_mean, before)  # not updated by a batch of one
    out = model(x)
    assert out.shape == (1, 10) and torch.isfinite(out).all()
    att.eval()
    y = torch.randn(1, 16, 8, 8)
    alpha_eval = att(y)
    att.train()
    torch.testing.assert_close(att(y), alpha_eval)
    assert alpha_train.shape == alpha_eval.shape


def test_official_layout_round_trip_and_rejection(tmp_path):
    torch.manual_seed(9)
    a = kwlab.create_model("resnet18_cifar", method="kw", preset="1/2x", num_classes=10).eval()
    sd = to_official(a)
    assert "warehouse_manager.weights.0" in sd and "warehouse_manager.weights.3" in sd
    assert sd["warehouse_manager.weights.0"].shape == (
        int(0.5 * sum(m.num_mixtures for _, m in kwlab.dynamic_layers(a) if m.warehouse.key == "stage0")),
        32,
        32,
        1,
        1,
    )
    b = kwlab.create_model("resnet18_cifar", method="kw", preset="1/2x", num_classes=10).eval()
    path = tmp_path / "ckpt.pth"
    torch.save({"model": sd, "epoch": 3}, path)
    load_official(b, path, temperature=0.3)
    kwlab.set_temperature(a, 0.3)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))
    other = kwlab.create_model("resnet18_cifar", method="kw", preset="1x", num_classes=10)
    with pytest.raises(OfficialCheckpointError, match="shape differs.*warehouse.cells"):
        load_official(other, sd)
    corrupt = tmp_path / "bad.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(OfficialCheckpointError, match="weights_only"):
        load_official(b, corrupt)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(budget=1.5), "budget must be a whole number"),
        (dict(budget=0.3), "1/q"),
        (dict(cell_in=0.3), "cell_in=0.3 gives cells of"),
        (dict(budget=0.25), "budget=0.25 is not allowed"),
        (dict(attention="relu"), "attention must be one of"),
        (dict(sharing="block"), "sharing must be one of"),
        (dict(sharing=lambda n, m: "all"), "cannot agree"),
        (dict(sharing=lambda n, m: None), "no layer to convert"),
        (dict(budgt=1), "Did you mean 'budget'"),
    ],
)
def test_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        if "sharing" in kwargs and callable(kwargs["sharing"]):
            net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8, 2))
            kwlab.kernelwarehouse(net, sharing=kwargs["sharing"])
        else:
            kwlab.create_model("resnet20_cifar", method="kw", num_classes=10, **kwargs)


def test_clear_errors_names():
    with pytest.raises(ValueError, match="unknown arch 'resnet19'.*Did you mean"):
        kwlab.create_model("resnet19")
    with pytest.raises(ValueError, match="unknown method 'kww'"):
        kwlab.create_model("resnet18", method="kww")
    with pytest.raises(ValueError, match="preset='3x' is not a KW preset"):
        kwlab.create_model("resnet18", method="kw", preset="3x")
    with pytest.raises(ValueError, match="needs a dynamic method"):
        kwlab.create_model("resnet18", preset="1x")
    layer = KWConv2d(4, 4, 3)
    with pytest.raises(ValueError, match=r"expects input of shape \(B, C, H, W\)"):
        layer(torch.randn(4, 5, 5))
    with pytest.raises(ValueError, match="expects 4 input channels"):
        layer(torch.randn(1, 3, 5, 5))


def test_temperature_schedule_matches_official_formula():
    sched = kwlab.TemperatureSchedule(iters_per_epoch=10, epochs=2)
    total = 20
    for step in (0, 5, 19, 20, 50):
        assert sched.at_step(step) == pytest.approx(max(0.0, (total - (step + 1)) / total))
    assert sched(1, 4) == sched.at_step(14)
    dy = kwlab.TemperatureSchedule(iters_per_epoch=10, epochs=1, start=30.0, end=1.0)
    assert dy.at_step(0) == pytest.approx(1 + 29 * 9 / 10) and dy.at_step(100) == 1.0


def test_official_layout_of_mobilenetv2_half_classifier():
    """MobileNetV2 1/2x: the official classifier is Sequential(Dropout, KWLinear(KWConv1d)):
    classifier.1.conv.*"""
    torch.manual_seed(10)
    a = kwlab.create_model("mobilenetv2_050", method="kw", preset="1/2x", num_classes=10).eval()
    sd = to_official(a)
    assert "classifier.1.conv.attention.fc2.weight" in sd and "classifier.1.conv.bias" in sd
    assert not any(k.startswith("classifier.attention") for k in sd)
    b = kwlab.create_model("mobilenetv2_050", method="kw", preset="1/2x", num_classes=10).eval()
    load_official(b, sd, temperature=0.4)
    kwlab.set_temperature(a, 0.4)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))
