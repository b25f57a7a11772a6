"""The execution layer: one entry point for every per-sample-kernel method.

``dynamic_conv`` runs a convolution whose kernel differs per sample (CondConv, DY-Conv, ODConv, ...);
``kw_conv`` does the same for KernelWarehouse, starting from the mixing coefficients and the warehouse
cells. Layers never call ``F.conv2d`` themselves, so the algorithm is chosen here (see
:mod:`kwlab.ops.algorithms` for the candidates and :mod:`kwlab.ops.select` for the choice).

Memory: ``kw_conv`` never keeps the per-sample kernels ``(B, O, C/g, *k)`` for backward. It saves only
``x``, ``alpha`` and the cells, and rebuilds the kernels chunk by chunk in backward, where it also turns the
kernel gradient into gradients w.r.t. ``alpha`` and the cells right away. The ``"unfold"`` algorithm
likewise recomputes its im2col columns in backward instead of saving them. Peak extra memory of a layer
is then one chunk of kernels and columns (:func:`set_chunk_bytes`).
"""

from __future__ import annotations

import math

import torch
import torch.fx
from torch import Tensor

from . import select
from .algorithms import conv_backward, conv_forward
from .contract import contract_applies, contract_backward, contract_forward, contract_sample_bytes
from .layout import CellLayout, assemble_kernel, mix_cells, split_kernels
from .select import time_call
from .unfold import ConvGeometry

__all__ = ["dynamic_conv", "kw_conv", "set_chunk_bytes"]


