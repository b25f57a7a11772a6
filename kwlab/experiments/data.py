"""Image datasets for experiments: decode once into a uint8 cache, serve from (device) memory.

The design follows airbench's ``CifarLoader``: images are decoded with PIL exactly once, by the cache
builder, into a ``uint8`` array ``(N, H, W, 3)`` stored under ``data/cache/`` (or ``$KWLAB_CACHE``).
Training then reads that array from memory (GPU memory when training on a GPU) and augments whole
batches on the device -- random crop with zero padding and horizontal flip -- so the epoch loop does
no per-image Python work.

Dataset names (``RunConfig.data``):

* ``"auto"`` (the default) -- CIFAR-10 wherever it is found (see :func:`resolve_auto`), else synthetic
  images with a visible notice;
* ``"synthetic"`` -- generated in code, deterministic from a seed (see :func:`synthetic_images`);
* ``"cifar10"`` / ``"cifar100"`` -- the standard python-pickle folders (``cifar-10-batches-py``,
  ``cifar-100-python``) under the data root; for CIFAR-10 also ``cifar10-jpg.zip`` (the 60,000
  JPEGs in ImageFolder layout). The root is the ``root`` argument, else ``$KWLAB_DATA``, else
  ``./data``. When nothing is found, torchvision's downloader is tried; offline, the error says
  where it looked and how to get the data;
* a path to an ImageFolder directory or ``.zip`` of one, holding ``train/`` and ``val/`` (or
  ``test/``) folders of ``<class>/<image>`` files (Imagenette, Imagewoof, ImageNet-100 with a class
  list). Images are resized (shorter side) and centre-cropped to ``image_size`` when cached.

Explained in notebooks/03_train_cifar.ipynb.
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from kwlab.experiments.loader import DeviceLoader
from kwlab.utils import atomic_write

__all__ = [
    "ImageData",
    "DeviceLoader",
    "DatasetNotFoundError",
    "UnsafeDataError",
    "read_cifar_batch",
    "load_data",
    "synthetic_images",
    "data_roots",
    "resolve_source",
    "resolve_auto",
    "DATASET_NAMES",
]

DATASET_NAMES = ("auto", "synthetic", "cifar10", "cifar100")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
_CACHE_VERSION = 1


class DatasetNotFoundError(FileNotFoundError):
    """A dataset could not be found (nor downloaded); the message says where it looked."""


@dataclass
class ImageData:
    """A dataset held as uint8 arrays.

    Attributes:
        name: dataset name or path.
        train_images: ``(N, H, W, 3)`` uint8.
        train_labels: ``(N,)`` int64.
        test_images: ``(M, H, W, 3)`` uint8.
        test_labels: ``(M,)`` int64.
        classes: class names, index = label.
        mean, std: per-channel statistics of the training images in [0, 1].
    """

    name: str
    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    classes: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return int(self.train_images.shape[1])

    def __repr__(self) -> str:
        return (
            f"ImageData({self.name!r}, train={tuple(self.train_images.shape)}, "
            f"test={tuple(self.test_images.shape)}, classes={self.num_classes})"
        )


# ----------------------------------------------------------------------------------------------------
# Synthetic data
# ----------------------------------------------------------------------------------------------------


def synthetic_images(
    num_samples: int, *, num_classes: int = 10, image_size: int = 32, seed: int = 0, noise: float = 0.2
) -> tuple[Tensor, Tensor]:
    """Class-dependent oriented gratings in class colours plus noise, deterministic from ``seed``.

    Class ``c`` draws a sinusoidal grating at orientation ``pi * c / num_classes`` with a random
    phase, frequency jitter and position of a soft circular window, tinted with a class colour (70%)
    blended with a random colour (30%); Gaussian noise is added. A small CNN learns it in a few epochs,
    a linear model on raw pixels does not (random phase).

    Args:
        num_samples: N.
        num_classes: K.
        image_size: S (images are S x S).
        seed: generator seed; the same seed gives the same images bit for bit.
        noise: std of the additive Gaussian noise (image range [0, 1]).

    Returns:
        images ``(N, S, S, 3)`` uint8 and labels ``(N,)`` int64 (balanced: ``i % K`` then shuffled).
    """
    if num_samples < 1 or num_classes < 2 or image_size < 4:
        raise ValueError(
            f"synthetic_images needs num_samples >= 1, num_classes >= 2, image_size >= 4; got "
            f"{num_samples}, {num_classes}, {image_size}"
        )
    g = torch.Generator().manual_seed(int(seed))
    n, k, s = num_samples, num_classes, image_size
    labels = torch.arange(n) % k
    labels = labels[torch.randperm(n, generator=g)]
    theta = torch.pi * labels.double() / k + 0.08 * torch.randn(n, generator=g, dtype=torch.float64)
    freq = (2.5 + 0.5 * torch.rand(n, generator=g, dtype=torch.float64)) / s * 2.0
    phase = 2 * torch.pi * torch.rand(n, generator=g, dtype=torch.float64)
    coords = torch.arange(s, dtype=torch.float64) - (s - 1) / 2
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")  # (S, S)
    proj = xx[None] * torch.cos(theta)[:, None, None] + yy[None] * torch.sin(theta)[:, None, None]
    grating = torch.sin(2 * torch.pi * freq[:, None, None] * proj + phase[:, None, None])  # (N, S, S)
    centre = (torch.rand(n, 2, generator=g, dtype=torch.float64) - 0.5) * s * 0.4
    radius = s * (0.3 + 0.2 * torch.rand(n, generator=g, dtype=torch.float64))
    dist2 = (xx[None] - centre[:, 0, None, None]) ** 2 + (yy[None] - centre[:, 1, None, None]) ** 2
    window = torch.sigmoid((radius[:, None, None] ** 2 - dist2) / (0.5 * s))  # (N, S, S)
    hue = torch.arange(k, dtype=torch.float64) / k
    palette = 0.5 + 0.5 * torch.stack([torch.cos(2 * torch.pi * (hue + o)) for o in (0.0, 1 / 3, 2 / 3)], 1)
    random_colour = torch.rand(n, 3, generator=g, dtype=torch.float64)
    colour = 0.7 * palette[labels] + 0.3 * random_colour  # (N, 3)
    background = 0.5 * torch.rand(n, 1, 1, 3, generator=g, dtype=torch.float64)
    pattern = (0.5 + 0.5 * grating * window)[..., None]  # (N, S, S, 1)
    img = background * (1 - window[..., None]) + pattern * colour[:, None, None, :] * window[..., None]
    img = img + noise * torch.randn(n, s, s, 3, generator=g, dtype=torch.float64)
    images = (img.clamp(0, 1) * 255).round().to(torch.uint8)
    return images, labels.long()


# ----------------------------------------------------------------------------------------------------
# Locating data
# ----------------------------------------------------------------------------------------------------


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
    import socket  # noqa: PLC0415

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


def cache_dir() -> Path:
    """Where decoded uint8 caches live: ``$KWLAB_CACHE`` or ``./data/cache``."""
    return Path(os.environ.get("KWLAB_CACHE", "data/cache")).expanduser()


_CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
_CIFAR_ZIPS = {"cifar10": ("cifar10-jpg.zip", "cifar10-jpg", "cifar10")}


def resolve_source(
    name: str, root: str | os.PathLike | None = None, *, download: bool = True
) -> tuple[str, Path]:
    """Find where dataset ``name`` lives.

    Returns:
        ``(kind, path)`` with kind ``"synthetic"``, ``"cifar-pickle"`` or ``"imagefolder"``.

    Raises:
        DatasetNotFoundError: nothing found and the download failed or was not allowed.
    """
    key = name.lower()
    if key == "auto":
        key = name = resolve_auto(root, download=download)[0]
    if key == "synthetic":
        return "synthetic", Path("")
    if key in _CIFAR_FOLDERS:
        looked: list[str] = []
        roots = data_roots(root)
        for r in roots:
            folder = r / _CIFAR_FOLDERS[key]
            looked.append(str(folder))
            if (folder / ("test_batch" if key == "cifar10" else "test")).exists():
                return "cifar-pickle", folder
        for r in roots:
            for alt in _CIFAR_ZIPS.get(key, ()):
                p = r / alt
                looked.append(str(p))
                if p.is_file() or (p.is_dir() and _find_split_base(_list_dir(p)) is not None):
                    return "imagefolder", p
        if download:
            target = roots[0]
            try:
                _download_cifar(key, target)
            except Exception as err:  # offline, no torchvision, ...
                reason = f"download into {target} failed ({type(err).__name__}: {err})"
            else:
                return "cifar-pickle", target / _CIFAR_FOLDERS[key]
        else:
            reason = "download disabled"
        raise DatasetNotFoundError(
            f"dataset {name!r} not found; looked in: {', '.join(looked)}; {reason}. Get it with "
            f"`python -c \"import torchvision; "
            f"torchvision.datasets.{key.upper()}('{roots[0]}', download=True)\"` "
            f"on a machine with internet, or put the python-pickle folder {_CIFAR_FOLDERS[key]!r} "
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


# ----------------------------------------------------------------------------------------------------
# Readers
# ----------------------------------------------------------------------------------------------------


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


def _read_cifar_pickle(folder: Path, key: str) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
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


def _list_dir(path: Path) -> list[str]:
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


def _find_split_base(names: Sequence[str]) -> tuple[str, str, str] | None:
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


def _parse_classes(classes: str | Sequence[str] | None) -> list[str] | None:
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


def _subset(n: int, cap: int | None, seed: int) -> np.ndarray:
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
    from kwlab.utils import progress_bar as tqdm  # noqa: PLC0415

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


def _read_imagefolder(
    path: Path,
    *,
    size: int,
    caps: dict[str, int | None],
    classes: list[str] | None,
    seed: int,
    use_cache: bool,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    names = _list_zip(path) if path.is_file() else _list_dir(path)
    base = _find_split_base(names)
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
        sel = _subset(len(items), caps[split], seed)
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


# ----------------------------------------------------------------------------------------------------
# Public loader
# ----------------------------------------------------------------------------------------------------


def _channel_stats(images: Tensor, max_images: int = 10_000) -> tuple[tuple[float, ...], tuple[float, ...]]:
    x = images[:max_images].reshape(-1, 3).double() / 255.0
    return tuple(x.mean(0).tolist()), tuple(x.std(0).tolist())  # type: ignore[return-value]


def load_data(
    name: str,
    *,
    root: str | os.PathLike | None = None,
    image_size: int | None = None,
    train_samples: int | None = None,
    test_samples: int | None = None,
    classes: str | Sequence[str] | None = None,
    num_classes: int = 10,
    seed: int = 0,
    download: bool = True,
    use_cache: bool = True,
) -> ImageData:
    """Load dataset ``name`` as uint8 arrays (decoding and caching on first use).

    Args:
        name: ``"synthetic"``, ``"cifar10"``, ``"cifar100"`` or a path to an ImageFolder dir / .zip.
        root: data root (default ``$KWLAB_DATA``, then ``./data``).
        image_size: side of the square images (default: 32 for synthetic/CIFAR, 224 for folders).
            CIFAR pickles are always 32.
        train_samples, test_samples: caps; a fixed random subset (independent of ``seed`` for named
            datasets, so every run of a sweep sees the same images).
        classes: ImageFolder only: class folders to keep (list, comma-separated string or a file with
            one class per line), e.g. the ImageNet-100 class list.
        num_classes: synthetic only.
        seed: synthetic only: generator seed of the images.
        download: allow torchvision's downloader for CIFAR when the data is missing.
        use_cache: ImageFolder only: read/write the decoded cache under :func:`cache_dir`.
    """
    if name.lower() == "auto":
        name, notice = resolve_auto(root, download=download)
        if notice:
            import warnings  # noqa: PLC0415

            warnings.warn(notice, stacklevel=2)
    kind, path = resolve_source(name, root, download=download)
    caps = {"train": train_samples, "test": test_samples}
    if kind == "synthetic":
        size = image_size or 32
        n_train = train_samples or 10_000
        n_test = test_samples or 2_000
        tx, ty = synthetic_images(n_train, num_classes=num_classes, image_size=size, seed=2 * seed)
        vx, vy = synthetic_images(n_test, num_classes=num_classes, image_size=size, seed=2 * seed + 1)
        mean, std = _channel_stats(tx)
        return ImageData("synthetic", tx, ty, vx, vy, [f"class{i}" for i in range(num_classes)], mean, std)
    if kind == "cifar-pickle":
        if image_size not in (None, 32):
            raise ValueError(f"image_size={image_size}: the CIFAR pickles are 32x32; leave image_size unset")
        splits, class_names = _read_cifar_pickle(path, name.lower())
        arrays = {}
        for split, (x, y) in splits.items():
            sel = _subset(len(y), caps[split], 0)
            arrays[split] = (x[sel], y[sel])
    else:
        size = image_size or (32 if name.lower() in _CIFAR_FOLDERS else 224)
        arrays, class_names = _read_imagefolder(
            path, size=size, caps=caps, classes=_parse_classes(classes), seed=0, use_cache=use_cache
        )
    tx, ty = (torch.from_numpy(np.array(a)) for a in arrays["train"])
    vx, vy = (torch.from_numpy(np.array(a)) for a in arrays["test"])
    mean, std = _channel_stats(tx)
    return ImageData(name, tx, ty, vx, vy, list(class_names), mean, std)
