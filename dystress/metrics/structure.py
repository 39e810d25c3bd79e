"""Local and global structure of a feature space and of its 2-D embedding (UMAP views over training).

Conventions: ``high`` (features [N, D]) is L2-normalised inside and compared by cosine similarity
(so its neighbours are those of the Euclidean distance between unit vectors); ``low`` (an embedding
[N, d], e.g. 2-D UMAP) is used as given, with Euclidean distance. A point is never its own neighbour;
a duplicate point is. All neighbour searches are exact and chunked (memory O(chunk_size x N)).

- Local structure: ``trustworthiness`` (Venna & Kaski 2001, the formula of
  ``sklearn.manifold.trustworthiness``), ``knn_overlap`` and ``knn_label_purity``.
- Global structure: ``centroid_distance_agreement``, the Spearman correlation between the pairwise
  class-centroid distances in feature space and in the embedding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from dystress._checks import as_int, as_positive
from dystress.metrics._neighbours import (
    chunked_topk,
    cosine_scores,
    neg_euclidean_scores,
    score_chunks,
)
from dystress.metrics._validation import (
    check_features,
    check_finite,
    check_labels,
    check_same_device,
    compute_dtype,
    normalize_rows,
)
from dystress.metrics.geometry import _class_centroids

DEFAULT_CHUNK_SIZE = 1024


def _check_pair(high: object, low: object, min_rows: int) -> int:
    """Structure only (no work): float ``high`` [N, D] and ``low`` [N, d] on one device; return N."""
    check_features("high", high, min_rows=min_rows, finite=False)
    check_features("low", low, min_rows=min_rows, finite=False)
    if low.shape[0] != high.shape[0]:
        raise ValueError(f"low has {low.shape[0]} rows but high has {high.shape[0]}: one row per sample")
    check_same_device("low", low, "high", high)
    return high.shape[0]


def _pair_values(high: torch.Tensor, low: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """After ``_check_pair``: the values checks, then normalised ``high`` and ``low`` in its compute dtype."""
    check_finite("high", high)
    check_finite("low", low)
    return normalize_rows("high", high), low.to(compute_dtype(low))


def trustworthiness(
    high: torch.Tensor, low: torch.Tensor, k: int = 5, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> float:
    """Trustworthiness T(k) in [0, 1] of the embedding ``low`` of ``high`` (1 = no false neighbours).

    T(k) = 1 - 2 / (N k (2N - 3k - 1)) sum_i sum_{j in kNN_low(i)} max(0, r(i, j) - k), with r(i, j)
    the rank of j among i's neighbours in ``high`` (1 = nearest). A high-dimensional tie counts in
    j's favour (r = 1 + number of points strictly nearer). Needs 1 <= k < N / 2.

    Args:
        high: features [N, D], N >= 3 (cosine similarity); low: embedding [N, d] (Euclidean), same device.
        k: neighbours, 1 <= k <= (N - 1) // 2. chunk_size: rows per chunk, >= 1.
    """
    k = as_int("k", k, 1)
    chunk_size = as_int("chunk_size", chunk_size, 1)
    n = _check_pair(high, low, min_rows=3)
    as_int("k", k, 1, (n - 1) // 2)
    hn, lo = _pair_values(high, low)
    low_idx = chunked_topk(neg_euclidean_scores(lo, lo), n, k, chunk_size, exclude_self=True)[1]
    penalty = torch.zeros((), dtype=torch.float64, device=hn.device)
    nearer_mask: torch.Tensor | None = None  # reused: no fresh chunk-sized allocation per comparison
    for start, stop, sims in score_chunks(cosine_scores(hn, hn), n, chunk_size, exclude_self=True):
        s_low_nn = sims.gather(1, low_idx[start:stop])  # [c, k] high-dim similarity of each low-dim neighbour
        if nearer_mask is None or nearer_mask.shape != sims.shape:
            nearer_mask = torch.empty(sims.shape, dtype=torch.bool, device=sims.device)
        for m in range(k):  # rank - 1 = number of points strictly nearer in high (uint8 view: fast count)
            torch.gt(sims, s_low_nn[:, m : m + 1], out=nearer_mask)
            nearer = nearer_mask.view(torch.uint8).sum(1, dtype=torch.int32)
            penalty += (nearer + 1 - k).clamp_min(0).sum()
    return 1.0 - 2.0 / (n * k * (2.0 * n - 3.0 * k - 1.0)) * float(penalty)


def knn_overlap(
    high: torch.Tensor, low: torch.Tensor, k: int = 10, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> float:
    """Mean over points of |kNN_high(i) & kNN_low(i)| / k, in [0, 1] (self excluded from both).

    ``high``: features [N, D], N >= 2 (cosine); ``low``: embedding [N, d] (Euclidean), same device;
    1 <= k <= N - 1; chunk_size >= 1.
    """
    k = as_int("k", k, 1)
    chunk_size = as_int("chunk_size", chunk_size, 1)
    n = _check_pair(high, low, min_rows=2)
    as_int("k", k, 1, n - 1)
    hn, lo = _pair_values(high, low)
    high_idx = chunked_topk(cosine_scores(hn, hn), n, k, chunk_size, exclude_self=True)[1]
    low_idx = chunked_topk(neg_euclidean_scores(lo, lo), n, k, chunk_size, exclude_self=True)[1]
    shared = torch.zeros((), dtype=torch.long, device=hn.device)
    for start in range(0, n, chunk_size):
        h, l_ = high_idx[start : start + chunk_size], low_idx[start : start + chunk_size]
        shared += (h[:, :, None] == l_[:, None, :]).any(2).sum()
    return float(shared) / (n * k)


def knn_label_purity(
    z: torch.Tensor,
    labels: torch.Tensor,
    k: int = 10,
    metric: str = "cosine",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> float:
    """Fraction of the k nearest neighbours (self excluded) that share the point's label, averaged.

    ``z``: features [N, D] or embedding [N, d], N >= 2; ``labels``: integer labels [N], same device.
    ``metric="cosine"`` L2-normalises ``z`` (feature space); ``"euclidean"`` uses it as given (2-D
    embedding). Needs 1 <= k <= N - 1; chunk_size >= 1.
    """
    if not isinstance(metric, str) or metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
    k = as_int("k", k, 1)
    chunk_size = as_int("chunk_size", chunk_size, 1)
    check_features("z", z, min_rows=2, finite=False)
    n = z.shape[0]
    y = check_labels("labels", labels, n, z, "z")
    as_int("k", k, 1, n - 1)
    check_finite("z", z)
    if metric == "cosine":
        x = normalize_rows("z", z)
        scores = cosine_scores(x, x)
    else:
        x = z.to(compute_dtype(z))
        scores = neg_euclidean_scores(x, x)
    idx = chunked_topk(scores, n, k, chunk_size, exclude_self=True)[1]
    return float((y[idx] == y[:, None]).double().mean())


def _condensed_distances(points: torch.Tensor) -> np.ndarray:
    """Upper-triangle Euclidean distances (i < j, row-major) of points [C, d], float64."""
    p = points.detach().to("cpu", torch.float64)
    d = (p[:, None, :] - p[None, :, :]).pow(2).sum(-1).sqrt()
    i, j = torch.triu_indices(p.shape[0], p.shape[0], offset=1)
    return d[i, j].numpy()


def centroid_distance_agreement(high: torch.Tensor, low: torch.Tensor, labels: torch.Tensor) -> float:
    """Spearman correlation of pairwise class-centroid distances in ``high`` vs ``low`` (global structure).

    Centroids: mean of the L2-normalised features of a class in ``high``, mean embedding in ``low``;
    Euclidean distances between the C (C - 1) / 2 centroid pairs; Spearman with average ranks for
    ties. Needs >= 3 classes. Returns nan when either set of distances is constant up to a relative
    1e-6 (correlation undefined).

    ``high``: features [N, D], N >= 3; ``low``: embedding [N, d]; ``labels``: integer labels [N]; one device.
    """
    n = _check_pair(high, low, min_rows=3)
    y = check_labels("labels", labels, n, high, "high")
    hn, lo = _pair_values(high, low)
    _, high_centroids = _class_centroids(hn, y)
    if high_centroids.shape[0] < 3:
        raise ValueError("labels: centroid_distance_agreement needs at least 3 classes")
    _, low_centroids = _class_centroids(lo, y)
    dh, dl = _condensed_distances(high_centroids), _condensed_distances(low_centroids)
    if any(np.ptp(d) <= 1e-6 * np.max(d) for d in (dh, dl)):  # constant up to float32 rounding
        return float("nan")
    from scipy.stats import spearmanr

    return float(spearmanr(dh, dl).statistic)


def structure_scores(
    high: torch.Tensor,
    low: torch.Tensor,
    labels: torch.Tensor,
    k: int = 10,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> dict[str, float]:
    """All structure scores of one embedding at one k, as a dict (local: trustworthiness, knn_overlap,
    label purity in both spaces; global: centroid_distance_agreement).

    ``high``: features [N, D], N >= 3; ``low``: embedding [N, d]; ``labels``: integer labels [N]; one
    device. 1 <= k <= (N - 1) // 2 (trustworthiness's bound); chunk_size >= 1. Every input is checked
    before the first score is computed.
    """
    k = as_int("k", k, 1)
    chunk_size = as_int("chunk_size", chunk_size, 1)
    n = _check_pair(high, low, min_rows=3)
    check_labels("labels", labels, n, high, "high")
    as_int("k", k, 1, (n - 1) // 2)
    return {
        "trustworthiness": trustworthiness(high, low, k, chunk_size),
        "knn_overlap": knn_overlap(high, low, k, chunk_size),
        "label_purity_high": knn_label_purity(high, labels, k, "cosine", chunk_size),
        "label_purity_low": knn_label_purity(low, labels, k, "euclidean", chunk_size),
        "centroid_distance_agreement": centroid_distance_agreement(high, low, labels),
        "k": k,
    }


def procrustes_align(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rigidly move ``source`` [N, d] onto ``target`` [N, d]: translation + orthogonal map (rotation or
    reflection), no scaling, minimising the sum of squared distances (orthogonal Procrustes).

    Returns the moved ``source``, a float64 array [N, d].
    """
    src, tgt = np.asarray(source, dtype=np.float64), np.asarray(target, dtype=np.float64)
    if src.shape != tgt.shape or src.ndim != 2:
        raise ValueError(
            f"source and target must have the same shape [N, d], got {src.shape} and {tgt.shape}"
        )
    a, b = src - src.mean(0), tgt - tgt.mean(0)
    u, _, vt = np.linalg.svd(a.T @ b)
    return a @ (u @ vt) + tgt.mean(0)