def __getattr__(name: str):
    # ALGORITHMS lived here once; its one home is kwlab.ops (kwlab.ops.select defines it)
    if name == "ALGORITHMS":
        raise ImportError(
            "kwlab.ops.dynamic.ALGORITHMS moved to kwlab.ops: from kwlab.ops import ALGORITHMS",
            name=__name__,
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# the table kwlab.utils.moved_names would attach (ops imports nothing of kwlab)
__getattr__.moved = {"ALGORITHMS": "kwlab.ops"}


_chunk_bytes = 64 * 2**20


def set_chunk_bytes(nbytes: int) -> None:
    """Upper bound on the temporary per-chunk memory (assembled kernels + im2col columns), default 64 MiB."""
    global _chunk_bytes
    if int(nbytes) < 1:
        raise ValueError(f"nbytes must be positive, got {nbytes!r}")
    _chunk_bytes = int(nbytes)


def _chunks(batch: int, per_sample_bytes: int) -> list[tuple[int, int]]:
    # Traced (torch.compile, torch.export) or a symbolic batch: one chunk, so the graph holds for every batch
    # size (the chunk arithmetic would specialise it to one); the memory bound of chunks is eager mode's.
    if torch.compiler.is_compiling() or not isinstance(batch, int):
        return [(0, batch)]
    size = max(1, min(batch, _chunk_bytes // max(per_sample_bytes, 1)))
    n = math.ceil(batch / size)
    size = math.ceil(batch / n)  # even chunks
    return [(a, min(a + size, batch)) for a in range(0, batch, size)]


def _cols_bytes(algorithm: str, geo: ConvGeometry, channels: int, spatial_out, itemsize: int) -> int:
    if algorithm != "unfold" or (geo.pointwise and all(s == 1 for s in geo.stride)):
        return 0
    return channels * math.prod(geo.kernel) * math.prod(spatial_out) * itemsize


# ----------------------------------------------------------------------------------------------- dynamic_conv
class _DynamicConvFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, geo, algorithm):
        ctx.geo, ctx.algorithm = geo, algorithm
        ctx.save_for_backward(x, weight)
        if algorithm != "unfold":
            return conv_forward(algorithm, x, weight, geo)
        out_sp = geo.out_shape(x.shape[2:])
        per = _cols_bytes(algorithm, geo, x.shape[1], out_sp, x.element_size())
        chunks = _chunks(x.shape[0], per)
        if len(chunks) == 1:
            return conv_forward(algorithm, x, weight, geo)
        out = x.new_empty(x.shape[0], weight.shape[1], *out_sp)
        for a, b in chunks:
            out[a:b] = conv_forward(algorithm, x[a:b], weight[a:b], geo)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        geo, algorithm = ctx.geo, ctx.algorithm
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_out = grad_out.contiguous()
        per = _cols_bytes(algorithm, geo, x.shape[1], grad_out.shape[2:], x.element_size())
        chunks = _chunks(x.shape[0], per) if algorithm == "unfold" else [(0, x.shape[0])]
        if len(chunks) == 1:
            gx, gw = conv_backward(algorithm, x, weight, grad_out, geo, need_x, need_w)
            return gx, gw, None, None
        gx = torch.empty_like(x, memory_format=torch.contiguous_format) if need_x else None
        gw = torch.empty_like(weight) if need_w else None
        for a, b in chunks:
            cx, cw = conv_backward(algorithm, x[a:b], weight[a:b], grad_out[a:b], geo, need_x, need_w)
            if need_x:
                gx[a:b] = cx
            if need_w:
                gw[a:b] = cw
        return gx, gw, None, None


_ORIGINAL: dict = {}  # the undecorated entry points (fx patches the module globals while tracing)


def _traced(fn, args: tuple) -> Tensor | None:
    """Under ``torch.fx.symbolic_trace`` record ``fn`` as one opaque node (its dispatch reads shapes)."""
    for a in args:
        if isinstance(a, torch.fx.Proxy):
            return a.tracer.create_proxy("call_function", fn, args, {})
    return None


def _add_bias(out: Tensor, bias: Tensor | None) -> Tensor:
    if bias is None:
        return out
    if bias.dim() == 1:
        return out + bias.reshape(1, -1, *([1] * (out.dim() - 2)))
    return out + bias.reshape(*bias.shape, *([1] * (out.dim() - 2)))


def _check_bias(bias: Tensor | None, batch: int, out_channels: int) -> None:
    if bias is None:
        return
    if tuple(bias.shape) not in ((out_channels,), (batch, out_channels)):
        raise ValueError(
            f"bias must be (O,) or (B, O) = ({out_channels},) or ({batch}, {out_channels}), "
            f"got {tuple(bias.shape)}"
        )


@torch.fx.wrap
def dynamic_conv(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    algorithm: str = "auto",
) -> Tensor:
    """Convolve sample ``b`` of ``x`` with ``weight[b]``.

    Args:
        x: ``(B, C, *spatial)`` with 1, 2 or 3 spatial dims.
        weight: ``(B, O, C/groups, *k)``.
        bias: ``(O,)`` static or ``(B, O)`` per-sample, or None.
        stride, padding, dilation, groups: as in ``torch.nn.functional.conv2d`` (``padding`` may be
            ``"same"`` or ``"valid"``).
        algorithm: one of :data:`ALGORITHMS`; ``"auto"`` picks an exact one by a rule table measured once
            with benchmarks/bench_speed.py (it does not time this call, so it need not be the fastest on
            this machine; :func:`kwlab.ops.set_benchmark` times the candidates instead; see
            :mod:`kwlab.ops.select`).
    Returns:
        ``(B, O, *spatial_out)``.
    """
    traced = _traced(
        _ORIGINAL["dynamic_conv"], (x, weight, bias, stride, padding, dilation, groups, algorithm)
    )
    if traced is not None:
        return traced
    select.check_algorithm(algorithm)
    if x.dim() not in (3, 4, 5):
        raise ValueError(
            f"x must be (B, C, *spatial) with 1, 2 or 3 spatial dims, got shape {tuple(x.shape)}"
        )
    if weight.dim() != x.dim() + 1 or weight.shape[0] != x.shape[0]:
        raise ValueError(
            f"weight must be (B, O, C/groups, *k) with B = {x.shape[0]}, got {tuple(weight.shape)}"
        )
    geo = ConvGeometry(x.dim() - 2, weight.shape[3:], stride, padding, dilation, groups)
    b, c = x.shape[:2]
    o = weight.shape[1]
    if c % geo.groups or o % geo.groups or weight.shape[2] * geo.groups != c:
        raise ValueError(
            f"groups={geo.groups} does not fit x with {c} channels and weight {tuple(weight.shape)}"
        )
    _check_bias(bias, b, o)
    spatial_out = geo.out_shape(x.shape[2:])

    def timer(algo: str) -> float:
        if not torch.is_grad_enabled():
            return time_call(lambda: _DynamicConvFn.apply(x, weight, geo, algo), x.device)
        xd, wd = x.detach().requires_grad_(), weight.detach().requires_grad_()
        return time_call(lambda: _DynamicConvFn.apply(xd, wd, geo, algo).sum().backward(), x.device)

    algo = select.resolve(algorithm, geo, x, b, spatial_out, c, o, timer)
    return _add_bias(_DynamicConvFn.apply(x, weight, geo, algo), bias)


# ----------------------------------------------------------------------------------------------- kw_conv
def _assemble(alpha: Tensor, cells: Tensor, layout: CellLayout) -> Tensor:
    return assemble_kernel(mix_cells(alpha, cells), layout)


class _KWConvFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha, cells, layout, geo, algorithm):
        ctx.layout, ctx.geo, ctx.algorithm = layout, geo, algorithm
        out_sp = geo.out_shape(x.shape[2:])
        chunks = _kw_chunks(x, layout, geo, algorithm, out_sp)
        if len(chunks) == 1:
            # the whole batch's kernels fit the chunk budget: keep them for backward instead of re-mixing
            w = _assemble(alpha, cells, layout)
            ctx.save_for_backward(x, alpha, cells, w)
            return conv_forward(algorithm, x, w, geo)
        ctx.save_for_backward(x, alpha, cells)
        out = x.new_empty(x.shape[0], layout.out_channels, *out_sp)
        for a, b in chunks:
            out[a:b] = conv_forward(algorithm, x[a:b], _assemble(alpha[a:b], cells, layout), geo)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, alpha, cells, *kept = ctx.saved_tensors
        layout, geo, algorithm = ctx.layout, ctx.geo, ctx.algorithm
        need_x = ctx.needs_input_grad[0]
        need_a, need_c = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        need_w = need_a or need_c
        grad_out = grad_out.contiguous()
        n = cells.shape[0]
        cells_flat = cells.reshape(n, -1)
        acc = torch.float32 if cells.dtype in (torch.float16, torch.bfloat16) else cells.dtype
        gx = torch.empty_like(x, memory_format=torch.contiguous_format) if need_x else None
        ga = torch.empty(alpha.shape, dtype=alpha.dtype, device=alpha.device) if need_a else None
        gc = torch.zeros(cells_flat.shape, dtype=acc, device=cells.device) if need_c else None
        chunks = [(0, x.shape[0])] if kept else _kw_chunks(x, layout, geo, algorithm, grad_out.shape[2:])
        for a, b in chunks:
            al = alpha[a:b]
            w = kept.pop() if kept else _assemble(al, cells, layout)
            cx, cw = conv_backward(algorithm, x[a:b], w, grad_out[a:b], geo, need_x, need_w)
            del w
            if need_x:
                gx[a:b] = cx
            if need_w:
                gm = split_kernels(cw, layout).reshape(-1, cells_flat.shape[1])  # (Bc*m, |cell|)
                del cw
                if need_a:
                    ga[a:b] = torch.mm(gm, cells_flat.t()).reshape(al.shape)
                if need_c:
                    gc.addmm_(al.reshape(-1, n).t().to(acc), gm.to(acc))
        if gc is not None:
            gc = gc.to(cells.dtype).reshape(cells.shape)
        return gx, ga, gc, None, None, None


class _KWContractFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha, cells, layout, geo):
        ctx.layout, ctx.geo = layout, geo
        ctx.save_for_backward(x, alpha, cells)
        out_sp = geo.out_shape(x.shape[2:])
        chunks = _chunks(x.shape[0], contract_sample_bytes(layout, cells.shape[0], out_sp, x.element_size()))
        if len(chunks) == 1:
            return contract_forward(x, alpha, cells, layout, geo)
        out = x.new_empty(x.shape[0], layout.out_channels, *out_sp)
        for a, b in chunks:
            out[a:b] = contract_forward(x[a:b], alpha[a:b], cells, layout, geo)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, alpha, cells = ctx.saved_tensors
        layout, geo = ctx.layout, ctx.geo
        need_x, need_a, need_c = ctx.needs_input_grad[:3]
        grad_out = grad_out.contiguous()
        chunks = _chunks(
            x.shape[0], contract_sample_bytes(layout, cells.shape[0], grad_out.shape[2:], x.element_size())
        )
        acc = torch.float32 if cells.dtype in (torch.float16, torch.bfloat16) else cells.dtype
        gx = torch.empty_like(x, memory_format=torch.contiguous_format) if need_x else None
        ga = torch.empty(alpha.shape, dtype=alpha.dtype, device=alpha.device) if need_a else None
        gcat = None
        for a, b in chunks:
            cx, ca, cc = contract_backward(
                x[a:b], alpha[a:b], cells, grad_out[a:b], layout, geo, need_x, need_a, need_c
            )
            if need_x:
                gx[a:b] = cx
            if need_a:
                ga[a:b] = ca
            if need_c:
                gcat = cc.to(acc) if gcat is None else gcat.add_(cc)
        gc = None
        if need_c:
            n, oc = cells.shape[:2]
            gc = gcat.reshape(oc, n, *cells.shape[2:]).transpose(0, 1).to(cells.dtype).contiguous()
        return gx, ga, gc, None, None


