"""How a kernel is cut into cells: the :class:`CellLayout` and kernel assembly.

A kernel ``W`` of shape ``(O, I/g, *k)`` is cut into ``m = G_s * G_o * G_i`` cells of shape
``(o_c, i_c, *k_c)``: ``G_o = O / o_c`` blocks of output channels, ``G_i = (I/g) / i_c`` blocks of input
channels and ``G_s = prod(k) / prod(k_c)`` spatial positions (``k_c`` is all ones with spatial
partition, the full kernel without). Mixture ``j`` fills the block

    j = (s * G_o + o) * G_i + i      (spatial-major, as the official KernelWarehouse code)
    W[o*o_c : (o+1)*o_c, i*i_c : (i+1)*i_c, position s] = w_j

so ``alpha[:, j]`` of a KW layer always refers to the same block of the kernel as in the official code.
Explained in notebooks/02_kernelwarehouse_anatomy.ipynb.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["CellLayout", "assemble_kernel", "cell_index_map", "mix_cells", "split_kernel", "split_kernels"]


@dataclass(frozen=True)
class CellLayout:
    """Geometry of one layer's kernel in terms of warehouse cells."""

    out_channels: int  # O
    in_per_group: int  # I / g
    kernel_size: tuple[int, ...]  # k, one entry per spatial dim
    cell_out: int  # o_c
    cell_in: int  # i_c
    cell_kernel: tuple[int, ...]  # k_c (all ones with spatial partition)

    @property
    def dim(self) -> int:
        return len(self.kernel_size)

    @property
    def groups_out(self) -> int:
        return self.out_channels // self.cell_out

    @property
    def groups_in(self) -> int:
        return self.in_per_group // self.cell_in

    @property
    def groups_spatial(self) -> int:
        return math.prod(self.kernel_size) // math.prod(self.cell_kernel)

    @property
    def num_mixtures(self) -> int:
        return self.groups_spatial * self.groups_out * self.groups_in

    @property
    def cell_shape(self) -> tuple[int, ...]:
        return (self.cell_out, self.cell_in, *self.cell_kernel)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return (self.out_channels, self.in_per_group, *self.kernel_size)


def assemble_kernel(mixtures: Tensor, layout: CellLayout) -> Tensor:
    """Tile mixed cells into kernels.

    Args:
        mixtures: ``(B, m, o_c, i_c, *k_c)`` (or ``(B, m, o_c * i_c * prod(k_c))``), mixture ``j`` in the
            official order.
    Returns:
        Per-sample kernels ``(B, O, I/g, *k)``.
    """
    b = mixtures.shape[0]
    d = layout.dim
    # (B, G_s, G_o, G_i, o_c, i_c, *k_c)
    w = mixtures.reshape(b, layout.groups_spatial, layout.groups_out, layout.groups_in, *layout.cell_shape)
    # -> (B, G_o, o_c, G_i, i_c, G_s, *k_c): channels first, then the spatial position
    w = w.permute(0, 2, 4, 3, 5, 1, *range(6, 6 + d))
    return w.reshape(b, *layout.weight_shape)


def split_kernel(weight: Tensor, layout: CellLayout) -> Tensor:
    """Inverse of :func:`assemble_kernel` for one kernel: ``(O, I/g, *k)`` -> ``(m, o_c, i_c, *k_c)``."""
    d = layout.dim
    w = weight.reshape(
        layout.groups_out,
        layout.cell_out,
        layout.groups_in,
        layout.cell_in,
        layout.groups_spatial,
        *layout.cell_kernel,
    )
    # (G_o, o_c, G_i, i_c, G_s, *k_c) -> (G_s, G_o, G_i, o_c, i_c, *k_c)
    w = w.permute(4, 0, 2, 1, 3, *range(5, 5 + d))
    return w.reshape(layout.num_mixtures, *layout.cell_shape)


def split_kernels(weights: Tensor, layout: CellLayout) -> Tensor:
    """Batched :func:`split_kernel`: ``(B, O, I/g, *k)`` -> ``(B, m, o_c, i_c, *k_c)``."""
    b = weights.shape[0]
    d = layout.dim
    w = weights.reshape(
        b,
        layout.groups_out,
        layout.cell_out,
        layout.groups_in,
        layout.cell_in,
        layout.groups_spatial,
        *layout.cell_kernel,
    )
    # (B, G_o, o_c, G_i, i_c, G_s, *k_c) -> (B, G_s, G_o, G_i, o_c, i_c, *k_c)
    w = w.permute(0, 5, 1, 3, 2, 4, *range(6, 6 + d))
    return w.reshape(b, layout.num_mixtures, *layout.cell_shape)


def mix_cells(alpha: Tensor, cells: Tensor) -> Tensor:
    """Mix warehouse cells: ``alpha (B, m, n)`` x ``cells (n, *cell)`` -> ``(B, m, *cell)``."""
    b, m, n = alpha.shape
    flat = torch.mm(alpha.reshape(b * m, n), cells.reshape(n, -1))
    return flat.reshape(b, m, *cells.shape[1:])


def cell_index_map(layout: CellLayout) -> Tensor:
    """Which mixture (cell) ``j`` each weight of a kernel belongs to: a long tensor of the kernel's shape.

    Built with :func:`assemble_kernel` itself (mixture ``j`` filled with the value ``j``), so it follows the
    same cut as the layers. Drawn by :func:`kwlab.instruments.plot.kernel_cells`.
    """
    m = layout.num_mixtures
    mixtures = torch.arange(m, dtype=torch.float64).reshape(1, m, *([1] * len(layout.cell_shape)))
    mixtures = mixtures.expand(1, m, *layout.cell_shape)
    return assemble_kernel(mixtures, layout)[0].round().long()
