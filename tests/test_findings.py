"""The book's comparison rule and generated sentences, against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from dystress.study import findings
from dystress.study.findings import (
    Estimate,
    against_best_fixed,
    best_fixed,
    compare,
    estimate,
    mean_ci95,
    outcome,
    ranking,
    trade_off_position,
    verdict,
)

DYS = Estimate(45.48, 0.70, 3)
FIXED_01 = Estimate(47.54, 1.30, 3)
SIMCLR = Estimate(45.28, 0.64, 3)


def test_outcome_uses_the_root_sum_of_squares_of_the_half_widths() -> None:
    assert math.hypot(0.70, 1.30) == pytest.approx(1.4765, abs=1e-4)
    assert outcome(FIXED_01, DYS) == 1  # 2.06 > 1.48
    assert outcome(DYS, FIXED_01) == -1
    assert outcome(DYS, SIMCLR) == 0  # 0.20 < hypot(0.70, 0.64) = 0.95
    assert outcome(Estimate(1.0, 3.0, 3), Estimate(0.0, 4.0, 3)) == 0  # difference 1 < 5


def test_outcome_is_strict_at_the_margin_and_unresolved_without_an_interval() -> None:
    assert outcome(Estimate(5.0, 3.0, 3), Estimate(0.0, 4.0, 3)) == 0  # difference == margin == 5
    assert outcome(Estimate(5.000001, 3.0, 3), Estimate(0.0, 4.0, 3)) == 1
    assert outcome(Estimate(90.0, math.nan, 1), Estimate(10.0, 0.1, 3)) == 0


@pytest.mark.parametrize("seed", range(60))
def test_a_resolved_difference_is_significant_by_welch(seed: int) -> None:
    """With Student-t intervals (2 to 5 seeds a side) the rule is at least as strict as Welch's
    two-sided t-test at 5%: whatever it resolves, Welch rejects."""
    rng = np.random.default_rng(seed)
    na, nb = rng.integers(2, 6, size=2)
    a = rng.normal(rng.uniform(-2, 2), rng.uniform(0.2, 2), size=na)
    b = rng.normal(0.0, rng.uniform(0.2, 2), size=nb)
    ea, eb = (Estimate(*mean_ci95(list(x)), len(x)) for x in (a, b))
    if outcome(ea, eb) != 0:
        assert stats.ttest_ind(a, b, equal_var=False).pvalue < 0.05


def test_the_welch_property_is_exercised() -> None:
    """The seeds above include resolved differences (else the property test would check nothing)."""
    resolved = 0
    for seed in range(60):
        rng = np.random.default_rng(seed)
        na, nb = rng.integers(2, 6, size=2)
        a = rng.normal(rng.uniform(-2, 2), rng.uniform(0.2, 2), size=na)
        b = rng.normal(0.0, rng.uniform(0.2, 2), size=nb)
        resolved += outcome(Estimate(*mean_ci95(list(a)), na), Estimate(*mean_ci95(list(b)), nb)) != 0
    assert resolved >= 5


def test_verdict_heads_and_differences() -> None:
    assert verdict(Estimate(50.0, 0.5, 3), {"A": Estimate(45.0, 0.5, 3), "B": Estimate(40.0, 1.0, 3)}) == (
        "reproduced (ordering): +5.00 vs A, +10.00 vs B"
    )
    assert (
        verdict(DYS, {"SimCLR": SIMCLR, "best": FIXED_01}) == "not reproduced: +0.20 vs SimCLR, -2.06 vs best"
    )
    assert verdict(DYS, {"SimCLR": SIMCLR}) == "inconclusive (within the intervals): +0.20 vs SimCLR"
    assert verdict(None, {"SimCLR": SIMCLR}) == "not run in this profile"
    assert verdict(DYS, {"SimCLR": None}) == "not run in this profile"


def test_compare_states_the_difference_and_the_margin() -> None:
    text = compare("DySTreSS", DYS, "fixed tau 0.1", FIXED_01)
    assert text == (
        "DySTreSS (45.48 ± 0.70 (n = 3)) is 2.06 points below fixed tau 0.1 (47.54 ± 1.30 (n = 3)), "
        "more than the margin of ±1.48"
    )
    assert "within the margin of ±0.95" in compare("DySTreSS", DYS, "SimCLR", SIMCLR)
    assert "0.20 points above" in compare("DySTreSS", DYS, "SimCLR", SIMCLR)
    assert "single run" in compare("a", Estimate(44.0, math.nan, 1), "b", DYS)
    assert compare("a", None, "b", DYS).startswith("a has no result in this build")


def test_ranking_orders_decreasing_and_drops_nan() -> None:
    values = {"tau 0.5": 0.268, "tau 0.1": 0.2971, "DySTreSS": 0.293, "missing": math.nan}
    assert ranking(values) == "tau 0.1 0.297 > DySTreSS 0.293 > tau 0.5 0.268"
    assert ranking({"x": math.nan}) == "no result"
    uniformity = {"tau 0.1": -0.886, "tau 0.5": -1.107, "DySTreSS": -1.09}
    assert ranking(uniformity, ascending=True) == "tau 0.5 -1.107 < DySTreSS -1.090 < tau 0.1 -0.886"


def test_trade_off_position_matches_linear_interpolation_and_its_noise() -> None:
    rng = np.random.default_rng(0)
    xs = np.sort(rng.uniform(-1.2, -0.8, size=5))[::-1]  # uniformity falls as tau rises: monotone
    ys = rng.uniform(0.7, 0.8, size=5)
    curve = [(float(x), float(y)) for x, y in zip(xs, ys, strict=True)]  # in tau order
    for x in np.linspace(xs[-1], xs[0], 17):
        result = trade_off_position(curve, (float(x), 0.75), sd=0.01)
        assert result.offset == pytest.approx(0.75 - np.interp(x, xs[::-1], ys[::-1]), abs=1e-12)
        i = np.searchsorted(xs[::-1], x, side="right") - 1  # the segment [x_left, x_right] holding x
        i = min(i, 3)
        left, right = xs[::-1][i], xs[::-1][i + 1]
        w = (right - x) / (right - left)
        assert result.margin == pytest.approx(1.96 * 0.01 * math.sqrt(1 + w**2 + (1 - w) ** 2), rel=1e-9)
        assert 1.96 * 0.01 * math.sqrt(1.5) - 1e-12 <= result.margin <= 1.96 * 0.01 * math.sqrt(2) + 1e-12
    assert trade_off_position(curve, (float(xs[-1]) - 0.01, 0.75)) is None  # outside the curve
    assert trade_off_position(curve[:1], (float(xs[0]), 0.75)) is None


def test_trade_off_resolution_and_a_curve_that_folds_back() -> None:
    curve = [(-1.0, 0.70), (-0.9, 0.75), (-0.8, 0.80)]
    on = trade_off_position(curve, (-0.9, 0.76), sd=0.01)
    assert on.offset == pytest.approx(0.01) and not on.resolved  # 0.01 < 1.96 * 0.01 * sqrt(1)
    off = trade_off_position(curve, (-0.9, 0.80), sd=0.01)
    assert off.offset == pytest.approx(0.05) and off.resolved
    assert not trade_off_position(curve, (-0.9, 0.80)).resolved  # no seed spread: never resolved
    folded = [(-1.0, 0.70), (-0.8, 0.80), (-0.9, 0.75)]  # uniformity not monotone in tau
    assert trade_off_position(folded, (-0.95, 0.72), sd=0.01) is None


def _agg(rows: list[tuple[str, float, float, float, int]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"ablation": "fixed_tau", "label": lab, "tau": tau, "mean": m, "ci": c, "n": n}
            for lab, tau, m, c, n in rows
        ]
    )


def test_best_fixed_names_an_edge_pick_and_a_single_seed_pick() -> None:
    inner = best_fixed(
        _agg([("0.05", 0.05, 46.0, math.nan, 1), ("0.1", 0.1, 47.5, 1.3, 3), ("0.2", 0.2, 45.3, 0.6, 3)])
    )
    assert (inner.label, inner.tau, inner.estimate, inner.caveats) == ("0.1", 0.1, Estimate(47.5, 1.3, 3), "")
    edge = best_fixed(_agg([("0.1", 0.1, 47.5, 1.3, 3), ("0.2", 0.2, 45.3, 0.6, 3)]))
    assert (
        edge.caveats == "It is the smallest temperature run here, so the best fixed value may lie beyond it."
    )
    single = best_fixed(
        _agg([("0.1", 0.1, 47.5, 1.3, 3), ("0.15", 0.15, 48.0, math.nan, 1), ("0.2", 0.2, 45.0, 1, 3)])
    )
    assert single.label == "0.15" and single.caveats.startswith("It rests on one seed")
    assert best_fixed(_agg([("0.1", 0.1, math.nan, math.nan, 0)])) is None


def test_estimate_drops_missing_values_and_uses_student_t() -> None:
    e = estimate([1.0, 2.0, math.nan, 3.0])
    assert (e.mean, e.n) == (2.0, 3) and e.ci == pytest.approx(stats.t.ppf(0.975, 2) / math.sqrt(3))
    assert math.isnan(estimate([5.0]).ci) and estimate([]) is None and estimate([math.nan]) is None


def test_compare_says_equal_and_verdict_needs_something_to_compare() -> None:
    assert "equals b (45.00 ± 1.00 (n = 3)) to 0.01 points" in compare(
        "a", Estimate(45.001, 1.0, 3), "b", Estimate(45.0, 1.0, 3)
    )
    with pytest.raises(ValueError, match="others must name at least one result"):
        verdict(DYS, {})


def test_against_best_fixed_adds_the_several_seed_pick_when_the_best_rests_on_one() -> None:
    agg = _agg([("0.05", 0.05, 48.0, math.nan, 1), ("0.1", 0.1, 47.5, 1.3, 3), ("0.2", 0.2, 45.3, 0.6, 3)])
    lines = against_best_fixed("D", DYS, agg)
    oracle = "the best fixed tau of the sweep (0.05, a test-set oracle)"
    assert lines == [
        compare("D", DYS, oracle, Estimate(48.0, math.nan, 1))
        + ". It is the smallest temperature run here, so the best fixed value may lie beyond it; it rests "
        "on one seed, and the largest of several single runs is biased upwards.",
        compare("D", DYS, "the best fixed tau run with several seeds (0.1)", Estimate(47.5, 1.3, 3)) + ".",
    ]
    assert "more than the margin of ±1.48" in lines[1]  # 45.48 ± 0.70 against 47.5 ± 1.3
    inner = _agg([("0.05", 0.05, 46.0, 1.0, 3), ("0.1", 0.1, 47.5, 1.3, 3), ("0.2", 0.2, 45.3, 0.6, 3)])
    assert len(against_best_fixed("D", DYS, inner)) == 1  # a several-seed pick needs no second sentence
    assert against_best_fixed("D", DYS, _agg([("0.1", 0.1, math.nan, math.nan, 0)])) == []


# ---------------------------------------------------------------------------------------------- paired
def test_paired_interval_is_scipys_paired_t_interval() -> None:
    from scipy.stats import ttest_rel

    rng = np.random.default_rng(7)
    for n in (2, 3, 5):
        a = rng.normal(50, 2, n)
        b = a - rng.normal(1.0, 0.3, n)
        p = findings.paired(dict(enumerate(a)), dict(enumerate(b)))
        low, high = ttest_rel(a, b).confidence_interval(0.95)
        assert p.diff == pytest.approx((low + high) / 2, rel=1e-12)
        assert p.ci == pytest.approx((high - low) / 2, rel=1e-9)
        assert p.seeds == tuple(range(n))


def test_pairing_resolves_a_gap_that_seed_noise_hides_unpaired() -> None:
    """Each seed moves both methods alike (shared initialisation): the unpaired margin is wide, the
    per-seed differences are nearly constant."""
    a = {0: 47.5, 1: 45.0, 2: 49.0}
    b = {s: v - 1.0 + 0.05 * s for s, v in a.items()}
    unpaired = findings.outcome(findings.estimate(list(a.values())), findings.estimate(list(b.values())))
    assert unpaired == 0
    p = findings.paired(a, b)
    assert abs(p.diff) > p.ci
    sentence = findings.compare_paired("A", "B", p)
    assert sentence.startswith("Seed by seed (seeds 0, 1, 2), A is 0.95 points above B")
    assert sentence.endswith(": resolved")


def test_paired_names_the_seeds_one_side_lacks() -> None:
    p = findings.paired({0: 1.0, 1: 2.0, 2: float("nan")}, {0: 0.5, 1: 1.0, 3: 9.0})
    assert p.seeds == (0, 1) and p.only_a == () and p.only_b == (3,)
    text = findings.compare_paired("A", "B", p)
    assert text.startswith("Seed by seed (seeds 0, 1), A is 0.75 points above B (95% interval ±")
    assert "A lacks seed(s) 3: left out" in text
    assert findings.paired({0: 1.0}, {1: 1.0}) is None
    assert "share no seed" in findings.compare_paired("A", "B", None)
    single = findings.compare_paired("A", "B", findings.paired({0: 1.0}, {0: 0.0}))
    assert "one pair has no interval" in single


def test_paired_from_frame_matches_rows_by_seed() -> None:
    import pandas as pd

    frame = pd.DataFrame(
        {
            "ablation": ["x", "x", "y", "y", "y"],
            "label": ["a", "a", "b", "b", "b"],
            "seed": [0, 1, 1, 0, 2],
            "knn_top1": [10.0, 12.0, 11.0, 9.0, 5.0],
        }
    )
    p = findings.paired_from_frame(frame, ("x", "a"), ("y", "b"))
    assert p.seeds == (0, 1) and p.diff == pytest.approx(1.0) and p.only_b == (2,)
