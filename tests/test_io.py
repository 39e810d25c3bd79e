"""Atomic writes leave either the old file or the complete new one, never a fragment (nor, once the
next write comes, a killed writer's partial file); data files are unpickled without running code."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dystress.io import (
    DataFileError,
    append_jsonl,
    atomic_torch_save,
    atomic_write,
    atomic_write_json,
    make_temp_file,
    read_jsonl,
    remove_orphan_partials,
    safe_unpickle,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


def test_atomic_write_json_round_trip(tmp_path: Path) -> None:
    path = atomic_write_json(tmp_path / "sub" / "a.json", {"b": 1, "a": [1.5, None]})
    assert json.loads(path.read_text()) == {"a": [1.5, None], "b": 1}
    assert list(path.parent.iterdir()) == [path]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = atomic_write_json(tmp_path / "a.json", {"version": 1})

    def explode(f) -> None:
        f.write(b'{"version": 2')
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed"):
        atomic_write(path, explode)
    assert json.loads(path.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_atomic_torch_save_loads_weights_only(tmp_path: Path) -> None:
    state = {"w": torch.arange(6.0).reshape(2, 3), "step": 7}
    loaded = torch.load(atomic_torch_save(tmp_path / "c.pt", state), weights_only=True)
    assert torch.equal(loaded["w"], state["w"]) and loaded["step"] == 7


def test_jsonl_skips_a_truncated_last_line(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    append_jsonl(path, {"epoch": 1, "loss": 2.5})
    append_jsonl(path, {"epoch": 2, "loss": 2.25})
    with open(path, "a") as f:
        f.write('{"epoch": 3, "lo')
    assert read_jsonl(path) == [{"epoch": 1, "loss": 2.5}, {"epoch": 2, "loss": 2.25}]
    assert read_jsonl(tmp_path / "missing.jsonl") == []


# ------------------------------------------------------------------------- partial files of dead writers

_SLOW_WRITER = """
import sys, time
from dystress.io import atomic_write
def write(f):
    f.write(b"half of it")
    f.flush()
    print("writing", flush=True)
    time.sleep(120)
atomic_write(sys.argv[1], write)
"""


def _start_writer(path: Path) -> subprocess.Popen:
    """A real process stopped in the middle of `atomic_write(path)` (its partial file exists)."""
    child = subprocess.Popen(
        [sys.executable, "-c", _SLOW_WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout.readline().strip() == "writing"
    return child


def _partials(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.partial"))


@pytest.mark.skipif(fcntl is None, reason="flock is POSIX")
def test_the_next_write_removes_a_killed_writers_partial_file_and_keeps_a_live_ones(tmp_path: Path) -> None:
    path = atomic_write_json(tmp_path / "last.json", {"epoch": 1})
    killed = _start_writer(path)
    killed.kill()  # SIGKILL in the middle of the write
    killed.wait()
    dead = _partials(tmp_path)
    assert len(dead) == 1 and json.loads(path.read_text()) == {"epoch": 1}
    live = _start_writer(path)  # its write starts by removing the dead writer's partial file
    try:
        own = _partials(tmp_path)
        assert len(own) == 1 and own != dead
        atomic_write_json(path, {"epoch": 2})  # another write meanwhile keeps the live one's file
        assert _partials(tmp_path) == own and remove_orphan_partials(tmp_path, "last.json.") == []
        assert json.loads(path.read_text()) == {"epoch": 2}
    finally:
        live.kill()
        live.wait()
    assert remove_orphan_partials(tmp_path, "last.json.") == own  # its writer is gone now
    assert [p.name for p in tmp_path.iterdir()] == ["last.json"]


@pytest.mark.skipif(fcntl is None, reason="flock is POSIX")
def test_make_temp_file_holds_the_lock_until_closed(tmp_path: Path) -> None:
    fd, tmp = make_temp_file(tmp_path / "x.bin")
    try:
        with open(tmp, "r+b") as other, pytest.raises(BlockingIOError):
            fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert remove_orphan_partials(tmp_path, "x.bin.") == [] and Path(tmp).exists()
    finally:
        os.close(fd)
    assert remove_orphan_partials(tmp_path, "x.bin.") == [Path(tmp)] and not Path(tmp).exists()


# ------------------------------------------------------------------------------ restricted unpickling


class _WritesMarker:
    """A pickle whose loading by plain `pickle.load` would create a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


