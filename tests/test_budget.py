"""The training-budget tables: paired gaps per budget and the regime per method, on hand-made runs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from dystress.regime import BINS
from dystress.study import budget, plots
from dystress.study.ablations import plan
from dystress.study.shipped import ShippedResult


def _hist(similarity: float) -> list[int]:
    """A histogram of 100 negatives, all at ``similarity``."""
    counts = [0] * BINS
    counts[min(int((similarity + 1) * BINS / 2), BINS - 1)] = 100
    return counts


def _runs(profile: str, knn: dict[tuple[str, str], list[float]], steps: int) -> list[ShippedResult]:
    out = []
    for p in plan(profile):
        method = (p.ablation, p.label)
        if method not in knn:
            continue
        run_steps = steps * 3 // 10 if p.ablation == "budget" else steps  # 6 of 20 epochs
        records = [
            {
                "epoch": e,
                "step": run_steps * e // 2,
                "neg_sim_q95": 0.3 + 0.1 * e,
                "neg_sim_q99": 0.5,
                "neg_sim_q50": 0.0,
                "neg_sim_q05": -0.3,
                "neg_close_share": 0.01,
                "neg_sim_hist": _hist(0.0 if e == 1 else 0.9),
            }
            for e in (1, 2)
        ]
        final = {"knn_top1": knn[method][p.seed]}
        out.append(ShippedResult(p, profile, f"k{p.id}", Path("."), "complete", final, {}, records))
    return out


def test_budget_table_pairs_seeds_per_budget() -> None:
    long = _runs(
        "long",
        {
            ("fixed_tau", "0.1"): [60.0, 61.0, 62.0],
            ("dystress_grid", "(0.07, 0.2)"): [59.0, 60.5, 61.0],
            ("budget", "fixed tau 0.1, 6 epochs"): [55.0, 56.0, 57.0],
            ("budget", "DySTreSS (0.07, 0.2), 6 epochs"): [54.0, 55.0, 56.5],
        },
        3900,
    )
    table = budget.budget_table({"long": long})
    assert list(table.budget) == ["long, 6 epochs", "long"] and list(table.steps) == [1170, 3900]
    row = table[table.budget == "long"].iloc[0]
    diffs = [-1.0, -0.5, -1.0]
    assert row.gap == pytest.approx(sum(diffs) / 3) and row.seeds == 3 and row.ci > 0
    assert row.steps == 3900 and row.neg_sim_q95 == pytest.approx(0.5)


def test_regime_frame_reads_fixed_tau_runs_on_the_dystress_scale() -> None:
    runs = _runs("long", {("fixed_tau", "0.1"): [60.0, 61.0, 62.0]}, 100)
    frame = budget.regime_frame(runs)
    assert len(frame) == 6 and set(frame.name) == {"fixed tau 0.1"}
    # s = 0 gives tau_min (not raised); s = 0.9 gives nearly tau_max (raised)
    assert list(frame.dystress_raised_share) == [0.0, 1.0] * 3
    table = budget.method_regime(frame)
    assert len(table) == 1 and table.seeds.iloc[0] == 3 and table.dystress_raised_share.iloc[0] == 1.0
    assert math.isnan(table.neg_tau_raised_share.iloc[0])  # absent from these records


def test_figures_draw_and_nothing_gives_none() -> None:
    runs = _runs(
        "long", {("fixed_tau", "0.1"): [60.0, 61.0, 62.0], ("dystress_grid", "(0.07, 0.2)"): [1, 2, 3]}, 10
    )
    frame = budget.regime_frame(runs)
    assert plots.regime_over_training(frame) is not None
    quick = _runs(
        "quick", {("fixed_tau", "0.1"): [5, 6, 7], ("dystress_grid", "(0.07, 0.2)"): [4, 6, 6]}, 200
    )
    table = budget.budget_table({"long": runs, "quick": quick})
    assert len(table) == 2
    figure = plots.gap_vs_steps(table)
    for ax in figure.axes:  # labelled at the budgets' own steps only
        assert [t.get_text() for t in ax.get_xticklabels()] == [f"{int(x):,}" for x in sorted(table.steps)]
        assert len(ax.get_xticks(minor=True)) == 0
    assert plots.regime_over_training(budget.regime_frame([])) is None
    assert plots.gap_vs_steps(budget.budget_table({})) is None


def _budgets(*rows: tuple[str, int, float, float]) -> object:
    import pandas as pd

    return pd.DataFrame([{"budget": b, "steps": s, "gap": g, "ci": c} for b, s, g, c in rows])


def test_gap_state_reads_the_paired_interval() -> None:
    assert budget.gap_state(-2.0, 1.0) == "fixed" and budget.gap_state(0.5, 0.4) == "dystress"
    assert budget.gap_state(-0.3, 0.5) == "tie" and budget.gap_state(-0.5, 0.5) == "tie"  # 0 on the edge
    assert budget.gap_state(1.0, math.nan) == "none"  # one seed: no interval
    assert budget.gap_state(math.nan, math.nan) == "none"  # no fixed-tau run to pair with


def test_ordering_answer_says_how_the_gap_moves_with_the_budget() -> None:
    quick, long = ("quick", 234, -2.12, 0.96), ("long", 3900, -0.35, 0.47)
    moved = (
        "From quick (234 steps) to long (3,900 steps) the gap moved by +1.77 points (margin of the two "
        "intervals ±1.07): resolved."
    )
    assert budget.ordering_answer(_budgets(quick)).startswith("Fewer than two budgets")
    assert budget.ordering_answer(_budgets(quick, long)) == (
        "No resolved reversal: fixed tau 0.1 is ahead at quick (234 steps); at long (3,900 steps) the "
        "paired interval includes 0, with the point estimate on the same side. " + moved
    )
    flipped = budget.ordering_answer(_budgets(quick, ("long", 3900, 0.2, 0.47)))
    assert "includes 0, and the point estimate changes side. From quick" in flipped
    reversed_ = budget.ordering_answer(_budgets(quick, ("long", 3900, 0.9, 0.47)))
    assert reversed_.startswith(
        "Yes, it reverses: fixed tau 0.1 is ahead at quick (234 steps), DySTreSS at long (3,900 steps)."
    )
    same = budget.ordering_answer(_budgets(quick, ("long", 3900, -1.5, 0.47)))
    assert same.startswith("No: fixed tau 0.1 is ahead at every budget") and same.endswith(
        "moved by +0.62 points (margin of the two intervals ±1.07): not resolved."
    )
    assert budget.ordering_answer(_budgets(("quick", 234, 0.1, 0.5), long)).startswith("No budget shown")
    # budgets without a paired interval are set aside and named, never read as "includes 0"
    one_seed = budget.ordering_answer(_budgets(quick, ("long", 3900, -0.35, math.nan)))
    assert one_seed == (
        "Fewer than two budgets have a paired interval in this checkout: the question stays open here. "
        "(long: no paired interval, set aside.)"
    )
    # the long profile's shorter budget: only the steps differ, so its move is given as well
    three = budget.ordering_answer(_budgets(quick, ("long, 6 epochs", 1170, -0.8, 0.3), long))
    assert three.endswith(
        "From long, 6 epochs (1,170 steps) to long (3,900 steps) the gap moved by +0.45 points (margin of "
        "the two intervals ±0.56): not resolved."
    )
    assert moved in three


def test_comparison_lines_pair_dystress_with_each_method_seed_by_seed() -> None:
    runs = _runs(
        "long",
        {
            ("fixed_tau", "0.1"): [60.0, 61.0, 62.0],
            ("dystress_grid", "(0.07, 0.2)"): [59.0, 60.5, 61.0],
            ("baselines", "MACL"): [59.0, 60.5, 61.0],
        },
        100,
    )
    lines = budget.comparison_lines(runs)
    assert len(lines) == 2  # the methods without runs are left out
    assert lines[0].startswith(
        "Seed by seed (seeds 0, 1, 2), DySTreSS (0.07, 0.2) is 0.83 points below fixed tau 0.1"
    )
    assert lines[1].startswith(
        "Seed by seed (seeds 0, 1, 2), DySTreSS (0.07, 0.2) equals MACL to 0.01 points"
    )
    assert budget.comparison_lines([r for r in runs if r.point.ablation != "dystress_grid"]) == []


def test_regime_sentence_reads_the_last_epoch_of_the_dystress_runs() -> None:
    runs = _runs(
        "long", {("dystress_grid", "(0.07, 0.2)"): [1.0, 2.0, 3.0], ("fixed_tau", "0.1"): [1, 2, 3]}, 100
    )
    for r in runs:
        for rec in r.records():
            rec.update(tau_neg=0.07 + 0.01 * rec["epoch"], neg_tau_raised_share=0.1 * rec["epoch"])
    sentence = budget.regime_sentence(runs)
    assert sentence == (
        "at its last epoch (100 steps), DySTreSS (0.07, 0.2)'s negatives reach q99 = 0.50, with 1.00 % of "
        "them at s >= 0.5 and 20.0 % given a tau more than 10 % of its range above tau_min; the mean tau on "
        "negatives is 0.090 (tau_min = 0.07)"
    )
    assert budget.regime_sentence([r for r in runs if r.point.ablation == "fixed_tau"]) is None
    for r in runs:  # runs made before the records had the regime entries: nothing to say
        for rec in r.records():
            del rec["neg_sim_q99"]
    assert budget.regime_sentence(runs) is None
