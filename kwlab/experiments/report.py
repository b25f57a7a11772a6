"""Sweep reports: PNG figures plus one HTML page, drawn from a sweep directory.

``make_report("runs/demo")`` reads ``results.csv`` and the runs' probe tables and writes into
``runs/demo/report/``:

* ``accuracy_by_config.png`` -- final test accuracy of every configuration: mean over seeds with its 95%
  t-interval, every seed as a dot, parameters and MACs in the label, and the chance level 1/K;
* ``accuracy_vs_params.png`` -- the same means and intervals against the parameter count;
* ``finding.md`` -- the finding, generated from the numbers (:func:`kwlab.experiments.findings.findings`):
  each configuration's accuracy with its interval and budget, the three verdicts of its comparisons
  (differs after Holm, equivalent within the declared margin, not resolved with the detectable
  difference; :func:`kwlab.experiments.verdicts.compare_all`), and whether the data were real CIFAR-10;
* ``accuracy_vs_budget.png`` / ``diversity_vs_budget.png`` -- against the budget b, one line per sharing
  range; ``accuracy_vs_m.png`` when the cell count m (= 1 / (cell_in * cell_out)) varies;
  ``accuracy_vs_sharing.png`` -- against the sharing range, one line per b;
* ``training_curves.png`` -- test accuracy per epoch, one line per configuration (mean and 95% t-interval
  over its seeds);
* ``negative_fraction.png``, ``cell_usage.png``, ``attention_heatmap.png`` -- probe tables of the best
  dynamic run;
* ``index.html`` -- the results table and every figure.

Every figure is drawn by :mod:`kwlab.instruments.plot`; the text comes from :mod:`kwlab.experiments.findings`
(import its names from there). :func:`publish` turns a sweep into a reference result.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from kwlab.experiments import report_figures as _figures
from kwlab.experiments.findings import (
    KNOB_STATISTICS as _KNOB_STATISTICS,
)
from kwlab.experiments.findings import (
    chance_level,
    load_verdicts,
)
from kwlab.experiments.findings import (
    findings as _findings,
)
from kwlab.experiments.findings import (
    knob_table as _knob_table,
)
from kwlab.experiments.findings import (
    load_results as _load_results,
)
from kwlab.experiments.findings import (
    summary_table as _summary_table,
)
from kwlab.experiments.handover import epoch_table, handover_figures, handover_findings, is_handover_study
from kwlab.experiments.results import collect_results
from kwlab.experiments.stats import config_labels, summarize
from kwlab.instruments.left_out import left_out_text, split_nonfinite
from kwlab.instruments.probe_store import load as load_probe
from kwlab.instruments.statistics import headline_metrics
from kwlab.utils import moved_names, write_table

__all__ = [
    "make_report",
    "publish",
    "refresh",
    "RUN_FIGURES",
]

#: Public names that lived here once -> their one home; importing one from here raises an error naming it.
__getattr__ = moved_names(
    __name__,
    {
        "load_results": "kwlab.experiments.findings",
        "findings": "kwlab.experiments.findings",
        "finding_text": "kwlab.experiments.findings",
        "summary_table": "kwlab.experiments.findings",
        "KNOB_STATISTICS": "kwlab.experiments.findings",
        "derive_columns": "kwlab.experiments.findings",
        "knob_table": "kwlab.experiments.findings",
    },
)


_KNOB_NAMES = {"b": "the budget b", "m": "m = 1 / (cell_in * cell_out)", "sharing_range": "the sharing range"}


def make_report(sweep_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Draw every figure of the sweep in ``sweep_dir`` into ``out`` (default ``sweep_dir/report``).

    Returns:
        Path of ``index.html``.
    """
    # No backend switch: figures are saved and closed, which works with any backend (matplotlib picks a
    # non-interactive one on a headless machine), and a notebook keeps its inline backend.
    import matplotlib.pyplot as plt  # noqa: PLC0415 - matplotlib: loaded when a figure is drawn

    from kwlab.instruments import plot  # noqa: PLC0415 - matplotlib

    sweep_dir = Path(sweep_dir)
    out = Path(out) if out is not None else sweep_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    every_run = _load_results(sweep_dir)
    df, left = split_nonfinite(every_run)  # runs with non-finite numbers: in no figure, counted in the notes
    figures: list[tuple[str, str]] = []
    notes: list[str] = []
    if len(left):
        notes.append(f"{left_out_text(left)}: in no figure or summary (see each run's results.json notes).")
    finding: list[str] = []
    summary = pd.DataFrame()

    def save(fig, name: str, caption: str) -> None:
        for ax in fig.axes:
            if name != "accuracy_vs_params.png":
                _figures.plain_ticks(ax)
            if name.startswith("accuracy_vs_") and name != "accuracy_vs_params.png" and not df.empty:
                ax.axhline(chance_level(df), color="grey", ls="--", lw=1)
                caption = caption.rstrip(".") + "; dashed: chance."
        fig.savefig(out / name, dpi=110, bbox_inches="tight")
        plt.close(fig)
        figures.append((name, caption))

    if df.empty:
        notes.append("No finished runs with finite numbers yet." if len(left) else "No finished runs yet.")
    else:
        summary = _summary_table(df)
        # the table on disk also lists the runs left out (n_left_out, left_out), the figures only the rest
        write_table(_summary_table(every_run) if len(left) else summary, out / "summary.csv")
        save(
            _figures.accuracy_by_config(df, summary, "final_acc"),
            "accuracy_by_config.png",
            "Final test accuracy per configuration: mean over seeds with its 95% t-interval (bar), every "
            "seed (dots), parameters and MACs; dashed: chance.",
        )
        save(
            _figures.accuracy_vs_params(df, summary, "final_acc"),
            "accuracy_vs_params.png",
            "Final test accuracy (mean ± 95% CI over seeds) against parameter count; dashed: chance.",
        )
        verdicts = load_verdicts(sweep_dir)
        finding = _findings(every_run, None, verdicts)  # counts the runs left out
        (out / "finding.md").write_text("\n".join(finding) + "\n")
        df["label"] = config_labels(df)  # display only: unique per configuration, never used to group
        dyn = df[df["method"] != "static"].copy()
        ci = dict(
            error="ci95", chance=chance_level(df)
        )  # knob plots: mean ± 95% CI over seeds, y from 0, chance
        if dyn["b"].nunique() > 1:
            save(
                plot.metric_vs_knob(
                    dyn.assign(**{_figures.HUE: _figures.knob_hue(dyn, "b")}),
                    "b",
                    "final_acc",
                    hue=_figures.HUE,
                    logx=True,
                    **ci,
                ),
                "accuracy_vs_budget.png",
                "Final test accuracy against budget b (mean ± 95% CI over seeds), one line per combination "
                "of the other settings that vary.",
            )
            if "probe_diversity" in dyn and dyn["probe_diversity"].notna().any():
                save(
                    plot.metric_vs_knob(
                        dyn.assign(**{_figures.HUE: _figures.knob_hue(dyn, "b")}),
                        "b",
                        "probe_diversity",
                        hue=_figures.HUE,
                        logx=True,
                        error="ci95",
                    ),
                    "diversity_vs_budget.png",
                    "Attention diversity (mean pairwise cosine distance of samples' attention, mean over "
                    "layers).",
                )
        if dyn["m"].nunique() > 1:
            save(
                plot.metric_vs_knob(
                    dyn.assign(**{_figures.HUE: _figures.knob_hue(dyn, "m")}),
                    "m",
                    "final_acc",
                    hue=_figures.HUE,
                    **ci,
                ),
                "accuracy_vs_m.png",
                "Final test accuracy against m, the number of cells per kernel (1 / (cell_in * cell_out)); "
                "mean ± 95% CI.",
            )
        if dyn["sharing_range"].nunique() > 1:
            save(
                plot.metric_vs_knob(
                    dyn.assign(**{_figures.HUE: _figures.knob_hue(dyn, "sharing_range")}),
                    "sharing_range",
                    "final_acc",
                    hue=_figures.HUE,
                    **ci,
                ),
                "accuracy_vs_sharing.png",
                "Final test accuracy against the warehouse sharing range (mean ± 95% CI over seeds), one "
                "line per combination of the other settings that vary.",
            )
        for knob, logx in (("b", True), ("m", False), ("sharing_range", False)):
            if dyn[knob].nunique() > 1 and any(c in dyn and dyn[c].notna().any() for c in _KNOB_STATISTICS):
                save(
                    _figures.statistics_vs_knob(dyn, knob, logx),
                    f"statistics_vs_{knob}.png",
                    f"Attention statistics of the trained nets against {_KNOB_NAMES[knob]} (mean over layers "
                    "of the final probe on test images; mean ± 95% CI over seeds).",
                )
        if is_handover_study(df):
            handover_figures(sweep_dir, df, save)
            finding += [""] + handover_findings(df, epoch_table(sweep_dir, df), verdicts)
            (out / "finding.md").write_text("\n".join(finding) + "\n")
        if len(dyn) and any(dyn[k].nunique() > 1 for k in ("b", "m", "sharing_range")):
            finding += ["", *_knob_table(df)]
            (out / "finding.md").write_text("\n".join(finding) + "\n")
        epochs = epoch_table(sweep_dir, df)
        if not epochs.empty and "test_acc" in epochs and epochs["test_acc"].notna().any():
            n_conf = epochs["config_id"].nunique()
            save(
                plot.over_training(
                    epochs,
                    "test_acc",
                    x="epoch",
                    hue="label",
                    chance=chance_level(df),
                    tau=False,
                    title="Test accuracy per epoch",
                    order=list(summary["label"])
                    if "label" in summary
                    else None,  # accuracy_by_config's colours
                ),
                "training_curves.png",
                f"Test accuracy per epoch, one line per configuration ({n_conf}; runs grouped by their "
                "config columns): mean over seeds with the 95% t-interval; dotted: chance.",
            )
        probed = [
            r
            for _, r in dyn.sort_values("accuracy", ascending=False).iterrows()
            if (sweep_dir / "runs" / r["run_id"] / "probe" / "probe.json").exists()
        ]
        if probed:
            try:
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
                        f"Signed attention of layer {layer} (mixtures x cells, mean over kept samples), "
                        f"{tag}.",
                    )
            except Exception as err:  # noqa: BLE001 - a probe table of another kwlab version: skip its figures
                notes.append(
                    f"Probe tables could not be read ({type(err).__name__}: {err}); no probe figures."
                )
        elif len(dyn):
            notes.append("No probe tables found (runs without dynamic layers or probe_samples=0).")
    page = out / "index.html"
    page.write_text(_html(sweep_dir, df, figures, notes, finding, summary))
    return page


