"""k-nearest-neighbour evaluation on frozen features (cosine similarity, exact, chunked).

- ``knn_accuracy``: the weighted kNN of InstDisc (Wu et al., CVPR 2018), used by SimCLR / solo-learn /
  lightly and by DySTreSS for CIFAR (k = 200, t = 0.1): each of the k nearest bank features votes
  exp(s / t) for its class.
- ``knn_majority_accuracy``: unweighted majority-vote k-NN top-1 (the DySTreSS authors' final
  evaluation, scikit-learn's ``KNeighborsClassifier``; k = 10 and 200 on balanced sets).
- ``knn_class_averaged_accuracy``: plain majority-vote k-NN (k = 1 or 10 in the long-tailed setups of
  Kukleva et al. 2023 and DySTreSS), reported as the mean of the per-class accuracies.

Features are L2-normalised inside (zero rows raise). Memory is O(chunk_size x N_train). To evaluate
one labelled set against itself (leave-one-out), pass it as bank and queries with ``exclude_self=True``;
without it every query finds itself (similarity 1) among its neighbours.
"""

from __future__ import annotations

import torch

from dystress._checks import as_bool, as_int, as_positive
from dystress.metrics._neighbours import cosine_scores, score_chunks
from dystress.metrics._validation import (
    check_class_range,
    check_finite,
    check_train_test,
    normalize_rows,
)

DEFAULT_CHUNK_SIZE = 1024


def _prepare(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    k: int,
    num_classes: int | None,
    chunk_size: int,
    exclude_self: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int, int, int]:
    """Validate everything (scalars first, then structure, then values); return normalised bank and
    queries (common dtype), labels, num_classes, k and chunk_size (as ints)."""
    k = as_int("k", k, 1)
    chunk_size = as_int("chunk_size", chunk_size, 1)
    if num_classes is not None:
        num_classes = as_int("num_classes", num_classes, 1)
    y_train, y_test = check_train_test(train_features, train_labels, test_features, test_labels, finite=False)
    n_train = train_features.shape[0]
    if exclude_self and test_features.shape[0] != n_train:
        raise ValueError(
            f"exclude_self=True needs the queries to be the bank (query i = bank row i), but "
            f"test_features has {test_features.shape[0]} rows and train_features {n_train}"
        )
    if exclude_self and n_train < 2:
        raise ValueError("exclude_self=True needs at least 2 bank rows (a query's neighbours are the others)")
    as_int("k", k, 1, n_train - 1 if exclude_self else n_train)
    check_finite("train_features", train_features)
    check_finite("test_features", test_features)
    num_classes = check_class_range("train_labels/test_labels", y_train, num_classes, y_test)
    bank = normalize_rows("train_features", train_features)
    queries = normalize_rows("test_features", test_features)
    dtype = torch.promote_types(bank.dtype, queries.dtype)
    return bank.to(dtype), queries.to(dtype), y_train, y_test, num_classes, k, chunk_size


