"""Two CPU processes (torchrun, gloo): DDP training runs, only rank 0 writes the run dir, and a
non-finite loss on one rank stops every rank at the earliest bad step.

Run as a script (under torchrun) this file is also the worker of the divergence test.
"""

from __future__ import annotations

import copy
import datetime
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

from dystress.checkpoint import load_checkpoint
from dystress.config import get_profile
from dystress.io import read_jsonl

REPO = Path(__file__).resolve().parents[1]
needs_distributed = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed is not available"
)


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory: pytest.TempPathFactory, lossless_cifar10_path: Path) -> Path:
    from test_train import write_lossless_cifar10

    return write_lossless_cifar10(lossless_cifar10_path, tmp_path_factory.mktemp("cifar"))


def torchrun(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node 2 *args`` on the CPU, one thread per process; the whole
    process group (agent and workers) is killed and the test fails when it runs past ``timeout`` s."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"torchrun still running after {timeout} s (a rank hangs):\n{err.decode()[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


# --------------------------------------------------------------------------------------- a DDP run
@pytest.mark.slow
@needs_distributed
def test_torchrun_two_gloo_processes(cifar_root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    overrides = [
        f"data_root={cifar_root}",
        "download=false",
        "epochs=2",
        "num_threads=1",
        "snapshot_epochs=[2]",
    ]
    args = [
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
        args += ["--set", item]
    proc = torchrun(args, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]

    config = get_profile("smoke").with_overrides(overrides)
    assert json.loads((run_dir / "config.json").read_text()) == config.to_dict()
    records = read_jsonl(run_dir / "records.jsonl")
    assert [r["epoch"] for r in records] == [1, 2]  # one writer: one line per epoch
    assert all(r["world_size"] == 2 for r in records)
    assert [r["step"] for r in records] == [4, 8]  # global batch 128 = 2 x 64 per rank
    # the regime counts of both ranks: per step, each of the 256 anchors has 254 negatives (gathered)
    assert all(sum(r["neg_sim_hist"]) == 4 * 256 * 254 and sum(r["pos_sim_hist"]) == 4 * 256 for r in records)
    metrics = json.loads((run_dir / "final_metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["bank_size"] == 512
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt", config=config.to_dict())
    assert state["epoch"] == 2 and not any(k.startswith("module.") for k in state["model"])
    assert sorted(p.name for p in (run_dir / "snapshots").iterdir()) == ["epoch_0002.pt"]
    assert sorted(p.name for p in run_dir.iterdir()) == [
        ".lock",  # rank 0 holds the run folder's lock for the job
        "checkpoints",
        "config.json",
        "final_metrics.json",
        "records.jsonl",
        "snapshots",
    ]


# --------------------------------------------------------------------------------------- divergence
STEPS_PER_EPOCH = 2  # 256 training images, global batch 128
DIVERGENCE_OVERRIDES = [
    "epochs=3",
    "train_subset=256",
    "monitor_size=64",
    "snapshot_epochs=[2, 3]",
    "num_threads=1",
]
#: name: (poison, reported (epoch, step), each rank's own non-finite (epoch, step)s). The poison maps a
#: rank to the (epoch, step) where it goes bad and how: "loss" makes the loss NaN (so its gradients too,
#: which DDP's all-reduce spreads to every rank: the other rank's loss is NaN one step later), "value"
#: only the loss value the loop checks (the other rank never sees a bad loss).
DIVERGENCE_CASES: dict[str, tuple[dict[int, tuple[int, int, str]], tuple[int, int], list[list]]] = {
    "rank1_alone": ({1: (3, 1, "loss")}, (3, 1), [[], [(3, 1)]]),
    "rank0_spreads": ({0: (3, 0, "loss")}, (3, 0), [[(3, 0), (3, 1)], [(3, 1)]]),
    "different_steps": ({0: (3, 1, "value"), 1: (3, 0, "value")}, (3, 0), [[(3, 1)], [(3, 0)]]),
}


def _poisoned_train_step(real_step: Any, poison: tuple[int, int, str] | None, log: dict[str, Any]) -> Any:
    """``train_step`` that goes bad as ``poison`` says and logs this rank's non-finite steps and, at
    the end of every epoch, its model and optimizer states."""

    def step(model, loss_fn, optimizer, v0, v1, *rest):  # noqa: ANN001, ANN002, ANN202
        epoch, i = divmod(log["calls"], STEPS_PER_EPOCH)
        here = poison is not None and (epoch + 1, i) == poison[:2]
        criterion = (lambda a, b: loss_fn(a, b) * math.nan) if here and poison[2] == "loss" else loss_fn
        loss = real_step(model, criterion, optimizer, v0, v1, *rest)
        if here and poison[2] == "value":
            loss = loss * math.nan
        if not torch.isfinite(loss):
            log["local_bad"].append((epoch + 1, i))
        if i == STEPS_PER_EPOCH - 1:
            module = getattr(model, "module", model)
            log["ends"][epoch + 1] = {
                "model": {k: v.detach().clone() for k, v in module.state_dict().items()},
                "optimizer": copy.deepcopy(optimizer.state_dict()),
            }
        log["calls"] += 1
        return loss

    return step


def _divergence_worker(cifar_root: str, out_dir: str) -> None:
    """One rank (under torchrun) of every case of DIVERGENCE_CASES, each in run dir out_dir/name; writes
    out_dir/name.rank{r}.pt with the TrainingDiverged message and the log of the poisoned step."""
    import dystress.train as train_module

    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))  # a hang fails, not waits
    rank = dist.get_rank()
    real_step = train_module.train_step
    config = get_profile("smoke").with_overrides(
        [f"data_root={cifar_root}", "download=false", *DIVERGENCE_OVERRIDES]
    )
    try:
        for name, (poison, _, _) in DIVERGENCE_CASES.items():
            log: dict[str, Any] = {"calls": 0, "local_bad": [], "ends": {}}
            train_module.train_step = _poisoned_train_step(real_step, poison.get(rank), log)
            try:
                train_module.pretrain(config, Path(out_dir) / name, progress=False)
                log["message"] = None
            except train_module.TrainingDiverged as err:
                log["message"] = str(err)
            torch.save(log, Path(out_dir) / f"{name}.rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _assert_equal_states(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], keys: Any = None) -> None:
    for k in a.keys() if keys is None else keys:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
@needs_distributed
def test_divergence_on_one_rank_stops_every_rank_at_the_earliest_bad_step(
    cifar_root: Path, tmp_path: Path
) -> None:
    proc = torchrun([__file__, str(cifar_root), str(tmp_path)], cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]

    from dystress.runtime import build_model

    config = get_profile("smoke").with_overrides(
        [f"data_root={cifar_root}", "download=false", *DIVERGENCE_OVERRIDES]
    )
    parameters = [name for name, _ in build_model(config).named_parameters()]
    for name, (_, (epoch, step), local_bad) in DIVERGENCE_CASES.items():
        logs = [torch.load(tmp_path / f"{name}.rank{r}.pt", weights_only=True) for r in range(2)]
        assert [log["local_bad"] for log in logs] == local_bad, name  # the scenario happened
        expected = (
            f"non-finite loss at epoch {epoch}, step {step} of {STEPS_PER_EPOCH} "
            f"(global step {(epoch - 1) * STEPS_PER_EPOCH + step}); the last good checkpoint is kept"
        )
        assert [log["message"] for log in logs] == [expected, expected], name

        run_dir = tmp_path / name
        state = load_checkpoint(run_dir / "checkpoints" / "last.pt", config=config.to_dict())
        assert (state["epoch"], state["step"]) == (epoch - 1, (epoch - 1) * STEPS_PER_EPOCH), name
        good = [log["ends"][epoch - 1] for log in logs]
        _assert_equal_states(state["model"], good[0]["model"])  # the writer's weights after epoch 2
        _assert_equal_states(state["model"], good[1]["model"], parameters)  # = rank 1's (BN stats: local)
        ckpt_momenta = [s["momentum_buffer"] for s in state["optimizer"]["state"].values()]
        good_momenta = [s["momentum_buffer"] for s in good[0]["optimizer"]["state"].values()]
        assert len(ckpt_momenta) == len(parameters)
        for a, b in zip(ckpt_momenta, good_momenta, strict=True):
            assert torch.equal(a, b), name
        bad_end = logs[0]["ends"][epoch]["model"]  # the weights went on changing after the checkpoint
        assert not all(torch.equal(state["model"][k], bad_end[k]) for k in parameters), name

        assert [r["epoch"] for r in read_jsonl(run_dir / "records.jsonl")] == list(range(1, epoch)), name
        files = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
        assert files == [  # no record, snapshot, checkpoint or temporary file of the bad epoch
            "checkpoints/last.pt",
            "config.json",
            "records.jsonl",
            f"snapshots/epoch_{epoch - 1:04d}.pt",
        ], name


# ------------------------------------------------------------------------- the same checkpoint everywhere
#: name: each rank's checkpoint epoch (None: no checkpoint seen; "refused": its checkpoint was refused,
#: the rank raises its own error after the check) -> what each rank's check raises (None: nothing).
START_CASES: dict[str, list[int | str | None]] = {
    "agree_on_epoch": [3, 3],
    "agree_on_none": [None, None],
    "rank1_sees_none": [3, None],
    "rank0_lags": [2, 5],
    "rank1_refuses": [3, "refused"],
    "both_refuse": ["refused", "refused"],
}
START_RAISES: dict[str, list[str | None]] = {
    "agree_on_epoch": [None, None],
    "agree_on_none": [None, None],
    "rank1_sees_none": ["epochs -1 to 3", "epochs -1 to 3"],
    "rank0_lags": ["epochs 2 to 5", "epochs 2 to 5"],
    "rank1_refuses": ["another process could not resume", None],  # rank 1 then raises its own error
    "both_refuse": [None, None],
}


def _same_start_worker(rank: int, port: int, out: str) -> None:
    from gloo_group import gloo_group

    from dystress.checkpoint import CheckpointError
    from dystress.process_group import check_same_start

    results = {}
    with gloo_group(rank, 2, port):
        for name, epochs in START_CASES.items():
            mine = epochs[rank]
            state = {"epoch": mine} if isinstance(mine, int) else None
            try:
                check_same_start(
                    state, mine == "refused", Path("run/checkpoints/last.pt"), torch.device("cpu")
                )
                results[name] = None
            except CheckpointError as err:
                results[name] = str(err)
    torch.save(results, Path(out) / f"start.rank{rank}.pt")


@needs_distributed
def test_every_rank_stops_when_the_ranks_see_different_checkpoints(tmp_path: Path) -> None:
    """A run dir that not every process sees (or sees late) must not start ranks from different
    weights: the start epochs are compared across ranks, and all raise together."""
    import torch.multiprocessing as mp
    from gloo_group import free_port

    mp.spawn(_same_start_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"start.rank{r}.pt", weights_only=True) for r in range(2)]
    for name, expected in START_RAISES.items():
        for r, part in zip(results, expected, strict=True):
            if part is None:
                assert r[name] is None, name
            else:
                assert r[name] is not None and part in r[name], name
                if part.startswith("epochs"):
                    assert "put the run dir on a file system that every process reads" in r[name], name


if __name__ == "__main__":  # the worker of the divergence test, under torchrun
    _divergence_worker(*sys.argv[1:])
