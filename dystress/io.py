"""Files that are either absent, the old version, or the complete new version; data files that
cannot run code.

Every writer goes through a hidden ``.{name}.*.partial`` file in the destination folder followed by
``os.replace``, so a crash or kill never leaves a half-written file behind. The partial file is held
under an exclusive ``flock`` while it is written, so that the next write of the same file (or
:func:`remove_orphan_partials`) can tell the partial file of a killed writer (lock released by the
kernel: removed) from one being written by a live process (locked: kept).

Pickled data files (the CIFAR python release) are read with :func:`safe_unpickle`, which builds only
plain containers, strings, numbers and numpy arrays and refuses every other global; a file that is
not what it should be raises :class:`DataFileError` naming it.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

try:
    import fcntl  # POSIX: lets a writer mark its partial file as live
except ImportError:  # pragma: no cover - Windows: partial files of killed writers are left behind
    fcntl = None  # type: ignore[assignment]


class DataFileError(ValueError):
    """A data file that is not what it should be (corrupt, truncated, foreign, or holding code); the
    message names the file and what is wrong."""


def _lock(fd: int, wait: bool = False) -> bool:
    """Take an exclusive flock on ``fd``; False where the file system has none.

    Raises BlockingIOError when ``wait`` is false and another process holds the lock.
    """
    if fcntl is None:  # pragma: no cover - Windows
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        raise
    except OSError:  # no flock here (Lustre noflock, some FUSE): the file is simply not marked live
        return False
    return True


def path_names_fd(path: str | Path, fd: int) -> bool:
    """Whether ``path`` (still) names the file open as ``fd`` (another process may have removed it)."""
    try:
        st, current = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (st.st_dev, st.st_ino) == (current.st_dev, current.st_ino)


def make_temp_file(path: Path) -> tuple[int, str]:
    """A new hidden ``.{name}.*.partial`` file beside ``path``, flock-ed while open: (fd, its path).

    Its mode is the one ``open`` would give (0o666 minus the umask), not ``mkstemp``'s 0o600, so that
    run dirs and data caches shared by a group stay readable by it. The lock is released when ``fd`` is
    closed (or the process dies), so close it only after the ``os.replace`` that publishes the file.
    """
    while True:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
        try:
            locked = _lock(fd, wait=True)  # held at most for a moment, by an orphan sweep
        except BaseException:
            os.close(fd)
            raise
        # between mkstemp and flock, a sweep may have taken the fresh file for an orphan and removed it
        if not locked or path_names_fd(tmp, fd):
            break
        os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    if hasattr(os, "fchmod"):
        os.fchmod(fd, 0o666 & ~umask)
    return fd, tmp


def remove_orphan_partials(folder: str | Path, prefix: str) -> list[Path]:
    """Delete the ``.{prefix}*.partial`` files in ``folder`` whose writer is gone; returns them.

    A live writer holds its partial file's flock (:func:`make_temp_file`), so only unlocked ones are
    removed. Without flock (Windows, a file system that lacks it) nothing is removed.
    """
    removed: list[Path] = []
    folder = Path(folder)
    if fcntl is None or not folder.is_dir():
        return removed
    for path in folder.iterdir():
        if not (path.name.startswith(f".{prefix}") and path.name.endswith(".partial")):
            continue
        try:
            with open(path, "r+b") as f:  # opened for writing: NFS emulates flock with fcntl write locks
                if _lock(f.fileno()):
                    path.unlink()
                    removed.append(path)
        except OSError:  # locked (being written), or already gone
            pass
    return removed


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then rename it to ``path``.

    Partial files of earlier writers of ``path`` that were killed are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_orphan_partials(path.parent, f"{path.name}.")
    fd, tmp = make_temp_file(path)
    try:
        with naming_the_file(path), os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
            os.replace(tmp, path)  # while the lock still marks the partial file as live
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


@contextlib.contextmanager
def naming_the_file(path: str | Path) -> Iterator[None]:
    """Re-raise an ``OSError`` that names no file (a full disk on ``write``/``fsync``) as one naming
    ``path``, so that the user is told which file could not be written."""
    try:
        yield
    except OSError as err:
        if err.filename is not None or err.errno is None:
            raise
        raise OSError(err.errno, err.strerror or str(err), str(path)) from err


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path: str | Path, obj: Any, indent: int = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (keys sorted, so equal objects give equal bytes)."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=True, allow_nan=True) + "\n")


def atomic_torch_save(path: str | Path, obj: Any) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON record as a line and fsync, so a kill loses at most the line being written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with naming_the_file(path), open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read JSON lines, skipping a final line left incomplete by a kill."""
    records: list[dict[str, Any]] = []
    path = Path(path)
    if not path.exists():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


