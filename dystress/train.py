"""The pretraining loop: two-view contrastive learning with device-resident (or host-streamed) data.

``pretrain(config, run_dir)`` trains a :class:`~dystress.models.ContrastiveModel` with the configured
loss and temperature function and leaves in ``run_dir``::

    config.json              written first
    records.jsonl            one record per epoch, appended as it happens
    checkpoints/last.pt      every ``checkpoint_every`` epochs and at the end (weights-only, atomic)
    snapshots/epoch_XXXX.pt  monitor-subset features at ``snapshot_epochs`` (0 = before training):
                             backbone features of the test images and of two augmented views of them,
                             and the projector's outputs of those views (the space tau(s) acts on)
    final_metrics.json       written last: its presence means the run is complete

Data stay on the device as uint8 (:class:`~dystress.data.loader.DeviceBatchLoader`), or, when they do
not fit (``data_placement``: ``auto`` puts them on the device when they take under half its free
memory), in host memory, streamed batch by batch (:class:`~dystress.data.loader.HostBatchLoader`; the
same batches either way). Both views are
drawn by :class:`~dystress.data.augment.SimCLRAugmentation` from a generator seeded from
(seed, epoch, rank), the shuffling from (seed, epoch), so a run killed at any moment and restarted
with the same command resumes from its last checkpoint and ends, on the CPU, with bit-identical
weights to an uninterrupted run. With ``view_forward = separate`` (the default) each view goes through
the network on its own, so BatchNorm normalises each view over its own batch, as in the DySTreSS
authors' CIFAR script, solo-learn and lightly's CIFAR benchmark; ``joint`` passes both as one batch
(SimCLR's TPU code, the authors' ImageNet code).
The loss runs in float32 on the projections; bf16 autocast (+ channels-last) is used on CUDA, and on
the CPU when ``precision="bf16"``. The learning rate follows a linear warm-up then a cosine decay to 0,
per step. A non-finite loss stops the run at the end of its epoch with :class:`TrainingDiverged`
naming the epoch and the first bad step (checked once per epoch on a device-side flag: no per-step
host sync), and so do non-finite weights at the end of an epoch; the last good checkpoint is kept.
On CUDA, cuDNN autotuning is on (``cudnn.benchmark``), so GPU runs are reproducible in distribution,
not bit for bit; ``precision`` is recorded as ``fp32 (tf32 convolutions)`` when cuDNN's TF32 default
is in force.

Records hold epoch means of loss, tau_pos, tau_neg, sim_pos and sim_neg (accumulated on the device),
the last step's lr, ``images_per_second`` (two-view pairs per second of training, monitor excluded),
``epoch_seconds`` and the monitor's statistics (``monitor_*``).

The per-epoch monitor is a cheap stand-in for the final evaluation: weighted kNN (k, t of the config,
k capped by the bank size) with a bank of ``monitor_size`` fixed training images and queries
``monitor_size`` fixed test images (both test transform), plus uniformity, tolerance and inter-class
uniformity of the query features and the alignment of two augmented views of them (fixed generator).
The final evaluation (:func:`dystress.evaluate.evaluate_backbone`) uses the backbone of the last epoch;
nothing is ever selected on the test set.

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
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from dystress.checkpoint import CheckpointError, load_checkpoint, restore_rng_state, save_checkpoint
from dystress.config import PretrainConfig, identity_differences
from dystress.data.augment import SimCLRAugmentation
from dystress.data.datasets import ImageDataset, load_dataset
from dystress.data.loader import DeviceBatchLoader, HostBatchLoader, fits_on_device
from dystress.evaluate import embed_views, evaluate_backbone, extract
from dystress.io import append_jsonl, atomic_torch_save, atomic_write_json, atomic_write_text, read_jsonl
from dystress.losses import build_loss
from dystress.metrics import alignment as alignment_metric
from dystress.metrics import inter_class_uniformity, knn_accuracy, tolerance, uniformity
from dystress.models import ContrastiveModel, Projector, build_backbone
from dystress.temperature import TemperatureFunction

__all__ = [
    "LARS",
    "TrainingDiverged",
    "build_model",
    "build_optimizer",
    "load_data",
    "lr_at",
    "pretrain",
    "resolve_device",
    "train_step",
    "uses_bf16",
]


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN or infinite."""


