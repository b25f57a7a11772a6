"""How a sweep runs its runs: the :class:`Executor` protocol and its kinds (one table, :data:`EXECUTORS`).

An executor receives the runs still to do as ``(config, run_dir)`` pairs and calls ``done(run_dir, error)``
once per run as it finishes (``error`` is None on success); a sweep writes its results table there. Kinds:

* ``sequential``: one run after another in this process (``threads``: torch threads of the runs; default:
  this process's setting);
* ``processes``: ``workers`` local spawned processes, one torch thread each unless ``threads`` says otherwise
  (parallel runs on a shared CPU are fastest and most reproducible single-threaded);
* ``torchrun``: one run after another, each as ``torchrun ... -m kwlab train`` with ``nproc_per_node``
  processes (default 2) of ``threads`` torch threads each (default 1): one run scaled over the GPUs (or
  CPU processes) of this machine with DDP. ``torchrun_args`` replaces the default ``["--standalone"]``
  (e.g. ``["--nnodes=2", "--rdzv_backend=c10d", "--rdzv_endpoint=head:29500"]``, started on every node);
* ``submitit`` (SLURM through submitit's AutoExecutor; ``slurm_partition``, ``timeout_min``,
  ``gpus_per_node``, ``cpus_per_task``, ... are passed on) and ``submitit-local`` (submitit's local
  executor, for testing).

:func:`make_executor` validates a sweep file's ``executor`` section (its kind, ``workers`` and ``threads``)
when the spec loads, before anything runs. A new kind is a class with ``name``, ``from_options`` and
``run``, registered with ``EXECUTORS.register(kind, make)``.
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from kwlab.experiments.config import ConfigError, RunConfig
from kwlab.experiments.train import fit
from kwlab.utils import Registry, suggest

__all__ = [
    "Executor",
    "Sequential",
    "Processes",
    "Submitit",
    "Torchrun",
    "EXECUTORS",
    "make_executor",
    "run_one",
    "stop_workers",
    "die_with_parent",
]

#: ``done(run_dir, error)``: called once per finished run (error None on success).
Done = Callable[[Path, "BaseException | None"], None]
Todo = Sequence[tuple[RunConfig, Path]]
Log = Callable[[str], Any]


class Executor(Protocol):
    """Runs a sweep's remaining runs (see the module docstring)."""

    name: str

    def run(self, todo: Todo, done: Done, *, progress: bool = True, log: Log = print) -> None:
        """Train every ``(config, run_dir)`` of ``todo``; call ``done(run_dir, error)`` as each finishes."""
        ...


def _refuse_unknown(kind: str, options: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    """Refuse executor keys that ``kind`` does not read (a typo would otherwise be ignored)."""
    unknown = sorted(str(k) for k in options if k not in ("kind", *allowed))
    if unknown:
        raise ConfigError(
            f"executor {kind} does not take {unknown}; allowed: {', '.join(allowed)}."
            f"{suggest(unknown[0], allowed)}"
        )


def _threads(options: Mapping[str, Any]) -> int | None:
    threads = options.get("threads")
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(
            f"executor threads must be an integer >= 1 (torch threads per run), got {threads!r}"
        )
    return threads


@dataclass(frozen=True)
class Sequential:
    """One run after another in this process."""

    threads: int | None = None
    name = "sequential"

    @classmethod
    def from_options(cls, options: Mapping[str, Any], workers: int | None = None) -> Sequential:
        _refuse_unknown("sequential", options, ("threads",))
        return cls(threads=_threads(options))

    def run(self, todo: Todo, done: Done, *, progress: bool = True, log: Log = print) -> None:
        previous = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            for config, run_dir in todo:
                try:
                    fit(config, run_dir, progress=progress, anneal_warning=False)  # one for the sweep
                except KeyboardInterrupt:
                    raise
                except Exception as err:  # noqa: BLE001 - recorded, the sweep goes on
                    done(run_dir, err)
                else:
                    done(run_dir, None)
        finally:
            torch.set_num_threads(previous)


@dataclass(frozen=True)
class Processes:
    """``workers`` spawned local processes (one torch thread each unless ``threads`` is given)."""

    workers: int = 2
    threads: int = 1
    name = "processes"

    @classmethod
    def from_options(cls, options: Mapping[str, Any], workers: int | None = None) -> Processes:
        _refuse_unknown("processes", options, ("workers", "threads"))
        count = workers if workers is not None else options.get("workers", 2)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ConfigError(f"workers must be an integer >= 1, got {count!r}")
        return cls(workers=count, threads=_threads(options) or 1)

    def run(self, todo: Todo, done: Done, *, progress: bool = True, log: Log = print) -> None:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx) as pool:
            futures = {pool.submit(run_one, c.to_dict(), str(d), self.threads): d for c, d in todo}
            for fut in as_completed(futures):
                done(futures[fut], fut.exception())


