"""TP / TN / FN similarity distributions, histograms and EMD against loop references and scipy."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance

from dystress.metrics import (
    earth_movers_distance,
    pairwise_emd,
    similarity_distributions,
    similarity_histograms,
)
from dystress.metrics.similarity import _pair_indices


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt((x * x).sum(1, keepdims=True))


def _ref_distributions(z0: np.ndarray, z1: np.ndarray, y: np.ndarray) -> dict[str, list[float]]:
    a, b = _unit(z0), _unit(z1)
    out: dict[str, list[float]] = {"tp": [], "tn": [], "fn": []}
    for i in range(len(y)):
        for j in range(len(y)):
            kind = "tp" if i == j else ("fn" if y[i] == y[j] else "tn")
            out[kind].append(float(a[i] @ b[j]))
    return out


@pytest.mark.parametrize(
    "labels",
    [
        [0, 1, 1, 2, 2, 2, 3, 3, 3],  # a singleton class
        [0] * 6,  # one class: no TN
        [0, 1, 2, 3, 4],  # all singletons: no FN
        [7, 3, 7, 3, 7, 3, 9],  # unsorted, non-contiguous labels
    ],
)
@pytest.mark.parametrize("chunk_size", [1, 4, 8192])
def test_all_pairs_match_loop_reference(labels, chunk_size):
    y = np.array(labels)
    rng = np.random.default_rng(len(labels))
    z0, z1 = rng.normal(size=(len(y), 6)), rng.normal(size=(len(y), 6))
    got = similarity_distributions(torch.tensor(z0), torch.tensor(z1), torch.tensor(y), chunk_size=chunk_size)
    ref = _ref_distributions(z0, z1, y)
    for kind in ("tp", "tn", "fn"):
        assert got[kind].shape == (len(ref[kind]),)
        np.testing.assert_allclose(np.sort(got[kind].numpy()), np.sort(ref[kind]), rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["tp", "tn", "fn"])
def test_subsampled_pairs_are_valid_uniform_and_deterministic(kind):
    y = torch.tensor([2] * 3 + [0] * 5 + [1] * 2 + [3])
    n = len(y)
    valid = [
        (a, b)
        for a in range(n)
        for b in range(n)
        if (a == b if kind == "tp" else a != b and (y[a] == y[b]) == (kind == "fn"))
    ]
    everything = _pair_indices(kind, y, len(valid), torch.Generator())
    assert sorted(zip(*(t.tolist() for t in everything), strict=True)) == valid  # all pairs, once each
    counts: Counter = Counter()
    for seed in range(300):  # max_pairs one below the total forces subsampling
        i, j = _pair_indices(kind, y, len(valid) - 1, torch.Generator().manual_seed(seed))
        assert i.shape == (len(valid) - 1,)
        counts.update(zip(i.tolist(), j.tolist(), strict=True))
    assert set(counts) == set(valid)
    expected = 300 * (len(valid) - 1) / len(valid)
    assert max(abs(c - expected) for c in counts.values()) < 5 * expected**0.5
    a = _pair_indices(kind, y, 5, torch.Generator().manual_seed(3))
    b = _pair_indices(kind, y, 5, torch.Generator().manual_seed(3))
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))


def test_subsampling_is_seeded():
    rng = np.random.default_rng(0)
    z0, z1 = torch.tensor(rng.normal(size=(50, 4))), torch.tensor(rng.normal(size=(50, 4)))
    y = torch.arange(50) % 5
    a = similarity_distributions(z0, z1, y, max_pairs=100, seed=1)
    b = similarity_distributions(z0, z1, y, max_pairs=100, seed=1)
    c = similarity_distributions(z0, z1, y, max_pairs=100, seed=2)
    for kind in ("tn", "fn"):
        assert a[kind].shape == (100,)
        assert torch.equal(a[kind], b[kind])
        assert not torch.equal(a[kind], c[kind])
    assert a["tp"].shape == (50,)  # 50 pairs <= max_pairs: all of them


@pytest.mark.parametrize("bins", [1, 4, 10, 100])
def test_histograms_match_numpy(bins):
    rng = np.random.default_rng(bins)
    values = np.concatenate([rng.uniform(-1, 1, 500), [-1.0, 1.0, 0.0, 1.0 + 1e-7]])
    edges, hists = similarity_histograms({"x": torch.tensor(values), "empty": torch.empty(0)}, bins=bins)
    ref, ref_edges = np.histogram(np.clip(values, -1, 1), bins=bins, range=(-1, 1))
    np.testing.assert_allclose(edges.numpy(), ref_edges, atol=1e-15)
    np.testing.assert_allclose(hists["x"].numpy(), ref / len(values))
    assert hists["x"].sum().item() == pytest.approx(1.0)
    assert torch.equal(hists["empty"], torch.zeros(bins, dtype=torch.float64))


def test_histograms_reject_values_outside_cosine_range():
    with pytest.raises(ValueError, match="distributions"):
        similarity_histograms({"x": torch.tensor([0.0, 1.5])})
    with pytest.raises(ValueError, match="bins"):
        similarity_histograms({"x": torch.tensor([0.0])}, bins=0)


@pytest.mark.parametrize(("na", "nb"), [(1, 1), (1, 7), (10, 10), (37, 101), (500, 300)])
@pytest.mark.parametrize("seed", [0, 1])
def test_emd_matches_scipy(na, nb, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=na)
    b = np.round(rng.normal(0.5, 2.0, size=nb), 1)  # ties inside b and possibly across a, b
    assert earth_movers_distance(torch.tensor(a), b) == pytest.approx(
        wasserstein_distance(a, b), rel=1e-12, abs=1e-15
    )


def test_emd_identities():
    a = torch.randn(200, generator=torch.Generator().manual_seed(0))
    assert earth_movers_distance(a, a) == 0.0
    assert earth_movers_distance(a, a + 0.3) == pytest.approx(0.3)
    assert earth_movers_distance(a, a.flip(0)) == 0.0  # order of a sample does not matter
    assert earth_movers_distance(a, torch.cat([a, a])) == pytest.approx(0.0, abs=1e-15)


def test_emd_rejects_bad_samples():
    with pytest.raises(ValueError, match="a"):
        earth_movers_distance(torch.empty(0), torch.ones(3))
    with pytest.raises(ValueError, match="b"):
        earth_movers_distance(torch.ones(3), torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="b"):
        earth_movers_distance(torch.ones(3), torch.ones(3, 1))


def test_pairwise_emd_on_separated_distributions():
    dists = {"tp": torch.tensor([0.9, 0.8]), "tn": torch.tensor([0.0, 0.1]), "fn": torch.empty(0)}
    assert pairwise_emd(dists) == {"tp-tn": pytest.approx(0.8)}


def test_clustered_features_separate_tp_fn_from_tn():
    # two tight classes at +-e1 in both views: TP and FN near 1, TN near -1
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    base = torch.tensor([[1.0, 0.0]] * 3 + [[-1.0, 0.0]] * 3)
    noise = 0.01 * torch.randn(6, 2, generator=torch.Generator().manual_seed(0))
    d = similarity_distributions(base + noise, base - noise, y)
    assert float(d["tp"].min()) > 0.99 and float(d["fn"].min()) > 0.99 and float(d["tn"].max()) < -0.99
    assert (d["tp"].numel(), d["fn"].numel(), d["tn"].numel()) == (6, 12, 18)


def test_histograms_and_pairwise_emd_need_a_mapping():
    message = r"^distributions must be a mapping of names to 1-D samples, got list$"
    with pytest.raises(ValueError, match=message):
        similarity_histograms([torch.tensor([0.0])])
    with pytest.raises(ValueError, match=message):
        pairwise_emd([torch.tensor([0.0]), torch.tensor([1.0])])


def test_similarity_distributions_checks_labels_before_the_features_values():
    z = torch.full((4, 3), float("nan"))
    with pytest.raises(ValueError, match=r"^labels has 3 entries but z0 has 4 rows$"):
        similarity_distributions(z, z, torch.arange(3))
