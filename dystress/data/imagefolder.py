"""Image folders (`root/train/<class>/*`, `root/val/<class>/*`) as uint8 tensors, decoded once.

Each image is resized with PIL (bilinear, antialiased) so that its shorter side is `image_size`, then
center-cropped, as torchvision's ``Resize(image_size) + CenterCrop(image_size)``. Classes are the sorted
folder names of ``root/train`` for both splits, so labels agree; normalisation statistics are ImageNet's.

Decoding runs in a pool of processes, each writing a contiguous range of rows straight into the shared
output array (nothing big is pickled back). The decoded split is cached on disk as one ``.npy`` uint8
[N, 3, S, S] plus a JSON sidecar (key, shape, classes, labels); later loads map it lazily
(``numpy.load(mmap_mode="c")``), so the 25 GB training split of ImageNet-100 at 256 px (126,689 images)
costs no RAM until its pages are read.
The cache key covers `CACHE_VERSION`, `image_size`, the split, the class list and every image's
(relative path, size in bytes, mtime_ns): adding, removing or touching a file rebuilds it. The array is
written to a hidden ``.partial`` file in the cache folder and renamed into place (then the sidecar), so a
killed decode never leaves a cache that loads (its partial file is removed by the next decode of the same
split); a corrupt cache is reported with a warning and rebuilt. Building holds a per-split lock file, so
jobs started together on one folder (the runs of an ablation) decode it once: the others wait, then map it;
the holder removes it when done, and a killed holder's lock blocks nobody (flock dies with the process).
An image that does not decode (empty, truncated, not an image) raises `dystress.io.DataFileError` naming
it, and leaves no cache file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import mmap
import multiprocessing
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dystress.data.image_dataset import ImageDataset
from dystress.data.transforms import NORMALIZATION
from dystress.io import DataFileError, atomic_write_text, make_temp_file, path_names_fd, remove_orphan_partials

try:
    import fcntl  # POSIX: the build lock
except ImportError:  # pragma: no cover - Windows: builds run unlocked
    fcntl = None

#: File extensions (lower case) that the image-folder loader reads.
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png")

#: Version of the cache layout and of the decoding; bump it whenever either changes.
CACHE_VERSION = 1

#: Environment variable naming the cache folder (overrides the default, not an explicit `cache_dir`).
CACHE_ENV = "DYSTRESS_CACHE"

_MAX_DEFAULT_WORKERS = 32


@dataclass(frozen=True)
class ImageFolderIndex:
    """The images of one split, in load order: `files[i]` (relative to `root`) has label `labels[i]`.

    `stats[i]` = (size in bytes, mtime_ns) of `files[i]`, as seen by the scan (they feed the cache key).
    """

    root: Path
    split: str
    classes: list[str]
    files: list[str]
    labels: list[int]
    stats: list[tuple[int, int]]

    @property
    def paths(self) -> list[str]:
        """Absolute-or-as-given paths of the images (`root / file`), as strings."""
        return [str(self.root / f) for f in self.files]

    def cache_key(self, image_size: int) -> str:
        """sha256 (hex) of everything the decoded array depends on."""
        payload = {
            "version": CACHE_VERSION,
            "image_size": image_size,
            "split": self.split,
            "classes": self.classes,
            "files": [[f, s, t] for f, (s, t) in zip(self.files, self.stats, strict=True)],
        }
        return hashlib.sha256(json.dumps(payload, separators=(",", ":")).encode("utf-8")).hexdigest()


def scan_image_folder(root: str | Path, train: bool) -> ImageFolderIndex:
    """List `root/train/<class>/*` (or `root/val/<class>/*`) images with `IMAGE_EXTENSIONS` (any case).

    Files are sorted by name within a class, classes by name; a val class missing from train is an
    error, a train class missing from val is fine (it simply has no val images).
    """
    if not isinstance(train, bool):
        raise ValueError(f"train must be a bool, got {train!r}")
    root = Path(root)
    split = "train" if train else "val"
    train_dir, split_dir = root / "train", root / split
    for d in {train_dir, split_dir}:
        if not d.is_dir():
            raise FileNotFoundError(f"imagefolder: {d} not found; expected {root}/{split}/<class>/*.jpg|png")
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not classes:
        raise FileNotFoundError(f"imagefolder: {train_dir} holds no class folders")
    split_classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    unknown = sorted(set(split_classes) - set(classes))
    if unknown:
        raise ValueError(f"imagefolder: classes {unknown} of {split_dir} are not in {train_dir}")
    files: list[str] = []
    labels: list[int] = []
    stats: list[tuple[int, int]] = []
    for label, cls in enumerate(classes):
        cls_dir = split_dir / cls
        if not cls_dir.is_dir():
            continue
        with os.scandir(cls_dir) as it:
            entries = sorted(
                (e for e in it if Path(e.name).suffix.lower() in IMAGE_EXTENSIONS and e.is_file()),
                key=lambda e: e.name,
            )
        for entry in entries:
            st = entry.stat()
            files.append(f"{split}/{cls}/{entry.name}")
            labels.append(label)
            stats.append((int(st.st_size), int(st.st_mtime_ns)))
    if not files:
        raise FileNotFoundError(f"imagefolder: no {'/'.join(IMAGE_EXTENSIONS)} images under {split_dir}")
    return ImageFolderIndex(root=root, split=split, classes=classes, files=files, labels=labels, stats=stats)


def default_cache_dir(root: str | Path) -> Path:
    """`$DYSTRESS_CACHE` if set, else `<root>/.dystress_cache` if root is writable, else ~/.cache/dystress."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    root = Path(root)
    if os.access(root, os.W_OK):
        return root / ".dystress_cache"
    return Path.home() / ".cache" / "dystress"


