"""A positive control for dynamic convolution: images whose best filter depends on a global cue.

``data="cued"`` (:func:`cued_images`). Every image holds a texture in **each** colour channel (red, green,
blue): one of ``num_classes`` *textons* -- fixed, zero-mean 3 x 3 patterns, the same for every seed --
stamped at random places (a sparse spike map convolved with the texton). A **cue** -- a tint of the
background in one channel -- says which channel carries the class: the class is the texton of the cued
channel; the textons of the other two channels are distractors drawn uniformly (each equally likely to be
any class, so they carry no information about it).

Why a thin static net fails and a dynamic one of the same compute need not:

* to read the class, a static net must detect every (channel, texton) pair -- ``3 * num_classes``
  unrelated filters (random textons are not a one-parameter family such as orientations, which two
  quadrature filters cover) -- and gate them by the cue; a net of few channels cannot hold them all;
* a dynamic convolution whose attention pools its whole input (DY-Conv, CondConv, ODConv and
  KernelWarehouse all start from global average pooling) reads the cue -- the per-channel means carry
  nothing else, because the textons have zero mean -- and can mix, per image, the ``num_classes`` texton
  filters of the cued channel into the layer's kernel: it needs a third of the filters at a time.

A constant (input-independent) mixture is a static convolution, so the constant-attention control has the
static net's problem. A static net of more channels (and as many parameters as the dynamic one) can hold
every filter: the control separates compute from parameters, it does not promise a win at matched
parameters. ``frame > 0`` moves the cue into a frame around the texture (nothing inside the frame says
which channel is cued), a harder variant in which a static net must carry every filter's response until
its receptive field reaches the frame.

Everything is deterministic in ``seed``: the same seed gives the same images bit for bit. The cue and the
distractors are returned too (:class:`CuedImages`), so the instruments can group the attention by cue.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["CuedImages", "cued_images", "CUED_CHANNELS"]

#: The channels a cue can point at (the image's colour channels).
CUED_CHANNELS = ("red", "green", "blue")


@dataclass(frozen=True)
class CuedImages:
    """Images of :func:`cued_images` with their labels and the hidden variables that made them.

    Attributes:
        images: ``(N, S, S, 3)`` uint8.
        labels: ``(N,)`` int64, the texton of the cued channel.
        cues: ``(N,)`` int64, the cued channel (0 red, 1 green, 2 blue).
        textons: ``(N, 3)`` int64, the texton index of each channel
            (``textons[i, cues[i]] == labels[i]``).
    """

    images: Tensor
    labels: Tensor
    cues: Tensor
    textons: Tensor


def cued_images(
    num_samples: int,
    *,
    num_classes: int = 4,
    image_size: int = 16,
    seed: int = 0,
    cue_strength: float = 0.12,
    contrast: float = 0.5,
    noise: float = 0.05,
    density: float = 0.08,
    frame: int = 0,
) -> CuedImages:
    """``num_samples`` cue-routed texture images (see the module doc), deterministic from ``seed``.

    Args:
        num_samples: N (>= 1).
        num_classes: K textons (2 <= K <= 12).
        image_size: S (>= 8).
        seed: generator seed.
        cue_strength: the cued channel's tint (image range [0, 1]; > 0).
        contrast: amplitude of a stamped texton (unit L2 norm times ``contrast``; > 0).
        noise: std of the additive Gaussian noise (>= 0).
        density: probability that a pixel of a channel holds a stamp of its texton (0 < density <= 1).
        frame: width in pixels of the cue's frame; 0 tints the whole image (the cue visible everywhere).

    Returns:
        :class:`CuedImages`; labels and cues are balanced (``i % K``, ``i % 3`` before shuffling).
    """
    checks = {
        "num_samples": (num_samples, isinstance(num_samples, int) and num_samples >= 1, "an int >= 1"),
        "num_classes": (num_classes, isinstance(num_classes, int) and 2 <= num_classes <= 12, "an int 2..12"),
        "image_size": (image_size, isinstance(image_size, int) and image_size >= 8, "an int >= 8"),
    }
    for name, value, low in (("cue_strength", cue_strength, 0), ("contrast", contrast, 0)):
        checks[name] = (value, _is_number(value) and value > low, "a finite number > 0")
    checks["noise"] = (noise, _is_number(noise) and noise >= 0, "a finite number >= 0")
    checks["density"] = (density, _is_number(density) and 0 < density <= 1, "a number in (0, 1]")
    frame_ok = isinstance(frame, int) and 0 <= frame and (frame == 0 or 2 * frame + 3 <= image_size)
    checks["frame"] = (frame, frame_ok, "an int >= 0 that leaves at least 3 x 3 pixels inside the frame")
    for name, (value, ok, allowed) in checks.items():
        if isinstance(value, bool) or not ok:
            raise ValueError(f"cued_images: {name} must be {allowed}, got {value!r} ({type(value).__name__})")
    g = torch.Generator().manual_seed(int(seed))
    n, k, s, c = num_samples, num_classes, image_size, len(CUED_CHANNELS)
    labels = (torch.arange(n) % k)[torch.randperm(n, generator=g)]
    cues = (torch.arange(n) % c)[torch.randperm(n, generator=g)]
    textons = torch.randint(0, k, (n, c), generator=g)
    textons[torch.arange(n), cues] = labels
    patterns = _textons(k)  # (K, 3, 3), fixed for every seed: the classes are the same patterns
    spikes = (torch.rand(n * c, 1, s, s, generator=g, dtype=torch.float64) < density).double()
    bank = patterns[textons.reshape(-1)].unsqueeze(1)  # (N * 3, 1, 3, 3): each channel's texton
    texture = torch.nn.functional.conv2d(
        spikes.reshape(1, n * c, s, s), bank.flip(-1, -2), padding=1, groups=n * c
    ).reshape(n, c, s, s)
    base = 0.4 + 0.1 * torch.rand(n, 1, 1, 1, generator=g, dtype=torch.float64)  # grey level of the image
    tint = cue_strength * torch.nn.functional.one_hot(cues, c).double()[..., None, None]
    if frame:  # the cue lives in a frame ``frame`` pixels wide, the texture inside it
        border = torch.ones(s, s, dtype=torch.float64)
        border[frame:-frame, frame:-frame] = 0.0
        tint, texture = tint * border, texture * (1.0 - border)
    img = base + tint + contrast * texture + noise * torch.randn(n, c, s, s, generator=g, dtype=torch.float64)
    images = (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    return CuedImages(images, labels.long(), cues.long(), textons.long())


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and float("-inf") < float(value) < float("inf")


def _textons(num_classes: int) -> Tensor:
    """The class patterns: ``num_classes`` zero-mean, unit-norm 3x3 patterns from a fixed generator."""
    g = torch.Generator().manual_seed(20241207)
    t = torch.randn(num_classes, 3, 3, generator=g, dtype=torch.float64)
    t = t - t.mean(dim=(1, 2), keepdim=True)
    return t / t.norm(dim=(1, 2), keepdim=True)
