"""Dynamic gain: freeze every layer's attention at its data-mean to turn a dynamic model static.

``freeze_attention(model, loader)`` measures each dynamic layer's mean ``alpha (m, n)`` over the data
(model in eval mode, no gradients) and stores it in ``layer.attention.frozen_alpha``; from then on every
sample uses that same kernel. The accuracy drop between the dynamic and the frozen model is how much
*input dependence* (rather than extra parameters) contributes. The means are measured with every layer
still dynamic, then all layers are frozen at once.

Example::

    acc_dynamic = evaluate(model, test_loader)
    with kwlab.freeze_attention(model, train_loader, max_batches=50):
        acc_static = evaluate(model, test_loader)      # attention frozen inside the block
    dynamic_gain = acc_dynamic - acc_static            # restored on exit

or ``handle = kwlab.freeze_attention(...)`` ... ``kwlab.unfreeze_attention(model)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from kwlab.instruments.probe import Probe
from kwlab.layers.base import dynamic_layers

__all__ = ["FrozenAttention", "NonFiniteAttentionError", "freeze_attention", "unfreeze_attention"]


class NonFiniteAttentionError(ValueError):
    """:func:`freeze_attention` measured a non-finite mean attention (NaN or infinite inputs, or a layer
    whose outputs overflow): nothing was frozen. ``layers`` holds the names of the layers concerned."""

    def __init__(self, message: str, layers: list[str]) -> None:
        super().__init__(message)
        self.layers = layers


class FrozenAttention:
    """Handle returned by :func:`freeze_attention`; a context manager that restores the previous state.

    Attributes:
        alphas: the frozen mean ``alpha (m, n)`` per layer name.
    """

    def __init__(
        self, model: nn.Module, alphas: dict[str, Tensor], previous: dict[str, Tensor | None]
    ) -> None:
        self.model = model
        self.alphas = alphas
        self._previous = previous

    def restore(self) -> None:
        """Give every frozen layer back the ``frozen_alpha`` it had before (normally None: dynamic)."""
        layers = dict(dynamic_layers(self.model))
        for name, prev in self._previous.items():
            layers[name].attention.frozen_alpha = prev

    def __enter__(self) -> FrozenAttention:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.restore()


def freeze_attention(
    model: nn.Module,
    loader: Iterable | Tensor,
    max_batches: int | None = None,
    *,
    layers: str | Sequence[str] | None = None,
    progress: bool = False,
) -> FrozenAttention:
    """Set each dynamic layer's ``attention.frozen_alpha`` to its mean ``alpha`` over ``loader``.

    Args:
        model: a model with dynamic layers.
        loader: batches ``(inputs, labels)`` or bare inputs, or a single input tensor ``(B, ...)``.
        max_batches: use at most this many batches (None: all).
        layers: glob pattern(s) of the layers to freeze (None: all dynamic layers).
        progress: show a tqdm bar while measuring.
    Returns:
        A :class:`FrozenAttention` handle (use ``with`` to unfreeze automatically).
    """
    if max_batches is not None and (not isinstance(max_batches, int) or max_batches < 1):
        raise ValueError(f"max_batches must be None or an integer >= 1, got {max_batches!r}")
    probe = Probe(model, layers=layers)
    was_training = model.training
    model.eval()  # attention norm layers must not update their running statistics here
    try:
        if isinstance(loader, Tensor):
            probe.record(loader.to(_device(model)))
        else:
            probe.record_loader(loader, max_batches=max_batches, progress=progress)
    finally:
        model.train(was_training)
    empty = [s.name for s in probe._stats.values() if s.n_samples == 0]
    if empty:
        raise RuntimeError(f"layers {empty} were never called on the data; cannot freeze them")
    means = probe.mean_alpha()
    bad = [name for name, mean in means.items() if not bool(torch.isfinite(mean).all())]
    if bad:  # refuse before any layer is touched: the model stays as it was
        raise NonFiniteAttentionError(
            f"freeze_attention: the mean attention of {len(bad)} of {len(means)} layer(s) is not finite "
            f"(NaN or inf), first {bad[:3]}; nothing was frozen and the model is unchanged. Allowed: data "
            f"whose inputs are finite and a model whose attention is finite on them (check the batches "
            f"given as 'loader' for NaN/inf samples, e.g. torch.isfinite(x).all())",
            bad,
        )
    previous: dict[str, Tensor | None] = {}
    for name, layer in probe._layers:
        att = layer.attention
        previous[name] = att.frozen_alpha
        att.frozen_alpha = means[name].to(device=att.temperature.device)
    return FrozenAttention(model, means, previous)


def unfreeze_attention(model: nn.Module) -> nn.Module:
    """Make every dynamic layer of ``model`` dynamic again (``frozen_alpha = None``); returns the model."""
    for _, layer in dynamic_layers(model):
        layer.attention.frozen_alpha = None
    return model


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")
