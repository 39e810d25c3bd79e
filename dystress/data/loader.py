"""Shuffled uint8 batches on the device, from a device-resident set (the airbench pattern) or host memory.

`DeviceBatchLoader` moves the uint8 images and labels to the device once; each batch is an `index_select`
there, so an epoch costs no host-to-device traffic beyond one permutation. `HostBatchLoader` keeps the
images in host memory (a memory-mapped cache is fine, see `dystress.data.imagefolder`) for sets that do
not fit the device: a background thread gathers the next batch's rows (in sorted index order, for
locality) into a pinned staging buffer while the device computes, the batch is copied with
`non_blocking=True` and put back in the permutation's order on the device. Both yield exactly the same
(images, labels, indices) sequence for the same (seed, epoch, batch_size, shuffle, drop_last).

The permutation of epoch e is drawn on the CPU from a generator seeded with (seed, e), so it is the same on
every device and a run resumed at an epoch boundary (`set_epoch(e)`) sees exactly the batches of an
uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from dystress._checks import as_bool, is_int, is_real, require


def epoch_permutation(num_samples: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order (int64 [num_samples], CPU) of `epoch`: a function of (seed, epoch) only."""
    mixed = int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0])
    return torch.randperm(num_samples, generator=torch.Generator().manual_seed(mixed))


def fits_on_device(num_bytes: int, device: torch.device | str, fraction: float = 0.5) -> bool:
    """Whether `num_bytes` may live on `device`: at most `fraction` of its free memory (CUDA), always on CPU.

    Devices whose free memory torch cannot report (e.g. mps) answer True, the device-resident default.
    """
    require(is_int(num_bytes) and num_bytes >= 0, "num_bytes", "an int >= 0", num_bytes)
    require(is_real(fraction) and 0.0 < fraction <= 1.0, "fraction", "a number in (0, 1]", fraction)
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be a torch.device or a device string, got {device!r}") from err
    if device.type != "cuda":
        return True
    free, _total = torch.cuda.mem_get_info(device)
    return num_bytes <= fraction * free


