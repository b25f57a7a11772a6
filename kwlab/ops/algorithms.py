"""The exact algorithms for a convolution with one kernel per sample, forward and backward, no autograd.

Every algorithm computes ``out[b] = conv(x[b], weight[b])`` for ``x (B, C, *S)`` and ``weight
(B, O, C/g, *k)``; they differ only in how the work is laid out:

* ``"grouped"``: fold the batch into channels and run one grouped convolution (``groups = g * B``), the
  trick of the official KernelWarehouse / ODConv code. Fast with cuDNN; slow and memory-hungry on CPU.
* ``"loop"``: one ordinary convolution per sample (oneDNN / cuDNN with batch 1).
* ``"unfold"``: im2col of the input and one batched matrix product per chunk of samples.
* ``"matmul"``: the same batched matrix product for unpadded 1x1 convolutions (and linear layers), where the
  columns are a view of the input and no im2col copy is made.

Backward functions return ``(grad_x, grad_weight)`` (None where not asked for).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .reference import conv_nd
from .unfold import ConvGeometry, fold_nd, unfold_nd

__all__ = ["IMPLEMENTED", "conv_forward", "conv_backward"]

IMPLEMENTED = ("grouped", "loop", "unfold", "matmul")


def _grouped_forward(x: Tensor, w: Tensor, geo: ConvGeometry) -> Tensor:
    b = x.shape[0]
    conv = conv_nd(geo.dim)
    out = conv(
        x.reshape(1, -1, *x.shape[2:]),
        w.reshape(-1, *w.shape[2:]),
        None,
        geo.stride,
        geo.padding,
        geo.dilation,
        geo.groups * b,
    )
    return out.reshape(b, w.shape[1], *out.shape[2:])


def _grouped_backward(x, w, gout, geo, need_x, need_w):
    b = x.shape[0]
    gx, gw, _ = torch.ops.aten.convolution_backward(
        gout.reshape(1, -1, *gout.shape[2:]),
        x.reshape(1, -1, *x.shape[2:]),
        w.reshape(-1, *w.shape[2:]),
        None,
        list(geo.stride),
        list(geo.padding),
        list(geo.dilation),
        False,
        [0] * geo.dim,
        geo.groups * b,
        [need_x, need_w, False],
    )
    return (gx.reshape(x.shape) if need_x else None), (gw.reshape(w.shape) if need_w else None)


def _loop_forward(x: Tensor, w: Tensor, geo: ConvGeometry) -> Tensor:
    conv = conv_nd(geo.dim)
    outs = [
        conv(x[i : i + 1], w[i], None, geo.stride, geo.padding, geo.dilation, geo.groups)
        for i in range(x.shape[0])
    ]
    return torch.cat(outs, 0)


def _loop_backward(x, w, gout, geo, need_x, need_w):
    gx = torch.empty_like(x) if need_x else None
    gw = torch.empty_like(w) if need_w else None
    for i in range(x.shape[0]):
        a, bw, _ = torch.ops.aten.convolution_backward(
            gout[i : i + 1],
            x[i : i + 1],
            w[i],
            None,
            list(geo.stride),
            list(geo.padding),
            list(geo.dilation),
            False,
            [0] * geo.dim,
            geo.groups,
            [need_x, need_w, False],
        )
        if need_x:
            gx[i] = a[0]
        if need_w:
            gw[i] = bw
    return gx, gw


def _unfold_forward(x: Tensor, w: Tensor, geo: ConvGeometry) -> Tensor:
    b, o = w.shape[:2]
    g = geo.groups
    out_sp = geo.out_shape(x.shape[2:])
    cols = unfold_nd(x, geo).reshape(b, g, -1, _prod(out_sp))  # (B, g, C/g*K, L)
    out = torch.matmul(w.reshape(b, g, o // g, -1), cols)  # (B, g, O/g, L)
    return out.reshape(b, o, *out_sp)


def _unfold_backward(x, w, gout, geo, need_x, need_w):
    b, o = w.shape[:2]
    g = geo.groups
    gout = gout.reshape(b, g, o // g, -1)  # (B, g, O/g, L)
    wm = w.reshape(b, g, o // g, -1)  # (B, g, O/g, C/g*K)
    gx = gw = None
    if need_w:
        cols = unfold_nd(x, geo).reshape(b, g, wm.shape[-1], -1)
        gw = torch.matmul(gout, cols.transpose(-1, -2)).reshape(w.shape)
        del cols
    if need_x:
        gcols = torch.matmul(wm.transpose(-1, -2), gout)  # (B, g, C/g*K, L)
        gx = fold_nd(gcols.reshape(b, -1, gcols.shape[-1]), tuple(x.shape[2:]), geo)
    return gx, gw


def _prod(t) -> int:
    p = 1
    for v in t:
        p *= int(v)
    return p


_FORWARD = {
    "grouped": _grouped_forward,
    "loop": _loop_forward,
    "unfold": _unfold_forward,
    "matmul": _unfold_forward,
}
_BACKWARD = {
    "grouped": _grouped_backward,
    "loop": _loop_backward,
    "unfold": _unfold_backward,
    "matmul": _unfold_backward,
}


def conv_forward(algorithm: str, x: Tensor, weight: Tensor, geo: ConvGeometry) -> Tensor:
    """``out[b] = conv(x[b], weight[b])`` with the named algorithm (no bias, no autograd)."""
    return _FORWARD[algorithm](x, weight, geo)


def conv_backward(
    algorithm: str,
    x: Tensor,
    weight: Tensor,
    grad_out: Tensor,
    geo: ConvGeometry,
    need_x: bool = True,
    need_weight: bool = True,
) -> tuple[Tensor | None, Tensor | None]:
    """Gradients of :func:`conv_forward` w.r.t. ``x`` and ``weight``."""
    return _BACKWARD[algorithm](x, weight, grad_out, geo, need_x, need_weight)
