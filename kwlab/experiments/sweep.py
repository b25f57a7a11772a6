"""Resumable ablation sweeps: a YAML grid of :class:`kwlab.experiments.config.RunConfig` overrides, one directory per run.

A sweep file::

    name: demo                      # identifies the sweep; an output dir holding another name is refused
    base: {arch: resnet20_cifar, data: synthetic, epochs: 4}      # RunConfig fields shared by every run
    grid: {seed: [0, 1]}            # field -> list of values, cartesian product
    runs:                           # optional: override sets combined with the grid; a list value in an
      - {method: static}            # entry is a sub-grid of that entry only
      - {method: kw, preset: ["1/2x", "1x", "2x"], sharing: [layer, stage]}
    executor: {kind: sequential}    # or processes (workers: N), submitit (slurm_* options), submitit-local;
                                    # threads: torch threads per run (processes: cpu_count // workers)

Each run goes to ``OUT/runs/<id>/`` (see :mod:`kwlab.experiments.train` for its files), where ``<id>`` names the
fields that vary across the sweep plus a hash of the whole config, so a run is found again when the
sweep is re-run: finished runs (results.json present) are skipped, interrupted ones resume from their
last checkpoint. ``OUT/results.csv`` (and ``results.parquet`` with pyarrow) is rewritten atomically after
every finished run: one row per finished run of the current sweep, every config field as a column
plus params, MACs, best/final accuracy, throughput and the probe's headline numbers.

Every config is expanded and checked before any training starts: unknown fields (with the closest
name), wrong types, impossible combinations, unknown archs and presets, missing datasets, and an
output directory that holds a different sweep all raise :class:`kwlab.experiments.config.ConfigError`.

Explained in notebooks/04_ablation_n_m_sharing.ipynb.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sys
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kwlab.experiments.config import ConfigError, RunConfig
from kwlab.experiments.train import fit
from kwlab.utils import atomic_write_text, git_revision

__all__ = [
    "SweepSpec",
    "load_sweep",
    "parse_overrides",
    "expand",
    "run_sweep",
    "collect_results",
    "run_ids",
    "EXECUTORS",
]

EXECUTORS = ("sequential", "processes", "submitit", "submitit-local")
_SPEC_KEYS = ("name", "base", "grid", "runs", "executor", "description")


@dataclass
class SweepSpec:
    """A parsed sweep file (see the module docstring)."""

    name: str
    base: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=lambda: [{}])
    executor: dict[str, Any] = field(default_factory=dict)
    forced: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "sweep") -> SweepSpec:
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: a sweep file must be a mapping with keys {list(_SPEC_KEYS)}")
        for key in d:
            if key not in _SPEC_KEYS:
                import difflib  # noqa: PLC0415

                close = difflib.get_close_matches(key, _SPEC_KEYS, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(
                    f"{source}: unknown sweep key {key!r}{hint} (allowed: {list(_SPEC_KEYS)}; run "
                    f"fields go under 'base', 'grid' or 'runs')"
                )
        name = d.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{source}: 'name' (a non-empty string) is required")
        base = d.get("base") or {}
        grid = d.get("grid") or {}
        runs = d.get("runs") or [{}]
        executor = d.get("executor") or {}
        if not isinstance(base, dict):
            raise ConfigError(f"{source}: 'base' must be a mapping of RunConfig fields")
        if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
            raise ConfigError(
                f"{source}: 'grid' must map fields to non-empty lists, e.g. grid: {{seed: [0, 1]}}"
            )
        if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
            raise ConfigError(f"{source}: 'runs' must be a list of mappings (override sets)")
        if not isinstance(executor, dict):
            raise ConfigError(f"{source}: 'executor' must be a mapping, e.g. {{kind: processes, workers: 2}}")
        return cls(
            name=name,
            base=dict(base),
            grid=dict(grid),
            runs=[dict(r) for r in runs],
            executor=dict(executor),
            description=str(d.get("description", "")),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "base": self.base,
            "grid": self.grid,
            "runs": self.runs,
            "forced": self.forced,
            "executor": self.executor,
            "description": self.description,
        }


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["lr=0.1", "preset=1/2x", "seed=[0,1]"]`` -> ``{"lr": 0.1, "preset": "1/2x", "seed": [0, 1]}`` (YAML values)."""
    import yaml  # noqa: PLC0415

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            out[key] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item!r}: cannot parse the value ({err})") from None
    return out


