"""kwlab.instruments.freeze: frozen output == running every layer with its data-mean alpha (hand-walked
reference)."""

import pytest
import torch

from kwlab.instruments.freeze import freeze_attention, unfreeze_attention
from kwlab.instruments.probe import capture
from kwlab.testing import TinyDynamicNet, hook_count, reference_forward

LAYERS = ["stem", "layer1.0.conv", "layer1.1.conv"]


def setup():
    torch.manual_seed(0)
    net = TinyDynamicNet(signed=True)
    g = torch.Generator().manual_seed(3)
    data = [(torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 3, (4,), generator=g)) for _ in range(3)]
    return net, data


def reference_means(net, xs):
    with torch.no_grad():
        fulls = [reference_forward(net, x)[1] for x in xs]
    return {n: torch.cat([f[n][..., :-1] for f in fulls]).mean(0) for n in LAYERS}


def test_frozen_output_equals_mean_alpha_reference_and_unfreeze_restores():
    net, data = setup()
    x_test = torch.randn(5, 3, 8, 8)
    with torch.no_grad():
        dynamic = net(x_test)
    means = reference_means(net, [x for x, _ in data[:2]])
    handle = freeze_attention(net, data, max_batches=2)
    for name in LAYERS:
        assert torch.allclose(handle.alphas[name], means[name], atol=1e-6)
    with torch.no_grad():
        frozen = net(x_test)
        expected, _ = reference_forward(net, x_test, alphas=means)
    assert torch.allclose(frozen, expected, atol=1e-5)
    assert not torch.allclose(frozen, dynamic, atol=1e-4)  # freezing did change the model
    # every sample now gets the same coefficients
    a = net.stem.attention(x_test)
    assert torch.equal(a[0], a[-1])
    unfreeze_attention(net)
    with torch.no_grad():
        assert torch.equal(net(x_test), dynamic)
    assert net.stem.attention.frozen_alpha is None and net.layer1[1].conv.attention.frozen_alpha is None
    assert hook_count(net) == 0


def test_context_manager_restores_mode_and_state():
    net, data = setup()
    net.train()
    x_test = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        dynamic = net(x_test)
    with freeze_attention(net, data) as handle:
        assert net.training  # measured in eval mode, mode given back
        assert set(handle.alphas) == set(LAYERS)
        assert net.layer1[0].conv.attention.frozen_alpha is not None
    assert all(b.conv.attention.frozen_alpha is None for b in net.layer1)
    with torch.no_grad():
        assert torch.equal(net(x_test), dynamic)


def test_single_tensor_and_layer_subset():
    net, data = setup()
    x = data[0][0]
    means = reference_means(net, [x])
    with freeze_attention(net, x, layers="layer1.1.*"):
        assert net.stem.attention.frozen_alpha is None
        assert torch.allclose(net.layer1[1].conv.attention.frozen_alpha, means["layer1.1.conv"], atol=1e-6)
    with pytest.raises(ValueError, match="max_batches"):
        freeze_attention(net, data, max_batches=0)


def test_kw_resnet20_freeze_matches_patched_mean_alpha(kw_resnet20):
    """On a real KW resnet20: frozen == the model with every attention replaced by its constant mean."""
    from kwlab.layers.base import dynamic_layers

    model = kw_resnet20
    torch.manual_seed(2)
    data = [torch.randn(4, 3, 16, 16) for _ in range(2)]
    x_test = torch.randn(3, 3, 16, 16)
    means = {}
    for xb in data:
        for name, inp in capture(model, xb).items():
            with torch.no_grad():
                a = dict(dynamic_layers(model))[name].attention.coefficients(inp)[..., :-1]
            means.setdefault(name, []).append(a)
    means = {n: torch.cat(v).mean(0) for n, v in means.items()}
    with torch.no_grad():
        dynamic = model(x_test)
        with freeze_attention(model, data):
            frozen = model(x_test)
        restored = model(x_test)
        for name, layer in dynamic_layers(model):  # reference: attention replaced by the constant mean
            layer.attention.forward = lambda inp, a=means[name]: a.expand(inp.shape[0], -1, -1)
        try:
            expected = model(x_test)
        finally:
            for _, layer in dynamic_layers(model):
                del layer.attention.forward
    assert torch.allclose(frozen, expected, atol=1e-4, rtol=1e-4)
    assert torch.equal(restored, dynamic)
    assert not torch.equal(frozen, dynamic)
