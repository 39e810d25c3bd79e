"""Shuffled batches from a dataset that lives on the device (the airbench pattern).

The uint8 images and labels are moved to the device once; each batch is an `index_select` there, so an
epoch costs no host-to-device traffic beyond one permutation. The permutation of epoch e is drawn on the
CPU from a generator seeded with (seed, e), so it is the same on every device and a run resumed at an
epoch boundary (`set_epoch(e)`) sees exactly the batches of an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


def epoch_permutation(num_samples: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order (int64 [num_samples], CPU) of `epoch`: a function of (seed, epoch) only."""
    mixed = int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0])
    return torch.randperm(num_samples, generator=torch.Generator().manual_seed(mixed))


class DeviceBatchLoader:
    """Iterate (images_uint8 [b, 3, H, W], labels [b], indices int64 [b]) batches of a device-resident set.

    images: uint8 [N, 3, H, W]; labels: [N]. `set_epoch(epoch)` selects the epoch whose order the next
    iteration uses (call it every epoch, like DistributedSampler's; the order does not advance by
    itself). shuffle=False iterates in index order. drop_last drops the final partial batch.
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
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(f"labels must have shape [{images.shape[0]}], got {tuple(labels.shape)}")
        if not (isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size >= 1):
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if not isinstance(shuffle, bool) or not isinstance(drop_last, bool):
            raise ValueError(f"shuffle and drop_last must be bools, got {shuffle!r}, {drop_last!r}")
        if drop_last and batch_size > images.shape[0]:
            raise ValueError(
                f"batch_size must be <= N = {images.shape[0]} when drop_last is set, got {batch_size}"
            )
        if images.shape[0] == 0:
            raise ValueError("images must hold at least one sample")
        if not (isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0):
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        self.device = torch.device(device) if device is not None else images.device
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.epoch = 0

    @property
    def num_samples(self) -> int:
        return int(self.images.shape[0])

    def set_epoch(self, epoch: int) -> None:
        """Use the order of `epoch` (int >= 0) for the next iteration."""
        if not (isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0):
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        self.epoch = epoch

    def order(self) -> torch.Tensor:
        """The indices (int64 [N], on the device) in the order the current epoch visits them."""
        if self.shuffle:
            return epoch_permutation(self.num_samples, self.seed, self.epoch).to(
                self.device, non_blocking=True
            )
        return torch.arange(self.num_samples, device=self.device)

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        order = self.order()
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield self.images.index_select(0, idx), self.labels.index_select(0, idx), idx