def resolve_workers(workers: int | None, num_images: int | None = None) -> int:
    """Number of decoding processes: None -> min(usable CPUs, 32); 0 or 1 -> 1 (in-process); capped at N."""
    if workers is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        workers = min(cpus, _MAX_DEFAULT_WORKERS)
    workers = max(workers, 1)
    return min(workers, num_images) if num_images is not None else workers


def load_image_folder(
    root: str | Path,
    train: bool,
    image_size: int,
    workers: int | None = None,
    cache: bool = True,
    cache_dir: str | Path | None = None,
) -> ImageDataset:
    """Read one split of an image folder as uint8 [N, 3, image_size, image_size] (see the module docstring).

    workers: decoding processes (None: min(CPUs, 32); 0 or 1: in the calling process). cache: when true,
    the split is decoded once into `cache_dir` (None: `default_cache_dir(root)`) and memory-mapped from
    there (copy-on-write: writes to the tensor stay private); when false, it is decoded into memory and
    nothing is written (`cache_dir` must then be None). The result is the same bytes in every case.
    """
    if not (isinstance(image_size, int) and not isinstance(image_size, bool) and image_size >= 1):
        raise ValueError(f"image_size must be an int >= 1, got {image_size!r}")
    if workers is not None and not (
        isinstance(workers, int) and not isinstance(workers, bool) and workers >= 0
    ):
        raise ValueError(f"workers must be None or an int >= 0, got {workers!r}")
    if not isinstance(cache, bool):
        raise ValueError(f"cache must be a bool, got {cache!r}")
    if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
        raise ValueError(f"cache_dir must be None or a path, got {cache_dir!r}")
    if not cache and cache_dir is not None:
        raise ValueError(f"cache_dir must be None when cache=False, got {cache_dir!r}")
    index = scan_image_folder(root, train)
    if cache:
        folder = Path(cache_dir) if cache_dir is not None else default_cache_dir(root)
        images = _cached_images(index, image_size, folder, workers)
    else:
        images = decode_images(index.paths, image_size, workers)
    mean, std = NORMALIZATION["imagenet"]
    return ImageDataset(
        images=torch.from_numpy(images),
        labels=torch.tensor(index.labels, dtype=torch.int64),
        classes=list(index.classes),
        name="imagefolder",
        mean=mean,
        std=std,
    )


def decode_images(paths: Sequence[str | Path], image_size: int, workers: int | None = None) -> np.ndarray:
    """Decode `paths` into a new in-memory uint8 array [N, 3, image_size, image_size].

    With several workers the rows are written into anonymous shared memory inherited by forked
    processes; where `fork` is unavailable the decode runs in-process.
    """
    paths = [str(p) for p in paths]
    shape = (len(paths), 3, image_size, image_size)
    n_workers = resolve_workers(workers, len(paths))
    if n_workers <= 1 or not paths or "fork" not in multiprocessing.get_all_start_methods():
        out = np.empty(shape, dtype=np.uint8)
        _decode_rows(out, paths, 0, len(paths), image_size)
        return out
    buffer = mmap.mmap(-1, math.prod(shape))
    _decode_in_pool(buffer, shape, paths, image_size, n_workers)
    return np.frombuffer(buffer, dtype=np.uint8).reshape(shape)


# ------------------------------------------------------------------------------------------- decoding