_PLAIN = {
    "array": np.arange(12, dtype=np.uint8).reshape(3, 4),
    "fortran": np.asfortranarray(np.linspace(0.0, 1.0, 6).reshape(2, 3)),
    "big_endian": np.arange(4, dtype=">i4"),
    "bools": np.array([True, False]),
    "empty": np.zeros((0, 5), dtype=np.int64),
    "scalar": np.float32(2.5),
    "labels": [3, 1, 2],
    "text": ("a", b"b", b"", 1.5, None, True),
}


def _same(a, b) -> bool:
    if isinstance(b, np.ndarray):
        return type(a) is np.ndarray and a.dtype == b.dtype and a.flags == b.flags and np.array_equal(a, b)
    if isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in b)
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_safe_unpickle_builds_what_pickle_builds(tmp_path: Path, protocol: int) -> None:
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps(_PLAIN, protocol=protocol))
    with open(path, "rb") as f:
        expected = pickle.load(f, encoding="latin1")
    assert _same(safe_unpickle(path, "batch"), expected)
    with open(path, "rb") as f:
        assert _same(safe_unpickle(f, "batch"), expected)


def test_safe_unpickle_reads_python2_numpy_pickles(tmp_path: Path) -> None:
    """The official CIFAR files come from Python 2: `numpy.core.multiarray` globals, array data as str."""
    array = np.arange(3072, dtype=np.uint8).reshape(1, 3072) % 251

    class Py2Pickler(pickle.Pickler):
        def reducer_override(self, obj):
            if isinstance(obj, np.ndarray):
                reconstruct, args, state = obj.__reduce__()
                return reconstruct, args, (*state[:4], state[4].decode("latin1"))
            return NotImplemented

    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump({"data": array, "labels": [7]})
    data = buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    assert b"cnumpy.core.multiarray\n_reconstruct" in data
    loaded = safe_unpickle(io.BytesIO(data), "batch")
    assert np.array_equal(loaded["data"], array) and loaded["data"].dtype == np.uint8
    assert loaded["labels"] == [7]


def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    marker, path = tmp_path / "marker", tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": _WritesMarker(marker)}, protocol=2))
    with pytest.raises(DataFileError, match="refers to posix.system") as caught:
        safe_unpickle(path, "cifar10 batch")
    assert str(caught.value).startswith(f"cifar10 batch {path} refers to posix.system")
    assert "nothing was run" in str(caught.value)
    assert not marker.exists()
    with open(path, "rb") as f:  # the same file does run code under plain pickle
        pickle.load(f)
    assert marker.exists()


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        (np.array([None, 1], dtype=object), "holds what a data file may not.*'O8'"),
        (np.zeros(2, dtype=[("a", "i4")]), "holds what a data file may not.*'V4'"),
        (np.array(["text"]), "holds what a data file may not.*'U4'"),
        ({1, 2}, "refers to __builtin__.set"),
        (Path("x"), "refers to pathlib"),
    ],
)
def test_safe_unpickle_refuses_other_content(tmp_path: Path, obj, match: str) -> None:
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps(obj, protocol=2))
    with pytest.raises(DataFileError, match=match):
        safe_unpickle(path, "batch")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (pickle.dumps({"data": np.arange(1000)}, protocol=2)[:-200], "ends early|not a valid pickle"),
        (pickle.dumps({"data": np.arange(1000)}, protocol=4)[:-200], "ends early|not a valid pickle"),
        (b"", r"ends early \(truncated\)"),
        (b"\x89PNG\r\n\x1a\n garbage", "not a valid pickle"),
        (b"garbage that is not a pickle", "not a valid pickle"),
    ],
)
def test_truncated_or_garbage_file_is_named(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "test_batch"
    path.write_bytes(content)
    with pytest.raises(DataFileError, match=match) as caught:
        safe_unpickle(path, "cifar10 batch")
    assert str(caught.value).startswith(f"cifar10 batch {path} cannot be read: ")
    assert isinstance(caught.value, ValueError)
