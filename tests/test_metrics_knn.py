"""kNN metrics against brute-force float64 loop references."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from dystress.metrics import knn_accuracy, knn_class_averaged_accuracy


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt((x * x).sum(1, keepdims=True))


def _sorted_neighbours(bank: np.ndarray, q: np.ndarray, k: int, skip: int = -1) -> list[tuple[float, int]]:
    """The k most similar bank rows (similarity, index) to q, leaving out row ``skip``."""
    sims = [(float(np.dot(q, bank[b])), b) for b in range(bank.shape[0]) if b != skip]
    return sorted(sims, key=lambda sb: -sb[0])[:k]


def _ref_weighted(bank, ybank, queries, yq, k, t, num_classes, leave_one_out=False):
    bank, queries = _unit(bank), _unit(queries)
    top1 = top5 = 0
    for q in range(queries.shape[0]):
        votes = [0.0] * num_classes
        for s, b in _sorted_neighbours(bank, queries[q], k, skip=q if leave_one_out else -1):
            votes[ybank[b]] += math.exp(s / t)
        target = yq[q]
        rank = sum(
            1
            for c in range(num_classes)
            if votes[c] > votes[target] or (votes[c] == votes[target] and c < target)
        )
        top1 += rank < 1
        top5 += rank < 5
    n = queries.shape[0]
    return 100.0 * top1 / n, 100.0 * top5 / n


def _ref_class_averaged(bank, ybank, queries, yq, k, num_classes, leave_one_out=False):
    bank, queries = _unit(bank), _unit(queries)
    correct = [0] * num_classes
    total = [0] * num_classes
    for q in range(queries.shape[0]):
        neighbours = _sorted_neighbours(bank, queries[q], k, skip=q if leave_one_out else -1)
        counts: dict[int, int] = {}
        first: dict[int, int] = {}
        for position, (_, b) in enumerate(neighbours):
            c = int(ybank[b])
            counts[c] = counts.get(c, 0) + 1
            first.setdefault(c, position)
        best = max(counts.values())
        prediction = min((c for c in counts if counts[c] == best), key=lambda c: first[c])
        total[yq[q]] += 1
        correct[yq[q]] += prediction == yq[q]
    accs = [100.0 * correct[c] / total[c] for c in range(num_classes) if total[c] > 0]
    return sum(accs) / len(accs)


@pytest.mark.parametrize("k", [1, 4, 17, 40])
@pytest.mark.parametrize("t", [0.07, 0.5])
@pytest.mark.parametrize("chunk_size", [1, 3, 1000])
@pytest.mark.parametrize("num_classes", [3, 7])
def test_weighted_knn_matches_loop_reference(k, t, chunk_size, num_classes):
    rng = np.random.default_rng(k * 100 + num_classes)
    bank, queries = rng.normal(size=(40, 6)), rng.normal(size=(13, 6))
    ybank, yq = rng.integers(0, num_classes, 40), rng.integers(0, num_classes, 13)
    res = knn_accuracy(
        torch.tensor(bank, dtype=torch.float32),
        torch.tensor(ybank),
        torch.tensor(queries, dtype=torch.float32),
        torch.tensor(yq),
        k=k,
        t=t,
        num_classes=num_classes,
        chunk_size=chunk_size,
    )
    top1, top5 = _ref_weighted(bank, ybank, queries, yq, k, t, num_classes)
    assert res["top1"] == pytest.approx(top1)
    if num_classes >= 5:
        assert res["top5"] == pytest.approx(top5)
    else:
        assert "top5" not in res
    assert (res["k"], res["t"], res["num_classes"], res["n_train"], res["n_test"], res["exclude_self"]) == (
        k,
        t,
        num_classes,
        40,
        13,
        False,
    )


def test_weighted_knn_small_temperature_does_not_overflow():
    rng = np.random.default_rng(0)
    bank, queries = rng.normal(size=(30, 5)), rng.normal(size=(9, 5))
    ybank, yq = rng.integers(0, 6, 30), rng.integers(0, 6, 9)
    res = knn_accuracy(
        torch.tensor(bank, dtype=torch.float32),
        torch.tensor(ybank),
        torch.tensor(queries),
        torch.tensor(yq),
        k=10,
        t=0.005,
    )
    # with t -> 0 the nearest neighbour dominates: the reference is 1-NN
    nn1 = [int(ybank[_sorted_neighbours(_unit(bank), q, 1)[0][1]]) for q in _unit(queries)]
    assert res["top1"] == pytest.approx(100.0 * np.mean(np.array(nn1) == yq))


def _clusters(n_per_class: int, num_classes: int, dim: int, seed: int, noise: float = 0.05):
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(dim)[:num_classes] * 3
    y = torch.arange(num_classes).repeat_interleave(n_per_class)
    return centres[y] + noise * torch.randn(len(y), dim, generator=g), y


@pytest.mark.parametrize("num_classes", [2, 5, 10])
def test_separated_clusters_give_100_percent(num_classes):
    xtr, ytr = _clusters(30, num_classes, 16, 0)
    xte, yte = _clusters(10, num_classes, 16, 1)
    res = knn_accuracy(xtr, ytr, xte, yte, k=20, chunk_size=7)
    assert res["top1"] == 100.0
    assert res.get("top5", 100.0) == 100.0
    avg = knn_class_averaged_accuracy(xtr, ytr, xte, yte, k=10, chunk_size=7)
    assert avg["accuracy"] == 100.0
    assert avg["per_class"] == {c: 100.0 for c in range(num_classes)}


def test_vote_tie_goes_to_smaller_class_index():
    # query at angle 0, two bank points at +-45 degrees with classes 1 and 0: equal weights
    bank = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    query = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    res = knn_accuracy(bank, torch.tensor([1, 0]), query, torch.tensor([0]), k=2)
    assert res["top1"] == 100.0
    res = knn_accuracy(bank, torch.tensor([1, 0]), query, torch.tensor([1]), k=2)
    assert res["top1"] == 0.0


@pytest.mark.parametrize("k", [1, 2, 5, 10])
@pytest.mark.parametrize("chunk_size", [1, 4, 500])
def test_class_averaged_matches_loop_reference(k, chunk_size):
    rng = np.random.default_rng(k + 7 * chunk_size)
    # long-tailed bank: class c has 24 / 2^c samples, balanced queries
    ybank = np.concatenate([np.full(max(1, 24 >> c), c) for c in range(4)])
    bank = rng.normal(size=(len(ybank), 5)) + np.eye(5)[ybank] * 0.8
    yq = np.repeat(np.arange(4), 6)
    queries = rng.normal(size=(len(yq), 5)) + np.eye(5)[yq] * 0.8
    res = knn_class_averaged_accuracy(
        torch.tensor(bank),
        torch.tensor(ybank),
        torch.tensor(queries),
        torch.tensor(yq),
        k=k,
        chunk_size=chunk_size,
    )
    assert res["accuracy"] == pytest.approx(_ref_class_averaged(bank, ybank, queries, yq, k, 4))
    assert (res["k"], res["n_train"], res["n_test"], res["exclude_self"]) == (k, len(ybank), 24, False)


def test_class_averaged_tie_goes_to_nearest_member_and_skips_absent_classes():
    bank = torch.tensor([[1.0, 0.2], [1.0, -0.5], [0.0, 1.0], [-1.0, 0.0]])
    ybank = torch.tensor([2, 0, 0, 2])
    query = torch.tensor([[1.0, 0.0], [1.0, -0.3]])
    # query 0: neighbours bank0 (class 2), bank1 (class 0): 1-1 tie, nearest is class 2
    # query 1: nearest is bank1 (class 0), then bank0 (class 2)
    res = knn_class_averaged_accuracy(bank, ybank, query, torch.tensor([2, 2]), k=2, num_classes=3)
    assert res["per_class"] == {2: 50.0}
    assert res["accuracy"] == 50.0


def test_class_averaged_differs_from_overall_accuracy():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    ybank = torch.tensor([0, 1])
    queries = torch.tensor([[1.0, 0.1], [1.0, 0.2], [1.0, 0.3], [0.1, 1.0], [1.0, 0.05]])
    yq = torch.tensor([0, 0, 0, 1, 1])  # class 0: 3/3, class 1: 1/2
    res = knn_class_averaged_accuracy(bank, ybank, queries, yq, k=1)
    assert res["accuracy"] == pytest.approx(75.0)


def test_duplicate_points_and_float64():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1])
    res = knn_accuracy(x, y, x, y, k=1)
    assert res["top1"] == 100.0


# --- leave-one-out (exclude_self) -------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 4, 17, 39])
@pytest.mark.parametrize("t", [0.07, 0.5])
@pytest.mark.parametrize("chunk_size", [1, 3, 1000])
def test_weighted_knn_exclude_self_matches_leave_one_out_reference(k, t, chunk_size):
    rng = np.random.default_rng(k * 10 + chunk_size)
    x, y = rng.normal(size=(40, 6)), rng.integers(0, 7, 40)
    xt = torch.tensor(x, dtype=torch.float32)
    res = knn_accuracy(
        xt, torch.tensor(y), xt, torch.tensor(y), k=k, t=t, chunk_size=chunk_size, exclude_self=True
    )
    top1, top5 = _ref_weighted(x, y, x, y, k, t, 7, leave_one_out=True)
    assert res["top1"] == pytest.approx(top1)
    assert res["top5"] == pytest.approx(top5)
    assert (res["n_train"], res["n_test"], res["k"], res["exclude_self"]) == (40, 40, k, True)


@pytest.mark.parametrize("k", [1, 2, 5, 10])
@pytest.mark.parametrize("chunk_size", [1, 4, 500])
def test_class_averaged_exclude_self_matches_leave_one_out_reference(k, chunk_size):
    rng = np.random.default_rng(k + 7 * chunk_size)
    y = np.concatenate([np.full(max(2, 24 >> c), c) for c in range(4)])
    x = rng.normal(size=(len(y), 5)) + np.eye(5)[y] * 0.8
    xt = torch.tensor(x)
    res = knn_class_averaged_accuracy(
        xt, torch.tensor(y), xt, torch.tensor(y), k=k, chunk_size=chunk_size, exclude_self=True
    )
    assert res["accuracy"] == pytest.approx(_ref_class_averaged(x, y, x, y, k, 4, leave_one_out=True))


def test_exclude_self_on_random_labels_is_chance_not_100():
    # the review's case: the bank as its own queries, random labels
    g = torch.Generator().manual_seed(0)
    f, y = torch.randn(2000, 16, generator=g), torch.randint(0, 10, (2000,), generator=g)
    assert knn_accuracy(f, y, f, y, k=20)["top1"] == 100.0  # self-matches dominate the vote
    assert knn_class_averaged_accuracy(f, y, f, y, k=1)["accuracy"] == 100.0
    # chance is 10 % (standard error 0.67 points on 2000 queries)
    assert abs(knn_accuracy(f, y, f, y, k=20, exclude_self=True)["top1"] - 10.0) < 3.5
    assert abs(knn_class_averaged_accuracy(f, y, f, y, k=1, exclude_self=True)["accuracy"] - 10.0) < 3.5


def test_exclude_self_keeps_duplicate_rows_as_neighbours():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1])
    # rows 0 and 1 find each other (class 0, right); row 2's only neighbours are class 0 (wrong)
    assert knn_accuracy(x, y, x, y, k=1, exclude_self=True)["top1"] == pytest.approx(200.0 / 3.0)
    assert knn_class_averaged_accuracy(x, y, x, y, k=2, exclude_self=True)["per_class"] == {0: 100.0, 1: 0.0}


def test_exclude_self_false_is_the_default_and_unchanged():
    rng = np.random.default_rng(3)
    bank, q = torch.tensor(rng.normal(size=(30, 4))), torch.tensor(rng.normal(size=(11, 4)))
    yb, yq = torch.tensor(rng.integers(0, 5, 30)), torch.tensor(rng.integers(0, 5, 11))
    assert knn_accuracy(bank, yb, q, yq, k=7) == knn_accuracy(bank, yb, q, yq, k=7, exclude_self=False)
    avg = knn_class_averaged_accuracy(bank, yb, q, yq, k=3)
    assert avg == knn_class_averaged_accuracy(bank, yb, q, yq, k=3, exclude_self=False)


X12 = torch.randn(12, 4, generator=torch.Generator().manual_seed(0))
Y12 = torch.arange(12) % 3


@pytest.mark.parametrize("fn", [knn_accuracy, knn_class_averaged_accuracy])
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"test_features": X12[:5], "test_labels": Y12[:5], "k": 3, "exclude_self": True},
            "exclude_self=True needs the queries to be the bank (query i = bank row i), "
            "but test_features has 5 rows and train_features 12",
        ),
        ({"k": 12, "exclude_self": True}, "k must be >= 1 and <= 11, got 12"),
        ({"k": 3, "exclude_self": 1}, "exclude_self must be True or False, got 1"),
        ({"k": 3, "exclude_self": "yes"}, "exclude_self must be True or False, got 'yes'"),
    ],
)
def test_exclude_self_invalid_settings_raise(fn, kwargs, match):
    args = {"train_features": X12, "train_labels": Y12, "test_features": X12, "test_labels": Y12, **kwargs}
    with pytest.raises(ValueError, match=f"^{re.escape(match)}$"):
        fn(**args)


def test_numpy_scalars_are_accepted_and_give_the_same_result():
    rng = np.random.default_rng(5)
    bank, q = torch.tensor(rng.normal(size=(30, 4))), torch.tensor(rng.normal(size=(11, 4)))
    yb, yq = torch.tensor(rng.integers(0, 5, 30)), torch.tensor(rng.integers(0, 5, 11))
    ref = knn_accuracy(bank, yb, q, yq, k=7, t=0.25, num_classes=6, chunk_size=4, exclude_self=False)
    got = knn_accuracy(
        bank, yb, q, yq, k=np.int64(7), t=np.float64(0.25), num_classes=np.int32(6), chunk_size=np.uint8(4),
        exclude_self=np.bool_(False),
    )  # fmt: skip
    assert got == ref
    assert type(got["k"]) is int and type(got["t"]) is float and type(got["num_classes"]) is int
    avg = knn_class_averaged_accuracy(bank, yb, q, yq, k=np.int16(3), num_classes=np.int64(6))
    assert avg == knn_class_averaged_accuracy(bank, yb, q, yq, k=3, num_classes=6)
    assert type(avg["k"]) is int and type(avg["num_classes"]) is int


def test_exclude_self_needs_two_rows():
    x, y = torch.ones(1, 3), torch.zeros(1, dtype=torch.long)
    message = "exclude_self=True needs at least 2 bank rows (a query's neighbours are the others)"
    for fn in (knn_accuracy, knn_class_averaged_accuracy):
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            fn(x, y, x, y, k=1, exclude_self=True)
        assert fn(x, y, x, y, k=1, exclude_self=False)["n_test"] == 1


# ------------------------------------------------------------------- majority vote (the authors' protocol)
@pytest.mark.parametrize(
    ("k", "num_classes", "n_train"), [(1, 10, 300), (10, 10, 300), (4, 2, 200), (200, 10, 400)]
)
def test_majority_vote_equals_scikit_learns_kneighborsclassifier(k, num_classes, n_train):
    """The authors' script: KNeighborsClassifier(n_neighbors=k) on L2-normalised features. Even k with
    few classes makes vote ties common; both give them to the smallest class index."""
    from sklearn.neighbors import KNeighborsClassifier

    from dystress.metrics import knn_majority_accuracy

    g = torch.Generator().manual_seed(k + num_classes)
    bank = torch.randn(n_train, 16, generator=g, dtype=torch.float64)
    queries = torch.randn(150, 16, generator=g, dtype=torch.float64)
    y_bank = torch.randint(0, num_classes, (n_train,), generator=g)
    y_query = torch.randint(0, num_classes, (150,), generator=g)
    normalise = lambda x: (x / x.norm(dim=1, keepdim=True)).numpy()  # noqa: E731
    clf = KNeighborsClassifier(n_neighbors=k, algorithm="brute").fit(normalise(bank), y_bank.numpy())
    expected = float((clf.predict(normalise(queries)) == y_query.numpy()).mean()) * 100.0
    got = knn_majority_accuracy(bank, y_bank, queries, y_query, k=k, num_classes=num_classes, chunk_size=64)
    assert got["top1"] == pytest.approx(expected, abs=1e-9)
    assert got["k"] == k and got["n_test"] == 150


def test_majority_vote_tie_goes_to_the_smaller_class_index():
    from dystress.metrics import knn_majority_accuracy

    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    labels = torch.tensor([3, 3, 1, 1])  # the query's two nearest are class 3, the other two class 1
    query = torch.tensor([[1.0, 0.05]])
    assert knn_majority_accuracy(bank, labels, query, torch.tensor([1]), k=4)["top1"] == 100.0
    assert knn_majority_accuracy(bank, labels, query, torch.tensor([3]), k=2)["top1"] == 100.0