def _resize_center_crop(img, size: int) -> np.ndarray:  # img: PIL.Image.Image
    """Shorter side to `size` (bilinear), then the central size x size square: uint8 [size, size, 3]."""
    from PIL import Image

    w, h = img.size
    if (w <= h and w != size) or (h < w and h != size):
        short, long = (w, h) if w <= h else (h, w)
        new_long = int(size * long / short)
        img = img.resize((size, new_long) if w <= h else (new_long, size), Image.Resampling.BILINEAR)
    w, h = img.size
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return np.array(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


def _decode_one(path: str, image_size: int) -> np.ndarray:
    """One image, converted to RGB, resized and center-cropped: uint8 [image_size, image_size, 3]."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return _resize_center_crop(img.convert("RGB"), image_size)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        # an empty, truncated or foreign file (PIL.UnidentifiedImageError is an OSError), or one unreadable
        raise DataFileError(
            f"imagefolder: cannot decode {path}: {err}; remove or replace that file"
        ) from None


def _decode_rows(out: np.ndarray, paths: Sequence[str], start: int, stop: int, image_size: int) -> int:
    """Decode paths[start:stop] into out[start:stop] (out: uint8 [N, 3, S, S]); returns the row count."""
    for i in range(start, stop):
        out[i] = _decode_one(paths[i], image_size).transpose(2, 0, 1)
    return stop - start


_WORKER_STATE: dict[str, Any] = {}


def _worker_init(target: str | mmap.mmap, shape: tuple[int, ...], paths: list[str], image_size: int) -> None:
    """Pool initializer: open the output (a .npy file path, or an inherited anonymous mapping) once."""
    if isinstance(target, str):
        out = np.load(target, mmap_mode="r+")
    else:
        out = np.frombuffer(target, dtype=np.uint8).reshape(shape)
    _WORKER_STATE.update(out=out, paths=paths, image_size=image_size)


def _worker_decode(bounds: tuple[int, int]) -> int:
    """Decode rows [start, stop) into the worker's output (dirty pages are fsynced once by the parent)."""
    state = _WORKER_STATE
    return _decode_rows(state["out"], state["paths"], bounds[0], bounds[1], state["image_size"])


def _decode_in_pool(
    target: str | mmap.mmap, shape: tuple[int, ...], paths: list[str], image_size: int, workers: int
) -> None:
    """Decode every path into `target` with `workers` processes, each taking contiguous row ranges."""
    n = len(paths)
    chunk = max(1, min(256, math.ceil(n / (4 * workers))))
    ranges = [(start, min(start + chunk, n)) for start in range(0, n, chunk)]
    method = "fork" if isinstance(target, mmap.mmap) else None  # an anonymous mapping is only inherited
    context = multiprocessing.get_context(method)
    # an executor, not a Pool: a worker that dies without raising (a decoder crash, an OOM kill) breaks
    # it with BrokenProcessPool instead of leaving the parent waiting forever for the lost rows
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_worker_init, initargs=(target, shape, paths, image_size)
    ) as executor:
        done = sum(executor.map(_worker_decode, ranges))
    if done != n:  # pragma: no cover - the pool raises on any worker error
        raise RuntimeError(f"imagefolder: decoded {done} of {n} images")


# ---------------------------------------------------------------------------------------------- cache


def _cache_names(index: ImageFolderIndex, image_size: int) -> tuple[str, str]:
    """(prefix shared by every version of this root/split/size, full stem including the key)."""
    resolved = str(index.root.resolve())
    tag = hashlib.sha256(resolved.encode("utf-8")).hexdigest()[:8]
    prefix = f"{index.root.resolve().name or 'root'}-{tag}-{index.split}-{image_size}px-"
    return prefix, prefix + index.cache_key(image_size)[:24]


def _cached_images(index: ImageFolderIndex, image_size: int, folder: Path, workers: int | None) -> np.ndarray:
    """The decoded split from the cache in `folder`, decoding and writing it first if absent or invalid.

    The build runs under `_build_lock`, and the cache is checked again once the lock is held, so jobs
    started together on the same folder (an ablation sweep) decode it once: the others wait, then map it.
    """
    prefix, stem = _cache_names(index, image_size)
    array_path, meta_path = folder / f"{stem}.npy", folder / f"{stem}.json"
    shape = (len(index.files), 3, image_size, image_size)
    key = index.cache_key(image_size)
    images = _open_cache(array_path, meta_path, key, shape, index.labels, warn=False)
    if images is not None:
        return images
    folder.mkdir(parents=True, exist_ok=True)
    with _build_lock(folder, prefix):
        images = _open_cache(array_path, meta_path, key, shape, index.labels)
        if images is not None:  # built by another process while this one waited
            return images
        remove_orphan_partials(folder, prefix)  # of killed decodes of this root/split/size
        _write_cache(index, image_size, array_path, shape, workers)
        meta = {
            "version": CACHE_VERSION,
            "key": key,
            "shape": list(shape),
            "root": str(index.root.resolve()),
            "split": index.split,
            "classes": index.classes,
            "labels": index.labels,
        }
        atomic_write_text(meta_path, json.dumps(meta, sort_keys=True) + "\n")
        _remove_stale(folder, prefix, stem)
    images = _open_cache(array_path, meta_path, key, shape, index.labels)
    if images is None:  # pragma: no cover - only if the folder is modified while we write
        raise RuntimeError(f"imagefolder: the cache {array_path} just written does not load")
    return images


