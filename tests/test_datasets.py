from __future__ import annotations

import dataclasses
import math
import os
import pickle
import shutil
import urllib.error
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets

from dystress.data.datasets import DATASETS, ImageDataset, is_official_release, load_dataset
from dystress.data.longtail import longtail_counts, longtail_indices
from dystress.data.transforms import NORMALIZATION
from dystress.io import DataFileError

# ---------------------------------------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("train", [True, False])
def test_cifar10_reads_pickles(fake_cifar10, train):
    with pytest.warns(UserWarning, match="md5"):
        ds = load_dataset("cifar10", fake_cifar10.root, train=train, download=False)
    images = fake_cifar10.train_images if train else fake_cifar10.test_images
    labels = fake_cifar10.train_labels if train else fake_cifar10.test_labels
    assert ds.images.dtype == torch.uint8 and ds.labels.dtype == torch.int64
    assert np.array_equal(ds.images.numpy(), images)
    assert np.array_equal(ds.labels.numpy(), labels)
    assert ds.classes == fake_cifar10.classes and ds.num_classes == 10 and len(ds) == len(labels)
    assert ds.name == "cifar10" and (ds.mean, ds.std) == NORMALIZATION["cifar10"]


def test_cifar100_fine_labels(fake_cifar100):
    with pytest.warns(UserWarning, match="md5"):
        ds = load_dataset("cifar100", fake_cifar100.root, train=True, download=False)
    assert np.array_equal(ds.images.numpy(), fake_cifar100.train_images)
    assert np.array_equal(ds.labels.numpy(), fake_cifar100.train_labels)
    assert ds.num_classes == 100 and ds.classes == fake_cifar100.classes
    assert (ds.mean, ds.std) == NORMALIZATION["cifar100"]


def test_md5_mismatch_names_files_and_match_is_silent(fake_cifar10, monkeypatch):
    with pytest.warns(UserWarning) as record:
        load_dataset("cifar10", fake_cifar10.root, train=False, download=False)
    message = str(record[0].message)
    assert message.startswith(f"cifar10: md5 of test_batch, batches.meta in {fake_cifar10.folder} differs")
    assert "data_batch_1" not in message

    def md5(name):
        import hashlib

        return hashlib.md5((fake_cifar10.folder / name).read_bytes()).hexdigest()

    from dystress.data import datasets

    official = dataclasses.replace(
        datasets.CIFAR_RELEASES["cifar10"],
        train=tuple((f"data_batch_{k}", md5(f"data_batch_{k}")) for k in range(1, 6)),
        test=(("test_batch", md5("test_batch")),),
        meta=("batches.meta", md5("batches.meta")),
    )
    monkeypatch.setitem(datasets.CIFAR_RELEASES, "cifar10", official)
    monkeypatch.setenv("DYSTRESS_NO_DATA_CACHE", "1")  # the md5 check, not the cache's record of it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = load_dataset("cifar10", fake_cifar10.root, train=True, download=False)
    assert len(ds) == 40
    assert is_official_release("cifar10", fake_cifar10.root) is True
    assert is_official_release("cifar10_lt", fake_cifar10.root) is True  # the same files
    monkeypatch.undo()
    assert is_official_release("cifar10", fake_cifar10.root) is False


def test_official_release_check_without_files_and_for_other_names(fake_cifar10, tmp_path):
    assert is_official_release("cifar100", fake_cifar10.root) is None  # no CIFAR-100 there
    (fake_cifar10.folder / "data_batch_3").unlink()
    assert is_official_release("cifar10", fake_cifar10.root) is None
    with pytest.raises(ValueError, match=r"name must be a CIFAR dataset, one of \['cifar10', "):
        is_official_release("imagefolder", tmp_path)


def test_missing_without_download_says_where_and_how(tmp_path, monkeypatch):
    class MustNotDownload(torchvision.datasets.CIFAR10):
        def __init__(self, *args, **kwargs):
            raise AssertionError("download attempted")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", MustNotDownload)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    root = tmp_path / "data"
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("cifar10", root, download=False)
    text = str(err.value)
    assert str(root / "cifar-10-batches-py") in text and "data_batch_1" in text
    assert "cifar-10-python.tar.gz" in text and "make_cifar10.py" not in text
    # beside the offline copy's script (the development and CI machines) the message names it too
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "shared" / "data" / "make_cifar10.py").write_text("")
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("cifar10", root, download=False)
    assert "python ../shared/data/make_cifar10.py ROOT" in str(err.value)


