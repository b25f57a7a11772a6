"""Resumable ablation sweeps: a YAML grid of :class:`~kwlab.experiments.config.RunConfig` overrides, one run
directory each.

A sweep file::

    name: demo                      # identifies the sweep; an output dir holding another name is refused
    base: {arch: resnet20_cifar, data: synthetic, epochs: 4}      # RunConfig fields shared by every run
    grid: {seed: [0, 1]}            # field -> list of values, cartesian product
    runs:                           # optional: override sets combined with the grid; a list value in an
      - {method: static}            # entry is a sub-grid of that entry only
      - {method: kw, preset: ["1/2x", "1x", "2x"], sharing: [layer, stage]}
    seeds: 3                        # runs per configuration (default 3): seeds 0, 1, 2 unless seed is set
    executor: {kind: sequential}    # or processes (workers: N), submitit (slurm_* options), submitit-local;
                                    # threads: torch threads per run (processes: 1 per worker process)

Budgets are stated, not implied: every row of results.csv and summary.csv carries ``params``,
``params_attention``, ``params_warehouse`` (:func:`kwlab.parameter_breakdown`) and ``macs``, and the sweep
logs each model's parameters before training. To compare at a matched budget, list the static net at the
width whose parameter count matches the dynamic one explicitly (``model_kwargs: {widths: [...]}``; see
configs/demo.yaml and data/results/*/sweep.yaml).

Each run goes to ``OUT/runs/<id>/`` (see :mod:`kwlab.experiments.train` for its files), where ``<id>``
names the fields that vary across the sweep plus a hash of the whole config, so a run is found again when the
sweep is re-run: finished runs (results.json present) are skipped, interrupted ones resume from their
last checkpoint. ``OUT/results.csv`` (and ``results.parquet`` with pyarrow) and ``OUT/summary.csv`` (one
row per configuration, mean/std/95% interval over seeds) are rewritten atomically after every finished
run: one row per finished run of the current sweep, every config field as a column
plus params, MACs, best/final accuracy, throughput and the probe's headline numbers.

Every config is expanded and checked before any training starts: unknown fields (with the closest
name), wrong types, impossible combinations, unknown archs and presets, missing datasets, and an
output directory that holds a different sweep all raise :class:`kwlab.experiments.config.ConfigError`.

One sweep at a time per directory: ``OUT/.sweep.lock`` is an advisory lock (``flock``) held while the
sweep runs; a second sweep into the same directory is refused. sweep.json records the spec and its hash
(:func:`spec_hash`); re-running with an edited spec of the same name keeps the earlier specs in its
``history`` and their finished runs in the table (``in_current_spec=False``). SIGINT or SIGTERM stops the
workers, keeps every finished result, writes the table and raises :class:`SweepInterrupted` (the CLI exits
with 128 + the signal number); re-running the command resumes. Workers of the ``processes`` executor also
die with the sweep process if it is killed outright (Linux ``PR_SET_PDEATHSIG``).

Sweep files are trusted input, like code: ``arch: "module:function"`` imports and calls that function with
the file's ``model_kwargs`` (as Hydra's ``_target_``). Obvious escape hatches (torch.hub, builtins, os,
subprocess, ...: :data:`kwlab.experiments.config.BLOCKED_ARCH_MODULES`) are refused, and the resolved
callable is printed in the run log and recorded in config.json, but only run sweep files you trust.

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
from kwlab.utils import atomic_write_text, git_revision, suggest

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
_SPEC_KEYS = ("name", "base", "grid", "runs", "seeds", "executor", "description")
DEFAULT_SEEDS = 3


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
    seeds: int = DEFAULT_SEEDS
    data_notice: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "sweep") -> SweepSpec:
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: a sweep file must be a mapping with keys {list(_SPEC_KEYS)}")
        for key in d:
            if key not in _SPEC_KEYS:
                raise ConfigError(
                    f"{source}: unknown sweep key {key!r}.{suggest(key, _SPEC_KEYS)} (allowed: "
                    f"{list(_SPEC_KEYS)}; run fields go under 'base', 'grid' or 'runs')"
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
        seeds = d.get("seeds", DEFAULT_SEEDS)
        if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
            raise ConfigError(
                f"{source}: 'seeds' must be an integer >= 1 (runs per configuration), got {seeds!r}"
            )
        return cls(
            seeds=seeds,
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
            "seeds": self.seeds,
            "executor": self.executor,
            "description": self.description,
            "data_notice": self.data_notice,
        }


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["lr=0.1", "preset=1/2x", "seed=[0,1]"]`` -> ``{"lr": 0.1, "preset": "1/2x", "seed": [0, 1]}``
    (values parsed as YAML)."""
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
    """Every run of the sweep as a validated RunConfig, in a stable order (raises ConfigError).

    Each configuration runs ``spec.seeds`` times, with seeds ``s0 .. s0 + seeds - 1`` (``s0`` = the base's
    ``seed``, default 0), unless the grid, the run entry or a ``--set`` gives ``seed`` itself.
    """
    start = int(spec.base.get("seed", 0) or 0)
    seed_axis = list(range(start, start + spec.seeds))
    grid_keys = list(spec.grid)
    grid_points = [dict(zip(grid_keys, combo)) for combo in itertools.product(*spec.grid.values())]
    configs: list[RunConfig] = []
    seen: set[str] = set()
    for i, entry in enumerate(spec.runs):
        for sub in _sub_grid(entry):
            for point in grid_points:
                values = {**spec.base, **point, **sub, **spec.forced}
                seeded = any("seed" in d for d in (point, sub, spec.forced))
                for seed in [values.get("seed")] if seeded else seed_axis:
                    try:
                        config = RunConfig.from_dict({**values, "seed": seed} if not seeded else values)
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


