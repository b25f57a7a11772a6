"""kwlab.instruments.metrics against hand-computed examples."""

import math

import pytest
import torch

from kwlab.instruments import metrics

# two samples, one mixture, four cells
ALPHA = torch.tensor([[[0.5, -0.25, 0.25, 0.0]], [[-1.0, 0.0, 0.0, 0.0]]])


def test_negative_fraction_and_mass():
    # negatives: -0.25 and -1.0 out of 8 entries; |neg| = 1.25 of total |alpha| = 2.0
    assert metrics.negative_fraction(ALPHA).item() == pytest.approx(2 / 8)
    assert metrics.negative_mass(ALPHA).item() == pytest.approx(1.25 / 2.0)
    assert metrics.negative_mass(torch.zeros(3)).item() == 0.0
    with pytest.raises(ValueError, match="empty"):
        metrics.negative_fraction(torch.zeros(0))


def test_entropy_and_effective_cells():
    # mixture 1: p = (1/2, 1/4, 1/4, 0) -> H = 1/2 ln 2 + 2 * 1/4 ln 4 = 1.5 ln 2; mixture 2 is one-hot -> 0
    ent = metrics.attention_entropy(ALPHA)
    assert ent.shape == (2, 1)
    assert ent[0, 0].item() == pytest.approx(1.5 * math.log(2))
    assert ent[1, 0].item() == pytest.approx(0.0, abs=1e-9)
    eff = metrics.effective_cells(ALPHA)
    assert eff[0, 0].item() == pytest.approx(2**1.5)
    assert eff[1, 0].item() == pytest.approx(1.0)
    # uniform over n cells -> n effective cells
    assert metrics.effective_cells(torch.full((1, 5), -0.2)).item() == pytest.approx(5.0)


def test_attention_distribution_sums_to_one():
    p = metrics.attention_distribution(ALPHA)
    assert torch.allclose(p[0, 0], torch.tensor([0.5, 0.25, 0.25, 0.0]))
    assert torch.allclose(p.sum(-1), torch.ones(2, 1))


def test_cell_mean_abs_and_top_counts():
    assert torch.allclose(metrics.cell_mean_abs(ALPHA), torch.tensor([0.75, 0.125, 0.125, 0.0]))
    assert metrics.top_cell_counts(ALPHA).tolist() == [2, 0, 0, 0]
    # |0.3| == |-0.3|: ties go to the lowest index; the strongest cell is by magnitude
    assert metrics.top_cell_counts(torch.tensor([[0.3, -0.3, 0.1], [0.1, 0.2, -0.9]])).tolist() == [1, 0, 1]


def test_pairwise_cosine_distance():
    # (1,0), (0,1), (-1,0): distances 1, 2, 1 -> mean 4/3
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]).reshape(3, 1, 2)
    assert metrics.pairwise_cosine_distance(a).item() == pytest.approx(4 / 3)
    # identical inputs -> 0 (a static layer)
    assert metrics.pairwise_cosine_distance(torch.ones(4, 2, 3)).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="at least 2 samples"):
        metrics.pairwise_cosine_distance(torch.ones(1, 2, 3))


def test_zero_cell_mass():
    # shares of the last slot: 0.5 / 1.0 and 0 / 2 -> mean 0.25
    full = torch.tensor([[[0.2, 0.3, 0.5], [1.0, -1.0, 0.0]]])
    assert metrics.zero_cell_mass(full).item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="n \\+ 1"):
        metrics.zero_cell_mass(torch.ones(2, 1))


def test_signed_histogram():
    bins = torch.tensor([-1.0, 0.0, 1.0])
    # [-1, 0): -0.5 and -2 (clamped into the edge bin); [0, 1]: 0, 0.5, 1.0 (the last edge is included)
    counts = metrics.signed_histogram(torch.tensor([-0.5, 0.0, 0.5, 1.0, -2.0]), bins)
    assert counts.tolist() == [2, 3]
    # the default bins have an exact edge at 0: a tiny negative lands on the negative side
    d = metrics.DEFAULT_BINS
    counts = metrics.signed_histogram(torch.tensor([-1e-9, 1e-9]), d)
    assert counts[19].item() == 1 and counts[20].item() == 1 and counts.sum().item() == 2
    with pytest.raises(ValueError, match="bins"):
        metrics.signed_histogram(torch.zeros(3), torch.tensor([0.0]))


