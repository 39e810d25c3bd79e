"""Every metric rejects bad input with a ValueError naming the parameter, before any work."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from dystress import metrics as M

X = torch.randn(12, 4, generator=torch.Generator().manual_seed(0))
Y = torch.arange(12) % 3
LOW = X[:, :2].clone()


def _with_row(x: torch.Tensor, row: int, value: float) -> torch.Tensor:
    x = x.clone()
    x[row] = value
    return x


# each metric as a function of (features, labels), the feature argument being the first one validated
FEATURE_METRICS: dict[str, Callable[[torch.Tensor, torch.Tensor], object]] = {
    "knn_accuracy": lambda x, y: M.knn_accuracy(x, y, X, Y, k=3),
    "knn_accuracy_test": lambda x, y: M.knn_accuracy(X, Y, x, y, k=3),
    "knn_class_averaged": lambda x, y: M.knn_class_averaged_accuracy(x, y, X, Y, k=3),
    "linear_probe": lambda x, y: M.linear_probe(x, y, X, Y),
    "alignment": lambda x, y: M.alignment(x, X),
    "alignment_z1": lambda x, y: M.alignment(X, x),
    "uniformity": lambda x, y: M.uniformity(x),
    "tolerance": lambda x, y: M.tolerance(x, y),
    "inter_class_uniformity": lambda x, y: M.inter_class_uniformity(x, y),
    "similarity_distributions": lambda x, y: M.similarity_distributions(x, X, y),
    "trustworthiness": lambda x, y: M.trustworthiness(x, LOW),
    "trustworthiness_low": lambda x, y: M.trustworthiness(X, x),
    "knn_overlap": lambda x, y: M.knn_overlap(x, LOW, k=3),
    "knn_label_purity": lambda x, y: M.knn_label_purity(x, y, k=3),
    "centroid_distance_agreement": lambda x, y: M.centroid_distance_agreement(x, LOW, y),
}
NAMES = {
    "knn_accuracy": "train_features",
    "knn_accuracy_test": "test_features",
    "knn_class_averaged": "train_features",
    "linear_probe": "train_features",
    "alignment": "z0",
    "alignment_z1": "z1",
    "trustworthiness": "high",
    "trustworthiness_low": "low",
    "knn_overlap": "high",
    "similarity_distributions": "z0",
    "centroid_distance_agreement": "high",
}
NORMALISING = [m for m in FEATURE_METRICS if m not in ("linear_probe", "trustworthiness_low")]


@pytest.mark.parametrize("metric", list(FEATURE_METRICS))
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_features_raise(metric, value):
    with pytest.raises(ValueError, match=f"{NAMES.get(metric, 'z')} contains NaN or inf"):
        FEATURE_METRICS[metric](_with_row(X, 5, value), Y)


@pytest.mark.parametrize("metric", NORMALISING)
def test_zero_vectors_raise(metric):
    with pytest.raises(ValueError, match=f"{NAMES.get(metric, 'z')} has a zero vector \\(row 7\\)"):
        FEATURE_METRICS[metric](_with_row(X, 7, 0.0), Y)


@pytest.mark.parametrize("metric", list(FEATURE_METRICS))
@pytest.mark.parametrize("bad", [X[0], X[None], X.long(), "features"])
def test_wrong_feature_type_or_dims_raise(metric, bad):
    with pytest.raises(ValueError, match=NAMES.get(metric, "z")):
        FEATURE_METRICS[metric](bad, Y)


LABELLED = ["knn_accuracy", "knn_class_averaged", "linear_probe", "tolerance", "inter_class_uniformity",
            "similarity_distributions", "knn_label_purity", "centroid_distance_agreement"]  # fmt: skip


@pytest.mark.parametrize("metric", LABELLED)
@pytest.mark.parametrize("bad", [Y[:-1], Y.float(), Y[None], Y.bool(), [0] * 12])
def test_bad_labels_raise(metric, bad):
    with pytest.raises(ValueError, match="labels"):
        FEATURE_METRICS[metric](X, bad)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: M.knn_accuracy(X, Y, X, Y, k=0), "k must be"),
        (lambda: M.knn_accuracy(X, Y, X, Y, k=13), "k must be"),
        (lambda: M.knn_accuracy(X, Y, X, Y, k=2.0), "k must be an int"),
        (lambda: M.knn_accuracy(X, Y, X, Y, k=3, t=0.0), "t must be"),
        (lambda: M.knn_accuracy(X, Y, X, Y, k=3, t=float("nan")), "t must be"),
        (lambda: M.knn_accuracy(X, Y, X, Y, k=3, chunk_size=0), "chunk_size"),
        (lambda: M.knn_accuracy(X, Y, X, Y, k=3, num_classes=2), "num_classes"),
        (lambda: M.knn_accuracy(X, Y - 1, X, Y, k=2), "must be >= 0"),
        (lambda: M.knn_accuracy(X, Y, X[:, :3], Y, k=3), "test_features must have 4 columns"),
        (lambda: M.knn_class_averaged_accuracy(X, Y, X, Y, k=0), "k must be"),
        (lambda: M.alignment(X, X[:5]), "z1 has 5 rows"),
        (lambda: M.alignment(X, X, alpha=0), "alpha"),
        (lambda: M.uniformity(X[:1]), "at least 2 row"),
        (lambda: M.uniformity(X, t=-1.0), "t must be"),
        (lambda: M.uniformity(X, chunk_size=0), "chunk_size"),
        (lambda: M.inter_class_uniformity(X, Y, t=0), "t must be"),
        (lambda: M.similarity_distributions(X, X, Y, max_pairs=0), "max_pairs"),
        (lambda: M.similarity_distributions(X, X[:3], Y), "z1 has 3 rows"),
        (lambda: M.trustworthiness(X, LOW, k=0), "k must be"),
        (lambda: M.trustworthiness(X, LOW[:5]), "low has 5 rows"),
        (lambda: M.knn_overlap(X, LOW, k=12), "k must be"),
        (lambda: M.knn_label_purity(X, Y, k=0), "k must be"),
        (lambda: M.knn_label_purity(X, Y, metric="l1"), "metric"),
        (lambda: M.earth_movers_distance([], [1.0]), "a must be"),
    ],
)
def test_invalid_settings_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()
