"""The DeiT family (kwlab.models.vit): static counts, timm equivalence, KW wiring, conversion, probe."""

from __future__ import annotations

import pytest
import torch
import torch.fx
from torch import nn

import kwlab
from kwlab.layers import KWLinear
from kwlab.models import create_model
from kwlab.models.vit import VisionTransformer, load_timm_state_dict, timm_key_map, timm_kw_rule

TINY = dict(img_size=16, patch_size=4, embed_dim=24, depth=3, num_heads=2, num_classes=5)


def _tiny(**kw) -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(**{**TINY, **kw})


def _keep_input(store: dict):
    def hook(module, inputs, output) -> None:  # returns None: the output is left alone
        store.setdefault("x", inputs[0])

    return hook


def _timm():
    from kwlab._compat import import_torchvision

    try:
        import_torchvision()  # timm imports torchvision; this works around the CPU-torch import failure
    except ImportError:
        pass
    return pytest.importorskip("timm")


@pytest.mark.parametrize(
    "arch, expected", [("deit_tiny_patch16_224", 5_717_416), ("deit_small_patch16_224", 22_050_664)]
)
def test_static_parameter_counts(arch, expected):
    model = create_model(arch)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_timm_state_dict_gives_equal_logits():
    timm = _timm()
    torch.manual_seed(1)
    ref = timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=7
    ).eval()
    # randomise biases and norms too (timm inits them to 0/1), so a mis-mapped key cannot hide
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ours = VisionTransformer(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=7)
    load_timm_state_dict(ours, ref.state_dict()).eval()
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def test_timm_deit_tiny_loads_and_matches():
    timm = _timm()
    torch.manual_seed(2)
    ref = timm.create_model("deit_tiny_patch16_224", pretrained=False).eval()
    ours = load_timm_state_dict(create_model("deit_tiny_patch16_224"), ref.state_dict()).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-5)


def test_qkv_split_order():
    w = torch.arange(12.0).reshape(6, 2)
    out = timm_key_map({"blocks.3.attn.qkv.weight": w, "head.bias": torch.ones(2)})
    assert torch.equal(out["blocks.3.attn.q.weight"], w[:2])
    assert torch.equal(out["blocks.3.attn.k.weight"], w[2:4])
    assert torch.equal(out["blocks.3.attn.v.weight"], w[4:])
    assert set(out) == {
        "blocks.3.attn.q.weight",
        "blocks.3.attn.k.weight",
        "blocks.3.attn.v.weight",
        "head.bias",
    }


def test_timm_weights_refused_by_a_kw_model():
    model = kwlab.kernelwarehouse(_tiny())
    with pytest.raises(ValueError, match="static model first"):
        load_timm_state_dict(model, {})


@pytest.mark.parametrize("kw_proj", [False, True])
def test_kw_layers_are_v_and_mlp_only(kw_proj):
    model = create_model(
        "vit_cifar", method="kw", num_classes=10, depth=4, embed_dim=32, num_heads=2, kw_proj=kw_proj
    )
    kw = {n for n, m in model.named_modules() if isinstance(m, KWLinear)}
    suffixes = ("attn.v", "mlp.fc1", "mlp.fc2") + (("attn.proj",) if kw_proj else ())
    assert kw == {f"blocks.{i}.{s}" for i in range(4) for s in suffixes}
    for blk in model.blocks:
        assert type(blk.attn.q) is nn.Linear and type(blk.attn.k) is nn.Linear
    assert type(model.head) is nn.Linear and type(model.patch_embed.proj) is nn.Conv2d


