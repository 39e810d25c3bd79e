"""Alignment, uniformity, tolerance and inter-class uniformity against float64 loop references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dystress.metrics import alignment, class_centroids, inter_class_uniformity, tolerance, uniformity


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt((x * x).sum(1, keepdims=True))


def _ref_uniformity(z: np.ndarray, t: float) -> float:
    z = _unit(z)
    terms = [
        math.exp(-t * float(((z[i] - z[j]) ** 2).sum()))
        for i in range(len(z))
        for j in range(len(z))
        if i != j
    ]
    return math.log(sum(terms) / len(terms))


def _ref_tolerance(z: np.ndarray, y: np.ndarray) -> float:
    z = _unit(z)
    sims = [float(z[i] @ z[j]) for i in range(len(z)) for j in range(len(z)) if i != j and y[i] == y[j]]
    return sum(sims) / len(sims)


def _data(n: int, d: int, seed: int, duplicates: bool = False) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d))
    if duplicates:
        x[1] = x[0]
        x[-1] = 2.5 * x[0]  # same direction: the same point after normalisation
    return x


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 3.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_alignment_matches_loop(alpha, dtype):
    a, b = _unit(_data(11, 5, 0)), _unit(_data(11, 5, 1) * 3)
    ref = sum(float(np.sqrt(((a[i] - b[i]) ** 2).sum())) ** alpha for i in range(11)) / 11
    got = alignment(
        torch.tensor(_data(11, 5, 0), dtype=dtype), torch.tensor(_data(11, 5, 1) * 3, dtype=dtype), alpha
    )
    assert got == pytest.approx(ref, rel=1e-5 if dtype == torch.float32 else 1e-12)


def test_alignment_known_values():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert alignment(x, x) == pytest.approx(0.0, abs=1e-12)
    assert alignment(x, -x) == pytest.approx(4.0)  # antipodal positives: ||2 e||^2


@pytest.mark.parametrize(
    ("n", "duplicates"), [(2, False), (3, False), (3, True), (7, True), (13, False), (13, True)]
)
@pytest.mark.parametrize("chunk_size", [1, 2, 5, 1000])
@pytest.mark.parametrize("t", [0.5, 2.0])
def test_uniformity_matches_loop(n, duplicates, chunk_size, t):
    x = _data(n, 4, n, duplicates)
    got = uniformity(torch.tensor(x, dtype=torch.float64), t=t, chunk_size=chunk_size)
    assert got == pytest.approx(_ref_uniformity(x, t), rel=1e-10, abs=1e-12)
    got32 = uniformity(torch.tensor(x, dtype=torch.float32), t=t, chunk_size=chunk_size)
    assert got32 == pytest.approx(_ref_uniformity(x, t), rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("t", [0.5, 2.0, 3.0])
def test_uniformity_known_values(t):
    antipodal = torch.tensor([[1.0, 0.0, 0.0], [-3.0, 0.0, 0.0]])
    assert uniformity(antipodal, t=t) == pytest.approx(-4.0 * t)
    assert uniformity(torch.ones(5, 3)) == pytest.approx(0.0, abs=1e-6)  # all equal points
    # the 4 vertices of a square on the circle: distances^2 2, 2, 4 for each point
    square = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    assert uniformity(square, t=t) == pytest.approx(math.log((2 * math.exp(-2 * t) + math.exp(-4 * t)) / 3))


def test_uniformity_far_below_float_range_is_finite():
    # t = 200 with antipodal points: exp(-800) underflows, the log-sum-exp must not
    assert uniformity(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), t=200.0) == pytest.approx(-800.0)


@pytest.mark.parametrize(
    "labels",
    [
        [0, 0, 0, 0, 0, 0, 0, 0],  # one class
        [0, 1, 1, 2, 2, 2, 3, 3],  # a class with a single sample
        [5, 9, 5, 9, 5, 9, 5, 9],  # labels need not be 0..C-1
        [0, 1, 2, 3, 4, 5, 6, 6],  # one pair only
    ],
)
@pytest.mark.parametrize("duplicates", [False, True])
def test_tolerance_matches_loop(labels, duplicates):
    x, y = _data(8, 5, 3, duplicates), np.array(labels)
    got = tolerance(torch.tensor(x, dtype=torch.float32), torch.tensor(y))
    assert got == pytest.approx(_ref_tolerance(x, y), abs=1e-6)


@pytest.mark.parametrize("num_classes", [2, 10, 100])
def test_tolerance_of_perfect_clusters_is_one(num_classes):
    y = torch.arange(num_classes).repeat(3)
    z = torch.nn.functional.one_hot(y, num_classes).float() * 4
    assert tolerance(z, y) == pytest.approx(1.0, abs=1e-6)


def test_tolerance_without_pairs_raises():
    with pytest.raises(ValueError, match="labels"):
        tolerance(torch.randn(4, 3), torch.arange(4))


def _ref_inter_class(x: np.ndarray, y: np.ndarray, t: float) -> float:
    z = _unit(x)
    centroids = np.stack([z[y == c].mean(0) for c in sorted(set(y.tolist()))])
    return _ref_uniformity(centroids, t)


@pytest.mark.parametrize(
    "labels", [[0, 1, 1, 2, 2, 2, 3, 3], [0, 0, 0, 0, 1, 1, 1, 1], [4, 2, 4, 2, 7, 7, 7, 2]]
)
@pytest.mark.parametrize("t", [1.0, 2.0])
def test_inter_class_uniformity_matches_loop(labels, t):
    x, y = _data(8, 5, 4), np.array(labels)
    got = inter_class_uniformity(torch.tensor(x), torch.tensor(y), t=t)
    assert got == pytest.approx(_ref_inter_class(x, y, t), rel=1e-10)


def test_inter_class_uniformity_known_value_and_errors():
    z = torch.tensor([[1.0, 0.1], [1.0, -0.1], [-1.0, 0.2], [-1.0, -0.2]])
    assert inter_class_uniformity(z, torch.tensor([0, 0, 1, 1])) == pytest.approx(-8.0)
    with pytest.raises(ValueError, match="at least 2 classes"):
        inter_class_uniformity(z, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="centroids"):  # a class whose features cancel out
        inter_class_uniformity(torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0, 1]))


def test_class_centroids_match_loop_and_validate_input():
    x, y = _data(10, 3, 2), np.array([3, 1, 3, 3, 1, 7, 7, 1, 3, 7])
    classes, centroids = class_centroids(torch.tensor(x, dtype=torch.float32), torch.tensor(y))
    assert classes.tolist() == [1, 3, 7] and centroids.dtype == torch.float64
    ref = np.stack([x[y == c].astype(np.float32).astype(np.float64).mean(0) for c in (1, 3, 7)])
    np.testing.assert_allclose(centroids.numpy(), ref, rtol=1e-12)
    with pytest.raises(ValueError, match=r"^labels has 9 entries but z has 10 rows$"):
        class_centroids(torch.tensor(x), torch.tensor(y[:-1]))
    with pytest.raises(ValueError, match=r"^z contains NaN or inf$"):
        class_centroids(torch.tensor(x).index_fill(0, torch.tensor([4]), float("nan")), torch.tensor(y))


def test_uniformity_checks_t_before_normalising():
    # the review's case: t=-1 used to be reported only after the O(N D) normalisation (and its host sync)
    zeros = torch.zeros(5, 3)  # normalising it first would raise about the zero rows instead
    with pytest.raises(ValueError, match=r"^t must be a finite number > 0, got -1$"):
        uniformity(zeros, t=-1)
    with pytest.raises(ValueError, match=r"^chunk_size must be >= 1, got 0$"):
        uniformity(zeros, chunk_size=0)