def true_class_rank(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Rank [B] of the target class in class scores [B, C]: 0 = predicted.

    Deterministic tie rule: classes with a higher score rank before the target, and so do classes
    with an equal score and a smaller index (the rule of ``argmax``). Top-m correct <=> rank < m.
    """
    target_score = scores.gather(1, target[:, None])
    classes = torch.arange(scores.shape[1], device=scores.device)
    ahead = (scores > target_score) | ((scores == target_score) & (classes[None, :] < target[:, None]))
    return ahead.sum(1)


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 200,
    t: float = 0.1,
    num_classes: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    exclude_self: bool = False,
) -> dict[str, float | int]:
    """Weighted kNN accuracy (InstDisc): top-k cosine neighbours vote exp(s / t) for their class.

    Args:
        train_features: bank features [N_train, D] (float, any device).
        train_labels: bank labels [N_train] in [0, num_classes).
        test_features: query features [N_test, D], same device.
        test_labels: query labels [N_test].
        k: neighbours per query, 1 <= k <= N_train (N_train - 1 with ``exclude_self``).
        t: vote temperature > 0.
        num_classes: defaults to max label + 1 over both label sets.
        chunk_size: queries per chunk (memory chunk_size x N_train).
        exclude_self: leave-one-out evaluation of one labelled set: query i is bank row i and is not
            its own neighbour (needs N_test == N_train; a duplicate row is still a neighbour).
            Passing the same features as bank and queries without it counts each query's
            self-match (similarity 1) among its k neighbours, which inflates the accuracy.

    Returns:
        ``{"top1", "top5", "k", "t", "num_classes", "n_train", "n_test", "exclude_self"}``, accuracies in
        percent;
        ``top5`` only when num_classes >= 5. Vote ties go to the smaller class index. The weights are
        computed as exp((s - s_max) / t) per query, the same ranking as exp(s / t) without overflow.
    """
    t = as_positive("t", t)
    exclude_self = as_bool("exclude_self", exclude_self)
    bank, queries, y_train, y_test, num_classes, k, chunk_size = _prepare(
        train_features, train_labels, test_features, test_labels, k, num_classes, chunk_size, exclude_self
    )
    ranks = []
    scores = cosine_scores(queries, bank)
    for start, stop, sims in score_chunks(scores, queries.shape[0], chunk_size, exclude_self):
        top_sims, top_idx = sims.topk(k, dim=1, largest=True, sorted=True)
        weights = torch.exp((top_sims - top_sims[:, :1]) / t)
        votes = torch.zeros(stop - start, num_classes, dtype=weights.dtype, device=weights.device)
        votes.scatter_add_(1, y_train[top_idx], weights)
        ranks.append(true_class_rank(votes, y_test[start:stop]))
    rank = torch.cat(ranks)
    result: dict[str, float | int] = {"top1": float((rank < 1).double().mean()) * 100.0}
    if num_classes >= 5:
        result["top5"] = float((rank < 5).double().mean()) * 100.0
    result.update(
        k=k,
        t=t,
        num_classes=num_classes,
        n_train=int(bank.shape[0]),
        n_test=int(queries.shape[0]),
        exclude_self=exclude_self,
    )
    return result


def _majority_votes(
    bank: torch.Tensor,
    queries: torch.Tensor,
    y_train: torch.Tensor,
    num_classes: int,
    k: int,
    chunk_size: int,
    exclude_self: bool,
    ties: str,
) -> torch.Tensor:
    """Predicted class [N_test] of a one-vote-per-neighbour k-NN (cosine). ``ties`` between classes
    with the most votes: ``nearest`` (the class of the nearest tied neighbour) or ``smallest_class``
    (the smallest class index, scikit-learn's ``KNeighborsClassifier``)."""
    predictions = []
    rank_bonus = torch.arange(k, 0, -1, device=bank.device)  # k for the nearest neighbour ... 1 for the k-th
    scores = cosine_scores(queries, bank)
    for start, stop, sims in score_chunks(scores, queries.shape[0], chunk_size, exclude_self):
        top_idx = sims.topk(k, dim=1, largest=True, sorted=True).indices
        neighbour_labels = y_train[top_idx]
        counts = torch.zeros(stop - start, num_classes, dtype=torch.long, device=bank.device)
        counts.scatter_add_(1, neighbour_labels, torch.ones_like(neighbour_labels))
        if ties == "smallest_class":
            predictions.append(counts.argmax(1))  # the first of the maxima: the smallest class index
            continue
        nearest = torch.zeros_like(counts).scatter_reduce_(
            1, neighbour_labels, rank_bonus.expand_as(neighbour_labels), reduce="amax"
        )
        # integer score: the count dominates, the nearest member's rank (distinct per class) breaks ties
        predictions.append((counts * (k + 1) + nearest).argmax(1))
    return torch.cat(predictions)


def knn_majority_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 10,
    num_classes: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    exclude_self: bool = False,
) -> dict[str, float | int | bool | str]:
    """Unweighted majority-vote k-NN top-1 accuracy: the protocol of the DySTreSS authors' final
    evaluation script (scikit-learn's ``KNeighborsClassifier(n_neighbors=k)`` on L2-normalised features,
    k = 10 and 200 on balanced sets), where :func:`knn_accuracy` is the exp(s / t)-weighted vote of
    InstDisc used during training by SimCLR-style codebases.

    Each of the k nearest bank features (cosine; for unit vectors the Euclidean order) casts one vote;
    a tie between classes with the most votes goes to the smallest class index, as scikit-learn's
    ``weights="uniform"`` prediction does.

    Args:
        train_features: bank features [N_train, D]; train_labels: their labels [N_train].
        test_features: query features [N_test, D]; test_labels: their labels [N_test].
        k, num_classes, chunk_size, exclude_self: as :func:`knn_accuracy` (which also has ``t``).

    Returns:
        ``{"top1", "k", "num_classes", "n_train", "n_test", "exclude_self", "ties"}``, top1 in percent.
    """
    exclude_self = as_bool("exclude_self", exclude_self)
    bank, queries, y_train, y_test, num_classes, k, chunk_size = _prepare(
        train_features, train_labels, test_features, test_labels, k, num_classes, chunk_size, exclude_self
    )
    predictions = _majority_votes(
        bank, queries, y_train, num_classes, k, chunk_size, exclude_self, "smallest_class"
    )
    return {
        "top1": float((predictions == y_test).double().mean()) * 100.0,
        "k": k,
        "num_classes": num_classes,
        "n_train": int(bank.shape[0]),
        "n_test": int(queries.shape[0]),
        "exclude_self": exclude_self,
        "ties": "smallest class index (scikit-learn)",
    }


def knn_class_averaged_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 1,
    num_classes: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    exclude_self: bool = False,
) -> dict[str, object]:
    """Majority-vote k-NN (cosine), reported as the mean of per-class accuracies (long-tailed setups).

    Each of the k nearest bank features casts one vote. Ties between classes with the same number of
    votes go to the tied class whose nearest member is closest to the query (for k = 1 this is plain
    1-NN); exact ties in similarity keep ``torch.topk``'s order. (The DySTreSS authors' script uses
    scikit-learn's KNeighborsClassifier, which gives a tie to the smallest class index; only some
    10-NN ties can differ, 1-NN never.) Reference: Kukleva et al., "Temperature schedules for
    self-supervised contrastive methods on long-tail data", ICLR 2023.

    Args:
        train_features: bank features [N_train, D] (float, any device).
        train_labels: bank labels [N_train] in [0, num_classes).
        test_features: query features [N_test, D], same device.
        test_labels: query labels [N_test].
        k: neighbours per query, 1 <= k <= N_train (N_train - 1 with ``exclude_self``).
        num_classes: defaults to max label + 1 over both label sets.
        chunk_size: queries per chunk (memory chunk_size x N_train).
        exclude_self: leave-one-out, as in ``knn_accuracy`` (query i is bank row i and not its own
            neighbour; needs N_test == N_train). Without it, the same features as bank and queries
            count each query's self-match.

    Returns:
        ``{"accuracy", "per_class", "k", "num_classes", "n_train", "n_test", "exclude_self"}``:
        ``accuracy`` is the mean, in percent, of the per-class accuracies over the classes present in
        ``test_labels``; ``per_class`` maps each such class to its accuracy in percent.
    """
    exclude_self = as_bool("exclude_self", exclude_self)
    bank, queries, y_train, y_test, num_classes, k, chunk_size = _prepare(
        train_features, train_labels, test_features, test_labels, k, num_classes, chunk_size, exclude_self
    )
    predictions = _majority_votes(bank, queries, y_train, num_classes, k, chunk_size, exclude_self, "nearest")
    correct = (predictions == y_test).long()
    per_class_total = torch.bincount(y_test, minlength=num_classes)
    per_class_correct = torch.bincount(y_test, weights=correct.double(), minlength=num_classes)
    present = per_class_total > 0
    per_class_acc = per_class_correct[present] / per_class_total[present] * 100.0
    classes = present.nonzero().flatten().tolist()
    return {
        "accuracy": float(per_class_acc.mean()),
        "per_class": dict(zip(classes, per_class_acc.tolist(), strict=True)),
        "k": k,
        "num_classes": num_classes,
        "n_train": int(bank.shape[0]),
        "n_test": int(queries.shape[0]),
        "exclude_self": exclude_self,
    }
