"""Datasets as uint8 tensors [N, 3, H, W] with int64 labels [N]: CIFAR-10/100 (and their long-tailed
versions) read from the official python-pickle layout, and image folders (`dystress.data.imagefolder`).

CIFAR files are read directly, with the restricted unpickler `dystress.io.safe_unpickle` (a file that
names anything but containers, strings, numbers and numpy arrays is refused, nothing in it runs), so the
offline JPEG-decoded copy (`python ../shared/data/make_cifar10.py ROOT`), whose md5 sums differ from the
official release, loads too: an md5 mismatch is a warning, not an error. A file that is truncated, not a
pickle, or not a CIFAR batch (keys, dtype, shape, label range) raises `dystress.io.DataFileError` naming
it. The file names and md5 sums of the official release are the published ones (`CIFAR_RELEASES`, the
same as torchvision's `CIFAR10` / `CIFAR100` classes, which only the download imports: torchvision
takes seconds to import). A split is decoded once per machine (`dystress.data.decoded`). `ImageDataset` lives in `dystress.data.image_dataset` and is re-exported here.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dystress._checks import as_int, is_int, is_real
from dystress.data.decoded import Decoded, cached_split
from dystress.data.image_dataset import ImageDataset
from dystress.data.imagefolder import load_image_folder
from dystress.data.longtail import longtail_indices
from dystress.data.transforms import NORMALIZATION
from dystress.io import DataFileError, safe_unpickle

__all__ = ["DATASETS", "ImageDataset", "is_official_release", "load_dataset"]

#: Names accepted by `load_dataset`.
DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "cifar10_lt", "cifar100_lt", "imagefolder")

_CIFAR_LABEL_KEY = {"cifar10": "labels", "cifar100": "fine_labels"}
_MAKE_OFFLINE_COPY = "python ../shared/data/make_cifar10.py ROOT"


def load_dataset(
    name: str,
    root: str | Path,
    train: bool = True,
    download: bool = True,
    imbalance_ratio: float = 0.01,
    seed: int = 0,
    image_size: int | None = None,
    workers: int | None = None,
    cache: bool = True,
    cache_dir: str | Path | None = None,
) -> ImageDataset:
    """Load a dataset split as uint8 tensors.

    name: one of `DATASETS`. cifar10 / cifar100 read `root/cifar-10-batches-py/` or `root/cifar-100-python/`
    (fine labels), downloaded with torchvision when absent and `download` is true. cifar10_lt /
    cifar100_lt: the training split reduced to the exponential profile with `imbalance_ratio` and `seed`
    (`dystress.data.longtail`); their test split is the full balanced test set. imagefolder:
    `root/train/<class>/*` or `root/val/<class>/*`, resized (shorter side) and center-cropped to
    `image_size` (required), decoded by `workers` processes and cached on disk unless `cache` is false, see
    `dystress.data.imagefolder.load_image_folder` (workers / cache / cache_dir are ignored for CIFAR).
    `image_size` must be None or 32 for CIFAR.
    """
    if name not in DATASETS:
        raise ValueError(f"name must be one of {DATASETS}, got {name!r}")
    if not isinstance(train, bool):
        raise ValueError(f"train must be a bool, got {train!r}")
    if not (is_real(imbalance_ratio) and 0.0 < imbalance_ratio <= 1.0):
        raise ValueError(f"imbalance_ratio must be a number in (0, 1], got {imbalance_ratio!r}")
    seed = as_int("seed", seed, minimum=0)
    if image_size is not None and not (is_int(image_size) and image_size >= 1):
        raise ValueError(f"image_size must be None or an int >= 1, got {image_size!r}")
    root = Path(root)
    if name == "imagefolder":
        if image_size is None:
            raise ValueError("image_size is required for name='imagefolder' (e.g. 64 for TinyImageNet)")
        return load_image_folder(
            root, train=train, image_size=image_size, workers=workers, cache=cache, cache_dir=cache_dir
        )
    if image_size not in (None, 32):
        raise ValueError(f"image_size must be None or 32 for {name}, got {image_size}")
    base = name.removesuffix("_lt")
    dataset = _load_cifar(base, root, train=train, download=download)
    if name.endswith("_lt") and train:
        indices = longtail_indices(
            dataset.labels, imbalance_ratio, seed=seed, num_classes=dataset.num_classes
        )
        dataset = dataset.subset(indices)
    dataset.name = name
    return dataset


def _torchvision_cifar_class(base: str) -> type:
    """torchvision's dataset class (imported only to download the release)."""
    import torchvision.datasets

    return torchvision.datasets.CIFAR10 if base == "cifar10" else torchvision.datasets.CIFAR100