#: The keys of a submitit executor section: kwlab's (kind, workers, threads) and submitit's shared parameters
#: (``slurm_*`` and ``local_*`` ones are passed on as well).
SUBMITIT_KEYS = (
    "kind",
    "workers",
    "threads",
    "timeout_min",
    "mem_gb",
    "nodes",
    "tasks_per_node",
    "cpus_per_task",
    "gpus_per_node",
    "stderr_to_stdout",
    "name",
)


@dataclass(frozen=True)
class Submitit:
    """SLURM jobs through submitit's AutoExecutor (``"submitit-local"``: its LocalExecutor, for tests)."""

    name: str = "submitit"
    threads: int | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_options(
        cls, options: Mapping[str, Any], workers: int | None = None, name: str = "submitit"
    ) -> Submitit:
        unknown = sorted(
            str(k) for k in options if k not in SUBMITIT_KEYS and not str(k).startswith(("slurm_", "local_"))
        )
        if unknown:
            raise ConfigError(
                f"executor {name} does not take {unknown}; allowed: {', '.join(SUBMITIT_KEYS)} and "
                f"submitit's slurm_* / local_* parameters.{suggest(unknown[0], SUBMITIT_KEYS)}"
            )
        params = {k: v for k, v in options.items() if k not in ("kind", "workers", "threads")}
        if name == "submitit-local":
            params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
        params.setdefault("timeout_min", 60 * 24)
        return cls(name=name, threads=_threads(options), parameters=params)

    def run(self, todo: Todo, done: Done, *, progress: bool = True, log: Log = print) -> None:
        import submitit  # noqa: PLC0415 - optional dependency

        if not todo:
            return
        folder = Path(todo[0][1]).parent.parent / "submitit"
        local = self.name == "submitit-local"
        ex = submitit.LocalExecutor(folder=folder) if local else submitit.AutoExecutor(folder=folder)
        ex.update_parameters(**self.parameters)
        jobs = [(ex.submit(run_one, c.to_dict(), str(d), self.threads), d) for c, d in todo]
        log(f"submitted {len(jobs)} jobs (logs in {folder})")
        for job, run_dir in jobs:
            try:
                job.result()
            except Exception as err:  # noqa: BLE001
                done(run_dir, err)
            else:
                done(run_dir, None)


@dataclass(frozen=True)
class Torchrun:
    """One run after another, each launched as ``torchrun [torchrun_args] --nproc_per_node=N -m kwlab train``.

    The run's config is handed over as a YAML file; ``batch_size`` stays the global batch (see the trainer's
    DDP notes); rank 0 writes the run directory, which a failed or interrupted run leaves resumable. A run
    whose torchrun exits non-zero is recorded as failed with the end of its error output.
    """

    nproc_per_node: int = 2
    threads: int = 1
    torchrun_args: tuple[str, ...] = ("--standalone",)
    name = "torchrun"

    @classmethod
    def from_options(cls, options: Mapping[str, Any], workers: int | None = None) -> Torchrun:
        unknown = sorted(set(options) - {"kind", "nproc_per_node", "threads", "torchrun_args"})
        if unknown:
            raise ConfigError(
                f"executor torchrun does not take {unknown}; allowed: nproc_per_node, threads, torchrun_args"
            )
        # ``workers`` (the CLI's --workers) overrides the file's nproc_per_node, as for the processes kind
        count = workers if workers is not None else options.get("nproc_per_node", 2)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ConfigError(f"nproc_per_node must be an integer >= 1 (processes per run), got {count!r}")
        extra = options.get("torchrun_args", ["--standalone"])
        if not isinstance(extra, (list, tuple)) or not all(isinstance(a, str) for a in extra):
            raise ConfigError(f"torchrun_args must be a list of strings, got {extra!r}")
        return cls(nproc_per_node=count, threads=_threads(options) or 1, torchrun_args=tuple(extra))

    def command(self, config_file: Path, run_dir: Path) -> list[str]:
        """The command line of one run."""
        cmd = [sys.executable, "-m", "torch.distributed.run", *self.torchrun_args]
        cmd += [f"--nproc_per_node={self.nproc_per_node}", "-m", "kwlab", "train", str(config_file)]
        return [*cmd, "--out", str(run_dir), "--no-progress"]

    def run(self, todo: Todo, done: Done, *, progress: bool = True, log: Log = print) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads)}
        for config, run_dir in todo:
            with tempfile.TemporaryDirectory(prefix="kwlab-torchrun-") as tmp:
                config_file = Path(tmp) / "config.yaml"
                config_file.write_text(json.dumps(config.to_dict()))  # JSON is YAML
                log(f"torchrun: {run_dir.name} on {self.nproc_per_node} processes")
                # a session of its own: an interrupted sweep kills torchrun and all its workers; a sweep
                # killed outright takes torchrun with it (PR_SET_PDEATHSIG), and torchrun its ranks (the
                # ranks set the same signal on torchrun: kwlab.cli, die_with_parent)
                proc = subprocess.Popen(
                    self.command(config_file, run_dir),
                    env={**env, "KWLAB_DIE_WITH_PARENT": "1"},
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                    start_new_session=True,
                    preexec_fn=die_with_parent if sys.platform.startswith("linux") else None,  # noqa: PLW1509
                )
                try:
                    _, err = proc.communicate()
                except BaseException:
                    _kill_group(proc)
                    raise
            if proc.returncode == 0:
                done(run_dir, None)
            else:
                done(run_dir, RuntimeError(f"torchrun exited with {proc.returncode}:\n{_error_lines(err)}"))


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM torchrun's process group (torchrun and its ranks), then SIGKILL what is left after 30 s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        proc.wait()


