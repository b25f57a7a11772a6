"""The figures of a sweep report that :mod:`kwlab.instruments.plot` does not draw: accuracy by configuration
(every seed, the interval, the budget in the label), accuracy against parameters, the probe statistics
against a knob, and the line each other setting gets (:func:`knob_hue`). Used by
:mod:`kwlab.experiments.report`.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from kwlab.experiments.findings import KNOB_STATISTICS, chance_level, short_number
from kwlab.experiments.stats import config_columns
from kwlab.instruments.statistics import statistic_label

__all__: list[str] = []  # internal to the reports


def plain_ticks(ax: Any) -> None:
    """Readable tick labels on every axis: '69k', '0.5', '2' -- never '2x10^0'."""
    from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: PLC0415 - matplotlib: loaded when a figure is drawn

    if ax.xaxis.get_scale() == "log":  # ticks at the data's own x values when there are few (b = 1, 2, 4)
        xs = sorted({float(x) for line in ax.lines for x in line.get_xdata() if x is not None and x > 0})
        if 0 < len(xs) <= 12:
            ax.minorticks_off()
            ax.set_xticks(xs, [short_number(x) for x in xs])
    for axis in (ax.xaxis, ax.yaxis):
        if axis.get_scale() == "log":
            axis.set_major_formatter(FuncFormatter(lambda v, _: short_number(v)))
            axis.set_minor_formatter(NullFormatter())


def accuracy_by_config(df: pd.DataFrame, summary: pd.DataFrame, metric: str):
    import matplotlib.pyplot as plt  # noqa: PLC0415 - matplotlib: loaded when a figure is drawn

    n = len(summary)
    fig, ax = plt.subplots(figsize=(7.5, 0.55 * n + 1.6))
    labels = []
    for i, (_, row) in enumerate(summary.iterrows()):
        y = n - 1 - i
        colour = f"C{i % 10}"  # one colour per configuration; squares: static
        runs = df[df["run_id"].astype(str).isin(str(row["run_ids"]).split())]  # by id, never by label
        ax.scatter(runs[metric], [y] * len(runs), s=14, color=colour, alpha=0.5, zorder=2)
        ax.errorbar(
            row[f"{metric}_mean"], y, xerr=row[f"{metric}_ci95"], fmt="o", color=colour, capsize=4, zorder=3
        )
        att = row.get("params_attention")
        att_text = f", attention {short_number(att)}" if att and not pd.isna(att) and att > 0 else ""
        budget = f"{short_number(row.get('params'))} params{att_text}, {short_number(row.get('macs'))} MACs"
        labels.append(f"{row['label']}\n{budget}")
    chance = chance_level(df)
    ax.axvline(chance, color="grey", ls="--", lw=1)
    ax.text(chance, n - 0.45, f" chance {chance:.2f}", color="grey", fontsize=8, va="bottom")
    ax.set_yticks(range(n - 1, -1, -1), labels, fontsize=8)
    ax.set_ylim(-0.6, n - 0.2)
    hi = max(float(df[metric].max()), chance)
    ax.set_xlim(0, min(1.0, hi * 1.1 + 0.02))
    ax.set_xlabel(f"{metric} (mean over seeds, bar: 95% t-interval; dots: seeds)")
    ax.grid(axis="x", alpha=0.3)
    return fig


def accuracy_vs_params(df: pd.DataFrame, summary: pd.DataFrame, metric: str):
    import matplotlib.pyplot as plt  # noqa: PLC0415 - matplotlib: loaded when a figure is drawn

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (_, row) in enumerate(summary.iterrows()):
        colour = f"C{i % 10}"  # one colour per configuration; squares: static
        marker = "s" if row["method"] == "static" else "o"
        ax.errorbar(
            row["params"],
            row[f"{metric}_mean"],
            yerr=row[f"{metric}_ci95"],
            fmt=marker,
            color=colour,
            capsize=4,
            label=f"{row['label']} ({short_number(row.get('macs'))} MACs)",
        )
    chance = chance_level(df)
    ax.axhline(chance, color="grey", ls="--", lw=1, label=f"chance ({chance:.2f})")
    ax.set_xscale("log")
    params = sorted({float(v) for v in summary["params"].dropna()})
    if params:  # one tick per parameter count of the sweep, written 69k / 1.2M
        ax.set_xlim(params[0] / 1.3, params[-1] * 1.3)
        ax.minorticks_off()
        ticks = [
            v for i, v in enumerate(params) if i == 0 or v > params[i - 1] * 1.15
        ]  # no overlapping labels
        ax.set_xticks(ticks, [short_number(v) for v in ticks], rotation=45 if len(ticks) > 4 else 0)
    ax.set_ylim(0, min(1.0, max(float(df[metric].max()), chance) * 1.15 + 0.02))
    ax.set_xlabel("parameters")
    ax.set_ylabel(f"{metric} (mean ± 95% CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def statistics_vs_knob(dyn: pd.DataFrame, knob: str, logx: bool):
    import matplotlib.pyplot as plt  # noqa: PLC0415 - matplotlib: loaded when a figure is drawn

    from kwlab.instruments import plot  # noqa: PLC0415 - matplotlib

    columns = [c for c in KNOB_STATISTICS if c in dyn and dyn[c].notna().any()]
    fig, axes = plt.subplots(1, len(columns), figsize=(3.6 * len(columns), 3.4), squeeze=False)
    data = dyn.assign(**{HUE: knob_hue(dyn, knob)})
    for i, (ax, column) in enumerate(zip(axes[0], columns)):
        plot.metric_vs_knob(
            data, knob, column, hue=HUE, ax=ax, logx=logx, error="ci95", title=statistic_label(column)
        )
        ax.set_ylabel(statistic_label(column))
        if i and ax.get_legend() is not None:  # one legend, on the first panel
            ax.get_legend().remove()
    fig.tight_layout()
    return fig


HUE = "other settings"
#: Config columns a knob plot shows on its axis (the derived knob and the fields it comes from).
_KNOB_SOURCES = {
    "b": ("b", "budget", "preset"),
    "m": ("m", "cell_in", "cell_out", "preset"),
    "sharing_range": ("sharing_range", "sharing"),
}


def knob_hue(dyn: pd.DataFrame, knob: str) -> pd.Series:
    """One line per combination of everything else that varies: the config columns (and derived knobs)
    other than ``knob`` whose values differ between the dynamic runs, written ``sharing=layer, m=4``.
    Configurations that differ in a field the plot does not show never share a point."""
    skip = set(_KNOB_SOURCES[knob]) | {"seed"}
    cols = [c for c in ("b", "m", "sharing_range") if c not in skip]
    derived_from = ("budget", "cell_in", "cell_out", "sharing", "preset")  # shown as b, m and sharing_range
    cols += [c for c in config_columns(dyn) if c not in skip and c not in derived_from]
    varying = [c for c in cols if dyn[c].astype(str).nunique() > 1]
    if not varying:
        return pd.Series(["all"] * len(dyn), index=dyn.index)

    def text(v):
        return f"{v:g}" if isinstance(v, float) else str(v)

    return dyn[varying].apply(lambda r: ", ".join(f"{c}={text(r[c])}" for c in varying), axis=1)