def test_class_means_and_distance():
    a = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[3.0, 0.0]]])
    means, counts = metrics.class_means(a, torch.tensor([0, 1, 0]), num_classes=3)
    assert counts.tolist() == [2, 1, 0]
    assert torch.allclose(means[0], torch.tensor([[2.0, 0.0]]))
    assert torch.allclose(means[1], torch.tensor([[0.0, 1.0]]))
    assert torch.isnan(means[2]).all()
    # class means (2,0) and (0,1) are orthogonal -> distance 1; the empty class is skipped
    assert metrics.between_class_distance(means).item() == pytest.approx(1.0)
    assert math.isnan(metrics.between_class_distance(means[:1]).item())
    with pytest.raises(ValueError, match="labels must have shape"):
        metrics.class_means(a, torch.tensor([0, 1]))


def test_signed_histogram_matches_per_bin_reference():
    """Fast (equal-width) and binary-search paths both equal counting each bin by its definition."""
    g = torch.Generator().manual_seed(0)
    edges = metrics.DEFAULT_BINS
    x = torch.cat(
        [
            torch.rand(2000, generator=g) * 2.4 - 1.2,
            edges,
            edges + 1e-7,
            edges - 1e-7,
            torch.tensor([-1e-12, 0.0, 1e-12]),
        ]
    )
    k = edges.numel() - 1
    clamped = x.clamp(edges[0], edges[-1] - 1e-6)  # out-of-range values belong to the edge bins
    ref = [int(((clamped >= edges[i]) & (clamped < edges[i + 1])).sum()) for i in range(k)]
    assert metrics.signed_histogram(x, edges).tolist() == ref
    uneven = torch.tensor([-1.0, -0.3, 0.0, 0.1, 1.0])
    ref = [
        int(((x.clamp(-1, 1 - 1e-6) >= uneven[i]) & (x.clamp(-1, 1 - 1e-6) < uneven[i + 1])).sum())
        for i in range(4)
    ]
    assert metrics.signed_histogram(x, uneven).tolist() == ref


def test_pairwise_cosine_distance_matches_pair_loop():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(7, 3, 5, generator=g, dtype=torch.float64)
    a[3] = 0.0  # an all-zero sample: cosine 0 with every other sample
    v = a.reshape(7, -1)
    dists = []
    for i in range(7):
        for j in range(i + 1, 7):
            den = v[i].norm() * v[j].norm()
            dists.append(1 - (v[i] @ v[j] / den if den > 0 else 0.0))
    assert metrics.pairwise_cosine_distance(a).item() == pytest.approx(
        float(sum(dists) / len(dists)), rel=1e-12
    )


def test_signed_histogram_on_strided_input_with_uneven_bins_warns_nothing():
    """NB05's data-driven bins (linspace, not exactly even) on a transposed alpha: no torch UserWarning
    about non-contiguous input reaches the student, and the counts equal those of the contiguous copy.
    (torch warns once per process, so this test can only fail when it is the first to bin such input.)"""
    import warnings

    alpha = torch.randn(8, 1, 2)[..., :1]  # a one-cell layer's alpha, the zero cell sliced off: strided
    assert not alpha.reshape(-1).is_contiguous()
    bins = torch.tensor([-1.0, -0.3, -0.05, 0.0, 0.1, 0.4, 1.0])  # uneven: the binary-search path
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        counts = metrics.signed_histogram(alpha, bins)
        counts_t = metrics.signed_histogram(alpha, bins.flip(0).flip(0)[::1])
    assert torch.equal(counts, metrics.signed_histogram(alpha.contiguous(), bins))
    assert torch.equal(counts, counts_t) and int(counts.sum()) == alpha.numel()


