"""Image datasets for experiments: decode once into a uint8 cache, serve from (device) memory.

The design follows airbench's ``CifarLoader``: images are decoded with PIL exactly once, by the cache
builder, into a ``uint8`` array ``(N, H, W, 3)`` stored under ``data/cache/`` (or ``$KWLAB_CACHE``).
Training then reads that array from memory (GPU memory when training on a GPU) and augments whole
batches on the device -- random crop with zero padding and horizontal flip -- so the epoch loop does
no per-image Python work.

Dataset names (``RunConfig.data``):

* ``"auto"`` (the default) -- CIFAR-10 wherever it is found (see :func:`resolve_auto`), else synthetic
  images with a visible notice;
* ``"synthetic"`` -- generated in code, deterministic from a seed (see :func:`synthetic_images`);
* ``"cued"`` -- the positive control of dynamic convolution (:mod:`kwlab.experiments.data_cued`): the
  channel that carries the class is named by a global cue (the background tint). The images are the same
  for every run (train generator seed 0, test seed 1), so runs of a sweep differ only in their own seed;
  8 classes and 16 x 16 images unless ``image_size`` says otherwise; ``ImageData.test_cues`` holds the cue
  of each test image;
* ``"cifar10"`` / ``"cifar100"`` -- the standard python-pickle folders (``cifar-10-batches-py``,
  ``cifar-100-python``) under the data root; for CIFAR-10 also ``cifar10-jpg.zip`` (the 60,000
  JPEGs in ImageFolder layout). The root is the ``root`` argument, else ``$KWLAB_DATA``, else
  ``./data``. When nothing is found, torchvision's downloader is tried; offline, the error says
  where it looked and how to get the data;
* a path to an ImageFolder directory or ``.zip`` of one, holding ``train/`` and ``val/`` (or
  ``test/``) folders of ``<class>/<image>`` files (Imagenette, Imagewoof, ImageNet-100 with a class
  list). Images are resized (shorter side) and centre-cropped to ``image_size`` when cached.

This module is the front door (:class:`ImageData`, :func:`load_data`, :func:`synthetic_images`); where a
dataset lives is :mod:`kwlab.experiments.data_sources`, decoding and caching
:mod:`kwlab.experiments.data_readers`, the batches :class:`kwlab.experiments.loader.DeviceLoader` (each name
is imported from its own module).

Explained in notebooks/03_train_cifar.ipynb.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from kwlab.experiments.data_cued import cued_images
from kwlab.experiments.data_readers import (
    parse_classes,
    read_cifar_pickle,
    read_imagefolder,
    subset,
)
from kwlab.experiments.data_sources import (
    CIFAR_FOLDERS,
)
from kwlab.experiments.data_sources import (
    resolve_auto as _resolve_auto,
)
from kwlab.experiments.data_sources import (
    resolve_source as _resolve_source,
)
from kwlab.utils import moved_names

__all__ = [
    "ImageData",
    "load_data",
    "synthetic_images",
]

#: Public names that lived here once -> their one home; importing one from here raises an error naming it.
__getattr__ = moved_names(
    __name__,
    {
        "DeviceLoader": "kwlab.experiments.loader",
        "DatasetNotFoundError": "kwlab.experiments.data_readers",
        "UnsafeDataError": "kwlab.experiments.data_readers",
        "read_cifar_batch": "kwlab.experiments.data_readers",
        "data_roots": "kwlab.experiments.data_sources",
        "resolve_source": "kwlab.experiments.data_sources",
        "resolve_auto": "kwlab.experiments.data_sources",
        "DATASET_NAMES": "kwlab.experiments.data_sources",
        "IMAGE_SUFFIXES": "kwlab.experiments.data_readers",
        "cache_dir": "kwlab.experiments.data_readers",
    },
)


@dataclass
class ImageData:
    """A dataset held as uint8 arrays.

    Attributes:
        name: dataset name or path.
        train_images: ``(N, H, W, 3)`` uint8.
        train_labels: ``(N,)`` int64.
        test_images: ``(M, H, W, 3)`` uint8.
        test_labels: ``(M,)`` int64.
        classes: class names, index = label.
        mean, std: per-channel statistics of the training images in [0, 1].
        test_cues: ``data="cued"`` only: the cue of each test image ``(M,)`` (which channel carries the
            class), for grouping the attention by cue; None for every other dataset.
    """

    name: str
    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    classes: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    test_cues: Tensor | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return int(self.train_images.shape[1])

    def __repr__(self) -> str:
        return (
            f"ImageData({self.name!r}, train={tuple(self.train_images.shape)}, "
            f"test={tuple(self.test_images.shape)}, classes={self.num_classes})"
        )


#: Classes of ``data="cued"`` (the textons of :func:`kwlab.experiments.data_cued.cued_images`).
CUED_CLASSES = 8

# ----------------------------------------------------------------------------------------------------
# Synthetic data
# ----------------------------------------------------------------------------------------------------


def synthetic_images(
    num_samples: int, *, num_classes: int = 10, image_size: int = 32, seed: int = 0, noise: float = 0.2
) -> tuple[Tensor, Tensor]:
    """Class-dependent oriented gratings in class colours plus noise, deterministic from ``seed``.

    Class ``c`` draws a sinusoidal grating at orientation ``pi * c / num_classes`` with a random
    phase, frequency jitter and position of a soft circular window, tinted with a class colour (70%)
    blended with a random colour (30%); Gaussian noise is added. A small CNN learns it in a few epochs,
    a linear model on raw pixels does not (random phase).

    Args:
        num_samples: N.
        num_classes: K.
        image_size: S (images are S x S).
        seed: generator seed; the same seed gives the same images bit for bit.
        noise: std of the additive Gaussian noise (image range [0, 1]).

    Returns:
        images ``(N, S, S, 3)`` uint8 and labels ``(N,)`` int64 (balanced: ``i % K`` then shuffled).
    """
    if num_samples < 1 or num_classes < 2 or image_size < 4:
        raise ValueError(
            f"synthetic_images needs num_samples >= 1, num_classes >= 2, image_size >= 4; got "
            f"{num_samples}, {num_classes}, {image_size}"
        )
    g = torch.Generator().manual_seed(int(seed))
    n, k, s = num_samples, num_classes, image_size
    labels = torch.arange(n) % k
    labels = labels[torch.randperm(n, generator=g)]
    theta = torch.pi * labels.double() / k + 0.08 * torch.randn(n, generator=g, dtype=torch.float64)
    freq = (2.5 + 0.5 * torch.rand(n, generator=g, dtype=torch.float64)) / s * 2.0
    phase = 2 * torch.pi * torch.rand(n, generator=g, dtype=torch.float64)
    coords = torch.arange(s, dtype=torch.float64) - (s - 1) / 2
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")  # (S, S)
    proj = xx[None] * torch.cos(theta)[:, None, None] + yy[None] * torch.sin(theta)[:, None, None]
    grating = torch.sin(2 * torch.pi * freq[:, None, None] * proj + phase[:, None, None])  # (N, S, S)
    centre = (torch.rand(n, 2, generator=g, dtype=torch.float64) - 0.5) * s * 0.4
    radius = s * (0.3 + 0.2 * torch.rand(n, generator=g, dtype=torch.float64))
    dist2 = (xx[None] - centre[:, 0, None, None]) ** 2 + (yy[None] - centre[:, 1, None, None]) ** 2
    window = torch.sigmoid((radius[:, None, None] ** 2 - dist2) / (0.5 * s))  # (N, S, S)
    hue = torch.arange(k, dtype=torch.float64) / k
    palette = 0.5 + 0.5 * torch.stack([torch.cos(2 * torch.pi * (hue + o)) for o in (0.0, 1 / 3, 2 / 3)], 1)
    random_colour = torch.rand(n, 3, generator=g, dtype=torch.float64)
    colour = 0.7 * palette[labels] + 0.3 * random_colour  # (N, 3)
    background = 0.5 * torch.rand(n, 1, 1, 3, generator=g, dtype=torch.float64)
    pattern = (0.5 + 0.5 * grating * window)[..., None]  # (N, S, S, 1)
    img = background * (1 - window[..., None]) + pattern * colour[:, None, None, :] * window[..., None]
    img = img + noise * torch.randn(n, s, s, 3, generator=g, dtype=torch.float64)
    images = (img.clamp(0, 1) * 255).round().to(torch.uint8)
    return images, labels.long()


# ----------------------------------------------------------------------------------------------------
# Public loader
# ----------------------------------------------------------------------------------------------------


def _channel_stats(images: Tensor, max_images: int = 10_000) -> tuple[tuple[float, ...], tuple[float, ...]]:
    x = images[:max_images].reshape(-1, 3).double() / 255.0
    return tuple(x.mean(0).tolist()), tuple(x.std(0).tolist())  # type: ignore[return-value]


def load_data(
    name: str,
    *,
    root: str | os.PathLike | None = None,
    image_size: int | None = None,
    train_samples: int | None = None,
    test_samples: int | None = None,
    classes: str | Sequence[str] | None = None,
    num_classes: int = 10,
    seed: int = 0,
    download: bool = True,
    use_cache: bool = True,
) -> ImageData:
    """Load dataset ``name`` as uint8 arrays (decoding and caching on first use).

    Args:
        name: ``"synthetic"``, ``"cued"``, ``"cifar10"``, ``"cifar100"`` or a path to an ImageFolder dir
            / .zip.
        root: data root (default ``$KWLAB_DATA``, then ``./data``).
        image_size: side of the square images (default: 32 for synthetic/CIFAR, 224 for folders).
            CIFAR pickles are always 32.
        train_samples, test_samples: caps; a fixed random subset (independent of ``seed`` for named
            datasets, so every run of a sweep sees the same images).
        classes: ImageFolder only: class folders to keep (list, comma-separated string or a file with
            one class per line), e.g. the ImageNet-100 class list.
        num_classes: synthetic only.
        seed: synthetic only: generator seed of the images.
        download: allow torchvision's downloader for CIFAR when the data is missing.
        use_cache: ImageFolder only: read/write the decoded cache under :func:`cache_dir`
            (:mod:`kwlab.experiments.data_readers`).
    """
    if name.lower() == "auto":
        name, notice = _resolve_auto(root, download=download)
        if notice:
            warnings.warn(notice, stacklevel=2)
    kind, path = _resolve_source(name, root, download=download)
    caps = {"train": train_samples, "test": test_samples}
    if kind == "synthetic":
        size = image_size or 32
        n_train = train_samples or 10_000
        n_test = test_samples or 2_000
        tx, ty = synthetic_images(n_train, num_classes=num_classes, image_size=size, seed=2 * seed)
        vx, vy = synthetic_images(n_test, num_classes=num_classes, image_size=size, seed=2 * seed + 1)
        mean, std = _channel_stats(tx)
        return ImageData("synthetic", tx, ty, vx, vy, [f"class{i}" for i in range(num_classes)], mean, std)
    if kind == "cued":
        size = image_size or 16
        train = cued_images(train_samples or 20_000, num_classes=CUED_CLASSES, image_size=size, seed=0)
        test = cued_images(test_samples or 4_000, num_classes=CUED_CLASSES, image_size=size, seed=1)
        mean, std = _channel_stats(train.images)
        names = [f"texton{i}" for i in range(CUED_CLASSES)]
        return ImageData(
            "cued", train.images, train.labels, test.images, test.labels, names, mean, std, test.cues
        )
    if kind == "cifar-pickle":
        if image_size not in (None, 32):
            raise ValueError(f"image_size={image_size}: the CIFAR pickles are 32x32; leave image_size unset")
        splits, class_names = read_cifar_pickle(path, name.lower())
        arrays = {}
        for split, (x, y) in splits.items():
            sel = subset(len(y), caps[split], 0)
            arrays[split] = (x[sel], y[sel])
    else:
        size = image_size or (32 if name.lower() in CIFAR_FOLDERS else 224)
        arrays, class_names = read_imagefolder(
            path, size=size, caps=caps, classes=parse_classes(classes), seed=0, use_cache=use_cache
        )
    tx, ty = (torch.from_numpy(np.array(a)) for a in arrays["train"])
    vx, vy = (torch.from_numpy(np.array(a)) for a in arrays["test"])
    mean, std = _channel_stats(tx)
    return ImageData(name, tx, ty, vx, vy, list(class_names), mean, std)
