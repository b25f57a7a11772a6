"""The official KernelDNA models (haiduo/KernelDNA @ a8cb91a): sizes, sharing, init, official-layout interop.

The expected numbers come from building the official models (reference kerneldna.md, section 1.2). The
official-layout checks use independent functional forwards written from the upstream formulas, evaluated
directly on official-layout tensors.
"""

from __future__ import annotations

import collections

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import kwlab
from kwlab.layers.kerneldna import KernelDNAConv2d
from kwlab.methods.official import OfficialCheckpointError, load_official, to_official
from kwlab.utils import count_macs, count_parameters

ARCHS = ("resnet18", "resnet50", "mobilenetv2_100", "mobilenetv2_050")
#: official params and GMACs at 1000 classes, 224x224 (built from the upstream code)
OFFICIAL = {
    "resnet18": (9_240_798, 2.277),
    "resnet50": (22_778_060, 4.308),
    "mobilenetv2_100": (3_136_840, 0.301),
    "mobilenetv2_050": (1_878_232, 0.097),
}
#: keys of the official state_dicts (reference section 1.5)
OFFICIAL_KEYS = {"resnet18": 192, "resnet50": 370, "mobilenetv2_100": 392, "mobilenetv2_050": 392}


def _kdna(arch: str, num_classes: int = 10) -> nn.Module:
    return kwlab.create_model(arch, method="kerneldna", num_classes=num_classes)


def _randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter and BN statistic random (S and F non-zero), so a wrong key map cannot hide."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.3 if name.endswith(("_scale", ".bias")) else 0.05
            p.copy_(torch.randn(p.shape, generator=g) * scale + (1.0 if name.endswith("bn.weight") else 0.0))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


# ------------------------------------------------------------------------------------------- sizes
@pytest.mark.parametrize("arch", ARCHS)
def test_params_and_macs_are_official(arch):
    params, gmacs = OFFICIAL[arch]
    model = kwlab.create_model(arch, method="kerneldna")
    assert count_parameters(model) == params
    assert sum(p.numel() for p in model.parameters()) == params  # a shared kernel is listed once
    model = model.to("meta")
    assert round(count_macs(model, (1, 3, 224, 224)) / 1e9, 3) == gmacs


def test_pairing_is_a_named_kwlab_variant():
    """wiring="pairing" keeps kwlab's old heuristic (6,122,828 params for ResNet18, reference 1.2)."""
    model = kwlab.create_model("resnet18", method="kerneldna", wiring="pairing")
    assert count_parameters(model) == 6_122_828
    assert model.kwlab_config["wiring"] == "pairing"


# ------------------------------------------------------------------------------------------- sharing
def _kernel_uses(model: nn.Module, x: torch.Tensor) -> dict[int, int]:
    """How many convolutions in one forward draw on each kernel Parameter (parent conv or child)."""
    uses: collections.Counter[int] = collections.Counter()
    hooks = []
    for m in model.modules():
        if isinstance(m, KernelDNAConv2d):
            w = m.parent_weight
        elif isinstance(m, nn.Conv2d):
            w = m.weight
        else:
            continue
        hooks.append(m.register_forward_hook(lambda mod, i, o, w=w: uses.update([id(w)])))
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return uses


@pytest.mark.parametrize(
    "arch,expected",
    [
        (
            "resnet18",
            {
                f"{s}.{c}": n
                for s in ("layer3", "layer4")
                for c, n in (("conv1", 1), ("conv2", 3), ("conv3", 2))
            },
        ),
        (
            "resnet50",
            {
                **{f"layer3.parents.{i}.layers.conv2": 2 for i in range(3)},
                "layer3.block0.layers.conv2": 1,
                "layer4.last_block.layers.conv2": 2,
                "layer4.block0.layers.conv2": 1,
            },
        ),
        (
            "mobilenetv2_050",
            {
                f"features.{k}.last_block.layers.{pw}": 1 + n
                for k, n in ((6, 1), (10, 2), (13, 1), (16, 1))
                for pw in ("pw1", "pw2")
            },
        ),
    ],
)
def test_parent_kernel_use_counts(arch, expected):
    model = _kdna(arch).eval()
    uses = _kernel_uses(model, torch.randn(1, 3, 32, 32))
    modules = dict(model.named_modules())
    assert {name: uses[id(modules[name].weight)] for name in expected} == expected
    # every child's kernel is one of the model's own parameters, saved once (under the parent)
    params = {id(p) for p in model.parameters()}
    keys = model.state_dict().keys()
    for name, m in model.named_modules():
        if isinstance(m, KernelDNAConv2d):
            assert id(m.parent_weight) in params and f"{name}.parent_weight" not in keys


