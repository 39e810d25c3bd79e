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

The loop reads top to bottom in ``_pretrain``: set up (the device, the checkpoint to resume from, the
data, model, loss and optimiser), resume, then per epoch one epoch of steps and its end (monitor,
record, checkpoint), and finish (the final evaluation). What it is built from lives in modules of its
own: :mod:`dystress.runtime` (device, precision, model, data, augmentation, loader; where the data
are placed), :mod:`dystress.optim` (SGD/LARS and the schedule), :mod:`dystress.monitor` (the
per-epoch monitor and its snapshots), :mod:`dystress.evaluate` (the final evaluation) and
:mod:`dystress.process_group` (runs of several processes under torchrun, and what they require).

Both views are drawn by :class:`~dystress.data.augment.SimCLRAugmentation` from a generator seeded
from (seed, epoch, rank), the shuffling from (seed, epoch), so a run killed at any moment and restarted
with the same command resumes from its last checkpoint and ends, on the CPU, with bit-identical
weights to an uninterrupted run. With ``view_forward = separate`` (the default) each view goes through
the network on its own, so BatchNorm normalises each view over its own batch, as in the DySTreSS
authors' CIFAR script, solo-learn and lightly's CIFAR benchmark; ``joint`` passes both as one batch
(SimCLR's TPU code, the authors' ImageNet code).
The loss runs in float32 on the projections (the forward passes in the precision of
:func:`~dystress.runtime.uses_bf16`). The learning rate follows a linear warm-up then a cosine decay to
0, per step (:func:`~dystress.optim.lr_at`). A non-finite loss stops the run at the end of its epoch
with :class:`TrainingDiverged` naming the epoch and the first bad step (checked once per epoch on a
device-side flag: no per-step host sync), and so do non-finite weights at the end of an epoch; the last
good checkpoint is kept.

Records hold epoch means of loss, tau_pos, tau_neg, sim_pos and sim_neg (accumulated on the device),
the regime of the similarities the loss saw (quantiles, shares and histograms of
:mod:`dystress.regime`, also accumulated on the device), the last step's lr,
``images_per_second`` (two-view pairs per second of training, monitor excluded),
``epoch_seconds`` and the monitor's statistics (``monitor_*``, see :mod:`dystress.monitor`).
The final evaluation (:func:`dystress.evaluate.evaluate_backbone`) uses the backbone of the last epoch;
nothing is ever selected on the test set.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dystress import process_group
from dystress.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_into,
    restore_rng_state,
    save_checkpoint,
)
from dystress.config import PretrainConfig, identity_differences
from dystress.data.augment import SimCLRAugmentation
from dystress.data.loader import DeviceBatchLoader, HostBatchLoader
from dystress.evaluate import evaluate_backbone
from dystress.io import append_jsonl, atomic_write_json, atomic_write_text, read_jsonl
from dystress.losses import build_loss
from dystress.models import ContrastiveModel
from dystress.monitor import Monitor, make_monitor
from dystress.optim import build_optimizer, lr_at, set_lr
from dystress.process_group import Ranks
from dystress.regime import RegimeTracker
from dystress.runtime import (
    RunData,
    build_augmentation,
    build_loader,
    build_model,
    device_name,
    load_data,
    precision_label,
    resolve_placement,
    set_up_device,
    uses_bf16,
)
from dystress.temperature import TemperatureFunction