def _fits_one_chunk(x, layout, geo, algorithm) -> bool:
    return len(_kw_chunks(x, layout, geo, algorithm, geo.out_shape(x.shape[2:]))) == 1


def _kw_apply(x, alpha, cells, layout, geo, algorithm, fits: bool | None = None):
    """Run ``algorithm``; ``fits``: whether the batch's kernels fit one chunk (computed when None)."""
    if algorithm == "contract":
        return _KWContractFn.apply(x, alpha, cells, layout, geo)
    if fits is None:
        fits = _fits_one_chunk(x, layout, geo, algorithm)
    if algorithm == "grouped" and fits:
        # The batch's kernels fit the chunk budget, so storing them is fine: plain autograd through the
        # assembly and one grouped conv, whose fused convolution backward is the fastest measured here.
        return conv_forward("grouped", x, _assemble(alpha, cells, layout), geo)
    return _KWConvFn.apply(x, alpha, cells, layout, geo, algorithm)


def _kw_cost(layout: CellLayout, n: int, spatial_out, algorithm: str) -> float:
    """Rough multiply-add count of one training step per sample (used to pick ``"contract"``).

    Kernel assembly costs ``n * |W|`` per pass and runs 4 times in a training step (mix, re-mix in backward,
    gradients w.r.t. alpha and cells) at roughly a third of the matrix-product efficiency of a convolution
    (its inner dimension is only ``n``); the convolution itself costs ``|W| * L`` three times.
    """
    w = math.prod(layout.weight_shape)
    L = math.prod(spatial_out)
    if algorithm == "contract":
        return 3.0 * n * layout.out_channels * layout.cell_in * math.prod(layout.cell_kernel) * L
    return 3.0 * w * L + 4 * 2.5 * n * w