def _error_lines(stderr: str | None, tail: int = 12) -> str:
    """The ranks' error lines (``kwlab train: error: ...``, ``SomeError: ...``), then the end of torchrun's
    output."""
    lines = (stderr or "").strip().splitlines()
    pattern = r"^(kwlab \w+: error: |[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b.*:)"
    raised = [line for line in lines if re.match(pattern, line)]
    return "\n".join([*dict.fromkeys(raised), *lines[-tail:]])


#: Every executor kind, by the name a sweep file's ``executor: {kind: ...}`` uses: ``kind -> make(options,
#: workers=None) -> Executor``. A new kind is ``EXECUTORS.register(kind, make)``.
EXECUTORS: Registry[Callable[..., Executor]] = Registry(
    "executor",
    [
        ("sequential", Sequential.from_options),
        ("processes", Processes.from_options),
        ("torchrun", Torchrun.from_options),
        ("submitit", Submitit.from_options),
        (
            "submitit-local",
            lambda options, workers=None: Submitit.from_options(options, workers, "submitit-local"),
        ),
    ],
)


def make_executor(
    options: Mapping[str, Any] | None = None, kind: str | None = None, workers: int | None = None
) -> Executor:
    """The executor of a sweep file's ``executor`` section (``kind`` and ``workers`` override it; a ``kind``
    other than the section's keeps only its ``threads``).

    Raises:
        ConfigError: an unknown kind (with the allowed ones), or ``workers``/``threads`` that are not integers
            >= 1.
    """
    options = dict(options or {})
    if kind is not None and kind != options.get("kind", "sequential"):
        # another kind than the file's (the CLI's --executor): the file's section was written for its own
        # kind, so only the setting every kind shares (threads) carries over
        options = {k: v for k, v in options.items() if k == "threads"}
    kind = kind or options.get("kind", "sequential")
    if kind not in EXECUTORS:
        raise ConfigError(
            f"executor={kind!r} is not allowed; allowed: {list(EXECUTORS)}.{suggest(str(kind), EXECUTORS)}"
        )
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ConfigError(f"workers must be an integer >= 1, got {workers!r}")
    return EXECUTORS[kind](options, workers)


# ------------------------------------------------------------------------------------------ worker side
def run_one(
    config_dict: dict[str, Any], run_dir: str, threads: int | None = None, progress: bool = False
) -> dict[str, Any]:
    """Worker entry point (processes and submitit): train one run, or return its stored results."""
    _die_with_parent()
    if threads:
        torch.set_num_threads(threads)
    config = RunConfig.from_dict(config_dict)
    return fit(config, run_dir, progress=progress)


def stop_workers() -> None:
    """Terminate this process's multiprocessing children (the processes executor's workers)."""

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

    if multiprocessing.parent_process() is None:
        return
    die_with_parent()


def die_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when its parent dies, even by SIGKILL (``PR_SET_PDEATHSIG``;
    nothing elsewhere). Used by the processes executor's workers, as the ``preexec_fn`` of the torchrun
    executor's torchrun, and by ``kwlab train`` ranks started by it (``KWLAB_DIE_WITH_PARENT=1``)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - no prctl
        pass