def test_download_failure_is_file_not_found(tmp_path, monkeypatch):
    class Offline(torchvision.datasets.CIFAR100):
        def __init__(self, *args, **kwargs):
            raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", Offline)
    with pytest.raises(FileNotFoundError, match="download failed.*no network") as err:
        load_dataset("cifar100", tmp_path, download=True)
    assert str(tmp_path / "cifar-100-python") in str(err.value)
    assert "cifar-100-python.tar.gz" in str(err.value)


def test_download_uses_torchvision_then_reads_pickles(tmp_path, monkeypatch, make_fake_cifar):
    calls = []

    class FakeDownload(torchvision.datasets.CIFAR10):
        def __init__(self, root, train=True, download=False):
            calls.append((root, train, download))
            calls.append(make_fake_cifar("cifar10", root, train_per_class=3))

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeDownload)
    with pytest.warns(UserWarning, match="md5"):
        ds = load_dataset("cifar10", tmp_path, train=True, download=True)
    assert calls[0] == (str(tmp_path), True, True)
    assert np.array_equal(ds.images.numpy(), calls[1].train_images)


def test_real_lossless_subset_in_official_layout(tmp_path, lossless_cifar10_path, shared_data_dir):
    """Real pixels written in the official row layout (1024 R, 1024 G, 1024 B) come back as NCHW."""
    z = np.load(lossless_cifar10_path)
    x = z["x_train"][:100]  # [N, 32, 32, 3]
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rows = np.concatenate([x[..., c].reshape(len(x), 1024) for c in range(3)], axis=1)
    for k in range(1, 6):
        part = slice((k - 1) * 20, k * 20)
        with open(folder / f"data_batch_{k}", "wb") as f:
            pickle.dump({"data": rows[part], "labels": z["y_train"][part].tolist()}, f)
    shutil.copyfile(shared_data_dir / "batches.meta", folder / "batches.meta")  # the official file
    with pytest.warns(UserWarning) as record:
        ds = load_dataset("cifar10", tmp_path, download=False)
    assert "batches.meta" not in str(record[0].message)  # the real meta file has the official md5
    for i, y, xx, c in [(0, 0, 0, 0), (3, 5, 17, 1), (99, 31, 31, 2), (42, 30, 2, 2)]:
        assert ds.images[i, c, y, xx] == x[i, y, xx, c]
    assert ds.labels[:2].tolist() == [6, 9]  # official train images 0 and 1: frog, truck
    assert ds.classes == ["airplane", "automobile", "bird", "cat", "deer"] + [
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]


# ------------------------------------------------------------------------------------------ long tail


@pytest.mark.parametrize(("per_class", "num_classes", "expected"), [(5000, 10, 12406), (500, 100, 10847)])
def test_longtail_published_sizes(per_class, num_classes, expected):
    labels = torch.arange(num_classes).repeat_interleave(per_class)[torch.randperm(per_class * num_classes)]
    idx = longtail_indices(labels, 0.01, seed=0)
    assert len(idx) == expected == sum(longtail_counts(per_class, num_classes, 0.01))


@pytest.mark.parametrize("ratio", [0.01, 0.02, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("num_classes", [2, 10, 37])
def test_longtail_profile_and_determinism(ratio, num_classes):
    per_class = 200
    g = torch.Generator().manual_seed(num_classes)
    labels = torch.arange(num_classes).repeat_interleave(per_class)[
        torch.randperm(per_class * num_classes, generator=g)
    ]
    idx = longtail_indices(labels, ratio, seed=3)
    counts = torch.bincount(labels[idx], minlength=num_classes).tolist()
    assert counts == [int(per_class * ratio ** (c / (num_classes - 1))) for c in range(num_classes)]
    assert counts == sorted(counts, reverse=True)  # natural order: class 0 is the head
    assert torch.equal(idx, idx.unique())  # ascending, no repeats
    assert torch.equal(idx, longtail_indices(labels, ratio, seed=3))
    if ratio < 1:
        assert not torch.equal(idx, longtail_indices(labels, ratio, seed=4))


def test_longtail_uses_smallest_class_count():
    labels = torch.tensor([0] * 10 + [1] * 7 + [2] * 9)
    idx = longtail_indices(labels, 0.25, seed=0)
    assert torch.bincount(labels[idx]).tolist() == [7, math.floor(7 * 0.5), math.floor(7 * 0.25)]


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, "0.1"])
def test_longtail_rejects_ratio(bad):
    with pytest.raises(ValueError, match="imbalance_ratio"):
        longtail_indices(torch.tensor([0, 1]), bad)


