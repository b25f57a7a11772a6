"""A sweep's finding in words, generated from its results table: :func:`load_results` (results.csv with
derived columns), :func:`summary_table` (one row per configuration), :func:`findings` (each configuration's
accuracy with its interval and budget, and the three verdicts of its comparisons),
:func:`knob_table` (knobs, budgets and attention statistics as markdown) and :func:`finding_text` (what
``kwlab sweep`` prints).

The figures and the HTML page that show the same numbers are :mod:`kwlab.experiments.report`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from kwlab.experiments.handover import epoch_table, handover_findings, is_handover_study
from kwlab.experiments.significance import ALPHA, DEFAULT_MARGIN
from kwlab.experiments.stats import config_columns, summarize
from kwlab.experiments.verdicts import compare_family, verdict_lines
from kwlab.instruments.left_out import left_out_text, split_nonfinite
from kwlab.instruments.statistics import statistic_label
from kwlab.methods import METHODS
from kwlab.models import model_entry

__all__ = [
    "KNOB_STATISTICS",
    "chance_level",
    "derive_columns",
    "finding_text",
    "findings",
    "default_pairs",
    "load_verdicts",
    "knob_table",
    "load_results",
    "short_number",
    "summary_table",
]


def _arch_presets(arch: Any, method: str):
    """``method``'s presets on a registered arch (None: a custom or unknown arch, the method's own)."""
    try:
        return model_entry(arch).presets_for(method)
    except ValueError:
        return None


def load_results(sweep_dir: str | os.PathLike) -> pd.DataFrame:
    """results.csv with derived columns: ``b`` (effective budget; 1.0 for static), ``m`` (cells per kernel
    = 1 / (cell_in * cell_out)), ``sharing_range`` ("-" for static) and ``accuracy`` (= best_acc)."""
    path = Path(sweep_dir) / "results.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `kwlab sweep CONFIG --out {sweep_dir}` first")
    return derive_columns(pd.read_csv(path))


def derive_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Add :func:`load_results`'s derived columns (``b``, ``m``, ``sharing_range``, ``accuracy``)."""
    if df.empty:
        return df
    b, m = [], []
    for _, row in df.iterrows():  # the row's describe: b and m of KW's presets and fields, 1 elsewhere
        row_method = METHODS.get(row["method"])
        presets = _arch_presets(row["arch"], row["method"])
        about = row_method.describe(row, arch_presets=presets) if row_method else None
        b.append(about.b if about else 1.0)
        m.append(about.m if about else 1.0)
    df["b"] = b
    df["m"] = m
    sharing = df["sharing"].astype(object).fillna("default") if "sharing" in df else None
    df["sharing_range"] = sharing.where(df["method"] != "static", "-") if sharing is not None else "-"
    df["accuracy"] = df["best_acc"]
    return df


def short_number(value: float) -> str:
    """69000 -> '69k', 10500000 -> '10.5M' (tick labels and budgets)."""
    if value is None or pd.isna(value):
        return "?"
    value = float(value)
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= div:
            return f"{value / div:.3g}{unit}"
    return f"{value:.3g}"


def chance_level(df: pd.DataFrame) -> float:
    k = pd.to_numeric(df["num_classes"], errors="coerce").dropna() if "num_classes" in df else pd.Series([])
    return 1.0 / float(k.iloc[0]) if len(k) else 0.1


def summary_table(df: pd.DataFrame, metric: str = "final_acc") -> pd.DataFrame:
    """The per-configuration summary (:func:`kwlab.experiments.stats.summarize`) of a results table."""

    return summarize(df, metrics=[m for m in (metric, "best_acc", "final_acc", "train_time") if m in df])