__all__ = ["TrainingDiverged", "pretrain", "train_step"]


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN or infinite."""


#: The loss's diagnostics averaged into each epoch's record (after the loss itself).
_DIAGNOSTICS = ("tau_pos", "tau_neg", "sim_pos", "sim_neg")


@dataclass
class _Training:
    """What one process trains with (built by :func:`_set_up`), and how far it has come."""

    config: PretrainConfig
    run_dir: Path
    ranks: Ranks
    device: torch.device
    bf16: bool
    channels_last: bool
    data: RunData
    placement: str  # of the training images: "device" or "host"
    loader: DeviceBatchLoader | HostBatchLoader
    aug: SimCLRAugmentation
    raw_model: ContrastiveModel  # the plain module: checkpoints, monitor and evaluation read it
    model: nn.Module  # what trains: raw_model, wrapped by DDP and/or torch.compile when asked
    temperature: TemperatureFunction
    loss_fn: nn.Module
    regime: RegimeTracker  # the similarities the loss saw this epoch
    optimizer: torch.optim.Optimizer
    aug_generator: torch.Generator
    steps_per_epoch: int
    warmup_steps: int
    step: int = 0  # optimizer steps taken
    monitor: Monitor | None = None  # rank 0's, when monitor_size > 0
    phase_seconds: dict[str, float] = field(default_factory=dict)  # wall time of this start, by phase

    @property
    def total_steps(self) -> int:
        """Optimizer steps of the whole run (the schedule's length)."""
        return self.steps_per_epoch * self.config.epochs


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
    _check_run_dir_config(run_dir, config)
    if final_path.exists():
        try:
            return json.loads(final_path.read_text(encoding="utf-8"))
        except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
            raise ValueError(
                f"{final_path} is not valid JSON ({err}): remove it to evaluate the run again"
            ) from None
    ranks = process_group.init(config.device)
    try:
        return _pretrain(config, run_dir, progress, ranks)
    finally:
        process_group.destroy(ranks)


def _pretrain(config: PretrainConfig, run_dir: Path, progress: bool, ranks: Ranks) -> dict[str, Any]:
    """Set up, resume, train epoch by epoch, finish; the final metrics (rank 0) or ``{}``."""
    if config.batch_size % ranks.world_size:
        raise ValueError(
            f"batch_size = {config.batch_size} must be divisible by the world size {ranks.world_size}"
        )
    device = set_up_device(config, ranks.local_rank)
    bf16 = uses_bf16(config, device)
    if ranks.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / "config.json", config.to_dict())
    set_up_start = time.perf_counter()
    state = _checkpoint_to_resume(config, run_dir, ranks, device, bf16)
    run = _set_up(config, run_dir, ranks, device, bf16)
    start_epoch = _resume(run, state)
    run.phase_seconds["set_up"] = time.perf_counter() - set_up_start
    _start_monitor(run, start_epoch)
    bar = _progress_bar(run, progress)
    run.raw_model.train()
    for epoch in range(start_epoch + 1, config.epochs + 1):
        record = _train_epoch(run, epoch, bar)
        _end_epoch(run, epoch, record)
    bar.close()
    return _finish(run)


@contextlib.contextmanager
def _timed(run: _Training, phase: str) -> Iterator[None]:
    """Add the wall time of the block to ``run.phase_seconds[phase]`` (the book's time breakdown)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        run.phase_seconds[phase] = run.phase_seconds.get(phase, 0.0) + time.perf_counter() - start


#: Names this module held before the engine was split (issue 12), and where they live now.
_MOVED = {
    **dict.fromkeys(("LARS", "build_optimizer", "lr_at"), "dystress.optim"),
    **dict.fromkeys(
        ("build_model", "device_name", "load_data", "precision_label", "resolve_device", "uses_bf16"),
        "dystress.runtime",
    ),
}


def __getattr__(name: str) -> Any:
    """A clear error for a name that moved out of this module (an ``ImportError``, which ``from
    dystress.train import NAME`` passes on with its message)."""
    if name in _MOVED:
        raise ImportError(f"dystress.train.{name} moved: import it from {_MOVED[name]}")
    raise AttributeError(f"module 'dystress.train' has no attribute {name!r}")


# ---------------------------------------------------------------------------------------- set up
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


def _checkpoint_path(run_dir: Path) -> Path:
    """The run's one checkpoint, ``checkpoints/last.pt`` (written by rank 0, read by every rank)."""
    return run_dir / "checkpoints" / "last.pt"


