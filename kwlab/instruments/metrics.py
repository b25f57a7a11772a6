"""Statistics of dynamic attention as pure tensor functions (no model, no hooks).

Every function takes the mixing coefficients ``alpha`` of one layer, shape ``(B, m, n)`` (``B`` samples,
``m`` mixtures, ``n`` cells of the bank), or any tensor whose last axis indexes the cells, and returns a
number (0-d tensor) or a small tensor. :class:`kwlab.Probe` streams them over many batches; notebooks can
call them directly on a recorded ``alpha``.

The *attention distribution* of a mixture is ``p = |alpha| / sum |alpha|`` over its cells: KernelWarehouse
attention is signed (the contrasting-driven attention function allows negative weights), so entropy and the
effective number of cells are measured on magnitudes. A mixture with all-zero coefficients has no
distribution; its ``p`` is taken as all zeros, so its entropy is 0 and its effective number of cells 1
(rare in practice; stated here rather than hidden).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "DEFAULT_BINS",
    "attention_distribution",
    "attention_entropy",
    "between_class_distance",
    "cell_mean_abs",
    "class_means",
    "effective_cells",
    "grid_share",
    "grid_share_of_noise",
    "negative_fraction",
    "negative_mass",
    "learned_to_pattern_norm",
    "own_cell_share",
    "pairwise_cosine_distance",
    "sample_variation",
    "signed_histogram",
    "top_cell_counts",
    "zero_cell_mass",
]

#: Histogram edges used by the probe: 40 bins of width 0.05 on [-1, 1], with 0 as an edge, so every
#: negative coefficient falls left of 0. CAF, softmax and sigmoid attention all live in [-1, 1].
DEFAULT_BINS: Tensor = torch.arange(-20, 21, dtype=torch.float32) / 20  # exact 0 edge (linspace misses it)

_EPS = 1e-12


def negative_fraction(alpha: Tensor) -> Tensor:
    """Share of coefficients that are negative.

    Args:
        alpha: any shape, e.g. ``(B, m, n)``.
    Returns:
        0-d tensor, ``#{alpha < 0} / numel``.
    """
    if alpha.numel() == 0:
        raise ValueError("alpha is empty")
    return (alpha < 0).float().mean()


def negative_mass(alpha: Tensor) -> Tensor:
    """Share of the total magnitude carried by negative coefficients.

    Args:
        alpha: any shape.
    Returns:
        0-d tensor, ``sum |alpha| over alpha < 0  /  sum |alpha|`` (0 when alpha is all zeros).
    """
    a = alpha.abs()
    neg = (a * (alpha < 0)).sum()  # no boolean indexing: no host sync on GPU
    return neg / a.sum().clamp_min(_EPS)


def zero_cell_mass(full: Tensor) -> Tensor:
    """Average share each mixture gives to its zero cell (the last slot), before that slot is dropped.

    Args:
        full: full coefficients ``(..., n + 1)``, zero cell last (what ``attention.tap`` sees).
    Returns:
        0-d tensor, mean over mixtures of ``|z_n| / sum_t |z_t|``.
    """
    if full.shape[-1] < 2:
        raise ValueError(
            f"full coefficients need n + 1 >= 2 slots on the last axis, got shape {tuple(full.shape)}"
        )
    a = full.abs()
    share = a[..., -1] / a.sum(-1).clamp_min(_EPS)
    return share.mean()


def attention_distribution(alpha: Tensor) -> Tensor:
    """Per-mixture distribution over cells, ``p = |alpha| / sum |alpha|`` along the last axis (same shape)."""
    a = alpha.abs()
    return a / a.sum(-1, keepdim=True).clamp_min(_EPS)


def attention_entropy(alpha: Tensor) -> Tensor:
    """Entropy (nats) of each mixture's distribution over cells.

    Args:
        alpha: ``(..., n)``.
    Returns:
        ``alpha.shape[:-1]``, ``-sum_t p_t log p_t`` with ``0 log 0 = 0``; between 0 (one cell) and ``log n``.
    """
    p = attention_distribution(alpha)
    return -(p * torch.log(p.clamp_min(_EPS))).sum(-1)


def effective_cells(alpha: Tensor) -> Tensor:
    """Effective number of cells each mixture uses, ``exp(entropy)``: 1 (one cell) to ``n`` (uniform).

    Args:
        alpha: ``(..., n)``.
    Returns:
        ``alpha.shape[:-1]``.
    """
    return attention_entropy(alpha).exp()


def cell_mean_abs(alpha: Tensor) -> Tensor:
    """Mean ``|alpha|`` per cell over every sample and mixture.

    Args:
        alpha: ``(..., n)``.
    Returns:
        ``(n,)``.
    """
    return alpha.abs().reshape(-1, alpha.shape[-1]).mean(0)


def top_cell_counts(alpha: Tensor) -> Tensor:
    """How often each cell is a mixture's strongest cell (``argmax |alpha|``; ties go to the lowest index).

    Args:
        alpha: ``(..., n)``.
    Returns:
        ``(n,)`` integer counts summing to the number of mixtures ``prod(alpha.shape[:-1])``.
    """
    n = alpha.shape[-1]
    top = alpha.abs().reshape(-1, n).argmax(-1)
    return torch.bincount(top, minlength=n)


def pairwise_cosine_distance(alpha: Tensor) -> Tensor:
    """Diversity across inputs: mean over pairs ``i < j`` of ``1 - cos(alpha_i, alpha_j)``.

    Each sample's coefficients are flattened into one vector (``m * n`` entries). 0 means every input gets
    the same attention (a static layer); for signed attention the distance can exceed 1. Computed in
    O(B) from the unit vectors ``u_i``: ``sum_{i != j} u_i . u_j = |sum_i u_i|^2 - B``.

    Args:
        alpha: ``(B, ...)`` with ``B >= 2``.
    Returns:
        0-d tensor (pass float64 for small distances: ``1 - cos`` cancels in float32).
    """
    b = alpha.shape[0]
    if b < 2:
        raise ValueError(f"pairwise_cosine_distance needs at least 2 samples, got batch size {b}")
    v = alpha.reshape(b, -1)
    if v.dtype not in (torch.float32, torch.float64):
        v = v.float()
    norm = v.norm(dim=1, keepdim=True)
    u = v / norm.clamp_min(_EPS)
    n_unit = (norm > _EPS).sum()  # an all-zero sample contributes u = 0 (cosine 0 with the others)
    off_diag = u.sum(0).square().sum() - n_unit
    return (1.0 - off_diag / (b * (b - 1))).clamp_min(0.0)  # >= 0 exactly; rounding can go below


def signed_histogram(alpha: Tensor, bins: Tensor = DEFAULT_BINS) -> Tensor:
    """Counts of coefficients per bin ``[bins[i], bins[i+1])``; values outside go to the edge bins.

    Equal-width bins (the default) take a fast path (arithmetic index, then one exact correction against
    the edges) that gives the same counts as a binary search.

    Args:
        alpha: any shape.
        bins: increasing edges ``(k + 1,)``.
    Returns:
        ``(k,)`` integer counts summing to the number of coefficients that are not NaN (a NaN, e.g. from a
        layer whose BatchNorm statistics overflowed, is in no bin).
    """
    if bins.dim() != 1 or bins.numel() < 2:
        raise ValueError(
            f"bins must be a 1-d tensor of at least 2 increasing edges, got shape {tuple(bins.shape)}"
        )
    x = alpha.detach().reshape(-1).contiguous()  # bucketize copies (and warns) on strided input
    if not x.is_floating_point():
        x = x.float()
    valid = ~torch.isnan(x)
    x = x.nan_to_num(nan=0.0)
    edges = bins.to(device=x.device, dtype=x.dtype).contiguous()
    k = edges.numel() - 1
    width = (bins[-1] - bins[0]) / k
    if bool(((bins[1:] - bins[:-1]) - width).abs().max() <= 1e-6 * width.abs()):
        idx = ((x - edges[0]) / float(width)).floor_().clamp_(0, k - 1).long()
        idx -= (x < edges[idx]).long()  # float rounding put it one bin too high
        idx.clamp_(0, k - 1)
        idx += ((x >= edges[idx + 1]) & (idx < k - 1)).long()  # ... or one bin too low
    else:
        # index of the bin whose left edge is the last edge <= value
        idx = torch.bucketize(x, edges, right=True).sub_(1).clamp_(0, k - 1)
    return torch.bincount(idx, weights=valid.double(), minlength=k).round().long()


def class_means(alpha: Tensor, labels: Tensor, num_classes: int | None = None) -> tuple[Tensor, Tensor]:
    """Per-class mean attention.

    Args:
        alpha: ``(B, m, n)`` (any ``(B, ...)``).
        labels: ``(B,)`` integer class labels in ``[0, num_classes)``.
        num_classes: number of classes (default ``labels.max() + 1``).
    Returns:
        ``means (C, ...)`` (NaN for a class without samples) and ``counts (C,)``.
    """
    if labels.dim() != 1 or labels.shape[0] != alpha.shape[0]:
        raise ValueError(f"labels must have shape ({alpha.shape[0]},), got {tuple(labels.shape)}")
    labels = labels.long()
    c = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    flat = alpha.reshape(alpha.shape[0], -1)
    sums = torch.zeros(c, flat.shape[1], dtype=flat.dtype, device=flat.device).index_add_(0, labels, flat)
    counts = torch.bincount(labels, minlength=c)
    means = sums / counts.unsqueeze(1).to(flat.dtype)  # 0/0 -> NaN for an empty class
    return means.reshape(c, *alpha.shape[1:]), counts


def between_class_distance(means: Tensor) -> Tensor:
    """Mean pairwise cosine distance between class-mean attention vectors (classes with NaN are skipped).

    Args:
        means: ``(C, ...)``, e.g. the first output of :func:`class_means`.
    Returns:
        0-d tensor; NaN when fewer than 2 classes have samples.
    """
    flat = means.reshape(means.shape[0], -1)
    flat = flat[~torch.isnan(flat).any(1)]
    if flat.shape[0] < 2:
        return torch.tensor(float("nan"))
    return pairwise_cosine_distance(flat)


def sample_variation(alpha: Tensor) -> Tensor:
    """How much the attention differs between the samples of a batch: ``1 - mean_b cos(alpha_b, mean)``.

    Each sample's ``alpha_b`` (flattened over mixtures and cells) is compared with the batch mean; 0 means
    every sample gets the same attention (the layer is effectively static), larger values mean more
    input-dependence. Computed in float64 (``1 - cos`` cancels in float32).

    Args:
        alpha: ``(B, ...)`` with ``B >= 2``.
    Returns:
        0-d tensor in [0, 2].
    """
    if alpha.dim() < 2 or alpha.shape[0] < 2:
        raise ValueError(f"sample_variation needs a batch of >= 2 samples, got shape {tuple(alpha.shape)}")
    flat = alpha.reshape(alpha.shape[0], -1).double()
    mean = flat.mean(0, keepdim=True)
    cos = torch.nn.functional.cosine_similarity(flat, mean.expand_as(flat), dim=1, eps=_EPS)
    return (1.0 - cos).mean()


def own_cell_share(learned: Tensor, pattern: Tensor) -> Tensor:
    """The learned attention's weight on the slot its one-hot init pattern points at, averaged over samples
    and mixtures: ``mean_{b,j} sum_t learned[b, j, t] * pattern[j, t]``.

    KernelWarehouse blends ``(1 - tau) * learned + tau * pattern``; 1.0 means the learned term alone
    reproduces the pattern (it has taken the pattern's function over), 0 means it ignores it.

    Args:
        learned: ``(B, m, slots)``, the signed L1-normalised learned term.
        pattern: ``(m, slots)``, one-hot rows.
    Returns:
        0-d tensor in [-1, 1].
    """
    if learned.shape[-2:] != pattern.shape:
        raise ValueError(f"learned {tuple(learned.shape)} and pattern {tuple(pattern.shape)} do not match")
    return (learned * pattern).sum(-1).mean()


def learned_to_pattern_norm(learned: Tensor, pattern: Tensor, tau: float | Tensor) -> Tensor:
    """Norm of the learned term over the norm of the pattern term in the blend, averaged over samples:
    ``mean_b ||(1 - tau) * learned_b|| / ||tau * pattern||`` (Frobenius norms over mixtures and slots).

    Below 1 the pattern dominates the coefficients the layer uses; at ``tau = 0`` the pattern term is gone
    and the ratio is ``inf``.

    Args:
        learned: ``(B, m, slots)``.
        pattern: ``(m, slots)``.
        tau: the blend weight of the pattern.
    """
    tau = torch.as_tensor(tau, dtype=torch.float64)
    denom = float(tau) * pattern.double().norm()
    num = (1.0 - tau) * learned.double().reshape(learned.shape[0], -1).norm(dim=1).mean()
    if denom == 0:
        return torch.tensor(float("inf"), dtype=torch.float64)
    return num / denom
def grid_share(maps: Tensor, period: int = 2) -> Tensor:
    """Share of a map's variation that repeats on a grid of ``period`` pixels.

    Gradients through stride-2 layers land on every second pixel (two such layers: every fourth), which
    shows as a grid in saliency and Integrated Gradients maps. This is the power of the 2-D Fourier
    transform at the frequencies of a ``period``-pixel grid (multiples of H/period and W/period, the mean
    left out) over the total power without the mean: near 0 for a smooth map, about
    ``(period**2 - 1) / (H*W)`` for white noise (:func:`grid_share_of_noise`), 1 for a map that repeats
    exactly every ``period`` pixels (a checkerboard for period 2).

    Args:
        maps: ``(B, H, W)`` or ``(B, C, H, W)`` (summed over channels); H and W multiples of ``period``.
    Returns:
        ``(B,)`` shares in [0, 1].
    """
    if maps.dim() == 4:
        maps = maps.sum(1)
    if maps.dim() != 3 or maps.shape[-1] % period or maps.shape[-2] % period:
        raise ValueError(
            f"maps must be (B, H, W) or (B, C, H, W) with H, W multiples of period={period} (even for 2); "
            f"got {tuple(maps.shape)}"
        )
    power = torch.fft.fft2(maps.detach().double()).abs().square()
    h, w = maps.shape[-2:]
    power[:, 0, 0] = 0.0  # the mean is not variation
    grid = power[:, :: h // period, :: w // period].sum((-2, -1))
    return (grid / power.sum((-2, -1)).clamp_min(_EPS)).float()


def grid_share_of_noise(height: int, width: int, period: int = 2) -> float:
    """The expected :func:`grid_share` of white noise: ``(period**2 - 1) / (height * width - 1)``."""
    return (period**2 - 1) / (height * width - 1)
