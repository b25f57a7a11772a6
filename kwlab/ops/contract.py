"""The ``"contract"`` algorithm of ``kw_conv``: contract the input with the coefficients first, never build
a per-sample kernel.

With mixture ``j = (s, o, i)`` (kernel position ``s``, output block ``o``, input block ``i``), the output
block ``o`` of sample ``b`` is

    out[b, o] = sum_{s,i} w_{b,(s,o,i)} @ cols_b[(s,i)] = sum_t E_t @ Z[b, o, t],
    Z[b, o, t] = sum_{s,i} alpha[b, (s,o,i), t] * cols_b[(s,i)]                   (i_c x L)

so the whole layer is one small batched product (building ``Z``, ``n * m * i_c * L`` multiply-adds per sample)
and ONE large matrix product of the concatenated cells ``(o_c, n * i_c)`` with ``Z`` for all samples at once
(``n * O * i_c * L``, i.e. ``n * G_o / m`` times the static convolution). It wins where the spatial output
``L`` is small compared with the warehouse size ``n`` (late ResNet stages), where kernel assembly
(``n * |W|`` per sample) would dominate. Needs ``groups == 1`` and cells that are either 1x1 spatially
(spatial partition) or the whole kernel.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .layout import CellLayout
from .unfold import ConvGeometry, fold_nd, unfold_view

__all__ = ["contract_applies", "contract_forward", "contract_backward", "contract_sample_bytes"]


def contract_applies(layout: CellLayout, geo: ConvGeometry) -> bool:
    """Whether the ``"contract"`` algorithm supports this layer."""
    spatial_cells = all(k == 1 for k in layout.cell_kernel)
    whole_cells = tuple(layout.cell_kernel) == tuple(layout.kernel_size)
    return geo.groups == 1 and (spatial_cells or whole_cells)


class _Plan:
    """Shapes of one call."""

    def __init__(self, layout: CellLayout, geo: ConvGeometry, spatial_out) -> None:
        self.d = layout.dim
        self.spatial_partition = all(k == 1 for k in layout.cell_kernel) and math.prod(layout.kernel_size) > 1
        self.k = tuple(layout.kernel_size)
        self.K = math.prod(self.k)
        self.gi, self.go, self.gs = layout.groups_in, layout.groups_out, layout.groups_spatial
        self.ic, self.oc = layout.cell_in, layout.cell_out
        self.q = self.ic * (1 if self.spatial_partition else self.K)  # inner size of one input block
        self.P = self.gs * self.gi  # input blocks (positions x channels)
        self.sp_out = tuple(spatial_out)
        self.L = math.prod(spatial_out)


def _cols(x: Tensor, geo: ConvGeometry, p: _Plan) -> Tensor:
    """``(B, P, q * L)`` with ``P = (s, i)`` and ``q = (i_c[, *k])``."""
    b, d = x.shape[0], p.d
    v = unfold_view(x, geo).reshape(b, p.gi, p.ic, *p.sp_out, *p.k)  # (B, G_i, i_c, *L, *k)
    ks = tuple(range(3 + d, 3 + 2 * d))
    ls = tuple(range(3, 3 + d))
    if p.spatial_partition:
        v = v.permute(0, *ks, 1, 2, *ls)  # (B, *k, G_i, i_c, *L)
    else:
        v = v.permute(0, 1, 2, *ks, *ls)  # (B, G_i, i_c, *k, *L)
    return v.reshape(b, p.P, p.q * p.L)


def _uncols(gcols: Tensor, spatial, geo: ConvGeometry, p: _Plan) -> Tensor:
    """Adjoint of :func:`_cols`: ``(B, P, q * L)`` -> ``(B, C, *spatial)``."""
    b, d = gcols.shape[0], p.d
    if p.spatial_partition:
        g = gcols.reshape(b, *p.k, p.gi, p.ic, p.L)
        g = g.permute(0, d + 1, d + 2, *range(1, d + 1), d + 3)  # (B, G_i, i_c, *k, L)
    else:
        g = gcols
    return fold_nd(g.reshape(b, p.gi * p.ic * p.K, p.L), tuple(spatial), geo)


def _alpha2(alpha: Tensor, p: _Plan) -> Tensor:
    """``(B, m, n)`` in the official (s, o, i) order -> ``(B, G_o * n, P)``."""
    b, _, n = alpha.shape
    a = alpha.reshape(b, p.gs, p.go, p.gi, n).permute(0, 2, 4, 1, 3)
    return a.reshape(b, p.go * n, p.P)


def _alpha2_back(ga2: Tensor, n: int, p: _Plan) -> Tensor:
    b = ga2.shape[0]
    g = ga2.reshape(b, p.go, n, p.gs, p.gi).permute(0, 3, 1, 4, 2)
    return g.reshape(b, p.gs * p.go * p.gi, n)


def _cells_cat(cells: Tensor) -> Tensor:
    """``(n, o_c, i_c, *k_c)`` -> ``(o_c, n * q)``."""
    n, oc = cells.shape[:2]
    return cells.transpose(0, 1).reshape(oc, -1)


def contract_sample_bytes(layout: CellLayout, n: int, spatial_out, itemsize: int) -> int:
    """Temporary bytes per sample (``Z``, its gradient, the columns and their gradient)."""
    L = math.prod(spatial_out)
    q = layout.cell_in * math.prod(layout.cell_kernel)
    P = layout.groups_spatial * layout.groups_in
    return (2 * layout.groups_out * n * q * L + 2 * P * q * L + layout.out_channels * L) * itemsize


def contract_forward(
    x: Tensor, alpha: Tensor, cells: Tensor, layout: CellLayout, geo: ConvGeometry
) -> Tensor:
    """``out (B, O, *S_out)`` of the KW convolution (no bias, no autograd)."""
    b, n = x.shape[0], cells.shape[0]
    p = _Plan(layout, geo, geo.out_shape(x.shape[2:]))
    z = torch.matmul(_alpha2(alpha, p), _cols(x, geo, p))  # (B, G_o*n, q*L)
    zt = z.reshape(b, p.go, n, p.q, p.L).permute(2, 3, 0, 1, 4).reshape(n * p.q, b * p.go * p.L)
    del z
    out_t = torch.mm(_cells_cat(cells), zt)  # (o_c, B*G_o*L)
    return out_t.reshape(p.oc, b, p.go, p.L).permute(1, 2, 0, 3).reshape(b, layout.out_channels, *p.sp_out)


def contract_backward(
    x: Tensor,
    alpha: Tensor,
    cells: Tensor,
    grad_out: Tensor,
    layout: CellLayout,
    geo: ConvGeometry,
    need_x: bool,
    need_alpha: bool,
    need_cells: bool,
):
    """``(grad_x, grad_alpha, grad_cells_cat (o_c, n*q) or None)`` for one chunk of samples."""
    b, n = x.shape[0], cells.shape[0]
    p = _Plan(layout, geo, grad_out.shape[2:])
    cols = _cols(x, geo, p)
    a2 = _alpha2(alpha, p)
    e_cat = _cells_cat(cells)
    g_t = grad_out.reshape(b, p.go, p.oc, p.L).permute(2, 0, 1, 3).reshape(p.oc, b * p.go * p.L)
    g_cat = gx = ga = None
    if need_cells:
        z = torch.matmul(a2, cols)
        zt = z.reshape(b, p.go, n, p.q, p.L).permute(2, 3, 0, 1, 4).reshape(n * p.q, b * p.go * p.L)
        del z
        g_cat = torch.mm(g_t, zt.t())  # (o_c, n*q)
        del zt
    if need_x or need_alpha:
        gz = torch.mm(e_cat.t(), g_t)  # (n*q, B*G_o*L)
        gz = gz.reshape(n, p.q, b, p.go, p.L).permute(2, 3, 0, 1, 4).reshape(b, p.go * n, p.q * p.L)
        if need_alpha:
            ga = _alpha2_back(torch.matmul(gz, cols.transpose(1, 2)), n, p)
        if need_x:
            gx = _uncols(torch.matmul(a2.transpose(1, 2), gz), x.shape[2:], geo, p)
    return gx, ga, g_cat
