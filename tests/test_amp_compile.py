"""The GPU-only switches, exercised on this CPU for every method: bf16 autocast (gradients close to fp32),
``torch.compile`` (forward and backward equal to eager, graph breaks counted) and the trainer's ``amp`` /
``channels_last`` / ``compile`` fields (honoured on CPU when asked explicitly, off by default, recorded)."""

from __future__ import annotations

import copy
import functools
import math

import pytest
import torch
import torch._dynamo as dynamo
from torch import nn

import kwlab
from kwlab.experiments.config import ConfigError, RunConfig
from kwlab.experiments.train import Trainer
from kwlab.testing import tiny_run

_METHODS = kwlab.list_methods()


def _net(method: str) -> nn.Module:
    """The tiny ResNet-20 of the trainer tests (widths 4-8-8), converted by ``method``, mid-anneal."""
    torch.manual_seed(0)
    extra: dict = {"wiring": "pairing"} if method == "kerneldna" else {}
    widths = [4, 8, 8]
    if method == "fdconv":  # its official gating takes convs with min(in, out) > 16 only
        extra, widths = {"kernel_num": 4}, [32, 32, 32]
    net = kwlab.create_model("resnet20_cifar", method=method, num_classes=10, widths=widths, **extra)
    kwlab.set_temperature(net, 0.5)
    return net


def _loss_and_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(x).float(), y)
    loss.backward()
    grads = [p.grad.flatten() for p in model.parameters() if p.grad is not None]
    return loss.item(), torch.cat(grads)


def _calibrated(model: nn.Module, x: torch.Tensor) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one pass sets the statistics of x
    with torch.no_grad():
        model.train()(x)
    return model.eval()


