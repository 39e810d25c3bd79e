"""The regime tracker: histograms, quantiles and shares of the similarities a loss saw, against brute
force over the same matrices."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dystress.losses import InfoNCELoss, MACLLoss, QueueInfoNCELoss
from dystress.regime import BINS, RegimeTracker, histogram_quantile, raised_threshold, regime_summary
from dystress.temperature import (
    ConstantTemperature,
    CosineTemperature,
    MACLTemperature,
    ShiftedCosineTemperature,
)


def _brute_force(z0: torch.Tensor, z1: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Negatives' and positives' similarities of a SimCLR two-view batch, listed one by one."""
    z = F.normalize(torch.cat([z0, z1]).double(), dim=1)
    n2 = z.shape[0]
    n = n2 // 2
    sim = (z @ z.T).numpy()
    negatives = [sim[i, j] for i in range(n2) for j in range(n2) if j != i and j != (i + n) % n2]
    positives = [sim[i, (i + n) % n2] for i in range(n2)]
    return np.array(negatives), np.array(positives)


@pytest.mark.parametrize("q", [0.0, 0.05, 0.5, 0.95, 0.99, 1.0])
def test_histogram_quantile_within_one_bin_of_numpy(q: float) -> None:
    values = np.random.default_rng(0).normal(0.1, 0.3, 20_000).clip(-0.999, 0.999)
    counts, _ = np.histogram(values, bins=BINS, range=(-1, 1))
    assert abs(histogram_quantile(counts.tolist(), q) - np.quantile(values, q)) <= 2 / BINS


def test_histogram_quantile_of_nothing_is_nan() -> None:
    assert math.isnan(histogram_quantile([0] * BINS, 0.5))


@pytest.mark.parametrize(
    "temperature",
    [CosineTemperature(0.07, 0.2), ShiftedCosineTemperature(0.07, 0.2, -0.4, 0.7), ConstantTemperature(0.1)],
    ids=repr,
)
def test_tracker_counts_every_negative_and_positive_of_two_steps(temperature) -> None:
    torch.manual_seed(0)
    loss = InfoNCELoss(temperature)
    tracker = RegimeTracker(temperature, "cpu")
    negatives, positives = [], []
    for _ in range(2):
        # correlated views: positives near 1, negatives spread over both signs
        base = torch.randn(24, 8)
        z0, z1 = base + 0.3 * torch.randn(24, 8), base + 0.3 * torch.randn(24, 8)
        with tracker.observing():
            loss(z0, z1)
        neg, pos = _brute_force(z0, z1)
        negatives.append(neg)
        positives.append(pos)
    neg, pos = np.concatenate(negatives), np.concatenate(positives)
    summary = tracker.summary()
    want_neg, _ = np.histogram(neg, bins=BINS, range=(-1, 1))
    want_pos, _ = np.histogram(pos, bins=BINS, range=(-1, 1))
    assert sum(summary["neg_sim_hist"]) == len(neg) == 2 * 48 * 46
    # bins agree except for values within float32 rounding of an edge
    assert np.abs(np.array(summary["neg_sim_hist"]) - want_neg).sum() <= 4
    assert np.abs(np.array(summary["pos_sim_hist"]) - want_pos).sum() <= 2
    assert summary["neg_close_share"] == pytest.approx((neg >= 0.5).mean(), abs=2 / len(neg))
    assert summary["neg_sim_q50"] == pytest.approx(np.quantile(neg, 0.5), abs=2 / BINS)
    assert summary["pos_sim_q05"] == pytest.approx(np.quantile(pos, 0.05), abs=2 / BINS)
    threshold = raised_threshold(temperature)
    if threshold is None:
        assert summary["neg_tau_raised_share"] is None
    else:
        tau = temperature(torch.from_numpy(neg).float()).numpy()
        assert summary["neg_tau_raised_share"] == pytest.approx((tau > threshold).mean(), abs=3 / len(neg))
        assert 0 < summary["neg_tau_raised_share"] < 1


def test_raised_threshold_is_ten_percent_of_the_range() -> None:
    assert raised_threshold(CosineTemperature(0.07, 0.2)) == pytest.approx(0.083)
    assert raised_threshold(ConstantTemperature(0.2)) is None
    assert raised_threshold(MACLTemperature()) is None


def test_queue_negatives_are_the_whole_queue() -> None:
    torch.manual_seed(1)
    loss = QueueInfoNCELoss(CosineTemperature(0.07, 0.2), queue_size=32, dim=8)
    q, k = torch.randn(6, 8), torch.randn(6, 8)
    queue = F.normalize(loss.queue.clone().double(), dim=1)
    tracker = RegimeTracker(loss.temperature, "cpu")
    with tracker.observing():
        loss(q, k)
    summary = tracker.summary()
    sims = (F.normalize(q.double(), dim=1) @ queue.T).numpy().ravel()
    assert sum(summary["neg_sim_hist"]) == 6 * 32
    want, _ = np.histogram(sims, bins=BINS, range=(-1, 1))
    assert np.abs(np.array(summary["neg_sim_hist"]) - want).sum() <= 2


def test_macl_gives_histograms_without_a_raised_share() -> None:
    loss = MACLLoss(tau_0=0.1, alpha=0.5, a_0=0.0)
    tracker = RegimeTracker(MACLTemperature(), "cpu")
    with tracker.observing():
        loss(torch.randn(8, 4), torch.randn(8, 4))
    summary = tracker.summary()
    assert sum(summary["neg_sim_hist"]) == 16 * 14 and summary["neg_tau_raised_share"] is None


def test_summary_of_an_empty_state() -> None:
    summary = regime_summary([0.0] * (2 * BINS + 2), pairwise=True)
    assert math.isnan(summary["neg_sim_q50"]) and math.isnan(summary["neg_close_share"])
    assert summary["neg_tau_raised_share"] is None


def test_nothing_is_tracked_outside_observing() -> None:
    tracker = RegimeTracker(CosineTemperature(0.07, 0.2), "cpu")
    loss = InfoNCELoss(CosineTemperature(0.07, 0.2))
    loss(torch.randn(8, 4), torch.randn(8, 4))
    with tracker.observing():
        loss(torch.randn(8, 4), torch.randn(8, 4))
    loss(torch.randn(8, 4), torch.randn(8, 4))
    assert sum(tracker.summary()["neg_sim_hist"]) == 16 * 14
