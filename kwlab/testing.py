"""Tiny reference dynamic layers and models, shared by tests and notebooks.

They follow the attention protocol of :mod:`kwlab.layers.base` with as little machinery as possible, so
that instruments (probe, freezing, temperature) can be tested without the full KernelWarehouse layers:

* :class:`MixtureAttention`: global average pooling -> one linear layer -> either a softmax over the cells
  (``signed=False``, no zero cell, like DY-Conv) or a signed L1 normalisation over ``n + 1`` slots whose
  last slot is a dropped zero cell (``signed=True``, like KernelWarehouse's CAF, blended with a one-hot
  pattern by the temperature).
* :class:`MixtureConv2d`: ``m`` mixtures, each producing a block of ``out_channels / m`` output channels
  as a weighted sum of ``n`` cells of shape ``(out/m, in, k, k)``; the cells are its own or come from a
  shared :class:`TinyWarehouse` (then several layers draw from one bank).
* :class:`TinyDynamicNet`: stem + two blocks sharing a warehouse + classifier; every layer is reachable by
  qualified name (``stem``, ``layer1.0.conv``, ``layer1.1.conv``) and the body is a plain sequence, so a
  test can walk it by hand.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers.base import DynamicAttention, DynamicLayer
from .ops import dynamic_conv, mix_cells

__all__ = [
    "tiny_run",
    "MixtureAttention",
    "MixtureConv2d",
    "TinyWarehouse",
    "TinyBlock",
    "TinyDynamicNet",
    "hook_count",
    "reference_forward",
    "plain_convnet",
]


class MixtureAttention(DynamicAttention):
    """Pooled linear attention over ``n`` cells for ``m`` mixtures.

    Args:
        in_channels: channels of the layer input.
        num_mixtures: m.
        num_cells: n.
        signed: False: ``softmax(z / temperature)`` (temperature > 0). True: ``z / (sum |z| + 1e-3)`` over
            ``n + 1`` slots (zero cell last), blended as ``(1 - tau) * z_hat + tau * onehot`` where mixture
            ``j`` points at cell ``j mod n``.
        temperature: initial temperature (default 1 for softmax, 0 for signed).
    """

    def __init__(
        self,
        in_channels: int,
        num_mixtures: int,
        num_cells: int,
        *,
        signed: bool = False,
        temperature: float | None = None,
    ) -> None:
        if temperature is None:
            temperature = 0.0 if signed else 1.0
        super().__init__(num_mixtures, num_cells, zero_cell=signed, temperature=temperature)
        self.signed = bool(signed)
        self.fc = nn.Linear(in_channels, num_mixtures * (num_cells + int(signed)))
        onehot = torch.zeros(num_mixtures, num_cells + int(signed))
        onehot[torch.arange(num_mixtures), torch.arange(num_mixtures) % num_cells] = 1.0
        self.register_buffer("onehot", onehot, persistent=False)

    def coefficients(self, x: Tensor) -> Tensor:
        """``x (B, C, H, W)`` -> full coefficients ``(B, m, n + signed)``."""
        b = x.shape[0]
        z = self.fc(x.mean(dim=(2, 3))).reshape(b, self.num_mixtures, -1)
        if self.signed:
            z_hat = z / (z.abs().sum(-1, keepdim=True) + 1e-3)
            return (1.0 - self.temperature) * z_hat + self.temperature * self.onehot
        return torch.softmax(z / self.temperature, dim=-1)


class TinyWarehouse(nn.Module):
    """A bank of ``n`` cells of shape ``(o_c, i_c, k, k)`` that several :class:`MixtureConv2d` can share."""

    def __init__(self, num_cells: int, cell_out: int, cell_in: int, kernel_size: int, name: str = "") -> None:
        super().__init__()
        self.name = name
        self.cells = nn.Parameter(
            torch.randn(num_cells, cell_out, cell_in, kernel_size, kernel_size)
            / (cell_in * kernel_size**2) ** 0.5
        )


class MixtureConv2d(DynamicLayer):
    """Dynamic conv whose ``m`` output-channel blocks are attention-weighted sums of ``n`` cells.

    Args:
        in_channels, out_channels, kernel_size, stride, padding: as :class:`torch.nn.Conv2d` (square kernel).
        num_cells: n (ignored when ``warehouse`` is given).
        num_mixtures: m, must divide ``out_channels``.
        signed: signed attention with a zero cell (see :class:`MixtureAttention`).
        warehouse: a shared :class:`TinyWarehouse` (not registered as a child: its owner registers it);
            ``bank`` is then the warehouse name.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
        *,
        num_cells: int = 4,
        num_mixtures: int = 1,
        signed: bool = False,
        warehouse: TinyWarehouse | None = None,
        temperature: float | None = None,
    ) -> None:
        super().__init__()
        if out_channels % num_mixtures:
            raise ValueError(f"num_mixtures must divide out_channels={out_channels}, got {num_mixtures}")
        self.out_channels, self.stride, self.padding = out_channels, stride, padding
        if warehouse is None:
            self.cells = nn.Parameter(
                torch.randn(num_cells, out_channels // num_mixtures, in_channels, kernel_size, kernel_size)
                / (in_channels * kernel_size**2) ** 0.5
            )
        else:
            object.__setattr__(self, "_warehouse", warehouse)  # shared, owned by the model
            self._bank = warehouse.name
            num_cells = warehouse.cells.shape[0]
        self.attention = MixtureAttention(
            in_channels, num_mixtures, num_cells, signed=signed, temperature=temperature
        )

    def get_cells(self) -> Tensor:
        """The bank ``(n, out/m, in, k, k)``."""
        wh = self.__dict__.get("_warehouse")
        return self.cells if wh is None else wh.cells

    def weight_from_alpha(self, alpha: Tensor) -> Tensor:
        """Per-sample kernels ``(B, out, in, k, k)`` from ``alpha (B, m, n)``."""
        mixed = mix_cells(alpha, self.get_cells())  # (B, m, out/m, in, k, k)
        return mixed.reshape(alpha.shape[0], self.out_channels, *mixed.shape[3:])

    def effective_kernels(self, x: Tensor) -> Tensor:
        """Per-sample kernels ``(B, out, in, k, k)`` for input ``x`` (:meth:`weight_from_alpha`)."""
        return self.weight_from_alpha(self.attention(x))

    def forward(self, x: Tensor) -> Tensor:
        alpha = self.attention(x)
        return dynamic_conv(x, self.weight_from_alpha(alpha), None, self.stride, self.padding)

    def forward_with_alpha(self, x: Tensor, alpha: Tensor) -> Tensor:
        """Reference path: run the layer with given coefficients ``(B, m, n)`` or ``(m, n)``."""
        if alpha.dim() == 2:
            alpha = alpha.unsqueeze(0).expand(x.shape[0], -1, -1)
        return dynamic_conv(
            x, self.weight_from_alpha(alpha), None, self.stride, self.padding, algorithm="loop"
        )


class TinyBlock(nn.Module):
    """``relu(conv(x)) + x``."""

    def __init__(self, conv: MixtureConv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.conv(x)) + x


class TinyDynamicNet(nn.Module):
    """Stem + two residual blocks sharing one warehouse + linear classifier.

    Args:
        in_channels: image channels.
        width: channels of the body.
        num_classes: classifier outputs.
        signed: signed attention with zero cell (KW-like) or softmax (DY-Conv-like).
        num_cells: cells of the stem's bank and of the shared warehouse.
        num_mixtures: mixtures of each body conv (the stem has 1: a whole-kernel mixture).
    """

    def __init__(
        self,
        in_channels: int = 3,
        width: int = 8,
        num_classes: int = 3,
        *,
        signed: bool = True,
        num_cells: int = 4,
        num_mixtures: int = 2,
    ) -> None:
        super().__init__()
        self.warehouse = TinyWarehouse(num_cells, width // num_mixtures, width, 3, name="layer1")
        self.stem = MixtureConv2d(in_channels, width, num_cells=num_cells, num_mixtures=1, signed=signed)
        self.layer1 = nn.Sequential(
            *[
                TinyBlock(
                    MixtureConv2d(
                        width, width, num_mixtures=num_mixtures, signed=signed, warehouse=self.warehouse
                    )
                )
                for _ in range(2)
            ]
        )
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.stem(x))
        x = self.layer1(x)
        return self.head(x.mean(dim=(2, 3)))


def hook_count(model: nn.Module) -> int:
    """Number of forward/backward hooks registered on any submodule of ``model`` (0 after a clean probe)."""
    total = 0
    for m in model.modules():
        total += len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        total += len(getattr(m, "_backward_pre_hooks", {}))
    return total


def reference_forward(
    net: TinyDynamicNet, x: Tensor, alphas: dict[str, Tensor] | None = None
) -> tuple[Tensor, dict[str, Tensor]]:
    """Run :class:`TinyDynamicNet` by hand, without calling any ``attention`` module (so no hook fires).

    Each layer's full coefficients come from ``attention.coefficients`` and its output from the per-sample
    loop convolution; with ``alphas`` (name -> ``(m, n)``) those coefficients are used for every sample
    instead (the reference of a frozen model).

    Returns:
        logits ``(B, num_classes)`` and the full coefficients ``(B, m, n + zero_cell)`` per layer name.
    """
    fulls: dict[str, Tensor] = {}

    def run(name: str, layer: MixtureConv2d, h: Tensor) -> Tensor:
        full = layer.attention.coefficients(h)
        fulls[name] = full
        alpha = full[..., : layer.attention.num_cells]
        if alphas is not None:
            alpha = alphas[name]
        return layer.forward_with_alpha(h, alpha)

    h = F.relu(run("stem", net.stem, x))
    for i, block in enumerate(net.layer1):
        h = F.relu(run(f"layer1.{i}.conv", block.conv, h)) + h
    return net.head(h.mean(dim=(2, 3))), fulls


def tiny_run(**changes: Any) -> dict[str, Any]:
    """RunConfig fields of a run that trains in about a second on one CPU thread: a 4-8-8 ResNet-20 on
    8x8 synthetic images, one epoch (``changes`` override any field). The tests' shared base config."""
    base: dict[str, Any] = dict(
        arch="resnet20_cifar",
        model_kwargs={"widths": [4, 8, 8]},
        data="synthetic",
        image_size=8,
        train_samples=64,
        test_samples=32,
        batch_size=16,
        epochs=1,
        lr=0.05,
        device="cpu",
    )
    return {**base, **changes}


def plain_convnet(num_classes: int = 10, width: int = 32, fail_on_rank: int | None = None) -> nn.Module:
    """Three 3x3 convs with ReLU, global pooling and a linear head, and no normalisation layer: its training
    does not depend on how a batch is split (the DDP test's model; BatchNorm statistics are per rank).
    ``fail_on_rank``: raise when built on that torchrun rank (the test of a rank that dies)."""
    if fail_on_rank is not None and int(os.environ.get("RANK", "0")) == fail_on_rank:
        raise RuntimeError(f"plain_convnet: failing on rank {fail_on_rank} as asked (fail_on_rank)")
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, num_classes),
    )
