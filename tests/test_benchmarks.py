"""The benchmarks that a GPU machine runs unattended, dry-run on the CPU: they must work there first."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_throughput_side_by_side_dry_run_on_the_cpu(tmp_path: Path) -> None:
    """``--concurrent 1,2``: one engine process, then two that wait for each other before timing; the
    table has a row per count whose aggregate is the sum over its processes (2 x the per-run mean)."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--backbone", "small_cnn"]
    cmd += ["--batch-size", "16", "--steps", "2", "--warmup", "1", "--device", "cpu", "--precision", "fp32"]
    cmd += ["--data-root", str(tmp_path / "none"), "--concurrent", "1,2"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout
    rows = re.findall(r"^\| (\d+) \| (\d+) \| ([\d,]+) \| ([\d,]+) \| ([\d.]+)x \|$", out, flags=re.M)
    assert [r[0] for r in rows] == ["1", "2"], out
    for n, _, mean, total, _ in rows:
        mean, total = (float(x.replace(",", "")) for x in (mean, total))
        assert total == pytest.approx(int(n) * mean, abs=int(n))  # rounding of the printed numbers
    assert rows[0][4] == "1.00"


def test_loss_benchmark_times_every_case_with_its_ratio_to_fixed_tau() -> None:
    """Every loss of the benchmark (iSogCLR with its indices and state update) runs; the table gives
    each case's ratio to the first (fixed-tau InfoNCE) at the same N."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "loss_bench.py"), "--sizes", "16", "--dim", "8"]
    cmd += ["--warmup", "0", "--repeats", "1"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True, cwd=ROOT).stdout
    new = ("learned global tau", "iSogCLR (per-image tau)", "temperature-free")
    for case in ("InfoNCE, fixed tau 0.1", *new):
        assert re.search(rf"^\| {re.escape(case)} \|", out, flags=re.M), out
    assert re.search(r"^\| InfoNCE, fixed tau 0.1 \| [\d.]+ ms \(1.00x\) \|$", out, flags=re.M), out
