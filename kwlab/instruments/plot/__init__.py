"""Every kwlab figure: attention statistics, sweep results, learning curves, warehouse plans, kernel cells
and attribution maps.

Every function takes data (a tidy DataFrame from :class:`kwlab.Probe` / :func:`kwlab.instruments.load` /
:meth:`kwlab.ProbeCallback.history` / a sweep table, or an array) and an optional matplotlib ``ax``, and
returns the :class:`~matplotlib.figure.Figure`. Nothing here calls ``plt.show()``. Where a function expects a
probe table it also accepts the probe (or a loaded :class:`~kwlab.instruments.ProbeResult`) itself.

Signed attention is drawn with a diverging colour map centred on 0 (red: positive, blue: negative);
non-negative data (softmax or sigmoid attention, usage) with a sequential map starting at 0, so that a colour
never stands for a value the data cannot take. Panels that are compared take one scale (``vmax=``).

One module per kind of figure, all re-exported here: :mod:`~kwlab.instruments.plot.attention` (a probe's
attention), :mod:`~kwlab.instruments.plot.training` (over training), :mod:`~kwlab.instruments.plot.results`
(sweep results), :mod:`~kwlab.instruments.plot.plans` (warehouse plans and kernel cells),
:mod:`~kwlab.instruments.plot.attribution`, :mod:`~kwlab.instruments.plot.handover` (the handover in one
figure); the shared style is :mod:`~kwlab.instruments.plot.style`.
"""

from __future__ import annotations

from .attention import (
    alpha_histogram,
    attention_by_label,
    attention_heatmap,
    cell_usage,
    layer_comparison,
    layer_stats,
    negative_fraction,
)
from .attribution import attribution_grid, to_image
from .handover import handover_story
from .plans import kernel_cells, params_vs_budget, warehouse_plan
from .results import accuracy_vs_params, metric_vs_knob
from .training import learning_curves, negative_fraction_over_training, over_training

__all__ = [
    "handover_story",
    "attention_heatmap",
    "attention_by_label",
    "alpha_histogram",
    "negative_fraction",
    "negative_fraction_over_training",
    "cell_usage",
    "layer_stats",
    "layer_comparison",
    "accuracy_vs_params",
    "metric_vs_knob",
    "learning_curves",
    "over_training",
    "params_vs_budget",
    "warehouse_plan",
    "kernel_cells",
    "to_image",
    "attribution_grid",
]
