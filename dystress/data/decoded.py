"""A machine-local cache of decoded CIFAR splits, so that a run does not unpickle the release each time.

Reading a CIFAR split from the python-pickle release costs seconds (the restricted unpickler of
:func:`dystress.io.safe_unpickle` is pure Python, and the md5 check reads every byte); the quick book
reads it 52 times. :func:`cached_split` keeps, beside the release files, in ``.dystress_decoded/``:

    <split>-images.npy   uint8 [N, 3, H, W]   (NumPy format, read with allow_pickle=False: no code)
    <split>-labels.npy   int64 [N]
    <split>.json         written last: the size and modification time of every source file, the
                         class names and the files whose md5 differs from the official release

A cache is used only when its JSON names the source files with their current size and modification
time and its arrays have the recorded shapes; anything else (a changed, damaged or partial cache) is
decoded again from the release and rewritten (atomically). A folder that cannot be written is read
from the release every time. The arrays are the release's bytes: a cached load equals a fresh one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dystress.io import atomic_write, atomic_write_json

__all__ = ["CACHE_FOLDER", "Decoded", "cached_split"]

CACHE_FOLDER = ".dystress_decoded"

#: (images uint8 [N, 3, H, W], labels int64 [N], {"classes": [...], "mismatched": [...]})
Decoded = tuple[np.ndarray, np.ndarray, dict[str, Any]]


def _stamp(sources: list[Path]) -> list[list[Any]]:
    """[name, size, mtime_ns] of every source file: what a cache must have been made from."""
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in sources]


def _load(folder: Path, split: str, sources: list[Path]) -> Decoded | None:
    """The cached split when it is complete and made from ``sources`` as they are now, else None."""
    meta_path = folder / f"{split}.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("sources") != _stamp(sources):
            return None
        images = np.load(folder / f"{split}-images.npy", allow_pickle=False)
        labels = np.load(folder / f"{split}-labels.npy", allow_pickle=False)
    except (OSError, ValueError):  # missing, partial or damaged: decode again
        return None
    if (
        images.dtype != np.uint8
        or labels.dtype != np.int64
        or list(images.shape) != meta.get("images_shape")
        or labels.shape != (images.shape[0],)
    ):
        return None
    return images, labels, {"classes": meta.get("classes"), "mismatched": meta.get("mismatched", [])}


def _save(folder: Path, split: str, sources: list[Path], decoded: Decoded) -> None:
    """Write the cache (arrays first, the JSON that validates them last); skipped when the folder
    cannot be written."""
    images, labels, info = decoded
    try:
        folder.mkdir(exist_ok=True)
        for name, array in (("images", images), ("labels", labels)):
            atomic_write(folder / f"{split}-{name}.npy", lambda f, a=array: np.save(f, a, allow_pickle=False))
        meta = {"sources": _stamp(sources), "images_shape": list(images.shape), **info}
        atomic_write_json(folder / f"{split}.json", meta)
    except OSError:  # a read-only data folder: the release is decoded every time
        pass


def cached_split(release: Path, split: str, sources: list[Path], decode: Callable[[], Decoded]) -> Decoded:
    """Split ``split`` of the release in folder ``release`` (made from the files ``sources``): from the
    cache when it is valid, else ``decode()`` and cache it. ``$DYSTRESS_NO_DATA_CACHE=1`` always decodes."""
    if os.environ.get("DYSTRESS_NO_DATA_CACHE", "") not in ("", "0"):
        return decode()
    folder = release / CACHE_FOLDER
    cached = _load(folder, split, sources)
    if cached is not None:
        return cached
    decoded = decode()
    _save(folder, split, sources, decoded)
    return decoded
