"""KernelWarehouse layers (Li & Yao, "KernelWarehouse: Rethinking the Design of Dynamic Convolution",
ICML 2024, arXiv:2406.07879). Checked against OSVAI/KernelWarehouse ``modules/kernel_warehouse.py``.

A KW layer cuts its kernel into ``m`` cells; per sample, cell ``j`` is the signed mixture
``sum_t alpha[j, t] * E_t`` of the ``n`` cells ``E`` of a :class:`Warehouse`, which several layers share.
The mixtures are tiled back into the kernel (official order, see :mod:`kwlab.ops.layout`) and an
ordinary convolution runs with it. The static bias, if any, is added afterwards.

A layer built on its own (``warehouse=None``) plans and owns a private warehouse, a registered child
(``layer.warehouse``). A shared warehouse is owned (registered as child ``warehouse``) by the first
layer that draws from it, in registration order (``owns_warehouse=True``); the other layers keep a plain
reference, so the cells appear once in ``state_dict`` and in ``parameters()``, and any model, even an
``nn.Sequential``, can be converted without adding modules to it (see :func:`kwlab.kernelwarehouse` and
:func:`kwlab.warehouses`).
Explained in notebooks/02_kernelwarehouse_anatomy.ipynb.
"""

from __future__ import annotations

import math

import torch
import torch.fx
from torch import Tensor, nn
from torch.nn import functional as F

from ..ops import CellLayout, assemble_kernel, kw_conv, mix_cells
from .attention import KWAttention, KWConstantAttention
from .bank import set_conv_geometry
from .base import DynamicLayer, KeepsLayout
from .warehouse import LayerSpec, WarehouseOptions, owned_cell_count, plan_warehouses

# fx.wrap patches the calling module's globals: keep the dispatching op a single node in traced graphs.
torch.fx.wrap("kw_conv")

__all__ = ["Warehouse", "KWConv1d", "KWConv2d", "KWConv3d", "KWLinear", "KW_LAYERS", "warehouses"]


