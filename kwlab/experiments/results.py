"""A sweep's results: one row per finished run (``results.csv``, also ``results.parquet`` with pyarrow),
one row per configuration (``summary.csv``, :func:`kwlab.experiments.stats.summarize`), and the parameter
budget of every config (:func:`budget_of`), stated before training (:func:`log_budgets`) and beside every
result.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from kwlab.experiments.config import RunConfig
from kwlab.experiments.rundir import record_problem
from kwlab.experiments.setup import build_model
from kwlab.experiments.stats import config_label, summarize
from kwlab.layers.base import parameter_breakdown
from kwlab.models import create_model
from kwlab.utils import table_format, write_table

__all__ = [
    "collect_results",
    "unreadable_record",
    "budget_of",
    "meta_model",
    "log_budgets",
    "distinct_models",
]


_BREAKDOWNS: dict[str, dict[str, int]] = {}


def budget_of(config: RunConfig, num_classes: int = 10) -> dict[str, int]:
    """``params``, ``params_static``, ``params_warehouse``, ``params_attention``, ``params_other`` of the
    config's model (built on the meta device, so nothing is allocated; :func:`kwlab.parameter_breakdown`).
    Cached per :meth:`RunConfig.model_key`: each distinct model is built once."""
    key = _budget_key(config, num_classes)
    if key not in _BREAKDOWNS:
        _BREAKDOWNS[key] = _count(meta_model(config, num_classes))
    return dict(_BREAKDOWNS[key])


def meta_model(config: RunConfig, num_classes: int = 10):
    """The config's model built on the meta device (nothing allocated); its budget is remembered for
    :func:`budget_of` where it can be counted (a model with lazy modules cannot be before its first call)."""
    with torch.device("meta"):
        try:
            model = build_model(config, num_classes)
        except ValueError as err:
            # a run recorded before KW's max_param_ratio check existed: count it all the same
            if "max_param_ratio" not in str(err) or ":" in config.arch:
                raise
            model = _build_unchecked(config, num_classes)
    key = _budget_key(config, num_classes)
    if key not in _BREAKDOWNS:
        try:
            _BREAKDOWNS[key] = _count(model)
        except Exception:  # noqa: BLE001 - uncountable here (lazy modules): budget_of raises it when asked
            pass
    return model


def _budget_key(config: RunConfig, num_classes: int) -> str:
    return config.model_key() + f"|{num_classes}"


def _count(model) -> dict[str, int]:
    parts = parameter_breakdown(model)
    return {"params" if k == "total" else f"params_{k}": int(v) for k, v in parts.items()}


def _build_unchecked(config: RunConfig, num_classes: int):
    preset, options = config.method_options()
    return create_model(
        config.arch,
        method=config.method,
        preset=preset,
        num_classes=num_classes,
        max_param_ratio=None,
        **options,
        **config.model_kwargs,
    )


def distinct_models(configs: Sequence[RunConfig]) -> list[RunConfig]:
    """The first config of every distinct model (:meth:`RunConfig.model_key`), in order."""
    first: dict[str, RunConfig] = {}
    for c in configs:
        first.setdefault(c.model_key(), c)
    return list(first.values())


def log_budgets(configs: Sequence[RunConfig], log=print) -> None:
    """One line per model of the sweep: its parameters by part (so budgets are stated before training)."""

    for c in distinct_models(configs):
        try:
            b = budget_of(c)
        except Exception:  # noqa: BLE001 - a budget line is informational
            continue
        log(
            f"  budget {config_label(c.to_dict()):28s} params {b['params']:>9,d}  (attention "
            f"{b.get('params_attention', 0):,d}, warehouse {b.get('params_warehouse', 0):,d})"
        )


def collect_results(out: str | os.PathLike, ids: Sequence[str] | None = None, *, write: bool = True):
    """One row per finished run (results.json present) as a DataFrame; writes results.csv/.parquet and
    summary.csv (one row per configuration: ``n_seeds`` and ``M_mean``/``M_std``/``M_ci95`` for every
    metric, see :func:`kwlab.experiments.stats.summarize`).

    Every row carries the budget (``params``, ``params_static``, ``params_warehouse``,
    ``params_attention``, ``params_other``, ``macs``), the dataset actually used (``data``; a
    ``data_notice`` when data=auto fell back to synthetic images), ``num_classes``, and provenance:
    ``git_revision``, ``machine``, ``torch_version``, ``threads``.

    Args:
        out: the sweep directory.
        ids: the run ids of the current spec, listed first (default: every run directory). Finished run
            directories not in ``ids`` (runs of an earlier spec of this sweep) follow, with
            ``in_current_spec=False``: no finished run is dropped from the table.
        write: also write ``out/results.csv`` (and ``results.parquet`` when pyarrow is installed).
    """

    out = Path(out)
    runs_dir = out / "runs"
    every = sorted(p.name for p in runs_dir.iterdir() if p.is_dir()) if runs_dir.exists() else []
    current = set(ids) if ids is not None else set(every)
    # every finished run directory is accounted for: ids first, then runs of earlier specs of this sweep
    names = [*(ids if ids is not None else []), *(n for n in every if ids is None or n not in current)]
    sweep_meta = json.loads((out / "sweep.json").read_text()) if (out / "sweep.json").exists() else {}
    spec_meta = sweep_meta.get("spec", {})
    rows = []
    for name in names:
        rdir = runs_dir / name
        if not (rdir / "results.json").exists():
            continue
        problem = unreadable_record(rdir)
        if problem is not None:  # never counted as a finished run
            warnings.warn(f"{problem}; the run is not counted in {out / 'results.csv'}", stacklevel=2)
            continue
        config = json.loads((rdir / "config.json").read_text())
        rows.append(_result_row(name, config, json.loads((rdir / "results.json").read_text()), spec_meta))
        rows[-1]["in_current_spec"] = name in current
    df = pd.DataFrame(rows)
    if write:
        out.mkdir(parents=True, exist_ok=True)
        write_table(df, out / "results.csv")
        if table_format() == "parquet":
            write_table(df, out / "results.parquet")

        write_table(summarize(df), out / "summary.csv")
    return df


def unreadable_record(run_dir: str | os.PathLike) -> str | None:
    """Why a run directory that holds a results.json is not a finished run (its results.json or config.json
    is missing, truncated, empty or not a kwlab record: :func:`kwlab.experiments.rundir.record_problem`),
    naming the file; None for a finished run."""
    run_dir = Path(run_dir)
    for name in ("results.json", "config.json"):
        path = run_dir / name
        problem = record_problem(path) if path.exists() else "missing"
        if problem is not None:
            return f"{path}: {problem}"
    return None


def _result_row(
    name: str, config: dict[str, Any], results: dict[str, Any], spec_meta: dict[str, Any]
) -> dict[str, Any]:
    """One results.csv row: config fields, provenance, the parameter breakdown, then the run's results."""
    cfg = config["config"]
    resolved = config.get("resolved", {})
    env = config.get("environment", {})
    row: dict[str, Any] = {"run_id": name}
    for k, v in cfg.items():
        row[k] = json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v
    if not cfg.get("options"):  # no knobs: no column (a run recorded before knobs were held is the same)
        row.pop("options", None)
    for k, v in cfg.get("options", {}).items():  # each knob also as its own column (beside the fields)
        row.setdefault(k, json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v)
    if resolved.get("data") and str(cfg.get("data", "")).lower() == "auto":
        row["data"] = resolved["data"]
    notice = spec_meta.get("data_notice", "")
    row["data_notice"] = notice if notice and row.get("data") == "synthetic" else ""
    row["num_classes"] = resolved.get("num_classes", 10)
    row["git_revision"] = config.get("git_revision", "unknown")
    row["machine"] = env.get("machine") or env.get("host", "unknown")
    row["torch_version"] = env.get("torch", "unknown")
    threads = env.get("threads") or spec_meta.get("executor", {}).get("threads")
    row["threads"] = int(threads) if threads else "unknown"
    try:
        row.update(budget_of(RunConfig.from_dict(cfg), int(row["num_classes"])))
    except Exception:  # noqa: BLE001 - a model that cannot be rebuilt here keeps the recorded total only
        pass
    row.update(results)
    return row
