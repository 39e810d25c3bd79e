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


def center_crop(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """The central ``size`` x ``size`` window of images [B, C, H, W] (a view; ``None``: the images).

    The offsets are torchvision's CenterCrop ones, ``round((H - size) / 2)`` and ``round((W - size) / 2)``,
    so Resize(256) followed by this with 224 is the usual ImageNet evaluation transform.
    """
    if size is None:
        return images
    if images.ndim != 4:
        raise ValueError(f"images must have shape [B, C, H, W], got {tuple(images.shape)}")
    height, width = int(images.shape[-2]), int(images.shape[-1])
    if not (isinstance(size, int) and not isinstance(size, bool) and 1 <= size <= min(height, width)):
        raise ValueError(f"size must be None or an int in [1, {min(height, width)}], got {size!r}")
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    return images[..., top : top + size, left : left + size]