class _EpochBatches:
    """What the loaders share: validation, the target device and labels there, `set_epoch`, `order`,
    `len`, and this rank's index batches."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool,
        drop_last: bool,
        seed: int,
        device: torch.device | str | None,
        rank: int,
        world_size: int,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(f"labels must have shape [{images.shape[0]}], got {tuple(labels.shape)}")
        require(is_int(batch_size) and batch_size >= 1, "batch_size", "an int >= 1", batch_size)
        shuffle, drop_last = as_bool("shuffle", shuffle), as_bool("drop_last", drop_last)
        if drop_last and batch_size > images.shape[0]:
            raise ValueError(
                f"batch_size must be <= N = {images.shape[0]} when drop_last is set, got {batch_size}"
            )
        if images.shape[0] == 0:
            raise ValueError("images must hold at least one sample")
        require(is_int(seed) and seed >= 0, "seed", "an int >= 0", seed)
        require(is_int(world_size) and world_size >= 1, "world_size", "an int >= 1", world_size)
        require(
            is_int(rank) and 0 <= rank < world_size, "rank", f"an int in [0, world_size = {world_size})", rank
        )
        if batch_size % world_size:
            raise ValueError(f"batch_size must be divisible by world_size = {world_size}, got {batch_size}")
        if world_size > 1 and not drop_last:
            raise ValueError("drop_last must be True when world_size > 1 (every rank takes an equal share)")
        self._num_samples = int(images.shape[0])
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = int(seed)
        self.epoch = 0
        self.device = torch.device(device) if device is not None else images.device
        self.labels = labels.to(self.device)

    @property
    def num_samples(self) -> int:
        return self._num_samples

    def set_epoch(self, epoch: int) -> None:
        """Use the order of `epoch` (int >= 0) for the next iteration."""
        require(is_int(epoch) and epoch >= 0, "epoch", "an int >= 0", epoch)
        self.epoch = int(epoch)

    def order(self) -> torch.Tensor:
        """The indices (int64 [N], on the device) in the order the current epoch visits them."""
        return self._cpu_order().to(self.device, non_blocking=True)

    def _cpu_order(self) -> torch.Tensor:
        if self.shuffle:
            return epoch_permutation(self.num_samples, self.seed, self.epoch)
        return torch.arange(self.num_samples)

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    @property
    def local_batch_size(self) -> int:
        """Samples per batch on this rank: batch_size / world_size."""
        return self.batch_size // self.world_size

    def _batch(self, order: torch.Tensor, b: int) -> torch.Tensor:
        """This rank's indices of (global) batch `b` of the epoch whose visiting order is `order`.

        Rank r takes the r-th contiguous share of the global batch, so the ranks' shares, concatenated
        in rank order, are the batch of a single process.
        """
        start = b * self.batch_size + self.rank * self.local_batch_size
        return order[start : min(start + self.local_batch_size, (b + 1) * self.batch_size)]


class DeviceBatchLoader(_EpochBatches):
    """Iterate (images_uint8 [b, 3, H, W], labels [b], indices int64 [b]) batches of a device-resident set.

    images: uint8 [N, 3, H, W]; labels: [N]. `set_epoch(epoch)` selects the epoch whose order the next
    iteration uses (call it every epoch, like DistributedSampler's; the order does not advance by
    itself). shuffle=False iterates in index order. drop_last drops the final partial batch. Under
    data parallelism, (rank, world_size) makes it yield only this rank's share of every global batch of
    `batch_size` (see `_EpochBatches._batch`).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool = True,
        drop_last: bool = True,
        seed: int = 0,
        device: torch.device | str | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__(images, labels, batch_size, shuffle, drop_last, seed, device, rank, world_size)
        self.images = images.to(self.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        order = self.order()
        for b in range(len(self)):
            idx = self._batch(order, b)
            yield self.images.index_select(0, idx), self.labels.index_select(0, idx), idx


class HostBatchLoader(_EpochBatches):
    """Like `DeviceBatchLoader` (same arguments, same batches), with the images kept in host memory.

    images: uint8 [N, 3, H, W] on the CPU (may be memory-mapped); labels: [N] (moved to `device`, they are
    small). Each batch's rows are read in sorted index order into one of two staging buffers (pinned when
    `device` is CUDA and `pin_memory` is not False), copied with `non_blocking=True`, and reordered on the
    device to the permutation's order; the next batch is gathered by a background thread meanwhile.
    prefetch=False gathers in the iterating thread (same batches).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool = True,
        drop_last: bool = True,
        seed: int = 0,
        device: torch.device | str | None = None,
        pin_memory: bool | None = None,
        prefetch: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if images.device.type != "cpu":
            raise ValueError(f"images must be on the CPU for HostBatchLoader, got {images.device}")
        super().__init__(images, labels, batch_size, shuffle, drop_last, seed, device, rank, world_size)
        pin_memory = None if pin_memory is None else as_bool("pin_memory", pin_memory)
        prefetch = as_bool("prefetch", prefetch)
        self.images = images
        self.pin_memory = self.device.type == "cuda" and pin_memory is not False
        self.prefetch = prefetch
        self._staging: list[torch.Tensor] = []
        self._copied: list[torch.cuda.Event | None] = [None, None]

    def _stage(self, idx: torch.Tensor, slot: int) -> torch.Tensor:
        """Gather rows `idx` (CPU int64 [b]) in sorted order into staging buffer `slot`: uint8 [b, C, H, W]"""
        if not self._staging:
            shape = (self.local_batch_size, *self.images.shape[1:])
            self._staging = [
                torch.empty(shape, dtype=torch.uint8, pin_memory=self.pin_memory) for _ in range(2)
            ]
        event = self._copied[slot]
        if event is not None:  # the previous copy out of this buffer must be done before overwriting it
            event.synchronize()
        out = self._staging[slot][: idx.numel()]
        torch.index_select(self.images, 0, idx.sort().values, out=out)
        return out

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        order_cpu = self._cpu_order()
        order = order_cpu.to(self.device, non_blocking=True)
        num_batches = len(self)
        if num_batches == 0:
            return
        pool = ThreadPoolExecutor(1, thread_name_prefix="dystress-prefetch") if self.prefetch else None
        try:
            pending = pool.submit(self._stage, self._batch(order_cpu, 0), 0) if pool else None
            for b in range(num_batches):
                slot = b % 2
                if pending is not None:
                    staged = pending.result()
                else:
                    staged = self._stage(self._batch(order_cpu, b), slot)
                if pool is not None and b + 1 < num_batches:
                    pending = pool.submit(self._stage, self._batch(order_cpu, b + 1), 1 - slot)
                idx = self._batch(order, b)
                on_device = staged.to(self.device, non_blocking=True)
                if self.device.type == "cuda":
                    event = torch.cuda.Event()
                    event.record(torch.cuda.current_stream(self.device))  # the stream `to` copied on
                    self._copied[slot] = event
                # staged row k holds sample sorted(idx)[k] = idx[argsort(idx)[k]]: scatter it back there
                images = torch.empty_like(on_device).index_copy_(0, torch.argsort(idx), on_device)
                yield images, self.labels.index_select(0, idx), idx
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