def resolve_data(spec: SweepSpec, configs: Sequence[RunConfig], log=print) -> list[RunConfig]:
    """Replace ``data="auto"`` by the dataset actually used (``cifar10``, or ``synthetic`` with a notice
    that is logged and kept in ``spec.data_notice``, hence in sweep.json, results and report)."""
    from kwlab.experiments.data import resolve_auto  # noqa: PLC0415

    resolved: dict[Any, tuple[str, str]] = {}
    out = []
    for c in configs:
        if c.data.lower() != "auto":
            out.append(c)
            continue
        if c.data_root not in resolved:
            resolved[c.data_root] = resolve_auto(c.data_root)
            name, notice = resolved[c.data_root]
            log(notice if notice else f"data=auto: using {name}")
            if notice:
                spec.data_notice = notice
        out.append(c.replace(data=resolved[c.data_root][0]))
    return out


def _model_key(c: RunConfig | dict[str, Any]) -> str:
    d = c if isinstance(c, dict) else c.to_dict()
    fields = ("arch", "method", "preset", "budget", "cell_in", "cell_out", "sharing", "attention_norm",
              "spatial_partition", "zero_cell", "attention", "reduction", "drop_path_rate", "model_kwargs")
    return json.dumps([d.get(k) for k in fields], sort_keys=True, default=str)


_BREAKDOWNS: dict[str, dict[str, int]] = {}


def budget_of(config: RunConfig, num_classes: int = 10) -> dict[str, int]:
    """``params``, ``params_static``, ``params_warehouse``, ``params_attention``, ``params_other`` of the
    config's model (built on the meta device, so nothing is allocated; :func:`kwlab.parameter_breakdown`)."""
    import torch  # noqa: PLC0415

    from kwlab.experiments.train import build_model  # noqa: PLC0415
    from kwlab.layers.base import parameter_breakdown  # noqa: PLC0415

    key = _model_key(config) + f"|{num_classes}"
    if key not in _BREAKDOWNS:
        with torch.device("meta"):
            try:
                model = build_model(config, num_classes)
            except ValueError as err:
                # a run recorded before KW's max_param_ratio check existed: count it all the same
                if "max_param_ratio" not in str(err) or ":" in config.arch:
                    raise
                model = _build_unchecked(config, num_classes)
        parts = parameter_breakdown(model)
        _BREAKDOWNS[key] = {
            "params" if k == "total" else f"params_{k}": int(v) for k, v in parts.items()
        }
    return dict(_BREAKDOWNS[key])


def _build_unchecked(config: RunConfig, num_classes: int):
    from kwlab.methods import get_method  # noqa: PLC0415
    from kwlab.models import create_model  # noqa: PLC0415

    spec = get_method(config.method)
    options = {k: getattr(config, k) for k in spec.config_fields if getattr(config, k) is not None}
    preset = options.pop("preset", None)
    return create_model(
        config.arch, method=config.method, preset=preset, num_classes=num_classes, max_param_ratio=None,
        **options, **config.model_kwargs,
    )


