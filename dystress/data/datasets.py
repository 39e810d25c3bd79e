"""Datasets as uint8 tensors [N, 3, H, W] with int64 labels [N]: CIFAR-10/100 (and their long-tailed
versions) read from the official python-pickle layout, and image folders (`dystress.data.imagefolder`).

CIFAR files are read directly (`pickle.load(f, encoding="latin1")`), so the offline JPEG-decoded copy
(`python ../shared/data/make_cifar10.py ROOT`), whose md5 sums differ from the official release, loads
too: an md5 mismatch is a warning, not an error. The md5 sums of the official release are read from
torchvision's `CIFAR10` / `CIFAR100` classes at run time.
"""

from __future__ import annotations

import hashlib
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dystress._checks import as_int, is_int, is_real
from dystress.data.longtail import longtail_indices
from dystress.data.transforms import NORMALIZATION

#: Names accepted by `load_dataset`.
DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "cifar10_lt", "cifar100_lt", "imagefolder")

_CIFAR_LABEL_KEY = {"cifar10": "labels", "cifar100": "fine_labels"}
_MAKE_OFFLINE_COPY = "python ../shared/data/make_cifar10.py ROOT"


@dataclass
class ImageDataset:
    """A labelled image set held in memory.

    images: uint8 [N, 3, H, W]; labels: int64 [N] in 0..len(classes)-1; mean / std: per-channel
    normalisation statistics in [0, 1] units (see `dystress.data.transforms.normalize`).
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(
                f"images must be uint8 [N, 3, H, W], got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels must be int64 [{self.images.shape[0]}], got {self.labels.dtype} "
                f"{tuple(self.labels.shape)}"
            )
        if len(self.classes) < 1:
            raise ValueError("classes must name at least one class")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std must be 3-tuples with std > 0, got {self.mean}, {self.std}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, indices: torch.Tensor | list[int]) -> ImageDataset:
        """The images at `indices` (int64 [M] or a list), same classes and statistics."""
        idx = torch.as_tensor(indices, dtype=torch.int64)
        if idx.ndim != 1:
            raise ValueError(f"indices must be one-dimensional, got shape {tuple(idx.shape)}")
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= len(self)):
            raise ValueError(f"indices must lie in [0, {len(self) - 1}]")
        idx_img = idx.to(self.images.device)
        return ImageDataset(
            images=self.images.index_select(0, idx_img),
            labels=self.labels.index_select(0, idx.to(self.labels.device)),
            classes=list(self.classes),
            name=self.name,
            mean=self.mean,
            std=self.std,
        )

    def to(self, device: torch.device | str) -> ImageDataset:
        """A copy with images and labels on `device` (no copy when already there)."""
        return ImageDataset(
            images=self.images.to(device),
            labels=self.labels.to(device),
            classes=list(self.classes),
            name=self.name,
            mean=self.mean,
            std=self.std,
        )


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
        from dystress.data.imagefolder import load_image_folder  # imported here: it imports ImageDataset

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
    """torchvision's dataset class, looked up at call time (it carries the official file list and md5s)."""
    import torchvision.datasets

    return torchvision.datasets.CIFAR10 if base == "cifar10" else torchvision.datasets.CIFAR100


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _release_files(base: str, train: bool) -> tuple[Path, list[tuple[str, str]], Any]:
    """(folder under the root, [(file, official md5)] of one split plus the meta file, torchvision class)."""
    spec = _torchvision_cifar_class(base)
    files = [(name, md5) for name, md5 in (spec.train_list if train else spec.test_list)]
    files.append((spec.meta["filename"], spec.meta["md5"]))
    return Path(spec.base_folder), files, spec


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


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def _load_cifar(base: str, root: Path, train: bool, download: bool) -> ImageDataset:
    """Read one CIFAR split from the python-pickle layout, downloading it first if allowed and absent."""
    relative, files, spec = _release_files(base, train)
    folder = root / relative
    missing = [name for name, _ in files if not (folder / name).is_file()]
    if missing and download:
        try:
            spec(root=str(root), train=train, download=True)
        except Exception as err:  # no network, refused, corrupt archive: all end the same way
            raise FileNotFoundError(
                _missing_message(base, folder, missing, spec.url, f" (download failed: {err})")
            ) from err
        missing = [name for name, _ in files if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(_missing_message(base, folder, missing, spec.url, ""))
    mismatched = [name for name, md5 in files if _md5(folder / name) != md5]
    if mismatched:
        warnings.warn(
            f"{base}: md5 of {', '.join(mismatched)} in {folder} differs from the official release "
            "(expected for the JPEG-decoded offline copy; its accuracies run 2-3 points lower)",
            stacklevel=3,
        )
    batches = [_unpickle(folder / name) for name, _ in files[:-1]]
    data = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches])
    labels = np.concatenate([np.asarray(b[_CIFAR_LABEL_KEY[base]], dtype=np.int64) for b in batches])
    classes = list(_unpickle(folder / spec.meta["filename"])[spec.meta["key"]])
    mean, std = NORMALIZATION[base]
    return ImageDataset(
        images=torch.from_numpy(data.reshape(len(data), 3, 32, 32).copy()),
        labels=torch.from_numpy(labels),
        classes=classes,
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
