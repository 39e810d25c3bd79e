"""Local / global structure scores against sklearn and float64 loop references; Procrustes; UMAP (slow)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.manifold import trustworthiness as sk_trustworthiness

from dystress.metrics import (
    aligned_umap_embeddings,
    centroid_distance_agreement,
    knn_label_purity,
    knn_overlap,
    procrustes_align,
    structure_scores,
    trustworthiness,
)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt((x * x).sum(1, keepdims=True))


def _knn_loop(x: np.ndarray, k: int, cosine: bool) -> list[list[int]]:
    """Indices of the k nearest other points (cosine on unit rows, or Euclidean), by a Python loop."""
    out = []
    for i in range(len(x)):
        dist = [
            (float(-(x[i] @ x[j])) if cosine else float(((x[i] - x[j]) ** 2).sum()), j) for j in range(len(x))
        ]
        out.append([j for _, j in sorted(d for d in dist if d[1] != i)[:k]])
    return out


def _data(n: int, seed: int):
    rng = np.random.default_rng(seed)
    high = rng.normal(size=(n, 8))
    low = _unit(high)[:, :2] + 0.3 * rng.normal(size=(n, 2))  # a noisy projection
    return high, low


@pytest.mark.parametrize("k", [1, 3, 5, 12])
@pytest.mark.parametrize("chunk_size", [1, 7, 1000])
@pytest.mark.parametrize("seed", [0, 1])
def test_trustworthiness_matches_sklearn(k, chunk_size, seed):
    high, low = _data(30, seed)
    ref = sk_trustworthiness(_unit(high), low, n_neighbors=k)
    got = trustworthiness(torch.tensor(high), torch.tensor(low), k=k, chunk_size=chunk_size)
    assert got == pytest.approx(ref, abs=1e-12)


def test_trustworthiness_of_a_faithful_embedding_is_one():
    high = np.random.default_rng(0).normal(size=(25, 2))
    assert trustworthiness(torch.tensor(high), torch.tensor(_unit(high)) * 3, k=5) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="k"):
        trustworthiness(torch.tensor(high), torch.tensor(high), k=13)  # needs k < N / 2 = 12.5


@pytest.mark.parametrize("k", [1, 4, 10])
@pytest.mark.parametrize("chunk_size", [1, 6, 1000])
def test_knn_overlap_matches_loop(k, chunk_size):
    high, low = _data(23, k)
    hi, lo = _knn_loop(_unit(high), k, True), _knn_loop(low, k, False)
    ref = sum(len(set(a) & set(b)) for a, b in zip(hi, lo, strict=True)) / (23 * k)
    got = knn_overlap(torch.tensor(high, dtype=torch.float32), torch.tensor(low), k=k, chunk_size=chunk_size)
    assert got == pytest.approx(ref)


def test_knn_overlap_identity_is_one():
    x = torch.randn(20, 2, generator=torch.Generator().manual_seed(0))
    x = x / x.norm(dim=1, keepdim=True)
    assert knn_overlap(x, x, k=5) == 1.0


@pytest.mark.parametrize("k", [1, 3, 8])
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("chunk_size", [1, 5, 1000])
def test_knn_label_purity_matches_loop(k, metric, chunk_size):
    high, low = _data(21, k)
    y = np.random.default_rng(k).integers(0, 3, 21)
    x = _unit(high) if metric == "cosine" else low
    nn = _knn_loop(x, k, metric == "cosine")
    ref = sum(sum(y[j] == y[i] for j in nn[i]) for i in range(21)) / (21 * k)
    z = torch.tensor(high if metric == "cosine" else low)
    assert knn_label_purity(z, torch.tensor(y), k=k, metric=metric, chunk_size=chunk_size) == pytest.approx(
        ref
    )


def test_knn_label_purity_duplicates_count_as_neighbours():
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert knn_label_purity(z, torch.tensor([0, 0, 1, 1]), k=1) == 1.0
    assert knn_label_purity(z, torch.tensor([0, 1, 0, 1]), k=1) == 0.0


def _ranks(v: list[float]) -> list[float]:
    order = sorted(range(len(v)), key=lambda i: v[i])
    ranks = [0.0] * len(v)
    i = 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
            j += 1
        for m in range(i, j + 1):
            ranks[order[m]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _pearson(a: list[float], b: list[float]) -> float:
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b, strict=True))
    return cov / math.sqrt(sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b))


def _ref_agreement(high: np.ndarray, low: np.ndarray, y: np.ndarray) -> float:
    classes = sorted(set(y.tolist()))
    ch = [_unit(high)[y == c].mean(0) for c in classes]
    cl = [low[y == c].mean(0) for c in classes]
    pairs = [(a, b) for a in range(len(classes)) for b in range(a + 1, len(classes))]
    dh = [float(np.sqrt(((ch[a] - ch[b]) ** 2).sum())) for a, b in pairs]
    dl = [float(np.sqrt(((cl[a] - cl[b]) ** 2).sum())) for a, b in pairs]
    return _pearson(_ranks(dh), _ranks(dl))


@pytest.mark.parametrize("num_classes", [3, 4, 7])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_centroid_distance_agreement_matches_loop(num_classes, seed):
    high, low = _data(40, seed)
    y = np.arange(40) % num_classes
    got = centroid_distance_agreement(torch.tensor(high), torch.tensor(low), torch.tensor(y))
    assert got == pytest.approx(_ref_agreement(high, low, y), abs=1e-12)


def test_centroid_distance_agreement_known_values_and_errors():
    y = torch.arange(4).repeat_interleave(2)
    pts = torch.tensor([[0.0, 1.0], [1.0, 0.0], [-1.0, 0.2], [0.3, -1.0]])
    high = torch.cat([pts, torch.zeros(4, 3)], 1)[y]
    high_unit = high / high.norm(dim=1, keepdim=True)
    assert centroid_distance_agreement(high, high_unit[:, :2] * 5 + 1, y) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="3 classes"):
        centroid_distance_agreement(high, high[:, :2], y % 2)
    square = torch.tensor(
        [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]
    )  # three corners of a square: distances differ
    assert not math.isnan(centroid_distance_agreement(square, square, torch.arange(3)))
    triangle = torch.tensor([[1.0, 0.0], [-0.5, 3**0.5 / 2], [-0.5, -(3**0.5) / 2]])
    assert math.isnan(centroid_distance_agreement(square, triangle, torch.arange(3)))  # constant distances


def test_structure_scores_collects_all():
    high, low = _data(30, 3)
    y = torch.arange(30) % 3
    scores = structure_scores(torch.tensor(high), torch.tensor(low), y, k=4)
    assert scores["trustworthiness"] == trustworthiness(torch.tensor(high), torch.tensor(low), k=4)
    assert scores["label_purity_low"] == knn_label_purity(torch.tensor(low), y, k=4, metric="euclidean")
    assert set(scores) == {
        "trustworthiness",
        "knn_overlap",
        "label_purity_high",
        "label_purity_low",
        "centroid_distance_agreement",
        "k",
    }


@pytest.mark.parametrize("reflect", [False, True])
def test_procrustes_recovers_a_rigid_motion(reflect):
    rng = np.random.default_rng(0)
    target = rng.normal(size=(50, 2))
    angle = 1.1
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    if reflect:
        rot = rot @ np.diag([1.0, -1.0])
    source = target @ rot + np.array([3.0, -2.0])
    np.testing.assert_allclose(procrustes_align(source, target), target, atol=1e-10)
    moved = procrustes_align(source + 0.1 * rng.normal(size=(50, 2)), target)
    # a rigid motion: pairwise distances of the source are kept
    d_src = np.linalg.norm(source[:, None] - source[None], axis=-1)
    d_new = np.linalg.norm(moved[:, None] - moved[None], axis=-1)
    assert np.abs(d_new - d_src).max() < 0.5


def test_aligned_umap_validates_before_importing_umap():
    with pytest.raises(ValueError, match="snapshots"):
        aligned_umap_embeddings([])
    with pytest.raises(ValueError, match=r"snapshots\[1\]"):
        aligned_umap_embeddings([torch.randn(10, 4), torch.randn(9, 4)])
    with pytest.raises(ValueError, match="labels"):
        aligned_umap_embeddings([torch.randn(10, 4)], labels=torch.arange(9))


@pytest.mark.slow
def test_aligned_umap_embeddings_tiny():
    pytest.importorskip("umap")
    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    centres = torch.eye(8)[:3] * 4
    snaps = [centres[y] + s * torch.randn(60, 8, generator=g) for s in (1.0, 0.5)]
    embs = aligned_umap_embeddings(snaps, y, random_state=0, n_neighbors=10)
    assert [e.shape for e in embs] == [(60, 2), (60, 2)]
    assert all(np.isfinite(e).all() for e in embs)
    assert knn_label_purity(torch.tensor(embs[1]), y, k=5, metric="euclidean") > 0.9
    again = aligned_umap_embeddings(snaps[:1], y, random_state=0, n_neighbors=10)
    np.testing.assert_allclose(again[0], embs[0], atol=1e-4)  # deterministic with a fixed random_state