# ---------------------------------------------------------------------------------------- optimiser
class LARS(torch.optim.Optimizer):
    """LARS in the form of You et al. 2017: SGD with a layer-wise trust ratio.

    For a parameter w with gradient g and weight decay wd, ``d = g + wd w`` is scaled by the trust
    ratio ``eta ||w|| / (||g|| + wd ||w||)`` (1 when either norm is 0), then heavy-ball momentum
    ``buf = momentum buf + d`` and ``w -= lr buf``. Parameter groups with ``lars_exclude=True`` (biases
    and normalisation parameters, see :func:`build_optimizer`) get neither adaptation nor weight decay.
    SimCLR's variant differs slightly (trust ratio eta ||w|| / ||g + wd w||, and momentum accumulated
    after the learning rate); the two agree while the learning rate is constant.
    """

    def __init__(
        self, params: Any, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.001
    ) -> None:
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if not eta > 0:
            raise ValueError(f"eta must be > 0, got {eta}")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "eta": eta,
            "lars_exclude": False,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # noqa: D102
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if not group["lars_exclude"]:
                    wd = group["weight_decay"]
                    w_norm = torch.linalg.vector_norm(p)
                    g_norm = torch.linalg.vector_norm(d)
                    trust = torch.where(
                        (w_norm > 0) & (g_norm > 0),
                        group["eta"] * w_norm / (g_norm + wd * w_norm),
                        torch.ones_like(w_norm),
                    )
                    d = d.add(p, alpha=wd).mul_(trust)
                if group["momentum"] > 0:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = d.clone()
                    else:
                        state["momentum_buffer"].mul_(group["momentum"]).add_(d)
                    d = state["momentum_buffer"]
                p.add_(d, alpha=-group["lr"])
        return loss


def build_optimizer(model: nn.Module, config: PretrainConfig) -> torch.optim.Optimizer:
    """SGD (nesterov off; weight decay on every parameter, as in the authors' CIFAR script) or LARS
    (biases and normalisation parameters, i.e. tensors with ndim <= 1, excluded from adaptation and
    weight decay, as in SimCLR / solo-learn)."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    adapted = [p for p in model.parameters() if p.ndim > 1]
    excluded = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": adapted}, {"params": excluded, "lars_exclude": True, "weight_decay": 0.0}]
    return LARS(
        groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, eta=config.lars_eta
    )


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up to ``base_lr`` over
    ``warmup_steps`` (step s gets base_lr (s + 1) / warmup_steps), then cosine decay to 0 at
    ``total_steps``."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(step - warmup_steps, decay_steps) / decay_steps))


# ---------------------------------------------------------------------------------------- building
def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA (this rank's GPU) when available, else CPU."""
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ValueError("device='cuda' but CUDA is not available here")
        if torch.cuda.device_count() == 1:  # one visible GPU per process (CUDA_VISIBLE_DEVICES per task)
            local_world = os.environ.get("LOCAL_WORLD_SIZE", "1")  # set by torchrun
            if "CUDA_VISIBLE_DEVICES" not in os.environ and local_world not in ("", "0", "1"):
                raise ValueError(  # a machine with one GPU, not a process given one of several
                    f"LOCAL_WORLD_SIZE = {local_world} processes on this machine, which has one GPU: start "
                    "one process per GPU (torchrun --nproc_per_node <number of GPUs>)"
                )
            return torch.device("cuda", 0)
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"local rank {local_rank} has no GPU: this machine has {torch.cuda.device_count()} "
                "(start at most one process per GPU, e.g. torchrun --nproc_per_node <number of GPUs>)"
            )
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def uses_bf16(config: PretrainConfig, device: torch.device) -> bool:
    """bf16 autocast: always for ``bf16``, for ``auto`` on a CUDA GPU with native bf16 (Ampere and later)."""
    if config.precision == "bf16":
        return True
    if config.precision != "auto" or device.type != "cuda":
        return False
    return torch.cuda.is_bf16_supported(including_emulation=False)  # not V100/T4's emulated bf16