def aligned_umap_embeddings(
    snapshots: Sequence[torch.Tensor],
    labels: torch.Tensor | None = None,
    random_state: int = 0,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    metric: str = "cosine",
) -> list[np.ndarray]:
    """2-D UMAP of each feature snapshot [N, D] (same samples, same order), made comparable over training.

    Method: an independent ``umap.UMAP`` (umap-learn, imported here so the package works without it)
    per snapshot, then orthogonal Procrustes (``procrustes_align``) of each embedding onto the previous
    aligned one. Only rigid motions are applied, so every structure score is unchanged by the
    alignment. ``labels`` [N] are only checked for length: the embedding is unsupervised. The first
    call in a process spends about 40 s compiling numba code.

    Returns:
        one float64 array [N, 2] per snapshot.
    """
    random_state = as_int("random_state", random_state, 0)
    n_neighbors = as_int("n_neighbors", n_neighbors, 2)
    min_dist = as_positive("min_dist", min_dist)
    if not isinstance(metric, str) or not metric:
        raise ValueError(f"metric must be the name of a umap-learn metric (e.g. 'cosine'), got {metric!r}")
    if not hasattr(snapshots, "__len__") or len(snapshots) == 0:
        raise ValueError("snapshots must be a non-empty sequence of [N, D] feature tensors")
    n = None
    for s, x in enumerate(snapshots):
        check_features(f"snapshots[{s}]", x, min_rows=3, finite=False)
        if n is not None and x.shape[0] != n:
            raise ValueError(
                f"snapshots[{s}] has {x.shape[0]} rows, snapshots[0] has {n}: same samples needed"
            )
        n = x.shape[0]
    if labels is not None:
        check_labels("labels", labels, n, labels, "snapshots")
    as_int("n_neighbors", n_neighbors, 2, n - 1)
    for s, x in enumerate(snapshots):
        check_finite(f"snapshots[{s}]", x)
    try:
        import umap
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("aligned_umap_embeddings needs umap-learn (pip install umap-learn)") from error

    embeddings: list[np.ndarray] = []
    for x in snapshots:
        reducer = umap.UMAP(
            n_jobs=1,  # a fixed random_state makes umap single-threaded anyway
            n_components=2,
            n_neighbors=n_neighbors,
            min_dist=min_dist,
            metric=metric,
            random_state=random_state,
        )
        emb = np.asarray(reducer.fit_transform(x.detach().to("cpu", torch.float32).numpy()), dtype=np.float64)
        embeddings.append(procrustes_align(emb, embeddings[-1]) if embeddings else emb)
    return embeddings
