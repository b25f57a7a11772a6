"""Sweep reports: PNG figures plus one HTML page, drawn from a sweep directory.

``make_report("runs/demo")`` reads ``results.csv`` and the runs' probe tables and writes into
``runs/demo/report/``:

* ``accuracy_vs_params.png`` -- best test accuracy against parameters, coloured by method, labelled by b;
* ``accuracy_vs_budget.png`` / ``diversity_vs_budget.png`` -- against the budget b, one line per sharing
  range; ``accuracy_vs_m.png`` when the cell count m (= 1 / (cell_in * cell_out)) varies;
  ``accuracy_vs_sharing.png`` -- against the sharing range, one line per b;
* ``training_curves.png`` -- test accuracy per epoch of every run;
* ``negative_fraction.png``, ``cell_usage.png``, ``attention_heatmap.png`` -- probe tables of the best
  dynamic run;
* ``index.html`` -- the results table and every figure.

Plot functions come from :mod:`kwlab.instruments.plot`; :func:`training_curves` is defined here.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["make_report", "load_results", "training_curves"]


def _preset_fields(arch: str, preset: Any) -> dict[str, float]:
    if not isinstance(preset, str):
        return {}
    try:
        from kwlab.models import model_entry  # noqa: PLC0415

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
    df = pd.read_csv(path)
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


def training_curves(
    histories: dict[str, pd.DataFrame], *, y: str = "test_acc", ax: Any = None, title: str | None = None
):
    """One line per run of ``y`` against epoch.

    Args:
        histories: run label -> per-epoch metrics (columns ``epoch`` and ``y``).
    """
    import matplotlib.pyplot as plt  # noqa: PLC0415

    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4))
    else:
        fig = ax.figure
    for i, (label, h) in enumerate(histories.items()):
        if y not in h:
            raise ValueError(f"history {label!r} has no column {y!r}; columns: {list(h.columns)}")
        ax.plot(h["epoch"], h[y], marker="o", markersize=3, color=f"C{i % 10}", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(y)
    ax.grid(alpha=0.3)
    if len(histories) <= 12:
        ax.legend(fontsize=6)
    ax.set_title(title or f"{y} per epoch")
    return fig


def _short_label(row: pd.Series) -> str:
    if row["method"] == "static":
        return "static"
    parts = [str(row["method"]), f"b={row['b']:g}"]
    if row.get("sharing_range") not in (None, "-", "default"):
        parts.append(str(row["sharing_range"]))
    return " ".join(parts)


def make_report(sweep_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Draw every figure of the sweep in ``sweep_dir`` into ``out`` (default ``sweep_dir/report``).

    Returns:
        Path of ``index.html``.
    """
    # No backend switch: figures are saved and closed, which works with any backend (matplotlib picks a
    # non-interactive one on a headless machine), and a notebook keeps its inline backend.
    import matplotlib.pyplot as plt  # noqa: PLC0415

    from kwlab.instruments import plot  # noqa: PLC0415
    from kwlab.instruments.probe import load as load_probe  # noqa: PLC0415

    sweep_dir = Path(sweep_dir)
    out = Path(out) if out is not None else sweep_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    df = load_results(sweep_dir)
    figures: list[tuple[str, str]] = []
    notes: list[str] = []

    def save(fig, name: str, caption: str) -> None:
        fig.savefig(out / name, dpi=110, bbox_inches="tight")
        plt.close(fig)
        figures.append((name, caption))

    if df.empty:
        notes.append("No finished runs yet.")
    else:
        df["label"] = [_short_label(r) for _, r in df.iterrows()]
        save(
            plot.accuracy_vs_params(df, y="accuracy", hue="method", label="b"),
            "accuracy_vs_params.png",
            "Best test accuracy against parameter count, coloured by method, labelled by budget b.",
        )
        dyn = df[df["method"] != "static"]
        if dyn["b"].nunique() > 1:
            save(
                plot.metric_vs_knob(dyn, "b", "accuracy", hue="sharing_range", logx=True),
                "accuracy_vs_budget.png",
                "Accuracy against budget b, one line per sharing range.",
            )
            if "probe_diversity" in dyn and dyn["probe_diversity"].notna().any():
                save(
                    plot.metric_vs_knob(dyn, "b", "probe_diversity", hue="sharing_range", logx=True),
                    "diversity_vs_budget.png",
                    "Attention diversity (mean pairwise cosine distance of samples' attention, mean over layers).",
                )
        if dyn["m"].nunique() > 1:
            save(
                plot.metric_vs_knob(dyn, "m", "accuracy", hue="sharing_range"),
                "accuracy_vs_m.png",
                "Accuracy against m, the number of cells per kernel (1 / (cell_in * cell_out)).",
            )
        if dyn["sharing_range"].nunique() > 1:
            save(
                plot.metric_vs_knob(
                    dyn.assign(b=dyn["b"].map(lambda v: f"b={v:g}")), "sharing_range", "accuracy", hue="b"
                ),
                "accuracy_vs_sharing.png",
                "Accuracy against the warehouse sharing range, one line per budget.",
            )
        histories = {}
        for _, row in df.iterrows():
            mfile = sweep_dir / "runs" / row["run_id"] / "metrics.jsonl"
            if mfile.exists():
                histories[row["label"]] = pd.DataFrame(
                    [json.loads(line) for line in mfile.read_text().splitlines() if line.strip()]
                )
        if histories:
            save(training_curves(histories), "training_curves.png", "Test accuracy per epoch of every run.")
        probed = [
            r
            for _, r in dyn.sort_values("accuracy", ascending=False).iterrows()
            if (sweep_dir / "runs" / r["run_id"] / "probe" / "probe.json").exists()
        ]
        if probed:
            best = probed[0]
            result = load_probe(sweep_dir / "runs" / best["run_id"] / "probe")
            tag = f"best dynamic run ({best['label']}, accuracy {best['accuracy']:.3f})"
            save(
                plot.negative_fraction(result.summary()),
                "negative_fraction.png",
                f"Share of negative attention coefficients per layer, {tag}.",
            )
            save(
                plot.cell_usage(result.cell_usage()),
                "cell_usage.png",
                f"Layer x cell usage (mean |alpha|) of each warehouse, {tag}.",
            )
            samples = result.tables().get("samples")
            if samples is not None and len(samples):
                layers = list(dict.fromkeys(samples["layer"]))
                layer = layers[len(layers) // 2]
                save(
                    plot.attention_heatmap(samples, layer, by="mixture"),
                    "attention_heatmap.png",
                    f"Signed attention of layer {layer} (mixtures x cells, mean over kept samples), {tag}.",
                )
        elif len(dyn):
            notes.append("No probe tables found (runs without dynamic layers or probe_samples=0).")
    page = out / "index.html"
    page.write_text(_html(sweep_dir, df, figures, notes))
    return page


def _html(sweep_dir: Path, df: pd.DataFrame, figures: list[tuple[str, str]], notes: list[str]) -> str:
    meta_file = sweep_dir / "sweep.json"
    name = (
        json.loads(meta_file.read_text()).get("name", sweep_dir.name)
        if meta_file.exists()
        else sweep_dir.name
    )
    columns = [
        c
        for c in (
            "label",
            "arch",
            "data",
            "epochs",
            "seed",
            "params",
            "macs",
            "best_acc",
            "final_acc",
            "throughput",
            "probe_neg_frac",
            "probe_effective_cells",
            "probe_diversity",
        )
        if c in df.columns
    ]
    table = df[columns].to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0) if len(df) else ""
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>kwlab sweep {html.escape(name)}</title>",
        "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse;"
        "font-size:12px}td,th{padding:2px 8px;border-bottom:1px solid #ddd}img{max-width:100%}"
        "figure{margin:2em 0}</style></head><body>",
        f"<h1>Sweep {html.escape(name)}</h1><p>{len(df)} finished runs in {html.escape(str(sweep_dir))}</p>",
    ]
    parts += [f"<p><em>{html.escape(n)}</em></p>" for n in notes]
    parts.append(table)
    for file, caption in figures:
        parts.append(
            f"<figure><img src='{file}' alt='{html.escape(caption)}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)