#: The columns of the report page's tables, in display order (those present are shown): config fields,
#: ``label``/``n_seeds`` and result columns as :mod:`kwlab.experiments.columns` declares them (a summary
#: shows a metric ``M`` as ``M_mean`` and ``M_ci95``); ``tests/test_columns.py`` checks every name.
_RUN_TABLE = (
    "label",
    "arch",
    "data",
    "epochs",
    "seed",
    "params",
    "params_attention",
    "macs",
    "best_acc",
    "final_acc",
    "throughput",
    *headline_metrics(),
)
_SUMMARY_TABLE = (
    "label",
    "n_seeds",
    "params",
    "params_attention",
    "params_warehouse",
    "macs",
    "final_acc_mean",
    "final_acc_ci95",
    "best_acc_mean",
    "best_acc_ci95",
    "data",
    "threads",
    "git_revision",
)


def _html(
    sweep_dir: Path,
    df: pd.DataFrame,
    figures: list[tuple[str, str]],
    notes: list[str],
    finding: list[str] | None = None,
    summary: pd.DataFrame | None = None,
) -> str:
    meta_file = sweep_dir / "sweep.json"
    name = (
        json.loads(meta_file.read_text()).get("name", sweep_dir.name)
        if meta_file.exists()
        else sweep_dir.name
    )
    columns = [c for c in _RUN_TABLE if c in df.columns]
    table = df[columns].to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0) if len(df) else ""
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>kwlab sweep {html.escape(name)}</title>",
        "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse;"
        "font-size:12px}td,th{padding:2px 8px;border-bottom:1px solid #ddd}img{max-width:100%}"
        "figure{margin:2em 0}</style></head><body>",
        f"<h1>Sweep {html.escape(name)}</h1><p>{len(df)} finished runs in {html.escape(str(sweep_dir))}</p>",
    ]
    parts += [f"<p><em>{html.escape(n)}</em></p>" for n in notes]
    if finding:
        parts.append("<h2>Finding (generated from the numbers below)</h2>")
        items = []
        for line in finding:
            text = html.escape(line.lstrip("- ").replace("**", ""))
            items.append(f"<li>{text}</li>" if line.startswith("- ") else f"</ul><p>{text}</p><ul>")
        parts.append("<ul>" + "".join(items) + "</ul>")
    if summary is not None and len(summary):
        cols = [c for c in _SUMMARY_TABLE if c in summary]
        parts.append("<h2>Per configuration (mean and 95% t-interval half-width over seeds)</h2>")
        parts.append(summary[cols].to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0))
        parts.append("<h2>Per run</h2>")
    parts.append(table)
    for file, caption in figures:
        parts.append(
            f"<figure><img src='{file}' alt='{html.escape(caption)}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def publish(sweep_dir: str | os.PathLike, dest: str | os.PathLike, *, title: str | None = None) -> Path:
    """Turn a finished sweep into a reference result under ``dest`` (e.g. ``data/results/<name>/``):
    ``results.csv`` and ``summary.csv`` collected from the run directories (config, budget, git revision,
    machine, torch version and threads in every row), the report's figures under ``figures/``, and a
    ``README.md`` whose finding is generated from the numbers. The sweep file (``sweep.yaml``) is copied
    from ``sweep.json`` only when ``dest`` has none. No checkpoints or probe tables are copied.

    Returns:
        Path of the README.
    """

    import yaml  # noqa: PLC0415 - pyyaml (the lab extra): loaded when a result is published

    sweep_dir, dest = Path(sweep_dir), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    ids = None
    if (sweep_dir / "results.csv").exists():  # keep the sweep's order of runs
        ids = list(pd.read_csv(sweep_dir / "results.csv")["run_id"])
        ids += sorted(p.name for p in (sweep_dir / "runs").iterdir() if p.name not in set(ids))
    df = collect_results(sweep_dir, ids, write=False)
    if df.empty:
        raise FileNotFoundError(f"{sweep_dir} holds no finished run (runs/*/results.json)")
    write_table(df, dest / "results.csv")
    write_table(summarize(df), dest / "summary.csv")
    meta = json.loads((sweep_dir / "sweep.json").read_text()) if (sweep_dir / "sweep.json").exists() else {}
    if not (dest / "sweep.yaml").exists() and meta.get("spec"):
        spec = {k: v for k, v in meta["spec"].items() if v not in ({}, [], "", None) and k != "data_notice"}
        (dest / "sweep.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(dest / "results.csv", Path(tmp) / "results.csv")
        if (sweep_dir / "sweep.json").exists():
            shutil.copy(sweep_dir / "sweep.json", Path(tmp) / "sweep.json")
        (Path(tmp) / "runs").symlink_to((sweep_dir / "runs").resolve())  # metrics and probe tables
        make_report(tmp, dest / "figures")
    for extra in ("index.html", "summary.csv"):
        (dest / "figures" / extra).unlink(missing_ok=True)
    finding = (dest / "figures" / "finding.md").read_text()
    (dest / "figures" / "finding.md").unlink()
    figures = sorted(p.name for p in (dest / "figures").glob("*.png"))
    name = title or meta.get("name") or dest.name
    revisions = ", ".join(sorted({str(v) for v in df["git_revision"]}))
    machines = ", ".join(sorted({str(v) for v in df["machine"]}))
    threads = ", ".join(sorted({str(v) for v in df["threads"]}))
    torch_versions = ", ".join(sorted({str(v) for v in df["torch_version"]}))
    lines = [
        f"# Reference result: {name}",
        "",
        str(meta.get("spec", {}).get("description", "")),
        "",
        "Made by `kwlab sweep sweep.yaml`; this folder holds the sweep file, `results.csv` (one row per run)",
        "and `summary.csv` (one row per configuration: mean, std and 95% t-interval half-width over seeds),",
        "and the report's figures. Generated by `kwlab.experiments.report.publish` from the run directories;",
        "every number below is computed from `results.csv`.",
        "",
        f"Provenance: git {revisions}; machine {machines}; torch {torch_versions}; "
        f"{threads} thread(s) per run.",
        "",
        "## Finding",
        "",
        finding.strip(),
        "",
        "## Figures",
        "",
        *[f"![{f}](figures/{f})" for f in figures],
        "",
        "## Reproduce one run",
        "",
        "```",
        f"python -m kwlab reproduce {dest} --run <run_id from results.csv> --out runs/repro",
        "```",
        "",
    ]
    readme = dest / "README.md"
    readme.write_text("\n".join(lines))
    return readme


#: Figures :func:`refresh` cannot draw from results.csv (per-epoch metrics or probe tables of the runs).
RUN_FIGURES = ("training_curves.png", "attention_heatmap.png", "cell_usage.png", "negative_fraction.png")


def refresh(dest: str | os.PathLike) -> Path:
    """Regenerate a reference result's finding, ``summary.csv`` and the figures drawn from ``results.csv``
    alone, from its committed ``results.csv`` and ``sweep.yaml`` (its verdicts block, if any), without the
    run directories. Figures that need the runs' per-epoch metrics or probe tables (:data:`RUN_FIGURES`,
    ``handover_*.png``) are kept as they are, except ``training_curves.png`` of an earlier kwlab, which keyed
    runs by a label and merged configurations: it is removed (``publish`` from the sweep draws it again).
    The README's "Finding" and "Figures" sections are rewritten; the rest of it is kept.

    Returns:
        Path of the README.
    """
    dest = Path(dest)
    if not (dest / "results.csv").exists():
        raise FileNotFoundError(f"{dest / 'results.csv'} not found: refresh needs a published result")
    df = pd.read_csv(dest / "results.csv")
    write_table(summarize(df), dest / "summary.csv")
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(dest / "results.csv", Path(tmp) / "results.csv")
        if (dest / "sweep.yaml").exists():
            shutil.copy(dest / "sweep.yaml", Path(tmp) / "sweep.yaml")
        make_report(tmp, Path(tmp) / "report")
        finding = (Path(tmp) / "report" / "finding.md").read_text()
        (dest / "figures").mkdir(exist_ok=True)
        for png in (Path(tmp) / "report").glob("*.png"):
            shutil.copy(png, dest / "figures" / png.name)
    (dest / "figures" / "training_curves.png").unlink(missing_ok=True)
    note = (
        "Regenerated from `results.csv` by `kwlab.experiments.report.refresh` (the run directories are "
        "not committed): the figures drawn from per-epoch metrics or probe tables are those of the first "
        "publish. "
        "`training_curves.png` is left out: the earlier kwlab that drew it keyed runs by a short label and "
        "merged configurations, and the per-epoch metrics needed to draw it per configuration are not "
        "committed (`publish` from the sweep directory draws it, one line per configuration)."
    )
    figures = sorted(p.name for p in (dest / "figures").glob("*.png"))
    readme = dest / "README.md"
    text = readme.read_text()
    head, _, rest = text.partition("## Finding\n")
    _, _, tail = rest.partition("## Reproduce one run")
    body = [
        "## Finding",
        "",
        note,
        "",
        finding.strip(),
        "",
        "## Figures",
        "",
        *[f"![{f}](figures/{f})" for f in figures],
        "",
        "",
    ]
    readme.write_text(head + "\n".join(body) + ("## Reproduce one run" + tail if tail else ""))
    return readme
