"""Resumable ablation sweeps: a YAML grid of :class:`~kwlab.experiments.config.RunConfig` overrides, one run
directory each.

The sweep file grammar and the run names live in :mod:`kwlab.experiments.spec`, the executors in
:mod:`kwlab.experiments.executors`, the results table in :mod:`kwlab.experiments.results`; this module wires
them together (pre-checks, the directory lock and history, signals); import their names from those modules.

Budgets are stated, not implied: every row of results.csv and summary.csv carries ``params``,
``params_attention``, ``params_warehouse`` (:func:`kwlab.parameter_breakdown`) and ``macs``, and the sweep
logs each model's parameters before training. To compare at a matched budget, list the static net at the
width whose parameter count matches the dynamic one explicitly (``model_kwargs: {widths: [...]}``; see
configs/demo.yaml and data/results/*/sweep.yaml).

Each run goes to ``OUT/runs/<id>/`` (see :mod:`kwlab.experiments.train` for its files), where ``<id>``
names the hashed fields that vary across the sweep plus the run's :meth:`RunConfig.training_hash`, so a run
is found again when the sweep is re-run: finished runs (results.json present) are skipped, interrupted ones
resume from their last checkpoint. Runtime fields (``probe_every``, ``checkpoint``, ``device``; see
:data:`kwlab.experiments.config.RUNTIME_FIELDS`) are not part of the identity: changing them never retrains
a run, and a run directory of the same training config under another name is renamed and reused.
Instruments that do not apply to a run (``probe_every`` on a static net) are skipped with a note in the
run log and in config.json; the run trains as usual. Runs whose temperature anneal is short
(:func:`kwlab.methods.temperature.anneal_note`, in each run's results) get one warning for the sweep, with
their count, after the runs.

``OUT/results.csv`` (and ``results.parquet`` with pyarrow) and ``OUT/summary.csv`` (one row per
configuration, mean/std/95% interval over seeds) are rewritten atomically after every finished run: one row
per finished run of the current sweep, every config field as a column plus params, MACs, best/final
accuracy, throughput and the probe's headline numbers (:data:`kwlab.instruments.statistics.HEADLINE`).

Every config is expanded and checked before any training starts: unknown fields (with the closest
name), wrong types, impossible combinations, unknown archs and presets, missing datasets, and an
output directory that holds a different sweep all raise :class:`kwlab.experiments.config.ConfigError`.

One sweep at a time per directory: ``OUT/.sweep.lock`` is an advisory lock (``flock``) held while the
sweep runs; a second sweep into the same directory is refused. sweep.json records the spec and its hash
(:func:`spec_hash`); re-running with an edited spec of the same name keeps the earlier specs in its
``history`` and their finished runs in the table (``in_current_spec=False``). SIGINT or SIGTERM stops the
workers, keeps every finished result, writes the table and raises :class:`SweepInterrupted` (the CLI exits
with 128 + the signal number); re-running the command resumes. Workers of the ``processes`` executor, and
torchrun with its ranks under the ``torchrun`` executor, also die with the sweep process if it is killed
outright (Linux ``PR_SET_PDEATHSIG``); a run directory still being written by a live process is refused
(``runs/<id>/.run.lock``, :func:`kwlab.experiments.rundir.hold_run_dir`). A run directory whose results.json
or config.json is empty, truncated or not a kwlab record is named, its records are moved to ``*.corrupt``
and the run is trained again: it is never counted as finished. Sweep files are read with duplicate keys
refused (:func:`kwlab.experiments.spec.load_yaml`).

Sweep files are trusted input, like code: ``arch: "module:function"`` imports and calls that function with
the file's ``model_kwargs`` (as Hydra's ``_target_``). Obvious escape hatches (torch.hub, builtins, os,
subprocess, ...: :data:`kwlab.experiments.config.BLOCKED_ARCH_MODULES`) are refused, and the resolved
callable is printed in the run log and recorded in config.json, but only run sweep files you trust.

Explained in notebooks/04_ablation_n_m_sharing.ipynb.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import threading
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kwlab.experiments.config import ConfigError, RunConfig
from kwlab.experiments.data_sources import resolve_auto, resolve_source
from kwlab.experiments.executors import make_executor as _make_executor
from kwlab.experiments.executors import stop_workers
from kwlab.experiments.results import (
    collect_results as _collect_results,
)
from kwlab.experiments.results import (
    distinct_models,
    meta_model,
    unreadable_record,
)
from kwlab.experiments.results import (
    log_budgets as _log_budgets,
)
from kwlab.experiments.spec import (
    SweepSpec as _SweepSpec,
)
from kwlab.experiments.spec import (
    apply_overrides as _apply_overrides,
)
from kwlab.experiments.spec import (
    expand as _expand,
)
from kwlab.experiments.spec import (
    load_sweep as _load_sweep,
)
from kwlab.experiments.spec import (
    run_ids as _run_ids,
)
from kwlab.experiments.spec import (
    spec_hash as _spec_hash,
)
from kwlab.logs import get_logger
from kwlab.methods.temperature import anneal_summary
from kwlab.utils import atomic_write_text, git_revision, moved_names, take_pid_lock
from kwlab.utils import progress_bar as tqdm

_log = get_logger("sweep")

__all__ = [
    "run_sweep",
    "check_configs",
    "resolve_data",
    "SweepInterrupted",
]

#: Public names that lived here once -> their one home; importing one from here raises an error naming it.
__getattr__ = moved_names(
    __name__,
    {
        "SweepSpec": "kwlab.experiments.spec",
        "load_sweep": "kwlab.experiments.spec",
        "parse_overrides": "kwlab.experiments.spec",
        "apply_overrides": "kwlab.experiments.spec",
        "expand": "kwlab.experiments.spec",
        "collect_results": "kwlab.experiments.results",
        "run_ids": "kwlab.experiments.spec",
        "config_hash": "kwlab.experiments.spec",
        "spec_hash": "kwlab.experiments.spec",
        "budget_of": "kwlab.experiments.results",
        "log_budgets": "kwlab.experiments.results",
        "EXECUTORS": "kwlab.experiments.executors",
        "Executor": "kwlab.experiments.executors",
        "make_executor": "kwlab.experiments.executors",
        "DEFAULT_SEEDS": "kwlab.experiments.spec",
    },
)


# ----------------------------------------------------------------------------------------------------
# Checks before training
# ----------------------------------------------------------------------------------------------------


def check_configs(configs: Sequence[RunConfig]) -> None:
    """Build-level checks: every dataset can be found, and arch, preset and overrides build a model. Each
    distinct model is built once, on the meta device (:func:`kwlab.experiments.results.meta_model`, whose
    parameter counts :func:`budget_of` then reuses for :func:`log_budgets` and the results table)."""

    for data, root in sorted({(c.data, c.data_root) for c in configs}, key=str):
        try:
            resolve_source(data, root)
        except FileNotFoundError as err:
            raise ConfigError(f"data={data!r}: {err}") from None
    for c in distinct_models(configs):
        try:
            meta_model(c)
        except ConfigError:
            raise
        except Exception as err:  # noqa: BLE001 - surfaced as a config error before training
            raise ConfigError(
                f"arch={c.arch!r} method={c.method!r} preset={c.preset!r}: the model cannot be "
                f"built: {type(err).__name__}: {err}"
            ) from None


def resolve_data(spec: _SweepSpec, configs: Sequence[RunConfig], log=print) -> list[RunConfig]:
    """Replace ``data="auto"`` by the dataset actually used (``cifar10``, or ``synthetic`` with a notice
    that is logged and kept in ``spec.data_notice``, hence in sweep.json, results and report)."""

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
    if (out / _LOCK_NAME).is_dir():
        raise ConfigError(
            f"{out / _LOCK_NAME} is a directory; it must be kwlab's sweep lock file: delete it (rmdir) and "
            f"re-run"
        )
    handle, holder = take_pid_lock(out / _LOCK_NAME)
    if handle is None:
        raise ConfigError(
            f"another sweep is running in {out} (lock {out / _LOCK_NAME} held by {holder}); wait for it to "
            f"finish or use another --out"
        )
    _HELD_LOCKS[key] = handle


def _unlock_out_dir(out: Path) -> None:
    handle = _HELD_LOCKS.pop(str(Path(out).resolve()), None)
    if handle is not None:
        handle.close()  # closing the file releases the flock


def _prepare_out_dir(spec: _SweepSpec, out: Path, log=print) -> None:
    """Lock ``out`` and record the spec in sweep.json.

    A directory of another sweep name, or a non-empty one without sweep.json, is refused -- except one that
    holds only ``runs/``: finished run directories copied in to resume (a committed study's records). The same
    name with
    an edited spec (a changed grid) is accepted: sweep.json keeps every earlier spec (``history``, by spec
    hash), and the results table keeps every finished run directory (``in_current_spec`` marks the runs of
    the current spec).
    """
    meta = out / "sweep.json"
    if not meta.exists() and out.exists() and any(p.name not in (_LOCK_NAME, "runs") for p in out.iterdir()):
        raise ConfigError(f"{out} is not empty and holds no sweep.json: refusing to write a sweep into it")
    out.mkdir(parents=True, exist_ok=True)
    _lock_out_dir(out)
    try:
        record = {"name": spec.name, "spec_hash": _spec_hash(spec), "spec": spec.to_dict()}
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


def _guarded(run):
    """Wrap :func:`run_sweep`: on SIGINT/SIGTERM stop the workers, keep every finished result, write the
    table, release the directory lock and raise :class:`SweepInterrupted` (re-running resumes)."""

    @functools.wraps(run)
    def wrapper(spec, out, *args, log=print, **kwargs):
        out = Path(out)
        caught: list[int] = []

        def handler(signum, frame):
            first = not caught
            caught.append(signum)
            stop_workers()
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
            stop_workers()
            done = 0
            if (out / "sweep.json").exists():
                try:
                    done = len(_collect_results(out))
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


def _adopt_run_dirs(out: Path, configs: Sequence[RunConfig], ids: Sequence[str], log=print) -> None:
    """Rename run directories that hold the training config of a run under another name (named by an
    earlier rule, or by other varying fields) to the run's id, so that they are resumed or reused, not
    trained again. A finished directory is preferred over an unfinished one."""
    runs = out / "runs"
    wanted = {c.training_hash(): i for c, i in zip(configs, ids) if not (runs / i).exists()}
    if not wanted or not runs.exists():
        return
    taken = set(ids)
    found: dict[str, Path] = {}
    for rdir in sorted(p for p in runs.iterdir() if p.is_dir() and p.name not in taken):
        try:
            stored = json.loads((rdir / "config.json").read_text()).get("config_hash")
        except (OSError, json.JSONDecodeError, AttributeError):
            continue
        if stored in wanted and (stored not in found or (rdir / "results.json").exists()):
            found[stored] = rdir
    for key, rdir in found.items():
        target = runs / wanted[key]
        os.replace(rdir, target)
        log(f"run directory {rdir.name} holds run {wanted[key]} (same training config): renamed")


def _set_aside_broken_records(out: Path, ids: Sequence[str], log=print) -> None:
    """A run directory whose results.json or config.json is truncated, empty (``{}``, ``[]``) or missing
    beside a results.json is not a finished run: its records are moved to ``*.corrupt`` (kept for a look)
    and the run is trained again (resumed from its checkpoint where one is left), with a line naming them."""
    for run_id in ids:
        rdir = out / "runs" / run_id
        if not (rdir / "results.json").exists():
            continue
        problem = unreadable_record(rdir)
        if problem is None:
            continue
        moved = []
        for name in ("results.json", "config.json"):
            if (rdir / name).exists():
                os.replace(rdir / name, rdir / f"{name}.corrupt")
                moved.append(f"{name}.corrupt")
        log(
            f"run {run_id}: {problem}: not a finished run; its records are moved to {', '.join(moved)} and "
            f"the run is trained again"
        )


def _warn_short_anneals(results, n_runs: int) -> str | None:
    """Log one warning (the ``kwlab.sweep`` logger; stderr by default) for the runs of the results table
    whose temperature anneal is short, with their count (:func:`kwlab.methods.temperature.anneal_summary`);
    the runs themselves do not print theirs, and each keeps its own ``anneal_note`` in results.json and the
    results table. Returns the warning.

    It comes after the runs: a run's anneal span in optimizer steps needs its loader's length, known once
    the data are loaded."""
    spans, pattern_init = [], False
    if "anneal_note" in results:
        rows = results[results["in_current_spec"]] if "in_current_spec" in results else results
        short = rows[rows["anneal_note"].fillna("").astype(bool)]
        spans = [(int(a), int(t)) for a, t in zip(short["anneal_steps"], short["total_steps"])]
        pattern_init = "attention_init" in short and bool((short["attention_init"] == "pattern").all())
    warning = anneal_summary(spans, n_runs, pattern_init=pattern_init)
    if warning:
        _log.warning("%s", warning)
    return warning


@_guarded
def run_sweep(
    spec: _SweepSpec | str | os.PathLike,
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
        executor: a kind of :data:`EXECUTORS` overriding the spec's ``executor`` section: "sequential"
            (default), "processes" (``workers`` local processes), "torchrun" (each run under torchrun with
            ``workers`` processes, DDP), "submitit" (SLURM via submitit's
            AutoExecutor; options from the spec's section: ``slurm_partition``, ``timeout_min``, ...) or
            "submitit-local" (see :mod:`kwlab.experiments.executors`).
        workers: parallel runs for "processes", processes per run for "torchrun" (default 2).
        progress: tqdm bars.
        overrides: ``--set`` overrides (see :func:`load_sweep`).

    Raises:
        ConfigError: bad config, missing dataset or foreign output directory (before any training).
        RuntimeError: some runs failed (the others finished; see ``runs/<id>/error.txt``).
    """

    if not isinstance(spec, _SweepSpec):
        spec = _load_sweep(spec)
    if overrides:
        _apply_overrides(spec, overrides)
    runner = _make_executor(spec.executor, executor, workers)
    configs = resolve_data(spec, _expand(spec), log)
    check_configs(configs)
    _log_budgets(configs, log)
    out = Path(out)
    _prepare_out_dir(spec, out, log=log)
    ids = _run_ids(configs)
    _adopt_run_dirs(out, configs, ids, log)
    _set_aside_broken_records(out, ids, log)
    todo = [(c, i) for c, i in zip(configs, ids) if not (out / "runs" / i / "results.json").exists()]
    log(
        f"sweep {spec.name!r}: {len(configs)} runs, {len(configs) - len(todo)} already finished, "
        f"{len(todo)} to run ({runner.name}) -> {out}"
    )
    failures: list[str] = []
    bar = tqdm(
        total=len(configs), initial=len(configs) - len(todo), desc=f"sweep {spec.name}", disable=not progress
    )

    def done(run_dir: Path, error: BaseException | None = None) -> None:
        run_id = Path(run_dir).name
        if error is not None:
            failures.append(run_id)
            text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            atomic_write_text(Path(run_dir) / "error.txt", text)
            log(f"run {run_id} failed: {type(error).__name__}: {error}")
        _collect_results(out, ids)
        bar.set_postfix_str(run_id[:40])
        bar.update()

    for _, run_id in todo:
        (out / "runs" / run_id).mkdir(parents=True, exist_ok=True)
        err_file = out / "runs" / run_id / "error.txt"
        if err_file.exists():
            err_file.unlink()
    runner.run([(c, out / "runs" / i) for c, i in todo], done, progress=progress, log=log)
    bar.close()
    df = _collect_results(out, ids)
    _warn_short_anneals(df, len(ids))
    if failures:
        raise RuntimeError(
            f"{len(failures)} of {len(configs)} runs failed: {failures}; see runs/<id>/error.txt. "
            f"Re-run the same command to retry them (finished runs are kept)."
        )
    return df
