"""The attention protocol shared by every dynamic layer in kwlab.

A *dynamic layer* builds its weight from the input. Every one of them, KernelWarehouse or a
relative (CondConv, DY-Conv, ODConv, KernelDNA), follows the same protocol so that the probe,
the temperature schedule and the freezing tools work on all of them unchanged:

* the layer subclasses :class:`DynamicLayer` and has a child module named ``attention``;
* ``layer.attention(x)`` returns the mixing coefficients ``alpha`` with shape ``(B, m, n)``:
  ``m`` mixtures of this layer (KW: kernel cells of this layer; whole-kernel methods: 1), ``n``
  entries of the bank that the mixtures draw from (KW: the cells of the layer's warehouse;
  CondConv/DY-Conv/ODConv: the layer's own kernels; KernelDNA: its input channels);
* ``layer.bank`` names that bank: the warehouse key for KW (several layers share one), the layer's
  own qualified name otherwise;
* the attention has a child ``tap`` (an identity) through which the *full* coefficients pass
  before any slot is dropped, shape ``(B, m, n + 1)`` when the method has a zero cell
  (``attention.zero_cell`` is True), else ``(B, m, n)``. The probe hooks it to measure the mass
  that went to the zero cell;
* ``attention.temperature`` is a 0-d buffer (saved, moved by ``.to()``), set by
  :func:`kwlab.set_temperature`;
* ``attention.frozen_alpha`` is ``None`` or a ``(m, n)`` buffer; when set, ``forward`` returns it
  for every sample (see :func:`kwlab.freeze_attention`), which turns the layer static.

Hooks never live here: only :mod:`kwlab.probe` registers them.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor, nn

__all__ = ["Tap", "DynamicAttention", "init_attention_head", "DynamicLayer", "dynamic_layers", "set_temperature", "get_temperature"]


class Tap(nn.Identity):
    """An identity the probe can hook; it sees the attention's full coefficients."""


class DynamicAttention(nn.Module):
    """Base class of attention heads: subclasses implement :meth:`coefficients`.

    Args:
        num_mixtures: m, the mixtures this layer computes per sample.
        num_cells: n, the size of the bank the mixtures draw from.
        zero_cell: whether :meth:`coefficients` returns one extra, dropped slot per mixture.
        temperature: initial value of the ``temperature`` buffer.
    """

    def __init__(self, num_mixtures: int, num_cells: int, *, zero_cell: bool = False,
                 temperature: float = 0.0) -> None:
        super().__init__()
        self.num_mixtures = int(num_mixtures)
        self.num_cells = int(num_cells)
        self.zero_cell = bool(zero_cell)
        self.tap = Tap()
        self.register_buffer("temperature", torch.tensor(float(temperature)))
        self.register_buffer("frozen_alpha", None)

    def coefficients(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Full coefficients ``(B, m, n + zero_cell)`` for input ``x``."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """Mixing coefficients ``alpha``, shape ``(B, m, n)``."""
        if self.frozen_alpha is not None:
            return self.frozen_alpha.unsqueeze(0).expand(x.shape[0], -1, -1)
        full = self.tap(self.coefficients(x))
        if self.zero_cell:
            return full[..., : self.num_cells]
        return full


def init_attention_head(head: nn.Module) -> None:
    """The OSVAI attention init (KernelWarehouse, ODConv): every Linear/Conv weight kaiming-normal (fan_out,
    relu) with zero bias, every norm layer reset (weight 1, bias 0, fresh running statistics)."""
    for m in head.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.modules.batchnorm._NormBase, nn.LayerNorm)):
            m.reset_parameters()


class DynamicLayer(nn.Module):
    """Base class of every layer whose weight depends on the input through ``self.attention``."""

    attention: DynamicAttention

    @property
    def bank(self) -> str:
        """Name of the parameter bank that ``alpha``'s last axis indexes."""
        return getattr(self, "_bank", "") or ""


def dynamic_layers(model: nn.Module) -> Iterator[tuple[str, DynamicLayer]]:
    """Yield ``(qualified name, layer)`` for every dynamic layer of ``model``, in registration order."""
    for name, module in model.named_modules():
        if isinstance(module, DynamicLayer):
            yield name, module


def set_temperature(model: nn.Module, tau: float) -> nn.Module:
    """Set the attention temperature of every dynamic layer of ``model`` (KW: 1 -> 0 during training).

    Returns the model, so it can be chained. Works on a single layer too.
    """
    value = float(tau)
    for module in model.modules():
        if isinstance(module, DynamicAttention):
            module.temperature.fill_(value)
    return model


def get_temperature(model: nn.Module) -> float | None:
    """The temperature of the first dynamic layer of ``model`` (None if it has none)."""
    for module in model.modules():
        if isinstance(module, DynamicAttention):
            return float(module.temperature)
    return None
