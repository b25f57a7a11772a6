"""Runs whose numbers come from non-finite values, in a results table (one row per run): which they are
(:func:`nonfinite_runs`), the table without them (:func:`split_nonfinite`) and the sentence that counts them
(:func:`left_out_text`). Summaries, findings, reports and result plots all leave such runs out this way, so a
number computed from NaN or inf never reaches a table, a figure or a finding.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["nonfinite_runs", "split_nonfinite", "left_out_text"]


def _isnan(v: Any) -> bool:
    try:
        return math.isnan(float(v))
    except (TypeError, ValueError):
        return False


def _truthy(v: Any) -> bool:
    return (
        v is True
        or (isinstance(v, (int, float, np.bool_)) and not _isnan(v) and bool(v))
        or (isinstance(v, str) and v.strip().lower() == "true")
    )


def nonfinite_runs(results: pd.DataFrame) -> pd.Series:
    """Boolean mask of the runs whose numbers come from non-finite values: ``nonfinite`` is true (the
    trainer's flag), or, for records written before the flag existed, ``final_loss`` is NaN or infinite."""
    mask = pd.Series(False, index=results.index)
    if "nonfinite" in results:
        mask |= results["nonfinite"].map(_truthy).astype(bool)
    if "final_loss" in results:
        loss = pd.to_numeric(results["final_loss"], errors="coerce").to_numpy(dtype=float)
        mask |= ~np.isfinite(loss)
    return mask


def _reason(row: pd.Series) -> str:
    what = row.get("nonfinite_what")
    return f"non-finite {what}" if isinstance(what, str) and what else "non-finite test loss"


def split_nonfinite(results: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(kept, left_out)``: the runs with finite numbers, and those :func:`nonfinite_runs` flags."""
    mask = nonfinite_runs(results) if not results.empty else pd.Series(False, index=results.index)
    return results[~mask], results[mask]


def left_out_text(left_out: pd.DataFrame) -> str:
    """``"1 run left out: non-finite test loss"`` (``"2 runs left out: ..."`` with each reason and its
    count); ``""`` when nothing is left out."""
    if left_out.empty:
        return ""
    reasons: dict[str, int] = {}
    for _, row in left_out.iterrows():
        reasons[_reason(row)] = reasons.get(_reason(row), 0) + 1
    n = len(left_out)
    why = "; ".join(r if len(reasons) == 1 else f"{r} ({c})" for r, c in reasons.items())
    ids = " ".join(str(v) for v in left_out["run_id"]) if "run_id" in left_out else ""
    return f"{n} run{'s' if n != 1 else ''} left out: {why}" + (f" [{ids}]" if ids else "")
