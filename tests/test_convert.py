"""Conversion of real architectures (issue 10): parameter breakdown, plan table, guard, stage rules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import kwlab
from kwlab.layers import CondConv2d, KernelDNAConv2d, KWConv2d
from kwlab.methods.kw_plan import check_plan


def _numel(*tensors) -> int:
    return sum(t.numel() for t in tensors if t is not None)


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.conv3(self.conv2(x))
        return self.fc(self.bn3(x).mean((2, 3)))


def test_parameter_breakdown_static_model_by_explicit_count():
    m = Small()
    got = kwlab.parameter_breakdown(m)
    static = _numel(m.conv1.weight, m.conv2.weight, m.conv2.bias, m.conv3.weight, m.fc.weight, m.fc.bias)
    other = _numel(m.bn1.weight, m.bn1.bias, m.bn3.weight, m.bn3.bias)
    assert got == dict(total=static + other, static=static, warehouse=0, attention=0, other=other)
    assert got["total"] == kwlab.count_parameters(m)


def test_parameter_breakdown_kw_model_counts_shared_warehouse_once():
    m = kwlab.kernelwarehouse(Small(), sharing=lambda n, mod: "s" if n in ("conv2", "conv3") else None)
    wh = kwlab.warehouses(m)["s"]
    att = [p for layer in (m.conv2, m.conv3) for p in layer.attention.parameters()]
    got = kwlab.parameter_breakdown(m)
    static = _numel(m.conv1.weight, m.conv2.bias, m.fc.weight, m.fc.bias)
    other = _numel(m.bn1.weight, m.bn1.bias, m.bn3.weight, m.bn3.bias)
    assert got["warehouse"] == wh.cells.numel() == 16 * 16 * 9 * 2
    assert got["attention"] == _numel(*att)
    assert got["static"] == static and got["other"] == other
    assert got["total"] == kwlab.count_parameters(m) == static + other + got["warehouse"] + got["attention"]


def test_parameter_breakdown_family_layers():
    parent = nn.Conv2d(8, 8, 3, padding=1, bias=False)
    child = KernelDNAConv2d(8, 8, 3, padding=1, parent=parent, bias=True)
    cond = CondConv2d(8, 8, 3, padding=1, bias=True, num_experts=4)
    model = nn.ModuleDict(dict(parent=parent, child=child, cond=cond))
    got = kwlab.parameter_breakdown(model)
    assert got["static"] == parent.weight.numel() + child.bias.numel()  # the shared kernel counted once
    bank = _numel(child.spatial_scale, child.filter_scale, cond.weight)
    bank += cond.bias.numel() if cond.bias.dim() > 1 else 0
    assert got["warehouse"] == bank
    assert got["attention"] == _numel(*child.attention.parameters(), *cond.attention.parameters())
    assert sum(got[k] for k in ("static", "warehouse", "attention", "other")) == got["total"]
    assert got["total"] == kwlab.count_parameters(model)
    lone = KWConv2d(16, 16, 3)
    assert kwlab.parameter_breakdown(lone)["warehouse"] == lone.warehouse.cells.numel()


# --------------------------------------------------------------------------- torchvision architectures

TV_MODELS = [
    "resnet18",
    "resnet50",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "convnext_tiny",
    "regnet_y_400mf",
    "shufflenet_v2_x1_0",
    "densenet121",
    "vit_b_16",
]
SIZE = 64


def _tv(name: str, *, depth: int | None = None) -> nn.Module:
    """A torchvision classifier with 10 classes; ``depth``: a ViT-B/16 with that many encoder blocks."""
    from kwlab._compat import import_torchvision

    tv = import_torchvision()
    kwargs = dict(weights=None, num_classes=10)
    if name == "vit_b_16":
        kwargs["image_size"] = SIZE
    torch.manual_seed(0)
    if depth is not None:  # vit_b_16's own settings (torchvision's builder), fewer blocks
        model = tv.models.VisionTransformer(
            image_size=SIZE, patch_size=16, num_layers=depth, num_heads=12, hidden_dim=768, mlp_dim=3072,
            num_classes=10,
        )
    else:
        model = getattr(tv.models, name)(**kwargs)
    if name == "vit_b_16":  # torchvision zero-initialises the head, which would hide every difference
        nn.init.normal_(model.heads.head.weight, std=0.02)
    return model


def _conv_like_names(model: nn.Module) -> set[str]:
    from kwlab.methods.surgery import _CONV_LIKE

    return {n for n, m in model.named_modules() if isinstance(m, _CONV_LIKE)}


def _check_conversion(make, x: torch.Tensor, **options) -> None:
    """The issue-10 bounds for one classifier built by ``make()``: the plan's size is the built model's,
    at most 2x static; tau = 1 reproduces the static outputs; train steps at batch 2 and 1 are finite;
    the fx trace and a state_dict round trip into a fresh conversion give the same outputs."""
    static = make().eval()
    n_static = kwlab.count_parameters(static)
    with torch.no_grad():
        ref = static(x)
    plan = kwlab.plan_kernelwarehouse(static, budget=1, example_input=x, **options)
    # every conv/linear layer is either converted or listed as static with a reason
    assert set(plan.layers) | set(plan.left_static) == _conv_like_names(static)
    assert not set(plan.layers) & set(plan.left_static) and all(plan.left_static.values())
    model = kwlab.kernelwarehouse(static, budget=1, init="static", example_input=x, **options).eval()
    n_kw = kwlab.count_parameters(model)
    assert len(list(kwlab.dynamic_layers(model))) == len(plan.layers) > 0
    assert n_kw == plan.totals()["converted_model"]  # the plan's formula is the built model
    assert n_kw <= 2 * n_static
    with torch.no_grad():
        out = model(x)
    assert ((out - ref).abs().max() / ref.abs().max()).item() < 1e-4  # tau = 1 reproduces the static net
    # a training step, at batch 2 and at batch 1
    model.train()
    for batch in (x, x[:1]):
        model.zero_grad()
        loss = nn.functional.cross_entropy(model(batch), torch.zeros(batch.shape[0], dtype=torch.long))
        loss.backward()
        assert torch.isfinite(loss)
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    graph = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        out = model(x)  # after the steps (batch-norm statistics moved)
        assert torch.equal(graph(x), out)  # eval mode: the same computation, bit for bit
    # a fresh conversion, built on the meta device and left uninitialised: the state_dict must carry it all
    try:
        with torch.device("meta"):
            fresh = make()
    except NotImplementedError:  # a builder that computes with tensors (RegNet's widths) needs real ones
        fresh = make()
    other = kwlab.kernelwarehouse(fresh, budget=1, init="kaiming", example_input=x, **options)
    other.to_empty(device="cpu").eval()
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(other(x), out)


@pytest.mark.parametrize("name", TV_MODELS)
def test_torchvision_model_converts_within_bounds(name):
    torch.manual_seed(1)
    x = torch.randn(2, 3, SIZE, SIZE)
    if name != "vit_b_16":
        _check_conversion(lambda: _tv(name), x)
        return
    # ViT-B/16 at full depth: the size bounds, built on the meta device (no memory, no arithmetic) ...
    with torch.device("meta"):
        full = _tv(name)
    n_static = kwlab.count_parameters(full)
    plan = kwlab.plan_kernelwarehouse(full, budget=1, example_input=x)
    # every block's MLP and the patch embedding (a stem, converted as the official ConvNeXt and MobileNetV2
    # convert theirs); attention's in/out projections and the head static
    assert sorted(plan.layers) == sorted(
        ["conv_proj", *(f"encoder.layers.encoder_layer_{i}.mlp.{j}" for i in range(12) for j in (0, 3))]
    )
    kwlab.kernelwarehouse(full, budget=1, example_input=x)
    assert kwlab.count_parameters(full) == plan.totals()["converted_model"] <= 2 * n_static
    # ... and the numbers with 2 of its 12 (identical) encoder blocks: each KW step on 12 blocks mixes
    # 96-cell warehouse rows for 25 layers, which takes minutes on a CPU
    _check_conversion(lambda: _tv(name, depth=2), x)


@pytest.mark.parametrize("name", TV_MODELS)
def test_torchvision_half_budget_is_smaller_than_static(name):
    static = _tv(name)
    x = torch.zeros(2, 3, SIZE, SIZE)
    plan = kwlab.plan_kernelwarehouse(static, budget=0.5, cell_in=0.5, cell_out=0.5, example_input=x)
    assert plan.totals()["ratio"] < 1
    check_plan(plan)  # accepted by the guard


# --------------------------------------------------------------------------- timm architectures

TIMM_MODELS = {  # name -> create_model options (small inputs; the ViT's MLPs only, its fused qkv static)
    "resnet18": ({}, {}),
    "mobilenetv3_small_100": ({}, {}),
    "efficientnet_b0": ({}, {}),
    "convnext_atto": ({}, {}),
    "deit_tiny_patch16_224": (dict(img_size=SIZE), dict(include="blocks.*.mlp.*")),
}


def _timm():
    """timm through kwlab's guard (``pytest.importorskip`` would bypass it); skip when not installed."""
    from kwlab._compat import import_timm

    try:
        return import_timm()
    except ImportError as err:
        pytest.skip(str(err))


