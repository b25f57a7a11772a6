"""A sweep's finding in words, generated from its results table: :func:`load_results` (results.csv with
derived columns), :func:`summary_table` (one row per configuration), :func:`findings` (each configuration's
accuracy with its interval and budget, and which paired differences are real at this scale),
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
from kwlab.experiments.stats import compare, config_label, left_out_text, split_nonfinite, summarize
from kwlab.models import model_entry

__all__ = [
    "KNOB_STATISTICS",
    "chance_level",
    "derive_columns",
    "finding_text",
    "findings",
    "knob_table",
    "load_results",
    "short_number",
    "summary_table",
]


def _preset_fields(arch: str, preset: Any) -> dict[str, float]:
    if not isinstance(preset, str):
        return {}
    try:
        return {
            k: float(v)
            for k, v in model_entry(arch).presets[preset].items()
            if k in ("budget", "cell_in", "cell_out")
        }
    except Exception:  # noqa: BLE001 - unknown arch: fall back to the preset's name
        num, _, den = preset.rstrip("x").partition("/")
        return {"budget": float(num) / float(den or 1)}


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
    for _, row in df.iterrows():
        fields = _preset_fields(row["arch"], row.get("preset")) if row["method"] == "kw" else {}
        for key in ("budget", "cell_in", "cell_out"):
            if key in row and pd.notna(row[key]):
                fields[key] = float(row[key])
        b.append(fields.get("budget", 1.0))
        m.append(1.0 / (fields.get("cell_in", 1.0) * fields.get("cell_out", 1.0)))
    df["b"] = b
    df["m"] = m
    df["sharing_range"] = (
        df["sharing"].fillna("default").where(df["method"] != "static", "-") if "sharing" in df else "-"
    )
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


def findings(df: pd.DataFrame, metric: str = "final_acc") -> list[str]:
    """The finding of a results table, generated from its numbers (one sentence per line).

    Lists every configuration's ``metric`` (mean ± 95% t-interval, n seeds) with its parameters and MACs,
    flags configurations that are not above chance, and compares by seed-paired t-intervals
    (:func:`kwlab.experiments.stats.compare`): each configuration against the first static one, and each
    dynamic one against the static net of the closest parameter count.
    """

    if df.empty:
        return ["No finished runs."]
    df, left = split_nonfinite(df)  # runs whose numbers are not finite: left out, and counted
    left_line = [f"**{left_out_text(left)}** (see each run's results.json notes)"] if len(left) else []
    if df.empty:
        return ["No finished runs with finite numbers.", *left_line]
    summary = summary_table(df, metric)
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
    labels = df.apply(config_label, axis=1)
    static = summary[summary["method"] == "static"]
    pairs: list[tuple[str, str, str]] = []
    if len(static):
        ref = static.iloc[0]["label"]
        pairs += [(r["label"], ref, "") for _, r in summary.iterrows() if r["label"] != ref]
        for _, r in summary[summary["method"] != "static"].iterrows():
            closest = static.iloc[(static["params"] - r["params"]).abs().argsort().iloc[0]]
            if closest["label"] != ref:
                pairs.append((r["label"], closest["label"], " (closest parameter count)"))
    real, unclear = [], []
    for a, b, why in pairs:
        if a not in set(labels) or b not in set(labels):
            continue
        try:
            c = compare(df, a, b, metric)
        except ValueError:
            continue
        pa = summary.set_index("label").loc[a, "params"]
        pb = summary.set_index("label").loc[b, "params"]
        text = f"{c.verdict} [{short_number(pa)} vs {short_number(pb)} parameters{why}]"
        (real if c.significant else unclear).append(text)
    if real:
        lines.append("Differences that are real at this scale (paired by seed, 95% interval excludes 0):")
        lines += [f"- {t}" for t in real]
    if unclear:
        lines.append(
            "Differences not detected at this scale (the interval contains 0; more seeds or a "
            "larger scale may or may not show one):"
        )
        lines += [f"- {t}" for t in unclear]
    return lines


#: Probe statistics drawn against each knob (final probe of each run, mean over layers).
KNOB_STATISTICS = {
    "probe_diversity": "diversity",
    "probe_effective_cells": "effective cells",
    "probe_neg_frac": "negative fraction",
    "probe_sample_variation": "sample variation",
}


def knob_table(df: pd.DataFrame) -> list[str]:
    """A markdown table, one row per configuration: the knobs, parameters (attention), MACs, final accuracy
    and the attention statistics (mean ± 95% t-interval over seeds), generated from ``df``."""

    metrics = ["final_acc", *[c for c in KNOB_STATISTICS if c in df]]
    df, _ = split_nonfinite(df)  # findings() counts the runs left out
    summary = summarize(df, metrics=metrics)
    heads = ["configuration", "b", "m", "sharing", "params (attention)", "MACs", "final acc"]
    heads += [KNOB_STATISTICS[c] for c in KNOB_STATISTICS if f"{c}_mean" in summary]
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


def finding_text(sweep_dir: str | os.PathLike, metric: str = "final_acc") -> str:
    """:func:`findings` of a sweep directory as text (what ``kwlab sweep`` prints at the end), with the
    handover's sentences (:func:`kwlab.experiments.handover.handover_findings`) when its runs measured it."""
    df = load_results(sweep_dir)
    lines = findings(df, metric)
    if not df.empty and is_handover_study(df):
        lines += ["", *handover_findings(df, epoch_table(sweep_dir, df))]
    return "\n".join(lines)