def test_shared_kernel_loads_through_the_parent():
    a, b = _randomise(_kdna("resnet18")), _kdna("resnet18")
    b.load_state_dict(a.state_dict())  # strict: no parent_weight keys asked for
    assert torch.equal(b.layer3.kids[1].parent_weight, a.layer3.conv2.weight)
    assert b.layer3.kids[1].parent_weight is b.layer3.conv2.weight


@pytest.mark.parametrize("arch", ARCHS)
def test_every_child_equals_its_parent_at_init(arch):
    model = _kdna(arch).eval()
    children = [m for m in model.modules() if isinstance(m, KernelDNAConv2d)]
    assert children
    parents = {id(m.weight): m for m in model.modules() if isinstance(m, nn.Conv2d)}
    for child in children:
        assert torch.equal(child.kernel(), child.parent_weight)
        parent = parents[id(child.parent_weight)]
        x = torch.randn(2, child.in_channels, 5, 5)
        child.attention.frozen_alpha = torch.ones(1, child.in_channels)  # gate at 1
        torch.testing.assert_close(
            child(x), F.conv2d(x, parent.weight, None, 1, parent.padding), rtol=0, atol=0
        )
        child.attention.frozen_alpha = None


def test_official_init_per_arch():
    r18 = _kdna("resnet18")
    fc2 = r18.layer3.kids[0].attention.fc2
    bound = 1 / (fc2.in_channels**0.5)  # PyTorch default bias init kept (official R18)
    assert fc2.bias.abs().max() <= bound and fc2.bias.abs().max() > 0
    # kaiming-normal fan_out: std sqrt(2 / (9 * 256))
    assert abs(r18.layer3.conv2.weight.std().item() / (2 / (9 * 256)) ** 0.5 - 1) < 0.05
    r50 = _kdna("resnet50")  # PyTorch default everywhere in layer3/4: kaiming-uniform a=sqrt(5)
    w = r50.layer3.parents[0].layers.conv2.weight
    assert (
        w.abs().max() <= 1 / (9 * 256) ** 0.5 and abs(w.std().item() / (1 / (3 * 9 * 256)) ** 0.5 - 1) < 0.05
    )
    mb = _kdna("mobilenetv2_100")
    fc = mb.features[6].blocks[0].pw2.attention.fc2
    assert torch.count_nonzero(fc.bias) == 0
    for m in (r18, r50, mb):
        assert all(
            torch.count_nonzero(c.filter_scale) == 0 for c in m.modules() if isinstance(c, KernelDNAConv2d)
        )


# ------------------------------------------------------------------------------------------- training
@pytest.mark.parametrize("arch", ["resnet18", "mobilenetv2_050"])
def test_batch_one_training_step(arch):
    model = _kdna(arch).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(1, 3, 64, 64), torch.tensor([3])  # 2x2 maps in layer4: its plain BNs can train
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    child = next(m for m in model.modules() if isinstance(m, KernelDNAConv2d))
    assert torch.isfinite(loss) and child.filter_scale.grad is not None
    assert torch.isfinite(child.filter_scale.grad).all() and child.filter_scale.grad.abs().sum() > 0
    opt.step()
    assert child.filter_scale.abs().sum() > 0


def test_probe_freeze_and_sweep_checks(tmp_path):
    model = _randomise(_kdna("mobilenetv2_050"))
    x = torch.randn(4, 3, 32, 32)
    with kwlab.Probe(model) as probe:
        model(x)
    children = [n for n, m in model.named_modules() if isinstance(m, KernelDNAConv2d)]
    assert probe.layers == children
    first = model.get_submodule(children[0])
    seen = []
    handle = first.register_forward_pre_hook(lambda m, inp: seen.append(inp[0]))
    expected = model(x)
    handle.remove()
    with kwlab.freeze_attention(model, x):
        for n in children:
            assert model.get_submodule(n).attention.frozen_alpha.shape == (
                1,
                model.get_submodule(n).in_channels,
            )
        # the frozen gate is the batch mean of the gate on the child's input
        torch.testing.assert_close(first.attention.frozen_alpha, first.attention(seen[0]).mean(0))
        first.attention.frozen_alpha = None  # (restored by the handle on exit)
        torch.testing.assert_close(
            first.attention(seen[0]).mean(0), first.attention.coefficients(seen[0]).mean(0)
        )
    torch.testing.assert_close(model(x), expected, rtol=0, atol=0)  # unfrozen on exit
    from kwlab.experiments.config import RunConfig
    from kwlab.experiments.sweep import check_configs

    check_configs([RunConfig(arch=a, method="kerneldna", data="synthetic") for a in ARCHS])
    from kwlab.experiments.train import fit

    cfg = RunConfig(
        arch="mobilenetv2_050",
        method="kerneldna",
        data="synthetic",
        image_size=32,
        epochs=1,
        batch_size=8,
        train_samples=16,
        test_samples=8,
        device="cpu",
        amp=False,
        channels_last=False,
        checkpoint=False,
    )
    results = fit(cfg, tmp_path / "run", progress=False)
    assert results["epochs_done"] == 1 and results["params"] == count_parameters(_kdna("mobilenetv2_050"))