def precision_label(bf16: bool, device: torch.device) -> str:
    """What the forward passes ran in: ``bf16``, ``fp32`` or ``fp32 (tf32 convolutions)`` on CUDA."""
    if bf16:
        return "bf16"
    if device.type == "cuda" and torch.backends.cudnn.allow_tf32:
        return "fp32 (tf32 convolutions)"
    return "fp32"


def build_model(config: PretrainConfig) -> ContrastiveModel:
    """Backbone + projector of the config (initialised from the global torch RNG)."""
    backbone = build_backbone(config.backbone, stem=config.stem)
    projector = Projector(backbone.feature_dim, config.projector_hidden_dim, config.projector_out_dim)
    return ContrastiveModel(backbone, projector)


@dataclass
class RunData:
    """The run's training set (after ``train_subset``) and the full test set, on the CPU."""

    train: ImageDataset
    test: ImageDataset


def _fixed_subset(n: int, size: int, seed: int) -> Tensor:
    """Sorted indices of a seeded random subset of ``size`` out of ``n`` (int64, CPU)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:size].sort().values


def load_data(config: PretrainConfig) -> RunData:
    """Load the training split and the test split, reduced to the fixed ``train_subset``/``test_subset``."""
    kwargs = {
        "root": config.data_root,
        "download": config.download,
        "imbalance_ratio": config.imbalance_ratio,
        "seed": config.subset_seed,
        "image_size": config.image_size,
        "workers": config.data_workers,
    }
    train = load_dataset(config.dataset, train=True, **kwargs)
    test = load_dataset(config.dataset, train=False, **kwargs)
    if config.train_subset is not None:
        if config.train_subset > len(train):
            raise ValueError(f"train_subset = {config.train_subset} exceeds the {len(train)} training images")
        train = train.subset(_fixed_subset(len(train), config.train_subset, config.subset_seed))
    if config.test_subset is not None:
        if config.test_subset > len(test):
            raise ValueError(f"test_subset = {config.test_subset} exceeds the {len(test)} test images")
        test = test.subset(_fixed_subset(len(test), config.test_subset, config.subset_seed))
    return RunData(train=train, test=test)


def build_augmentation(
    config: PretrainConfig, dataset: ImageDataset, device: torch.device | str = "cpu"
) -> SimCLRAugmentation:
    """The SimCLR augmentation of the config (output side ``crop_size``, else ``dataset``'s image side)
    with ``dataset``'s statistics, on ``device``. Colour jitter of strength s is SimCLR's
    ColorJitter(0.8 s, 0.8 s, 0.8 s, 0.2 s) (Chen et al. 2020, appendix A)."""
    s = config.jitter_strength
    return SimCLRAugmentation(
        image_size=config.crop_size or int(dataset.images.shape[-1]),
        crop_scale=(config.crop_scale_min, 1.0),
        brightness=0.8 * s,
        contrast=0.8 * s,
        saturation=0.8 * s,
        hue=0.2 * s,
        blur_prob=config.blur_prob,
        mean=dataset.mean,
        std=dataset.std,
    ).to(device)


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """Well-mixed 63-bit seed of the augmentation generator for (seed, epoch, rank)."""
    return int(
        np.random.SeedSequence([seed, epoch, rank]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)
    )


# ---------------------------------------------------------------------------------------- distributed
@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False


def _init_distributed(device_name: str) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    owns = False
    if not dist.is_initialized():
        use_cuda = device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available())
        minutes = _timeout_minutes(os.environ.get("DYSTRESS_DIST_TIMEOUT_MIN", "30"))
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=minutes)
        )
        owns = True
    return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), owns)


def _barrier(device: torch.device) -> None:
    """``dist.barrier`` on this rank's GPU under NCCL (no guessing of the device), plain under gloo."""
    if device.type == "cuda":
        dist.barrier(device_ids=[device.index])
    else:
        dist.barrier()


def _check_same_start(state: dict | None, refused: bool, ckpt_path: Path, device: torch.device) -> None:
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


def _timeout_minutes(text: str) -> float:
    """``DYSTRESS_DIST_TIMEOUT_MIN`` as a number of minutes > 0 (ValueError naming the variable)."""
    try:
        minutes = float(text)
    except ValueError:
        minutes = math.nan
    if not (math.isfinite(minutes) and minutes > 0):
        raise ValueError(f"DYSTRESS_DIST_TIMEOUT_MIN must be a number of minutes > 0, got {text!r}")
    return minutes


# ---------------------------------------------------------------------------------------- the loop
def train_step(
    model: nn.Module,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    v0: Tensor,
    v1: Tensor,
    bf16: bool,
    channels_last: bool,
    separate_views: bool = True,
) -> Tensor:
    """One optimizer step on two views [B, 3, H, W]; returns the detached float32 loss (0-dim).

    separate_views: each view passes through the network on its own (BatchNorm statistics per view;
    ``view_forward = separate``), else both in one batch (``joint``). Either way one call of ``model``,
    so DistributedDataParallel sees one forward per backward.
    """
    x = torch.cat([v0, v1])
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=bf16):
        _, z = model(x, views=2 if separate_views else 1)
    z0, z1 = z.float().chunk(2)
    loss = loss_fn(z0, z1)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


