"""Reading datasets into uint8 arrays: CIFAR python batches (through an unpickler that admits only what
the format holds) and ImageFolder trees or zips (decoded once with PIL, resized and centre-cropped, and
cached as ``.npy`` under :func:`cache_dir`).

:func:`kwlab.experiments.data.load_data` is the front door; where each dataset lives is
:mod:`kwlab.experiments.data_sources`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from kwlab.utils import atomic_write
from kwlab.utils import progress_bar as tqdm

__all__ = [
    "DatasetNotFoundError",
    "IMAGE_SUFFIXES",
    "UnsafeDataError",
    "cache_dir",
    "find_split_base",
    "list_dir",
    "parse_classes",
    "read_cifar_batch",
    "read_cifar_pickle",
    "read_imagefolder",
    "subset",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
_CACHE_VERSION = 1


class DatasetNotFoundError(FileNotFoundError):
    """A dataset could not be found (nor downloaded); the message says where it looked."""


def cache_dir() -> Path:
    """Where decoded uint8 caches live: ``$KWLAB_CACHE`` or ``./data/cache``."""
    return Path(os.environ.get("KWLAB_CACHE", "data/cache")).expanduser()


class UnsafeDataError(ValueError):
    """A data file holds something its format never holds (for a pickle: a call to arbitrary code)."""


#: The only globals a CIFAR python batch refers to: numpy's array reconstruction (numpy 1 and 2 names)
#: and, in protocol-2 pickles written by Python 3, ``_codecs.encode`` (how such pickles spell bytes).
_CIFAR_GLOBALS = {
    (module, name)
    for prefix in ("numpy.core", "numpy._core")
    for module, name in (
        (f"{prefix}.multiarray", "_reconstruct"),
        (f"{prefix}.multiarray", "scalar"),
        (f"{prefix}.numeric", "_frombuffer"),
    )
} | {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}  # encode: bytes in protocol 2


class _CifarUnpickler(pickle.Unpickler):
    """Admits dicts, lists, tuples, bytes, str, numbers and numpy arrays -- what the CIFAR format holds."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _CIFAR_GLOBALS:
            raise UnsafeDataError(f"GLOBAL {module}.{name}")
        if module.startswith("numpy.core") and int(np.__version__.split(".")[0]) >= 2:
            module = "numpy._core" + module[len("numpy.core") :]  # same function, no deprecation shim
        return super().find_class(module, name)