def test_sharing_rule_groups_block_ranges():
    model = create_model(
        "vit_cifar", method="kw", num_classes=10, depth=5, embed_dim=32, num_heads=2, kw_groups=2
    )
    keys = {n: m.warehouse.key for n, m in model.named_modules() if isinstance(m, KWLinear)}
    # 5 blocks in 2 ranges: block i in range i * 2 // 5 -> blocks 0-1 and 2-4
    assert keys["blocks.1.attn.v"] == "blocks0-1:attn" and keys["blocks.2.attn.v"] == "blocks2-4:attn"
    assert keys["blocks.0.mlp.fc1"] == keys["blocks.1.mlp.fc2"] == "blocks0-1:mlp"
    assert keys["blocks.4.mlp.fc1"] == "blocks2-4:mlp"
    assert list(kwlab.warehouses(model)) == [
        "blocks0-1:attn",
        "blocks0-1:mlp",
        "blocks2-4:attn",
        "blocks2-4:mlp",
    ]


def test_kw_attention_reads_the_token_mean():
    model = kwlab.kernelwarehouse(_tiny(), attention_norm="layer")
    kwlab.set_temperature(model, 0.0)
    layer = model.blocks[1].mlp.fc1
    seen = {}
    layer.register_forward_hook(_keep_input(seen))
    model(torch.randn(2, 3, 16, 16))
    x = seen["x"]  # (B, N, C)
    with torch.no_grad():
        via_layer = layer.attention(x.transpose(1, 2))
        via_mean = layer.attention(x.mean(1).unsqueeze(-1))  # one "token": the mean over all tokens
    torch.testing.assert_close(via_layer, via_mean)


@pytest.mark.parametrize("kw_proj", [False, True])
def test_conversion_is_identity_at_tau_1(kw_proj):
    static = _tiny(kw_proj=kw_proj)
    with torch.no_grad():  # non-zero biases so that the bias copy is checked too
        for m in static.modules():
            if isinstance(m, nn.Linear):
                m.bias.normal_()
    static.eval()
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        expected = static(x)
        model = kwlab.kernelwarehouse(static, init="static").eval()
        got = model(x)
    assert any(isinstance(m, KWLinear) for m in model.modules())
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_timm_rule_converts_the_mlps_only():
    timm = _timm()
    ref = timm.models.vision_transformer.VisionTransformer(
        img_size=16, patch_size=4, embed_dim=24, depth=3, num_heads=2, num_classes=5
    ).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = ref(x)
        model = kwlab.kernelwarehouse(ref, sharing=timm_kw_rule(ref, groups=3), init="static").eval()
        got = model(x)
    kw = {n for n, m in model.named_modules() if isinstance(m, KWLinear)}
    assert kw == {f"blocks.{i}.mlp.fc{j}" for i in range(3) for j in (1, 2)}
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_batch_one_training_step():
    model = create_model("vit_cifar", method="kw", num_classes=10, depth=2, embed_dim=32, num_heads=2).train()
    kwlab.set_temperature(model, 0.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(1, 3, 32, 32), torch.tensor([3])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert any("warehouse.cells" in n for n in moved) and "blocks.0.attn.q.weight" in moved
    assert any(n.startswith("blocks.1.mlp.fc1.attention.") for n in moved)


def test_fx_trace_and_state_dict_round_trip(tmp_path):
    model = create_model("vit_cifar", method="kw", num_classes=10, depth=2, embed_dim=32, num_heads=2).eval()
    x = torch.randn(2, 3, 32, 32)
    traced = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x))
    torch.save(model.state_dict(), tmp_path / "vit.pt")
    torch.manual_seed(123)
    other = create_model("vit_cifar", method="kw", num_classes=10, depth=2, embed_dim=32, num_heads=2).eval()
    other.load_state_dict(torch.load(tmp_path / "vit.pt", weights_only=True))
    with torch.no_grad():
        torch.testing.assert_close(other(x), model(x))