# ------------------------------------------------------------------------------------------- bad options
def test_bad_options():
    with pytest.raises(ValueError, match="wiring='pairing'"):
        kwlab.create_model("resnet20_cifar", method="kerneldna")
    with pytest.raises(ValueError, match="reduction"):
        kwlab.create_model("resnet18", method="kerneldna", reduction=8)
    with pytest.raises(ValueError, match=r"wiring must be one of \['official', 'pairing'\]"):
        kwlab.create_model("resnet18", method="kerneldna", wiring="paper")
    with pytest.raises(ValueError, match="create_model"):
        kwlab.convert(kwlab.create_model("resnet18"), "kerneldna")


# ------------------------------------------------------------------------------------------- official layout
def _r18_stage_keys(p: str) -> set[str]:
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = {f"{p}.{c}.weight" for c in ("conv1", "conv2", "conv3", "downsample.0")}
    keys |= {f"{p}.{b}.{s}" for b in ("bn1", "bn2", "bn3", "downsample.1") for s in bn}
    keys |= {f"{p}.static_spatial_attn", f"{p}.static_filter_attn"}
    for i in range(3):
        keys |= {f"{p}.bns.{i}.{s}" for s in bn} | {f"{p}.se.{i}.se.bn.{s}" for s in bn}
        keys |= {f"{p}.se.{i}.se.fc1.weight", f"{p}.se.{i}.se.fc2.weight", f"{p}.se.{i}.se.fc2.bias"}
    return keys


@pytest.mark.parametrize("arch", ARCHS)
def test_official_layout_round_trip(arch, tmp_path):
    a = _randomise(_kdna(arch))
    sd = to_official(a)
    assert len(sd) == OFFICIAL_KEYS[arch]
    if arch == "resnet18":
        stage = {k for k in sd if k.startswith("layer3.")}
        assert stage == _r18_stage_keys("layer3")
        assert sd["layer3.static_spatial_attn"].shape == (3, 1, 1, 3, 3)
        assert sd["layer4.static_filter_attn"].shape == (3, 512, 1, 1, 1)
    if arch == "resnet50":
        assert sd["layer4.static_filter_attn2"].shape == (1, 512, 1, 1, 1)
        assert "layer3.kids.2.half1.se.se.fc1.weight" in sd and "layer4.blocks.0.half2.conv3.weight" in sd
    if arch.startswith("mobilenetv2"):
        assert "classifier.1.weight" in sd and "features.10.blocks.1.se3.se.fc2.bias" in sd
        assert sd["features.10.static_filter_attn1"].shape[0] == 2
    # as the official training script saves it under DDP: {"state_dict": {"module." + key: ...}}
    path = tmp_path / "ckpt.pth.tar"
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, path)
    b = load_official(_kdna(arch), path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ya, yb = a(x), b.eval()(x)
    assert (ya - yb).abs().max() / ya.abs().max() < 1e-5
    assert torch.equal(ya, yb)
    c = load_official(_kdna(arch), sd)  # a bare state_dict, no prefix
    assert all(torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())


# Independent forwards of the official modules, written from the upstream formulas on official tensors.
def _bn(x, sd, p):
    return F.batch_norm(
        x,
        sd[f"{p}.running_mean"],
        sd[f"{p}.running_var"],
        sd[f"{p}.weight"],
        sd[f"{p}.bias"],
        False,
        0.0,
        1e-5,
    )


def _se(x, sd, p):
    h = F.conv2d(F.adaptive_avg_pool2d(x, 1), sd[f"{p}.se.fc1.weight"])
    h = F.relu(_bn(h, sd, f"{p}.se.bn"))
    return x * torch.sigmoid(F.conv2d(h, sd[f"{p}.se.fc2.weight"], sd[f"{p}.se.fc2.bias"]))


def _official_r18_stage(x, sd, p):
    w = [
        sd[f"{p}.{c}.weight"]
        * (1 + sd[f"{p}.static_spatial_attn"][i])
        * (1 + sd[f"{p}.static_filter_attn"][i])
        for i, c in enumerate(("conv2", "conv2", "conv3"))
    ]
    identity = _bn(F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=2), sd, f"{p}.downsample.1")
    x = F.relu(_bn(F.conv2d(x, sd[f"{p}.conv1.weight"], stride=2, padding=1), sd, f"{p}.bn1"))
    x = F.relu(_bn(F.conv2d(_se(x, sd, f"{p}.se.0"), w[0], padding=1), sd, f"{p}.bns.0") + identity)
    for i, (conv, bn) in enumerate((("conv2", "bn2"), ("conv3", "bn3")), start=1):
        h = F.relu(_bn(F.conv2d(_se(x, sd, f"{p}.se.{i}"), w[i], padding=1), sd, f"{p}.bns.{i}"))
        x = F.relu(_bn(F.conv2d(h, sd[f"{p}.{conv}.weight"], padding=1), sd, f"{p}.{bn}") + x)
    return x


