"""Re-run one recorded run from its stored config and set its numbers beside the recorded ones.

``python -m kwlab reproduce FOLDER --run RUN_ID --out DIR`` reads ``FOLDER/results.csv`` (a sweep
directory, or a reference result under ``data/results/<name>/``), rebuilds the run's
:class:`kwlab.experiments.config.RunConfig` from its row (every config field is a column), trains it into
``DIR`` (which then holds the run's ``results.json``) with the recorded torch thread count, and prints
recorded against reproduced metrics, plus any provenance that differs (git revision, torch version,
threads, machine): those are the usual reasons a number moves.
"""

from __future__ import annotations

import json
import math
import os
import typing
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from kwlab.experiments.config import ConfigError, RunConfig
from kwlab.experiments.sweep import check_configs
from kwlab.experiments.train import fit
from kwlab.utils import git_revision

__all__ = ["recorded_config", "reproduce", "COMPARED"]

#: Result columns set side by side (those present in both).
COMPARED = ("final_acc", "best_acc", "final_loss", "final_train_loss", "params", "macs", "epochs_done")


def _row(folder: Path, run_id: str) -> pd.Series:
    path = folder / "results.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: FOLDER must hold a sweep's results.csv")
    df = pd.read_csv(path)
    if "run_id" not in df:
        raise ConfigError(f"{path} has no run_id column")
    hit = df[df["run_id"] == run_id]
    if hit.empty:
        hit = df[df["run_id"].astype(str).str.startswith(run_id)]
    if len(hit) != 1:
        listed = "\n  ".join(df["run_id"].astype(str))
        what = "matches several runs" if len(hit) else "is not in it"
        raise ConfigError(f"--run {run_id!r} {what}; the runs of {path}:\n  {listed}")
    return hit.iloc[0]


def _value(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    if hasattr(v, "item"):  # numpy scalar
        v = v.item()
    if isinstance(v, str) and v[:1] in "[{":
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


def _typed(name: str, value: Any, hint: Any) -> Any:
    """A results table's cell read back as the value the config held: a column of mixed types (``amp``:
    False and "bf16"; ``channels_last``: True and "always") is written as text, so "False" is the boolean
    False where the field takes a boolean; a text field that CSV read as a number is that text again."""
    args = typing.get_args(hint) or (hint,)
    if isinstance(value, str) and bool in args and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if isinstance(value, (int, float)) and not isinstance(value, bool) and str in args:
        if not ({int, float} & set(args)):
            return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    return value


def recorded_config(row: pd.Series) -> RunConfig:
    """The RunConfig of a results.csv row (NaN -> None, JSON columns decoded, booleans and text read back as
    the values they were)."""
    hints = typing.get_type_hints(RunConfig)
    values = {f: _typed(f, _value(row[f]), hints[f]) for f in RunConfig.field_names() if f in row.index}
    return RunConfig.from_dict(values)


def _check_out(folder: Path, run_id: str, out: Path) -> None:
    """Refuse an ``out`` that would be read instead of trained: the recorded run's own directory (or one
    inside it). (A directory of an earlier reproduction holds its results: those are returned.)"""
    run_dir = (folder / "runs" / run_id).resolve()
    target = out.resolve()
    if target == run_dir or run_dir in target.parents:
        raise ConfigError(
            f"--out {out} is the recorded run's own directory ({folder / 'runs' / run_id}): reproduce would "
            f"read the run it compares against instead of training it; give a new directory, e.g. "
            f"--out runs/reproduce-{run_id[-16:]}"
        )


def reproduce(
    folder: str | os.PathLike,
    run_id: str,
    out: str | os.PathLike,
    *,
    threads: int | None = None,
    progress: bool = True,
    log=print,
) -> pd.DataFrame:
    """Re-train run ``run_id`` of ``folder/results.csv`` into ``out``; returns the comparison table
    (index: metric; columns ``recorded``, ``reproduced``, ``difference``) and logs it.

    Args:
        threads: torch threads (default: the recorded ``threads``; the current setting when unknown).
    """

    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(
            f"threads (--threads) must be an integer >= 1 (torch threads; leave it out for the recorded "
            f"count), got {threads!r}"
        )
    folder, out = Path(folder), Path(out)
    row = _row(folder, run_id)
    _check_out(folder, str(row["run_id"]), out)
    config = recorded_config(row)
    check_configs([config])
    recorded_threads = _value(row.get("threads"))
    if threads is None and isinstance(recorded_threads, (int, float)) and recorded_threads >= 1:
        threads = int(recorded_threads)
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    log(f"reproducing {row['run_id']} of {folder} into {out} ({torch.get_num_threads()} torch threads)")
    try:
        results = fit(config, out, progress=progress)
    finally:
        torch.set_num_threads(previous)
    rows = {}
    for key in COMPARED:
        if key in row.index and key in results and results[key] is not None:
            rec, rep = float(row[key]), float(results[key])
            rows[key] = {"recorded": rec, "reproduced": rep, "difference": rep - rec}
    table = pd.DataFrame.from_dict(rows, orient="index")
    env = {}
    config_json = out / "config.json"
    if config_json.exists():
        env = json.loads(config_json.read_text()).get("environment", {})
    now = {
        "git_revision": git_revision(),
        "torch_version": env.get("torch", torch.__version__),
        "threads": env.get("threads", torch.get_num_threads()),
        "machine": env.get("machine", "?"),
    }
    differs = [
        f"{k}: recorded {row[k]} -> now {v}"
        for k, v in now.items()
        if k in row.index and str(row[k]) != str(v)
    ]
    log(table.to_string(float_format=lambda v: f"{v:.6g}"))
    if differs:
        log("provenance that differs (a usual reason for numbers to move):\n  " + "\n  ".join(differs))
    else:
        log("same git revision, torch version, thread count and machine as recorded")
    return table
