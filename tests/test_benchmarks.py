"""The benchmarks that a GPU machine runs unattended, dry-run on the CPU: they must work there first."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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


def test_headline_epochs_fit_the_minutes_at_the_measured_rate() -> None:
    """Six runs of 50,000 pairs an epoch at 30,000 pairs/s together: 6 minutes hold 36 epochs."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from headline import epochs_to_fit

    assert epochs_to_fit(6, 30_000, 6) == 36
    assert epochs_to_fit(6, 30_000, 6, per_epoch=10_000) == 180
    assert epochs_to_fit(0.01, 100, 6) == 1  # at least one epoch
    with pytest.raises(ValueError, match="must be positive"):
        epochs_to_fit(6, 0, 6)


def _gpu_study(tmp_path: Path, check: bool = True, **settings: str) -> subprocess.CompletedProcess:
    """``benchmarks/gpu_study.sh`` as a dry run on the CPU (``$OUT`` and ``$WORK`` under ``tmp_path``,
    this Python, a small CNN, one headline seed on a few hundred images, no torch.compile or CUDA graph
    timing), with
    ``settings`` (environment variables) on top."""
    import os

    env = {
        **os.environ,
        "OUT": str(tmp_path / "out"),
        "WORK": str(tmp_path / "work"),
        "PYTHON": sys.executable,
        "DEADLINE_S": "400",
        "THROUGHPUT_COMPILE": "none",
        "GRAPH": "none",  # the whole-step CUDA graph needs CUDA
        "THROUGHPUT_ARGS": "--device cpu --backbone small_cnn --precision fp32 --steps 2 --warmup 1",
        "HEADLINE_EXTRA": "--seeds 0 --set device=cpu --set backbone=small_cnn --set train_subset=256 "
        "--set test_subset=200 --set monitor_size=64 --set linear_probe=false",
        **settings,
    }
    script = str(ROOT / "benchmarks" / "gpu_study.sh")
    return subprocess.run(
        ["bash", script], cwd=ROOT, env=env, check=check, capture_output=not check, text=True
    )


@pytest.mark.parametrize(
    "mode", [["--modes", "engine,graph"], ["--concurrent", "1", "--concurrent-mode", "graph"]]
)
def test_throughput_graph_pipeline_needs_cuda(mode: list[str]) -> None:
    """Without CUDA the whole-step CUDA graph pipeline stops before any work, with one line saying why."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--device", "cpu", *mode]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].endswith(
        "the graph pipeline captures CUDA graphs: it needs a CUDA device (--device cuda or auto)"
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_throughput_graph_pipeline_replays_the_whole_step_on_cuda(tmp_path: Path) -> None:
    """On a GPU the captured step replays: a row for it beside the eager engine's, both rates positive."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--device", "cuda"]
    cmd += ["--backbone", "small_cnn", "--batch-size", "64", "--steps", "3", "--warmup", "1"]
    cmd += ["--data-root", str(tmp_path / "none"), "--modes", "engine,graph"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout
    rows = dict(re.findall(r"^\| (engine[^|]*) \| ([\d,]+) \|", out, flags=re.M))
    assert set(rows) == {
        "engine (device data + batched aug)",
        "engine step in one CUDA graph (aug + model + loss + SGD)",
    }
    assert all(float(v.replace(",", "")) > 0 for v in rows.values())


@pytest.mark.slow
def test_gpu_study_dry_run_on_the_cpu(tmp_path: Path) -> None:
    """``benchmarks/gpu_study.sh`` end to end on the CPU (smoke profile, one headline seed, epochs sized
    from the measured rate): the throughput rows, the headline summary with both methods' final
    metrics, and the long profile's export as one archive; run folders stay out of ``$OUT``."""
    import json
    import tarfile

    out = tmp_path / "out"
    _gpu_study(tmp_path, LONG_PROFILE="smoke", LONG_PARALLEL="2", COUNTS="1,2")
    expected = "headline.json headline.log long.log long.tar.gz steps.log throughput.json throughput.md"
    assert sorted(p.name for p in out.iterdir()) == expected.split()
    rows = json.loads((out / "throughput.json").read_text())
    assert [r["runs"] for r in rows] == [1, 2]
    assert rows[1]["aggregate_pairs_per_s"] == pytest.approx(2 * rows[1]["pairs_per_s_per_run"])
    headline = json.loads((out / "headline.json").read_text())
    assert [r["point"] for r in headline["runs"]] == ["fixed_tau/0.2/s0", "dystress_grid/(0.07, 0.2)/s0"]
    assert set(headline["environment"]) == {"device", "cpus", "torch", "data", "finished"}
    for run in headline["runs"]:
        assert run["exit_status"] == 0 and run["final_metrics"]["knn_top1"] > 0
        assert len(run["records"]) == run["config"]["epochs"] == headline["epochs"] >= 1
    with tarfile.open(out / "long.tar.gz") as archive:
        names = archive.getnames()
    assert "results/smoke/manifest.json" in names and len(names) > 3


@pytest.mark.slow
def test_gpu_study_skips_its_parts_and_compiles_the_headline(tmp_path: Path) -> None:
    """The one-call form of ``benchmarks/gpu_study.sh`` (no side-by-side throughput, no long study, the
    headline's epochs given, its runs compiled): only the eager throughput, the headline and the log
    come back, and every headline run trained with ``compile=true`` in the mode asked for."""
    import json

    out = tmp_path / "out"
    _gpu_study(
        tmp_path, LONG_PROFILE="none", COUNTS="none", HEADLINE_EPOCHS="1", HEADLINE_COMPILE="reduce-overhead"
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "headline.json",
        "headline.log",
        "steps.log",
        "throughput.md",
    ]
    headline = json.loads((out / "headline.json").read_text())
    assert headline["epochs"] == 1 and len(headline["runs"]) == 2
    for run in headline["runs"]:
        assert run["exit_status"] == 0 and run["final_metrics"]["knn_top1"] > 0
        assert (run["config"]["compile"], run["config"]["compile_mode"]) == (True, "reduce-overhead")


def test_gpu_study_refuses_to_size_the_headline_without_a_rate(tmp_path: Path) -> None:
    """COUNTS=none measures no side-by-side rate: without HEADLINE_EPOCHS the script stops before any
    work, with one line naming what to give, and writes nothing."""
    done = _gpu_study(tmp_path, check=False, COUNTS="none", HEADLINE_EPOCHS="")
    assert done.returncode == 2 and "give HEADLINE_EPOCHS" in done.stderr
    assert not (tmp_path / "out").exists()