def _official_bottleneck(x, sd, p, stride=1, downsample=False):
    q = f"{p}.layers"
    h = F.relu(_bn(F.conv2d(x, sd[f"{q}.conv1.weight"]), sd, f"{q}.bn1"))
    h = F.relu(_bn(F.conv2d(h, sd[f"{q}.conv2.weight"], stride=stride, padding=1), sd, f"{q}.bn2"))
    h = _bn(F.conv2d(h, sd[f"{q}.conv3.weight"]), sd, f"{q}.bn3")
    if downsample:
        x = _bn(F.conv2d(x, sd[f"{p}.downsample.conv.weight"], stride=stride), sd, f"{p}.downsample.bn")
    return F.relu(h + x)


def _official_kid_bottleneck(x, sd, p, weight):
    h = F.relu(_bn(F.conv2d(x, sd[f"{p}.half1.conv1.weight"]), sd, f"{p}.half1.bn1"))
    h = F.conv2d(_se(h, sd, f"{p}.half1.se"), weight, padding=1)
    h = F.relu(_bn(h, sd, f"{p}.half2.bn2"))
    return F.relu(_bn(F.conv2d(h, sd[f"{p}.half2.conv3.weight"]), sd, f"{p}.half2.bn3") + x)


def _official_r50_layer3(x, sd, p, n=3):
    x = _official_bottleneck(x, sd, f"{p}.block0", stride=2, downsample=True)
    for i in range(n):
        w = sd[f"{p}.parents.{i}.layers.conv2.weight"]
        w = w * (1 + sd[f"{p}.static_filter_attn"][i]) * (1 + sd[f"{p}.static_spatial_attn"][i])
        x = _official_kid_bottleneck(x, sd, f"{p}.kids.{i}", w)
        x = _official_bottleneck(x, sd, f"{p}.parents.{i}")
    return x


def _official_cluster(x, sd, p, n, stride):
    def ib(x, q, stride=1):
        h = F.relu6(_bn(F.conv2d(x, sd[f"{q}.pw1.weight"]), sd, f"{q}.bn1"))
        dw = sd[f"{q}.dw.weight"]
        h = F.relu6(_bn(F.conv2d(h, dw, stride=stride, padding=1, groups=dw.shape[0]), sd, f"{q}.bn2"))
        return _bn(F.conv2d(h, sd[f"{q}.pw2.weight"]), sd, f"{q}.bn3")

    x = ib(x, f"{p}.transition.layers", stride)
    w1 = sd[f"{p}.last_block.layers.pw1.weight"] * (1 + sd[f"{p}.static_filter_attn1"])
    w3 = sd[f"{p}.last_block.layers.pw2.weight"] * (1 + sd[f"{p}.static_filter_attn3"])
    for i in range(n):
        q = f"{p}.blocks.{i}"
        h = F.relu6(_bn(F.conv2d(_se(x, sd, f"{q}.se1"), w1[i]), sd, f"{q}.bn1"))
        dw = sd[f"{q}.dwconv.weight"]
        h = F.relu6(_bn(F.conv2d(h, dw, padding=1, groups=dw.shape[0]), sd, f"{q}.bn2"))
        x = _bn(F.conv2d(_se(h, sd, f"{q}.se3"), w3[i]), sd, f"{q}.bn3") + x
    return ib(x, f"{p}.last_block.layers") + x


