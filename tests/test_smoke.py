"""Every registered model with every method (timm-style smoke test), and every method's temperature
contract."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import kwlab
from kwlab.layers.base import DynamicAttention

# small inputs keep the 1000-class ImageNet archs CPU-sized; 64 px keeps >= 2x2 maps before the last BatchNorm
_SIZE = {"resnet20_cifar": 16, "resnet8_cifar": 16, "resnet18_cifar": 16}
_COMBOS = [(arch, method) for arch in kwlab.list_models() for method in kwlab.list_methods()]


def _size(arch: str) -> int:
    entry = kwlab.models.model_entry(arch)
    if "img_size" in entry.model_kwargs:  # ViTs are built for the test's image size
        return 32
    return _SIZE.get(arch, min(64, entry.input_size[-1]))


def _input(arch: str, batch: int) -> torch.Tensor:
    size = _size(arch)
    return torch.randn(batch, kwlab.models.model_entry(arch).input_size[0], size, size)


_VITS = ("deit_small_patch16_224", "deit_tiny_patch16_224", "vit_cifar")
#: combinations a method refuses, by name: the ViTs have no conv but the patch embedding (the stem) for DCD
#: or FDConv to convert
_REFUSED = {(arch, m): "finds no conv to convert" for arch in _VITS for m in ("dcd", "fdconv")}
#: FDConv's official kernel_num=64 must divide each layer's rfft2 coefficient count; where it does not, the
#: conversion refuses by name and the official class default kernel_num=4 runs
_FDCONV_SMALL = ("convnext_tiny", "mobilenetv2_050", "mobilenetv2_100", "resnet20_cifar", "resnet8_cifar")
#: (arch, method) -> why the method has nothing to convert there: a ViT's only conv is its patch embedding,
#: the stem the family keeps static; ConvNeXt's stages hold no two same-shape spatial convs in kwlab's
#: KernelDNA pairing (its stage container's children are whole stages); ResNet-8 has one block per stage,
#: so no block has an earlier same-shape block to pair with.
_NOTHING_TO_CONVERT = {
    **{
        (vit, m): "patch_embed.proj: the stem"
        for vit in _VITS
        for m in ("condconv", "dyconv", "odconv", "kerneldna")
    },
    ("convnext_tiny", "kerneldna"): "no same-shape conv in an earlier block",
    ("resnet8_cifar", "kerneldna"): "no same-shape conv in an earlier block",
}


def _build(arch: str, method: str) -> nn.Module | None:
    """The model, or None where the method has nothing to convert in the arch and says so (asserted)."""
    torch.manual_seed(0)
    extra = {"img_size": 32} if "img_size" in kwlab.models.model_entry(arch).model_kwargs else {}
    if (arch, method) in _REFUSED:
        with pytest.raises(ValueError, match=_REFUSED[arch, method]):
            kwlab.create_model(arch, method=method, num_classes=10, **extra)
        return None
    if method == "kerneldna" and not kwlab.models.model_entry(arch).method_builders.get("kerneldna"):
        # the official KernelDNA nets exist for four archs; elsewhere the method refuses its official wiring
        # by name, and kwlab's pairing wiring is what runs
        with pytest.raises(ValueError, match="wiring='pairing'"):
            kwlab.create_model(arch, method=method, num_classes=10, **extra)
        extra["wiring"] = "pairing"
    if method == "fdconv" and arch in _FDCONV_SMALL:
        with pytest.raises(ValueError, match="kernel_num=64 must divide"):
            kwlab.create_model(arch, method=method, num_classes=10, **extra)
        extra["kernel_num"] = 4
    if (arch, method) in _NOTHING_TO_CONVERT:
        # the conversion would convert nothing: it refuses by name instead of returning a static model
        # (issue 22), saying why for the layers
        with pytest.raises(ValueError, match=f"would convert no layer.*{_NOTHING_TO_CONVERT[arch, method]}"):
            kwlab.create_model(arch, method=method, num_classes=10, **extra)
        return None
    return kwlab.create_model(arch, method=method, num_classes=10, **extra)


@pytest.mark.parametrize("arch,method", _COMBOS, ids=[f"{a}-{m}" for a, m in _COMBOS])
def test_every_model_with_every_method(arch, method, one_thread):
    model = _build(arch, method)
    if model is None:  # refused by name (checked in _build)
        return
    model = model.train()
    x = _input(arch, 2)
    out = model(x)
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    used = [(n, p) for n, p in model.named_parameters() if p.grad is not None]
    assert used, "no parameter got a gradient"
    bad = [n for n, p in used if not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients in {bad[:5]}"
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused, f"parameters that take no part in the forward pass: {unused[:5]}"
    # batch 1 trains: one SGD step changes the weights and keeps the outputs finite
    opt = torch.optim.SGD(model.parameters(), lr=_LR.get(method, 1e-3))
    opt.zero_grad()
    loss = nn.functional.cross_entropy(model(_input(arch, 1)), torch.tensor([3]))
    assert math.isfinite(loss.item())
    loss.backward()
    opt.step()
    if method in _CALIBRATE:
        _calibrate_batch_norms(model, x)
    assert torch.isfinite(model.eval()(x)).all()


#: methods whose eval-mode check needs calibrated BatchNorm statistics (see _calibrate_batch_norms)
_CALIBRATE = ("dcd", "fdconv")
#: FDConv's KSM-global code is a squared StarReLU of a BatchNorm that, at batch 1, uses its running
#: statistics, so at init its heads get gradients of ~1e3 (ResNet-50): a step of 1e-3 saturates them
_LR = {"fdconv": 1e-5}


def _calibrate_batch_norms(model: nn.Module, x: torch.Tensor) -> None:
    """Running statistics = the statistics of one train-mode batch (cumulative average from scratch).

    With the untrained running statistics of a fresh model, eval-mode activations are not normalised. DCD's
    latent BatchNorm takes ``Phi(x) z``, a product of two activations, so they square from layer to layer
    and overflow (the official ``resnet18_dcd`` gives NaN logits in eval mode at init too). FDConv's five
    attentions each scale by up to 2, and after one SGD step of batch 1 (its KSM BatchNorm then uses the
    running statistics, so the squared StarReLU code is large and so are the heads' gradients) they
    saturate; over ResNet-50's 48 convs that overflows too. Calibrated statistics keep eval meaningful.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    with torch.no_grad():
        model.train()(x)


_METHODS = [m for m in kwlab.list_methods() if m != "static"]


@pytest.mark.parametrize("method", _METHODS)
def test_every_method_is_finite_at_every_accepted_temperature(method, one_thread):
    extra = (
        {"wiring": "pairing"} if method == "kerneldna" else {}
    )  # the official KernelDNA nets are ImageNet-sized
    widths = (8, 16, 16)
    if method == "fdconv":  # FDConv's gating needs min(in, out) > 16; 4 bands divide every layer's spectrum
        widths, extra = (8, 24, 24), {"kernel_num": 4}
    model = kwlab.create_model("resnet20_cifar", method=method, num_classes=10, widths=widths, **extra)
    contract = kwlab.METHODS[method].temperature
    x = torch.randn(3, 3, 16, 16)
    if method in _CALIBRATE:
        _calibrate_batch_norms(model, x)
    model.eval()
    start = contract.position(contract.start) if contract.active else 1.0
    for tau in (0.0, 0.5, 1.0, start):
        kwlab.set_temperature(model, tau)
        for m in model.modules():
            if isinstance(m, DynamicAttention) and contract.active:
                assert float(m.temperature) == pytest.approx(contract.value(tau))
        assert torch.isfinite(model(x)).all(), f"{method} at tau={tau}"
    for bad in (float("nan"), float("inf"), -0.1, 1.5):
        with pytest.raises(ValueError, match=r"tau must be in \[0, 1\]"):
            kwlab.set_temperature(model, bad)


def test_temperature_contracts_map_the_anneal_onto_each_method():
    # KW's blend weight is tau itself; DY-Conv's and ODConv's softmax divisor runs 30 -> 1 (official
    # schedules)
    kw, dy, od = (kwlab.METHODS[m].temperature for m in ("kw", "dyconv", "odconv"))
    assert (kw.value(1.0), kw.value(0.0)) == (1.0, 0.0)
    for c in (dy, od):
        assert (c.value(1.0), c.value(0.0), c.value(0.5)) == (30.0, 1.0, 15.5)
        assert c.position(c.value(0.3)) == pytest.approx(0.3)
    assert (kw.epochs, dy.epochs, od.epochs) == (20.0, 10.0, 10.0)
    # neither DCD nor FDConv has a schedule (FDConv's kernel_temp is fixed at 1 in the official config)
    for m in ("condconv", "kerneldna", "static", "dcd", "fdconv"):
        assert not kwlab.METHODS[m].temperature.active
