"""The CPU process set-up of dystress.runtime: freed memory stays in the process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# A fresh process: how many more blocks glibc serves by mmap (mallinfo2's hblks) while a 64 MiB tensor
# is alive, before and after keep_freed_memory.
_PROBE = textwrap.dedent(
    """
    import ctypes, ctypes.util, torch
    from dystress.runtime import keep_freed_memory

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
            "fordblks", "keepcost")]

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallinfo2.restype = MallInfo2

    def mapped_blocks_while_alive():
        start = libc.mallinfo2().hblks
        t = torch.empty(64 << 20, dtype=torch.uint8)
        n = libc.mallinfo2().hblks - start
        del t
        return n

    before = mapped_blocks_while_alive()
    kept = keep_freed_memory()
    print(before, kept, mapped_blocks_while_alive())
    """
)


def test_keep_freed_memory_stops_mmap_for_large_blocks():
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc only")
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True)
    if out.returncode != 0 and "mallinfo2" in out.stderr:
        pytest.skip("a C library without mallinfo2 (not glibc >= 2.33)")
    assert out.returncode == 0, out.stderr
    before, kept, after = out.stdout.split()
    assert int(before) >= 1  # glibc's default: a 64 MiB block is mmapped (and unmapped when freed)
    assert kept == "True"
    assert int(after) == 0  # now it comes from the heap and stays there for the next step
