"""The machine-local cache of decoded CIFAR splits: equal to a fresh decode, remade when a source
changes or the cache is damaged, skipped where the folder cannot be written."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from dystress.data import datasets
from dystress.data.decoded import CACHE_FOLDER


def _load(root: Path, train: bool = True):  # noqa: ANN202
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fake copy's md5s differ from the release
        return datasets.load_dataset("cifar10", root=root, train=train, download=False)


def _decodes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record every batch file read from the release."""
    calls: list[Path] = []
    real = datasets._read_batch
    monkeypatch.setattr(datasets, "_read_batch", lambda path, *a: (calls.append(path), real(path, *a))[1])
    return calls


def test_a_cached_load_equals_a_fresh_one(fake_cifar10, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _decodes(monkeypatch)
    first = _load(fake_cifar10.root)
    assert len(calls) == 5 and (fake_cifar10.folder / CACHE_FOLDER / "train.json").is_file()
    second = _load(fake_cifar10.root)
    assert len(calls) == 5  # from the cache
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert torch.equal(second.images, torch.from_numpy(fake_cifar10.train_images))
    assert second.classes == fake_cifar10.classes
    test = _load(fake_cifar10.root, train=False)
    assert torch.equal(test.images, torch.from_numpy(fake_cifar10.test_images))


def test_the_md5_warning_survives_the_cache(fake_cifar10) -> None:
    for _ in range(2):
        with pytest.warns(UserWarning, match="differs from the official release"):
            datasets.load_dataset("cifar10", root=fake_cifar10.root, train=True, download=False)


def test_a_changed_source_or_a_damaged_cache_is_decoded_again(
    fake_cifar10, monkeypatch: pytest.MonkeyPatch
) -> None:
    _load(fake_cifar10.root)
    calls = _decodes(monkeypatch)
    batch = fake_cifar10.folder / "data_batch_1"
    stat = batch.stat()
    os.utime(batch, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: maybe another copy
    _load(fake_cifar10.root)
    assert len(calls) == 5
    cache = fake_cifar10.folder / CACHE_FOLDER
    (cache / "train-images.npy").write_bytes(b"\x93NUMPY damaged")
    again = _load(fake_cifar10.root)
    assert len(calls) == 10 and torch.equal(again.images, torch.from_numpy(fake_cifar10.train_images))
    meta = json.loads((cache / "train.json").read_text())
    meta["images_shape"] = [1, 3, 32, 32]  # arrays that do not match their record
    (cache / "train.json").write_text(json.dumps(meta))
    _load(fake_cifar10.root)
    assert len(calls) == 15


def test_a_pickle_in_the_cache_is_never_loaded(fake_cifar10) -> None:
    _load(fake_cifar10.root)
    cache = fake_cifar10.folder / CACHE_FOLDER
    np.save(cache / "train-labels.npy", np.array([object()], dtype=object), allow_pickle=True)
    loaded = _load(fake_cifar10.root)  # refused (allow_pickle=False) and decoded again
    assert torch.equal(loaded.labels, torch.from_numpy(fake_cifar10.train_labels))


def test_a_read_only_folder_is_decoded_every_time(fake_cifar10, monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes to read-only folders")
    fake_cifar10.folder.chmod(0o555)
    try:
        calls = _decodes(monkeypatch)
        _load(fake_cifar10.root)
        _load(fake_cifar10.root)
        assert len(calls) == 10 and not (fake_cifar10.folder / CACHE_FOLDER).exists()
    finally:
        fake_cifar10.folder.chmod(0o755)


def test_the_cache_can_be_turned_off(fake_cifar10, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DYSTRESS_NO_DATA_CACHE", "1")
    _load(fake_cifar10.root)
    assert not (fake_cifar10.folder / CACHE_FOLDER).exists()


def test_the_release_table_is_torchvisions() -> None:
    import torchvision.datasets as tv

    for name, cls in (("cifar10", tv.CIFAR10), ("cifar100", tv.CIFAR100)):
        release = datasets.CIFAR_RELEASES[name]
        assert (release.folder, release.url) == (cls.base_folder, cls.url)
        assert [list(f) for f in release.train] == cls.train_list
        assert [list(f) for f in release.test] == cls.test_list
        assert (
            release.meta == (cls.meta["filename"], cls.meta["md5"]) and release.classes_key == cls.meta["key"]
        )
