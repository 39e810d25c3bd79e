from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

import dystress.data.imagefolder as imagefolder
from dystress.data.datasets import load_dataset
from dystress.data.imagefolder import (
    CACHE_ENV,
    default_cache_dir,
    load_image_folder,
    resolve_workers,
    scan_image_folder,
)
from dystress.data.transforms import NORMALIZATION
from dystress.io import DataFileError

# (height, width): wide / tall / square, larger and smaller than the target, odd crop margins
SHAPES = [(16, 40), (21, 16), (48, 64), (23, 23), (80, 17), (37, 100), (12, 12), (30, 9), (16, 16), (19, 25)]
TRAIN_CLASSES = ["ant", "bee", "cat"]


@pytest.fixture(autouse=True)
def _no_cache_env(monkeypatch):
    monkeypatch.delenv(CACHE_ENV, raising=False)


def _save(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def _make_folder(root: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """3 train classes x 10 images (PNG/JPEG, RGB/L/RGBA, all SHAPES) and a val split without "bee".

    Returns the exact pixels of the lossless RGB PNGs by relative path (the float64 reference uses them).
    """
    rng = np.random.default_rng(seed)
    pngs: dict[str, np.ndarray] = {}
    for c, cls in enumerate(TRAIN_CLASSES):
        for i, (h, w) in enumerate(SHAPES):
            kind = (c + i) % 4
            rel = f"train/{cls}/img_{i:02d}" + (".jpg", ".png", ".PNG", ".JPEG")[kind]
            if kind == 0:  # RGB JPEG
                _save(root / rel, rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            elif kind == 1:  # RGB PNG (exact pixels known)
                pngs[rel] = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                _save(root / rel, pngs[rel])
            elif kind == 2:  # RGBA PNG
                _save(root / rel, rng.integers(0, 256, (h, w, 4), dtype=np.uint8))
            else:  # grayscale JPEG
                _save(root / rel, rng.integers(0, 256, (h, w), dtype=np.uint8))
    (root / "train" / "ant" / "notes.txt").write_text("not an image")
    for i, (h, w) in enumerate(SHAPES[:4]):
        _save(
            root / "val" / ("ant" if i % 2 else "cat") / f"v{i}.png",
            rng.integers(0, 256, (h, w, 3), np.uint8),
        )
    return pngs


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "data"
    pngs = _make_folder(root)
    return root, pngs


def _torchvision_reference(path: Path, size: int) -> np.ndarray:
    """torchvision's Resize(size) + CenterCrop(size) on the PIL image converted to RGB: [3, size, size]."""
    with Image.open(path) as img:
        out = TF.center_crop(
            TF.resize(img.convert("RGB"), size, interpolation=InterpolationMode.BILINEAR), size
        )
    return np.array(out).transpose(2, 0, 1)


def _triangle_resize_axis(a: np.ndarray, out_len: int, axis: int) -> np.ndarray:
    """Antialiased bilinear resampling along `axis` in float64, written out with loops (PIL's definition:
    output x samples the input around (x + 0.5) * in/out with a triangle of half-width max(in/out, 1))."""
    a = np.moveaxis(a, axis, 0)
    in_len = a.shape[0]
    scale = in_len / out_len
    width = max(scale, 1.0)
    out = np.zeros((out_len, *a.shape[1:]), dtype=np.float64)
    for x in range(out_len):
        center = (x + 0.5) * scale
        lo, hi = max(int(center - width + 0.5), 0), min(int(center + width + 0.5), in_len)
        weights = [max(0.0, 1.0 - abs((j - center + 0.5) / width)) for j in range(lo, hi)]
        total = sum(weights)
        for j, wgt in zip(range(lo, hi), weights, strict=True):
            out[x] += a[j] * (wgt / total)
    return np.moveaxis(out, 0, axis)


def _float64_reference(array: np.ndarray, size: int) -> np.ndarray:
    """Shorter side to `size` (long side truncated), central size x size crop: float64 [3, size, size]."""
    h, w = array.shape[:2]
    out = array.astype(np.float64)
    if min(h, w) != size:
        new_h, new_w = (size, int(size * w / h)) if h < w else (int(size * h / w), size)
        out = _triangle_resize_axis(_triangle_resize_axis(out, new_w, 1), new_h, 0)
    h, w = out.shape[:2]
    top, left = int(round((h - size) / 2)), int(round((w - size) / 2))
    return out[top : top + size, left : left + size].transpose(2, 0, 1)


# ------------------------------------------------------------------------------------------- values


@pytest.mark.parametrize("size", [8, 16, 21])
def test_values_match_float64_reference(folder, size):
    root, pngs = folder
    ds = load_image_folder(root, train=True, image_size=size, cache=False, workers=0)
    files = scan_image_folder(root, True).files
    assert len(pngs) >= 7
    for rel, array in pngs.items():
        got = ds.images[files.index(rel)].numpy().astype(np.float64)
        ref = _float64_reference(array, size)
        assert np.abs(got - ref).max() <= 1.0 + 1e-9, rel  # PIL rounds to uint8 after each pass
        if min(array.shape[:2]) == size:  # pure crop: exact
            assert np.array_equal(got, ref), rel


@pytest.mark.parametrize("size", [8, 16])
def test_values_match_torchvision_on_every_format_and_mode(folder, size):
    root, _ = folder
    ds = load_image_folder(root, train=True, image_size=size, cache=False, workers=0)
    files = scan_image_folder(root, True).files
    assert ds.images.shape == (len(files), 3, size, size) and ds.images.dtype == torch.uint8
    for i, rel in enumerate(files):
        assert np.array_equal(ds.images[i].numpy(), _torchvision_reference(root / rel, size)), rel


def test_grayscale_and_rgba_become_rgb(tmp_path):
    gray = np.arange(16 * 16, dtype=np.uint8).reshape(16, 16)
    rgba = np.random.default_rng(1).integers(0, 256, (16, 24, 4), dtype=np.uint8)
    _save(tmp_path / "train" / "a" / "gray.png", gray)
    _save(tmp_path / "train" / "a" / "rgba.png", rgba)
    ds = load_image_folder(tmp_path, train=True, image_size=16, cache=False)
    assert np.array_equal(ds.images[0].numpy(), np.broadcast_to(gray, (3, 16, 16)))
    assert np.array_equal(ds.images[1].numpy(), rgba[:, 4:20, :3].transpose(2, 0, 1))  # alpha dropped


def test_classes_labels_order_and_val_missing_class(folder):
    root, _ = folder
    ds = load_dataset("imagefolder", root, train=True, image_size=8)
    per_class = len(SHAPES)
    assert ds.classes == TRAIN_CLASSES and ds.name == "imagefolder" and len(ds) == 3 * per_class
    assert ds.labels.tolist() == [c for c in range(3) for _ in range(per_class)]
    assert (ds.mean, ds.std) == NORMALIZATION["imagenet"]
    files = scan_image_folder(root, True).files
    assert files[:3] == ["train/ant/img_00.jpg", "train/ant/img_01.png", "train/ant/img_02.PNG"]
    val = load_dataset("imagefolder", root, train=False, image_size=8)
    assert val.classes == TRAIN_CLASSES and val.labels.tolist() == [0, 0, 2, 2]  # no "bee" in val
    assert scan_image_folder(root, False).files == [
        "val/ant/v1.png",
        "val/ant/v3.png",
        "val/cat/v0.png",
        "val/cat/v2.png",
    ]


# --------------------------------------------------------------------------------- parallel decoding


@pytest.mark.parametrize("cache", [False, True])
@pytest.mark.parametrize("workers", [1, 2, 3, None])
def test_parallel_decode_is_byte_identical(folder, tmp_path, workers, cache):
    root, _ = folder
    serial = load_image_folder(root, train=True, image_size=12, workers=0, cache=False)
    cache_dir = tmp_path / f"cache_{workers}" if cache else None
    parallel = load_image_folder(
        root, train=True, image_size=12, workers=workers, cache=cache, cache_dir=cache_dir
    )
    assert torch.equal(parallel.images, serial.images) and torch.equal(parallel.labels, serial.labels)


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize(("name", "content"), [("2.png", b"not a png"), ("2.jpg", b""), ("2.jpeg", None)])
def test_undecodable_image_names_the_file(tmp_path, workers, name, content):
    """A foreign, empty (zero-byte) or truncated image: one DataFileError naming it, nothing left behind,
    and a load after the file is fixed decodes without hindrance."""
    for i in range(4):
        _save(tmp_path / "train" / "a" / f"{i}.png", np.zeros((8, 8, 3), dtype=np.uint8))
    (tmp_path / "train" / "a" / "2.png").unlink()
    bad = tmp_path / "train" / "a" / name
    if content is None:  # a JPEG cut short after its header
        _save(bad, np.full((32, 32, 3), 7, dtype=np.uint8))
        bad.write_bytes(bad.read_bytes()[:200])
    else:
        bad.write_bytes(content)
    with pytest.raises(DataFileError, match=f"cannot decode {bad}") as caught:
        load_image_folder(tmp_path, train=True, image_size=8, workers=workers)
    assert str(bad) in str(caught.value).splitlines()[0]
    assert _cache_files(tmp_path / ".dystress_cache") == []  # no array, no partial file, no lock
    bad.unlink()  # fixed: the next load decodes, undisturbed by the failed one
    _save(bad.with_suffix(".png"), np.zeros((8, 8, 3), dtype=np.uint8))
    assert len(load_image_folder(tmp_path, train=True, image_size=8, workers=workers)) == 4


def test_resolve_workers(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert resolve_workers(None) == 32 and resolve_workers(None, 5) == 5
    assert resolve_workers(0) == resolve_workers(1) == 1 and resolve_workers(7, 3) == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert resolve_workers(None, 100) == 2


# ------------------------------------------------------------------------------------------- cache


class _DecodeSpy:
    """Counts in-process decodes (use workers=0), optionally failing."""

    def __init__(self, monkeypatch, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail
        original = imagefolder._decode_one

        def spy(path, image_size):
            self.calls += 1
            if self.fail:
                raise AssertionError(f"decoded {path} although the cache is valid")
            return original(path, image_size)

        monkeypatch.setattr(imagefolder, "_decode_one", spy)


def _cache_files(cache_dir: Path, pattern: str = "*") -> list[Path]:
    return sorted(cache_dir.glob(pattern)) if cache_dir.exists() else []


def test_cache_is_written_once_then_mapped_without_decoding(folder, monkeypatch):
    root, _ = folder
    reference = load_image_folder(root, train=True, image_size=12, cache=False)
    spy = _DecodeSpy(monkeypatch)
    first = load_image_folder(root, train=True, image_size=12, workers=0)
    assert spy.calls == len(first) and torch.equal(first.images, reference.images)
    cache_dir = root / ".dystress_cache"
    # the array and its sidecar; the build lock is removed by its holder once the cache is written
    assert [p.suffix for p in _cache_files(cache_dir)] == [".json", ".npy"]
    spy.fail = True
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: neither from the cache check nor from torch.from_numpy
        second = load_image_folder(root, train=True, image_size=12, workers=0)
    assert torch.equal(second.images, reference.images) and torch.equal(second.labels, reference.labels)
    assert second.classes == reference.classes
    mapped = np.load(_cache_files(cache_dir, "*.npy")[0], mmap_mode="c")
    assert isinstance(mapped, np.memmap) and mapped.shape == (len(reference), 3, 12, 12)
    second.images[0] = 0  # copy-on-write: the cache file is untouched
    third = load_image_folder(root, train=True, image_size=12, workers=0)
    assert torch.equal(third.images, reference.images)
    # other splits and sizes have their own entries
    spy.fail = False
    load_image_folder(root, train=False, image_size=12, workers=0)
    load_image_folder(root, train=True, image_size=8, workers=0)
    assert len(_cache_files(cache_dir, "*.npy")) == 3


def _add(root):
    _save(root / "train" / "bee" / "new.png", np.full((20, 30, 3), 7, dtype=np.uint8))


def _remove(root):
    sorted((root / "train" / "cat").iterdir())[3].unlink()


def _touch(root):
    path = root / "train" / "ant" / "img_01.png"
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def _rewrite(root):
    path = root / "train" / "ant" / "img_01.png"
    st = path.stat()
    with Image.open(path) as img:
        flipped = np.array(img)[::-1].copy()
    _save(path, flipped)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000))


@pytest.mark.parametrize("change", [_add, _remove, _touch, _rewrite])
def test_cache_invalidated_by_added_removed_touched_files(folder, monkeypatch, change):
    root, _ = folder
    load_image_folder(root, train=True, image_size=8, workers=0)
    change(root)
    spy = _DecodeSpy(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a changed folder is not a corrupt cache
        ds = load_image_folder(root, train=True, image_size=8, workers=0)
    assert spy.calls == len(ds)
    reference = load_image_folder(root, train=True, image_size=8, workers=0, cache=False)
    assert torch.equal(ds.images, reference.images) and torch.equal(ds.labels, reference.labels)
    cache_dir = root / ".dystress_cache"
    assert (
        len(_cache_files(cache_dir, "*.npy")) == len(_cache_files(cache_dir, "*.json")) == 1
    )  # stale removed


def test_new_train_class_invalidates_val_cache(folder, monkeypatch):
    root, _ = folder
    before = load_image_folder(root, train=False, image_size=8, workers=0)
    _save(root / "train" / "aardvark" / "x.png", np.zeros((8, 8, 3), dtype=np.uint8))
    spy = _DecodeSpy(monkeypatch)
    after = load_image_folder(root, train=False, image_size=8, workers=0)
    assert spy.calls == len(after) == len(before)
    assert after.labels.tolist() == [x + 1 for x in before.labels.tolist()] and after.classes[0] == "aardvark"


def _truncate(npy: Path, meta: Path) -> None:
    npy.write_bytes(npy.read_bytes()[:-100])


def _append(npy: Path, meta: Path) -> None:
    npy.write_bytes(npy.read_bytes() + b"\0" * 10)


def _wrong_dtype(npy: Path, meta: Path) -> None:
    shape = np.load(npy, mmap_mode="r").shape
    np.save(npy, np.zeros(shape, dtype=np.int16))


def _wrong_shape(npy: Path, meta: Path) -> None:
    shape = np.load(npy, mmap_mode="r").shape
    np.save(npy, np.zeros((shape[0] - 1, *shape[1:]), dtype=np.uint8))


def _garbage(npy: Path, meta: Path) -> None:
    npy.write_bytes(b"garbage")


def _no_sidecar(npy: Path, meta: Path) -> None:
    meta.unlink()


def _bad_sidecar(npy: Path, meta: Path) -> None:
    meta.write_text("{not json")


def _no_array(npy: Path, meta: Path) -> None:
    npy.unlink()


@pytest.mark.parametrize(
    "corrupt",
    [_truncate, _append, _wrong_dtype, _wrong_shape, _garbage, _no_sidecar, _bad_sidecar, _no_array],
)
def test_corrupt_cache_is_reported_and_rebuilt(folder, monkeypatch, corrupt):
    root, _ = folder
    reference = load_image_folder(root, train=True, image_size=8, cache=False)
    load_image_folder(root, train=True, image_size=8, workers=0)  # not kept: the file is corrupted in place
    cache_dir = root / ".dystress_cache"
    (npy,), (meta,) = _cache_files(cache_dir, "*.npy"), _cache_files(cache_dir, "*.json")
    corrupt(npy, meta)
    spy = _DecodeSpy(monkeypatch)
    with pytest.warns(UserWarning, match="ignoring the cache"):
        rebuilt = load_image_folder(root, train=True, image_size=8, workers=0)
    assert spy.calls == len(reference) and torch.equal(rebuilt.images, reference.images)
    spy.fail = True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = load_image_folder(root, train=True, image_size=8, workers=0)
    assert torch.equal(again.images, reference.images)


def test_failed_decode_leaves_no_cache(folder, monkeypatch):
    root, _ = folder
    calls = []
    original = imagefolder._decode_one

    def dies_midway(path, image_size):
        calls.append(path)
        if len(calls) == 10:
            raise KeyboardInterrupt
        return original(path, image_size)

    monkeypatch.setattr(imagefolder, "_decode_one", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        load_image_folder(root, train=True, image_size=8, workers=0)
    # nothing: the partial array is removed and the build lock too (by its holder, while held)
    assert _cache_files(root / ".dystress_cache") == []


_KILLED_CHILD = """
import sys, time
import dystress.data.imagefolder as m
original = m._decode_one
def slow(path, size):
    time.sleep(0.05)
    return original(path, size)
m._decode_one = slow
m.load_image_folder(sys.argv[1], train=True, image_size=8, workers=0)
"""


def test_killed_decode_leaves_a_partial_file_that_is_never_loaded(folder, monkeypatch):
    root, _ = folder
    cache_dir = root / ".dystress_cache"
    child = subprocess.Popen([sys.executable, "-c", _KILLED_CHILD, str(root)], env=os.environ.copy())
    try:
        deadline = time.monotonic() + 60
        while not _cache_files(cache_dir, ".*.partial") and time.monotonic() < deadline:
            assert child.poll() is None, "the child ended before being killed"
            time.sleep(0.05)
        time.sleep(0.3)  # a few images into the decode
    finally:
        child.kill()
        child.wait()
    assert len(_cache_files(cache_dir, ".*.partial")) == 1 and not _cache_files(cache_dir, "*.npy")
    spy = _DecodeSpy(monkeypatch)
    ds = load_image_folder(root, train=True, image_size=8, workers=0)
    reference = load_image_folder(root, train=True, image_size=8, cache=False)
    assert spy.calls == len(ds) and torch.equal(ds.images, reference.images)
    if imagefolder.fcntl is not None:  # the orphan and the dead decode's lock file are removed (POSIX)
        assert _cache_files(cache_dir, ".*.partial") == []
        assert _cache_files(cache_dir, ".*build.lock") == []


@pytest.mark.skipif(imagefolder.fcntl is None, reason="flock is POSIX")
def test_partial_file_being_written_is_kept(folder):
    """A locked partial file belongs to a live decode (another process): never removed."""
    import fcntl

    root, _ = folder
    prefix = imagefolder._cache_names(scan_image_folder(root, True), 8)[0]
    cache_dir = root / ".dystress_cache"
    cache_dir.mkdir()
    live, orphan = cache_dir / f".{prefix}aaaa.npy.x.partial", cache_dir / f".{prefix}bbbb.npy.y.partial"
    other = cache_dir / ".someone-else-train-8px-cccc.npy.z.partial"
    for path in (live, orphan, other):
        path.write_bytes(b"partial")
    with open(live, "rb") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        load_image_folder(root, train=True, image_size=8, workers=0)
        assert live.exists() and not orphan.exists() and other.exists()


_GATED_CHILD = """
import os, sys, time
import torch
import dystress.data.imagefolder as m
root, log, gate = sys.argv[1:4]
original = m._write_cache
def gated(*args, **kwargs):
    with open(log, "a") as f:
        f.write(f"{os.getpid()}\\n")
    while not os.path.exists(gate):
        time.sleep(0.02)
    return original(*args, **kwargs)
m._write_cache = gated
ds = m.load_image_folder(root, train=True, image_size=8, workers=0)
print(int(ds.images.to(torch.int64).sum()), len(ds))
"""


def _wait_for(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.skipif(imagefolder.fcntl is None, reason="flock is POSIX")
def test_concurrent_jobs_decode_once(folder, tmp_path):
    """Two processes loading the same uncached split: the second waits for the first's build, then maps
    its cache (one decode in all), and both get the same pixels."""
    root, _ = folder
    log, gate = tmp_path / "decodes.log", tmp_path / "gate"
    reference = load_image_folder(root, train=True, image_size=8, cache=False)
    expected = f"{int(reference.images.to(torch.int64).sum())} {len(reference)}"
    args = [sys.executable, "-c", _GATED_CHILD, str(root), str(log), str(gate)]
    err_b = tmp_path / "b.err"
    first = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    second = None
    try:
        _wait_for(lambda: log.exists() and log.read_text().count("\n") == 1, "the first build to start")
        with open(err_b, "w") as err:
            second = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, text=True)
        _wait_for(lambda: "another process is decoding" in err_b.read_text(), "the second job to wait")
        gate.touch()
        outs = [first.communicate(timeout=120)[0], second.communicate(timeout=120)[0]]
    finally:
        for child in (first, second):
            if child is not None and child.poll() is None:
                child.kill()
    assert (first.returncode, second.returncode) == (0, 0)
    assert [out.strip() for out in outs] == [expected, expected]
    assert log.read_text().split() == [str(first.pid)]  # one decode, by the first job
    assert len(_cache_files(root / ".dystress_cache", "*.npy")) == 1
    assert _cache_files(root / ".dystress_cache", ".*build.lock") == []  # removed by its last holder


def test_cache_false_writes_nothing(folder):
    root, _ = folder
    before = sorted(p for p in root.rglob("*"))
    load_image_folder(root, train=True, image_size=8, cache=False, workers=2)
    assert sorted(p for p in root.rglob("*")) == before


def test_cache_dir_argument_and_environment(folder, tmp_path, monkeypatch):
    root, _ = folder
    load_image_folder(root, train=True, image_size=8, cache_dir=tmp_path / "explicit")
    assert len(_cache_files(tmp_path / "explicit", "*.npy")) == 1 and not (root / ".dystress_cache").exists()
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "from_env"))
    assert default_cache_dir(root) == tmp_path / "from_env"
    load_dataset("imagefolder", root, train=True, image_size=8)
    assert len(_cache_files(tmp_path / "from_env", "*.npy")) == 1 and not (root / ".dystress_cache").exists()


def test_default_cache_dir_without_environment(tmp_path, monkeypatch):
    assert default_cache_dir(tmp_path) == tmp_path / ".dystress_cache"
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir(tmp_path) == tmp_path / "home" / ".cache" / "dystress"


# ------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"image_size": 0}, "image_size"),
        ({"image_size": True}, "image_size"),
        ({"image_size": "8"}, "image_size"),
        ({"workers": -1}, "workers"),
        ({"workers": 1.5}, "workers"),
        ({"workers": True}, "workers"),
        ({"cache": "yes"}, "cache"),
        ({"cache_dir": 3}, "cache_dir"),
        ({"cache": False, "cache_dir": "somewhere"}, "cache_dir"),
        ({"train": "yes"}, "train"),
    ],
)
def test_rejects_bad_arguments_before_any_work(tmp_path, kwargs, name):
    args = {"root": tmp_path / "absent", "train": True, "image_size": 8} | kwargs
    with pytest.raises(ValueError, match=name):
        load_image_folder(**args)


def test_missing_folders_and_images(tmp_path):
    with pytest.raises(ValueError, match="image_size"):
        load_dataset("imagefolder", tmp_path)
    with pytest.raises(FileNotFoundError, match="train"):
        load_dataset("imagefolder", tmp_path, image_size=8)
    (tmp_path / "train" / "cat").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no .*images"):
        load_dataset("imagefolder", tmp_path, image_size=8)
    _save(tmp_path / "train" / "cat" / "a.png", np.zeros((8, 8, 3), dtype=np.uint8))
    with pytest.raises(FileNotFoundError, match="val"):
        load_dataset("imagefolder", tmp_path, train=False, image_size=8)
    _save(tmp_path / "val" / "dog" / "a.png", np.zeros((8, 8, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="dog"):
        load_dataset("imagefolder", tmp_path, train=False, image_size=8)


def test_no_class_folders_and_empty_classes(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(FileNotFoundError, match="no class folders"):
        scan_image_folder(tmp_path, True)
    (tmp_path / "train" / "a").mkdir()
    (tmp_path / "train" / "a" / "x.gif").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="no .jpg/.jpeg/.png images"):
        scan_image_folder(tmp_path, True)


_DEAD_WORKER = """
import os, sys
import dystress.data.imagefolder as m
original = m._decode_one
def dies(path, size):
    if "img_03" in path:
        os._exit(1)  # a worker killed without an exception (a decoder crash, the OOM killer)
    return original(path, size)
m._decode_one = dies
try:
    m.load_image_folder(sys.argv[1], train=True, image_size=8, workers=2)
    print("loaded")
except Exception as err:
    print(type(err).__name__)
"""


def test_a_dead_decode_worker_fails_the_load_instead_of_hanging(folder):
    root, _ = folder
    done = subprocess.run(
        [sys.executable, "-c", _DEAD_WORKER, str(root)], capture_output=True, text=True, timeout=120
    )
    assert done.stdout.strip() == "BrokenProcessPool", done.stderr[-2000:]
    cache_dir = root / ".dystress_cache"
    assert _cache_files(cache_dir, ".*.partial") == [] and _cache_files(cache_dir, "*.npy") == []


def test_cache_files_get_the_umask_mode(folder, monkeypatch):
    root, _ = folder
    cache_dir = root / ".dystress_cache"
    original, during = imagefolder._write_cache, {}

    def spy(*args, **kwargs):  # the build lock exists only while the cache is built
        during.update({p.suffix: p.stat().st_mode & 0o777 for p in cache_dir.iterdir()})
        return original(*args, **kwargs)

    monkeypatch.setattr(imagefolder, "_write_cache", spy)
    old = os.umask(0o022)
    try:
        load_image_folder(root, train=True, image_size=8, workers=0)
    finally:
        os.umask(old)
    modes = {p.suffix: p.stat().st_mode & 0o777 for p in cache_dir.iterdir()}
    assert modes == {".npy": 0o644, ".json": 0o644} and during == {".lock": 0o644}
