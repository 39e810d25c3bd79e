"""The process group of a run under torchrun: joining and leaving it, barriers, the check that every
rank starts from the same checkpoint, and the epoch's reduction over ranks.

Several processes (DistributedDataParallel)
-------------------------------------------
Launch with torchrun; the process group is initialised from its environment variables when
``WORLD_SIZE > 1`` (nccl on CUDA, gloo on CPU)::

    torchrun --standalone --nproc_per_node 4 -m dystress.cli pretrain --profile paper

``batch_size`` is the global batch: every rank takes its own share of each global batch of the shared
(seed, epoch) permutation, the loss gathers the negatives from all ranks, and BatchNorm is synchronised
on CUDA (synchronised BatchNorm all-gathers its statistics and syncs with the host in every BatchNorm
layer, forward and backward: with small per-GPU batches a multi-GPU step is latency-bound; measure
before scaling out). Only rank 0 writes files. The augmentation stream depends on the rank, so a
checkpoint resumes only with the world size that wrote it, and every rank must see the same checkpoint
(the ranks compare their start epochs and stop together otherwise). A checkpoint also resumes only on
the kind of device (``cpu``/``cuda``) and in the precision that wrote it, which ``device = auto`` and
``precision = auto`` resolve per machine. ``compile = true`` has been run on one process only: under
DDP with synchronised BatchNorm, torch.compile breaks its graph at every BatchNorm (PyTorch issue
161302, open) and has failed outright (issue 107372), so a multi-GPU run with it warns at its start.
Rank 0 loads (downloads, decodes) the data first while the others wait, so the data root and the run
dir must be on a file system that every node shares; the process group's timeout is 30 minutes
(``DYSTRESS_DIST_TIMEOUT_MIN``) to cover that wait.

On Slurm, one task per node running
``torchrun --nnodes $SLURM_NNODES --nproc_per_node $GPUS --rdzv_backend c10d
--rdzv_endpoint $MASTER_HOST:29500 -m dystress.cli pretrain ...`` (with ``MASTER_HOST`` the first
host of ``scontrol show hostnames``); on Kubernetes, the same command in every replica of a
PyTorchJob / JobSet (or a StatefulSet with a headless service as the rendezvous endpoint). Resuming
needs only the same command again: every rank reads ``checkpoints/last.pt`` from the shared run dir.
"""

from __future__ import annotations

import datetime
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor

from dystress.checkpoint import CheckpointError

__all__ = [
    "Ranks",
    "barrier",
    "check_same_start",
    "destroy",
    "init",
    "main_first",
    "reduce_epoch",
    "timeout_minutes",
]


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run: its ``rank`` of ``world_size`` processes, its ``local_rank``
    on its machine (which GPU), and whether :func:`init` created the process group (and
    :func:`destroy` ends it)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files."""
        return self.rank == 0


def init(device: str) -> Ranks:
    """Join the process group of torchrun's environment when ``WORLD_SIZE > 1`` (nccl when
    ``device`` (``auto``/``cpu``/``cuda``) resolves to CUDA, else gloo; timeout
    ``DYSTRESS_DIST_TIMEOUT_MIN`` minutes, default 30); one process alone gets ``Ranks()``. A group
    that is already initialised (by the caller) is used as it is."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    owns = False
    if not dist.is_initialized():
        use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        minutes = timeout_minutes(os.environ.get("DYSTRESS_DIST_TIMEOUT_MIN", "30"))
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=minutes)
        )
        owns = True
    return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), owns)


def destroy(ranks: Ranks) -> None:
    """End the process group when :func:`init` created it (a caller's group is left to the caller)."""
    if ranks.owns_group:
        dist.destroy_process_group()


def barrier(device: torch.device) -> None:
    """``dist.barrier`` on this rank's GPU under NCCL (no guessing of the device), plain under gloo."""
    if device.type == "cuda":
        dist.barrier(device_ids=[device.index])
    else:
        dist.barrier()


@contextmanager
def main_first(ranks: Ranks, device: torch.device) -> Iterator[None]:
    """Run the block on rank 0 first, then on the other ranks together (e.g. so that only one process
    downloads and extracts the data); without a process group, just run it."""
    if ranks.world_size > 1 and not ranks.is_main:
        barrier(device)
    yield
    if ranks.world_size > 1 and ranks.is_main:
        barrier(device)


def check_same_start(state: dict | None, refused: bool, ckpt_path: Path, device: torch.device) -> None:
    """Every rank resumes from the same epoch (no checkpoint: -1), or none goes on: a rank that sees
    another start, or another rank's refusal, raises CheckpointError here; one that ``refused`` its
    checkpoint (any error while reading it) raises its own error after this call (collective: every
    rank calls it once).

    Each rank reads ``last.pt`` itself: a run dir on a disk that not every process sees (or sees late)
    would otherwise start ranks from different weights and epochs.
    """
    epoch = -2 if refused else -1 if state is None else int(state["epoch"])
    bounds = torch.tensor([epoch, -epoch], dtype=torch.int64, device=device)
    dist.all_reduce(bounds, op=dist.ReduceOp.MAX)
    first, last = -int(bounds[1]), int(bounds[0])
    if first != last and not refused:
        if first == -2:
            raise CheckpointError(
                f"another process could not resume from {ckpt_path} (its own error says why); this one "
                "stops with it"
            )
        raise CheckpointError(
            f"the processes see different checkpoints at {ckpt_path} (epochs {first} to {last}; -1: "
            "none): put the run dir on a file system that every process reads"
        )


def reduce_epoch(sums: Tensor, first_bad: Tensor, world_size: int, counts: Tensor | None = None) -> None:
    """In place over the ranks: ``sums`` (the epoch's per-step sums) averaged, ``first_bad`` (the first
    bad step) the minimum, so every rank sees a divergence on any rank at its earliest step, and
    ``counts`` (histograms) summed."""
    if world_size > 1:
        dist.all_reduce(sums)
        sums /= world_size
        dist.all_reduce(first_bad, op=dist.ReduceOp.MIN)
        if counts is not None:
            dist.all_reduce(counts)


def timeout_minutes(text: str) -> float:
    """``DYSTRESS_DIST_TIMEOUT_MIN`` as a number of minutes > 0 (ValueError naming the variable)."""
    try:
        minutes = float(text)
    except ValueError:
        minutes = math.nan
    if not (math.isfinite(minutes) and minutes > 0):
        raise ValueError(f"DYSTRESS_DIST_TIMEOUT_MIN must be a number of minutes > 0, got {text!r}")
    return minutes
