"""Batches for training and evaluation from uint8 images held in (device) memory: :class:`DeviceLoader`.

The images stay where they are loaded once (GPU memory when training on a GPU) and whole batches are
augmented on the device -- random crop with zero padding and horizontal flip -- so the epoch loop does no
per-image Python work (the design of airbench's ``CifarLoader``). The datasets themselves come from
:mod:`kwlab.experiments.data`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

__all__ = ["DeviceLoader"]


class DeviceLoader:
    """Batches from uint8 images held in (device) memory, augmented on the device.

    Each epoch's order and augmentation are drawn from a generator seeded by ``(seed, epoch)``, so an
    epoch is reproducible on its own (exact resume needs no loader state). With ``world_size > 1``
    every rank takes its share of the same global permutation (DDP).

    Args:
        images: ``(N, H, W, 3)`` uint8 (moved to ``device`` once).
        labels: ``(N,)`` int64.
        batch_size: global batch size (per rank: ``batch_size // world_size``).
        train: shuffle, augment and drop the last partial batch.
        mean, std: per-channel normalisation in [0, 1] units.
        device: where the images live and batches are made.
        crop_padding: zero padding of the random crop (0 disables it).
        flip: random horizontal flips.
        channels_last: return ``channels_last`` batches (free: the data is stored NHWC).
        dtype: dtype of the returned images.

    Yields:
        ``(x, y)`` with ``x`` ``(B, 3, H, W)`` normalised and ``y`` ``(B,)``.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        *,
        batch_size: int,
        train: bool,
        mean: Sequence[float],
        std: Sequence[float],
        device: str | torch.device = "cpu",
        seed: int = 0,
        crop_padding: int = 4,
        flip: bool = True,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be uint8 (N, H, W, 3); got {images.dtype} {tuple(images.shape)}")
        if batch_size < world_size:
            raise ValueError(f"batch_size={batch_size} must be >= world_size={world_size}")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size, self.train, self.seed = int(batch_size), bool(train), int(seed)
        self.crop_padding, self.flip = int(crop_padding) if train else 0, bool(flip) and train
        self.rank, self.world_size = int(rank), int(world_size)
        self.channels_last, self.dtype = channels_last, dtype
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1) * 255
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(self.labels)
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(n, generator=g) if self.train else torch.arange(n)
        p = self.crop_padding
        if p:
            shifts = torch.randint(0, 2 * p + 1, (n, 2), generator=g)
        if self.flip:
            flips = torch.rand(n, generator=g) < 0.5
        per_rank = self.batch_size // self.world_size
        for b in range(len(self)):
            lo = b * self.batch_size
            idx = order[lo : lo + self.batch_size]
            local = idx[self.rank * per_rank : (self.rank + 1) * per_rank] if self.world_size > 1 else idx
            if local.numel() == 0:
                continue
            sel = local.to(self.device)
            x = self.images[sel]  # (B, H, W, 3) uint8
            if p:
                x = self._crop(x, shifts[local].to(self.device))
            if self.flip:
                x = torch.where(flips[local].to(self.device)[:, None, None, None], x.flip(2), x)
            x = x.permute(0, 3, 1, 2).to(self.dtype)  # (B, 3, H, W), NHWC memory
            x = (x - self.mean.to(self.dtype)) / self.std.to(self.dtype)
            x = x.contiguous(
                memory_format=torch.channels_last if self.channels_last else torch.contiguous_format
            )
            yield x, self.labels[sel]

    def _crop(self, x: Tensor, shifts: Tensor) -> Tensor:
        """Random crop with zero padding ``p``: out[b, i, j] = padded[b, i + dy_b, j + dx_b]."""
        b, h, w, _ = x.shape
        p = self.crop_padding
        padded = torch.nn.functional.pad(x, (0, 0, p, p, p, p))  # (B, H+2p, W+2p, 3)
        rows = shifts[:, 0, None] + torch.arange(h, device=x.device)  # (B, H)
        cols = shifts[:, 1, None] + torch.arange(w, device=x.device)  # (B, W)
        bidx = torch.arange(b, device=x.device)[:, None, None]
        return padded[bidx, rows[:, :, None], cols[:, None, :]]  # (B, H, W, 3)
