"""The training budget and the temperature regime across profiles: the tables behind the book's
"Training budget" page.

- :func:`regime_frame`: per run and epoch, the regime entries of the records (:mod:`dystress.regime`):
  the negatives' and positives' similarity quantiles, the share of negatives at s >= 0.5, the share
  whose tau was raised, the mean taus, and ``dystress_raised_share``: the share of the run's negatives
  to which DySTreSS (0.07, 0.2) would give a raised tau (from the histogram, to within a bin), so that
  fixed-tau runs can be read on the same scale.
- :func:`method_regime`: the last epoch's regime per method, averaged over seeds.
- :func:`budget_table`: per budget (profile and epochs), the optimiser steps, the paired gap of
  DySTreSS (0.07, 0.2) to fixed tau 0.1 and the DySTreSS runs' last-epoch regime;
  :func:`ordering_answer` reads from it whether the ordering changes with the budget.
- :func:`comparison_lines`, :func:`regime_sentence`: a profile's core comparison and its DySTreSS
  regime in words (the introduction's summary of the shipped results).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from dystress.regime import BINS, QUANTILES, raised_threshold
from dystress.study.findings import Paired, compare_paired, paired
from dystress.study.runner import RunResult
from dystress.temperature import CosineTemperature

__all__ = [
    "MAIN_POINTS",
    "REFERENCE",
    "budget_table",
    "comparison_lines",
    "final_by_seed",
    "gap_state",
    "method_name",
    "method_regime",
    "ordering_answer",
    "regime_frame",
    "regime_sentence",
]

#: The DySTreSS point every comparison is made to, and the fixed tau it is weighed against.
REFERENCE = ("dystress_grid", "(0.07, 0.2)")
FIXED = ("fixed_tau", "0.1")
#: The methods of the core comparison: (ablation, label) -> name.
MAIN_POINTS = {
    ("fixed_tau", "0.1"): "fixed tau 0.1",
    ("fixed_tau", "0.2"): "SimCLR (fixed tau 0.2)",
    REFERENCE: "DySTreSS (0.07, 0.2)",
    ("dystress_grid", "(0.1, 0.2)"): "DySTreSS (0.1, 0.2)",
    ("baselines", "MACL"): "MACL",
}
#: The budget ablation's points of the two compared methods (the long profile's 6-epoch runs).
_BUDGET = {"fixed tau 0.1, 6 epochs": FIXED, "DySTreSS (0.07, 0.2), 6 epochs": REFERENCE}

_REGIME_KEYS = (
    *(f"{side}_sim_q{q:02d}" for side in ("neg", "pos") for q in QUANTILES),
    "neg_close_share",
    "neg_tau_raised_share",
    "tau_neg",
    "tau_pos",
)


def method_name(ablation: str, label: str) -> str:
    """A readable name of a point: the main methods' names, else ``label`` with its ablation."""
    return MAIN_POINTS.get((ablation, label), f"{label} ({ablation})")


#: Points per histogram bin at which :func:`_reference_raised` evaluates the reference tau.
_SUBPOINTS = 32


def _reference_raised(hist: Sequence[float]) -> float:
    """Share of the histogram's negatives to which DySTreSS (0.07, 0.2) gives a raised tau, counting
    each bin by the fraction of its width where tau is raised (values spread evenly within a bin)."""
    total = float(sum(hist))
    if not total:
        return math.nan
    reference = CosineTemperature(0.07, 0.2)
    width = 2.0 / BINS
    offsets = (torch.arange(_SUBPOINTS, dtype=torch.float64) + 0.5) * (width / _SUBPOINTS)
    points = (-1.0 + width * torch.arange(BINS, dtype=torch.float64)).unsqueeze(1) + offsets  # [BINS, SUB]
    fraction = (reference(points) > raised_threshold(reference)).double().mean(dim=1).tolist()
    return sum(c * f for c, f in zip(hist, fraction, strict=True)) / total


def regime_frame(results: Sequence[RunResult], statuses: tuple[str, ...] = ("complete",)) -> Any:
    """One row per run of one of ``statuses`` (once per run folder, under its first point) and epoch
    with regime entries: ``id, ablation, label, name, seed, epoch, step``, the regime keys (NaN where
    absent: runs made before the records had them) and ``dystress_raised_share``."""
    import pandas as pd

    rows, seen = [], set()
    for r in results:
        if r.status not in statuses or r.key in seen:
            continue
        seen.add(r.key)
        for rec in r.records():
            row = {
                "id": r.point.id,
                "ablation": r.point.ablation,
                "label": r.point.label,
                "name": method_name(r.point.ablation, r.point.label),
                "seed": r.point.seed,
                "epoch": rec.get("epoch"),
                "step": rec.get("step"),
            }
            for key in _REGIME_KEYS:
                value = rec.get(key)
                row[key] = math.nan if value is None else float(value)
            hist = rec.get("neg_sim_hist")
            row["dystress_raised_share"] = _reference_raised(hist) if hist else math.nan
            rows.append(row)
    return pd.DataFrame(rows)