def _checkpoint_to_resume(
    config: PretrainConfig, run_dir: Path, ranks: Ranks, device: torch.device, bf16: bool
) -> dict | None:
    """The state of ``checkpoints/last.pt`` to resume from (``None``: none there), read and checked
    before any data are loaded, so that a refused resume costs no data loading and every rank refuses
    it at once."""
    ckpt_path = _checkpoint_path(run_dir)
    state, refusal = None, None
    try:
        if ckpt_path.exists():
            state = _resumable_state(ckpt_path, run_dir, config, ranks.world_size, device, bf16)
    except Exception as err:  # raised again below, once the other ranks know of it
        refusal = err
    if ranks.world_size > 1:  # before raising: a rank that refuses alone must not leave the others waiting
        process_group.check_same_start(state, refusal is not None, ckpt_path, device)
    if refusal is not None:
        raise refusal
    return state


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
    threads = torch.get_num_threads() if device.type == "cpu" else None  # CPU sums depend on it
    for key, here in (("device_type", device.type), ("bf16", bf16), ("cpu_threads", threads)):
        if key in extra and extra[key] != here:
            raise CheckpointError(
                f"checkpoint {ckpt_path} was written with {key} = {extra[key]!r}, this run has {here!r} "
                f"(device = {config.device!r}, precision = {config.precision!r}, num_threads = "
                f"{config.num_threads!r} on this machine): a run continues on the kind of device, in the "
                "precision and, on a CPU, with the thread count it started with (the numbers depend on "
                "them); run it there, set device/precision/num_threads to match, or start a new run dir"
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


def _set_up(
    config: PretrainConfig, run_dir: Path, ranks: Ranks, device: torch.device, bf16: bool
) -> _Training:
    """Data (rank 0 loads first, so only one process downloads and extracts), loader, augmentation,
    model, loss and optimiser, in this order (the model's initialisation is seeded here)."""
    with process_group.main_first(ranks, device):
        data = load_data(config)
    placement = resolve_placement(config.data_placement, data.train.images.numel(), device)
    loader = build_loader(config, data.train, placement, device, ranks.rank, ranks.world_size)
    steps_per_epoch = len(loader)
    aug = build_augmentation(config, data.train, device)
    channels_last = config.channels_last and (bf16 or device.type == "cuda")
    raw_model = _seeded_model(config, device, ranks.world_size, channels_last)
    temperature = config.build_temperature()
    loss_fn = build_loss(config.loss, temperature, num_samples=len(data.train.labels)).to(device)
    optimizer = build_optimizer(raw_model, config, loss_fn)
    model = _wrap_model(raw_model, config, device, ranks)
    return _Training(
        config=config,
        run_dir=run_dir,
        ranks=ranks,
        device=device,
        bf16=bf16,
        channels_last=channels_last,
        data=data,
        placement=placement,
        loader=loader,
        aug=aug,
        raw_model=raw_model,
        model=model,
        temperature=temperature,
        loss_fn=loss_fn,
        regime=RegimeTracker(temperature, device),
        optimizer=optimizer,
        aug_generator=torch.Generator(device=device),
        steps_per_epoch=steps_per_epoch,
        warmup_steps=round(config.warmup_epochs * steps_per_epoch),
    )


def _seeded_model(
    config: PretrainConfig, device: torch.device, world_size: int, channels_last: bool
) -> ContrastiveModel:
    """The config's model on ``device``, initialised from the global RNGs seeded with ``seed``;
    synchronised BatchNorm under DDP on CUDA, channels-last memory when ``channels_last``."""
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)  # noqa: NPY002 (the legacy global RNG, for third-party code)
    raw_model = build_model(config).to(device)
    if world_size > 1 and device.type == "cuda":
        raw_model = nn.SyncBatchNorm.convert_sync_batchnorm(raw_model)
    if channels_last:
        raw_model = raw_model.to(memory_format=torch.channels_last)
    return raw_model


def _wrap_model(
    raw_model: ContrastiveModel, config: PretrainConfig, device: torch.device, ranks: Ranks
) -> nn.Module:
    """``raw_model`` under DistributedDataParallel (several processes) and torch.compile (``compile``,
    in ``compile_mode``)."""
    model: nn.Module = raw_model
    if ranks.world_size > 1:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if config.compile:
        if ranks.world_size > 1 and device.type == "cuda" and ranks.is_main:
            warnings.warn(
                "compile=true under DDP with synchronised BatchNorm: torch.compile breaks its graph at "
                "every BatchNorm (PyTorch issue 161302) and has failed there (issue 107372); if this run "
                "fails or is slow, run it with compile=false",
                stacklevel=4,
            )
        model = torch.compile(model, mode=None if config.compile_mode == "default" else config.compile_mode)
    return model