def test_cifar10_lt_dataset(tmp_path, make_fake_cifar):
    fake = make_fake_cifar("cifar10", tmp_path, train_per_class=100, test_per_class=3)
    with pytest.warns(UserWarning):
        lt = load_dataset("cifar10_lt", tmp_path, train=True, download=False, imbalance_ratio=0.1, seed=1)
        test = load_dataset("cifar10_lt", tmp_path, train=False, download=False, imbalance_ratio=0.1)
    expected = [int(100 * 0.1 ** (c / 9)) for c in range(10)]
    assert torch.bincount(lt.labels).tolist() == expected and lt.name == "cifar10_lt"
    idx = longtail_indices(torch.from_numpy(fake.train_labels), 0.1, seed=1)
    assert np.array_equal(lt.images.numpy(), fake.train_images[idx.numpy()])
    assert len(test) == 30 and torch.bincount(test.labels).tolist() == [3] * 10


# ---------------------------------------------------------------------------------- API and validation


def test_unknown_name_lists_known(tmp_path):
    with pytest.raises(ValueError) as err:
        load_dataset("svhn", tmp_path)
    assert all(name in str(err.value) for name in DATASETS)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"imbalance_ratio": 0.0}, "imbalance_ratio"),
        ({"seed": -1}, "seed"),
        ({"image_size": 0}, "image_size"),
        ({"image_size": 64}, "image_size"),
        ({"train": "yes"}, "train"),
    ],
)
def test_load_dataset_validates(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_dataset("cifar10", tmp_path, **kwargs)


def _toy(n=6):
    return ImageDataset(
        images=torch.arange(n * 3 * 2 * 2, dtype=torch.int64).remainder(256).to(torch.uint8).view(n, 3, 2, 2),
        labels=torch.arange(n) % 3,
        classes=["a", "b", "c"],
        name="toy",
        mean=(0.5, 0.5, 0.5),
        std=(0.2, 0.2, 0.2),
    )


def test_image_dataset_subset_and_to():
    ds = _toy()
    sub = ds.subset(torch.tensor([4, 1, 1]))
    assert torch.equal(sub.images, ds.images[[4, 1, 1]]) and sub.labels.tolist() == [1, 1, 1]
    assert len(sub) == 3 and sub.num_classes == 3 and sub.name == "toy" and sub.mean == ds.mean
    moved = ds.to("cpu")
    assert torch.equal(moved.images, ds.images) and moved.classes == ds.classes
    with pytest.raises(ValueError, match="indices"):
        ds.subset([6])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("images", torch.zeros(6, 3, 2, 2)),
        ("images", torch.zeros(6, 1, 2, 2, dtype=torch.uint8)),
        ("labels", torch.zeros(5, dtype=torch.int64)),
        ("labels", torch.zeros(6, dtype=torch.int32)),
        ("std", (0.1, 0.0, 0.1)),
    ],
)
def test_image_dataset_validates(field, value):
    kwargs = {k: getattr(_toy(), k) for k in ("images", "labels", "classes", "name", "mean", "std")}
    kwargs[field] = value
    with pytest.raises(ValueError, match=field):
        ImageDataset(**kwargs)


@pytest.mark.slow
def test_offline_full_copy_against_lossless(offline_cifar10_root, lossless_cifar10):
    """The full JPEG-decoded copy: official sizes and order, labels exact, pixels within the JPEG error."""
    with pytest.warns(UserWarning, match="md5"):
        train = load_dataset("cifar10", offline_cifar10_root, download=False)
    with pytest.warns(UserWarning, match="md5"):
        test = load_dataset("cifar10", offline_cifar10_root, train=False, download=False)
    assert (len(train), len(test)) == (50000, 10000)
    assert torch.bincount(train.labels).tolist() == [5000] * 10
    assert torch.equal(train.labels[:4000], lossless_cifar10["train_labels"])
    assert torch.equal(test.labels[:1000], lossless_cifar10["test_labels"])
    err = (train.images[:4000].float() - lossless_cifar10["train_images"].float()).abs().mean()
    assert 4.0 < float(err) < 8.0  # README: mean absolute error 5.8 / 255 (JPEG quality 75)
    assert train.classes == lossless_cifar10["classes"]


# ------------------------------------------------------------------------------------- hostile files


