"""Two CPU processes (torchrun, gloo): DDP training runs and only rank 0 writes the run dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dystress.checkpoint import load_checkpoint
from dystress.config import get_profile
from dystress.io import read_jsonl

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory: pytest.TempPathFactory, lossless_cifar10_path: Path) -> Path:
    from test_train import write_lossless_cifar10

    return write_lossless_cifar10(lossless_cifar10_path, tmp_path_factory.mktemp("cifar"))


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_torchrun_two_gloo_processes(cifar_root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    overrides = [
        f"data_root={cifar_root}",
        "download=false",
        "epochs=2",
        "num_threads=1",
        "snapshot_epochs=[2]",
    ]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += [
        "-m",
        "dystress.cli",
        "pretrain",
        "--profile",
        "smoke",
        "--run-dir",
        str(run_dir),
        "--no-progress",
    ]
    for item in overrides:
        cmd += ["--set", item]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]

    config = get_profile("smoke").with_overrides(overrides)
    assert json.loads((run_dir / "config.json").read_text()) == config.to_dict()
    records = read_jsonl(run_dir / "records.jsonl")
    assert [r["epoch"] for r in records] == [1, 2]  # one writer: one line per epoch
    assert all(r["world_size"] == 2 for r in records)
    assert [r["step"] for r in records] == [4, 8]  # global batch 128 = 2 x 64 per rank
    metrics = json.loads((run_dir / "final_metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["bank_size"] == 512
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt", config=config.to_dict())
    assert state["epoch"] == 2 and not any(k.startswith("module.") for k in state["model"])
    assert sorted(p.name for p in (run_dir / "snapshots").iterdir()) == ["epoch_0002.pt"]
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "checkpoints",
        "config.json",
        "final_metrics.json",
        "records.jsonl",
        "snapshots",
    ]