def test_grid_share_finds_a_two_pixel_grid():
    h = w = 8
    i, j = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    checker = ((-1.0) ** (i + j)).expand(2, 3, h, w)  # (B, C, H, W), summed over channels
    smooth = torch.cos(2 * 3.14159265 * i / h).float()[None] + torch.zeros(1, h, w)  # one slow wave
    g = torch.Generator().manual_seed(0)
    rows = ((-1.0) ** i).float()[None] + 0.1 * torch.randn(1, h, w, generator=g)
    assert torch.allclose(metrics.grid_share(checker), torch.ones(2))
    share = metrics.grid_share(torch.cat([checker[:1].sum(1), smooth, rows]))
    assert share[0] == pytest.approx(1.0) and share[1] < 0.01 and 0.8 < share[2] < 1.0
    noise = torch.randn(256, 16, 16, generator=torch.Generator().manual_seed(1))
    for period in (2, 4):
        expected = metrics.grid_share_of_noise(16, 16, period)
        assert metrics.grid_share(noise, period).mean() == pytest.approx(expected, rel=0.2)
    tile = torch.randn(1, 4, 4, generator=torch.Generator().manual_seed(2)).repeat(1, 4, 4)  # period 4
    assert metrics.grid_share(tile, 4)[0] == pytest.approx(1.0) and metrics.grid_share(tile, 2)[0] < 1
    with pytest.raises(ValueError, match="multiples of period"):
        metrics.grid_share(torch.zeros(1, 5, 4))


# ------------------------------------------------------------------------------- kernel variation
def test_kernel_variation_against_a_per_sample_loop_and_its_cases():
    g = torch.Generator().manual_seed(0)
    kernels = torch.randn(5, 4, 3, 3, 3, generator=g)
    flat = kernels.reshape(5, -1).double()
    mean = flat.mean(0)
    loop = sum(float((flat[b] - mean).norm() / mean.norm()) for b in range(5)) / 5
    assert metrics.kernel_variation(kernels).item() == pytest.approx(loop, rel=1e-5)  # float32
    assert metrics.kernel_variation(kernels.double()).item() == pytest.approx(loop, rel=1e-12)
    # magnitude-aware: W and 2W point the same way (sample_variation 0) but differ by a third of their mean
    w = torch.randn(1, 8, generator=g)
    pair = torch.cat([w, 2 * w])
    assert metrics.sample_variation(pair).item() == pytest.approx(0.0, abs=1e-12)
    assert metrics.kernel_variation(pair).item() == pytest.approx(1 / 3, rel=1e-6)
    # the same kernel for every sample: 0; a common scale changes nothing
    assert metrics.kernel_variation(w.expand(4, -1)).item() == 0.0
    assert metrics.kernel_variation(3 * kernels).item() == pytest.approx(loop, rel=1e-5)
    # nothing to compare against: NaN (left out of means), never a number
    assert math.isnan(metrics.kernel_variation(torch.stack([w[0], -w[0]])).item())  # mean kernel 0
    bad = kernels.clone()
    bad[1, 0, 0, 0, 0] = float("inf")
    assert math.isnan(metrics.kernel_variation(bad).item())
    with pytest.raises(ValueError, match=">= 2"):
        metrics.kernel_variation(kernels[:1])


def test_effective_cell_fraction():
    frac = metrics.effective_cell_fraction(ALPHA)  # n = 4 cells
    assert frac[0, 0].item() == pytest.approx(2**1.5 / 4)
    assert frac[1, 0].item() == pytest.approx(1 / 4)  # one-hot: 1 of 4
    assert metrics.effective_cell_fraction(torch.full((2, 3, 5), -0.2)).allclose(torch.ones(2, 3))