def _batch(n: int = 8, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("method", [m for m in _METHODS if m != "static"])
def test_bf16_autocast_layer_close_to_fp32(method, one_thread):
    """One dynamic layer (attention, kernel assembly, per-sample conv), fp32 vs bf16 autocast, with a fixed
    upstream gradient: a well-conditioned comparison (through a whole ResNet-20 the first layers' gradients
    move by 25-50% in bf16 even for the static net, which would hide any error of a dynamic layer)."""
    model = _net(method).train()
    layer = [m for _, m in kwlab.layers.base.dynamic_layers(model) if getattr(m, "in_channels", 0) >= 8][0]
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, layer.in_channels, 8, 8, generator=g)
    params = [p for p in model.parameters() if p.requires_grad]

    def run() -> tuple[torch.Tensor, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        out = layer(x)
        (out.float() * upstream).sum().backward()
        return out.detach().float(), torch.cat([p.grad.flatten() for p in params if p.grad is not None])

    upstream = torch.randn(layer(x).shape, generator=g)
    out32, g32 = run()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out16, g16 = run()
    assert torch.isfinite(out16).all() and torch.isfinite(g16).all()
    rel_out = ((out16 - out32).norm() / out32.norm()).item()
    rel_grad = ((g16 - g32).norm() / g32.norm()).item()
    # bf16 rounds to 8 significant bits (2^-9 = 0.2% per value); a layer's sums of ~100 products stay
    # within 2% of fp32 (L2), and autocast really ran (> 0)
    assert 0 < rel_out < 0.02, rel_out
    assert 0 < rel_grad < 0.02, rel_grad


@pytest.mark.parametrize("method", _METHODS)
def test_compiled_forward_backward_equal_eager_without_graph_breaks(method, one_thread):
    model = _net(method).train()
    twin = copy.deepcopy(model)
    x, y = _batch()
    dynamo.reset()
    explained = dynamo.explain(twin)(x)
    assert explained.graph_break_count == 0, [str(r.reason) for r in explained.break_reasons]
    assert explained.graph_count == 1
    dynamo.reset()
    # aot_eager traces forward and backward through AOTAutograd like inductor does, without C++ codegen
    # (inductor itself is checked on the KW net below and in the trainer test)
    compiled = torch.compile(twin, backend="aot_eager", fullgraph=True)
    loss, grads = _loss_and_grads(compiled, x, y)
    ref_loss, ref_grads = _loss_and_grads(model, x, y)
    assert abs(loss - ref_loss) <= 1e-6 * abs(ref_loss)
    assert (grads - ref_grads).abs().max() <= 1e-6 * ref_grads.abs().max()


def test_inductor_compiled_kw_layer_equals_eager(one_thread):
    """Inductor (C++ kernels) on one KW layer with its warehouse, forward and backward: a whole ResNet-20
    takes minutes of codegen on a CI CPU; benchmarks/gpu_check.py compiles whole networks."""
    model = _net("kw").train()
    layer = [m for _, m in kwlab.layers.base.dynamic_layers(model) if m.in_channels >= 8][0]
    x = torch.randn(8, layer.in_channels, 8, 8, generator=torch.Generator().manual_seed(4))
    params = [p for p in model.parameters() if p.requires_grad]

    def run(fn) -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        out = fn(x)
        out.square().mean().backward()
        return torch.cat([out.detach().flatten(), *[p.grad.flatten() for p in params if p.grad is not None]])

    dynamo.reset()
    compiled = run(torch.compile(layer, fullgraph=True))
    eager = run(layer)
    # inductor fuses and reorders fp32 reductions: equal up to rounding
    assert (compiled - eager).abs().max() <= 1e-5 * eager.abs().max()


def test_runtime_switches_default_off_on_cpu_and_recorded():
    trainer = Trainer(RunConfig.from_dict(tiny_run(method="kw")), progress=False)
    assert (trainer.use_amp, trainer.channels_last, trainer.compile_mode) == (False, False, None)
    results = trainer.fit()
    assert results["amp_dtype"] is None and results["channels_last_used"] is False
    assert results["compile_mode"] is None and results["graph_breaks"] is None


def test_runtime_switches_honoured_on_cpu_when_asked(monkeypatch, one_thread):
    # the trainer's torch.compile, with the cheap aot_eager backend (inductor is checked above)
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    dynamo.reset()
    cfg = RunConfig.from_dict(tiny_run(method="kw", amp="bf16", channels_last="always", compile=True))
    trainer = Trainer(cfg, progress=False)
    assert trainer.use_amp and trainer.amp_dtype == torch.bfloat16 and trainer.channels_last
    x, _ = next(iter(trainer.train_loader))
    assert x.is_contiguous(memory_format=torch.channels_last)
    results = trainer.fit()
    assert math.isfinite(results["final_train_loss"])
    assert results["amp_dtype"] == "bfloat16" and results["channels_last_used"] is True
    assert results["compile_mode"] == "default" and results["graph_breaks"] == 0
    eager = Trainer(cfg.replace(compile=False), progress=False).fit()  # compile is a runtime field
    assert eager["config_hash"] == results["config_hash"]
    # the same bf16 run, compiled or not: the same training up to bf16 rounding over one epoch
    assert abs(eager["final_train_loss"] - results["final_train_loss"]) < 0.05 * eager["final_train_loss"]


def test_fp16_on_cpu_is_refused_before_any_work(tmp_path):
    cfg = RunConfig.from_dict(tiny_run(amp="fp16"))
    with pytest.raises(ConfigError, match="amp='fp16' needs a CUDA device"):
        Trainer(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "field,value", [("amp", "fp8"), ("channels_last", "yes"), ("compile", "fast"), ("amp", 1.0)]
)
def test_bad_runtime_switch_names_the_field_and_the_allowed_values(field, value):
    with pytest.raises(ConfigError, match=field):
        RunConfig.from_dict(tiny_run(**{field: value}))


def test_compile_is_a_runtime_field_and_default_hashes_are_unchanged():
    base = RunConfig.from_dict(tiny_run())
    assert base.replace(compile="max-autotune").training_hash() == base.training_hash()
    assert base.replace(amp="bf16").training_hash() != base.training_hash()
    # the hash of the default config is the one before the compile field existed (old run directories resume)
    assert RunConfig().training_hash() == "b410ee1fb73d3a26"
