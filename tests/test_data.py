"""kwlab.experiments.data: synthetic images, ImageFolder dirs/zips, CIFAR pickles, the device loader."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from kwlab.experiments.data import load_data, synthetic_images
from kwlab.experiments.data_readers import DatasetNotFoundError, subset
from kwlab.experiments.loader import DeviceLoader

DATA = os.environ.get("KWLAB_DATA")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KWLAB_CACHE", str(tmp_path / "cache"))


# ------------------------------------------------------------------------------------------- synthetic
def test_synthetic_deterministic_balanced_and_seed_dependent():
    x1, y1 = synthetic_images(60, num_classes=6, image_size=12, seed=3)
    x2, y2 = synthetic_images(60, num_classes=6, image_size=12, seed=3)
    x3, _ = synthetic_images(60, num_classes=6, image_size=12, seed=4)
    assert x1.dtype == torch.uint8 and x1.shape == (60, 12, 12, 3)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3)
    assert torch.equal(torch.bincount(y1), torch.full((6,), 10))


def test_synthetic_classes_differ_in_colour():
    # The class colour is 60% of each image's tint: class-mean colours must differ more between classes
    # than the noise of a class mean (reference: the per-class mean computed with an explicit loop).
    x, y = synthetic_images(400, num_classes=4, image_size=16, seed=0)
    means = np.stack([x[y == c].double().mean(dim=(0, 1, 2)).numpy() for c in range(4)])
    spread = max(np.abs(means[i] - means[j]).max() for i in range(4) for j in range(i + 1, 4))
    assert spread > 10  # in uint8 units


def test_load_synthetic_caps_and_stats():
    d = load_data("synthetic", image_size=8, train_samples=50, test_samples=20, num_classes=5, seed=1)
    assert d.train_images.shape == (50, 8, 8, 3) and d.test_images.shape == (20, 8, 8, 3)
    assert d.num_classes == 5 and d.image_size == 8
    ref = d.train_images.double().reshape(-1, 3) / 255
    assert np.allclose(d.mean, ref.mean(0).numpy()) and np.allclose(d.std, ref.std(0).numpy())


# ------------------------------------------------------------------------------------------- loader
def _reference_crop_flip(img: np.ndarray, dy: int, dx: int, flip: bool, p: int) -> np.ndarray:
    padded = np.pad(img, ((p, p), (p, p), (0, 0)))
    h, w = img.shape[:2]
    out = padded[dy : dy + h, dx : dx + w]
    return out[:, ::-1] if flip else out


def test_crop_matches_per_sample_reference():
    x, y = synthetic_images(7, image_size=6, seed=0)
    loader = DeviceLoader(x, y, batch_size=7, train=True, mean=(0, 0, 0), std=(1, 1, 1), crop_padding=2)
    shifts = torch.tensor([[0, 0], [4, 4], [1, 3], [2, 2], [3, 0], [0, 4], [4, 1]])
    got = loader._crop(x, shifts).numpy()
    for i in range(7):
        ref = _reference_crop_flip(x[i].numpy(), int(shifts[i, 0]), int(shifts[i, 1]), False, 2)
        np.testing.assert_array_equal(got[i], ref)


def test_train_batches_are_crops_or_flips_of_their_source_images():
    x, y = synthetic_images(16, num_classes=16, image_size=6, seed=2)  # one image per label: label = identity
    loader = DeviceLoader(x, y, batch_size=8, train=True, mean=(0, 0, 0), std=(1 / 255,) * 3, crop_padding=1)
    for xb, yb in loader:
        for img, label in zip(xb.permute(0, 2, 3, 1).round().to(torch.uint8).numpy(), yb.tolist()):
            src = x[int((y == label).nonzero()[0, 0])].numpy()
            candidates = [
                _reference_crop_flip(src, dy, dx, f, 1)
                for dy in range(3)
                for dx in range(3)
                for f in (False, True)
            ]
            assert any(np.array_equal(img, c) for c in candidates)


def test_epoch_order_is_a_permutation_reproducible_per_epoch():
    x, y = synthetic_images(30, num_classes=30, image_size=4, seed=0)
    loader = DeviceLoader(
        x, y, batch_size=8, train=True, mean=(0, 0, 0), std=(1, 1, 1), crop_padding=0, flip=False, seed=5
    )
    assert len(loader) == 3  # drop_last for training
    order0 = torch.cat([yb for _, yb in loader])
    assert len(set(order0.tolist())) == 24
    again = torch.cat([yb for _, yb in loader])
    loader.set_epoch(1)
    order1 = torch.cat([yb for _, yb in loader])
    assert torch.equal(order0, again) and not torch.equal(order0, order1)


def test_eval_batches_are_normalised_in_order():
    x, y = synthetic_images(10, image_size=4, seed=0)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.125)
    loader = DeviceLoader(x, y, batch_size=4, train=False, mean=mean, std=std)
    xs, ys = zip(*loader)
    assert [len(v) for v in ys] == [4, 4, 2]
    ref = (x.permute(0, 3, 1, 2).double() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(
        std
    ).view(1, 3, 1, 1)
    torch.testing.assert_close(torch.cat(xs).double(), ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(torch.cat(ys), y)


def test_ddp_ranks_split_the_global_batch():
    x, y = synthetic_images(24, num_classes=24, image_size=4, seed=0)
    kw = dict(batch_size=8, train=True, mean=(0, 0, 0), std=(1, 1, 1), seed=1)
    full = [yb for _, yb in DeviceLoader(x, y, **kw)]
    r0 = [yb for _, yb in DeviceLoader(x, y, rank=0, world_size=2, **kw)]
    r1 = [yb for _, yb in DeviceLoader(x, y, rank=1, world_size=2, **kw)]
    for f, a, b in zip(full, r0, r1):
        assert torch.equal(torch.cat([a, b]), f)


# ------------------------------------------------------------------------------------------- files
def _make_tree(
    root: Path, splits=("train", "val"), classes=("b_cls", "a_cls", "c_cls"), per=3, size=(10, 10)
):
    from PIL import Image

    rng = np.random.default_rng(0)
    arrays = {}
    for split in splits:
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per):
                a = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(a).save(root / split / c / f"{i}.png")
                arrays[(split, c, i)] = a
    return arrays


def test_imagefolder_dir_and_zip_match_the_png_pixels(tmp_path):
    arrays = _make_tree(tmp_path / "tree" / "myset")
    zpath = tmp_path / "myset.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in sorted((tmp_path / "tree").rglob("*.png")):
            zf.write(p, p.relative_to(tmp_path / "tree").as_posix())
    for source in (tmp_path / "tree" / "myset", zpath):
        d = load_data(str(source), image_size=10)
        assert d.classes == ["a_cls", "b_cls", "c_cls"]  # sorted, like ImageFolder
        assert d.train_images.shape == (9, 10, 10, 3) and d.test_images.shape == (9, 10, 10, 3)
        expected = np.stack([arrays[("train", c, i)] for c in d.classes for i in range(3)])
        np.testing.assert_array_equal(d.train_images.numpy(), expected)
        assert d.train_labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
        again = load_data(str(source), image_size=10)  # served from the uint8 cache
        assert torch.equal(again.train_images, d.train_images)
    assert any((tmp_path / "cache").glob("*.npy"))


def test_imagefolder_resize_crop_and_class_list(tmp_path):
    _make_tree(tmp_path / "t", splits=("train", "test"), size=(12, 8))
    d = load_data(str(tmp_path / "t"), image_size=6, classes="c_cls,a_cls")
    assert d.classes == ["a_cls", "c_cls"] and d.train_images.shape == (6, 6, 6, 3)
    with pytest.raises(ValueError, match="zzz"):
        load_data(str(tmp_path / "t"), image_size=6, classes=["zzz"])


def test_imagefolder_without_splits_is_a_clear_error(tmp_path):
    (tmp_path / "flat" / "x").mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (4, 4)).save(tmp_path / "flat" / "x" / "0.png")
    with pytest.raises(DatasetNotFoundError, match="train"):
        load_data(str(tmp_path / "flat"))


def test_cifar_pickle_folder(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, 4).tolist()
        batches[name] = (data, labels)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"n{i}" for i in range(10)]}, f)
    d = load_data("cifar10", root=tmp_path, download=False)
    ref = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)]).reshape(-1, 3, 32, 32)
    np.testing.assert_array_equal(d.train_images.numpy(), ref.transpose(0, 2, 3, 1))
    assert d.test_labels.tolist() == batches["test_batch"][1] and d.classes[3] == "n3"
    capped = load_data("cifar10", root=tmp_path, download=False, train_samples=5)
    keep = subset(20, 5, 0)
    np.testing.assert_array_equal(capped.train_images.numpy(), ref.transpose(0, 2, 3, 1)[keep])


def test_missing_dataset_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("KWLAB_DATA", str(tmp_path / "env_root"))
    with pytest.raises(DatasetNotFoundError) as info:
        load_data("cifar100", root=tmp_path / "given", download=False)
    msg = str(info.value)
    assert str(tmp_path / "given" / "cifar-100-python") in msg and str(tmp_path / "env_root") in msg
    assert "KWLAB_DATA" in msg and "download" in msg
    with pytest.raises(DatasetNotFoundError, match="ImageFolder"):
        load_data(str(tmp_path / "nope.zip"))


# ------------------------------------------------------------------------------------------- real data
@pytest.mark.data
@pytest.mark.skipif(
    not DATA or not Path(DATA, "cifar10-jpg.zip").exists(), reason="needs KWLAB_DATA/cifar10-jpg.zip"
)
def test_real_cifar10_zipsubset():
    import io

    from PIL import Image

    d = load_data("cifar10", train_samples=400, test_samples=100, download=False)
    assert d.classes == [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]
    assert d.train_images.shape == (400, 32, 32, 3) and d.test_images.shape == (100, 32, 32, 3)
    with zipfile.ZipFile(Path(DATA) / "cifar10-jpg.zip") as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".jpg") and "/train/" in n)
        assert len(names) == 50_000
        sel = subset(len(names), 400, 0)
        for k in (0, 399):
            name = names[sel[k]]
            ref = np.asarray(Image.open(io.BytesIO(zf.read(name))).convert("RGB"))
            np.testing.assert_array_equal(d.train_images[k].numpy(), ref)
            assert d.classes[int(d.train_labels[k])] == name.split("/")[2]
    assert np.allclose(d.mean, (0.4913, 0.4821, 0.4465), atol=0.04)  # README's train-set mean


@pytest.mark.data
@pytest.mark.skipif(
    not DATA or not Path(DATA, "imagenette2-224.zip").exists(), reason="needs KWLAB_DATA/imagenette2-224.zip"
)
def test_real_imagenette_zip_resized():
    d = load_data(str(Path(DATA) / "imagenette2-224.zip"), image_size=32, train_samples=60, test_samples=20)
    assert d.num_classes == 10 and d.classes[0] == "n01440764"
    assert d.train_images.shape == (60, 32, 32, 3) and d.test_images.shape == (20, 32, 32, 3)