def load_sweep(path: str | os.PathLike, overrides: dict[str, Any] | Sequence[str] | None = None) -> SweepSpec:
    """Read a sweep YAML file and apply ``--set`` overrides.

    A scalar override is forced on every run (it wins over base, grid and runs); a list override
    becomes (or replaces) a grid axis.
    """
    import yaml  # noqa: PLC0415

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"sweep file {path} does not exist")
    with open(path) as f:
        spec = SweepSpec.from_dict(yaml.safe_load(f), source=str(path))
    if overrides:
        apply_overrides(spec, overrides if isinstance(overrides, dict) else parse_overrides(overrides))
    return spec


def apply_overrides(spec: SweepSpec, overrides: dict[str, Any]) -> SweepSpec:
    for key, value in overrides.items():
        if isinstance(value, list):
            spec.grid[key] = value
            spec.base.pop(key, None)
            for r in spec.runs:
                r.pop(key, None)
        else:
            spec.forced[key] = value
    return spec


def _sub_grid(entry: dict[str, Any]) -> list[dict[str, Any]]:
    keys = list(entry)
    axes = [v if isinstance(v, list) and k != "model_kwargs" else [v] for k, v in entry.items()]
    return [dict(zip(keys, combo)) for combo in itertools.product(*axes)]


def expand(spec: SweepSpec) -> list[RunConfig]:
    """Every run of the sweep as a validated RunConfig, in a stable order (raises ConfigError)."""
    grid_keys = list(spec.grid)
    grid_points = [dict(zip(grid_keys, combo)) for combo in itertools.product(*spec.grid.values())]
    configs: list[RunConfig] = []
    seen: set[str] = set()
    for i, entry in enumerate(spec.runs):
        for sub in _sub_grid(entry):
            for point in grid_points:
                values = {**spec.base, **point, **sub, **spec.forced}
                try:
                    config = RunConfig.from_dict(values)
                except ConfigError as err:
                    where = f"runs[{i}] {sub}" if sub else "base"
                    raise ConfigError(
                        f"sweep {spec.name!r}, {where}{' x ' + str(point) if point else ''}: {err}"
                    ) from None
                key = config_hash(config)
                if key not in seen:
                    seen.add(key)
                    configs.append(config)
    return configs


def config_hash(config: RunConfig) -> str:
    return hashlib.sha1(json.dumps(config.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:8]


def _slug(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)
    return "".join(c if c.isalnum() or c in ".-" else "_" for c in text)[:40]


def run_ids(configs: Sequence[RunConfig]) -> list[str]:
    """Directory names: the fields that vary across ``configs`` plus the config hash."""
    dicts = [c.to_dict() for c in configs]
    varying = [
        k
        for k in RunConfig.field_names()
        if len({json.dumps(d[k], sort_keys=True, default=str) for d in dicts}) > 1
    ]
    ids = []
    for c, d in zip(configs, dicts):
        parts = [f"{k}={_slug(d[k])}" for k in varying if d[k] is not None]
        ids.append(",".join(parts + [config_hash(c)]))
    return ids


# ----------------------------------------------------------------------------------------------------
# Checks before training
# ----------------------------------------------------------------------------------------------------


def check_configs(configs: Sequence[RunConfig]) -> None:
    """Build-level checks: arch, preset and overrides build a model; every dataset can be found."""
    import torch  # noqa: PLC0415

    from kwlab.experiments.data import resolve_source  # noqa: PLC0415
    from kwlab.experiments.train import build_model  # noqa: PLC0415

    for data, root in sorted({(c.data, c.data_root) for c in configs}, key=str):
        try:
            resolve_source(data, root)
        except FileNotFoundError as err:
            raise ConfigError(f"data={data!r}: {err}") from None
    checked: set[str] = set()
    for c in configs:
        key = json.dumps(
            [
                c.arch,
                c.method,
                c.preset,
                c.budget,
                c.cell_in,
                c.cell_out,
                c.sharing,
                c.attention,
                c.reduction,
                c.drop_path_rate,
                c.model_kwargs,
            ],
            default=str,
        )
        if key in checked:
            continue
        checked.add(key)
        try:
            with torch.device("meta"):
                build_model(c, 10)
        except ConfigError:
            raise
        except Exception as err:  # noqa: BLE001 - surfaced as a config error before training
            raise ConfigError(
                f"arch={c.arch!r} method={c.method!r} preset={c.preset!r}: the model cannot be "
                f"built: {type(err).__name__}: {err}"
            ) from None


def _prepare_out_dir(spec: SweepSpec, out: Path) -> None:
    meta = out / "sweep.json"
    if meta.exists():
        old = json.loads(meta.read_text())
        if old.get("name") != spec.name:
            raise ConfigError(
                f"{out} holds a different sweep ({old.get('name')!r}, not {spec.name!r}); choose another "
                f"--out or delete it"
            )
    elif out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty and holds no sweep.json: refusing to write a sweep into it")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        meta,
        json.dumps(
            {"name": spec.name, "spec": spec.to_dict(), "git_revision": git_revision()}, indent=2, default=str
        )
        + "\n",
    )