# ------------------------------------------------------------------- every method's per-sample kernels
def _dynamic_layer_inputs(method: str, train: bool):
    """Every dynamic layer of a small ResNet-20 of ``method`` (channels 24-32-32, wide enough for FDConv),
    with every parameter moved off its init so that each attention varies, and the input each layer saw."""
    import kwlab
    from kwlab.experiments.accuracies import recalibrate_batchnorm
    from kwlab.instruments.probe import capture
    from kwlab.layers.base import dynamic_layers

    torch.manual_seed(0)
    options = {"kerneldna": {"wiring": "pairing"}, "fdconv": {"kernel_num": 4}}.get(method, {})
    model = kwlab.create_model("resnet20_cifar", method=method, num_classes=4, widths=[24, 32, 32], **options)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "bn" not in name and "norm" not in name:
                p.add_(torch.randn_like(p) * (0.3 * p.abs().mean() + 0.05))
    kwlab.set_temperature(model, 0.3)  # KW at tau = 1 is its one-hot init pattern: constant attention
    # BatchNorm statistics of these weights (DCD's latent ones overflow without)
    recalibrate_batchnorm(model, [torch.randn(16, 3, 8, 8) for _ in range(4)], 4)
    model.train(train)
    x = torch.randn(4, 3, 8, 8)
    inputs = capture(model, x, "inputs")
    return [(name, layer, inputs[name]) for name, layer in dynamic_layers(model)]


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("method", ["kw", "condconv", "dyconv", "odconv", "kerneldna", "dcd", "fdconv"])
def test_effective_kernels_reproduce_each_samples_output(method, train):
    """conv(x_b, W_b) equals the layer's output for sample b up to a constant per output channel (the bias;
    exactly, where the layer has none), for every dynamic layer of every method, in eval and train mode."""
    import torch.nn.functional as F

    layers = _dynamic_layer_inputs(method, train)
    assert layers
    variations = []
    for name, layer, x in layers:
        if x.dim() != 4:  # DCD's classifier: test_dcd_classifier_kernel_is_the_linear_map_of_each_sample
            continue
        with torch.no_grad():
            out = layer(x)
            kernels = layer.effective_kernels(x)
            seen = layer.FBM(x) if getattr(layer, "FBM", None) is not None else x  # FDConv: kernel after FBM
        assert kernels.shape[0] == x.shape[0]
        for b in range(x.shape[0]):
            ref = F.conv2d(
                seen[b : b + 1].double(),
                kernels[b].double(),
                None,
                layer.stride,
                layer.padding,
                layer.dilation,
                getattr(layer, "groups", 1),
            )[0]
            residual = out[b].double() - ref
            scale = out[b].abs().max().item() + 1e-6
            constant = residual.mean((-2, -1), keepdim=True)
            assert (residual - constant).abs().max().item() <= 2e-4 * scale, (name, b)
            if getattr(layer, "bias", None) is None and method != "dcd":
                assert constant.abs().max().item() <= 2e-4 * scale, (name, b)
        variations.append(metrics.kernel_variation(kernels).item())
    # every layer's kernel moves with the input
    assert all(v > 1e-4 for v in variations), list(zip([n for n, *_ in layers], variations))


def test_kernel_variation_is_zero_for_a_constant_attention():
    for method in ("kw", "dyconv"):
        for _, layer, x in _dynamic_layer_inputs(method, train=False):
            with torch.no_grad():
                alpha = layer.attention(x)[0]
                layer.attention.frozen_alpha = alpha.clone()
                value = metrics.kernel_variation(layer.effective_kernels(x)).item()
            assert value == pytest.approx(0.0, abs=1e-6), method


def test_dcd_classifier_kernel_is_the_linear_map_of_each_sample():
    from kwlab.layers.dcd import DCDLinear

    torch.manual_seed(0)
    layer = DCDLinear(12, 5, bias=False, latent_dim=4, squeeze=6).eval()
    x = torch.randn(3, 12)
    with torch.no_grad():  # running statistics at (0, 1) and BN shifts at 0: no constant, an exact map
        kernels = layer.effective_kernels(x)
        out = layer(x)
    for b in range(3):
        assert torch.allclose(kernels[b] @ x[b], out[b], atol=1e-5)
    assert metrics.kernel_variation(kernels).item() > 1e-3


def test_kw_linear_kernels_are_each_samples_weight_matrix():
    """KWLinear (a KW ViT's value and MLP layers): ``tokens_b @ W_b[..., 0].T + bias = layer(x)[b]``."""
    import kwlab
    from kwlab.instruments.probe import capture
    from kwlab.layers.base import dynamic_layers

    torch.manual_seed(0)
    model = kwlab.create_model("vit_cifar", method="kw", num_classes=4).eval()
    kwlab.set_temperature(model, 0.3)
    x = torch.randn(3, 3, 32, 32)
    inputs = capture(model, x, "inputs")
    for name, layer in list(dynamic_layers(model))[:4]:
        tokens = inputs[name]
        with torch.no_grad():
            kernels = layer.effective_kernels(tokens)
            out = layer(tokens)
        assert kernels.shape == (3, layer.out_features, layer.in_features, 1)
        for b in range(3):
            ref = tokens[b] @ kernels[b, :, :, 0].T + (0 if layer.bias is None else layer.bias)
            assert torch.allclose(ref, out[b], atol=1e-4, rtol=1e-4), name
        assert metrics.kernel_variation(kernels).item() > 0