class Warehouse(KeepsLayout):
    """A bank of ``n`` kernel cells, ``cells`` of shape ``(n, o_c, i_c, *k_c)``.

    Args:
        num_cells: n.
        cell_shape: ``(o_c, i_c, *k_c)``.
        options: the warehouse's budget, cell ratios, partition and attention reduction.
        key: the warehouse's name (e.g. ``"stage2"``).
    """

    def __init__(
        self,
        num_cells: int,
        cell_shape: tuple[int, ...],
        options: WarehouseOptions = WarehouseOptions(),
        key: str = "",
        *,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.key = key
        self.options = options
        self.cell_shape = tuple(int(c) for c in cell_shape)
        self.cells = nn.Parameter(torch.empty(num_cells, *self.cell_shape, device=device, dtype=dtype))
        self.reset_parameters()

    @property
    def num_cells(self) -> int:
        return self.cells.shape[0]

    def reset_parameters(self) -> None:
        """Kaiming-normal over the whole bank; :func:`init_cells` re-initialises per owner (official)."""
        init_cells(self.cells, 0, self.num_cells)

    def extra_repr(self) -> str:
        return f"key={self.key!r}, num_cells={self.num_cells}, cell_shape={self.cell_shape}"


@torch.no_grad()
def init_cells(cells: Tensor, start: int, end: int) -> None:
    """Official init of cells ``[start, end)``: kaiming-normal (fan_out, relu) over the slice seen as
    ``((end - start) * o_c, i_c, *k_c)``, i.e. std = sqrt(2 / ((end - start) * o_c * prod(k_c)))."""
    if end <= start:
        return
    fan_out = (end - start) * cells.shape[1] * math.prod(cells.shape[3:])
    cells[start:end].normal_(0.0, math.sqrt(2.0 / fan_out))


def _check_input(x: Tensor, rank: int, in_channels: int, layer: str, shape_doc: str) -> Tensor:
    if x.dim() != rank:
        raise ValueError(
            f"{layer} expects input of shape {shape_doc} (rank {rank}), got shape {tuple(x.shape)}"
        )
    if x.shape[1] != in_channels:
        raise ValueError(f"{layer} expects {in_channels} input channels (dim 1), got shape {tuple(x.shape)}")
    return x


_check_input = torch.fx.wrap(_check_input)


class _KWConvNd(DynamicLayer):
    dim: int = 2
    kind: str = "conv2d"
    _shape_doc = "(B, C, H, W)"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = False,
        *,
        warehouse: Warehouse | None = None,
        owns_warehouse: bool = False,
        start_cell: int = 0,
        budget: float = 1.0,
        cell_in: float = 1.0,
        cell_out: float = 1.0,
        spatial_partition: bool = True,
        reduction: float = 1 / 16,
        attention: str = "caf",
        attention_norm: str = "batch",
        zero_cell: bool = True,
        nonlocal_basis_ratio: float = 1.0,
        attention_init: str = "official",
        temperature: float = 1.0,
        algorithm: str = "auto",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        set_conv_geometry(
            self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, dim=self.dim
        )
        self.algorithm = algorithm
        spec = LayerSpec("", self.kind, in_channels, out_channels, self.kernel_size, groups)
        if warehouse is None:
            opts = WarehouseOptions(budget, cell_in, cell_out, spatial_partition, reduction)
            plan = plan_warehouses([spec], ["own"], opts)
            wp = plan.warehouses["own"]
            self.warehouse = Warehouse(wp.num_cells, wp.cell_shape, opts, key="", device=device, dtype=dtype)
            start_cell = 0
        else:
            if owns_warehouse:
                self.warehouse = warehouse
            else:
                object.__setattr__(self, "_shared_warehouse", warehouse)
            self._bank = warehouse.key
        wh = self.warehouse
        cell_shape = wh.cell_shape
        if len(cell_shape) != 2 + self.dim:
            raise ValueError(
                f"warehouse {wh.key!r} holds cells of shape {cell_shape}, which cannot tile a "
                f"{self.kind} kernel"
            )
        self.layout = CellLayout(
            out_channels,
            in_channels // groups,
            self.kernel_size,
            cell_shape[0],
            cell_shape[1],
            tuple(cell_shape[2:]),
        )
        lay = self.layout
        if (
            out_channels % lay.cell_out
            or lay.in_per_group % lay.cell_in
            or math.prod(self.kernel_size) % math.prod(lay.cell_kernel)
        ):
            raise ValueError(
                f"cells of shape {cell_shape} do not tile the kernel {(out_channels, *lay.weight_shape[1:])}"
            )
        self.start_cell = start_cell
        self.end_cell = start_cell + owned_cell_count(lay.num_mixtures, wh.options.budget)
        if attention == "constant":  # kwlab's input-independent control (see KWConstantAttention)
            self.attention = KWConstantAttention(
                lay.num_mixtures,
                wh.num_cells,
                start_cell=start_cell,
                budget=wh.options.budget,
                zero_cell=zero_cell,
                attention_init=attention_init,
                temperature=temperature,
                device=device,
                dtype=dtype,
            )
        else:
            self.attention = KWAttention(
                in_channels,
                lay.num_mixtures,
                wh.num_cells,
                start_cell=start_cell,
                budget=wh.options.budget,
                reduction=wh.options.reduction,
                function=attention,
                norm=attention_norm,
                zero_cell=zero_cell,
                nonlocal_basis_ratio=nonlocal_basis_ratio,
                attention_init=attention_init,
                temperature=temperature,
                device=device,
                dtype=dtype,
            )
        self.bias = nn.Parameter(torch.zeros(out_channels, device=device, dtype=dtype)) if bias else None
        if warehouse is None:
            self.reset_parameters()

    @property
    def warehouse(self) -> Warehouse:
        """The warehouse this layer draws its cells from (shared or its own)."""
        shared = self.__dict__.get("_shared_warehouse")
        return shared if shared is not None else self._modules["warehouse"]

    @warehouse.setter
    def warehouse(self, value: Warehouse) -> None:
        self._modules["warehouse"] = value

    @property
    def num_mixtures(self) -> int:
        return self.layout.num_mixtures

    def reset_parameters(self) -> None:
        """Re-initialise this layer's own cells (official kaiming over the owned slice), attention, bias."""
        init_cells(self.warehouse.cells, self.start_cell, self.end_cell)
        self.attention.reset_parameters()
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def kernel(self, x: Tensor) -> Tensor:
        """The per-sample kernels ``(B, O, I/g, *k)`` this layer would use for input ``x``."""
        return assemble_kernel(mix_cells(self.attention(x), self.warehouse.cells), self.layout)

    def effective_kernels(self, x: Tensor) -> Tensor:
        """The kernels assembled from the warehouse's cells for ``x`` (:meth:`kernel`)."""
        return self.kernel(x)

    def _empty_output(self, x: Tensor) -> Tensor:
        """The output for an empty batch (as ``nn.ConvNd`` gives: an empty tensor of the right shape)."""
        conv = (F.conv1d, F.conv2d, F.conv3d)[self.dim - 1]
        cells = self.warehouse.cells
        weight = cells.new_zeros(self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        return conv(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, x: Tensor) -> Tensor:
        x = _check_input(x, self.dim + 2, self.in_channels, type(self).__name__, self._shape_doc)
        if not isinstance(x, torch.fx.Proxy) and x.shape[0] == 0:
            return self._empty_output(x)
        alpha = self.attention(x)
        return kw_conv(
            x,
            alpha,
            self.warehouse.cells,
            self.layout,
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            self.algorithm,
        )

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}"
        )
        if self.dilation != (1,) * self.dim:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s + f", warehouse={self.warehouse.key!r}, cells=[{self.start_cell}, {self.end_cell})"