# ---------------------------------------------------------------------------------------- resume
def _resume(run: _Training, state: dict | None) -> int:
    """Load ``state`` (weights, optimiser, loss state, RNG states) into ``run`` and return the epoch it
    was written after (0 without a state). Rank 0 drops the records of the epochs that will be redone
    (all of them without a state)."""
    records = run.run_dir / "records.jsonl"
    if state is None:
        if run.ranks.is_main:
            records.unlink(missing_ok=True)
        return 0
    ckpt_path = _checkpoint_path(run.run_dir)
    load_into(run.raw_model, state["model"], ckpt_path, "model")
    load_into(run.optimizer, state["optimizer"], ckpt_path, "optimizer")
    if state.get("loss"):
        load_into(run.loss_fn, state["loss"], ckpt_path, "loss")
    restore_rng_state(state["rng"])
    start_epoch, run.step = int(state["epoch"]), int(state["step"])
    if run.step != start_epoch * run.steps_per_epoch:
        raise CheckpointError(
            f"checkpoint {ckpt_path} is at step {run.step}, expected "
            f"{start_epoch * run.steps_per_epoch} for epoch {start_epoch}: the training set differs from "
            "the one it was written with"
        )
    if run.ranks.is_main:
        print(
            f"{run.run_dir}: resuming after epoch {start_epoch} of {run.config.epochs}",
            file=sys.stderr,
            flush=True,
        )
        kept = [r for r in read_jsonl(records) if r.get("epoch", 0) <= start_epoch]
        atomic_write_text(records, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
    return start_epoch


def _start_monitor(run: _Training, start_epoch: int) -> None:
    """Rank 0's monitor, and its snapshot of the initial weights (epoch 0) when one is asked for."""
    if not run.ranks.is_main:
        return
    run.monitor = make_monitor(run.config, run.data, run.device)
    if run.monitor is not None and start_epoch == 0 and 0 in run.config.snapshot_epochs:
        with _timed(run, "snapshots"):
            run.raw_model.eval()
            feats = run.monitor.features(run.raw_model, run.aug, run.data, run.config, run.bf16)
            run.monitor.write_snapshot(run.run_dir, 0, feats)
            run.raw_model.train()


def _progress_bar(run: _Training, progress: bool) -> Any:
    """A tqdm bar over the run's steps (on rank 0 when ``progress``; a silent one otherwise)."""
    with warnings.catch_warnings():  # in a kernel without ipywidgets (papermill) tqdm falls back to text
        warnings.simplefilter("ignore")
        from tqdm.auto import tqdm

    return tqdm(
        total=run.total_steps,
        initial=run.step,
        disable=not (progress and run.ranks.is_main),
        unit="step",
        dynamic_ncols=True,
        desc=f"{run.config.profile} {run.config.run_id()}",
    )


# ---------------------------------------------------------------------------------------- one epoch
def _train_epoch(run: _Training, epoch: int, bar: Any) -> dict[str, Any]:
    """Train epoch ``epoch`` (1-based) and return its record; raise :class:`TrainingDiverged` (after
    closing ``bar``) when a loss on any rank, or the weights at its end, are not finite."""
    run.loader.set_epoch(epoch - 1)  # the shuffling's 0-based epoch index
    run.temperature.set_epoch(epoch)  # the epoch number, from 1 as the TS reference code counts
    run.aug_generator.manual_seed(_epoch_seed(run.config.seed, epoch, run.ranks.rank))
    sums = torch.zeros(1 + len(_DIAGNOSTICS), device=run.device)
    run.regime.reset()
    # the first step with a non-finite loss; steps_per_epoch: non-finite weights only; + 1: none
    first_bad = torch.full((), run.steps_per_epoch + 1, dtype=torch.int64, device=run.device)
    t0 = time.perf_counter()
    with run.regime.observing():  # the loss passes the similarities it saw to run.regime
        first_bad, lr = _train_steps(run, sums, first_bad, bar)
    weights_bad = ~_all_finite(run.raw_model)  # e.g. an update that overflowed while the loss was finite
    first_bad = torch.where(weights_bad, torch.clamp(first_bad, max=run.steps_per_epoch), first_bad)
    # every rank sees any divergence; the regime's counts are summed over the ranks
    process_group.reduce_epoch(sums, first_bad, run.ranks.world_size, counts=run.regime.state)
    means = (sums / run.steps_per_epoch).tolist()  # the host syncs of the epoch: means and regime
    regime = run.regime.summary()
    train_seconds = time.perf_counter() - t0
    _stop_if_diverged(int(first_bad), epoch, run.steps_per_epoch, bar)
    images_per_second = run.steps_per_epoch * run.config.batch_size / train_seconds
    record: dict[str, Any] = {"epoch": epoch, "step": run.step, "lr": lr, "loss": means[0]}
    record.update(dict(zip(_DIAGNOSTICS, means[1:], strict=True)))
    record.update(regime)
    record.update(
        images_per_second=images_per_second, epoch_seconds=train_seconds, world_size=run.ranks.world_size
    )
    bar.set_postfix(
        loss=f"{means[0]:.3f}", tau=f"{means[1]:.3f}/{means[2]:.3f}", img_s=f"{images_per_second:.0f}"
    )
    return record


def _train_steps(run: _Training, sums: Tensor, first_bad: Tensor, bar: Any) -> tuple[Tensor, float]:
    """The optimizer steps of one epoch. Adds each step's loss and diagnostics to ``sums`` [1 + 4] (in
    place); returns ``first_bad`` lowered to the first step whose loss is not finite, and the last lr."""
    lr = run.config.lr
    separate_views = run.config.view_forward == "separate"
    index_of = run.loss_fn.needs_index  # iSogCLR: the images' training-set indices go to the loss
    for i, (images, _, index) in enumerate(run.loader):
        lr = lr_at(run.step, run.total_steps, run.warmup_steps, run.config.lr)
        set_lr(run.optimizer, lr)
        v0, v1 = run.aug.two_views(images, run.aug_generator)
        loss = train_step(
            run.model,
            run.loss_fn,
            run.optimizer,
            v0,
            v1,
            run.bf16,
            run.channels_last,
            separate_views,
            index if index_of else None,
        )
        d = run.loss_fn.diagnostics
        sums += torch.stack([loss] + [d[k].float() for k in _DIAGNOSTICS])
        bad = ~torch.isfinite(loss)
        first_bad = torch.where(bad, torch.clamp(first_bad, max=i), first_bad)
        run.step += 1
        bar.update(1)
    return first_bad, lr


def train_step(
    model: nn.Module,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    v0: Tensor,
    v1: Tensor,
    bf16: bool,
    channels_last: bool,
    separate_views: bool = True,
    index: Tensor | None = None,
) -> Tensor:
    """One optimizer step on two views [B, 3, H, W]; returns the detached float32 loss (0-dim).

    separate_views: each view passes through the network on its own (BatchNorm statistics per view;
    ``view_forward = separate``), else both in one batch (``joint``). Either way one call of ``model``,
    so DistributedDataParallel sees one forward per backward. ``index`` [B]: the images' training-set
    indices, passed to a loss that keeps per-sample state (``loss_fn.needs_index``).
    """
    x = torch.cat([v0, v1])
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=bf16):
        _, z = model(x, views=2 if separate_views else 1)
    z0, z1 = z.float().chunk(2)
    loss = loss_fn(z0, z1) if index is None else loss_fn(z0, z1, index)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def _stop_if_diverged(bad_step: int, epoch: int, steps_per_epoch: int, bar: Any) -> None:
    """Raise :class:`TrainingDiverged` for a first bad step below ``steps_per_epoch`` (a loss) or equal
    to it (the weights at the end of the epoch); ``steps_per_epoch + 1`` means none."""
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


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """Well-mixed 63-bit seed of the augmentation generator for (seed, epoch, rank)."""
    return int(
        np.random.SeedSequence([seed, epoch, rank]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)
    )


