"""KernelWarehouse's *handover*, read from a sweep: the finding and the figures of a handover study.

KW blends its learned attention with a one-hot init pattern, ``(1 - tau) * learned + tau * pattern``, and
anneals tau from 1 to 0. While tau > 0 the pattern carries the function the net computes; when tau reaches 0
only what the learned attention has taken over remains. A sweep whose runs record ``test_acc_tau0`` (the
test accuracy at tau = 0 at every epoch of the anneal, see :class:`kwlab.experiments.train.Trainer`), the
probe history (``probe_every > 0``: the learned attention's ``learned_own_share`` and
``learned_sample_variation``) and ``final_acc_frozen`` (attention frozen to its mean after training) answers:

* how far accuracy falls at tau = 0 during the anneal (``min_acc_tau0``) and how much of it comes back;
* whether a longer anneal or another attention init changes that (paired by seed);
* whether the input-dependent part of the attention helps: the *dynamic gain* ``final_acc -
  final_acc_frozen``, paired by seed within each configuration.

:func:`handover_findings` writes this as sentences generated from the numbers; :func:`handover_figures`
draws it. :func:`kwlab.experiments.report.make_report` adds both to a report when the results hold
``final_acc_tau0``. Explained in notebooks/05_attention_analysis.ipynb.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import torch

from kwlab.experiments.accuracies import frozen_accuracies
from kwlab.experiments.callbacks import load_history
from kwlab.experiments.config import RunConfig
from kwlab.experiments.stats import compare, config_label, mean_ci
from kwlab.experiments.train import Trainer
from kwlab.instruments.probe import capture
from kwlab.layers.base import dynamic_layers, set_temperature
from kwlab.utils import atomic_write_text, progress_bar

__all__ = [
    "is_handover_study",
    "epoch_table",
    "probe_history_table",
    "handover_findings",
    "handover_figures",
    "backfill_frozen_recal",
    "kernel_change",
]


def is_handover_study(df: pd.DataFrame) -> bool:
    """Whether a results table has runs that measured the handover (``final_acc_tau0`` of a KW run)."""
    if "final_acc_tau0" not in df or "method" not in df:
        return False
    return bool(df.loc[df["method"] == "kw", "final_acc_tau0"].notna().any())


def _read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def epoch_table(sweep_dir: str | os.PathLike, df: pd.DataFrame) -> pd.DataFrame:
    """Per-epoch metrics of every run (``runs/<run_id>/metrics.jsonl``), with ``label`` and ``seed``."""
    frames = []
    for _, row in df.iterrows():
        path = Path(sweep_dir) / "runs" / str(row["run_id"]) / "metrics.jsonl"
        if path.exists():
            frames.append(pd.DataFrame(_read_lines(path)).assign(label=config_label(row), seed=row["seed"]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def probe_history_table(sweep_dir: str | os.PathLike, df: pd.DataFrame) -> pd.DataFrame:
    """The training-probe history of every run that has one, with ``label`` and ``seed``."""

    frames = []
    for _, row in df.iterrows():
        try:
            hist = load_history(Path(sweep_dir) / "runs" / str(row["run_id"]))
        except FileNotFoundError:
            continue
        frames.append(hist.assign(label=config_label(row), seed=row["seed"]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _fmt(mean: float, half: float) -> str:
    return f"{mean:.3f}" + ("" if pd.isna(half) else f" ± {half:.3f}")


def _paired(df: pd.DataFrame, label: str, a: str, b: str) -> tuple[float, float, int]:
    """Mean and 95% t half-width of ``a - b`` over the seeds of one configuration."""
    rows = df[df.apply(config_label, axis=1) == label]
    diff = pd.to_numeric(rows[a], errors="coerce") - pd.to_numeric(rows[b], errors="coerce")
    mean, _, half = mean_ci(diff.dropna().tolist())
    return mean, half, int(diff.notna().sum())


def _interval_text(mean: float, half: float, n: int, what: str) -> str:
    if n < 2 or pd.isna(half):
        return f"{what} {mean:+.3f} (n = {n}: no interval)"
    if mean - half <= 0 <= mean + half:
        return f"{what} {mean:+.3f} ± {half:.3f}: no difference detected at this scale (n = {n})"
    return f"{what} {mean:+.3f} ± {half:.3f} (n = {n}, 95% interval excludes 0)"


def handover_findings(df: pd.DataFrame, epochs: pd.DataFrame | None = None) -> list[str]:
    """Sentences on the handover of every KW configuration of ``df``, generated from the numbers.

    Args:
        df: results (one row per run) with ``final_acc``, ``final_acc_tau0``, ``min_acc_tau0``,
            ``final_acc_frozen`` and the probe's learned-attention columns.
        epochs: :func:`epoch_table` of the same runs (adds the epoch of the lowest tau = 0 accuracy).
    """
    kw = df[df["method"] == "kw"].copy()
    if kw.empty or not is_handover_study(df):
        return []
    kw["label"] = kw.apply(config_label, axis=1)
    lines = ["The handover (KW runs; mean ± 95% t-interval over seeds):"]
    for label, group in kw.groupby("label", sort=False):
        acc = mean_ci(group["final_acc"].tolist())
        low = mean_ci(pd.to_numeric(group["min_acc_tau0"], errors="coerce").tolist())
        steps = group["anneal_steps"].iloc[0] if "anneal_steps" in group else None
        total = group["total_steps"].iloc[0] if "total_steps" in group else None
        where = ""
        if epochs is not None and not epochs.empty and "test_acc_tau0" in epochs:
            e = epochs[epochs["label"] == label].groupby("epoch")["test_acc_tau0"].mean()
            if len(e):
                where = f" (lowest at epoch {int(e.idxmin())})"
        line = (
            f"- {label}: anneal {int(steps):,d} of {int(total):,d} optimizer steps; test accuracy at tau = 0 "
            f"fell to {_fmt(low[0], low[2])}{where} and the run ended at {_fmt(acc[0], acc[2])}"
            if steps is not None and not pd.isna(steps)
            else f"- {label}: final accuracy {_fmt(acc[0], acc[2])}"
        )
        recal_low = pd.to_numeric(group.get("min_acc_tau0_recal", pd.Series(dtype=float)), errors="coerce")
        if recal_low.notna().any():
            rec = mean_ci(recal_low.tolist())
            line += (
                f"; with BatchNorm statistics measured again at tau = 0 its lowest was "
                f"{_fmt(rec[0], rec[2])}"
            )
        cols = {
            "probe_learned_own_share": "the learned attention's weight on the pattern's cell",
            "probe_sample_variation": "sample variation of the attention",
        }
        extras = []
        for col, what in cols.items():
            if col in group and pd.to_numeric(group[col], errors="coerce").notna().any():
                m = mean_ci(pd.to_numeric(group[col], errors="coerce").tolist())
                extras.append(f"{what} {_fmt(m[0], m[2])}")
        if extras:
            line += "; after training: " + ", ".join(extras)
        lines.append(line + ".")
        recal = "final_acc_frozen_recal" in group and group["final_acc_frozen_recal"].notna().any()
        if recal:
            mean, half, n = _paired(df, label, "final_acc", "final_acc_frozen_recal")
            lines.append(
                "  " + _interval_text(mean, half, n, "dynamic gain (final_acc - accuracy with the attention "
                "frozen to its mean, BatchNorm statistics measured again for the frozen net):")
            )
        if "final_acc_frozen" in group and group["final_acc_frozen"].notna().any():
            mean, half, n = _paired(df, label, "final_acc", "final_acc_frozen")
            what = (
                "with the trained BatchNorm statistics (stale for the frozen net), the drop is"
                if recal
                else "dynamic gain (final_acc - accuracy with the attention frozen to its mean):"
            )
            lines.append("  " + _interval_text(mean, half, n, what))
    # the same init, anneals of different length; the same anneal, different inits
    lines += _contrasts(kw, df)
    return lines


def _contrasts(kw: pd.DataFrame, df: pd.DataFrame) -> list[str]:
    out = []
    keys = [c for c in ("attention_init", "temperature_epochs", "temperature_steps") if c in kw]
    if not keys:
        return out
    kw = kw.assign(**{c: kw[c].map(lambda v: "-" if v is None or v != v else str(v)) for c in keys})
    for vary in keys:
        fixed = [c for c in keys if c != vary]
        for _, group in kw.groupby(fixed, sort=False, dropna=False) if fixed else [(None, kw)]:
            labels = list(dict.fromkeys(group["label"]))
            if len(labels) != 2:
                continue
            a, b = labels[1], labels[0]
            for metric in ("final_acc", "min_acc_tau0", "min_acc_tau0_recal", "final_acc_frozen_recal"):
                try:
                    c = compare(df, a, b, metric)
                except ValueError:
                    continue
                if c.n:
                    out.append(f"- {metric}: {c.verdict}")
    if out:
        out.insert(0, "Paired comparisons (by seed) of KW configurations that differ in one setting:")
    return out


def handover_figures(sweep_dir: str | os.PathLike, df: pd.DataFrame, save) -> None:
    """Draw the handover figures of a sweep and hand each to ``save(fig, name, caption)``."""
    from kwlab.instruments import plot  # noqa: PLC0415 - matplotlib

    chance = 1.0 / float(df["num_classes"].iloc[0]) if "num_classes" in df else 0.1
    epochs = epoch_table(sweep_dir, df)
    if not epochs.empty:
        save(
            plot.over_training(epochs, "test_acc", x="epoch", chance=chance, tau=False),
            "handover_test_acc.png",
            "Test accuracy per epoch, every configuration (mean and 95% t-interval over seeds); dotted: "
            "chance.",
        )
        kw_epochs = epochs[epochs["test_acc_tau0"].notna()] if "test_acc_tau0" in epochs else epochs.iloc[:0]
        if not kw_epochs.empty:
            save(
                plot.over_training(kw_epochs, "test_acc_tau0", x="epoch", chance=chance),
                "handover_test_acc_tau0.png",
                "Test accuracy at tau = 0 per epoch (what the net computes without the init pattern), KW "
                "runs; dashed: the anneal position tau; dotted: chance.",
            )
    history = probe_history_table(sweep_dir, df)
    if not history.empty and "learned_own_share" in history and history["learned_own_share"].notna().any():
        save(
            plot.over_training(history, "learned_own_share"),
            "handover_learned_own_share.png",
            "The learned attention's weight on the cell the init pattern points at (1: it has taken the "
            "pattern's function over), mean over layers, during training; dashed: tau.",
        )
        for column, caption in (
            ("learned_sample_variation", "How much the learned attention differs between samples"),
            ("sample_variation", "How much the attention the layers use (the blend) varies between samples"),
        ):
            if column in history and history[column].notna().any():
                save(
                    plot.over_training(history, column),
                    f"handover_{column}.png",
                    f"{caption} (1 - mean cosine to the batch mean; 0 = static), mean over layers; "
                    "dashed: tau.",
                )


def backfill_frozen_recal(sweep_dir: str | os.PathLike, *, progress: bool = True) -> list[str]:
    """Add ``final_acc_frozen_recal`` (see :func:`kwlab.experiments.accuracies.frozen_accuracies`) to the
    ``results.json`` of finished dynamic runs made before kwlab measured it, from each run's final
    ``checkpoint.pt`` (the same test images, probe batches and recalibration as a new run; the run is marked
    ``frozen_recal_backfilled: true``). Returns the run ids it updated; runs without a checkpoint are skipped.
    """

    done = []
    runs = sorted(p for p in (Path(sweep_dir) / "runs").iterdir() if (p / "results.json").exists())
    for run in progress_bar(runs, desc="frozen, recalibrated", disable=not progress):
        results = json.loads((run / "results.json").read_text())
        if "final_acc_frozen_recal" in results or "final_acc_frozen" not in results:
            continue
        if not (run / "checkpoint.pt").exists():
            continue
        config = RunConfig.from_dict(json.loads((run / "config.json").read_text())["config"])
        trainer = Trainer(config, None, progress=False)
        trainer.load_checkpoint(run / "checkpoint.pt")
        batches = max(1, -(-config.probe_samples // trainer.test_loader.batch_size))
        measured = frozen_accuracies(trainer, batches)
        if abs(measured["final_acc_frozen"] - results["final_acc_frozen"]) > 1e-9:
            raise RuntimeError(f"{run}: the checkpoint does not reproduce the recorded final_acc_frozen")
        results["final_acc_frozen_recal"] = measured["final_acc_frozen_recal"]
        results["frozen_recal_backfilled"] = True
        atomic_write_text(run / "results.json", json.dumps(results, indent=2) + "\n")
        done.append(run.name)
    return done


def kernel_change(model, x, tau_from: float = 1.0, tau_to: float = 0.0) -> float:
    """How far each dynamic layer's per-sample kernels move between two anneal positions, for input ``x``:
    ``||W(tau_to) - W(tau_from)|| / ||W(tau_from)||`` (norms per sample, then the mean over samples), averaged
    over the layers. Each layer sees the input it gets at ``tau_from``; the model's temperature is left at
    ``tau_to``. At init under ``attention_init="pattern"`` it is small, under the official init about 1."""

    set_temperature(model, tau_from)
    inputs = capture(model, x, "inputs")
    changes = []
    with torch.no_grad():
        for name, layer in dynamic_layers(model):
            set_temperature(layer, tau_from)
            before = layer.kernel(inputs[name]).flatten(1)
            set_temperature(layer, tau_to)
            after = layer.kernel(inputs[name]).flatten(1)
            changes.append(float((after - before).norm(dim=1).mean() / before.norm(dim=1).mean()))
    set_temperature(model, tau_to)
    return sum(changes) / len(changes)