@pytest.mark.parametrize("name", list(TIMM_MODELS))
def test_timm_model_converts_within_bounds(name):
    timm = _timm()
    create, options = TIMM_MODELS[name]

    def make() -> nn.Module:
        torch.manual_seed(0)
        return timm.create_model(name, pretrained=False, num_classes=10, **create)

    torch.manual_seed(1)
    _check_conversion(make, torch.randn(2, 3, SIZE, SIZE), **options)


def test_timm_vit_keeps_qkv_and_head_static():
    timm = _timm()
    with torch.device("meta"):
        model = timm.create_model("deit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=SIZE)
    x = torch.zeros(2, 3, SIZE, SIZE)
    plan = kwlab.plan_kernelwarehouse(model, include="blocks.*.mlp.*", example_input=x)
    assert sorted(plan.layers) == sorted(f"blocks.{i}.mlp.fc{j}" for i in range(12) for j in (1, 2))
    assert plan.left_static["blocks.0.attn.qkv"] == "not matched by include"
    assert plan.left_static["head"] == "not matched by include"


# --------------------------------------------------------------------------- layers left static


class Mixed(nn.Module):
    """Every reason a conv/linear layer stays static, next to two that convert."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.body = nn.Conv2d(16, 16, 3, padding=1)
        self.skip = nn.Conv2d(16, 16, 3, padding=1)
        self.reflect = nn.Conv2d(16, 16, 3, padding=1, padding_mode="reflect")
        self.up = nn.ConvTranspose2d(16, 16, 2, stride=2)
        self.unused = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        x = self.skip(self.body(self.stem(x)))
        x = self.up(self.reflect(x))
        return self.head(x.mean((2, 3)))


def test_unconvertible_and_deselected_layers_are_listed_with_reasons():
    x = torch.randn(2, 3, 8, 8)
    model = Mixed()
    plan = kwlab.plan_kernelwarehouse(model, sharing="layer", exclude="skip", example_input=x)
    assert sorted(plan.layers) == ["body", "stem"]
    why = plan.left_static
    assert set(why) == {"skip", "reflect", "up", "unused", "head"}  # nothing else, nothing without a word
    assert why["skip"] == "matched by exclude"
    assert why["reflect"].startswith("padding_mode='reflect'")
    assert why["up"].startswith("ConvTranspose2d: KW has no counterpart")
    assert why["unused"] == "not called in the traced forward pass"
    assert why["head"].startswith("classifier head")
    plan = kwlab.plan_kernelwarehouse(model, sharing="layer", include=["stem", "up", "head"], example_input=x)
    assert sorted(plan.layers) == ["stem"]
    assert all(plan.left_static[n] == "not matched by include" for n in ("body", "skip", "unused"))
    assert plan.left_static["reflect"].startswith("padding_mode")  # the reason it could never convert
    assert plan.left_static["up"].startswith("ConvTranspose2d")  # asked for, still static, and said so
    assert plan.left_static["head"].startswith("classifier head")
    assert plan.totals()["static_layers"] == 6
    # the converted model: exactly the planned layers changed, the others are the same modules
    before = dict(model.named_modules())
    with torch.no_grad():
        ref = model(x)
    kwlab.kernelwarehouse(model, sharing="layer", exclude="skip", example_input=x).eval()
    for name in ("skip", "reflect", "up", "unused", "head"):
        assert model.get_submodule(name) is before[name]
    assert isinstance(model.stem, KWConv2d) and isinstance(model.body, KWConv2d)
    with torch.no_grad():
        assert ((model.eval()(x) - ref).abs().max() / ref.abs().max()).item() < 1e-4


# --------------------------------------------------------------------------- the guard and bad input


def test_guard_refuses_exploding_plans_fast_and_without_allocating():
    import time
    import tracemalloc

    x = torch.zeros(2, 3, SIZE, SIZE)
    for name, sharing in (("mobilenet_v2", "names"), ("resnet18", "network")):
        model = _tv(name)
        plan = kwlab.plan_kernelwarehouse(model, sharing=sharing, example_input=x)
        assert plan.totals()["ratio"] > 4  # the plan itself explodes ...
        tracemalloc.start()
        t0 = time.perf_counter()
        with pytest.raises(ValueError, match="max_param_ratio=4.0x.*the static one") as err:
            kwlab.kernelwarehouse(model, sharing=sharing, example_input=x)
        elapsed = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert elapsed < 10 and peak < 200 * 2**20  # ... but refusing it is quick and allocates nothing big
        worst = max(plan.warehouse_table(), key=lambda r: r["warehouse_params"] + r["attention_params"])
        assert repr(worst["warehouse"]) in str(err.value) and "exclude" in str(err.value)
        assert not any(True for _ in kwlab.dynamic_layers(model))  # nothing was converted


def test_override_builds_a_large_plan():
    net = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3), nn.Flatten(), nn.Linear(16, 2))
    with pytest.raises(ValueError, match="max_param_ratio"):
        kwlab.kernelwarehouse(net, sharing="layer", max_param_ratio=1.0)
    kwlab.kernelwarehouse(net, sharing="layer", max_param_ratio=None)
    assert len(list(kwlab.dynamic_layers(net))) == 3


def test_memory_budget_bytes_are_the_built_parameters():
    for dtype in (torch.float32, torch.float64):
        model = Small().to(dtype)
        opts = dict(sharing="layer", example_input=torch.zeros(2, 3, 8, 8, dtype=dtype))
        plan = kwlab.plan_kernelwarehouse(model, **opts)
        want = plan.totals()["converted_bytes"]
        assert plan.element_size == dtype.itemsize
        assert want == plan.totals()["converted_model"] * dtype.itemsize
        # the boundary: exactly the planned bytes build, one byte less is refused, naming the size in GB
        match = rf"would take {want / 1e9:.3g} GB.*max_memory_bytes={want - 1:,}"
        with pytest.raises(ValueError, match=match):
            kwlab.kernelwarehouse(Small().to(dtype), max_memory_bytes=want - 1, **opts)
        kwlab.kernelwarehouse(model, max_memory_bytes=want, **opts)
        assert sum(p.numel() * p.element_size() for p in model.parameters()) == want


def test_memory_budget_refuses_a_huge_plan_even_without_the_ratio_limit():
    import os
    import time

    from kwlab.methods.kw_plan import default_memory_budget

    phys = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert default_memory_budget() == default_memory_budget("meta") == phys // 4
    # ResNet-18 with one warehouse for the whole network: 826 G parameters, over 3 TB
    model = _tv("resnet18")
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"would take \d[\d.e+]* GB .*a quarter of the memory of cpu") as err:
        x = torch.zeros(2, 3, 32, 32)
        kwlab.kernelwarehouse(model, sharing="network", max_param_ratio=None, example_input=x)
    assert time.perf_counter() - t0 < 10
    gb = float(str(err.value).split("would take ")[1].split(" GB")[0])
    assert gb > 1000 and "max_memory_bytes" in str(err.value) and "exclude" in str(err.value)
    assert not any(True for _ in kwlab.dynamic_layers(model))
    # a tiny budget refuses a small plan too; None lifts it
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8, 2))
    opts = dict(sharing="layer", classifier=True, max_param_ratio=None, example_input=torch.zeros(2, 3, 3, 3))
    with pytest.raises(ValueError, match="max_memory_bytes=1,000 "):
        kwlab.kernelwarehouse(net, max_memory_bytes=1000, **opts)
    kwlab.kernelwarehouse(net, max_memory_bytes=None, **opts)
    assert len(list(kwlab.dynamic_layers(net))) == 2


@pytest.mark.parametrize("bad", [0, -1, float("inf"), "big", True])
def test_memory_budget_bad_values(bad):
    with pytest.raises(ValueError, match="max_memory_bytes must be a number of bytes > 0, 'auto' or None"):
        kwlab.kernelwarehouse(Small(), sharing="layer", max_memory_bytes=bad)


def test_attention_formula_matches_modules():
    from kwlab.layers.attention import attention_parameter_count

    for kwargs in (
        dict(norm="batch"),
        dict(norm="layer", zero_cell=False),
        dict(norm="none"),
        dict(norm="batch", nonlocal_basis_ratio=0.5, budget=0.5),
    ):
        b = kwargs.pop("budget", 1.0)
        n = 72 if b == 1.0 else 36
        att = kwlab.KWAttention(48, 36, n, budget=b, **kwargs)
        want = sum(p.numel() for p in att.parameters())
        assert attention_parameter_count(48, 36, n, budget=b, **kwargs) == want


def test_plan_table_lists_warehouses_and_static_layers():
    model = _tv("mobilenet_v2")
    x = torch.zeros(2, 3, SIZE, SIZE)
    plan = kwlab.plan_kernelwarehouse(model, example_input=x)
    rows = plan.warehouse_table()
    assert [r["warehouse"] for r in rows] == list(plan.warehouses)
    assert sum(r["layers"] for r in rows) == len(plan.layers)
    assert plan.left_static["classifier.1"].startswith("classifier head")
    # narrow and depthwise convs are converted, as the official MobileNetV2 converts them (issue 22)
    assert set(plan.left_static) == {"classifier.1"}
    assert all(0 < r["attention_share"] < 1 for r in rows)
    t = plan.totals()
    assert t["attention_share"] == pytest.approx(t["attention"] / (t["attention"] + t["warehouse"]))
    # user override of a warehouse, by the key the table shows
    key = rows[0]["warehouse"]
    plan2 = kwlab.plan_kernelwarehouse(model, example_input=x, warehouse_options={key: dict(budget=2)})
    assert plan2.warehouses[key].num_cells == 2 * plan.warehouses[key].num_cells


def test_meta_device_conversion():
    with torch.device("meta"):
        model = Small()
    kwlab.kernelwarehouse(model, sharing="layer", init="static")
    assert all(p.device.type == "meta" for p in model.parameters())
    assert isinstance(model.conv2, KWConv2d)


def test_fx_trace_of_converted_linear():
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16))
    kwlab.kernelwarehouse(net, sharing="layer", classifier=True, example_input=torch.zeros(2, 5, 8)).eval()
    x = torch.randn(3, 5, 8)
    assert torch.equal(torch.fx.symbolic_trace(net)(x), net(x))


def test_empty_batch_returns_empty_tensor():
    for layer, static, x in (
        (KWConv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), torch.randn(0, 8, 5, 5)),
        (kwlab.KWLinear(8, 4), nn.Linear(8, 4), torch.randn(0, 3, 8)),
    ):
        for mode in (True, False):
            layer.train(mode)
            assert layer(x).shape == static(x).shape


@pytest.mark.parametrize(
    "make,kwargs,match",
    [
        (lambda: KWConv2d(0, 8, 3), {}, "in_channels must be a whole number >= 1"),
        (lambda: KWConv2d(8, 8, 3, budget=float("inf")), {}, "budget must be a finite"),
        (lambda: KWConv2d(8, 8, 3, budget=float("nan")), {}, "budget must be a finite"),
        (lambda: KWConv2d(12, 12, 3, cell_in=0.3), {}, "cell_in=0.3 gives cells of 3.6 channels"),
        (lambda: KWConv2d(12, 12, 3, cell_out=0.3), {}, "Allowed cell_out values here: 1/12, 1/6, 1/4"),
    ],
)
def test_layer_bad_values(make, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (
            dict(sharing="layer", warehouse_options={"conv2": dict(budgte=2)}),
            "unknown keys.*allowed keys: budget",
        ),
        (dict(include=["nothing.*"]), "include pattern 'nothing.\\*' matches no conv/linear layer"),
        (dict(exclude="fc2"), "exclude pattern 'fc2' matches no"),
        (dict(example_input=torch.zeros(2, 5, 8, 8)), "example_input of shape \\(2, 5, 8, 8\\)"),
        (dict(sharing=lambda n, m: 3), "keys must be strings"),
        (dict(sharing=lambda n, m, _c=iter(range(99)): str(next(_c))), "different keys"),
        (dict(budget=float("inf")), "budget must be a finite"),
        (dict(cell_in=0.75, sharing="layer"), "cell_in=0.75 gives cells of 2.25 channels"),
        (dict(cell_in=0.75), "conv2: cell_in=0.75 gives cells of 12 channels"),
    ],
)
def test_conversion_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kwlab.kernelwarehouse(Small(), **kwargs)