def _all_finite(model: nn.Module) -> Tensor:
    """0-dim bool tensor on the model's device: every parameter and buffer is finite (no host sync)."""
    flags = [
        t.detach().isfinite().all() for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()
    ]
    return torch.stack(flags).all()


# ---------------------------------------------------------------------------------------- end of epoch
def _end_epoch(run: _Training, epoch: int, record: dict[str, Any]) -> None:
    """Rank 0: the monitor's statistics (and snapshot) into ``record``, the record appended to
    ``records.jsonl``, and every ``checkpoint_every`` epochs (and at the last) the checkpoint."""
    if not run.ranks.is_main:
        return
    if run.monitor is not None:
        t1 = time.perf_counter()
        run.raw_model.eval()
        stats, feats = run.monitor.record(run.raw_model, run.aug, run.data, run.config, run.bf16)
        run.raw_model.train()
        record.update(stats, monitor_seconds=time.perf_counter() - t1)
        run.phase_seconds["monitor"] = run.phase_seconds.get("monitor", 0.0) + record["monitor_seconds"]
        if epoch in run.config.snapshot_epochs:
            with _timed(run, "snapshots"):
                run.monitor.write_snapshot(run.run_dir, epoch, feats)
    record.update(run.loss_fn.record(run.data.train.labels))  # a learned tau's value, iSogCLR's taus
    append_jsonl(run.run_dir / "records.jsonl", record)
    run.phase_seconds["train"] = run.phase_seconds.get("train", 0.0) + record["epoch_seconds"]
    if epoch % run.config.checkpoint_every == 0 or epoch == run.config.epochs:
        _save_checkpoint(run, epoch)


