"""N-d im2col (``unfold_nd``) and its adjoint (``fold_nd``) for 1, 2 and 3 spatial dimensions.

``unfold_nd`` turns ``x (B, C, *S)`` into columns ``(B, C * prod(k), L)`` (``L = prod(S_out)``) so that a
convolution becomes a matrix product ``W.reshape(O, -1) @ cols``. The column order ``(c, k_1, ..., k_d)``
matches the memory order of a kernel ``(O, C, *k)``. ``fold_nd`` sums columns back into the input grid
(the adjoint, used for the gradient w.r.t. ``x``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ConvGeometry", "unfold_view", "unfold_nd", "fold_nd"]


class ConvGeometry:
    """Normalised convolution arguments for ``d`` spatial dims (all tuples of length ``d``)."""

    __slots__ = ("dim", "kernel", "stride", "padding", "dilation", "groups")

    def __init__(self, dim: int, kernel, stride, padding, dilation, groups: int) -> None:
        self.dim = dim
        self.kernel = tuple(int(k) for k in kernel)
        self.stride = _tuple(stride, dim, "stride")
        self.dilation = _tuple(dilation, dim, "dilation")
        if isinstance(padding, str):
            padding = _string_padding(padding, self.kernel, self.stride, self.dilation)
        self.padding = _tuple(padding, dim, "padding")
        self.groups = int(groups)
        if self.groups < 1:
            raise ValueError(f"groups must be a positive integer, got {groups!r}")
        if any(s < 1 for s in self.stride) or any(d < 1 for d in self.dilation) or min(self.padding) < 0:
            raise ValueError(
                f"stride and dilation must be >= 1 and padding >= 0, got stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}"
            )

    @property
    def pointwise(self) -> bool:
        """A 1x1 convolution without padding: the columns are (strided) views of the input."""
        return all(k == 1 for k in self.kernel) and all(p == 0 for p in self.padding)

    def out_shape(self, spatial) -> tuple[int, ...]:
        out = tuple(
            (s + 2 * p - d * (k - 1) - 1) // st + 1
            for s, k, st, p, d in zip(spatial, self.kernel, self.stride, self.padding, self.dilation)
        )
        if any(o < 1 for o in out):
            raise ValueError(
                f"kernel {self.kernel} (dilation {self.dilation}) does not fit the padded input "
                f"{tuple(spatial)} (padding {self.padding})"
            )
        return out

    def key(self) -> tuple:
        return (self.kernel, self.stride, self.padding, self.dilation, self.groups)


def _tuple(v, dim: int, name: str) -> tuple[int, ...]:
    if isinstance(v, int):
        return (v,) * dim
    v = tuple(int(a) for a in v)
    if len(v) == 1:
        return v * dim
    if len(v) != dim:
        raise ValueError(f"{name} must be an int or a tuple of {dim} ints, got {v}")
    return v


def _string_padding(padding: str, kernel, stride, dilation) -> tuple[int, ...]:
    if padding == "valid":
        return (0,) * len(kernel)
    if padding == "same":
        if any(s != 1 for s in stride):
            raise ValueError("padding='same' needs stride 1")
        total = [d * (k - 1) for k, d in zip(kernel, dilation)]
        if any(t % 2 for t in total):
            raise ValueError(
                "padding='same' with an even effective kernel size is not supported; pass explicit padding"
            )
        return tuple(t // 2 for t in total)
    raise ValueError(f"padding must be an int, a tuple of ints, 'same' or 'valid', got {padding!r}")


def unfold_view(x: Tensor, geo: ConvGeometry) -> Tensor:
    """Sliding windows of ``x`` as a strided view ``(B, C, *S_out, *k)`` (padding makes one copy)."""
    d = geo.dim
    if any(geo.padding):
        pad = []
        for p in reversed(geo.padding):
            pad += [p, p]
        x = F.pad(x, pad)
    for i in range(d):
        k, s, dl = geo.kernel[i], geo.stride[i], geo.dilation[i]
        x = x.unfold(2 + i, dl * (k - 1) + 1, s)
        if dl > 1:
            x = x[..., ::dl]
    return x


def unfold_nd(x: Tensor, geo: ConvGeometry) -> Tensor:
    """Columns of ``x`` (im2col; faster than ``F.unfold`` on CPU).

    Args:
        x: ``(B, C, *S)``.
        geo: the convolution geometry.
    Returns:
        ``(B, C * prod(k), L)``; a view of ``x`` for unpadded 1x1 convolutions with stride 1.
    """
    b, c = x.shape[:2]
    d = geo.dim
    if geo.pointwise:
        if any(s != 1 for s in geo.stride):
            x = x[(slice(None), slice(None), *(slice(None, None, s) for s in geo.stride))]
        return x.reshape(b, c, -1)
    # (B, C, *L, *k) -> (B, C, *k, *L)
    perm = (0, 1, *range(2 + d, 2 + 2 * d), *range(2, 2 + d))
    return unfold_view(x, geo).permute(perm).reshape(b, c * math.prod(geo.kernel), -1)


def fold_nd(cols: Tensor, spatial: tuple[int, ...], geo: ConvGeometry) -> Tensor:
    """Adjoint of :func:`unfold_nd`: ``(B, C * prod(k), L)`` -> ``(B, C, *spatial)`` (overlaps summed)."""
    b = cols.shape[0]
    c = cols.shape[1] // math.prod(geo.kernel)
    if geo.pointwise:
        if all(s == 1 for s in geo.stride):
            return cols.reshape(b, c, *spatial)
        out_sp = geo.out_shape(spatial)
        x = cols.new_zeros(b, c, *spatial)
        x[(slice(None), slice(None), *(slice(None, None, s) for s in geo.stride))] = cols.reshape(
            b, c, *out_sp
        )
        return x
    if geo.dim == 2:
        return F.fold(cols, spatial, geo.kernel, geo.dilation, geo.padding, geo.stride)
    if geo.dim == 1:
        one = lambda t: (1, t[0])  # noqa: E731 - 1-d as 2-d with height 1
        return F.fold(
            cols, one(spatial), one(geo.kernel), one(geo.dilation), (0, geo.padding[0]), one(geo.stride)
        ).reshape(b, c, *spatial)
    # generic: the adjoint of the view-based unfold, through autograd
    with torch.enable_grad():
        x = cols.new_zeros(b, c, *spatial, requires_grad=True)
        (gx,) = torch.autograd.grad(unfold_nd(x, geo), x, cols)
    return gx
