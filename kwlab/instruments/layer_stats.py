"""The probe's per-layer accumulator: what one dynamic layer's recorded attention adds up to.

:class:`LayerStats` streams, per layer and without keeping every ``alpha``, each statistic of
:data:`kwlab.instruments.statistics.STATISTICS` as a weighted mean, a signed histogram, per-cell usage, the
per-class sums, the temperature at capture time and the first ``keep`` samples. It only accumulates what it
is handed: the hooks that hand it the coefficients live in :mod:`kwlab.instruments.probe`, and its rows are
read out by :class:`kwlab.instruments.probe.Probe`. The statistics table is read from
:mod:`kwlab.instruments.statistics` each time (never copied), so a statistic added there is accumulated here.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from kwlab.instruments import metrics, statistics
from kwlab.layers.attention import PATTERN_FUNCTIONS
from kwlab.layers.base import DynamicLayer

__all__ = ["LayerStats"]


class LayerStats:
    """Streaming accumulators of one layer (tensors live on the attention's device; no host sync).

    Args:
        name: the layer's qualified name.
        layer: the dynamic layer (its attention's shape, zero cell and learned term are read once).
        bins: histogram edges.
        keep: how many samples' ``alpha`` to keep.
    """

    def __init__(self, name: str, layer: DynamicLayer, bins: Tensor, keep: int) -> None:
        att = layer.attention
        self.name = name
        self.bank = layer.bank or name
        self.m, self.n = att.num_mixtures, att.num_cells
        self.zero_cell = bool(att.zero_cell)
        # the CAF's learned term z^ (KW "caf", and the "constant" control: z^ the same for every sample)
        self.learned = hasattr(att, "learned_tap") and getattr(att, "function", None) in PATTERN_FUNCTIONS
        self.pattern = att.init_pattern if self.learned else None
        self.bins = bins
        self.keep = keep
        self.reset()

    def reset(self) -> None:
        """Forget everything recorded."""
        self.calls = 0  # forward calls seen (recorded or not)
        self.n_samples = 0  # samples recorded
        self.acc: dict[str, Tensor] | None = None
        self._temperature: Tensor | None = None
        self.class_sum: Tensor | None = None  # (C, m, n)
        self.class_count: Tensor | None = None  # (C,)
        self.kept: list[Tensor] = []
        self.kept_labels: list[Tensor] = []
        self.n_kept = 0
        self.pending_full: Tensor | None = None
        self.pending_learned: Tensor | None = None
        self.pending_kernels = False  # the last attention call was recorded: its kernels are due

    def _zeros(self, device: torch.device) -> dict[str, Tensor]:
        z = lambda *s: torch.zeros(*s, dtype=torch.float64, device=device)  # noqa: E731
        acc = {
            "hist": z(self.bins.numel() - 1),
            "cell_abs": z(self.n),
            "top": z(self.n),
            "alpha_sum": z(self.m, self.n),
            "nonfinite": z(()),  # samples whose alpha held NaN or inf
        }
        for stat in statistics.STATISTICS.values():
            acc[stat.column], acc[stat.column + ":w"] = z(()), z(())
        acc["kernel_batches_skipped"] = z(())
        return acc

    def update(
        self,
        alpha: Tensor,
        full: Tensor | None,
        labels: Tensor | None,
        temperature: Tensor | None,
        learned: Tensor | None = None,
    ) -> None:
        """Add one recorded batch: ``alpha (B, m, n)``, the ``full`` coefficients (zero cell last, or None),
        labels ``(B,)`` or None, the temperature or None, and KW's ``learned`` term or None."""
        a = alpha.detach().float()
        b = a.shape[0]
        if self.acc is None:
            self.acc = self._zeros(a.device)
        acc = self.acc
        acc["nonfinite"] += (~torch.isfinite(a.reshape(b, -1)).all(1)).sum()
        sources = {
            "alpha": a,
            "full": full.detach().float() if full is not None and self.zero_cell else None,
            "learned": learned.detach().float() if learned is not None and self.learned else None,
        }
        for stat in statistics.STATISTICS.values():
            x = sources.get(stat.source)  # "kernels": update_kernels
            if x is None:
                continue
            w = stat.weight(x).double()
            if stat.source == "learned":
                value = stat.metric(x, self.pattern.to(x), temperature.detach())
            else:
                value = stat.metric(x)
            acc[stat.column] += value.double() * w
            acc[stat.column + ":w"] += w
        acc["hist"] += metrics.signed_histogram(a, self.bins)
        acc["cell_abs"] += metrics.cell_mean_abs(a).double() * (b * self.m)
        acc["top"] += metrics.top_cell_counts(a)
        acc["alpha_sum"] += a.sum(0)
        self.n_samples += b
        self._temperature = None if temperature is None else temperature.detach().clone()
        if labels is not None:
            self._add_classes(a, labels)
        if self.n_kept < self.keep:
            take = a[: self.keep - self.n_kept]
            self.kept.append(take.cpu())
            self.kept_labels.append(
                labels[: take.shape[0]].cpu()
                if labels is not None
                else torch.full((take.shape[0],), -1, dtype=torch.long)
            )
            self.n_kept += take.shape[0]

    def update_kernels(self, kernels: Tensor) -> None:
        """Add the per-sample effective kernels ``(B, ...)`` of one recorded batch (the statistics whose
        ``source`` is "kernels"). A non-finite value is left out of the mean and counted in
        ``kernel_batches_skipped`` (no host sync)."""
        k = kernels.detach()
        if self.acc is None:
            self.acc = self._zeros(k.device)
        acc = self.acc
        for stat in statistics.STATISTICS.values():
            if stat.source != "kernels":
                continue
            value, w = stat.metric(k).double(), stat.weight(k).double()
            finite = torch.isfinite(value)
            acc[stat.column] += torch.where(finite, value * w, torch.zeros_like(value))
            acc[stat.column + ":w"] += torch.where(finite, w, torch.zeros_like(w))
            acc["kernel_batches_skipped"] += (~finite).double()

    def _add_classes(self, a: Tensor, labels: Tensor) -> None:
        means, counts = metrics.class_means(a.double(), labels.to(a.device))  # one small sync per batch
        c = means.shape[0]
        if self.class_sum is None:
            self.class_sum = torch.zeros(0, self.m, self.n, dtype=torch.float64, device=a.device)
            self.class_count = torch.zeros(0, dtype=torch.float64, device=a.device)
        if c > self.class_sum.shape[0]:
            grow = c - self.class_sum.shape[0]
            self.class_sum = torch.cat([self.class_sum, self.class_sum.new_zeros(grow, self.m, self.n)])
            self.class_count = torch.cat([self.class_count, self.class_count.new_zeros(grow)])
        seen = counts > 0
        self.class_sum[:c][seen] += means[seen] * counts[seen].reshape(-1, 1, 1).double()
        self.class_count[:c] += counts.double()

    # ------------------------------------------------------------------------------------------- readout
    def _get(self, key: str) -> Tensor:
        return self.acc[key].cpu() if self.acc is not None else torch.zeros(())

    def mean_alpha(self) -> Tensor:
        """Mean ``alpha (m, n)`` over every recorded sample."""
        if self.acc is None:
            raise RuntimeError(
                f"layer {self.name!r} recorded nothing yet: run a forward while the probe is on"
            )
        return (self.acc["alpha_sum"] / self.n_samples).float()

    def class_means(self) -> tuple[Tensor, Tensor] | None:
        """``(means (C, m, n), counts (C,))`` per label (NaN for a label not seen), or None without labels."""
        if self.class_sum is None:
            return None
        count = self.class_count.cpu()
        means = self.class_sum.cpu() / count.reshape(-1, 1, 1)  # empty class -> NaN
        return means, count

    def summary_row(self) -> dict[str, Any]:
        """The layer's row of the summary, keyed by :func:`kwlab.instruments.statistics.summary_columns`."""
        nan = float("nan")
        row: dict[str, Any] = {
            "layer": self.name,
            "bank": self.bank,
            "num_mixtures": self.m,
            "num_cells": self.n,
            "n_samples": self.n_samples,
            "nonfinite_samples": int(self._get("nonfinite")),
        }
        if self.acc is None or row["nonfinite_samples"] > 0:
            # no attention recorded, or a NaN/inf attention: every statistic is NaN (a NaN alpha would
            # otherwise count as neg_frac 0, a cell never on top, ...)
            row.update({k: nan for k in statistics.summary_columns() if k not in row})
            if self.acc is not None:
                row["temperature"] = float(self._temperature) if self._temperature is not None else nan
            return row
        for stat in statistics.STATISTICS.values():
            w = float(self._get(stat.column + ":w"))
            row[stat.column] = float(self._get(stat.column)) / w if w > 0 else nan
        cm = self.class_means()
        row["class_distance"] = float(metrics.between_class_distance(cm[0])) if cm is not None else nan
        row["temperature"] = float(self._temperature) if self._temperature is not None else nan
        row["kernel_batches_skipped"] = int(self._get("kernel_batches_skipped"))
        return row