@contextlib.contextmanager
def _build_lock(folder: Path, prefix: str) -> Iterator[None]:
    """Hold an exclusive `flock` on `folder/.<prefix>build.lock` (one per root/split/size) while building.

    A process that finds the lock taken says so on stderr and waits. The holder removes the lock file
    before releasing it, so nothing is left behind; a waiter that then gets the lock of the removed file
    takes the lock of the current one instead (`_lock_build_file`). A process killed while holding it
    leaves an unlocked file, which the next build takes and removes. Without flock (Windows, a file
    system that lacks it) the build goes on unlocked: concurrent jobs then each decode, still safely.
    """
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    path = folder / f".{prefix}build.lock"
    fd, locked = _lock_build_file(path, f"{prefix.rstrip('-')} into {folder}")
    try:
        yield
    finally:
        if locked:  # removed while held: no other process can hold this file's lock now
            with contextlib.suppress(OSError):
                os.unlink(path)
        os.close(fd)  # releases the lock


def _lock_build_file(path: Path, what: str) -> tuple[int, bool]:
    """Open `path` and take its exclusive flock, waiting for another holder: (fd, whether locked).

    Retries when the file it locked was removed (or replaced) by the previous holder meanwhile, so the
    lock held always belongs to the file that `path` names.
    """
    announced = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not announced:
                    print(
                        f"imagefolder: another process is decoding {what}; waiting",
                        file=sys.stderr,
                        flush=True,
                    )
                    announced = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:  # no flock here (Lustre noflock, some FUSE): go on unlocked
                return fd, False
            if path_names_fd(path, fd):
                return fd, True
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _open_cache(
    array_path: Path, meta_path: Path, key: str, shape: tuple[int, ...], labels: list[int], warn: bool = True
) -> np.ndarray | None:
    """The memory-mapped cached array, or None (with a warning, if `warn`, when a cache exists but is
    invalid)."""
    if not array_path.exists() and not meta_path.exists():
        return None
    problem = None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("version") != CACHE_VERSION or meta.get("key") != key:
            problem = "its sidecar does not match the images"
        elif meta.get("shape") != list(shape) or meta.get("labels") != labels:
            problem = "its sidecar holds another shape or other labels"
    except (OSError, ValueError) as err:
        problem = f"its sidecar {meta_path.name} is unreadable ({err})"
    if problem is None:
        try:
            images = np.load(array_path, mmap_mode="c")
        except (OSError, ValueError, EOFError) as err:
            problem = f"the array does not load ({err})"
        else:
            expected_bytes = images.offset + math.prod(shape) if isinstance(images, np.memmap) else -1
            if images.dtype != np.uint8 or images.shape != shape:
                problem = f"the array is {images.dtype} {images.shape}, expected uint8 {shape}"
            elif os.path.getsize(array_path) != expected_bytes:
                problem = f"the file holds {os.path.getsize(array_path)} bytes, expected {expected_bytes}"
            else:
                return images
    if warn:
        message = f"imagefolder: ignoring the cache {array_path}: {problem}; decoding again"
        warnings.warn(message, stacklevel=4)
    return None


def _write_cache(
    index: ImageFolderIndex, image_size: int, array_path: Path, shape: tuple[int, ...], workers: int | None
) -> None:
    """Decode into a hidden `.partial` file beside `array_path`, fsync it, then rename it into place.

    The partial file is locked (`flock`, by `make_temp_file`) while it is written, so that
    `remove_orphan_partials` can tell the file of a killed decode (lock released by the kernel) from one
    being written by another process.
    """
    fd, tmp = make_temp_file(array_path)  # locked until closed, after the rename
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        paths = index.paths
        n_workers = resolve_workers(workers, len(paths))
        if n_workers <= 1:
            _decode_rows(out, paths, 0, len(paths), image_size)
            out.flush()
            del out
        else:
            out.flush()
            del out  # the workers map the file themselves
            _decode_in_pool(tmp, shape, paths, image_size, n_workers)
        os.fsync(fd)
        os.replace(tmp, array_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    finally:
        os.close(fd)


def _remove_stale(folder: Path, prefix: str, stem: str) -> None:
    """Delete older versions (other keys) of this root/split/size's cache."""
    for path in folder.iterdir():
        if path.name.startswith(prefix) and path.suffix in (".npy", ".json") and path.stem != stem:
            try:
                path.unlink()
            except OSError:  # pragma: no cover - removed concurrently, or not ours to remove
                pass
