"""Small helpers shared across kwlab."""

from __future__ import annotations

import difflib
import os
import pickletools
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch
from torch import nn

__all__ = [
    "count_parameters",
    "count_macs",
    "git_revision",
    "suggest",
    "atomic_write",
    "atomic_write_text",
    "table_format",
    "write_table",
    "read_table",
    "atomic_torch_save",
    "load_torch_file",
    "CheckpointError",
    "progress_bar",
    "moved_names",
    "Registry",
]

V = TypeVar("V")


class CheckpointError(ValueError):
    """A checkpoint file cannot be read: missing, empty, truncated, or it holds code (pickled calls)."""


def moved_names(module: str, homes: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for public names that left ``module``: each of ``homes`` (name -> the module
    to import it from) raises an ImportError naming its one home; no name is served from the old address.
    The returned function carries the table as ``moved`` (the one list of old addresses: tests read it)."""

    def __getattr__(name: str) -> Any:
        if name in homes:
            raise ImportError(
                f"{module}.{name} moved to {homes[name]}: from {homes[name]} import {name}",
                name=module,
            )
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    __getattr__.moved = dict(homes)
    return __getattr__


def suggest(value: str, options: Iterable[str]) -> str:
    """`` Did you mean 'x'?`` for the closest of ``options``, or ``""`` (the one did-you-mean helper)."""
    close = difflib.get_close_matches(str(value), [str(o) for o in options], n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


class Registry(Mapping[str, V], Generic[V]):
    """A named table with one way to extend it: :meth:`register` (a duplicate name is refused).

    Read it as a mapping (``table[name]``, ``name in table``, ``table.get(name)``, iteration in the order of
    registration); an unknown name raises a ``KeyError`` that names the allowed ones and the closest
    (:func:`suggest`). kwlab's tables are registries: the methods (:data:`kwlab.methods.METHODS`), the models
    (:func:`kwlab.models.register_model`), the sweep executors (:data:`kwlab.experiments.executors.EXECUTORS`)
    and the probe's statistics (:data:`kwlab.instruments.statistics.STATISTICS`).
    """

    def __init__(self, kind: str, entries: Mapping[str, V] | Iterable[tuple[str, V]] = ()) -> None:
        self.kind = kind
        # the table's home is the module that made it (its one import address), not this class's module
        self.__module__ = sys._getframe(1).f_globals.get("__name__", __name__)
        self._entries: dict[str, V] = {}
        for name, value in entries.items() if isinstance(entries, Mapping) else entries:
            self.register(name, value)

    def register(self, name: str, value: V) -> V:
        """Add ``value`` under ``name``; returns ``value``.

        Raises:
            ValueError: ``name`` is not a non-empty string, or is registered already.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        if name in self._entries:
            raise ValueError(
                f"{self.kind} {name!r} is already registered; choose another name (or unregister it first)"
            )
        self._entries[name] = value
        return value

    def unregister(self, name: str) -> V:
        """Remove ``name`` and return its value (undoes :meth:`register`, e.g. at the end of a test)."""
        value = self[name]
        del self._entries[name]
        return value

    def unknown(self, name: Any) -> str:
        """The message for an unknown ``name``: the allowed names and the closest of them."""
        allowed = list(self._entries)
        return f"unknown {self.kind} {name!r}; allowed: {allowed}.{suggest(str(name), allowed)}"

    def __getitem__(self, name: str) -> V:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise KeyError(self.unknown(name)) from None

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._entries
        except TypeError:  # an unhashable name is no entry
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared parameters counted once, as ``model.parameters()`` yields them)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def git_revision(path: str | Path | None = None) -> str:
    """The git commit of the kwlab checkout (or of ``path``), ``-dirty`` if modified; else "unknown"."""
    cwd = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        if rev.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass on a zero input of ``input_shape`` (e.g. (1, 3, 32, 32)).

    Counted with :class:`torch.utils.flop_counter.FlopCounterMode` (MACs = FLOPs / 2) in eval mode, so it
    includes the attention and the kernel assembly of dynamic layers.
    """
    from torch.utils.flop_counter import FlopCounterMode  # noqa: PLC0415 - torch's FlopCounterMode, needed only when MACs are counted

    was_training = model.training
    model.eval()
    p = next(model.parameters(), None)
    x = torch.zeros(*input_shape, device=p.device if p is not None else "cpu")
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // 2


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Write ``path`` so that readers see the old or the new file, never a partial one: ``write(tmp)`` fills
    a temporary file beside ``path``, which is fsync'ed and then moved over ``path`` (``os.replace``). The
    temporary file is removed when ``write`` fails. The one temp-file-and-rename of kwlab; returns
    ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`atomic_write`)."""
    atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` atomically (:func:`atomic_write`): a crash leaves the old or the new
    file."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def table_format() -> str:
    """``"parquet"`` when pyarrow is installed, else ``"csv"``: the format kwlab writes its tables in."""
    try:
        import pyarrow  # noqa: F401, PLC0415 - optional dependency
    except ImportError:
        return "csv"
    return "parquet"


TABLE_SUFFIXES = (".parquet", ".csv")


def write_table(df: Any, path: str | os.PathLike) -> Path:
    """Write the DataFrame ``df`` atomically to ``path``, as Parquet or CSV by its suffix (no index); the
    one table writer of kwlab. A path without a suffix gets :func:`table_format`'s."""
    path = Path(path)
    if path.suffix not in TABLE_SUFFIXES:
        path = path.with_name(f"{path.name}.{table_format()}")
    if path.suffix == ".parquet":
        arrow_ready = _one_type_per_column(df)
        return atomic_write(path, lambda tmp: arrow_ready.to_parquet(tmp, index=False))
    return atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))


def _one_type_per_column(df: Any) -> Any:
    """``df`` with every column of mixed value types (``amp``: False and "bf16"; ``threads``: 2 and
    "unknown") written as text, as CSV writes it ("False", "bf16"), so that Parquet (one type a column) takes
    it; missing values stay missing. :func:`kwlab.experiments.reproduce.recorded_config` reads such text back
    as the values the config held. Columns of one type are left as they are."""
    mixed = []
    for column in df.columns:
        if df[column].dtype != object:
            continue
        kinds = {type(v) for v in df[column] if v is not None and not (isinstance(v, float) and v != v)}
        if len(kinds) > 1:
            mixed.append(column)
    if not mixed:
        return df
    df = df.copy()
    for column in mixed:
        df[column] = [v if v is None or (isinstance(v, float) and v != v) else str(v) for v in df[column]]
    return df


def read_table(path: str | os.PathLike) -> Any:
    """Read a table written by :func:`write_table`; a path without a suffix reads ``path.parquet`` or else
    ``path.csv``.

    Raises:
        FileNotFoundError: neither file exists (the message names both).
    """
    import pandas as pd  # noqa: PLC0415 - kwlab.utils stays light to import

    path = Path(path)
    if path.suffix in TABLE_SUFFIXES:
        candidates = [path]
    else:
        candidates = [path.with_name(path.name + suffix) for suffix in TABLE_SUFFIXES]
    for candidate in candidates:
        if candidate.exists():
            return pd.read_parquet(candidate) if candidate.suffix == ".parquet" else pd.read_csv(candidate)
    raise FileNotFoundError(f"no table {' or '.join(str(c) for c in candidates)}")


_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def load_torch_file(
    path: str | os.PathLike, *, map_location: Any = "cpu", allowed: Sequence[Any] = ()
) -> Any:
    """``torch.load(path, weights_only=True)`` with errors that name the file and the problem.

    Args:
        path: the checkpoint file.
        map_location: as for ``torch.load``.
        allowed: extra classes admitted by the weights-only unpickler (``torch.serialization.safe_globals``).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: a directory, an empty or truncated file, or a pickle that calls Python code (such a
            file is refused; kwlab never loads checkpoints with the weights-only check off).
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint file; give the path of the file")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): it was never written completely")
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - every failure becomes one clear message
        text = str(err)
        found = _GLOBAL.search(text)
        calls = [found.group(1)] if found else _pickled_calls(path)
        if calls:  # None: not a readable pickle; []: a pickle without imports
            name = ", ".join(calls[:3])
            raise CheckpointError(
                f"{path} holds code, not only weights: its pickle calls {name}. kwlab refuses to load it "
                f"(checkpoints are read with the weights-only unpickler, which admits tensors and plain "
                f"containers only). Do not use this file unless you know who made it and why."
            ) from None
        detail = next(
            (ln.strip() for ln in text.splitlines() if ln.strip().startswith(("Unsupported", "Trying"))),
            None,
        )
        if "Weights only load failed" in text and calls is not None:  # a pickle, of objects, not code
            raise CheckpointError(
                f"{path} holds pickled objects that are not plain weights (the weights-only unpickler "
                f"stopped: {detail}). kwlab refuses it and never loads checkpoints with the weights-only "
                f"check off; re-save the weights as a plain state_dict of tensors."
            ) from None
        # torch's advice to turn the weights-only check off is never repeated
        first = detail or next((ln.strip() for ln in text.splitlines() if ln.strip()), "no message")
        raise CheckpointError(
            f"could not read {path} as a PyTorch checkpoint with weights_only=True "
            f"({type(err).__name__}: {first[:200]}); the file is truncated, corrupt or not a checkpoint"
        ) from None


def _pickled_calls(path: Path) -> list[str] | None:
    """The ``module.name`` globals (other than torch's own) a pickle (raw, or a torch zip's ``data.pkl``)
    would import, read with :mod:`pickletools` without running anything; None if it is no readable pickle."""

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                member = next((n for n in zf.namelist() if n.endswith("data.pkl")), None)
                data = zf.read(member) if member else b""
        else:
            data = path.read_bytes()
        found, strings = [], []
        for op, arg, _ in pickletools.genops(data):
            if op.name == "GLOBAL":
                found.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                strings.append(arg)
    except Exception:  # noqa: BLE001 - not a pickle (truncated, corrupt, another format)
        return None
    safe = ("torch.", "collections.OrderedDict", "argparse.Namespace", "_codecs.encode", "builtins.set")
    return [g for g in dict.fromkeys(found) if not g.startswith(safe)]


def _in_jupyter_kernel() -> bool:
    shell = sys.modules.get("IPython")
    ip = shell.get_ipython() if shell is not None and hasattr(shell, "get_ipython") else None
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def progress_bar(iterable: Iterable | None = None, **kwargs: Any):
    """The one progress bar of kwlab: a tqdm bar that shows in a terminal *and* in JupyterLab.

    In a Jupyter kernel it is a plain-text bar on stdout, updated in place (no widget: a saved notebook
    keeps the bar's last line instead of "Error displaying widget: model not found", and it shows while a
    long cell runs); elsewhere the ordinary text bar on stderr. ``$KWLAB_PROGRESS=widget`` asks for
    tqdm's notebook widget instead, ``off`` hides every bar. Arguments are tqdm's.
    """

    mode = os.environ.get("KWLAB_PROGRESS", "").strip().lower()
    if mode == "off":
        kwargs["disable"] = True
    if mode == "widget":
        from tqdm.auto import tqdm  # noqa: PLC0415 - tqdm (the lab extra): loaded when a bar is drawn

        return tqdm(iterable, **kwargs)
    from tqdm.std import tqdm  # noqa: PLC0415 - tqdm (the lab extra): loaded when a bar is drawn

    if _in_jupyter_kernel():
        kwargs.setdefault("file", sys.stdout)
        kwargs.setdefault("ncols", 90)
        # nested bars (sweep > run > epoch) share one line: a notebook's output cannot move the cursor
        # up, so tqdm's multi-line layout would print escape codes; the line shows the latest bar
        kwargs["position"] = 0
        kwargs["mininterval"] = max(float(kwargs.get("mininterval", 1.0)), 1.0)
    return tqdm(iterable, **kwargs)


def take_pid_lock(path: str | os.PathLike) -> tuple[Any, str | None]:
    """Open ``path`` and take an exclusive advisory lock (``fcntl.flock``) without waiting. Returns
    ``(handle, None)`` with this process's pid written into the file (the lock is held until ``handle`` is
    closed, and goes with its process even when killed outright), or ``(None, holder)`` when another live
    process holds it (``holder``: the pid line that process wrote). Without advisory locks on the platform
    the lock is always taken."""
    handle = open(path, "a+")  # noqa: SIM115 - held by the caller while it writes
    try:
        import fcntl  # noqa: PLC0415 - POSIX only

        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # pragma: no cover - no advisory locks on this platform
        pass
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        return None, holder
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    return handle, None
