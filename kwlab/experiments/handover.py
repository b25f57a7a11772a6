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

from kwlab.experiments.callbacks import load_history
from kwlab.experiments.significance import ALPHA, DEFAULT_MARGIN
from kwlab.experiments.stats import config_id, config_keys, config_labels
from kwlab.experiments.verdicts import decide, estimate, verdict_lines
from kwlab.instruments.intervals import mean_ci
from kwlab.instruments.probe import capture
from kwlab.layers.base import dynamic_layers, set_temperature

__all__ = [
    "is_handover_study",
    "epoch_table",
    "probe_history_table",
    "handover_findings",
    "handover_figures",
    "kernel_change",
]


def is_handover_study(df: pd.DataFrame) -> bool:
    """Whether a results table has runs that measured the handover (``final_acc_tau0`` of a KW run)."""
    if "final_acc_tau0" not in df or "method" not in df:
        return False
    return bool(df.loc[df["method"] == "kw", "final_acc_tau0"].notna().any())


def _read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _identity(df: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Per row: the configuration's id (:func:`kwlab.experiments.stats.config_id`) and its display label
    (unique per configuration)."""
    return config_keys(df).map(config_id), config_labels(df)


def epoch_table(sweep_dir: str | os.PathLike, df: pd.DataFrame) -> pd.DataFrame:
    """Per-epoch metrics of every run (``runs/<run_id>/metrics.jsonl``), with ``config_id`` (the identity
    of its configuration), ``label`` (for display; unique per configuration), ``run_id`` and ``seed``."""
    frames = []
    ids, labels = _identity(df)
    for idx, row in df.iterrows():
        path = Path(sweep_dir) / "runs" / str(row["run_id"]) / "metrics.jsonl"
        if path.exists():
            frames.append(
                pd.DataFrame(_read_lines(path)).assign(
                    config_id=ids[idx], label=labels[idx], run_id=row["run_id"], seed=row["seed"]
                )
            )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def probe_history_table(sweep_dir: str | os.PathLike, df: pd.DataFrame) -> pd.DataFrame:
    """The training-probe history of every run that has one, with ``config_id``, ``label``, ``run_id`` and
    ``seed`` (as :func:`epoch_table`)."""

    frames = []
    ids, labels = _identity(df)
    for idx, row in df.iterrows():
        try:
            hist = load_history(Path(sweep_dir) / "runs" / str(row["run_id"]))
        except FileNotFoundError:
            continue
        frames.append(
            hist.assign(config_id=ids[idx], label=labels[idx], run_id=row["run_id"], seed=row["seed"])
        )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _fmt(mean: float, half: float) -> str:
    return f"{mean:.3f}" + ("" if pd.isna(half) else f" ± {half:.3f}")


def _seeded(rows: pd.DataFrame, column: str) -> pd.Series:
    return pd.to_numeric(rows.set_index("seed")[column], errors="coerce")


def handover_findings(
    df: pd.DataFrame, epochs: pd.DataFrame | None = None, verdicts: dict | None = None
) -> list[str]:
    """Sentences on the handover of every KW configuration of ``df``, generated from the numbers.

    The dynamic gains (within each configuration, paired by run) and the comparisons of KW configurations
    that differ in one setting are one family: their p-values are Holm-adjusted together and each gets one
    of the three verdicts (:func:`kwlab.experiments.verdicts.decide`; margin and alpha from ``verdicts``).
    Configurations are grouped by their config columns, never by their labels.

    Args:
        df: results (one row per run) with ``final_acc``, ``final_acc_tau0``, ``min_acc_tau0``,
            ``final_acc_frozen`` and the probe's learned-attention columns.
        epochs: :func:`epoch_table` of the same runs (adds the epoch of the lowest tau = 0 accuracy).
        verdicts: the sweep's declared ``verdicts`` block (margin, alpha); defaults when None.
    """
    if "method" not in df or df[df["method"] == "kw"].empty or not is_handover_study(df):
        return []
    verdicts = verdicts or {}
    margin = float(verdicts.get("margin", DEFAULT_MARGIN))
    alpha = float(verdicts.get("alpha", ALPHA))
    ids, labels = _identity(df)
    kw = df[df["method"] == "kw"].assign(config_id=ids, label=labels)
    lines = ["The handover (KW runs; mean ± 95% t-interval over seeds):"]
    estimates: list = []
    prefixes: list[str] = []  # what each estimate is, before its verdict's words
    for cid, group in kw.groupby("config_id", sort=False):
        label = group["label"].iloc[0]
        acc = mean_ci(group["final_acc"].tolist())
        low = mean_ci(pd.to_numeric(group["min_acc_tau0"], errors="coerce").tolist())
        steps = group["anneal_steps"].iloc[0] if "anneal_steps" in group else None
        total = group["total_steps"].iloc[0] if "total_steps" in group else None
        where = ""
        if epochs is not None and not epochs.empty and "test_acc_tau0" in epochs:
            key = "config_id" if "config_id" in epochs else "label"
            e = epochs[epochs[key] == (cid if key == "config_id" else label)].groupby("epoch")[
                "test_acc_tau0"
            ]
            e = e.mean()
            if len(e):
                n_runs = group["run_id"].nunique() if "run_id" in group else len(group)
                where = f" (lowest of the mean over {n_runs} runs at epoch {int(e.idxmin())})"
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
                f"; with BatchNorm statistics measured again at tau = 0 its lowest was {_fmt(rec[0], rec[2])}"
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
        gains = []
        if recal:
            gains.append(
                (
                    "final_acc_frozen_recal",
                    "dynamic gain (final_acc - accuracy with the attention frozen to its mean, BatchNorm "
                    "statistics measured again for the frozen net)",
                    "frozen, recalibrated",
                )
            )
        if "final_acc_frozen" in group and group["final_acc_frozen"].notna().any():
            what = (
                "with the trained BatchNorm statistics (stale for the frozen net), the drop"
                if recal
                else "dynamic gain (final_acc - accuracy with the attention frozen to its mean)"
            )
            gains.append(("final_acc_frozen", what, "frozen"))
        for column, what, short in gains:
            c = estimate(
                _seeded(group, "final_acc"),
                _seeded(group, column),
                ("final_acc", short),
                "accuracy",
                alpha=alpha,
                margin=margin,
            )
            estimates.append(c)
            prefixes.append(f"{label}: {what} {c.diff:+.3f}: ")
    # the same init, anneals of different length; the same anneal, different inits
    for metric, c in _contrasts(kw, margin, alpha):
        estimates.append(c)
        prefixes.append(f"{metric}: ")
    if estimates:
        lines.append(
            "The dynamic gains and the comparisons of KW configurations that differ in one setting (paired "
            f"by seed; one family of {len(estimates)}, Holm-adjusted together; margin ±{margin:g}):"
        )
        lines += verdict_lines(decide(estimates), [""] * len(estimates), alpha, margin, prefixes)
    return lines


def _contrasts(kw: pd.DataFrame, margin: float, alpha: float) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    keys = [c for c in ("attention_init", "temperature_epochs", "temperature_steps") if c in kw]
    if not keys:
        return out
    kw = kw.assign(**{c: kw[c].map(lambda v: "-" if v is None or v != v else str(v)) for c in keys})
    for vary in keys:
        fixed = [c for c in keys if c != vary]
        for _, group in kw.groupby(fixed, sort=False, dropna=False) if fixed else [(None, kw)]:
            ids = list(dict.fromkeys(group["config_id"]))
            if len(ids) != 2 or group[vary].nunique() != 2:
                continue  # not two configurations that differ in ``vary`` (each pair is compared once)
            rows_a, rows_b = (group[group["config_id"] == i] for i in (ids[1], ids[0]))
            names = (rows_a["label"].iloc[0], rows_b["label"].iloc[0])
            for metric in ("final_acc", "min_acc_tau0", "min_acc_tau0_recal", "final_acc_frozen_recal"):
                if metric not in group or group[metric].isna().all():
                    continue
                try:
                    c = estimate(
                        _seeded(rows_a, metric),
                        _seeded(rows_b, metric),
                        names,
                        metric,
                        alpha=alpha,
                        margin=margin,
                    )
                except ValueError:
                    continue
                if c.n:
                    out.append((metric, c))
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
        if not kw_epochs.empty and "temperature" in kw_epochs and kw_epochs["temperature"].notna().any():
            save(
                plot.handover_story(kw_epochs, chance=chance),
                "handover_story.png",
                "The handover in one figure: test accuracy at the current tau (solid) and at tau = 0 "
                "(dashed, the learned attention alone) against tau, per configuration (mean and 95% "
                "t-interval over seeds); the learned attention takes over where the two curves meet before "
                "tau reaches 0; epochs after the anneal sit at tau = 0; dotted: chance.",
            )
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