@pytest.mark.parametrize(
    "arch,stage,in_shape,reference",
    [
        ("resnet18", "layer3", (2, 128, 8, 8), lambda x, sd: _official_r18_stage(x, sd, "layer3")),
        ("resnet18", "layer4", (2, 256, 4, 4), lambda x, sd: _official_r18_stage(x, sd, "layer4")),
        ("resnet50", "layer3", (2, 512, 8, 8), lambda x, sd: _official_r50_layer3(x, sd, "layer3")),
        ("resnet50", "layer4", (2, 1024, 4, 4), None),  # layer4 == layer3's rule with one kid: see below
        (
            "mobilenetv2_100",
            "features.10",
            (2, 32, 8, 8),
            lambda x, sd: _official_cluster(x, sd, "features.10", 2, 2),
        ),
        (
            "mobilenetv2_050",
            "features.13",
            (2, 32, 8, 8),
            lambda x, sd: _official_cluster(x, sd, "features.13", 1, 1),
        ),
    ],
)
def test_official_layout_matches_upstream_formulas(arch, stage, in_shape, reference):
    model = _randomise(_kdna(arch))
    sd = to_official(model)
    if reference is None:  # ResNet50 layer4: transition, blocks.0 (child of last_block's 3x3), last_block
        p = stage

        def reference(x, sd):
            x = _official_bottleneck(x, sd, f"{p}.block0", stride=2, downsample=True)
            w = sd[f"{p}.last_block.layers.conv2.weight"][None] * (1 + sd[f"{p}.static_filter_attn2"])
            w = w * (1 + sd[f"{p}.static_spatial_attn"])
            return _official_bottleneck(
                _official_kid_bottleneck(x, sd, f"{p}.blocks.0", w[0]), sd, f"{p}.last_block"
            )

    x = torch.randn(*in_shape)
    with torch.no_grad():
        ours, theirs = model.get_submodule(stage)(x), reference(x, sd)
    assert (ours - theirs).abs().max() / theirs.abs().max() < 1e-5


# ------------------------------------------------------------------------------------------- bad checkpoints
def test_checkpoint_of_another_arch_names_the_keys():
    sd = to_official(_kdna("resnet18"))
    with pytest.raises(
        OfficialCheckpointError, match=r"not in the model \(127\): layer3\.conv1\.weight"
    ) as err:
        load_official(_kdna("resnet50"), sd)
    assert "layer4.static_spatial_attn: checkpoint (3, 1, 1, 3, 3), model stacks 1 children" in str(err.value)
    assert "missing from checkpoint (306): layer1.0.conv3.weight" in str(err.value)
    with pytest.raises(
        OfficialCheckpointError,
        match=r"shape differs \(326\): features\.0\.0\.weight: checkpoint \(16, 3, 3, 3\) vs model \(32",
    ):
        load_official(_kdna("mobilenetv2_100"), to_official(_kdna("mobilenetv2_050")))
    bad = dict(sd, **{"layer3.static_filter_attn": sd["layer3.static_filter_attn"][:2]})
    with pytest.raises(OfficialCheckpointError, match=r"layer3\.static_filter_attn: checkpoint \(2, 256"):
        load_official(_kdna("resnet18"), bad)
    other = to_official(kwlab.create_model("resnet18", method="kerneldna", num_classes=7))
    with pytest.raises(
        OfficialCheckpointError, match=r"fc\.weight: checkpoint \(7, 512\) vs model \(10, 512\)"
    ):
        load_official(_kdna("resnet18"), other)


def test_kw_checkpoint_given_to_kerneldna_model():
    kw = to_official(kwlab.create_model("resnet18", method="kw", preset="1x", num_classes=10))
    with pytest.raises(OfficialCheckpointError, match=r"warehouse_manager\.weights\.0") as err:
        load_official(_kdna("resnet18"), kw)
    assert "layer3.static_spatial_attn" not in str(err.value)  # kwlab names the model's missing keys
    assert "layer3.kids.0.spatial_scale" in str(err.value) or "missing" in str(err.value)


def test_truncated_file(tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save(to_official(_kdna("mobilenetv2_050")), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="ckpt.pth"):
        load_official(_kdna("mobilenetv2_050"), path)