def load_verdicts(sweep_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``verdicts`` block a sweep declared (:func:`kwlab.experiments.spec.parse_verdicts`): from the
    sweep directory's ``sweep.json``, else its ``sweep.yaml`` (a reference result); ``{}`` when none."""
    import json  # noqa: PLC0415 - only here

    import yaml  # noqa: PLC0415 - only here

    from kwlab.experiments.spec import parse_verdicts  # noqa: PLC0415 - spec imports executors

    sweep_dir = Path(sweep_dir)
    if (sweep_dir / "sweep.json").exists():
        spec = json.loads((sweep_dir / "sweep.json").read_text()).get("spec", {})
        return parse_verdicts(spec.get("verdicts") or None, source=str(sweep_dir / "sweep.json"))
    if (sweep_dir / "sweep.yaml").exists():
        spec = yaml.safe_load((sweep_dir / "sweep.yaml").read_text()) or {}
        return parse_verdicts(spec.get("verdicts"), source=str(sweep_dir / "sweep.yaml"))
    return {}


def _recipe_key(summary: pd.DataFrame) -> pd.Series:
    """Per configuration, its training recipe: the config columns that do not decide the model (lr, epochs,
    data, ...), as text. A dynamic net is compared with static nets trained by the same recipe."""
    from kwlab.experiments.config import RunConfig  # noqa: PLC0415 - beside its sibling imports at the top

    model = set(RunConfig.model_fields())
    cols = [c for c in config_columns(summary) if c not in model]
    if not cols:
        return pd.Series([""] * len(summary), index=summary.index)
    return (
        summary[cols]
        .map(lambda v: "-" if v is None or (isinstance(v, float) and v != v) else str(v))
        .agg("|".join, axis=1)
    )


def default_pairs(summary: pd.DataFrame) -> list[tuple[int, int, str]]:
    """The comparisons a finding makes when the sweep declares none, as (row of a, row of b, why) over the
    rows of ``summary``: every configuration against the first static net of its training recipe (the
    first static one when its recipe has none), and every dynamic one against the static net of the
    closest parameter count and the one of the closest MACs (among the static nets of its recipe)."""
    static = summary[summary["method"] == "static"]
    if not len(static):
        return []
    recipe = _recipe_key(summary)
    pairs: dict[tuple[int, int], list[str]] = {}
    for i in summary.index:
        same = static[recipe[static.index] == recipe[i]]
        ref = (same if len(same) else static).index[0]
        if i != ref:
            pairs.setdefault((i, ref), [])
    for i, row in summary[summary["method"] != "static"].iterrows():
        same = static[recipe[static.index] == recipe[i]]
        pool = same if len(same) else static
        for col, why in (("params", "closest parameter count"), ("macs", "closest MACs")):
            if col not in pool or pd.isna(row.get(col)) or pool[col].isna().all():
                continue
            closest = (pool[col] - row[col]).abs().idxmin()
            pairs.setdefault((i, closest), []).append(why)
    return [(a, b, " and ".join(why)) for (a, b), why in pairs.items()]


def _declared_pairs(df: pd.DataFrame, summary: pd.DataFrame, declared: list) -> list[tuple[int, int, str]]:
    from kwlab.experiments.stats import select  # noqa: PLC0415 - beside its sibling imports at the top

    out = []
    for i, pair in enumerate(declared):
        rows = []
        for j, side in enumerate(pair):
            picked = select(df, side)
            ids = set(picked["run_id"])
            hits = [k for k, r in summary.iterrows() if ids and ids <= set(str(r["run_ids"]).split())]
            if len(hits) != 1:
                raise ValueError(
                    f"verdicts.comparisons[{i}][{j}] = {side} picks {len(set(ids))} runs that are not one "
                    "configuration of the results"
                )
            rows.append(hits[0])
        out.append((rows[0], rows[1], "declared in the sweep file"))
    return out


def _budget_note(summary: pd.DataFrame, a: int, b: int, why: str) -> str:
    ra, rb = summary.loc[a], summary.loc[b]
    text = (
        f"{short_number(ra.get('params'))} vs {short_number(rb.get('params'))} parameters, "
        f"{short_number(ra.get('macs'))} vs {short_number(rb.get('macs'))} MACs"
    )
    return f" [{text}{'; ' + why if why else ''}]"


def findings(
    df: pd.DataFrame, metric: str | None = None, verdicts: dict[str, Any] | None = None
) -> list[str]:
    """The finding of a results table, generated from its numbers (one sentence per line).

    Lists every configuration's ``metric`` (mean ± 95% t-interval, n seeds) with its parameters and MACs,
    flags configurations that are not above chance, and compares configurations with the three verdicts
    of :func:`kwlab.experiments.verdicts.compare` (differs after Holm over this finding's comparisons,
    equivalent within the margin, not resolved with the detectable difference). The comparisons are the
    sweep's declared ones (``verdicts``, see :func:`kwlab.experiments.spec.parse_verdicts`), else
    :func:`default_pairs` (matched parameters and matched MACs where the table has them). Configurations
    are told apart by their config columns, never by their labels.
    """

    if df.empty:
        return ["No finished runs."]
    verdicts = dict(verdicts or {})
    metric = metric or verdicts.get("metric", "final_acc")
    margin = float(verdicts.get("margin", DEFAULT_MARGIN))
    alpha = float(verdicts.get("alpha", ALPHA))
    df, left = split_nonfinite(df)  # runs whose numbers are not finite: left out, and counted
    left_line = [f"**{left_out_text(left)}** (see each run's results.json notes)"] if len(left) else []
    if df.empty:
        return ["No finished runs with finite numbers.", *left_line]
    summary = summary_table(df, metric).reset_index(drop=True)
    chance = chance_level(df)
    lines = []
    data = ", ".join(sorted({str(v) for v in df["data"].dropna()})) if "data" in df else "?"
    notices = {str(v) for v in df.get("data_notice", pd.Series([], dtype=str)).dropna() if str(v)}
    scale = f"data {data}"
    if "train_samples" in df and df["train_samples"].notna().any():
        scale += f", {int(df['train_samples'].max()):,d} training images"
    if "epochs" in df:
        scale += f", {int(df['epochs'].max())} epochs"
    scale += f", {int(summary['n_seeds'].min())} seeds per configuration"
    lines.append(f"Scale: {scale}; {metric} as mean ± half-width of the 95% t-interval over seeds.")
    lines += [f"**{n}**" for n in notices]
    lines += left_line
    for _, row in summary.iterrows():
        mean, ci = row[f"{metric}_mean"], row[f"{metric}_ci95"]
        att = row.get("params_attention")
        att_text = f" ({short_number(att)} in attention)" if att and not pd.isna(att) and att > 0 else ""
        ci_text = f"± {ci:.3f}" if not pd.isna(ci) else "(one seed: no interval)"
        line = (
            f"- {row['label']}: {metric} {mean:.3f} {ci_text} (n = {row['n_seeds']}) at "
            f"{short_number(row.get('params'))} parameters{att_text}, {short_number(row.get('macs'))} MACs"
        )
        low = mean - (0 if pd.isna(ci) else ci)
        if low <= chance + 0.02:
            line += f" -- NOT clearly above chance ({chance:.2f}): nothing it shows should be read as learned"
        lines.append(line)
    declared = verdicts.get("comparisons")
    pairs = _declared_pairs(df, summary, declared) if declared else default_pairs(summary)
    if not pairs:
        return lines
    selectors = [
        tuple({"run_id": str(summary.loc[k, "run_ids"]).split()} for k in (a, b)) for a, b, _ in pairs
    ]
    names = [(summary.loc[a, "label"], summary.loc[b, "label"]) for a, b, _ in pairs]
    comparisons = compare_family(df, selectors, metric, margin=margin, alpha=alpha, names=names)
    notes = [_budget_note(summary, a, b, why) for a, b, why in pairs]
    source = "declared in the sweep file" if verdicts else "kwlab's default: the sweep file declares none"
    which = "declared in the sweep file" if declared else "chosen by kwlab: the sweep file declares none"
    lines.append(
        f"Comparisons ({len(comparisons)}, {which}; margin ±{margin:g} {metric}, {source}): paired by "
        f"seed (Welch's t where two arms share no seed); 'differs' needs a Holm-adjusted p < {alpha:g} over "
        f"these {len(comparisons)} comparisons, 'equivalent' needs both one-sided TOST tests to reject at "
        f"{alpha:g}; the detectable difference is the true difference a two-sided t test at {alpha:g} "
        "(before the adjustment) finds with power 0.8 at the observed spread and number of seeds."
    )
    lines += verdict_lines(comparisons, notes, alpha, margin)
    return lines


#: Probe statistics drawn against each knob (final probe of each run, mean over layers); each is named by
#: its statistic's label (:func:`kwlab.instruments.statistics.statistic_label`).
KNOB_STATISTICS = ("probe_diversity", "probe_effective_cells", "probe_neg_frac", "probe_sample_variation")


def knob_table(df: pd.DataFrame) -> list[str]:
    """A markdown table, one row per configuration: the knobs, parameters (attention), MACs, final accuracy
    and the attention statistics (mean ± 95% t-interval over seeds), generated from ``df``."""

    metrics = ["final_acc", *[c for c in KNOB_STATISTICS if c in df]]
    df, _ = split_nonfinite(df)  # findings() counts the runs left out
    summary = summarize(df, metrics=metrics)
    heads = ["configuration", "b", "m", "sharing", "params (attention)", "MACs", "final acc"]
    heads += [statistic_label(c) for c in KNOB_STATISTICS if f"{c}_mean" in summary]
    lines = [
        "Knobs, budgets and attention statistics (mean ± 95% t-interval over seeds; statistics from the "
        "final probe on test images, mean over layers):",
        "",
        "| " + " | ".join(heads) + " |",
        "|" + "---|" * len(heads),
    ]
    derived = derive_columns(df.copy()).set_index("run_id")
    for _, row in summary.iterrows():
        first = derived.loc[str(row["run_ids"]).split()[0]]
        cells = [
            str(row["label"]),
            f"{first['b']:g}" if first["method"] != "static" else "-",
            f"{first['m']:g}" if first["method"] != "static" else "-",
            str(first["sharing_range"]),
            f"{short_number(row.get('params'))} ({short_number(row.get('params_attention') or 0)})",
            short_number(row.get("macs")),
            _fmt_ci(row, "final_acc"),
        ]
        cells += [_fmt_ci(row, c) for c in KNOB_STATISTICS if f"{c}_mean" in summary]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _fmt_ci(row: pd.Series, metric: str) -> str:
    mean, half = row.get(f"{metric}_mean"), row.get(f"{metric}_ci95")
    if mean is None or pd.isna(mean):
        return "-"
    return f"{mean:.3f}" + ("" if half is None or pd.isna(half) else f" ± {half:.3f}")


def finding_text(sweep_dir: str | os.PathLike, metric: str | None = None) -> str:
    """:func:`findings` of a sweep directory as text (what ``kwlab sweep`` prints at the end), with the
    handover's sentences (:func:`kwlab.experiments.handover.handover_findings`) when its runs measured it.
    The comparisons and margin are those the sweep declared (:func:`load_verdicts`)."""
    df = load_results(sweep_dir)
    verdicts = load_verdicts(sweep_dir)
    lines = findings(df, metric, verdicts)
    if not df.empty and is_handover_study(df):
        lines += ["", *handover_findings(df, epoch_table(sweep_dir, df), verdicts)]
    return "\n".join(lines)