def method_regime(frame: Any) -> Any:
    """The last epoch of each run, averaged per method (``ablation, label, name``) over its seeds."""
    if frame is None or len(frame) == 0:
        return frame
    last = frame[frame.epoch == frame.groupby("id").epoch.transform("max")]
    columns = [c for c in (*_REGIME_KEYS, "dystress_raised_share", "step") if c in last]
    table = last.groupby(["ablation", "label", "name"], sort=False)[columns].mean().reset_index()
    table["seeds"] = last.groupby(["ablation", "label", "name"], sort=False).seed.count().to_numpy()
    return table


def final_by_seed(results: Sequence[RunResult], point: tuple[str, str], value: str) -> dict[int, float]:
    """Seed -> final metric ``value`` of the complete runs of ``point`` (ablation, label) in ``results``."""
    out = {}
    for r in results:
        if (r.point.ablation, r.point.label) == point and r.status == "complete":
            v = r.final.get(value)
            if v is not None:
                out[r.point.seed] = float(v)
    return out


def _last_regime(results: Sequence[RunResult], point: tuple[str, str]) -> dict[str, float]:
    """The mean over seeds of the last epoch's regime of ``point``'s complete runs."""
    lasts = [
        r.records()[-1]
        for r in results
        if (r.point.ablation, r.point.label) == point and r.status == "complete" and r.records()
    ]
    out = {}
    for key in ("neg_sim_q95", "neg_sim_q99", "neg_close_share", "neg_tau_raised_share", "step"):
        values = [float(x[key]) for x in lasts if x.get(key) is not None]
        out[key] = sum(values) / len(values) if values else math.nan
    return out


def budget_table(profiles: Mapping[str, Sequence[RunResult]], value: str = "knn_top1") -> Any:
    """Per training budget: ``budget`` (a readable name), ``steps`` (optimiser steps of the DySTreSS
    runs), the paired gap ``gap`` DySTreSS (0.07, 0.2) - fixed tau 0.1 on ``value`` with its 95%
    half-width ``ci`` and ``seeds``, and the DySTreSS runs' last-epoch ``neg_sim_q95``, ``neg_sim_q99``,
    ``neg_close_share`` and ``neg_tau_raised_share``. ``profiles``: profile name -> its results (local
    or shipped); a profile's ``budget`` ablation (6 epochs of the long profile) is a budget of its own.
    Rows without a DySTreSS run are left out; sorted by steps."""
    import pandas as pd

    rows = []
    for profile, results in profiles.items():
        budgets = [(profile, results, FIXED, REFERENCE)]
        budget_runs = [r for r in results if r.point.ablation == "budget"]
        if budget_runs:
            by_method = {v: ("budget", k) for k, v in _BUDGET.items()}
            epochs = budget_runs[0].point.parameters.get("epochs")
            budgets.append((f"{profile}, {epochs} epochs", results, by_method[FIXED], by_method[REFERENCE]))
        for name, runs, fixed, ours in budgets:
            regime = _last_regime(runs, ours)
            if math.isnan(regime["step"]):
                continue
            pair: Paired | None = paired(final_by_seed(runs, ours, value), final_by_seed(runs, fixed, value))
            rows.append(
                {
                    "budget": name,
                    "steps": int(regime.pop("step")),
                    "gap": pair.diff if pair else math.nan,
                    "ci": pair.ci if pair else math.nan,
                    "seeds": pair.n if pair else 0,
                    **regime,
                }
            )
    table = pd.DataFrame(rows)
    return table.sort_values("steps").reset_index(drop=True) if len(table) else table


def gap_state(gap: float, ci: float) -> str:
    """``"fixed"`` or ``"dystress"`` when the paired interval ``gap`` ± ``ci`` (DySTreSS - fixed tau)
    excludes 0, the method ahead; ``"tie"`` when it includes 0; ``"none"`` without an interval (one
    paired seed, or no pair: NaN)."""
    if math.isnan(gap) or math.isnan(ci):
        return "none"
    if abs(gap) <= ci:
        return "tie"
    return "dystress" if gap > 0 else "fixed"


_AHEAD = {"fixed": "fixed tau 0.1", "dystress": "DySTreSS (0.07, 0.2)"}


