"""One writer per run folder (dystress.runlock), with real processes: a second writer stops at once
naming the folder and the holder, a killed holder blocks nothing, a waiting writer gets the folder
when the holder is done, and ``dystress pretrain`` takes the same lock."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dystress.runlock import RunFolderBusy, is_locked, run_folder_lock

pytest.importorskip("fcntl")

REPO = Path(__file__).resolve().parents[1]

HOLD = """\
import sys
from dystress.runlock import run_folder_lock

with run_folder_lock(sys.argv[1], wait=sys.argv[2] == "wait"):
    print("held", flush=True)
    sys.stdin.read()  # until the test closes stdin (or kills the process)
"""


def _env() -> dict[str, str]:
    """This checkout first on the path of a child process."""
    paths = [str(REPO), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def _holder(run_dir: Path, mode: str = "now") -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run_dir), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )


def _wait_held(proc: subprocess.Popen) -> None:
    assert proc.stdout is not None
    assert proc.stdout.readline() == "held\n"


def test_a_second_writer_stops_at_once_naming_folder_and_holder(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    holder = _holder(run_dir)
    try:
        _wait_held(holder)
        assert is_locked(run_dir)
        with pytest.raises(RunFolderBusy) as info, run_folder_lock(run_dir):
            pass
        assert info.value.pid == holder.pid and info.value.run_dir == run_dir
        assert f"run folder {run_dir} is being written by process {holder.pid}" in str(info.value)
    finally:
        holder.communicate("")
    assert holder.returncode == 0 and not is_locked(run_dir)
    with run_folder_lock(run_dir) as locked:  # released: free again
        assert locked == run_dir and (run_dir / ".lock").read_text() == f"{os.getpid()}\n"


def test_a_killed_holder_leaves_a_lock_file_that_blocks_nothing(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    holder = _holder(run_dir)
    _wait_held(holder)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (run_dir / ".lock").read_text() == f"{holder.pid}\n"  # the dead process's pid is still there
    assert not is_locked(run_dir)
    with run_folder_lock(run_dir):
        assert is_locked(run_dir) is True  # another open file description sees this process's lock


def test_a_waiting_writer_gets_the_folder_when_the_holder_is_done(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = _holder(run_dir)
    _wait_held(first)
    second = _holder(run_dir, "wait")
    try:
        assert select.select([second.stdout], [], [], 1.0)[0] == []  # blocked behind the first
        first.communicate("")
        _wait_held(second)
        assert (run_dir / ".lock").read_text() == f"{second.pid}\n"
    finally:
        second.communicate("")
    assert second.returncode == 0


def test_pretrain_refuses_a_run_folder_held_by_another_process(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    holder = _holder(run_dir)
    try:
        _wait_held(holder)
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "dystress.cli",
                "pretrain",
                "--profile",
                "smoke",
                "--run-dir",
                str(run_dir),
            ],
            capture_output=True,
            text=True,
            env=_env(),
            timeout=120,
        )
    finally:
        holder.communicate("")
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.strip() == (
        f"dystress pretrain: error: run folder {run_dir} is being written by process {holder.pid}; "
        "wait for it to finish (or stop it), or use another run folder (dystress pretrain --wait waits "
        "for it)"
    )
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]  # nothing trained, nothing written