def test_probe_on_a_vit():
    model = kwlab.kernelwarehouse(_tiny(), attention_norm="layer").eval()
    kwlab.set_temperature(model, 0.0)
    x = torch.randn(4, 3, 16, 16)
    with kwlab.Probe(model, keep=4) as probe:
        probe.record(x, labels=torch.tensor([0, 1, 0, 1]))
    summary = probe.summary().set_index("layer")
    expected = [f"blocks.{i}.{s}" for i in range(3) for s in ("attn.v", "mlp.fc1", "mlp.fc2")]
    assert list(summary.index) == expected
    assert (summary["n_samples"] == 4).all()
    # the kept alpha of a layer is exactly what its attention gives on that layer's input
    layer = model.blocks[2].mlp.fc2
    seen = {}
    handle = layer.register_forward_hook(_keep_input(seen))
    with torch.no_grad():
        model(x)
        alpha = layer.attention(seen["x"].transpose(1, 2))
    handle.remove()
    samples = probe.samples()
    kept = samples[samples.layer == "blocks.2.mlp.fc2"].sort_values(["sample", "mixture", "cell"])
    got = torch.tensor(kept["alpha"].to_numpy(), dtype=alpha.dtype).reshape(alpha.shape)
    torch.testing.assert_close(got, alpha)
    assert summary.loc["blocks.2.mlp.fc2", "num_cells"] == layer.warehouse.num_cells


def test_freeze_attention_on_a_vit():
    from kwlab.instruments import freeze_attention

    model = kwlab.kernelwarehouse(_tiny(), attention_norm="layer").eval()
    kwlab.set_temperature(model, 0.0)
    x = torch.randn(4, 3, 16, 16)
    layer = model.blocks[0].attn.v
    seen = {}
    handle = layer.register_forward_hook(_keep_input(seen))
    with torch.no_grad():
        model(x)
        mean_alpha = layer.attention(seen["x"].transpose(1, 2)).mean(0)
    handle.remove()
    with freeze_attention(model, x):
        with torch.no_grad():
            frozen = layer.attention(torch.randn(5, 24, 7))
        torch.testing.assert_close(frozen, mean_alpha.expand_as(frozen))
    with torch.no_grad():
        assert not torch.equal(layer.attention(torch.randn(2, 24, 7))[0], mean_alpha)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(img_size=30, patch_size=4), r"patch_size \(4\) must divide img_size \(30\)"),
        (dict(embed_dim=25, num_heads=2), r"num_heads \(2\) must divide embed_dim \(25\)"),
        (dict(depth=0), "depth must be an integer >= 1"),
        (dict(kw_groups=4), r"kw_groups must be between 1 and depth \(3\)"),
    ],
)
def test_bad_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _tiny(**kwargs)


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (2, 1, 16, 16), (3, 16, 16)])
def test_wrong_image_size(shape):
    model = _tiny()
    with pytest.raises(ValueError, match=r"expects images of shape \(B, 3, 16, 16\) \(img_size=16"):
        model(torch.randn(*shape))


def test_static_macs_match_the_formula():
    model = _tiny()  # 16 px, patch 4: 16 patches + the class token; C = 24, MLP 96, 3 blocks, 5 classes
    n, c, hidden, depth = 17, 24, 96, 3
    patch = 16 * c * 3 * 4 * 4
    per_block = 4 * n * c * c + 2 * n * c * hidden + 2 * n * n * c  # q, k, v, proj; fc1, fc2; QK^T and AV
    assert kwlab.count_macs(model, (1, 3, 16, 16)) == patch + depth * per_block + c * 5


def test_trainer_builds_trains_and_probes_a_vit(tmp_path):
    from kwlab.experiments import RunConfig, Trainer
    from kwlab.instruments import load

    cfg = RunConfig.from_dict(
        dict(
            arch="vit_cifar",
            model_kwargs=dict(embed_dim=16, depth=2, num_heads=2),
            method="kw",
            preset="1x",
            data="synthetic",
            train_samples=64,
            test_samples=32,
            epochs=1,
            batch_size=32,
            optimizer="adamw",
            lr=1e-3,
            amp=False,
            device="cpu",
            probe_samples=16,
        )
    )
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    assert trainer.model.embed_dim == 16 and isinstance(trainer.model.blocks[1].attn.v, KWLinear)
    trainer.fit()
    summary = load(tmp_path / "run" / "probe").summary()
    assert list(summary["layer"]) == [
        f"blocks.{i}.{s}" for i in range(2) for s in ("attn.v", "mlp.fc1", "mlp.fc2")
    ]