_DIAGNOSTICS = ("tau_pos", "tau_neg", "sim_pos", "sim_neg")


@dataclass
class _Monitor:
    """Fixed monitor subsets (on the device) and the fixed seed of their augmented views."""

    bank_images: Tensor
    bank_labels: Tensor
    query_images: Tensor
    query_labels: Tensor
    query_indices: Tensor
    view_seed: int


def _make_monitor(config: PretrainConfig, data: RunData, device: torch.device) -> _Monitor | None:
    if config.monitor_size == 0:
        return None
    n_bank = min(config.monitor_size, len(data.train))
    n_query = min(config.monitor_size, len(data.test))
    bank_idx = _fixed_subset(len(data.train), n_bank, config.subset_seed + 1)
    query_idx = _fixed_subset(len(data.test), n_query, config.subset_seed + 2)
    return _Monitor(
        bank_images=data.train.images[bank_idx].to(device),
        bank_labels=data.train.labels[bank_idx].to(device),
        query_images=data.test.images[query_idx].to(device),
        query_labels=data.test.labels[query_idx].to(device),
        query_indices=query_idx,
        view_seed=config.subset_seed + 3,
    )


def _monitor_features(
    model: ContrastiveModel,
    monitor: _Monitor,
    aug: SimCLRAugmentation,
    data: RunData,
    config: PretrainConfig,
    amp: bool,
) -> dict[str, Tensor]:
    """Monitor features (call in eval mode): ``features`` [M, F] of the test images (test transform),
    backbone features ``view0``/``view1`` [M, F] of two augmented views (fixed generator) and the
    projector's outputs ``proj_view0``/``proj_view1`` [M, out_dim] of those views (float32)."""
    device = monitor.query_images.device
    bs = config.eval_batch_size
    backbone = model.backbone
    feats = extract(backbone, monitor.query_images, data.test, bs, device, amp, config.crop_size)
    v0, v1 = embed_views(backbone, monitor.query_images, aug, monitor.view_seed, bs, amp)
    with torch.no_grad():
        p0, p1 = (torch.cat([model.projector(c) for c in v.split(bs)]).float() for v in (v0, v1))
    return {"features": feats, "view0": v0, "view1": v1, "proj_view0": p0, "proj_view1": p1}


