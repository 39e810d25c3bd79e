"""Geometry of a feature space: alignment, uniformity, tolerance, inter-class uniformity.

All four L2-normalise the features inside (zero rows raise ``ValueError``), so they can be given raw
backbone or projector outputs.

- Alignment and uniformity: Wang & Isola, "Understanding contrastive representation learning through
  alignment and uniformity on the hypersphere", ICML 2020.
- Tolerance: Wang & Liu, "Understanding the behaviour of contrastive loss", CVPR 2021.
- Inter-class uniformity: the uniformity of the normalised class centroids (our definition; the
  DySTreSS paper reports the quantity without stating its formula).
"""

from __future__ import annotations

import math

import torch

from dystress._checks import as_int, as_positive
from dystress.metrics._validation import (
    check_features,
    check_finite,
    check_labels,
    checked_normalized,
    checked_view_pair,
    compute_dtype,
    normalize_rows,
)

DEFAULT_CHUNK_SIZE = 1024


def alignment(z0: torch.Tensor, z1: torch.Tensor, alpha: float = 2.0) -> float:
    """E_i ||z0_i - z1_i||^alpha over positive pairs (row i of z0 and z1), on L2-normalised rows.

    Args:
        z0, z1: two views' features [N, D] (same shape and device).
        alpha: exponent > 0 (2 in Wang & Isola).
    """
    alpha = as_positive("alpha", alpha)
    a, b = checked_view_pair(z0, z1)
    sq = (a - b).pow(2).sum(1)
    return float(sq.pow(alpha / 2).mean())


def _log_mean_exp_distinct(z: torch.Tensor, t: float, chunk_size: int) -> float:
    """log mean_{i != j} exp(-t ||z_i - z_j||^2) for unit rows z [N >= 2, D], exact, chunked.

    Only the strict upper triangle is evaluated (the kernel is symmetric): each ordered pair is
    counted twice, hence + log 2. Memory O(chunk_size x N).
    """
    n = z.shape[0]

    def row_lse(logits: torch.Tensor) -> torch.Tensor:
        # logits lie in [-4t, 0]: for 4t <= 64 exp cannot underflow to a wrong 0 in float32, so the
        # max-shift of logsumexp is unnecessary and one in-place exp + sum does
        if 4.0 * t <= 64.0:
            return logits.exp_().sum(1).log_().to(torch.float64)
        return torch.logsumexp(logits, 1).to(torch.float64)

    partial = []
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        # -t ||a - b||^2 = 2t (a.b - 1) for unit rows, clamped at 0 against rounding; in place
        diagonal = (z[start:stop] @ z[start:stop].t()).sub_(1.0).mul_(2.0 * t).clamp_max_(0.0)
        upper = torch.ones_like(diagonal, dtype=torch.bool).triu_(1)
        partial.append(row_lse(diagonal.masked_fill_(~upper, float("-inf"))))
        if stop < n:  # every pair against the rows after this chunk is distinct and upper
            rest = (z[start:stop] @ z[stop:].t()).sub_(1.0).mul_(2.0 * t).clamp_max_(0.0)
            partial.append(row_lse(rest))
    lse = torch.logsumexp(torch.cat(partial), 0)
    return float(lse) + math.log(2.0) - math.log(n * (n - 1))


def uniformity(z: torch.Tensor, t: float = 2.0, chunk_size: int = DEFAULT_CHUNK_SIZE) -> float:
    """log E_{i != j} exp(-t ||z_i - z_j||^2) over distinct pairs of L2-normalised rows (lower: more uniform).

    Exact (chunked log-sum-exp), memory O(chunk_size x N). Two antipodal points give -4t (Wang & Isola).

    Args:
        z: features [N, D], N >= 2 (float, any device; rows L2-normalised inside).
        t: kernel temperature > 0 (2 in Wang & Isola).
        chunk_size: rows per chunk, >= 1.
    """
    t = as_positive("t", t)
    chunk_size = as_int("chunk_size", chunk_size, 1)
    zn = checked_normalized("z", z, min_rows=2)
    return _log_mean_exp_distinct(zn, t, chunk_size)


def class_sums(z: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Classes [C] (sorted), counts [C] and feature sums [C, D] (float64) of each label in ``labels``."""
    classes, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    sums = torch.zeros(classes.shape[0], z.shape[1], dtype=torch.float64, device=z.device)
    sums.index_add_(0, inverse, z.to(torch.float64))
    return classes, counts, sums


def _class_centroids(z: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``class_centroids`` of already checked inputs."""
    classes, counts, sums = class_sums(z, labels)
    return classes, sums / counts[:, None]


def class_centroids(z: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Classes [C] (sorted) and mean feature [C, D] (float64) of each label present in ``labels``.

    ``z``: finite float features [N, D], used as given (not normalised); ``labels``: integer labels [N],
    same device.
    """
    check_features("z", z, finite=False)
    y = check_labels("labels", labels, z.shape[0], z, "z")
    return _class_centroids(check_finite("z", z), y)


def tolerance(z: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean cosine similarity z_i . z_j over distinct same-class pairs (i != j, pooled over classes).

    ``z``: features [N, D] (L2-normalised inside); ``labels``: integer labels [N], same device.

    Exact in O(N D) from the class sums S_c: sum_{i != j in c} z_i.z_j = ||S_c||^2 - sum_{i in c} ||z_i||^2.
    Wang & Liu define E[z_x . z_y 1(l_x = l_y)] over all pairs; we divide by the number of
    same-class pairs so that perfectly clustered features give 1 for any number of classes.
    Raises ``ValueError`` when no class has two samples (no pair exists).
    """
    check_features("z", z, finite=False)
    y = check_labels("labels", labels, z.shape[0], z, "z")
    zn = checked_normalized("z", z)
    _, counts, sums = class_sums(zn, y)
    n_pairs = int((counts * (counts - 1)).sum())
    if n_pairs == 0:
        raise ValueError("labels: tolerance needs at least one class with two samples (no same-class pair)")
    return float((sums.pow(2).sum() - zn.to(torch.float64).pow(2).sum()) / n_pairs)


def inter_class_uniformity(z: torch.Tensor, labels: torch.Tensor, t: float = 2.0) -> float:
    """Uniformity (distinct pairs, temperature t > 0) of the L2-normalised class centroids.

    ``z``: features [N, D]; ``labels``: integer labels [N], same device. Centroids are means of the
    L2-normalised features of each class present in ``labels``; needs at least 2 classes, and a
    centroid of length 0 (a class whose features cancel) raises.
    """
    t = as_positive("t", t)
    check_features("z", z, finite=False)
    y = check_labels("labels", labels, z.shape[0], z, "z")
    zn = checked_normalized("z", z)
    _, centroids = _class_centroids(zn, y)
    if centroids.shape[0] < 2:
        raise ValueError("labels: inter_class_uniformity needs at least 2 classes")
    centroids = normalize_rows("class centroids of z", centroids.to(compute_dtype(zn)))
    return _log_mean_exp_distinct(centroids, t, DEFAULT_CHUNK_SIZE)