# ----------------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------------


def _run_one(
    config_dict: dict[str, Any], run_dir: str, threads: int | None = None, progress: bool = False
) -> dict[str, Any]:
    """Worker entry point (also used by submitit): train one run, or return its stored results."""
    if threads:
        import torch  # noqa: PLC0415

        torch.set_num_threads(threads)
    config = RunConfig.from_dict(config_dict)
    return fit(config, run_dir, progress=progress)


def collect_results(out: str | os.PathLike, ids: Sequence[str] | None = None, *, write: bool = True):
    """One row per finished run (results.json present) as a DataFrame; writes results.csv/.parquet.

    Args:
        out: the sweep directory.
        ids: run ids to include (default: every run directory).
        write: also write ``out/results.csv`` (and ``results.parquet`` when pyarrow is installed).
    """
    import pandas as pd  # noqa: PLC0415

    out = Path(out)
    runs_dir = out / "runs"
    names = (
        list(ids)
        if ids is not None
        else sorted(p.name for p in runs_dir.iterdir())
        if runs_dir.exists()
        else []
    )
    rows = []
    for name in names:
        rdir = runs_dir / name
        if not (rdir / "results.json").exists():
            continue
        config = json.loads((rdir / "config.json").read_text())
        cfg = config["config"]
        row: dict[str, Any] = {"run_id": name}
        for k, v in cfg.items():
            row[k] = json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v
        row["git_revision"] = config.get("git_revision", "unknown")
        row.update(json.loads((rdir / "results.json").read_text()))
        rows.append(row)
    df = pd.DataFrame(rows)
    if write:
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / f".results.csv.tmp{os.getpid()}"
        df.to_csv(tmp, index=False)
        os.replace(tmp, out / "results.csv")
        try:
            import pyarrow  # noqa: F401, PLC0415
        except ImportError:
            pass
        else:
            tmp = out / f".results.parquet.tmp{os.getpid()}"
            df.to_parquet(tmp, index=False)
            os.replace(tmp, out / "results.parquet")
    return df


