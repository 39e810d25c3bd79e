"""Deterministic (test-time) image transforms and per-dataset normalisation statistics."""

from __future__ import annotations

import torch

#: Per-channel mean and standard deviation of the training images, in [0, 1] units.
NORMALIZATION: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def normalize(
    images: torch.Tensor,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Map uint8 images [B, 3, H, W] to normalised floats [B, 3, H, W]: (x / 255 - mean) / std."""
    if images.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 [B, 3, H, W], got dtype {images.dtype}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape [B, 3, H, W], got {tuple(images.shape)}")
    m = torch.tensor(mean, dtype=dtype, device=images.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=dtype, device=images.device).view(1, 3, 1, 1)
    return (images.to(dtype) / 255.0 - m) / s