@dataclass(frozen=True)
class CifarRelease:
    """The official python-pickle release of a CIFAR dataset: its folder, URL, split files with their
    md5 sums, and the meta file (name, md5, key of the class names)."""

    folder: str
    url: str
    train: tuple[tuple[str, str], ...]
    test: tuple[tuple[str, str], ...]
    meta: tuple[str, str]
    classes_key: str


#: The published releases (https://www.cs.toronto.edu/~kriz/cifar.html), as torchvision lists them.
CIFAR_RELEASES = {
    "cifar10": CifarRelease(
        folder="cifar-10-batches-py",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        train=(
            ("data_batch_1", "c99cafc152244af753f735de768cd75f"),
            ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
            ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
            ("data_batch_4", "634d18415352ddfa80567beed471001a"),
            ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
        ),
        test=(("test_batch", "40351d587109b95175f43aff81a1287e"),),
        meta=("batches.meta", "5ff9c542aee3614f3951f8cda6e48888"),
        classes_key="label_names",
    ),
    "cifar100": CifarRelease(
        folder="cifar-100-python",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        train=(("train", "16019d7e3df5f24257cddd939b257f8d"),),
        test=(("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),),
        meta=("meta", "7973b15100ade9c7d40fb424638fde48"),
        classes_key="fine_label_names",
    ),
}


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _release_files(base: str, train: bool) -> tuple[Path, list[tuple[str, str]], CifarRelease]:
    """(folder under the root, [(file, official md5)] of one split plus the meta file, the release)."""
    release = CIFAR_RELEASES[base]
    files = [*(release.train if train else release.test), release.meta]
    return Path(release.folder), files, release


def is_official_release(name: str, root: str | Path) -> bool | None:
    """Whether the CIFAR files of dataset ``name`` under ``root`` are the official release (every md5
    matches), False for another copy (e.g. the JPEG-decoded offline one), None when a file is missing."""
    cifar = [d for d in DATASETS if d != "imagefolder"]
    if name not in cifar:
        raise ValueError(f"name must be a CIFAR dataset, one of {cifar}, got {name!r}")
    base = name.removesuffix("_lt")
    checks = []
    for train in (True, False):
        folder, files, _ = _release_files(base, train)
        for file, md5 in files:
            path = Path(root) / folder / file
            if not path.is_file():
                return None
            checks.append(_md5(path) == md5)
    return all(checks)


def _read_classes(path: Path, base: str, key: str) -> list[str]:
    """The class names of a CIFAR meta file (``batches.meta`` / ``meta``), read with `safe_unpickle`."""
    meta = safe_unpickle(path, f"{base} meta file", encoding="latin1")
    names = meta.get(key) if isinstance(meta, dict) else None
    if not (isinstance(names, (list, tuple)) and names and all(isinstance(n, str) for n in names)):
        found = f"keys {sorted(map(str, meta))[:8]}" if isinstance(meta, dict) else type(meta).__name__
        raise DataFileError(f"{base} meta file {path} holds no list of class names under {key!r} ({found})")
    return list(names)


def _batch_problem(batch: Any, label_key: str, num_classes: int) -> str | None:
    """What keeps `batch` from being a CIFAR batch (dict with uint8 'data' [N, 3072] and N labels in
    0..num_classes-1), or None."""
    if not isinstance(batch, dict):
        return f"it holds a {type(batch).__name__}, not a dict"
    missing = [k for k in ("data", label_key) if k not in batch]
    if missing:
        return f"it lacks {missing} (keys: {sorted(map(str, batch))[:8]})"
    data = batch["data"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim >= 1) or (
        len(data) and data[0].size != 3072
    ):
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        return f"'data' must be a uint8 array [N, 3072], got {found}"
    try:
        labels = np.asarray(batch[label_key])
    except (ValueError, TypeError, OverflowError) as err:
        return f"{label_key!r} is not a list of integers ({err})"
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != len(data):
        return f"{label_key!r} must hold {len(data)} integers, got {labels.dtype} {labels.shape}"
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        return f"{label_key!r} must lie in 0..{num_classes - 1}, got {labels.min()}..{labels.max()}"
    return None


def _read_batch(path: Path, base: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 3072] or [N, 3, 32, 32], labels int64 [N]) of one CIFAR batch file, checked."""
    batch = safe_unpickle(path, f"{base} batch", encoding="latin1")
    label_key = _CIFAR_LABEL_KEY[base]
    problem = _batch_problem(batch, label_key, num_classes)
    if problem is not None:
        raise DataFileError(f"{base} batch {path} is not a CIFAR batch: {problem}")
    return np.asarray(batch["data"], dtype=np.uint8), np.asarray(batch[label_key], dtype=np.int64)


def _load_cifar(base: str, root: Path, train: bool, download: bool) -> ImageDataset:
    """Read one CIFAR split from the python-pickle layout, downloading it first if allowed and absent;
    decoded once per machine (:func:`dystress.data.decoded.cached_split`)."""
    relative, files, release = _release_files(base, train)
    folder = root / relative
    missing = [name for name, _ in files if not (folder / name).is_file()]
    if missing and download:
        try:
            _torchvision_cifar_class(base)(root=str(root), train=train, download=True)
        except Exception as err:  # no network, refused, corrupt archive: all end the same way
            raise FileNotFoundError(
                _missing_message(base, folder, missing, release.url, f" (download failed: {err})")
            ) from err
        missing = [name for name, _ in files if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(_missing_message(base, folder, missing, release.url, ""))

    def decode() -> Decoded:
        mismatched = [name for name, md5 in files if _md5(folder / name) != md5]
        classes = _read_classes(folder / release.meta[0], base, release.classes_key)
        batches = [_read_batch(folder / name, base, len(classes)) for name, _ in files[:-1]]
        data = np.concatenate([images for images, _ in batches])
        labels = np.concatenate([labels for _, labels in batches])
        images = np.ascontiguousarray(data.reshape(len(data), 3, 32, 32))
        return images, labels, {"classes": classes, "mismatched": mismatched}

    sources = [folder / name for name, _ in files]
    images, labels, info = cached_split(folder, "train" if train else "test", sources, decode)
    if info["mismatched"]:
        warnings.warn(
            f"{base}: md5 of {', '.join(info['mismatched'])} in {folder} differs from the official release "
            "(expected for the JPEG-decoded offline copy; its accuracies run 2-3 points lower)",
            stacklevel=3,
        )
    mean, std = NORMALIZATION[base]
    return ImageDataset(
        images=torch.from_numpy(images),
        labels=torch.from_numpy(labels),
        classes=list(info["classes"]),
        name=base,
        mean=mean,
        std=std,
    )


def _missing_message(base: str, folder: Path, missing: list[str], url: str, reason: str) -> str:
    message = (
        f"{base}: {', '.join(missing)} not found in {folder}{reason}. Put the official python release "
        f"there (unpack {url} into {folder.parent})"
    )
    if base == "cifar10" and (Path.cwd().parent / "shared" / "data" / "make_cifar10.py").is_file():
        message += f", or write the offline copy with `{_MAKE_OFFLINE_COPY}` (ROOT = {folder.parent})"
    return message + "."
