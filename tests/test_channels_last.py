"""channels_last for every method on every arch family: ``model.to(memory_format=torch.channels_last)``
works, static 4-D weights take the format, the dynamic layers' banks keep their contiguous layout, and the
outputs and gradients equal the contiguous model's."""

from __future__ import annotations

import copy
import dataclasses
from functools import partial

import pytest
import torch

import kwlab
from kwlab.layers.base import KeepsLayout
from kwlab.models import registry
from kwlab.models.convnext import ConvNeXt

# one arch per family (CIFAR ResNet, ImageNet ResNet, MobileNetV2, ConvNeXt, ViT), small inputs
_ARCHS = {"resnet20_cifar": 16, "resnet18": 32, "mobilenetv2_050": 32, "convnext_tiny": 32, "vit_cifar": 32}
_SMALL = {"convnext_tiny": {"depths": (1, 1, 1, 1), "dims": (16, 32, 64, 128)}}  # same code, CPU-sized
_COMBOS = [(arch, method) for arch in _ARCHS for method in kwlab.list_methods()]


@pytest.fixture
def small_convnext(register):
    """convnext_tiny's registry entry with one block per stage and narrow stages: the same code and wiring."""
    entry = registry.model_entry("convnext_tiny")
    small = partial(ConvNeXt, **_SMALL["convnext_tiny"])
    register(registry._MODELS, "convnext_tiny", dataclasses.replace(entry, builder=small))


def _build(arch: str, method: str) -> torch.nn.Module:
    torch.manual_seed(0)
    extra = {}
    if method == "kerneldna" and not kwlab.models.model_entry(arch).method_builders.get("kerneldna"):
        extra["wiring"] = "pairing"
    if method == "fdconv":  # the class default band count; 64 does not divide the small nets' spectra
        extra["kernel_num"] = 4
    try:
        return kwlab.create_model(arch, method=method, num_classes=10, **extra)
    except ValueError as err:  # nothing to convert there (the refusal itself is asserted in test_smoke)
        if "convert no layer" in str(err) or "finds no conv" in str(err):
            pytest.skip(f"{method} has nothing to convert in {arch}")
        raise


def _forward_backward(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
    out = model(x)
    # a loss that weights every logit differently, so every gradient path is checked
    (out * torch.linspace(-1, 1, out.shape[1])).sum().backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.detach(), grads


@pytest.mark.parametrize("arch,method", _COMBOS, ids=[f"{a}-{m}" for a, m in _COMBOS])
def test_channels_last_model_equals_contiguous_model(arch, method, one_thread, small_convnext):
    size = _ARCHS[arch]
    # float64: the two layouts run different kernels, and in fp32 their summation orders alone move the
    # gradients by up to 1e-4 of their size (measured on the static resnet18); in fp64 that noise is ~1e-12,
    # so a 1e-9 tolerance still catches any wrong value. The fp32 outputs are checked in the next test.
    x = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    model = _calibrated(_build(arch, method).double(), x)
    twin = copy.deepcopy(model)
    ref_out, ref_grads = _forward_backward(model, x)

    twin = twin.to(memory_format=torch.channels_last)  # raised "required rank 4" for 5-D banks before
    # tensors of dynamic layers (KernelDNA's children share their parent conv's weight) keep their layout
    kept = {id(p) for m in twin.modules() if isinstance(m, KeepsLayout) for p in m.parameters()}
    for name, p in twin.named_parameters():
        if id(p) in kept:
            assert p.is_contiguous(), f"{name} of a dynamic layer lost its layout"
        elif p.dim() == 4 and p.shape[1] > 1 and p.shape[2] * p.shape[3] > 1:  # others have no layout to test
            assert p.is_contiguous(memory_format=torch.channels_last), name
    out, grads = _forward_backward(twin, x.contiguous(memory_format=torch.channels_last))
    scale = ref_out.abs().max().item()
    assert (out - ref_out).abs().max().item() <= 1e-9 * max(1.0, scale)
    assert grads.keys() == ref_grads.keys()
    for name, g in grads.items():
        ref = ref_grads[name]
        assert (g - ref).abs().max().item() <= 1e-9 * max(1.0, ref.abs().max().item()), name


def _calibrated(model: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    """``model`` in eval mode with BatchNorm statistics of ``x``: activations stay O(1) and, unlike train-mode
    BatchNorm on a batch of 4, the comparison is well conditioned."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: one pass sets the statistics of x
    with torch.no_grad():
        model.train()(x)
    return model.eval()


@pytest.mark.parametrize("method", ["static", "kw", "odconv"])
def test_channels_last_fp32_outputs_within_1e_5(method, one_thread):
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    model = _calibrated(_build("resnet18_cifar", method), x)
    with torch.no_grad():
        ref = model(x)
        out = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    assert (out - ref).abs().max().item() <= 1e-5 * ref.abs().max().item()


def test_keeps_layout_moves_dtype_and_keeps_values():
    torch.manual_seed(0)
    model = kwlab.create_model("resnet20_cifar", method="kw", preset="1x", num_classes=10)
    cells = next(t for n, t in model.named_parameters() if t.dim() == 5)
    before = cells.detach().clone()
    model.to(dtype=torch.float64, memory_format=torch.channels_last)
    after = next(t for n, t in model.named_parameters() if t.dim() == 5)
    assert after.dtype == torch.float64 and after.is_contiguous()
    assert torch.equal(after, before.double())
    model.double().float()  # the other conversions go through the same path
    assert torch.equal(next(t for n, t in model.named_parameters() if t.dim() == 5), before)
