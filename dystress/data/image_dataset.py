"""`ImageDataset`: a labelled image set held in memory as uint8 tensors [N, 3, H, W] with int64
labels [N], the type every loader (`dystress.data.datasets`, `dystress.data.imagefolder`) returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ImageDataset:
    """A labelled image set held in memory.

    images: uint8 [N, 3, H, W]; labels: int64 [N] in 0..len(classes)-1; mean / std: per-channel
    normalisation statistics in [0, 1] units (see `dystress.data.transforms.normalize`).
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(
                f"images must be uint8 [N, 3, H, W], got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels must be int64 [{self.images.shape[0]}], got {self.labels.dtype} "
                f"{tuple(self.labels.shape)}"
            )
        if len(self.classes) < 1:
            raise ValueError("classes must name at least one class")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std must be 3-tuples with std > 0, got {self.mean}, {self.std}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, indices: torch.Tensor | list[int]) -> ImageDataset:
        """The images at `indices` (int64 [M] or a list), same classes and statistics."""
        idx = torch.as_tensor(indices, dtype=torch.int64)
        if idx.ndim != 1:
            raise ValueError(f"indices must be one-dimensional, got shape {tuple(idx.shape)}")
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= len(self)):
            raise ValueError(f"indices must lie in [0, {len(self) - 1}]")
        idx_img = idx.to(self.images.device)
        return ImageDataset(
            images=self.images.index_select(0, idx_img),
            labels=self.labels.index_select(0, idx.to(self.labels.device)),
            classes=list(self.classes),
            name=self.name,
            mean=self.mean,
            std=self.std,
        )

    def to(self, device: torch.device | str) -> ImageDataset:
        """A copy with images and labels on `device` (no copy when already there)."""
        return ImageDataset(
            images=self.images.to(device),
            labels=self.labels.to(device),
            classes=list(self.classes),
            name=self.name,
            mean=self.mean,
            std=self.std,
        )
