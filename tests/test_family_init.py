"""The kernel-bank methods' ``init`` (CondConv, DY-Conv, ODConv): "static" copies the static conv into every
kernel (a converted net keeps its function), "kaiming" draws every kernel on its own (the official code's
init for training from scratch). Trained from scratch, the copies are a symmetric start: the reason the
positive-control study's dynamic nets and constant controls stayed where the static net was."""

import pytest
import torch
from torch import nn

import kwlab
from kwlab.experiments.config import ConfigError, RunConfig

METHODS = ("condconv", "dyconv", "odconv")


def _first_bank(model: nn.Module) -> nn.Module:
    return next(m for m in model.modules() if hasattr(m, "weight") and m.weight.dim() == 5)


@pytest.mark.parametrize("method", METHODS)
def test_static_init_copies_the_conv_and_kaiming_draws_every_kernel(method):
    torch.manual_seed(0)
    copied = kwlab.create_model("resnet8_cifar", method=method, num_classes=4, widths=(4, 8, 16))
    torch.manual_seed(0)
    drawn = kwlab.create_model(
        "resnet8_cifar", method=method, num_classes=4, widths=(4, 8, 16), init="kaiming"
    )
    w_copy, w_drawn = _first_bank(copied).weight, _first_bank(drawn).weight
    assert all(torch.equal(w_copy[0], w_copy[k]) for k in range(1, w_copy.shape[0]))
    assert all(not torch.equal(w_drawn[0], w_drawn[k]) for k in range(1, w_drawn.shape[0]))
    # same parameters either way: init changes values, not the model
    assert [n for n, _ in copied.named_parameters()] == [n for n, _ in drawn.named_parameters()]


@pytest.mark.parametrize("method", ("condconv", "dyconv"))
@pytest.mark.parametrize("init, breaks_symmetry", [("static", False), ("kaiming", True)])
def test_a_constant_control_tells_its_kernels_apart_only_when_they_start_apart(method, init, breaks_symmetry):
    """With every kernel a copy the constants' gradient is the same for every kernel (DY-Conv's softmax:
    d loss / d z_k = w_k (g . W_k - sum_j w_j g . W_j) = 0 exactly; CondConv's sigmoid: one shared value), so
    the mixture stays uniform and every kernel keeps getting the same update. Drawn kernels break the tie."""
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=False)
    layer = kwlab.convert(conv, method, attention="constant", init=init)
    x = torch.randn(8, 4, 6, 6)
    layer(x).square().mean().backward()
    grad = layer.attention.z.grad
    assert grad is not None
    assert bool((grad - grad[0]).abs().max() > 1e-7) is breaks_symmetry
    if method == "dyconv" and not breaks_symmetry:
        assert float(grad.abs().max()) < 1e-7


def test_run_config_init_keeps_old_hashes_and_changes_what_it_trains():
    base = dict(arch="resnet8_cifar", method="dyconv", preset="4x", data="synthetic", epochs=1)
    old = RunConfig.from_dict(base)
    assert RunConfig.from_dict({**base, "init": None}).training_hash() == old.training_hash()
    assert RunConfig.from_dict({**base, "init": "kaiming"}).training_hash() != old.training_hash()


@pytest.mark.parametrize(
    "method, value, message",
    [
        ("dyconv", "Kaiming", r"init must be one of \['static', 'kaiming'\]"),
        ("condconv", 1, r"init must be one of"),
        ("dcd", "kaiming", r"init"),
    ],
)
def test_a_bad_init_is_refused_by_name(method, value, message):
    with pytest.raises((ValueError, ConfigError), match=message):
        kwlab.create_model("resnet20_cifar", method=method, num_classes=4, widths=(4, 8, 16), init=value)
