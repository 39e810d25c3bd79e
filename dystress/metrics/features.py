"""Feature extraction from a frozen backbone: uint8 images in, float32 features [N, D] out."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sized

import numpy as np
import torch
from torch import nn

from dystress._checks import as_bool, as_int, is_real
from dystress.data.transforms import normalize

CPU_FORWARD_CHUNK = 128
"""Images per forward pass when a CPU computes features (a larger batch is passed in slices of this
size). In eval mode no statistic couples the images of a batch, so an image's features do not depend
on the others; only a kernel chosen by batch size could round differently, and on the development VM
(AVX-512, AMX) the small CNN's and ResNet-18's are bit for bit those of the whole batch
(``tests/test_metrics_features.py``). The slices save time: a 1,000-image batch of the small CNN's
first block is 65 MB of bf16 activations, which leave the cache at every layer (measured on that VM,
10,000 images took 2.3 s in batches of 1,000 and 0.9 s in slices of 128)."""


def forward_chunk(device: torch.device, batch_size: int) -> int:
    """Images per forward pass on ``device`` for a requested ``batch_size``: ``batch_size`` on an
    accelerator (launch-bound there: the larger the better), at most :data:`CPU_FORWARD_CHUNK` on a CPU."""
    return min(batch_size, CPU_FORWARD_CHUNK) if device.type == "cpu" else batch_size


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` with every submodule in eval mode for the block; each gets back its own mode after it,
    also on error."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def _model_device(model: nn.Module) -> torch.device:
    """Device of the first parameter (or buffer) of ``model``; CPU for a model without either."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _check_stats(name: str, stats: object, positive: bool) -> tuple[float, float, float]:
    """Per-channel ``mean`` / ``std``: 3 finite reals (``positive``: each > 0), as a tuple of floats."""
    allowed = "3 finite numbers > 0" if positive else "3 finite numbers"
    values = stats
    if isinstance(stats, (torch.Tensor, np.ndarray)):  # 1-D only (len() of a 0-d one raises TypeError)
        values = stats.tolist() if stats.ndim == 1 else None
    if (
        values is None
        or isinstance(values, (str, bytes))
        or not isinstance(values, Iterable)
        or not isinstance(values, Sized)
        or len(values) != 3
        or not all(is_real(v) and (v > 0 or not positive) for v in values)
    ):
        raise ValueError(f"{name} must be {allowed} (one per RGB channel), got {stats!r}")
    return tuple(float(v) for v in values)


def _check_device(device: object) -> torch.device | None:
    """``None``, or a ``torch.device`` / device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...) that
    names a device this machine has (CUDA and MPS availability and the CUDA index are checked)."""
    if device is None:
        return None
    if not isinstance(device, (torch.device, str)):
        raise ValueError(
            f"device must be None, a torch.device or a device string, got {type(device).__name__}"
        )
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(
            f"device must be None, a torch.device or a device string such as 'cpu', 'cuda' or 'cuda:0', "
            f"got {device!r}"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device is {device!r} but CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device is {device!r} but this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device is {device!r} but MPS is not available on this machine")
    return dev


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

    ``mean`` / ``std``: 3 per-channel values each (finite; std > 0), e.g. ``NORMALIZATION["cifar10"]``.
    ``device``: None (the backbone's), a ``torch.device`` or a string ``torch.device`` accepts.
    Each batch is moved to ``device`` (default: the backbone's), normalised with ``mean`` / ``std``
    (``dystress.data.transforms.normalize``) and passed through the backbone in eval mode under
    ``torch.no_grad()`` (not inference mode, so the features can feed a trained probe); outputs with
    more than two dims are flattened. On a CPU the forward passes take at most
    :data:`CPU_FORWARD_CHUNK` images each (the same features, faster). ``amp=True`` runs the backbone
    under bf16 autocast (CUDA, or a CPU with bf16 support). Every submodule gets back its own
    train/eval mode afterwards, also on error.
    """
    batch_size = as_int("batch_size", batch_size, 1)
    mean = _check_stats("mean", mean, positive=False)
    std = _check_stats("std", std, positive=True)
    amp = as_bool("amp", amp)
    device = _check_device(device)
    if not isinstance(backbone, nn.Module):
        raise ValueError(f"backbone must be a torch.nn.Module, got {type(backbone).__name__}")
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        raise ValueError("images must be a uint8 torch.Tensor [N, 3, H, W]")
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] < 1:
        raise ValueError(f"images must have shape [N >= 1, 3, H, W], got {tuple(images.shape)}")
    if device is None:
        device = _model_device(backbone)

    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    out: torch.Tensor | None = None
    with eval_mode(backbone), torch.no_grad(), autocast:
        step = forward_chunk(device, batch_size)
        for start in range(0, images.shape[0], step):
            # asynchronous only towards a GPU: a GPU -> CPU copy must land before the CPU reads it
            batch = images[start : start + step].to(device, non_blocking=device.type == "cuda")
            feats = backbone(normalize(batch, mean, std)).flatten(1).float()
            if out is None:
                out = torch.empty(images.shape[0], feats.shape[1], dtype=torch.float32, device=device)
            out[start : start + feats.shape[0]] = feats
    assert out is not None
    return out
