"""MobileNetV2 and ConvNeXt-T: parameter counts and KW wiring against the official OSVAI/KernelWarehouse code.

References used here:
* the paper / README parameter counts (millions, 2 decimals);
* exact counts obtained by instantiating the official models (``models/mobilenetv2.py``,
  ``kw_mobilenetv2.py``, ``kw1d2x_mobilenetv2.py``, ``convnext.py``, ``kw_convnext.py`` with the configs of
  ``configs/``; reduction 1/16 where the config leaves it to the model default);
* warehouse lists traced from the official naming code (``Warehouse_Manager.fuse_warehouse_name``);
* cell shapes computed by hand from the layer shapes (gcd rule of ``Warehouse_Manager.store``).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kwlab.layers import KWLinear, set_temperature
from kwlab.layers.kernelwarehouse import _KWConvNd, warehouses
from kwlab.methods.kernelwarehouse import kernelwarehouse
from kwlab.models import create_model, model_entry
from kwlab.models.convnext import ConvNeXt, ConvNeXtBlock, LayerNorm2d, official_tensor_map
from kwlab.models.convnext import official_key_map as convnext_key_map
from kwlab.models.mobilenetv2 import make_divisible, mobilenetv2_kw_rule
from kwlab.models.mobilenetv2 import official_key_map as mbv2_key_map


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def millions(model: nn.Module) -> float:
    return round(n_params(model) / 1e6, 2)


# (arch, preset or None for static, paper/README millions, exact count of the official code)
OFFICIAL_COUNTS = [
    ("mobilenetv2_100", None, 3.50, 3504872),
    ("mobilenetv2_100", "1/2x", 2.65, 2654396),
    ("mobilenetv2_100", "1x", 5.17, 5168146),
    ("mobilenetv2_100", "4x", 11.38, 11379382),
    ("mobilenetv2_050", None, 1.97, 1968680),
    ("mobilenetv2_050", "1/2x", 1.47, 1466888),
    ("mobilenetv2_050", "1x", 2.85, 2854522),
    ("mobilenetv2_050", "4x", 4.65, 4648587),
]


def _build(arch: str, preset: str | None) -> nn.Module:
    return create_model(arch) if preset is None else create_model(arch, method="kw", preset=preset)


@pytest.mark.parametrize("arch,preset,paper,exact", OFFICIAL_COUNTS)
def test_mobilenetv2_param_counts_match_official(arch, preset, paper, exact):
    model = _build(arch, preset)
    assert millions(model) == paper
    assert n_params(model) == exact


# ---------------------------------------------------------------- ConvNeXt (built once: ~4 s each)


def _tiny_convnext() -> ConvNeXt:
    return ConvNeXt(num_classes=5, depths=(1, 1, 2, 1), dims=(8, 16, 32, 64))


@pytest.fixture(scope="module")
def convnext_kw():
    return create_model("convnext_tiny", method="kw", preset="1x")


def test_convnext_param_counts_match_official(convnext_kw):
    static = create_model("convnext_tiny")
    assert millions(static) == 28.59 and n_params(static) == 28589128
    assert millions(convnext_kw) == 39.37 and n_params(convnext_kw) == 39370674


def test_convnext_kw_wiring(convnext_kw):
    kw = convnext_kw
    # official creation order: stagestem_c, stage{0,1,2}_l_c, then per stage dwconv0 / p
    expected = ["stem", "downsample1", "downsample2", "downsample3"]
    for i in range(4):
        expected += [f"stage{i}_dwconv", f"stage{i}_pwconv"]
    whs = warehouses(kw)
    assert list(whs) == expected
    settings = model_entry("convnext_tiny").prepare["kw"](_tiny_convnext(), "1x", dict(sharing="stage"))
    assert settings["warehouse_order"] == expected
    # hand-computed cells: (n, o_c, i_c, 1, 1); n = sum of mixtures at budget 1
    assert tuple(whs["stem"].cells.shape) == (16, 96, 3, 1, 1)  # 4x4 kernel -> 16 mixtures
    assert tuple(whs["downsample1"].cells.shape) == (4, 192, 96, 1, 1)  # 2x2 kernel
    assert tuple(whs["stage0_dwconv"].cells.shape) == (3 * 49, 96, 1, 1, 1)  # 3 blocks x 7x7
    assert tuple(whs["stage0_pwconv"].cells.shape) == (3 * 8, 96, 96, 1, 1)  # 96->384 (4) + 384->96 (4)
    assert tuple(whs["stage2_dwconv"].cells.shape) == (9 * 49, 384, 1, 1, 1)
    kw_layers = [m for m in kw.modules() if isinstance(m, _KWConvNd)]
    assert len(kw_layers) == 1 + 3 + (3 + 3 + 9 + 3) * 3
    assert all(m.bias is not None for m in kw_layers)
    assert all(isinstance(m.attention.norm1, nn.LayerNorm) for m in kw_layers)
    assert all(m.attention.fc1.bias is not None for m in kw_layers)
    assert type(kw.head) is nn.Linear
    # hidden width of the attention = max(floor(I / 16), 16)
    assert kw.stages[3][0].pwconv2.attention.fc1.out_features == 3072 // 16
    assert kw.downsample_layers[0][0].attention.fc1.out_features == 16


def test_convnext_kw_static_init_reproduces_static():
    """The official wiring on a small ConvNeXt: at temperature 1, static-initialised KW = the static net."""
    torch.manual_seed(0)
    static = _tiny_convnext().eval()
    with torch.no_grad():
        for p in static.parameters():  # non-trivial biases, norms and layer scales
            p.add_(0.1 * torch.randn_like(p))
    kw = copy.deepcopy(static)
    entry = model_entry("convnext_tiny")
    settings = entry.prepare["kw"](kw, "1x", dict(entry.presets["kw"]["1x"]))
    # a tiny test net: the depthwise attention outweighs its convs, which the size guard would refuse
    kernelwarehouse(kw, **settings, init="static", max_param_ratio=None).eval()
    assert len(warehouses(kw)) == 12
    set_temperature(kw, 1.0)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(kw(x), static(x), rtol=1e-4, atol=1e-5)


def test_convnext_layernorm2d_matches_channels_first_formula():
    ln = LayerNorm2d(5, eps=1e-6)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    x = torch.randn(2, 5, 3, 4)
    u = x.mean(1, keepdim=True)
    s = (x - u).pow(2).mean(1, keepdim=True)
    ref = ln.weight[:, None, None] * (x - u) / torch.sqrt(s + 1e-6) + ln.bias[:, None, None]
    torch.testing.assert_close(ln(x), ref, rtol=1e-5, atol=1e-5)


def test_convnext_block_residual_and_layer_scale():
    """Block(x) = x + gamma * pwconv2(gelu(pwconv1(norm(dwconv(x))))); gamma = 0 gives the identity."""
    block = ConvNeXtBlock(8, layer_scale_init_value=1e-6)
    assert torch.equal(block.gamma, torch.full((1, 8, 1, 1), 1e-6))
    x = torch.randn(1, 8, 5, 5)
    with torch.no_grad():
        block.gamma.fill_(0.5)
        branch = block.pwconv2(F.gelu(block.pwconv1(block.norm(block.dwconv(x)))))
        torch.testing.assert_close(block(x), x + 0.5 * branch)
        block.gamma.zero_()
        torch.testing.assert_close(block(x), x)


def test_convnext_official_key_and_tensor_maps():
    key = "stages.1.2.pwconv1.attention.fc2.bias"
    assert convnext_key_map(key) == key
    assert convnext_key_map("warehouse_manager.weights.4") == "warehouse_manager.weights.4"
    w = torch.randn(384, 96)
    assert torch.equal(official_tensor_map("stages.0.1.pwconv1.weight", w), w.reshape(384, 96, 1, 1))
    g = torch.randn(96)
    assert torch.equal(official_tensor_map("stages.0.1.gamma", g), g.reshape(1, 96, 1, 1))
    conv_w = torch.randn(384, 96, 1, 1)
    assert official_tensor_map("stages.0.1.pwconv1.weight", conv_w) is conv_w


def test_convnext_drop_path_rates_rise_linearly():
    model = ConvNeXt(num_classes=2, depths=(1, 1, 3, 1), dims=(8, 16, 32, 64), drop_path_rate=0.3)
    rates = [b.drop_path.p if hasattr(b.drop_path, "p") else 0.0 for s in model.stages for b in s]
    assert rates[0] == 0.0  # first block: no DropPath module at all
    torch.testing.assert_close(
        torch.tensor(rates), torch.tensor([0.0, 0.06, 0.12, 0.18, 0.24, 0.3]), rtol=0, atol=1e-6
    )


# ---------------------------------------------------------------- MobileNetV2 wiring


def test_make_divisible_examples():
    assert make_divisible(32 * 0.5) == 16
    assert make_divisible(24 * 0.5) == 16  # 12 rounds up to 16
    assert make_divisible(16 * 0.5) == 8
    assert make_divisible(10) == 16  # 8 would drop more than 10% below 10
    assert make_divisible(1280) == 1280


def test_mobilenetv2_050_widths():
    model = create_model("mobilenetv2_050")
    outs = [model.features[0][0].out_channels]
    outs += [blk.conv[-1].num_features for blk in list(model.features)[1:-1]]
    outs.append(model.features[-1][0].out_channels)
    assert outs == [16, 8, 16, 16, 16, 16, 16, 32, 32, 32, 32, 48, 48, 48, 80, 80, 80, 160, 1280]


def _keys(model: nn.Module) -> dict[str, str]:
    return {n: m.warehouse.key for n, m in model.named_modules() if isinstance(m, _KWConvNd)}


def test_mobilenetv2_1x_wiring():
    model = create_model("mobilenetv2_100", method="kw", preset="1x")
    keys = _keys(model)
    n_convs = (
        1
        + sum(
            len([c for c in b.conv.modules() if isinstance(c, (nn.Conv2d, _KWConvNd))])
            for b in list(model.features)[1:-1]
        )
        + 1
    )
    assert len(keys) == n_convs == 52  # every conv is KW
    assert type(model.classifier) is nn.Linear  # classifier static
    # official fused names stage{s}_layer_{dwconv0,pwconv}, in creation order
    expected = ["stage0_conv0", "stage1_dwconv", "stage1_pwconv"]
    for s in range(2, 7):
        expected += [f"stage{s}_pwconv", f"stage{s}_dwconv"]
    assert list(warehouses(model)) == expected
    settings = model_entry("mobilenetv2_100").prepare["kw"](
        create_model("mobilenetv2_100"), "1x", dict(sharing="stage")
    )
    assert settings["warehouse_order"] == expected
    # handover: the first block of a new KW stage uses the previous stage's warehouses
    assert keys["features.2.conv.0.0"] == keys["features.2.conv.2"] == "stage1_pwconv"
    assert keys["features.2.conv.1.0"] == "stage1_dwconv"
    assert keys["features.3.conv.0.0"] == "stage2_pwconv"
    assert keys["features.11.conv.1.0"] == "stage4_dwconv"  # first 96c block (stage 5) -> stage 4
    assert keys["features.12.conv.1.0"] == "stage5_dwconv"
    assert keys["features.14.conv.1.0"] == "stage5_dwconv"  # first 160c block (stage 6) -> stage 5
    assert keys["features.17.conv.1.0"] == "stage6_dwconv"  # 320c group: stage 6, no handover
    assert keys["features.18.0"] == "stage6_pwconv"  # last 1x1 conv
    # stage-1 depthwise: 32c and 96c 3x3 -> cell (32, 1, 1, 1), mixtures 9 + 27
    assert tuple(warehouses(model)["stage1_dwconv"].cells.shape) == (36, 32, 1, 1, 1)
    # stem 3->32 3x3: cell (32, 3, 1, 1), 9 mixtures
    assert tuple(warehouses(model)["stage0_conv0"].cells.shape) == (9, 32, 3, 1, 1)
    # attention hidden = max(floor(320 / 16), 16) for the last conv
    assert model.features[18][0].attention.fc1.out_features == 20


def test_mobilenetv2_4x_wiring():
    model = create_model("mobilenetv2_100", method="kw", preset="4x")
    keys = _keys(model)
    assert keys["features.2.conv.0.0"] == "stage1_pwconv0"  # expand
    assert keys["features.2.conv.2"] == "stage1_pwconv1"  # project
    assert keys["features.18.0"] == "stage6_pwconv1"  # last conv joins the projections
    whs = warehouses(model)
    assert len(whs) == 1 + 6 * 3
    # stage1_pwconv1: projects 32->16 (features.1) and 96->24 (features.2): gcd out 8, in 32
    # mixtures 2*1 + 3*3 = 11, budget 4 -> 44 cells
    assert tuple(whs["stage1_pwconv1"].cells.shape) == (44, 8, 32, 1, 1)
    # official creation order: stage1's project conv comes before its expand conv (block 0 has t = 1)
    assert list(whs)[:4] == ["stage0_conv0", "stage1_dwconv", "stage1_pwconv1", "stage1_pwconv0"]


def test_mobilenetv2_half_wiring():
    model = create_model("mobilenetv2_100", method="kw", preset="1/2x")
    keys = _keys(model)
    whs = warehouses(model)
    assert list(whs) == [
        "stage0_conv0",
        "stage1_dwconv",
        "stage2_dwconv",
        "stage3_dwconv",
        "stage4_dwconv",
        "stage5_dwconv",
        "stage6_pwconv0",
        "stage6_dwconv",
        "stage6_pwconv1",
        "classifier",
    ]
    # 1x1 convs of blocks in KW stages 1-5 are static (features.1..14), stage 6 and the last conv are KW
    for k in range(1, 15):
        blk = model.features[k]
        pws = [c for c in blk.conv.modules() if isinstance(c, nn.Conv2d) and c.kernel_size == (1, 1)]
        assert pws and all(type(c) is nn.Conv2d for c in pws)
        assert isinstance(blk.conv[-3][0], _KWConvNd)  # depthwise stays KW
    assert keys["features.15.conv.0.0"] == "stage6_pwconv0" and keys["features.18.0"] == "stage6_pwconv1"
    assert isinstance(model.classifier, KWLinear)
    # classifier: cell_in = floor(1280 * 0.025) = 32, cell_out = 1000, 40 mixtures, budget 1/2
    assert tuple(whs["classifier"].cells.shape) == (20, 1000, 32, 1)
    # stage6_pwconv1: 960->160 (x2), 960->320, 320->1280; gcd out 160, in 320; ratios 1/2 -> (80, 160)
    # mixtures 12 + 12 + 24 + 32 = 80, budget 1/2 -> 40
    assert tuple(whs["stage6_pwconv1"].cells.shape) == (40, 80, 160, 1, 1)
    # reduction 1/32: hidden = max(floor(1280 / 32), 16)
    assert model.classifier.attention.fc1.out_features == 40
    assert model.features[1].conv[0][0].attention.fc1.out_features == 16


def test_mobilenetv2_half_with_layer_sharing_drops_special_options():
    model = create_model("mobilenetv2_050", method="kw", preset="1/2x", sharing="layer")
    keys = _keys(model)
    assert len(set(keys.values())) == len(keys) == 52  # one warehouse per layer
    assert type(model.classifier) is nn.Linear


def test_mobilenetv2_2x_count_formula():
    """2x doubles every warehouse: extra params = cells of the 1x warehouses + the wider attention fc2."""
    one = create_model("mobilenetv2_050", method="kw", preset="1x")
    two = create_model("mobilenetv2_050", method="kw", preset="2x")
    extra = sum(w.cells.numel() for w in warehouses(one).values())
    for m in one.modules():
        if isinstance(m, _KWConvNd):
            extra += m.num_mixtures * m.warehouse.num_cells * (m.attention.fc2.in_features + 1)
    assert n_params(two) == n_params(one) + extra


def test_mobilenetv2_kw_static_init_reproduces_static():
    torch.manual_seed(1)
    static = create_model("mobilenetv2_050", num_classes=10).eval()
    entry = model_entry("mobilenetv2_050")
    kw = copy.deepcopy(static)
    settings = entry.prepare["kw"](kw, "4x", dict(entry.presets["kw"]["4x"]))
    # a tiny test net: the depthwise attention outweighs its convs, which the size guard would refuse
    kernelwarehouse(kw, **settings, init="static", max_param_ratio=None).eval()
    set_temperature(kw, 1.0)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(kw(x), static(x), rtol=1e-4, atol=1e-5)


def test_mobilenetv2_residual_only_when_shapes_allow():
    model = create_model("mobilenetv2_050")
    flags = [blk.use_res_connect for blk in list(model.features)[1:-1]]
    # residual exactly in the 2nd+ blocks of each group (the first block changes channels or strides)
    assert flags == [
        False,
        False,
        True,
        False,
        True,
        True,
        False,
        True,
        True,
        True,
        False,
        True,
        True,
        False,
        True,
        True,
        False,
    ]


def test_mobilenetv2_official_key_map():
    assert mbv2_key_map("classifier.1.weight") == "classifier.weight"  # official static
    assert mbv2_key_map("classifier.1.conv.attention.fc2.bias") == "classifier.attention.fc2.bias"  # 1/2x
    assert mbv2_key_map("classifier.1.conv.bias") == "classifier.bias"
    assert mbv2_key_map("classifier.weight") == "classifier.weight"  # official 1x/4x
    assert (
        mbv2_key_map("features.3.conv.1.0.attention.norm1.running_var")
        == "features.3.conv.1.0.attention.norm1.running_var"
    )
    assert mbv2_key_map("warehouse_manager.weights.12") == "warehouse_manager.weights.12"


def test_registry_entries_and_errors():
    assert model_entry("mobilenetv2_100").anneal_span("kw") == 15
    assert model_entry("convnext_tiny").anneal_span("kw") == 20
    assert {"1/2x", "1x", "4x"} <= set(model_entry("mobilenetv2_050").presets_for("kw"))
    assert "1x" in model_entry("convnext_tiny").presets_for("kw")
    with pytest.raises(ValueError, match="preset"):
        create_model("mobilenetv2_100", method="kw", preset="1/4x")
    with pytest.raises(ValueError, match="pointwise"):
        mobilenetv2_kw_rule("features.1.conv.1", nn.Conv2d(4, 4, 1), stages=(0, 1), pointwise="both")
    with pytest.raises(ValueError, match="width_mult"):
        create_model("mobilenetv2_100", width_mult=0.5)