def log_budgets(configs: Sequence[RunConfig], log=print) -> None:
    """One line per model of the sweep: its parameters by part (so budgets are stated before training)."""
    from kwlab.experiments.stats import config_label  # noqa: PLC0415

    seen: set[str] = set()
    for c in configs:
        key = _model_key(c)
        if key in seen:
            continue
        seen.add(key)
        try:
            b = budget_of(c)
        except Exception:  # noqa: BLE001 - a budget line is informational
            continue
        log(
            f"  budget {config_label(c.to_dict()):28s} params {b['params']:>9,d}  (attention "
            f"{b.get('params_attention', 0):,d}, warehouse {b.get('params_warehouse', 0):,d})"
        )


_LOCK_NAME = ".sweep.lock"
_HELD_LOCKS: dict[str, Any] = {}  # resolved sweep dir -> open lock file (flock held) of this process


def _lock_out_dir(out: Path) -> None:
    """Take the advisory lock ``out/.sweep.lock`` (``fcntl.flock``, released when the process ends).

    Raises:
        ConfigError: another process holds it (a sweep is running in ``out``).
    """
    key = str(out.resolve())
    if key in _HELD_LOCKS:
        return
    handle = open(out / _LOCK_NAME, "a+")  # noqa: SIM115 - kept open while the sweep runs
    try:
        import fcntl  # noqa: PLC0415 - POSIX only

        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # pragma: no cover - no advisory locks on this platform
        pass
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise ConfigError(
            f"another sweep is running in {out} (lock {out / _LOCK_NAME} held by {holder}); wait for it to "
            f"finish or use another --out"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    _HELD_LOCKS[key] = handle


def _unlock_out_dir(out: Path) -> None:
    handle = _HELD_LOCKS.pop(str(Path(out).resolve()), None)
    if handle is not None:
        handle.close()  # closing the file releases the flock


def spec_hash(spec: SweepSpec) -> str:
    """Hash of what a sweep spec trains (everything but ``executor``, ``description`` and notices)."""
    d = {k: v for k, v in spec.to_dict().items() if k not in ("executor", "description", "data_notice")}
    return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _prepare_out_dir(spec: SweepSpec, out: Path, log=print) -> None:
    """Lock ``out`` and record the spec in sweep.json.

    A directory of another sweep name, or a non-empty one without sweep.json, is refused. The same name with
    an edited spec (a changed grid) is accepted: sweep.json keeps every earlier spec (``history``, by spec
    hash), and the results table keeps every finished run directory (``in_current_spec`` marks the runs of
    the current spec).
    """
    meta = out / "sweep.json"
    if not meta.exists() and out.exists() and any(p.name != _LOCK_NAME for p in out.iterdir()):
        raise ConfigError(f"{out} is not empty and holds no sweep.json: refusing to write a sweep into it")
    out.mkdir(parents=True, exist_ok=True)
    _lock_out_dir(out)
    try:
        record = {"name": spec.name, "spec_hash": spec_hash(spec), "spec": spec.to_dict()}
        history: list[dict[str, Any]] = []
        if meta.exists():
            try:
                old = json.loads(meta.read_text())
            except json.JSONDecodeError:
                raise ConfigError(f"{meta} is not valid JSON; repair or delete it") from None
            if old.get("name") != spec.name:
                raise ConfigError(
                    f"{out} holds a different sweep ({old.get('name')!r}, not {spec.name!r}); choose "
                    f"another --out or delete it"
                )
            history = list(old.get("history", []))
            old_hash = old.get("spec_hash")
            if old_hash != record["spec_hash"]:
                history.append({k: old.get(k) for k in ("spec_hash", "spec", "git_revision")})
                log(
                    f"sweep {spec.name!r}: the spec changed since the last run in {out} ({old_hash} -> "
                    f"{record['spec_hash']}); earlier specs are kept in sweep.json and their finished runs "
                    f"in results.csv (in_current_spec=False)"
                )
        record.update(git_revision=git_revision(), history=history)
        atomic_write_text(meta, json.dumps(record, indent=2, default=str) + "\n")
    except BaseException:
        _unlock_out_dir(out)
        raise


class SweepInterrupted(KeyboardInterrupt):
    """A sweep stopped by SIGINT or SIGTERM: workers stopped, finished results kept, table written."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


def _stop_workers() -> None:
    """Terminate this process's multiprocessing children (the processes executor's workers)."""
    import multiprocessing  # noqa: PLC0415

    children = multiprocessing.active_children()
    for child in children:
        child.terminate()
    for child in children:
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
            child.join(timeout=5)


def _die_with_parent() -> None:
    """In a worker process: receive SIGTERM when the sweep process dies, even by SIGKILL (Linux)."""
    import multiprocessing  # noqa: PLC0415

    if multiprocessing.parent_process() is None or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes  # noqa: PLC0415
        import signal  # noqa: PLC0415

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - no prctl
        pass


def _guarded(run):
    """Wrap :func:`run_sweep`: on SIGINT/SIGTERM stop the workers, keep every finished result, write the
    table, release the directory lock and raise :class:`SweepInterrupted` (re-running resumes)."""
    import functools  # noqa: PLC0415
    import signal  # noqa: PLC0415
    import threading  # noqa: PLC0415

    @functools.wraps(run)
    def wrapper(spec, out, *args, log=print, **kwargs):
        out = Path(out)
        caught: list[int] = []

        def handler(signum, frame):
            first = not caught
            caught.append(signum)
            _stop_workers()
            if first:
                raise SweepInterrupted(signal.Signals(signum).name, signum)

        installed = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                installed[sig] = signal.signal(sig, handler)
        try:
            return run(spec, out, *args, log=log, **kwargs)
        except KeyboardInterrupt as err:
            signum = caught[0] if caught else int(signal.SIGINT)
            _stop_workers()
            done = 0
            if (out / "sweep.json").exists():
                try:
                    done = len(collect_results(out))
                except Exception as table_err:  # noqa: BLE001 - the interruption is the news
                    log(f"could not write {out / 'results.csv'}: {table_err}")
            message = (
                f"sweep interrupted by {signal.Signals(signum).name}: workers stopped, {done} finished runs "
                f"kept in {out / 'results.csv'}; re-run the same command to resume"
            )
            raise SweepInterrupted(message, signum) from (None if isinstance(err, SweepInterrupted) else err)
        finally:
            for sig, previous in installed.items():
                signal.signal(sig, previous)
            _unlock_out_dir(out)

    return wrapper


# ----------------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------------


def _run_one(
    config_dict: dict[str, Any], run_dir: str, threads: int | None = None, progress: bool = False
) -> dict[str, Any]:
    """Worker entry point (also used by submitit): train one run, or return its stored results."""
    _die_with_parent()
    if threads:
        import torch  # noqa: PLC0415

        torch.set_num_threads(threads)
    config = RunConfig.from_dict(config_dict)
    return fit(config, run_dir, progress=progress)


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
    import pandas as pd  # noqa: PLC0415

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
        config = json.loads((rdir / "config.json").read_text())
        rows.append(_result_row(name, config, json.loads((rdir / "results.json").read_text()), spec_meta))
        rows[-1]["in_current_spec"] = name in current
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
        from kwlab.experiments.stats import summarize  # noqa: PLC0415

        tmp = out / f".summary.csv.tmp{os.getpid()}"
        summarize(df).to_csv(tmp, index=False)
        os.replace(tmp, out / "summary.csv")
    return df


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


@_guarded
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
    from kwlab.utils import progress_bar as tqdm  # noqa: PLC0415

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
    configs = resolve_data(spec, expand(spec), log)
    check_configs(configs)
    log_budgets(configs, log)
    out = Path(out)
    _prepare_out_dir(spec, out, log=log)
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
        import torch  # noqa: PLC0415

        # executor.threads sets the torch threads of the runs (default: this process's setting, recorded)
        previous_threads = torch.get_num_threads()
        if spec.executor.get("threads"):
            torch.set_num_threads(int(spec.executor["threads"]))
        try:
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
        finally:
            torch.set_num_threads(previous_threads)
    elif kind == "processes":
        import multiprocessing  # noqa: PLC0415
        from concurrent.futures import ProcessPoolExecutor, as_completed  # noqa: PLC0415

        # one torch thread per worker process unless the sweep says otherwise: parallel runs on a shared
        # CPU are fastest and most reproducible single-threaded (the count is recorded in config.json)
        threads = int(spec.executor.get("threads") or 1)
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