# ------------------------------------------------------------------------------ restricted unpickling

#: numpy dtype kinds a data file may hold: bool, signed and unsigned integers, floats.
SAFE_DTYPE_KINDS = "biuf"

_NUMPY_MULTIARRAY = ("numpy.core.multiarray", "numpy._core.multiarray")  # numpy < 2 / >= 2 (as pickled)
_REAL_RECONSTRUCT = np.ndarray.__reduce__(np.empty(0, np.uint8))[0]
_REAL_SCALAR = np.int64(0).__reduce__()[0]
_REAL_FROMBUFFER = np.empty(0, np.uint8).__reduce_ex__(5)[0]
_NUMPY_NUMERIC = (_REAL_FROMBUFFER.__module__, "numpy.core.numeric", "numpy._core.numeric")


class _NdarrayClass:
    """What a data file gets for ``numpy.ndarray``: a marker that only :func:`_reconstruct` accepts."""

    def __repr__(self) -> str:
        return "numpy.ndarray"


_NDARRAY = _NdarrayClass()


class _Refused(pickle.UnpicklingError):
    """A well-formed pickle asking for something a data file may not hold."""


def _safe_dtype(spec: Any, align: Any = False, copy: Any = True) -> np.dtype:
    """``numpy.dtype(spec)`` for a plain numeric spec (e.g. "u1", "i8"): no objects, no fields."""
    if not isinstance(spec, str) or align not in (0, 1) or copy not in (0, 1):
        raise _Refused(f"dtype({spec!r}, {align!r}, {copy!r}) is not a plain dtype")
    dtype = np.dtype(spec)
    if dtype.kind not in SAFE_DTYPE_KINDS or dtype.hasobject or dtype.fields is not None:
        raise _Refused(f"dtype {spec!r} is not a number type (allowed kinds: {SAFE_DTYPE_KINDS})")
    return np.dtype(spec, align=bool(align), copy=bool(copy))


def _reconstruct(cls: Any, shape: Any, code: Any) -> np.ndarray:
    """numpy's ``_reconstruct(ndarray, (0,), b"b")``, the empty array a pickled array starts from."""
    if cls is not _NDARRAY or shape != (0,) or code not in (b"b", "b"):
        raise _Refused(f"_reconstruct{(cls, shape, code)!r} is not numpy's array pickle")
    return _REAL_RECONSTRUCT(np.ndarray, (0,), b"b")


def _scalar(dtype: Any, data: Any) -> Any:
    """A numpy scalar (e.g. ``numpy.int64(3)``) of a dtype from :func:`_safe_dtype`."""
    if not isinstance(dtype, np.dtype) or dtype.kind not in SAFE_DTYPE_KINDS or dtype.hasobject:
        raise _Refused(f"scalar of dtype {dtype!r} refused")
    if not isinstance(data, (bytes, str)) or len(data) != dtype.itemsize:
        raise _Refused(f"scalar data must be {dtype.itemsize} bytes")
    return _REAL_SCALAR(dtype, data)


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """numpy's ``_frombuffer``: an array of a dtype from :func:`_safe_dtype` (protocol 5 pickles)."""
    if not isinstance(dtype, np.dtype) or dtype.kind not in SAFE_DTYPE_KINDS or dtype.hasobject:
        raise _Refused(f"array of dtype {dtype!r} refused")
    if not isinstance(buffer, (bytes, bytearray)) or not isinstance(shape, tuple) or order not in ("C", "F"):
        raise _Refused("_frombuffer arguments are not numpy's array pickle")
    return _REAL_FROMBUFFER(buffer, dtype, shape, order)