def _kw_chunks(x: Tensor, layout: CellLayout, geo: ConvGeometry, algorithm: str, spatial_out):
    item = x.element_size()
    per = math.prod(layout.weight_shape) * item * 2  # assembled kernel and its gradient
    per += _cols_bytes(algorithm, geo, x.shape[1], spatial_out, item)
    return _chunks(x.shape[0], per)


@torch.fx.wrap
def kw_conv(
    x: Tensor,
    alpha: Tensor,
    cells: Tensor,
    layout: CellLayout,
    bias: Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    algorithm: str = "auto",
) -> Tensor:
    """KernelWarehouse convolution from mixing coefficients.

    Equals ``dynamic_conv(x, assemble_kernel(mix_cells(alpha, cells), layout), ...)``, but stores the
    per-sample kernels for backward only when the whole batch fits the chunk budget
    (:func:`set_chunk_bytes`, 64 MiB by default); larger ones are rebuilt chunk by chunk in backward.

    Args:
        x: ``(B, C, *spatial)``; a linear layer passes ``(B, C, N)`` with a 1-d layout and kernel ``(1,)``.
        alpha: ``(B, m, n)`` mixing coefficients (zero cell already dropped).
        cells: the warehouse ``(n, o_c, i_c, *k_c)``.
        layout: how the ``m`` mixed cells tile this layer's kernel (:class:`CellLayout`).
        bias: static ``(O,)`` or per-sample ``(B, O)``, or None.
        stride, padding, dilation, groups: as in ``torch.nn.functional.conv2d``.
        algorithm: one of :data:`ALGORITHMS`.
    Returns:
        ``(B, O, *spatial_out)``.
    """
    traced = _traced(
        _ORIGINAL["kw_conv"], (x, alpha, cells, layout, bias, stride, padding, dilation, groups, algorithm)
    )
    if traced is not None:
        return traced
    select.check_algorithm(algorithm)
    if x.dim() != layout.dim + 2:
        raise ValueError(
            f"x must be (B, C, *spatial) with {layout.dim} spatial dims for this layout, "
            f"got shape {tuple(x.shape)}"
        )
    b, c = x.shape[:2]
    if alpha.dim() != 3 or alpha.shape[0] != b or alpha.shape[1] != layout.num_mixtures:
        raise ValueError(
            f"alpha must be (B, m, n) = ({b}, {layout.num_mixtures}, n), got {tuple(alpha.shape)}"
        )
    if tuple(cells.shape[1:]) != layout.cell_shape or cells.shape[0] != alpha.shape[2]:
        raise ValueError(
            f"cells must be (n, *cell) = ({alpha.shape[2]}, {', '.join(map(str, layout.cell_shape))})"
            f", got {tuple(cells.shape)}"
        )
    geo = ConvGeometry(layout.dim, layout.kernel_size, stride, padding, dilation, groups)
    if c != layout.in_per_group * geo.groups:
        raise ValueError(
            f"x has {c} channels but the layout expects in_per_group * groups = "
            f"{layout.in_per_group} * {geo.groups}"
        )
    o = layout.out_channels
    _check_bias(bias, b, o)
    if torch.is_autocast_enabled(x.device.type):
        dt = torch.get_autocast_dtype(x.device.type)
        x, alpha, cells = x.to(dt), alpha.to(dt), cells.to(dt)
    else:
        alpha, cells = alpha.to(x.dtype), cells.to(x.dtype)
    spatial_out = geo.out_shape(x.shape[2:])

    def timer(algo: str) -> float:
        if not torch.is_grad_enabled():
            return time_call(lambda: _kw_apply(x, alpha, cells, layout, geo, algo), x.device)
        xd, ad, cd = (t.detach().requires_grad_() for t in (x, alpha, cells))
        return time_call(lambda: _kw_apply(xd, ad, cd, layout, geo, algo).sum().backward(), x.device)

    fits = _fits_one_chunk(x, layout, geo, "grouped")
    algo = select.resolve(
        algorithm,
        geo,
        x,
        b,
        spatial_out,
        c,
        o,
        timer,
        contract_applies(layout, geo),
        lambda a: _kw_cost(layout, cells.shape[0], spatial_out, a),
        kernels_fit=fits,
    )
    return _add_bias(_kw_apply(x, alpha, cells, layout, geo, algo, fits if algo == "grouped" else None), bias)


_ORIGINAL.update(dynamic_conv=dynamic_conv, kw_conv=kw_conv)