def read_cifar_batch(path: Path) -> dict:
    """Read one CIFAR python batch with a restricted unpickler (nothing in the file can run code).

    Raises:
        UnsafeDataError: the file refers to anything but numpy arrays and plain containers.
        DatasetNotFoundError: the file is missing. ValueError: truncated or not a pickle.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"CIFAR batch {path} is missing")
    try:
        with open(path, "rb") as f:
            obj = _CifarUnpickler(f, encoding="latin1").load()
    except UnsafeDataError as err:
        raise UnsafeDataError(
            f"{path} is not a CIFAR batch: its pickle calls {str(err).removeprefix('GLOBAL ')}, which the "
            f"CIFAR format never holds; refusing to load it (kwlab admits only dicts, lists, bytes, str, "
            f"numbers and numpy arrays). Replace the file with the original CIFAR download"
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError) as err:
        raise ValueError(
            f"{path} is not a readable CIFAR batch ({type(err).__name__}: {err}); it is truncated or "
            f"corrupt: download the dataset again"
        ) from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path} is not a CIFAR batch: it holds a {type(obj).__name__}, not a dict")
    return obj


def read_cifar_pickle(folder: Path, key: str) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    load = read_cifar_batch

    if key == "cifar10":
        files = {"train": [folder / f"data_batch_{i}" for i in range(1, 6)], "test": [folder / "test_batch"]}
        label_key, meta_file, names_key = "labels", folder / "batches.meta", "label_names"
    else:
        files = {"train": [folder / "train"], "test": [folder / "test"]}
        label_key, meta_file, names_key = "fine_labels", folder / "meta", "fine_label_names"
    out = {}
    for split, paths in files.items():
        xs, ys = [], []
        for p in paths:
            d = load(p)
            if "data" not in d or label_key not in d:
                raise ValueError(f"{p} is not a CIFAR batch: it has no 'data' or {label_key!r} entry")
            xs.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            ys.append(np.asarray(d[label_key], dtype=np.int64))
        out[split] = (np.concatenate(xs), np.concatenate(ys))
    classes = list(load(meta_file)[names_key])
    return out, classes


def list_dir(path: Path) -> list[str]:
    return sorted(
        str(p.relative_to(path)).replace(os.sep, "/")
        for p in path.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def _list_zip(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as zf:
            return sorted(n for n in zf.namelist() if n.lower().endswith(IMAGE_SUFFIXES))
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise ValueError(f"{path} is not a readable zip file ({err}): truncated or corrupt") from None


def find_split_base(names: Sequence[str]) -> tuple[str, str, str] | None:
    """Find ``(prefix, train_dir, test_dir)`` such that files are ``prefix + split/<class>/<file>``."""
    splits: dict[str, set[str]] = {}
    for n in names:
        parts = n.split("/")
        if len(parts) < 3:
            continue
        prefix = "/".join(parts[:-3]) + "/" if len(parts) > 3 else ""
        splits.setdefault(prefix, set()).add(parts[-3])
    for prefix in sorted(splits, key=len):
        found = splits[prefix]
        if "train" in found:
            for test in ("val", "test", "valid", "validation"):
                if test in found:
                    return prefix, "train", test
    return None


def parse_classes(classes: str | Sequence[str] | None) -> list[str] | None:
    if classes is None:
        return None
    if isinstance(classes, str):
        p = Path(classes).expanduser()
        if p.is_file():
            items = [
                ln.split()[0] for ln in p.read_text().splitlines() if ln.strip() and not ln.startswith("#")
            ]
        else:
            items = [c.strip() for c in classes.split(",") if c.strip()]
    else:
        items = [str(c) for c in classes]
    if not items:
        raise ValueError(f"classes={classes!r} names no class")
    return items


def subset(n: int, cap: int | None, seed: int) -> np.ndarray:
    """Indices of a fixed random subset of size ``cap`` (all, in order, when no cap)."""
    if cap is None or cap >= n:
        return np.arange(n)
    g = torch.Generator().manual_seed(1_000_003 + int(seed))
    return np.sort(torch.randperm(n, generator=g)[:cap].numpy())


def _decode(blob: bytes, size: int) -> np.ndarray:
    from PIL import Image  # noqa: PLC0415 - only the cache builder decodes

    img = Image.open(io.BytesIO(blob)).convert("RGB")
    w, h = img.size
    if (w, h) != (size, size):
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        img = img.resize((nw, nh), Image.BILINEAR)
        left, top = (nw - size) // 2, (nh - size) // 2
        img = img.crop((left, top, left + size, top + size))
    return np.asarray(img, dtype=np.uint8)


def _build_folder_split(path: Path, names: list[str], size: int, desc: str) -> np.ndarray:
    out = np.empty((len(names), size, size, 3), dtype=np.uint8)
    if path.is_file():
        with zipfile.ZipFile(path) as zf:
            for i, n in enumerate(tqdm(names, desc=desc, leave=False, mininterval=1.0)):
                try:
                    out[i] = _decode(zf.read(n), size)
                except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError) as err:
                    raise ValueError(
                        f"{path}: member {n!r} cannot be read ({type(err).__name__}: {err}); the zip is "
                        f"truncated or corrupt"
                    ) from None
    else:
        for i, n in enumerate(tqdm(names, desc=desc, leave=False, mininterval=1.0)):
            try:
                out[i] = _decode((path / n).read_bytes(), size)
            except (OSError, ValueError) as err:
                raise ValueError(
                    f"{path / n} cannot be decoded as an image ({type(err).__name__}: {err})"
                ) from None
    return out


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append ".npy" to a path
            np.save(f, array)

    atomic_write(path, write)


def read_imagefolder(
    path: Path,
    *,
    size: int,
    caps: dict[str, int | None],
    classes: list[str] | None,
    seed: int,
    use_cache: bool,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    names = _list_zip(path) if path.is_file() else list_dir(path)
    base = find_split_base(names)
    if base is None:
        raise DatasetNotFoundError(
            f"{path} is not an ImageFolder tree: expected <root>/train/<class>/<image> and "
            f"<root>/val/<class>/<image> (or test/); found {len(names)} images"
        )
    prefix, train_dir, test_dir = base
    by_split: dict[str, list[tuple[str, str]]] = {"train": [], "test": []}
    for n in names:
        if not n.startswith(prefix):
            continue
        parts = n[len(prefix) :].split("/")
        if len(parts) != 3:
            continue
        split = {train_dir: "train", test_dir: "test"}.get(parts[0])
        if split is not None:
            by_split[split].append((parts[1], n))
    all_classes = sorted({c for c, _ in by_split["train"]})
    if classes is not None:
        missing = [c for c in classes if c not in all_classes]
        if missing:
            raise ValueError(
                f"classes: {missing[:5]} not in {path} (it has {len(all_classes)} classes, e.g. "
                f"{all_classes[:5]})"
            )
        keep = sorted(set(classes))
    else:
        keep = all_classes
    index = {c: i for i, c in enumerate(keep)}
    stat = path.stat()
    out = {}
    for split in ("train", "test"):
        items = [(c, n) for c, n in by_split[split] if c in index]
        sel = subset(len(items), caps[split], seed)
        items = [items[i] for i in sel]
        labels = np.asarray([index[c] for c, _ in items], dtype=np.int64)
        key = json.dumps(
            [
                _CACHE_VERSION,
                str(path.resolve()),
                stat.st_size,
                int(stat.st_mtime),
                split,
                size,
                [n for _, n in items][:: max(1, len(items) // 64)],
                len(items),
                keep,
            ]
        )
        digest = hashlib.sha1(key.encode()).hexdigest()[:16]
        cfile = cache_dir() / f"{path.stem}-{split}-{size}px-{len(items)}-{digest}.npy"
        if use_cache and cfile.exists():
            images = np.load(cfile, mmap_mode="r")
        else:
            images = _build_folder_split(path, [n for _, n in items], size, f"decode {path.name}:{split}")
            if use_cache:
                cfile.parent.mkdir(parents=True, exist_ok=True)
                _atomic_save_npy(cfile, images)
        out[split] = (images, labels)
    return out, keep
