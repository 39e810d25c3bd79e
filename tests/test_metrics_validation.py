"""Every metric rejects bad input with a ValueError naming the parameter, before any work."""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
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


# --- scalar arguments are checked first, before any tensor work --------------------------------------
# The features below hold a NaN (and the second set a zero row): if any finite check, normalisation or
# other tensor work ran before a scalar check, the error would be about the features instead.

NAN_X = _with_row(_with_row(X, 5, float("nan")), 7, 0.0)
NAN_LOW = _with_row(LOW, 3, float("nan"))
NAN_DISTS = {"tp": torch.tensor([float("nan")])}

SCALAR_FIRST = [
    (lambda: M.knn_accuracy(NAN_X, Y, NAN_X, Y, k=0), "k must be >= 1, got 0"),
    (lambda: M.knn_accuracy(NAN_X, Y, NAN_X, Y, k=13), "k must be >= 1 and <= 12, got 13"),
    (lambda: M.knn_accuracy(NAN_X, Y, NAN_X, Y, k=2.0), "k must be an integer, got 2.0 (float)"),
    (lambda: M.knn_accuracy(NAN_X, Y, NAN_X, Y, k=True), "k must be an integer, got True (bool)"),
    (lambda: M.knn_accuracy(NAN_X, Y, NAN_X, Y, t=-1), "t must be a finite number > 0, got -1"),
    (lambda: M.knn_accuracy(NAN_X, Y, NAN_X, Y, t="0.1"), "t must be a finite number > 0, got '0.1'"),
    (lambda: M.knn_accuracy(NAN_X, Y, NAN_X, Y, k=3, chunk_size=0), "chunk_size must be >= 1, got 0"),
    (lambda: M.knn_accuracy(NAN_X, Y, NAN_X, Y, k=3, num_classes=0), "num_classes must be >= 1, got 0"),
    (
        lambda: M.knn_accuracy(NAN_X, Y, NAN_X, Y, k=3, exclude_self=None),
        "exclude_self must be True or False, got None",
    ),
    (lambda: M.knn_class_averaged_accuracy(NAN_X, Y, NAN_X, Y, k=0), "k must be >= 1, got 0"),
    (
        lambda: M.knn_class_averaged_accuracy(NAN_X, Y, NAN_X, Y, chunk_size=np.float64(8)),
        f"chunk_size must be an integer, got {np.float64(8)!r} (float64)",
    ),
    (
        lambda: M.linear_probe(NAN_X, Y, NAN_X, Y, weight_decay=-1.0),
        "weight_decay values must be finite numbers >= 0, got -1.0",
    ),
    (
        lambda: M.linear_probe(NAN_X, Y, NAN_X, Y, weight_decay=None),
        "weight_decay must be a number >= 0 or a non-empty sequence of them, got None",
    ),
    (lambda: M.linear_probe(NAN_X, Y, NAN_X, Y, max_iter=0), "max_iter must be >= 1, got 0"),
    (
        lambda: M.linear_probe(NAN_X, Y, NAN_X, Y, val_fraction=1.0),
        "val_fraction must be a number in (0, 1), got 1.0",
    ),
    (lambda: M.linear_probe(NAN_X, Y, NAN_X, Y, seed=-1), "seed must be >= 0, got -1"),
    (lambda: M.linear_probe(NAN_X, Y, NAN_X, Y, num_classes=0), "num_classes must be >= 1, got 0"),
    (lambda: M.alignment(NAN_X, NAN_X, alpha=0), "alpha must be a finite number > 0, got 0"),
    (lambda: M.uniformity(NAN_X, t=-1), "t must be a finite number > 0, got -1"),
    (lambda: M.uniformity(NAN_X, t=float("inf")), "t must be a finite number > 0, got inf"),
    (lambda: M.uniformity(NAN_X, chunk_size=0), "chunk_size must be >= 1, got 0"),
    (lambda: M.inter_class_uniformity(NAN_X, Y, t=0), "t must be a finite number > 0, got 0"),
    (lambda: M.similarity_distributions(NAN_X, NAN_X, Y, max_pairs=0), "max_pairs must be >= 1, got 0"),
    (lambda: M.similarity_distributions(NAN_X, NAN_X, Y, seed=-1), "seed must be >= 0, got -1"),
    (lambda: M.similarity_distributions(NAN_X, NAN_X, Y, chunk_size=0), "chunk_size must be >= 1, got 0"),
    (lambda: M.similarity_histograms(NAN_DISTS, bins=0), "bins must be >= 1, got 0"),
    (lambda: M.trustworthiness(NAN_X, NAN_LOW, k=0), "k must be >= 1, got 0"),
    (lambda: M.trustworthiness(NAN_X, NAN_LOW, k=6), "k must be >= 1 and <= 5, got 6"),
    (lambda: M.trustworthiness(NAN_X, NAN_LOW, chunk_size=0), "chunk_size must be >= 1, got 0"),
    (lambda: M.knn_overlap(NAN_X, NAN_LOW, k=12), "k must be >= 1 and <= 11, got 12"),
    (lambda: M.knn_overlap(NAN_X, NAN_LOW, chunk_size=0), "chunk_size must be >= 1, got 0"),
    (lambda: M.knn_label_purity(NAN_X, Y, k=12), "k must be >= 1 and <= 11, got 12"),
    (lambda: M.knn_label_purity(NAN_X, Y, chunk_size=0), "chunk_size must be >= 1, got 0"),
    (lambda: M.knn_label_purity(NAN_X, Y, metric="l1"), "metric must be 'cosine' or 'euclidean', got 'l1'"),
    (lambda: M.structure_scores(NAN_X, NAN_LOW, Y, k=0), "k must be >= 1, got 0"),
    (lambda: M.structure_scores(NAN_X, NAN_LOW, Y, k=6), "k must be >= 1 and <= 5, got 6"),
    (lambda: M.structure_scores(NAN_X, NAN_LOW, Y, chunk_size=0), "chunk_size must be >= 1, got 0"),
    (lambda: M.structure_scores(NAN_X, NAN_LOW, Y[:-1]), "labels has 11 entries but high has 12 rows"),
    (lambda: M.aligned_umap_embeddings([NAN_X], random_state=-1), "random_state must be >= 0, got -1"),
    (lambda: M.aligned_umap_embeddings([NAN_X], n_neighbors=1), "n_neighbors must be >= 2, got 1"),
    (
        lambda: M.aligned_umap_embeddings([NAN_X], n_neighbors=12),
        "n_neighbors must be >= 2 and <= 11, got 12",
    ),
    (lambda: M.aligned_umap_embeddings([NAN_X], min_dist=0), "min_dist must be a finite number > 0, got 0"),
    (
        lambda: M.aligned_umap_embeddings([NAN_X], metric=None),
        "metric must be the name of a umap-learn metric (e.g. 'cosine'), got None",
    ),
]


@pytest.mark.parametrize(("call", "message"), SCALAR_FIRST)
def test_scalar_arguments_are_checked_before_any_tensor_work(call, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        call()


def test_numpy_scalars_give_the_same_values_as_python_ones():
    assert M.uniformity(X, t=np.float64(2.0), chunk_size=np.int64(5)) == M.uniformity(X, t=2.0, chunk_size=5)
    assert M.alignment(X, LOW.repeat(1, 2), alpha=np.float32(2.0)) == M.alignment(
        X, LOW.repeat(1, 2), alpha=2.0
    )
    k_np = M.knn_label_purity(X, Y, k=np.int32(3), chunk_size=np.int64(4))
    assert k_np == M.knn_label_purity(X, Y, k=3, chunk_size=4)
    scores = M.structure_scores(X, LOW, Y, k=np.int64(3))
    assert scores == M.structure_scores(X, LOW, Y, k=3) and type(scores["k"]) is int


@pytest.mark.parametrize("name", M.__all__)
def test_every_public_metric_documents_its_tensor_shapes(name):
    doc = getattr(M, name).__doc__ or ""
    assert re.search(r"\[(N\w*|n|C|bins)[,\] +]", doc), f"{name}'s docstring gives no tensor shape"
