"""One writer per run folder: an exclusive lock on ``<run_dir>/.lock``.

The lock is an ``flock`` on the file, so the operating system drops it when the holding process
ends, however it ends: the lock file of a killed process blocks nothing. The holder writes its pid
into the file, so a refused process can say who holds the folder. Used by the study's runner around
each papermill run and by ``dystress pretrain`` around training. On a system without ``fcntl``
(Windows) the lock is not taken.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["LOCK_NAME", "RunFolderBusy", "hold_run_folder", "is_locked", "run_folder_lock"]

LOCK_NAME = ".lock"


class RunFolderBusy(RuntimeError):
    """Another live process holds the run folder's lock."""

    def __init__(self, run_dir: Path, pid: int | None) -> None:
        self.run_dir, self.pid = run_dir, pid
        holder = f"process {pid}" if pid is not None else "another process"
        super().__init__(
            f"run folder {run_dir} is being written by {holder}; wait for it to finish (or stop it), "
            "or use another run folder (dystress pretrain --wait waits for it)"
        )


def _holder(lock: Path) -> int | None:
    """The pid written in the lock file, or None when it holds none."""
    try:
        text = lock.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


@contextlib.contextmanager
def run_folder_lock(run_dir: str | Path, wait: bool = False) -> Iterator[Path]:
    """Hold the exclusive lock of ``run_dir`` (created if missing) for the ``with`` block.

    ``wait``: block until the holder is done; otherwise raise :class:`RunFolderBusy` at once (naming
    the folder and the holder's pid). Yields the folder. Two ``with`` blocks of one process on the
    same folder exclude each other too.
    """
    run_dir = Path(run_dir)
    try:
        import fcntl
    except ImportError:  # pragma: no cover (Windows)
        yield run_dir
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / LOCK_NAME
    with open(lock, "a+", encoding="ascii") as f:
        _acquire(f, run_dir, wait)
        try:
            f.seek(0)
            f.truncate()
            f.write(f"{os.getpid()}\n")
            f.flush()
            yield run_dir
        finally:
            f.truncate(0)
            fcntl.flock(f, fcntl.LOCK_UN)


def _acquire(f: IO[str], run_dir: Path, wait: bool, tries: int = 5) -> None:
    """Take the exclusive flock of the open lock file ``f``: blocking with ``wait``, else a few quick
    tries (a status check such as :func:`is_locked` holds it for an instant) before
    :class:`RunFolderBusy`."""
    import fcntl

    if wait:
        fcntl.flock(f, fcntl.LOCK_EX)
        return
    for attempt in range(tries):
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if attempt == tries - 1:
                raise RunFolderBusy(run_dir, _holder(run_dir / LOCK_NAME)) from None
            time.sleep(0.05)


#: Locks held by :func:`hold_run_folder` for the life of this process (folder -> open lock file).
_HELD: dict[Path, contextlib.ExitStack] = {}


@contextlib.contextmanager
def run_folder_lock_or_parents(run_dir: str | Path, wait: bool = False) -> Iterator[Path]:
    """:func:`run_folder_lock`, except that a lock held by this process's parent (the study's runner,
    which starts ``dystress pretrain`` for a run it has locked) counts as held by this process."""
    run_dir = Path(run_dir)
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(run_folder_lock(run_dir, wait))
    except RunFolderBusy as busy:
        if busy.pid is None or busy.pid != os.getppid():
            raise
    with stack:
        yield run_dir


def hold_run_folder(run_dir: str | Path) -> None:
    """Hold the lock of ``run_dir`` until this process ends (the run notebook's kernel: its cells
    write the folder one after another). A lock held by this process's parent (the study's runner,
    which executes the notebook) counts as held; any other holder raises :class:`RunFolderBusy`."""
    run_dir = Path(run_dir).resolve()
    if run_dir in _HELD:
        return
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(run_folder_lock(run_dir))
    except RunFolderBusy as busy:
        if busy.pid is not None and busy.pid == os.getppid():
            return
        raise
    _HELD[run_dir] = stack


def is_locked(run_dir: str | Path) -> bool:
    """Whether a live process holds the lock of ``run_dir`` (False when there is no lock file)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover (Windows)
        return False
    lock = Path(run_dir) / LOCK_NAME
    if not lock.exists():
        return False
    with open(lock, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False
