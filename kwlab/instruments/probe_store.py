"""The probe's tables on disk: :func:`save_tables` writes them, :func:`load` reads them back as a
:class:`ProbeResult` (the readout methods of :class:`kwlab.instruments.probe.Probe`, without the model).

A saved probe is a directory of one file per table (Parquet with pyarrow, else CSV:
:func:`kwlab.utils.table_format`) and ``probe.json`` (the format, the table names and the run's config).
:func:`plain_value` turns a table cell into a plain Python value, for records that must load with
``torch.load(..., weights_only=True)`` or JSON (the probe history of :class:`kwlab.ProbeCallback`).
"""

from __future__ import annotations

import dataclasses
import json
import numbers
from pathlib import Path
from typing import Any

import pandas as pd

from kwlab.utils import atomic_write_text, read_table, table_format, write_table

__all__ = ["TABLES", "ProbeResult", "config_to_dict", "load", "plain_value", "save_tables"]

#: The tables a probe can save, in the order of :meth:`kwlab.instruments.probe.Probe.tables`.
TABLES = ("summary", "cell_usage", "histogram", "per_class", "samples")


def config_to_dict(config: Any) -> dict[str, Any] | None:
    """A run config as stored in ``probe.json``: a dataclass instance as its dict, a dict as it is."""
    if config is None:
        return None
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    if isinstance(config, dict):
        return config
    raise TypeError(f"config must be a dataclass instance, a dict or None, got {type(config).__name__}")


def save_tables(directory: str | Path, tables: dict[str, pd.DataFrame], config: Any = None) -> Path:
    """Write each table to ``directory/<name>.<format>`` and ``probe.json``; returns ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fmt = table_format()
    for name, df in tables.items():
        write_table(df, directory / f"{name}.{fmt}")
    meta = {"format": fmt, "tables": sorted(tables), "config": config_to_dict(config)}
    atomic_write_text(directory / "probe.json", json.dumps(meta, indent=2, default=str))
    return directory


class ProbeResult:
    """Tables of a saved probe (same readout methods as :class:`Probe`) and the run's ``config`` dict."""

    def __init__(self, tables: dict[str, pd.DataFrame], config: dict[str, Any] | None) -> None:
        self._tables = tables
        self.config = config

    def _table(self, name: str) -> pd.DataFrame:
        if name not in self._tables:
            hint = {
                "per_class": "the probe recorded no labels",
                "samples": "the probe kept no samples (keep=0)",
            }
            raise RuntimeError(f"no {name!r} table saved: {hint.get(name, 'missing file')}")
        return self._tables[name].copy()

    def summary(self) -> pd.DataFrame:
        return self._table("summary")

    def cell_usage(self) -> pd.DataFrame:
        return self._table("cell_usage")

    def histogram(self) -> pd.DataFrame:
        return self._table("histogram")

    def per_class(self) -> pd.DataFrame:
        return self._table("per_class")

    def samples(self) -> pd.DataFrame:
        return self._table("samples")

    def tables(self) -> dict[str, pd.DataFrame]:
        return {k: v.copy() for k, v in self._tables.items()}


def load(directory: str | Path) -> ProbeResult:
    """Load what :meth:`Probe.save` (:func:`save_tables`) wrote."""
    directory = Path(directory)
    meta_path = directory / "probe.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{meta_path} not found: directory must be one written by Probe.save()")
    meta = json.loads(meta_path.read_text())
    tables = {}
    for name in meta["tables"]:
        tables[name] = read_table(directory / f"{name}.{meta['format']}")
    return ProbeResult(tables, meta.get("config"))


def plain_value(v: Any) -> Any:
    """``v`` as a plain Python value: str, bool and None as they are, integers as int, reals as float
    (numpy and torch scalars included), anything else as its ``str``."""
    if isinstance(v, (str, bool)) or v is None:
        return v
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real):
        return float(v)
    return str(v)