def _monitor_record(
    model: ContrastiveModel,
    monitor: _Monitor,
    aug: SimCLRAugmentation,
    data: RunData,
    config: PretrainConfig,
    amp: bool,
) -> tuple[dict[str, float], dict[str, Tensor]]:
    f = _monitor_features(model, monitor, aug, data, config, amp)
    device = monitor.bank_images.device
    bank = extract(
        model.backbone, monitor.bank_images, data.train, config.eval_batch_size, device, amp, config.crop_size
    )
    knn = knn_accuracy(
        bank,
        monitor.bank_labels,
        f["features"],
        monitor.query_labels,
        k=min(config.knn_k, bank.shape[0]),
        t=config.knn_t,
        num_classes=data.train.num_classes,
    )
    record = {
        "monitor_knn_top1": knn["top1"],
        "monitor_uniformity": uniformity(f["features"]),
        "monitor_tolerance": tolerance(f["features"], monitor.query_labels),
        "monitor_inter_class_uniformity": inter_class_uniformity(f["features"], monitor.query_labels),
        "monitor_alignment": alignment_metric(f["view0"], f["view1"]),
    }
    return record, f


def _write_snapshot(run_dir: Path, epoch: int, feats: dict[str, Tensor], monitor: _Monitor) -> None:
    atomic_torch_save(
        run_dir / "snapshots" / f"epoch_{epoch:04d}.pt",
        {
            "epoch": epoch,
            "features": feats["features"].float().cpu(),
            "labels": monitor.query_labels.cpu(),
            "indices": monitor.query_indices.cpu(),
            "view0": feats["view0"].float().cpu(),
            "view1": feats["view1"].float().cpu(),
            "proj_view0": feats["proj_view0"].cpu(),
            "proj_view1": feats["proj_view1"].cpu(),
        },
    )


def _check_run_dir_config(run_dir: Path, config: PretrainConfig) -> None:
    """Refuse a run dir that holds another run. A ``config.json`` alone (a run that stopped before it
    wrote anything else, e.g. for want of its data) does not claim the folder."""
    path = run_dir / "config.json"
    written = ("checkpoints/last.pt", "records.jsonl", "final_metrics.json")
    started = any((run_dir / name).exists() for name in written) or any(run_dir.glob("snapshots/*.pt"))
    if not path.exists() or not started:
        return
    try:
        diff = identity_differences(json.loads(path.read_text(encoding="utf-8")), config.to_dict())
    except (ValueError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} holds no valid config ({err}); use another run dir") from None
    if diff:
        raise ValueError(f"{path} belongs to another run (differs in {sorted(diff)}); use another run dir")


def _set_epoch_all(
    loader: DeviceBatchLoader | HostBatchLoader, temperature: TemperatureFunction, epoch: int
) -> None:
    """Give the shuffling and the temperature (TS schedule) the 0-based index of the epoch to train."""
    loader.set_epoch(epoch)
    temperature.set_epoch(epoch)


def _resumable_state(
    ckpt_path: Path, run_dir: Path, config: PretrainConfig, world_size: int, device: torch.device, bf16: bool
) -> dict:
    """The checkpoint's state, refused (CheckpointError) when it was written with another world size,
    on another kind of device, or in another precision.

    The augmentation stream depends on the rank, so a run only continues with its own number of
    processes; ``device = auto`` and ``precision = auto`` resolve per machine, and a run that started
    on a GPU in bf16 does not go on in fp32 on a CPU under the same id. Checkpoints older than the
    ``extra["world_size"]`` entry are checked against the ``world_size`` of their epoch's record instead
    (and pass when there is none); those without ``extra["device_type"]`` are not checked for device.
    """
    state = load_checkpoint(ckpt_path, config=config.to_dict(), map_location="cpu")
    extra = state.get("extra") or {}
    for key, here in (("device_type", device.type), ("bf16", bf16)):
        if key in extra and extra[key] != here:
            raise CheckpointError(
                f"checkpoint {ckpt_path} was written with {key} = {extra[key]!r}, this run has {here!r} "
                f"(device = {config.device!r}, precision = {config.precision!r} on this machine): a run "
                "continues on the kind of device and in the precision it started with; run it there, "
                "set device/precision to match, or start a new run dir"
            )
    written_by = extra.get("world_size")
    if written_by is None:
        records = read_jsonl(run_dir / "records.jsonl")  # [] when there is none
        written_by = next((r.get("world_size") for r in records if r.get("epoch") == state["epoch"]), None)
    if written_by is not None and int(written_by) != world_size:
        raise CheckpointError(
            f"checkpoint {ckpt_path} was written by a run of {written_by} process(es), this one has "
            f"{world_size}: the augmentation stream depends on the rank, so resume with {written_by} "
            "process(es) or start a new run dir"
        )
    return state