def _save_checkpoint(run: _Training, epoch: int) -> None:
    """Rank 0: ``checkpoints/last.pt`` after ``epoch`` (atomic; the previous one stays until then)."""
    with _timed(run, "checkpoints"):
        save_checkpoint(
            _checkpoint_path(run.run_dir),
            config=run.config.to_dict(),
            epoch=epoch,
            step=run.step,
            model=run.raw_model,
            optimizer=run.optimizer,
            loss=run.loss_fn,
            temperature=run.temperature,
            temperature_name=run.config.temperature,
            generators={"augmentation": run.aug_generator},
            extra={
                "world_size": run.ranks.world_size,
                "device_type": run.device.type,
                "bf16": run.bf16,
                "cpu_threads": torch.get_num_threads() if run.device.type == "cpu" else None,
            },
        )


# ---------------------------------------------------------------------------------------- finish
def _finish(run: _Training) -> dict[str, Any]:
    """After the last epoch: rank 0 evaluates the last backbone (:func:`~dystress.evaluate.evaluate_backbone`)
    and writes ``final_metrics.json``; the other ranks return ``{}``."""
    if run.ranks.world_size > 1:
        process_group.barrier(run.device)
    if not run.ranks.is_main:
        return {}
    run.raw_model.eval()
    config = run.config
    with _timed(run, "final_evaluation"):
        metrics = evaluate_backbone(
            run.raw_model.backbone, run.data, config, run.device, run.aug, amp=run.bf16
        )
    records = read_jsonl(run.run_dir / "records.jsonl")
    train_time = sum(r.get("epoch_seconds", 0.0) for r in records)
    metrics.update(
        run_id=config.run_id(),
        profile=config.profile,
        epochs=config.epochs,
        final_loss=records[-1]["loss"] if records else None,
        train_seconds=train_time,
        images_per_second=(run.total_steps * config.batch_size / train_time) if train_time > 0 else None,
        device=device_name(run.device),
        world_size=run.ranks.world_size,
        precision=precision_label(run.bf16, run.device),
        data_placement=run.placement,
        torch_version=torch.__version__,
        phase_seconds={k: round(v, 3) for k, v in run.phase_seconds.items()},
    )
    atomic_write_json(run.run_dir / "final_metrics.json", metrics)
    return metrics