class KWConv1d(_KWConvNd):
    """KernelWarehouse counterpart of :class:`torch.nn.Conv1d`; input ``(B, C, L)``."""

    dim, kind, _shape_doc = 1, "conv1d", "(B, C, L)"


class KWConv2d(_KWConvNd):
    """KernelWarehouse counterpart of :class:`torch.nn.Conv2d`; input ``(B, C, H, W)``."""

    dim, kind, _shape_doc = 2, "conv2d", "(B, C, H, W)"


class KWConv3d(_KWConvNd):
    """KernelWarehouse counterpart of :class:`torch.nn.Conv3d`; input ``(B, C, D, H, W)``."""

    dim, kind, _shape_doc = 3, "conv3d", "(B, C, D, H, W)"


class KWLinear(_KWConvNd):
    """KernelWarehouse counterpart of :class:`torch.nn.Linear`; input ``(B, ..., C)``.

    As in the official code, the layer is a 1x1 KW conv over the tokens: ``(B, N, C)`` is seen as
    ``(B, C, N)``, so the attention pools over all tokens of a sample. Cells are ``(n, o_c, i_c, 1)``.
    """

    dim, kind, _shape_doc = 1, "linear", "(B, ..., C)"

    def __init__(self, in_features: int, out_features: int, bias: bool = True, **kwargs) -> None:
        super().__init__(in_features, out_features, 1, bias=bias, **kwargs)

    @property
    def in_features(self) -> int:
        return self.in_channels

    @property
    def out_features(self) -> int:
        return self.out_channels

    def effective_kernels(self, x: Tensor) -> Tensor:
        """``(B, O, I, 1)``: the weight matrix each sample's tokens are multiplied by."""
        x = _check_linear_input(x, self.in_channels)
        return self.kernel(x.reshape(x.shape[0], -1, x.shape[-1]).transpose(1, 2))

    def forward(self, x: Tensor) -> Tensor:
        x = _check_linear_input(x, self.in_channels)
        if not isinstance(x, torch.fx.Proxy) and x.numel() == 0:
            return x.new_zeros(*x.shape[:-1], self.out_channels)
        tokens = x.reshape(x.shape[0], -1, x.shape[-1]).transpose(1, 2)  # (B, C, N)
        alpha = self.attention(tokens)
        out = kw_conv(tokens, alpha, self.warehouse.cells, self.layout, self.bias, 1, 0, 1, 1, self.algorithm)
        return _restore_tokens(out, x)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_channels}, out_features={self.out_channels}, "
            f"bias={self.bias is not None}, "
            f"warehouse={self.warehouse.key!r}, cells=[{self.start_cell}, {self.end_cell})"
        )


@torch.fx.wrap
def _check_linear_input(x: Tensor, in_features: int) -> Tensor:
    if x.dim() < 2 or x.shape[-1] != in_features:
        raise ValueError(f"KWLinear expects input of shape (B, ..., {in_features}), got {tuple(x.shape)}")
    return x


@torch.fx.wrap
def _restore_tokens(out: Tensor, x: Tensor) -> Tensor:
    """``(B, O, N)`` back to ``x``'s shape with ``O`` features last (one fx node: shapes stay concrete)."""
    return out.transpose(1, 2).reshape(*x.shape[:-1], out.shape[1])


KW_LAYERS = {"conv1d": KWConv1d, "conv2d": KWConv2d, "conv3d": KWConv3d, "linear": KWLinear}


def warehouses(model: nn.Module) -> dict[str, Warehouse]:
    """The warehouses of ``model``'s KW layers, key -> :class:`Warehouse`, in order of first use."""
    out: dict[str, Warehouse] = {}
    for module in model.modules():
        if isinstance(module, _KWConvNd):
            wh = module.warehouse
            out.setdefault(wh.key or f"<own:{id(wh):x}>", wh)
    return out
