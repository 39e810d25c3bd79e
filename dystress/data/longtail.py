"""Long-tailed subsets with an exponential class profile (CIFAR-10-LT / CIFAR-100-LT).

Class c of C keeps n_c = floor(n_max * r^(c / (C - 1))) images, r the imbalance ratio (n_min / n_max),
classes in their natural order (class 0 is the head) [Cao et al., NeurIPS 2019, "LDAM"; the DySTreSS LT
setup, docs/STUDY.md section 3]. At r = 0.01 this keeps 12,406 of CIFAR-10's and 10,847 of CIFAR-100's
training images.
"""

from __future__ import annotations

import math

import torch

from dystress._checks import as_int, is_real, require


def _check_ratio(imbalance_ratio: float) -> None:
    """``imbalance_ratio`` is n_min / n_max: a number in (0, 1]."""
    ok = is_real(imbalance_ratio) and 0.0 < imbalance_ratio <= 1.0
    require(ok, "imbalance_ratio", "a number in (0, 1]", imbalance_ratio)


def longtail_counts(n_max: int, num_classes: int, imbalance_ratio: float) -> list[int]:
    """Per-class counts n_c = floor(n_max * r^(c / (C - 1))) for c = 0..C-1 (head first)."""
    as_int("n_max", n_max, 1)
    as_int("num_classes", num_classes, 2)
    _check_ratio(imbalance_ratio)
    return [math.floor(n_max * imbalance_ratio ** (c / (num_classes - 1))) for c in range(num_classes)]


def longtail_indices(
    labels: torch.Tensor, imbalance_ratio: float, seed: int = 0, num_classes: int | None = None
) -> torch.Tensor:
    """Indices (int64, ascending) of a long-tailed subset of a labelled set.

    labels: int64 [N] in 0..C-1. n_max is the smallest class count (every class of CIFAR has the same
    count), so every class can supply its n_c. The n_c images of class c are the first n_c of a random
    permutation of that class's indices drawn from a CPU generator seeded with `seed`: the same labels and
    seed always give the same subset, on every machine.
    """
    if labels.ndim != 1 or labels.dtype != torch.int64:
        raise ValueError(f"labels must be an int64 tensor [N], got {labels.dtype} {tuple(labels.shape)}")
    _check_ratio(imbalance_ratio)
    as_int("seed", seed, 0)
    labels = labels.cpu()
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.numel() else 0
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes - 1}]")
    class_counts = torch.bincount(labels, minlength=num_classes)
    n_max = int(class_counts.min())
    if n_max < 1:
        empty = torch.nonzero(class_counts == 0).flatten().tolist()
        raise ValueError(f"every class needs at least one image; classes {empty} have none")
    counts = longtail_counts(n_max, num_classes, imbalance_ratio)
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c, n_c in enumerate(counts):
        members = torch.nonzero(labels == c).flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:n_c]])
    return torch.cat(chosen).sort().values