class _WritesMarker:
    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _rewrite(path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def test_a_batch_that_would_run_code_is_refused(fake_cifar10, tmp_path):
    marker, path = tmp_path / "marker", fake_cifar10.folder / "data_batch_3"
    _rewrite(path, {"data": _WritesMarker(marker), "labels": []})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the md5 mismatch
        with pytest.raises(DataFileError, match=f"cifar10 batch {path} refers to posix.system"):
            load_dataset("cifar10", fake_cifar10.root, download=False)
    assert not marker.exists()


def _batch(fake, **changes):
    with open(fake.folder / "data_batch_1", "rb") as f:
        batch = pickle.load(f, encoding="latin1")
    batch.update(changes)
    return batch


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (lambda fake: b"", r"cannot be read: it ends early \(truncated\)"),
        (lambda fake: (fake.folder / "data_batch_1").read_bytes()[:-100], "cannot be read"),
        (lambda fake: b"\x00\x01 garbage", "cannot be read: it is not a valid pickle"),
        (lambda fake: [1, 2], "is not a CIFAR batch: it holds a list, not a dict"),
        (lambda fake: {"data": np.zeros((2, 3072), np.uint8)}, r"it lacks \['labels'\]"),
        (
            lambda fake: _batch(fake, data=np.zeros((8, 3071), np.uint8)),
            r"uint8 array \[N, 3072\], got uint8",
        ),
        (lambda fake: _batch(fake, data=np.zeros((8, 3072), np.float32)), "got float32"),
        (lambda fake: _batch(fake, data="pixels"), "got str"),
        (lambda fake: _batch(fake, labels=[0] * 3), "'labels' must hold 8 integers"),
        (lambda fake: _batch(fake, labels=["cat"] * 8), "'labels' must hold 8 integers"),
        (lambda fake: _batch(fake, labels=[10] * 8), r"'labels' must lie in 0..9, got 10..10"),
    ],
)
def test_a_broken_batch_is_named_with_what_is_wrong(fake_cifar10, content, match):
    path = fake_cifar10.folder / "data_batch_1"
    value = content(fake_cifar10)
    if isinstance(value, bytes):
        path.write_bytes(value)
    else:
        _rewrite(path, value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataFileError, match=match) as caught:
            load_dataset("cifar10", fake_cifar10.root, download=False)
    assert str(caught.value).startswith(f"cifar10 batch {path} ")
    assert isinstance(caught.value, ValueError)  # what the command line reports in one line


@pytest.mark.parametrize("meta", [{"names": ["a"]}, {"label_names": []}, {"label_names": [1, 2]}, ["x"]])
def test_a_broken_meta_file_is_named(fake_cifar10, meta):
    path = fake_cifar10.folder / "batches.meta"
    _rewrite(path, meta)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataFileError, match=f"cifar10 meta file {path} holds no list of class names"):
            load_dataset("cifar10", fake_cifar10.root, download=False)


def _old_loader(folder, files, meta, label_key="labels"):
    """The loader before the restricted unpickler: plain pickle.load (kept here as the reference)."""

    def unpickle(name):
        with open(folder / name, "rb") as f:
            return pickle.load(f, encoding="latin1")

    batches = [unpickle(name) for name in files]
    data = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches])
    labels = np.concatenate([np.asarray(b[label_key], dtype=np.int64) for b in batches])
    return data.reshape(len(data), 3, 32, 32), labels, list(unpickle(meta)["label_names"])


@pytest.fixture
def real_cifar10_root(request):
    """$DYSTRESS_DATA when it holds cifar-10-batches-py, else the offline copy (or the test skips)."""
    root = os.environ.get("DYSTRESS_DATA")
    if root and (Path(root) / "cifar-10-batches-py" / "test_batch").is_file():
        return Path(root)
    return request.getfixturevalue("offline_cifar10_root")


@pytest.mark.parametrize("train", [True, False])
def test_real_files_load_bit_identically_to_plain_pickle(real_cifar10_root, train):
    files = [f"data_batch_{k}" for k in range(1, 6)] if train else ["test_batch"]
    folder = real_cifar10_root / "cifar-10-batches-py"
    images, labels, classes = _old_loader(folder, files, "batches.meta")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # md5 of the offline copy
        ds = load_dataset("cifar10", real_cifar10_root, train=train, download=False)
    assert ds.images.numpy().tobytes() == images.tobytes() and ds.images.shape == images.shape
    assert ds.labels.dtype == torch.int64 and np.array_equal(ds.labels.numpy(), labels)
    assert ds.classes == classes and len(ds) == (50000 if train else 10000)


def test_cifar100_batch_is_checked_against_its_100_classes(fake_cifar100):
    path = fake_cifar100.folder / "test"
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="latin1")
    batch["fine_labels"][0] = 100
    _rewrite(path, batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataFileError, match=f"cifar100 batch {path} .*must lie in 0..99"):
            load_dataset("cifar100", fake_cifar100.root, train=False, download=False)


def test_image_dataset_has_one_home():
    from dystress.data import datasets, image_dataset, imagefolder

    assert datasets.ImageDataset is image_dataset.ImageDataset is imagefolder.ImageDataset
