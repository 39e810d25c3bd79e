"""The book's comparison rule and generated sentences, against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from dystress import study
from dystress.findings import Estimate, compare, outcome, ranking, trade_off_position, verdict

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


@pytest.mark.parametrize("seed", range(40))
def test_a_resolved_difference_of_three_seeds_each_is_significant_by_welch(seed: int) -> None:
    """With equal seed counts the rule is at least as strict as Welch's two-sided t-test at 5%."""
    rng = np.random.default_rng(seed)
    a = rng.normal(rng.uniform(-2, 2), rng.uniform(0.2, 2), size=3)
    b = rng.normal(0.0, rng.uniform(0.2, 2), size=3)
    ea, eb = (Estimate(*study.mean_ci95(list(x)), 3) for x in (a, b))
    p = stats.ttest_ind(a, b, equal_var=False).pvalue
    if outcome(ea, eb) != 0:
        assert p < 0.05
    if p >= 0.05:
        assert outcome(ea, eb) == 0


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


def test_trade_off_position_matches_linear_interpolation() -> None:
    rng = np.random.default_rng(0)
    xs = np.sort(rng.uniform(-1.2, -0.8, size=5))
    ys = rng.uniform(0.7, 0.8, size=5)
    order = rng.permutation(5)
    curve = [(float(xs[i]), float(ys[i])) for i in order]  # unsorted input
    for x in np.linspace(xs[0], xs[-1], 17):
        y = 0.75
        assert trade_off_position(curve, (float(x), y)) == pytest.approx(y - np.interp(x, xs, ys), abs=1e-12)
    assert trade_off_position(curve, (float(xs[0]) - 0.01, 0.75)) is None
    assert trade_off_position(curve[:1], (float(xs[0]), 0.75)) is None
