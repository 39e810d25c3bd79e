"""Evaluation and feature-space metrics: kNN, linear probe, geometry, similarity distributions, structure.

Every metric takes torch tensors (float features [N, D], int64 labels [N]) on any device, validates
them first (``ValueError`` naming the parameter) and is exact, chunked to O(chunk x N) memory.
"""

from __future__ import annotations

from dystress.metrics.features import extract_features
from dystress.metrics.geometry import (
    alignment,
    class_centroids,
    inter_class_uniformity,
    tolerance,
    uniformity,
)
from dystress.metrics.knn import knn_accuracy, knn_class_averaged_accuracy, knn_majority_accuracy
from dystress.metrics.linear_probe import linear_probe
from dystress.metrics.similarity import (
    earth_movers_distance,
    pairwise_emd,
    similarity_distributions,
    similarity_histograms,
)
from dystress.metrics.structure import (
    aligned_umap_embeddings,
    centroid_distance_agreement,
    knn_label_purity,
    knn_overlap,
    procrustes_align,
    structure_scores,
    trustworthiness,
)

__all__ = [
    "aligned_umap_embeddings",
    "alignment",
    "centroid_distance_agreement",
    "class_centroids",
    "earth_movers_distance",
    "extract_features",
    "inter_class_uniformity",
    "knn_accuracy",
    "knn_class_averaged_accuracy",
    "knn_majority_accuracy",
    "knn_label_purity",
    "knn_overlap",
    "linear_probe",
    "pairwise_emd",
    "procrustes_align",
    "similarity_distributions",
    "similarity_histograms",
    "structure_scores",
    "tolerance",
    "trustworthiness",
    "uniformity",
]
