"""Shared pytest fixtures.

Fake CIFAR (tiny, random pixels, written in the official python-pickle layout):
- `make_fake_cifar(name, root, ...) -> FakeCifar`: a factory, for custom sizes or roots.
- `fake_cifar10` / `fake_cifar100`: ready-made copies under a fresh tmp dir; use `.root` as the dataset
  root and `.train_images` / `.train_labels` / ... (numpy, NCHW uint8 / int64) as the ground truth.

Real data from ../shared/data (the test is skipped when the folder or file is absent):
- `shared_data_dir`: the folder `/work/shared/data` (found as `Path(__file__).parents[1].parent`).
- `lossless_cifar10_path`: `cifar10_lossless_5k.npz` (exact pixels of official train 0-3999, test 0-999).
- `lossless_cifar10`: its contents as a dict of tensors, loaded once per session: `train_images` /
  `test_images` uint8 [N, 3, 32, 32], `train_labels` / `test_labels` int64 [N], `classes` list[str].
- `offline_cifar10_root`: a dataset root holding the full JPEG-decoded CIFAR-10 copy in the official
  layout (written once per session by ../shared/data/make_cifar10.py: about 10 s; use it in tests marked
  `slow`). `load_dataset("cifar10", root, download=False)` reads it (with an md5 warning).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

SHARED_DATA_DIR = Path(__file__).parents[1].parent / "shared" / "data"

_LAYOUT = {
    # name: (folder, train files, test files, meta file, meta key, label key, number of classes)
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{k}" for k in range(1, 6)],
        ["test_batch"],
        "batches.meta",
        "label_names",
        "labels",
        10,
    ),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "meta", "fine_label_names", "fine_labels", 100),
}


@dataclass
class FakeCifar:
    """A fake CIFAR copy on disk and the arrays it holds (train concatenated over the batch files)."""

    root: Path
    folder: Path
    train_images: np.ndarray  # uint8 [N, 3, 32, 32]
    train_labels: np.ndarray  # int64 [N]
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: list[str]


def write_fake_cifar(
    name: str, root: Path, train_per_class: int = 2, test_per_class: int = 1, seed: int = 0
) -> FakeCifar:
    """Write a fake `name` ("cifar10" / "cifar100") with balanced classes in shuffled order under root."""
    folder_name, train_files, test_files, meta_file, meta_key, label_key, num_classes = _LAYOUT[name]
    rng = np.random.default_rng(seed)
    folder = Path(root) / folder_name
    folder.mkdir(parents=True, exist_ok=True)
    classes = [f"{name}_class_{c:03d}" for c in range(num_classes)]

    def split(per_class: int, files: list[str]) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.permutation(np.repeat(np.arange(num_classes, dtype=np.int64), per_class))
        images = rng.integers(0, 256, size=(len(labels), 3, 32, 32), dtype=np.uint8)
        for k, (file, part) in enumerate(
            zip(files, np.array_split(np.arange(len(labels)), len(files)), strict=True)
        ):
            batch = {
                "batch_label": f"fake batch {k}",
                "data": images[part].reshape(len(part), 3072),
                label_key: labels[part].tolist(),
                "filenames": [f"img_{i}.png" for i in part],
            }
            with open(folder / file, "wb") as f:
                pickle.dump(batch, f, protocol=2)
        return images, labels

    train_images, train_labels = split(train_per_class, train_files)
    test_images, test_labels = split(test_per_class, test_files)
    with open(folder / meta_file, "wb") as f:
        pickle.dump({meta_key: classes}, f, protocol=2)
    return FakeCifar(Path(root), folder, train_images, train_labels, test_images, test_labels, classes)


@pytest.fixture
def make_fake_cifar() -> Callable[..., FakeCifar]:
    """Factory: `make_fake_cifar(name, root, train_per_class=2, test_per_class=1, seed=0) -> FakeCifar`."""
    return write_fake_cifar


@pytest.fixture
def fake_cifar10(tmp_path: Path) -> FakeCifar:
    """Fake CIFAR-10 (10 classes x 4 train, x 2 test) under tmp_path."""
    return write_fake_cifar("cifar10", tmp_path / "cifar10_root", train_per_class=4, test_per_class=2)


@pytest.fixture
def fake_cifar100(tmp_path: Path) -> FakeCifar:
    """Fake CIFAR-100 (100 classes x 2 train, x 1 test) under tmp_path."""
    return write_fake_cifar("cifar100", tmp_path / "cifar100_root", train_per_class=2, test_per_class=1)


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The shared real-data folder; skips the test when it is absent."""
    if not SHARED_DATA_DIR.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA_DIR} not found")
    return SHARED_DATA_DIR


@pytest.fixture(scope="session")
def lossless_cifar10_path(shared_data_dir: Path) -> Path:
    """Path of cifar10_lossless_5k.npz; skips the test when it is absent."""
    path = shared_data_dir / "cifar10_lossless_5k.npz"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope="session")
def lossless_cifar10(lossless_cifar10_path: Path) -> dict:
    """The lossless 5k subset as tensors: train/test images uint8 [N, 3, 32, 32], labels int64, classes."""
    with np.load(lossless_cifar10_path) as z:
        return {
            "train_images": torch.from_numpy(np.ascontiguousarray(z["x_train"].transpose(0, 3, 1, 2))),
            "train_labels": torch.from_numpy(z["y_train"].astype(np.int64)),
            "test_images": torch.from_numpy(np.ascontiguousarray(z["x_test"].transpose(0, 3, 1, 2))),
            "test_labels": torch.from_numpy(z["y_test"].astype(np.int64)),
            "classes": [str(c) for c in z["class_names"]],
        }


@pytest.fixture(scope="session")
def offline_cifar10_root(shared_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of the full offline CIFAR-10 copy (`root/cifar-10-batches-py/`), written once per session."""
    import importlib.util

    script = shared_data_dir / "make_cifar10.py"
    if not (script.is_file() and (shared_data_dir / "cifar10_jpeg.npz").is_file()):
        pytest.skip(f"{script} or cifar10_jpeg.npz not found")
    spec = importlib.util.spec_from_file_location("make_cifar10", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    root = tmp_path_factory.mktemp("offline_cifar10")
    module.main(str(root))
    return root