def run_sweep(
    spec: SweepSpec | str | os.PathLike,
    out: str | os.PathLike,
    *,
    executor: str | None = None,
    workers: int | None = None,
    progress: bool = True,
    overrides: dict[str, Any] | None = None,
    log=print,
):
    """Run (or resume) every run of ``spec`` into ``out``; returns the results DataFrame.

    Args:
        spec: a SweepSpec or the path of a sweep YAML file.
        out: the sweep directory.
        executor: "sequential" (default), "processes" (``workers`` local processes), "submitit" (SLURM via
            submitit's AutoExecutor; options from the spec's ``executor`` section: ``slurm_partition``,
            ``timeout_min``, ``gpus_per_node``, ``cpus_per_task``, ...) or "submitit-local" (submitit's
            local executor, for testing).
        workers: parallel runs for "processes" (default 2).
        progress: tqdm bars.
        overrides: ``--set`` overrides (see :func:`load_sweep`).

    Raises:
        ConfigError: bad config, missing dataset or foreign output directory (before any training).
        RuntimeError: some runs failed (the others finished; see ``runs/<id>/error.txt``).
    """
    from tqdm.auto import tqdm  # noqa: PLC0415

    if not isinstance(spec, SweepSpec):
        spec = load_sweep(spec)
    if overrides:
        apply_overrides(spec, overrides)
    kind = executor or spec.executor.get("kind", "sequential")
    if kind not in EXECUTORS:
        raise ConfigError(f"executor={kind!r} is not allowed; allowed: {list(EXECUTORS)}")
    workers = int(workers or spec.executor.get("workers", 2))
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    configs = expand(spec)
    check_configs(configs)
    out = Path(out)
    _prepare_out_dir(spec, out)
    ids = run_ids(configs)
    todo = [(c, i) for c, i in zip(configs, ids) if not (out / "runs" / i / "results.json").exists()]
    log(
        f"sweep {spec.name!r}: {len(configs)} runs, {len(configs) - len(todo)} already finished, "
        f"{len(todo)} to run ({kind}) -> {out}"
    )
    failures: list[str] = []

    def finished(run_id: str, error: BaseException | None = None) -> None:
        if error is not None:
            failures.append(run_id)
            text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            atomic_write_text(out / "runs" / run_id / "error.txt", text)
            log(f"run {run_id} failed: {type(error).__name__}: {error}")
        collect_results(out, ids)

    for _, run_id in todo:
        (out / "runs" / run_id).mkdir(parents=True, exist_ok=True)
        err_file = out / "runs" / run_id / "error.txt"
        if err_file.exists():
            err_file.unlink()
    bar = tqdm(
        total=len(configs), initial=len(configs) - len(todo), desc=f"sweep {spec.name}", disable=not progress
    )
    if kind == "sequential":
        for config, run_id in todo:
            bar.set_postfix_str(run_id[:40])
            try:
                fit(config, out / "runs" / run_id, progress=progress)
            except KeyboardInterrupt:
                raise
            except Exception as err:  # noqa: BLE001 - recorded, the sweep goes on
                finished(run_id, err)
            else:
                finished(run_id)
            bar.update()
    elif kind == "processes":
        import multiprocessing  # noqa: PLC0415
        from concurrent.futures import ProcessPoolExecutor, as_completed  # noqa: PLC0415

        threads = int(spec.executor.get("threads") or max(1, (os.cpu_count() or 1) // workers))
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = {pool.submit(_run_one, c.to_dict(), str(out / "runs" / i), threads): i for c, i in todo}
            for fut in as_completed(futures):
                finished(futures[fut], fut.exception())
                bar.update()
    else:
        import submitit  # noqa: PLC0415

        folder = out / "submitit"
        params = {k: v for k, v in spec.executor.items() if k not in ("kind", "workers", "threads")}
        if kind == "submitit-local":
            ex = submitit.LocalExecutor(folder=folder)
            params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
        else:
            ex = submitit.AutoExecutor(folder=folder)
        params.setdefault("timeout_min", 60 * 24)
        ex.update_parameters(**params)
        threads = spec.executor.get("threads")
        jobs = [(ex.submit(_run_one, c.to_dict(), str(out / "runs" / i), threads), i) for c, i in todo]
        log(f"submitted {len(jobs)} jobs (logs in {folder})")
        for job, run_id in jobs:
            try:
                job.result()
            except Exception as err:  # noqa: BLE001
                finished(run_id, err)
            else:
                finished(run_id)
            bar.update()
    bar.close()
    df = collect_results(out, ids)
    if failures:
        raise RuntimeError(
            f"{len(failures)} of {len(configs)} runs failed: {failures}; see runs/<id>/error.txt. "
            f"Re-run the same command to retry them (finished runs are kept)."
        )
    return df


def main_sweep(
    path: str,
    out: str,
    overrides: Sequence[str] = (),
    executor: str | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> int:
    """CLI body of ``kwlab sweep``."""
    spec = load_sweep(path, list(overrides))
    df = run_sweep(spec, out, executor=executor, workers=workers, progress=progress)
    print(f"{len(df)} finished runs -> {Path(out) / 'results.csv'}", file=sys.stderr)
    return 0
