"""The probe's statistics table, declared once: every column of
:meth:`Probe.summary <kwlab.instruments.probe.Probe.summary>`.

:data:`STATISTICS` holds one :class:`Statistic` per streamed column (each a function of
:mod:`kwlab.instruments.metrics`, the only implementation of the statistic); :func:`summary_columns`,
the per-layer accumulator (:mod:`kwlab.instruments.layer_stats`) and the training probe's history
(:class:`kwlab.experiments.ProbeCallback`) read the table from this module when they run, so a statistic
added here is a column everywhere. :data:`HEADLINE` names the columns whose means over layers are a run's
``probe_<column>`` results, and :func:`degenerate_layers` the layers whose statistics say little.

A new statistic is one function in :mod:`kwlab.instruments.metrics` plus
``STATISTICS.register(column, Statistic(column, ...))``; its ``label`` is how every table and figure names it
(:func:`statistic_label`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
from torch import Tensor

from kwlab.instruments import metrics
from kwlab.utils import Registry

__all__ = [
    "DEGENERATE_RULE",
    "EXTRA_COLUMNS",
    "HEADLINE",
    "LAYER_COLUMNS",
    "STATISTICS",
    "Statistic",
    "degenerate_layers",
    "headline",
    "headline_metrics",
    "statistic_label",
    "summary_columns",
]


@dataclass(frozen=True)
class Statistic:
    """One column of :meth:`Probe.summary <kwlab.instruments.probe.Probe.summary>`: a function of
    :mod:`kwlab.instruments.metrics` (the only implementation of the statistic) computed per recorded batch
    and streamed as a weighted mean.

    Attributes:
        column: the summary column.
        metric: ``metric(alpha) -> 0-d tensor`` for one batch (``full`` coefficients when ``source="full"``);
            ``metric(learned, pattern, tau)`` when ``source="learned"``.
        weight: ``weight(alpha) -> 0-d tensor``, the batch's weight in the mean (e.g. its element count).
        source: "alpha" (``(B, m, n)``), "full" (``(B, m, n + 1)``, zero cell last; zero-cell methods only),
            "learned" (KW's learned term before the blend with the init pattern, ``(B, m, slots)``, seen
            through ``attention.learned_tap``; KW with ``attention="caf"`` or ``"constant"`` only, NaN
            elsewhere) or
            "kernels" (the per-sample effective kernels ``(B, ...)`` of
            :meth:`DynamicLayer.effective_kernels <kwlab.layers.base.DynamicLayer.effective_kernels>`,
            every method; a batch whose value is not finite is left out of the mean and counted in
            ``kernel_batches_skipped``).
        label: how tables and figures name the statistic (the one label: :func:`statistic_label`); default:
            the column.
    """

    column: str
    metric: Callable[..., Tensor]
    weight: Callable[[Tensor], Tensor]
    source: str = "alpha"
    label: str = ""

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", self.column)


# ------------------------------------------------------------------------------------ weights of a batch
def _elements(a: Tensor) -> Tensor:
    return a.new_tensor(float(a.numel()))


def _mixtures(a: Tensor) -> Tensor:
    return a.new_tensor(float(a[..., 0].numel()))


def _samples(a: Tensor) -> Tensor:
    return a.new_tensor(float(a.shape[0]))


def _has_pairs(a: Tensor) -> Tensor:
    return a.new_tensor(float(a.shape[0] >= 2))


# --------------------------------------------------------------------- metrics that need a pair of samples
def _sample_variation(a: Tensor) -> Tensor:
    return metrics.sample_variation(a).float() if a.shape[0] >= 2 else a.new_zeros(())


def _diversity(a: Tensor) -> Tensor:
    return metrics.pairwise_cosine_distance(a.double()).float() if a.shape[0] >= 2 else a.new_zeros(())


#: The summary statistics by column, in summary order; a new one is a function in
#: :mod:`kwlab.instruments.metrics` plus ``STATISTICS.register(column, Statistic(column, ...))``.
STATISTICS: Registry[Statistic] = Registry(
    "statistic",
    (
        (s.column, s)
        for s in (
            Statistic("neg_frac", metrics.negative_fraction, _elements, label="share of alpha < 0"),
            Statistic(
                "neg_mass", metrics.negative_mass, lambda a: a.abs().sum(), label="negative share of |alpha|"
            ),
            Statistic("zero_mass", metrics.zero_cell_mass, _mixtures, source="full", label="zero-cell mass"),
            Statistic(
                "entropy", lambda a: metrics.attention_entropy(a).mean(), _mixtures, label="entropy (nats)"
            ),
            Statistic(
                "effective_cells",
                lambda a: metrics.effective_cells(a).mean(),
                _mixtures,
                label="effective cells exp(entropy)",
            ),
            Statistic(
                "effective_cell_fraction",
                lambda a: metrics.effective_cell_fraction(a).mean(),
                _mixtures,
                label="effective cells / cells",
            ),
            # 1 - cos cancels in fp32: computed in float64; a batch of one sample has no pairs (weight 0)
            Statistic("diversity", _diversity, _has_pairs, label="diversity (mean pairwise cosine distance)"),
            Statistic(
                "mean_abs",
                lambda a: metrics.cell_mean_abs(a).mean(),
                _elements,
                label="mean |alpha| per cell",
            ),
            Statistic(
                "sample_variation", _sample_variation, _has_pairs, label="sample variation of the attention"
            ),
            # magnitude-aware, on the kernels themselves: ||W_b - mean W|| / ||mean W|| (every method)
            Statistic(
                "kernel_variation",
                metrics.kernel_variation,
                _has_pairs,
                source="kernels",
                label="sample variation of the kernels",
            ),
            # KW's learned attention alone, before the blend with the one-hot init pattern (the handover)
            Statistic(
                "learned_own_share",
                lambda z, p, t: metrics.own_cell_share(z, p),
                _mixtures,
                "learned",
                label="learned attention's weight on the pattern's cell",
            ),
            Statistic(
                "learned_to_pattern_norm",
                metrics.learned_to_pattern_norm,
                _samples,
                "learned",
                label="||learned term|| / ||pattern term||",
            ),
            Statistic(
                "learned_sample_variation",
                lambda z, p, t: _sample_variation(z),
                _has_pairs,
                "learned",
                label="sample variation of the learned attention",
            ),
        )
    ),
)

#: The columns of the summary that name a layer; the statistics follow (:func:`summary_columns`).
#: ``nonfinite_samples``: samples whose attention held NaN or inf (the layer's statistics are then NaN)
LAYER_COLUMNS = ("layer", "bank", "num_mixtures", "num_cells", "n_samples", "nonfinite_samples")
#: Summary columns computed beside :data:`STATISTICS`: from the per-class means, the layer's temperature, and
#: the recorded batches whose kernel statistics were not finite (left out of their means).
EXTRA_COLUMNS = ("class_distance", "temperature", "kernel_batches_skipped")
#: The labels of :data:`EXTRA_COLUMNS` (a statistic's label is its ``label``).
_EXTRA_LABELS = {
    "class_distance": "class distance",
    "temperature": "temperature tau",
    "kernel_batches_skipped": "recorded batches left out of the kernel statistics",
}
#: The probe's headline columns: their means over layers are a run's ``probe_<column>`` results (the final
#: probe of :mod:`kwlab.experiments.train`, the sweep's results table, its summary and the report).
HEADLINE = (
    "neg_frac",
    "effective_cells",
    "effective_cell_fraction",
    "diversity",
    "class_distance",
    "entropy",
    "sample_variation",
    "kernel_variation",
    "learned_own_share",
    "learned_sample_variation",
)


def summary_columns() -> list[str]:
    """The columns of the summary, derived from :data:`STATISTICS` (read when called, so a statistic added
    to the table is a column at once): :data:`LAYER_COLUMNS`, one per statistic, then
    :data:`EXTRA_COLUMNS`."""
    return [*LAYER_COLUMNS, *STATISTICS, *EXTRA_COLUMNS]


def statistic_label(column: str) -> str:
    """How tables and figures name a probe column: the :class:`Statistic`'s ``label`` (also for its
    ``probe_<column>`` result), the label of an :data:`EXTRA_COLUMNS` column, else ``column`` itself."""
    name = column[len("probe_") :] if column.startswith("probe_") else column
    if name in STATISTICS:
        return STATISTICS[name].label
    return _EXTRA_LABELS.get(name, column)


def headline_metrics() -> tuple[str, ...]:
    """The result names of :func:`headline`: ``probe_neg_frac``, ... (results tables and summaries)."""
    return tuple(f"probe_{c}" for c in HEADLINE)


def headline(summary: pd.DataFrame) -> dict[str, float]:
    """``{"probe_<column>": mean over layers}`` for every :data:`HEADLINE` column of a summary table (NaN
    where no layer has a value). A layer whose attention was not finite (``nonfinite_samples > 0``) makes
    every headline NaN: a mean over the other layers would report a number for a network whose attention
    is NaN."""
    nan = float("nan")
    if "nonfinite_samples" in summary and (pd.to_numeric(summary["nonfinite_samples"]) > 0).any():
        return {name: nan for name in headline_metrics()}
    out = {}
    for name, column in zip(headline_metrics(), HEADLINE):
        values = summary[column].dropna() if column in summary else ()
        out[name] = float(values.mean()) if len(values) else float("nan")
    return out


# ------------------------------------------------------------------------------------------ readings
#: The rule :func:`degenerate_layers` applies, in words (notebooks print it beside the statistics it changes).
DEGENERATE_RULE = (
    "a layer whose attention is a single coefficient per image (one mixture of one cell, m * n = 1) is "
    "degenerate: its diversity and class distance compare signs only (one sign flip moves them to about 1), "
    "and its effective number of cells is 1 by construction"
)


def degenerate_layers(summary: pd.DataFrame) -> list[str]:
    """The layers of a summary table whose statistics are degenerate (see :data:`DEGENERATE_RULE`):
    ``num_mixtures * num_cells == 1``, e.g. a 1x1 downsample convolution with its own one-cell warehouse.
    Means over layers that should describe the attention leave them out (and say so).
    """
    missing = [c for c in ("layer", "num_mixtures", "num_cells") if c not in summary.columns]
    if missing:
        raise ValueError(f"summary needs columns layer, num_mixtures, num_cells; missing {missing}")
    one = summary["num_mixtures"].astype(float) * summary["num_cells"].astype(float) == 1
    return summary.loc[one, "layer"].tolist()
