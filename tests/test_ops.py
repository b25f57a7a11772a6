"""Every execution algorithm against the per-sample reference loop, forward and backward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kwlab import ops
from kwlab.ops import CellLayout, assemble_kernel, dynamic_conv, kw_conv, mix_cells, per_sample_conv
from kwlab.ops.dynamic import set_chunk_bytes

DYN_ALGOS = ("grouped", "loop", "unfold")
KW_ALGOS = ("grouped", "loop", "unfold", "contract")

# (dim, C, O, kernel, stride, padding, dilation, groups, spatial)
GEOMETRIES = [
    (2, 6, 4, 3, 1, 1, 1, 1, 7),
    (2, 6, 4, 3, 2, 1, 1, 2, 8),  # stride + groups
    (2, 6, 6, 3, 1, 2, 2, 6, 7),  # depthwise + dilation
    (2, 4, 6, 1, 2, 0, 1, 1, 7),  # strided 1x1
    (1, 6, 4, 3, 1, 1, 1, 1, 9),  # conv1d
    (1, 6, 4, 1, 1, 0, 1, 1, 5),  # linear-shaped (B, C, N)
    (3, 4, 4, 3, 2, 1, 1, 1, 5),  # conv3d
    (2, 4, 4, (3, 1), (1, 2), (1, 0), 1, 1, 6),  # non-square
]


def _tol(dtype):
    return dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)


def _ks(k, dim):
    return tuple(k) if isinstance(k, tuple) else (k,) * dim


def _algos(base, k, padding):
    pw = all(v == 1 for v in k) and not any(_ks(padding, len(k)))
    return base + (("matmul",) if pw else ())


@pytest.mark.parametrize("geo", GEOMETRIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dynamic_conv_matches_reference(geo, dtype):
    dim, c, o, k, s, p, d, g, sp = geo
    k = _ks(k, dim)
    torch.manual_seed(0)
    b = 3
    x = torch.randn(b, c, *([sp] * dim), dtype=dtype, requires_grad=True)
    w = torch.randn(b, o, c // g, *k, dtype=dtype, requires_grad=True)
    bias = torch.randn(b, o, dtype=dtype, requires_grad=True)
    ref = per_sample_conv(x, w, bias, s, p, d, g)
    gout = torch.randn_like(ref)
    rg = torch.autograd.grad(ref, (x, w, bias), gout)
    for algo in _algos(DYN_ALGOS, k, p):
        out = dynamic_conv(x, w, bias, s, p, d, g, algorithm=algo)
        torch.testing.assert_close(out, ref, **_tol(dtype), msg=algo)
        for got, want in zip(torch.autograd.grad(out, (x, w, bias), gout), rg):
            torch.testing.assert_close(got, want, **_tol(dtype), msg=algo)


def _layout(dim, c, o, k, g, spatial_partition=True):
    ipg = c // g
    cell_in = ipg if ipg == 1 else ipg // 2
    cell_out = o // 2
    kc = (1,) * dim if spatial_partition else k
    return CellLayout(o, ipg, k, cell_out, cell_in, kc)


@pytest.mark.parametrize("geo", GEOMETRIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("spatial_partition", [True, False])
def test_kw_conv_matches_reference(geo, dtype, spatial_partition):
    dim, c, o, k, s, p, d, g, sp = geo
    k = _ks(k, dim)
    torch.manual_seed(1)
    layout = _layout(dim, c, o, k, g, spatial_partition)
    b, n = 5, 7  # odd batch
    x = torch.randn(b, c, *([sp] * dim), dtype=dtype, requires_grad=True)
    alpha = torch.randn(b, layout.num_mixtures, n, dtype=dtype, requires_grad=True)
    cells = torch.randn(n, *layout.cell_shape, dtype=dtype, requires_grad=True)
    bias = torch.randn(o, dtype=dtype, requires_grad=True)
    # reference: the official construction, then one plain conv per sample
    ref = per_sample_conv(x, assemble_kernel(mix_cells(alpha, cells), layout), bias, s, p, d, g)
    gout = torch.randn_like(ref)
    inputs = (x, alpha, cells, bias)
    rg = torch.autograd.grad(ref, inputs, gout)
    algos = _algos(KW_ALGOS, k, p)
    if g > 1:
        algos = tuple(a for a in algos if a != "contract")
    for algo in algos + ("auto",):
        out = kw_conv(x, alpha, cells, layout, bias, s, p, d, g, algorithm=algo)
        torch.testing.assert_close(out, ref, **_tol(dtype), msg=algo)
        for got, want in zip(torch.autograd.grad(out, inputs, gout), rg):
            torch.testing.assert_close(got, want, **_tol(dtype), msg=algo)


@pytest.mark.parametrize("algo", KW_ALGOS)
def test_kw_conv_chunked_batch1_channels_last_frozen_alpha(algo):
    """Tiny chunk budget (one sample per chunk), batch 1, channels_last input, expanded (frozen) alpha."""
    torch.manual_seed(2)
    layout = CellLayout(8, 6, (3, 3), 4, 3, (1, 1))
    n = 5
    cells = torch.randn(n, *layout.cell_shape, dtype=torch.float64, requires_grad=True)
    set_chunk_bytes(1)
    try:
        for b in (1, 3):
            x = torch.randn(b, 6, 6, 6, dtype=torch.float64).to(memory_format=torch.channels_last)
            x.requires_grad_()
            base = torch.randn(layout.num_mixtures, n, dtype=torch.float64, requires_grad=True)
            alpha = base.unsqueeze(0).expand(b, -1, -1)
            ref = per_sample_conv(x, assemble_kernel(mix_cells(alpha, cells), layout), None, 1, 1)
            gout = torch.randn_like(ref)
            rg = torch.autograd.grad(ref, (x, base, cells), gout)
            out = kw_conv(x, alpha, cells, layout, None, 1, 1, algorithm=algo)
            torch.testing.assert_close(out, ref)
            for got, want in zip(torch.autograd.grad(out, (x, base, cells), gout), rg):
                torch.testing.assert_close(got, want)
    finally:
        set_chunk_bytes(64 * 2**20)


def test_dynamic_conv_chunked_unfold_and_static_bias():
    torch.manual_seed(3)
    x = torch.randn(4, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 5, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(5, dtype=torch.float64)
    ref = per_sample_conv(x, w, bias, 1, "same")
    set_chunk_bytes(1)
    try:
        out = dynamic_conv(x, w, bias, 1, "same", algorithm="unfold")
    finally:
        set_chunk_bytes(64 * 2**20)
    torch.testing.assert_close(out, ref)
    gout = torch.randn_like(ref)
    for got, want in zip(torch.autograd.grad(out, (x, w), gout), torch.autograd.grad(ref, (x, w), gout)):
        torch.testing.assert_close(got, want)


def test_same_weight_for_every_sample_equals_static_conv():
    """Invariant: identical per-sample kernels give the ordinary convolution."""
    torch.manual_seed(4)
    x = torch.randn(3, 4, 9, 9)
    w = torch.randn(6, 4, 3, 3)
    for algo in DYN_ALGOS:
        out = dynamic_conv(x, w.expand(3, -1, -1, -1, -1), None, 2, 1, algorithm=algo)
        torch.testing.assert_close(out, F.conv2d(x, w, None, 2, 1), msg=algo)


def test_use_algorithm_setter_and_context(monkeypatch):
    from kwlab.ops import algorithms

    seen = []
    real = algorithms._FORWARD["loop"]
    monkeypatch.setitem(algorithms._FORWARD, "loop", lambda *a: seen.append("loop") or real(*a))
    x, w = torch.randn(2, 3, 5, 5), torch.randn(2, 4, 3, 3, 3)
    assert ops.get_algorithm() == "auto"
    with ops.use_algorithm("loop"):
        assert ops.get_algorithm() == "loop"
        dynamic_conv(x, w, padding=1)
        with ops.use_algorithm("matmul"):  # does not fit a 3x3 kernel: falls back to auto
            dynamic_conv(x, w, padding=1)
    assert ops.get_algorithm() == "auto" and seen == ["loop"]
    ops.use_algorithm("loop")
    try:
        dynamic_conv(x, w, padding=1, algorithm="grouped")  # explicit argument wins
        assert seen == ["loop"]
    finally:
        ops.use_algorithm("auto")


def test_benchmark_mode_picks_a_candidate_and_caches():
    from kwlab.ops import select

    torch.manual_seed(5)
    layout = CellLayout(4, 4, (3, 3), 4, 4, (1, 1))
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    alpha = torch.randn(2, 9, 3, requires_grad=True)
    cells = torch.randn(3, 4, 4, 1, 1, requires_grad=True)
    ops.set_benchmark(True)
    try:
        out = kw_conv(x, alpha, cells, layout, None, 1, 1)
        assert len(select._cache) == 1 and next(iter(select._cache.values())) in KW_ALGOS
    finally:
        ops.set_benchmark(False)
    ref = per_sample_conv(x, assemble_kernel(mix_cells(alpha, cells), layout), None, 1, 1)
    torch.testing.assert_close(out, ref)


def test_bad_arguments_name_the_parameter():
    x, w = torch.randn(2, 3, 5, 5), torch.randn(2, 4, 3, 3, 3)
    with pytest.raises(ValueError, match="algorithm must be one of"):
        dynamic_conv(x, w, algorithm="fast")
    with pytest.raises(ValueError, match="algorithm='matmul'"):
        dynamic_conv(x, w, algorithm="matmul")
    with pytest.raises(ValueError, match="algorithm='contract'"):
        dynamic_conv(x, w, algorithm="contract")
    with pytest.raises(ValueError, match="weight must be"):
        dynamic_conv(x, w[:1])
    with pytest.raises(ValueError, match="padding must be"):
        dynamic_conv(x, w, padding="full")
    with pytest.raises(ValueError, match="use_algorithm|algorithm must be"):
        ops.use_algorithm("nope")
    layout = CellLayout(4, 3, (3, 3), 4, 3, (1, 1))
    with pytest.raises(ValueError, match="alpha must be"):
        kw_conv(x, torch.randn(2, 8, 2), torch.randn(2, 4, 3, 1, 1), layout)
    with pytest.raises(ValueError, match="cells must be"):
        kw_conv(x, torch.randn(2, 9, 2), torch.randn(2, 4, 2, 1, 1), layout)


def test_fx_trace_keeps_dispatch_opaque_and_compile_works():
    layout = CellLayout(4, 4, (3, 3), 4, 4, (1, 1))

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cells = torch.nn.Parameter(torch.randn(3, 4, 4, 1, 1))
            self.fc = torch.nn.Linear(4, 27)

        def forward(self, x):
            alpha = self.fc(x.mean((2, 3))).reshape(x.shape[0], 9, 3)
            return kw_conv(x, alpha, self.cells, layout, None, 1, 1)

    m = M()
    x = torch.randn(2, 4, 6, 6)
    gm = torch.fx.symbolic_trace(m)
    assert any(nd.op == "call_function" and nd.target is kw_conv for nd in gm.graph.nodes)
    torch.testing.assert_close(gm(x), m(x))
    try:
        compiled = torch.compile(m, backend="eager")
    except RuntimeError as e:  # pragma: no cover - platform without dynamo
        pytest.skip(str(e))
    torch.testing.assert_close(compiled(x), m(x))