def _latin1_encode(text: Any, encoding: Any = "latin1") -> bytes:
    """``_codecs.encode(text, "latin1")``: how protocol 2 writes bytes (only latin-1 is accepted)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused(f"_codecs.encode with {encoding!r} refused")
    return text.encode("latin1")


def _empty_bytes() -> bytes:
    """``bytes()``: how protocols 0-2 write an empty bytes object."""
    return b""


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    **{(module, "_reconstruct"): _reconstruct for module in _NUMPY_MULTIARRAY},
    **{(module, "scalar"): _scalar for module in _NUMPY_MULTIARRAY},
    **{(module, "_frombuffer"): _frombuffer for module in _NUMPY_NUMERIC},
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _safe_dtype,
    ("_codecs", "encode"): _latin1_encode,
    ("__builtin__", "bytes"): _empty_bytes,  # protocol 2 names Python 3's builtins so
    ("builtins", "bytes"): _empty_bytes,
}


def _checked_state(inst: Any, state: Any) -> Any:
    """The state of a BUILD opcode, accepted only as numpy writes it for an array or a plain dtype."""
    if type(inst) is np.ndarray:
        # (version, shape, dtype, Fortran order, raw data)
        ok = (
            isinstance(state, tuple)
            and len(state) == 5
            and state[0] == 1
            and isinstance(state[1], tuple)
            and all(isinstance(n, int) and n >= 0 for n in state[1])
            and isinstance(state[2], np.dtype)
            and state[2].kind in SAFE_DTYPE_KINDS
            and state[3] in (0, 1)
            and isinstance(state[4], (bytes, bytearray, str))
        )
    elif isinstance(inst, np.dtype):
        # (version, byte order, subarray, names, fields, elsize, alignment, flags[, metadata])
        ok = (
            isinstance(state, tuple)
            and len(state) in (8, 9)
            and state[0] in (3, 4)
            and state[1] in ("<", ">", "|", "=")
            and state[2:5] == (None, None, None)
            and state[5:8] == (-1, -1, inst.flags)
            and state[8:] in ((), (None,))
        )
    else:
        ok = False
    if not ok:
        raise _Refused(f"a {type(inst).__name__} cannot take the state {str(state)[:80]}")
    return state


class _RestrictedUnpickler(pickle._Unpickler):  # the Python implementation: its opcodes can be checked
    """Unpickler that builds only containers, strings, numbers and numpy number arrays."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: IO[bytes], name: str, what: str, encoding: str) -> None:
        super().__init__(file, encoding=encoding)
        self._name, self._what = name, what

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise DataFileError(
                f"{self._what} {self._name} refers to {module}.{name}, which a data file may not load "
                "(it may hold only containers, strings, numbers and numpy number arrays); nothing was "
                "run: replace the file with a trusted copy"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not data")

    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        inst.__setstate__(_checked_state(inst, state))

    dispatch[pickle.BUILD[0]] = load_build


def safe_unpickle(source: str | Path | IO[bytes], what: str = "data file", encoding: str = "latin1") -> Any:
    """Unpickle a data file without running anything it names.

    Only dicts, lists, tuples, str, bytes, int, float, bool, None and numpy arrays /
    scalars of number dtypes (:data:`SAFE_DTYPE_KINDS`) are built; any other global (a class, a
    function such as ``os.system``) is refused before it is looked up. ``encoding`` decodes Python 2
    strings as :func:`pickle.load` does ("latin1": the CIFAR release's keys are str; "bytes": bytes).

    Raises:
        DataFileError: the file names a refused global, or is truncated, garbage or not a pickle
            (the message names the file, as ``{what} {path}``).
        OSError: the file cannot be opened or read.
    """
    with contextlib.ExitStack() as stack:
        if isinstance(source, (str, os.PathLike)):
            name = str(source)
            file = stack.enter_context(open(source, "rb"))
        else:
            name, file = str(getattr(source, "name", "<stream>")), source
        try:
            return _RestrictedUnpickler(file, name, what, encoding).load()
        except DataFileError:
            raise
        except (OSError, MemoryError):
            raise
        except Exception as err:  # UnpicklingError, EOFError, ValueError, TypeError, ...: all corrupt
            reason = (
                "it ends early (truncated)"
                if isinstance(err, EOFError)
                else "it holds what a data file may not"
                if isinstance(err, _Refused)
                else "it is not a valid pickle"
            )
            detail = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise DataFileError(f"{what} {name} cannot be read: {reason} ({detail})") from None
