"""Linear probe: separable clusters, chance on random labels, agreement with scikit-learn, protocol."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from dystress.metrics import linear_probe


def _gaussian_clusters(n: int, num_classes: int, dim: int, seed: int, spread: float):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(123)) * spread
    y = torch.randint(num_classes, (n,), generator=g)
    return centres[y] + torch.randn(n, dim, generator=g), y


@pytest.mark.parametrize("num_classes", [2, 10])
def test_separable_clusters_reach_100_percent(num_classes):
    xtr, ytr = _gaussian_clusters(600, num_classes, 32, 0, spread=3.0)
    xte, yte = _gaussian_clusters(300, num_classes, 32, 1, spread=3.0)
    res = linear_probe(xtr, ytr, xte, yte)
    assert res["top1"] >= 99.0
    assert res["train_top1"] >= 99.0
    assert ("top5" in res) == (num_classes >= 5)


def test_random_labels_give_chance():
    g = torch.Generator().manual_seed(0)
    xtr, xte = torch.randn(3000, 64, generator=g), torch.randn(3000, 64, generator=g)
    ytr, yte = torch.randint(10, (3000,), generator=g), torch.randint(10, (3000,), generator=g)
    res = linear_probe(xtr, ytr, xte, yte, num_classes=10)
    # chance 10 %, standard error 0.55 points on 3000 test samples
    assert abs(res["top1"] - 10.0) < 2.5
    assert abs(res["top5"] - 50.0) < 4.0
    assert res["train_top1"] > 15.0  # it does fit the training noise


@pytest.mark.parametrize("weight_decay", [1e-3, 1e-1])
def test_matches_sklearn_logistic_regression(weight_decay):
    rng = np.random.default_rng(0)
    xtr = rng.normal(size=(400, 12)) * rng.uniform(0.5, 3.0, 12) + rng.normal(size=12)
    ytr = (xtr[:, 0] + 0.5 * xtr[:, 1] + rng.normal(size=400) > 0).astype(int) + (xtr[:, 2] > 1)
    xte = rng.normal(size=(300, 12)) * rng.uniform(0.5, 3.0, 12)
    yte = rng.integers(0, 3, 300)
    mean, std = xtr.mean(0), xtr.std(0)
    # sklearn minimises C * sum(CE) + ||W||^2 / 2, i.e. mean CE + ||W||^2 / (2 C N)
    clf = LogisticRegression(C=1.0 / (weight_decay * 400), tol=1e-10, max_iter=10_000)
    clf.fit((xtr - mean) / std, ytr)
    ref_test = 100.0 * np.mean(clf.predict((xte - mean) / std) == yte)
    ref_train = 100.0 * np.mean(clf.predict((xtr - mean) / std) == ytr)
    res = linear_probe(
        torch.tensor(xtr), torch.tensor(ytr), torch.tensor(xte), torch.tensor(yte), weight_decay=weight_decay
    )
    assert res["top1"] == pytest.approx(ref_test)
    assert res["train_top1"] == pytest.approx(ref_train)
    assert res["protocol"]["dtype"] == "float64"


def test_deterministic_and_protocol_reported():
    xtr, ytr = _gaussian_clusters(500, 5, 16, 0, spread=0.7)
    xte, yte = _gaussian_clusters(200, 5, 16, 1, spread=0.7)
    a = linear_probe(xtr, ytr, xte, yte, max_iter=50)
    b = linear_probe(xtr, ytr, xte, yte, max_iter=50)
    assert a == b
    p = a["protocol"]
    assert p["max_iter"] == 50 and 1 <= p["n_iter"] <= 50
    assert p["weight_decay_grid"] == [1e-4] and p["selection"] == "fixed a priori"
    assert (p["n_train"], p["n_test"], p["num_classes"]) == (500, 200, 5)


def test_weight_decay_grid_is_selected_on_a_validation_split_not_the_test_set():
    xtr, ytr = _gaussian_clusters(400, 4, 16, 0, spread=0.6)
    xte, yte = _gaussian_clusters(200, 4, 16, 1, spread=0.6)
    grid = [1e-4, 1e-2, 10.0]
    res = linear_probe(xtr, ytr, xte, yte, weight_decay=grid, seed=3)
    p = res["protocol"]
    assert set(p["val_top1"]) == {str(w) for w in grid}
    best = max(grid, key=lambda w: (p["val_top1"][str(w)], w))
    assert res["weight_decay"] == best
    # changing the test labels must not change the choice
    shuffled = linear_probe(
        xtr,
        ytr,
        xte,
        yte[torch.randperm(200, generator=torch.Generator().manual_seed(0))],
        weight_decay=grid,
        seed=3,
    )
    assert shuffled["weight_decay"] == best and shuffled["protocol"]["val_top1"] == p["val_top1"]


def test_constant_feature_is_harmless():
    xtr, ytr = _gaussian_clusters(200, 3, 8, 0, spread=3.0)
    xte, yte = _gaussian_clusters(100, 3, 8, 1, spread=3.0)
    xtr[:, 0], xte[:, 0] = 5.0, 7.0
    res = linear_probe(xtr, ytr, xte, yte)
    assert np.isfinite(res["top1"]) and res["top1"] >= 95.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"weight_decay": []}, "weight_decay"),
        ({"weight_decay": [1e-3, float("nan")]}, "weight_decay"),
        ({"max_iter": 0}, "max_iter"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"num_classes": 2}, "num_classes"),
    ],
)
def test_invalid_settings_raise(kwargs, match):
    x, y = torch.randn(20, 3), torch.arange(20) % 4
    with pytest.raises(ValueError, match=match):
        linear_probe(x, y, x, y, **kwargs)


def test_numpy_weight_decay_and_scalars_give_the_same_result():
    xtr, ytr = _gaussian_clusters(200, 4, 8, 0, spread=1.0)
    xte, yte = _gaussian_clusters(100, 4, 8, 1, spread=1.0)
    ref = linear_probe(xtr, ytr, xte, yte, weight_decay=1e-2, max_iter=20)
    got = linear_probe(xtr, ytr, xte, yte, weight_decay=np.float64(1e-2), max_iter=np.int64(20))
    assert got == ref
    grid_ref = linear_probe(
        xtr, ytr, xte, yte, weight_decay=[1e-3, 1.0], max_iter=15, seed=1, val_fraction=0.25
    )
    grid = linear_probe(
        xtr, ytr, xte, yte, weight_decay=np.array([1e-3, 1.0]), max_iter=15, seed=np.int32(1),
        val_fraction=np.float64(0.25),
    )  # fmt: skip
    assert grid == grid_ref
    assert type(grid["protocol"]["max_iter"]) is int and type(grid["protocol"]["seed"]) is int


@pytest.mark.parametrize(
    ("weight_decay", "message"),
    [
        (None, "weight_decay must be a number >= 0 or a non-empty sequence of them, got None"),
        ("0.1", "weight_decay values must be finite numbers >= 0, got '0.1'"),
        ([1e-3, True], "weight_decay values must be finite numbers >= 0, got True"),
        (float("inf"), "weight_decay values must be finite numbers >= 0, got inf"),
    ],
)
def test_weight_decay_of_the_wrong_kind_raises_value_error(weight_decay, message):
    x, y = torch.randn(20, 3), torch.arange(20) % 4
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        linear_probe(x, y, x, y, weight_decay=weight_decay)