def ordering_answer(table: Any) -> str:
    """The answer to "does the ordering change with the training budget?" from :func:`budget_table`'s
    rows (sorted by steps): whether a resolved gap reverses, holds, or is resolved at some budgets
    only, and whether the gap moved between the smallest and the largest budget by more than the
    margin of their two intervals (independent runs). Budgets without a paired interval are named and
    set aside."""
    rows = list(table.itertuples()) if table is not None else []
    states = [gap_state(r.gap, r.ci) for r in rows]
    scored = [(r, s) for r, s in zip(rows, states, strict=True) if s != "none"]
    unscored = [r for r, s in zip(rows, states, strict=True) if s == "none"]
    aside = f" ({', '.join(r.budget for r in unscored)}: no paired interval, set aside.)" if unscored else ""
    if len(scored) < 2:
        return (
            "Fewer than two budgets have a paired interval in this checkout: the question stays open here."
            + aside
        )

    def where(state: str) -> str:
        return ", ".join(f"{r.budget} ({r.steps:,} steps)" for r, s in scored if s == state)

    resolved = sorted({s for _, s in scored} - {"tie"})
    if resolved == ["dystress", "fixed"]:
        head = (
            f"Yes, it reverses: fixed tau 0.1 is ahead at {where('fixed')}, DySTreSS at {where('dystress')}."
        )
    elif not resolved:
        head = "No budget shown resolves the two methods: every paired interval includes 0."
    elif all(s != "tie" for _, s in scored):
        head = f"No: {_AHEAD[resolved[0]]} is ahead at every budget shown."
    else:
        leader = resolved[0]
        sign = 1.0 if leader == "dystress" else -1.0
        ties = [r for r, s in scored if s == "tie"]
        same = all(r.gap * sign > 0 for r in ties)
        head = (
            f"No resolved reversal: {_AHEAD[leader]} is ahead at {where(leader)}; "
            f"at {where('tie')} the paired interval includes 0, "
            + (
                "with the point estimate on the same side."
                if same
                else "and the point estimate changes side."
            )
        )
    first, last = scored[0][0], scored[-1][0]
    moves = [_moved(first, last)]
    # a shorter budget of the same profile (the long profile's 6 epochs): only the steps differ
    same_data = [r for r, _ in scored if r.budget.startswith(f"{last.budget}, ")]
    if same_data and same_data[0] is not first:
        moves.append(_moved(same_data[0], last))
    return head + "".join(f" {m}" for m in moves) + aside


def _moved(a: Any, b: Any) -> str:
    """How the gap moved from budget row ``a`` to ``b``, against the margin of their two intervals."""
    moved, margin = b.gap - a.gap, math.hypot(a.ci, b.ci)
    verdict = "resolved" if abs(moved) > margin else "not resolved"
    return (
        f"From {a.budget} ({a.steps:,} steps) to {b.budget} ({b.steps:,} steps) the gap moved by "
        f"{moved:+.2f} points (margin of the two intervals ±{margin:.2f}): {verdict}."
    )


def comparison_lines(results: Sequence[RunResult], value: str = "knn_top1") -> list[str]:
    """DySTreSS (0.07, 0.2) against every other method of :data:`MAIN_POINTS` that has runs in
    ``results``, seed by seed: one :func:`~dystress.study.findings.compare_paired` sentence each
    (none without a complete DySTreSS run)."""
    ours = final_by_seed(results, REFERENCE, value)
    if not ours:
        return []
    lines = []
    for point, name in MAIN_POINTS.items():
        other = final_by_seed(results, point, value)
        if point != REFERENCE and other:
            lines.append(compare_paired(MAIN_POINTS[REFERENCE], name, paired(ours, other)))
    return lines


def regime_sentence(results: Sequence[RunResult], statuses: tuple[str, ...] = ("complete",)) -> str | None:
    """How far DySTreSS (0.07, 0.2)'s temperature varied over its negatives at the last epoch of its
    runs in ``results`` of one of ``statuses`` (the mean over seeds), or None without such a run."""
    table = method_regime(
        regime_frame([r for r in results if (r.point.ablation, r.point.label) == REFERENCE], statuses)
    )
    if table is None or len(table) == 0:
        return None
    row = table.iloc[0]
    if math.isnan(row.neg_sim_q99):  # runs made before the records had the regime entries
        return None
    return (
        f"at its last epoch ({int(row.step):,} steps), DySTreSS (0.07, 0.2)'s negatives reach "
        f"q99 = {row.neg_sim_q99:.2f}, with {100 * row.neg_close_share:.2f} % of them at s >= 0.5 and "
        f"{100 * row.neg_tau_raised_share:.1f} % given a tau more than 10 % of its range above tau_min; "
        f"the mean tau on negatives is {row.tau_neg:.3f} (tau_min = 0.07)"
    )
