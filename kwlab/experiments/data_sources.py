"""Where a dataset lives: the data roots searched (:func:`data_roots`), what ``data="auto"`` means on this
machine (:func:`resolve_auto`), and the file or folder a dataset name resolves to (:func:`resolve_source`),
downloading CIFAR with torchvision when allowed.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from kwlab.experiments.data_readers import DatasetNotFoundError, find_split_base, list_dir

__all__ = ["CIFAR_FOLDERS", "DATASET_NAMES", "data_roots", "resolve_auto", "resolve_source"]

#: The dataset names ``RunConfig.data`` accepts besides a path.
DATASET_NAMES = ("auto", "synthetic", "cued", "cifar10", "cifar100")
CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
_CIFAR_ZIPS = {"cifar10": ("cifar10-jpg.zip", "cifar10-jpg", "cifar10")}


def data_roots(root: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for named datasets, in order: ``root``, ``$KWLAB_DATA``, ``./data``."""
    roots: list[Path] = []
    for candidate in (root, os.environ.get("KWLAB_DATA"), "data", _torch_datasets_dir()):
        if candidate:
            p = Path(candidate).expanduser()
            if p not in roots:
                roots.append(p)
    return roots


def _torch_datasets_dir() -> str:
    """The torchvision download cache: ``$TORCH_HOME/datasets`` (default ``~/.cache/torch/datasets``)."""
    return str(Path(os.environ.get("TORCH_HOME", "~/.cache/torch")).expanduser() / "datasets")


def _online(host: str = "www.cs.toronto.edu", timeout: float = 3.0) -> bool:
    """Whether the CIFAR download host can be reached (never when ``$KWLAB_DOWNLOAD`` is ``0``)."""
    if os.environ.get("KWLAB_DOWNLOAD", "1").strip().lower() in ("0", "no", "false", "off"):
        return False

    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_auto(root: str | os.PathLike | None = None, *, download: bool = True) -> tuple[str, str]:
    """What ``data="auto"`` means here: ``("cifar10", "")`` when CIFAR-10 is found (``root``,
    ``$KWLAB_DATA``, ``./data``, the torchvision cache) or can be downloaded (internet, and
    ``$KWLAB_DOWNLOAD`` not ``0``); else ``("synthetic", notice)`` with a notice saying why."""
    try:
        resolve_source("cifar10", root, download=False)
        return "cifar10", ""
    except DatasetNotFoundError as err:
        missing = str(err)
    if download and _online():
        try:
            resolve_source("cifar10", root, download=True)
            return "cifar10", ""
        except DatasetNotFoundError as err:
            missing = str(err)
    looked = missing.split("; looked in: ")[-1].split("; download")[0]
    notice = (
        "NOTICE: data=auto found no CIFAR-10 (looked in: " + looked + "; no download possible) and uses "
        "SYNTHETIC images instead: accuracies are not CIFAR-10 accuracies. Set KWLAB_DATA to a folder "
        "holding cifar10-jpg.zip or cifar-10-batches-py."
    )
    return "synthetic", notice


def resolve_source(
    name: str, root: str | os.PathLike | None = None, *, download: bool = True
) -> tuple[str, Path]:
    """Find where dataset ``name`` lives.

    Returns:
        ``(kind, path)`` with kind ``"synthetic"``, ``"cued"``, ``"cifar-pickle"`` or ``"imagefolder"``.

    Raises:
        DatasetNotFoundError: nothing found and the download failed or was not allowed.
    """
    key = name.lower()
    if key == "auto":
        key = name = resolve_auto(root, download=download)[0]
    if key in ("synthetic", "cued"):
        return key, Path("")
    if key in CIFAR_FOLDERS:
        looked: list[str] = []
        roots = data_roots(root)
        for r in roots:
            folder = r / CIFAR_FOLDERS[key]
            looked.append(str(folder))
            if (folder / ("test_batch" if key == "cifar10" else "test")).exists():
                return "cifar-pickle", folder
        for r in roots:
            for alt in _CIFAR_ZIPS.get(key, ()):
                p = r / alt
                looked.append(str(p))
                if p.is_file() or (p.is_dir() and find_split_base(list_dir(p)) is not None):
                    return "imagefolder", p
        if download:
            target = roots[0]
            try:
                _download_cifar(key, target)
            except Exception as err:  # offline, no torchvision, ...
                reason = f"download into {target} failed ({type(err).__name__}: {err})"
            else:
                return "cifar-pickle", target / CIFAR_FOLDERS[key]
        else:
            reason = "download disabled"
        raise DatasetNotFoundError(
            f"dataset {name!r} not found; looked in: {', '.join(looked)}; {reason}. Get it with "
            f'`python -c "import torchvision; '
            f"torchvision.datasets.{key.upper()}('{roots[0]}', download=True)\"` "
            f"on a machine with internet, or put the python-pickle folder {CIFAR_FOLDERS[key]!r} "
            f"(or, for CIFAR-10, cifar10-jpg.zip) under one of those folders, or set KWLAB_DATA."
        )
    path = Path(name).expanduser()
    if not path.exists():
        for r in data_roots(root):
            if (r / name).exists():
                path = r / name
                break
    if not path.exists():
        raise DatasetNotFoundError(
            f"data={name!r} is not one of {DATASET_NAMES} and no such file or folder exists (also looked "
            f"under {', '.join(str(r) for r in data_roots(root))}). Give a path to an ImageFolder directory "
            f"or .zip with train/ and val/ (or test/) folders."
        )
    return "imagefolder", path


def _download_cifar(key: str, root: Path) -> None:
    from kwlab._compat import import_torchvision  # noqa: PLC0415 - optional dependency

    tv = import_torchvision()
    cls = tv.datasets.CIFAR10 if key == "cifar10" else tv.datasets.CIFAR100
    root.mkdir(parents=True, exist_ok=True)
    cls(str(root), train=True, download=True)
    cls(str(root), train=False, download=True)
