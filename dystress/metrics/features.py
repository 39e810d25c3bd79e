"""Feature extraction from a frozen backbone: uint8 images in, float32 features [N, D] out."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from dystress.data.transforms import normalize
from dystress.metrics._validation import check_int


def _model_device(model: nn.Module) -> torch.device:
    """Device of the first parameter (or buffer) of ``model``; CPU for a model without either."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def extract_features(
    backbone: nn.Module,
    images: torch.Tensor,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    batch_size: int = 512,
    device: torch.device | str | None = None,
    amp: bool = False,
) -> torch.Tensor:
    """Backbone features [N, D] (float32, on ``device``) of uint8 images [N, 3, H, W].

    Each batch is moved to ``device`` (default: the backbone's), normalised with ``mean`` / ``std``
    (``dystress.data.transforms.normalize``) and passed through the backbone in eval mode under
    ``torch.no_grad()`` (not inference mode, so the features can feed a trained probe); outputs with
    more than two dims are flattened. ``amp=True`` runs the backbone under bf16 autocast (CUDA, or a
    CPU with bf16 support). Every submodule gets back its own train/eval mode afterwards, also on error.
    """
    if not isinstance(backbone, nn.Module):
        raise ValueError(f"backbone must be a torch.nn.Module, got {type(backbone).__name__}")
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        raise ValueError("images must be a uint8 torch.Tensor [N, 3, H, W]")
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] < 1:
        raise ValueError(f"images must have shape [N >= 1, 3, H, W], got {tuple(images.shape)}")
    check_int("batch_size", batch_size, 1)
    for name, stats in (("mean", mean), ("std", std)):
        if len(stats) != 3:
            raise ValueError(f"{name} must hold 3 per-channel values, got {stats!r}")
    if any(s <= 0 for s in std):
        raise ValueError(f"std values must be > 0, got {std!r}")
    device = torch.device(device) if device is not None else _model_device(backbone)

    modes = [(module, module.training) for module in backbone.modules()]
    backbone.eval()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    out: torch.Tensor | None = None
    try:
        with torch.no_grad(), autocast:
            for start in range(0, images.shape[0], batch_size):
                batch = images[start : start + batch_size].to(device, non_blocking=True)
                feats = backbone(normalize(batch, mean, std)).flatten(1).float()
                if out is None:
                    out = torch.empty(images.shape[0], feats.shape[1], dtype=torch.float32, device=device)
                out[start : start + feats.shape[0]] = feats
    finally:
        for module, training in modes:
            module.training = training
    assert out is not None
    return out