def resolve_placement(placement: str, num_bytes: int, device: torch.device) -> str:
    """``device`` or ``host`` for the training images (``auto``: device when they fit, see
    :func:`~dystress.data.loader.fits_on_device`)."""
    if placement == "auto":
        return "device" if fits_on_device(num_bytes, device) else "host"
    return placement


def _all_finite(model: nn.Module) -> Tensor:
    """0-dim bool tensor on the model's device: every parameter and buffer is finite (no host sync)."""
    flags = [
        t.detach().isfinite().all() for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()
    ]
    return torch.stack(flags).all()


def device_name(device: torch.device) -> str:
    """Readable name of ``device`` for records and reports: the GPU model, or the CPU model and threads."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"cpu ({line.split(':', 1)[1].strip()}, {torch.get_num_threads()} threads)"
    except OSError:
        pass
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def pretrain(config: PretrainConfig, run_dir: str | Path, progress: bool = True) -> dict[str, Any]:
    """Pretrain according to ``config`` in ``run_dir`` (resuming from ``checkpoints/last.pt`` when it
    exists) and return the final metrics (also written to ``final_metrics.json``).

    A run dir whose ``final_metrics.json`` exists is returned as is, without training. Under torchrun,
    ranks other than 0 return an empty dict.
    """
    if not isinstance(config, PretrainConfig):
        raise ValueError(
            f"config must be a PretrainConfig (PretrainConfig.from_dict(d) builds one from a dict), got "
            f"{type(config).__name__}"
        )
    if not isinstance(run_dir, (str, os.PathLike)) or not str(run_dir):
        raise ValueError(f"run_dir must be a folder path (str or Path), got {run_dir!r}")
    config.validate()
    run_dir = Path(run_dir)
    final_path = run_dir / "final_metrics.json"
    ckpt_path = run_dir / "checkpoints" / "last.pt"
    _check_run_dir_config(run_dir, config)
    if final_path.exists():
        return json.loads(final_path.read_text(encoding="utf-8"))

    ddp = _init_distributed(config.device)
    try:
        return _pretrain(config, run_dir, progress, ddp, final_path, ckpt_path)
    finally:
        if ddp.owns_group:
            dist.destroy_process_group()


def _pretrain(
    config: PretrainConfig, run_dir: Path, progress: bool, ddp: _Dist, final_path: Path, ckpt_path: Path
) -> dict[str, Any]:
    import warnings

    with warnings.catch_warnings():  # in a kernel without ipywidgets (papermill) tqdm falls back to text
        warnings.simplefilter("ignore")
        from tqdm.auto import tqdm

    is_main = ddp.rank == 0
    if config.batch_size % ddp.world_size:
        raise ValueError(
            f"batch_size = {config.batch_size} must be divisible by the world size {ddp.world_size}"
        )
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    device = resolve_device(config.device, ddp.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    bf16 = uses_bf16(config, device)
    channels_last = config.channels_last and (bf16 or device.type == "cuda")
    separate_views = config.view_forward == "separate"
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / "config.json", config.to_dict())

    # the checkpoint to resume from is read (and checked) first: a refused resume costs no data loading
    # and every rank refuses it at once
    state, refusal = None, None
    try:
        if ckpt_path.exists():
            state = _resumable_state(ckpt_path, run_dir, config, ddp.world_size, device, bf16)
    except Exception as err:  # raised again below, once the other ranks know of it
        refusal = err
    if ddp.world_size > 1:  # before raising: a rank that refuses alone must not leave the others waiting
        _check_same_start(state, refusal is not None, ckpt_path, device)
    if refusal is not None:
        raise refusal
    if ddp.world_size > 1 and not is_main:
        _barrier(device)  # rank 0 loads first, so only one process downloads and extracts
    data = load_data(config)
    if ddp.world_size > 1 and is_main:
        _barrier(device)
    placement = resolve_placement(config.data_placement, data.train.images.numel(), device)
    loader_class = DeviceBatchLoader if placement == "device" else HostBatchLoader
    loader = loader_class(
        data.train.images,
        data.train.labels,
        config.batch_size,
        shuffle=True,
        drop_last=True,
        seed=config.seed,
        device=device,
        rank=ddp.rank,
        world_size=ddp.world_size,
    )
    steps_per_epoch = len(loader)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    aug = build_augmentation(config, data.train, device)

    torch.manual_seed(config.seed)
    np.random.seed(config.seed)  # noqa: NPY002 (the legacy global RNG, for third-party code)
    raw_model = build_model(config).to(device)
    if ddp.world_size > 1 and device.type == "cuda":
        raw_model = nn.SyncBatchNorm.convert_sync_batchnorm(raw_model)
    if channels_last:
        raw_model = raw_model.to(memory_format=torch.channels_last)
    temperature = config.build_temperature()
    loss_fn = build_loss(config.loss, temperature).to(device)
    optimizer = build_optimizer(raw_model, config)
    model: nn.Module = raw_model
    if ddp.world_size > 1:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if config.compile:
        if ddp.world_size > 1 and device.type == "cuda" and is_main:
            warnings.warn(
                "compile=true under DDP with synchronised BatchNorm: torch.compile breaks its graph at "
                "every BatchNorm (PyTorch issue 161302) and has failed there (issue 107372); if this run "
                "fails or is slow, run it with compile=false",
                stacklevel=2,
            )
        model = torch.compile(model)
    aug_generator = torch.Generator(device=device)

    start_epoch, step = 0, 0
    if state is not None:
        raw_model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if state.get("loss"):
            loss_fn.load_state_dict(state["loss"])
        restore_rng_state(state["rng"])
        start_epoch, step = int(state["epoch"]), int(state["step"])
        if step != start_epoch * steps_per_epoch:
            raise CheckpointError(
                f"checkpoint {ckpt_path} is at step {step}, expected {start_epoch * steps_per_epoch} for "
                f"epoch {start_epoch}: the training set differs from the one it was written with"
            )
        if is_main:  # drop records of epochs that will be redone
            print(
                f"{run_dir}: resuming after epoch {start_epoch} of {config.epochs}",
                file=sys.stderr,
                flush=True,
            )
            kept = [r for r in read_jsonl(run_dir / "records.jsonl") if r.get("epoch", 0) <= start_epoch]
            atomic_write_text(
                run_dir / "records.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept)
            )
    elif is_main:
        (run_dir / "records.jsonl").unlink(missing_ok=True)

    monitor = _make_monitor(config, data, device) if is_main else None
    backbone = raw_model.backbone
    if is_main and monitor is not None and start_epoch == 0 and 0 in config.snapshot_epochs:
        raw_model.eval()
        _write_snapshot(run_dir, 0, _monitor_features(raw_model, monitor, aug, data, config, bf16), monitor)
        raw_model.train()

    bar = tqdm(
        total=total_steps,
        initial=step,
        disable=not (progress and is_main),
        unit="step",
        dynamic_ncols=True,
        desc=f"{config.profile} {config.run_id()}",
    )
    raw_model.train()
    for epoch in range(start_epoch + 1, config.epochs + 1):
        _set_epoch_all(loader, temperature, epoch - 1)
        aug_generator.manual_seed(_epoch_seed(config.seed, epoch, ddp.rank))
        sums = torch.zeros(1 + len(_DIAGNOSTICS), device=device)
        # the first step with a non-finite loss; steps_per_epoch: non-finite weights only; + 1: none
        first_bad = torch.full((), steps_per_epoch + 1, dtype=torch.int64, device=device)
        t0 = time.perf_counter()
        lr = config.lr
        for i, (images, _, _) in enumerate(loader):
            lr = lr_at(step, total_steps, warmup_steps, config.lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            v0, v1 = aug.two_views(images, aug_generator)
            loss = train_step(model, loss_fn, optimizer, v0, v1, bf16, channels_last, separate_views)
            d = loss_fn.diagnostics
            sums += torch.stack([loss] + [d[k].float() for k in _DIAGNOSTICS])
            bad = ~torch.isfinite(loss)
            first_bad = torch.where(bad, torch.clamp(first_bad, max=i), first_bad)
            step += 1
            bar.update(1)
        weights_bad = ~_all_finite(raw_model)  # e.g. an update that overflowed while the loss was finite
        first_bad = torch.where(weights_bad, torch.clamp(first_bad, max=steps_per_epoch), first_bad)
        if ddp.world_size > 1:  # epoch means over all ranks; every rank sees a divergence anywhere
            dist.all_reduce(sums)
            sums /= ddp.world_size
            dist.all_reduce(first_bad, op=dist.ReduceOp.MIN)  # the earliest bad step on any rank
        means = (sums / steps_per_epoch).tolist()  # the one host sync of the epoch
        train_seconds = time.perf_counter() - t0
        bad_step = int(first_bad)
        if bad_step < steps_per_epoch:
            bar.close()
            raise TrainingDiverged(
                f"non-finite loss at epoch {epoch}, step {bad_step} of {steps_per_epoch} "
                f"(global step {(epoch - 1) * steps_per_epoch + bad_step}); the last good checkpoint is kept"
            )
        if bad_step == steps_per_epoch:
            bar.close()
            raise TrainingDiverged(
                f"non-finite weights at the end of epoch {epoch} (every loss of the epoch was finite); "
                "the last good checkpoint is kept"
            )
        images_per_second = steps_per_epoch * config.batch_size / train_seconds
        record: dict[str, Any] = {"epoch": epoch, "step": step, "lr": lr, "loss": means[0]}
        record.update(dict(zip(_DIAGNOSTICS, means[1:], strict=True)))
        record.update(
            images_per_second=images_per_second, epoch_seconds=train_seconds, world_size=ddp.world_size
        )
        bar.set_postfix(
            loss=f"{means[0]:.3f}", tau=f"{means[1]:.3f}/{means[2]:.3f}", img_s=f"{images_per_second:.0f}"
        )
        if is_main:
            if monitor is not None:
                t1 = time.perf_counter()
                raw_model.eval()
                stats, feats = _monitor_record(raw_model, monitor, aug, data, config, bf16)
                raw_model.train()
                record.update(stats, monitor_seconds=time.perf_counter() - t1)
                if epoch in config.snapshot_epochs:
                    _write_snapshot(run_dir, epoch, feats, monitor)
            append_jsonl(run_dir / "records.jsonl", record)
            if epoch % config.checkpoint_every == 0 or epoch == config.epochs:
                save_checkpoint(
                    ckpt_path,
                    config=config.to_dict(),
                    epoch=epoch,
                    step=step,
                    model=raw_model,
                    optimizer=optimizer,
                    loss=loss_fn,
                    temperature=temperature,
                    temperature_name=config.temperature,
                    generators={"augmentation": aug_generator},
                    extra={"world_size": ddp.world_size, "device_type": device.type, "bf16": bf16},
                )
    bar.close()
    if ddp.world_size > 1:
        _barrier(device)
    if not is_main:
        return {}

    raw_model.eval()
    metrics = evaluate_backbone(backbone, data, config, device, aug, amp=bf16)
    records = read_jsonl(run_dir / "records.jsonl")
    train_time = sum(r.get("epoch_seconds", 0.0) for r in records)
    metrics.update(
        run_id=config.run_id(),
        profile=config.profile,
        epochs=config.epochs,
        final_loss=records[-1]["loss"] if records else None,
        train_seconds=train_time,
        images_per_second=(total_steps * config.batch_size / train_time) if train_time > 0 else None,
        device=device_name(device),
        world_size=ddp.world_size,
        precision=precision_label(bf16, device),
        data_placement=placement,
        torch_version=torch.__version__,
    )
    atomic_write_json(final_path, metrics)
    return metrics
