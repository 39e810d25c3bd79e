"""What a build of the book shows, stated from its results: the comparison rule and the sentences.

The book types no conclusion by hand: every "A beats B" or "the most uniform run is ..." on its pages is
one of these functions applied to the results of the profile it renders, so a rebuild with other
results changes the sentence with the numbers.

The comparison rule (:func:`outcome`): two estimates differ when the difference of their means is
larger than ``hypot(ci_a, ci_b)``, the root sum of squares of their 95% half-widths. For seed means
with Student-t intervals this is a Welch-type 95% interval of the difference (conservative: each
half-width uses its own, smaller, degrees of freedom); a single seed's binomial half-width covers only
test-set noise. An unknown half-width (NaN) makes every difference "within the intervals".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "VERDICT_RULE",
    "Estimate",
    "compare",
    "from_aggregate",
    "outcome",
    "ranking",
    "trade_off_position",
    "verdict",
]

#: The rule of :func:`outcome`, in one sentence for the pages.
VERDICT_RULE = (
    "two results differ when the difference of their means exceeds the root sum of squares of their "
    "95% half-widths (a Welch-type 95% interval of the difference); otherwise they are within the "
    "intervals"
)


@dataclass(frozen=True)
class Estimate:
    """A result: ``mean`` (e.g. top-1 %), ``ci`` the half-width of its 95% interval (NaN: unknown),
    ``n`` the number of seeds it averages."""

    mean: float
    ci: float
    n: int

    def __str__(self) -> str:
        if math.isnan(self.ci):
            return f"{self.mean:.2f} (n = {self.n})"
        return f"{self.mean:.2f} ± {self.ci:.2f} (n = {self.n})"


def outcome(a: Estimate, b: Estimate) -> int:
    """+1 when ``a`` is above ``b`` beyond the margin ``hypot(a.ci, b.ci)``, -1 below it, 0 within."""
    diff = a.mean - b.mean
    margin = math.hypot(a.ci, b.ci)
    if math.isnan(margin):
        return 0
    return 1 if diff > margin else (-1 if diff < -margin else 0)


def verdict(ours: Estimate | None, others: Mapping[str, Estimate | None]) -> str:
    """The verdict on "``ours`` beats each of ``others``": reproduced (above all), not reproduced (below
    one), inconclusive; followed by each difference. "not run in this profile" when a result is missing."""
    if ours is None or any(o is None for o in others.values()):
        return "not run in this profile"
    signs = [outcome(ours, o) for o in others.values()]  # type: ignore[arg-type]
    parts = [f"{ours.mean - o.mean:+.2f} vs {name}" for name, o in others.items()]  # type: ignore[union-attr]
    if all(s == 1 for s in signs):
        head = "reproduced (ordering)"
    elif any(s == -1 for s in signs):
        head = "not reproduced"
    else:
        head = "inconclusive (within the intervals)"
    return f"{head}: " + ", ".join(parts)


def compare(name_a: str, a: Estimate | None, name_b: str, b: Estimate | None, unit: str = "points") -> str:
    """One sentence comparing two results, e.g. "X (45.48 ± 0.70 (n = 3)) is 2.06 points below Y
    (47.54 ± 1.30 (n = 3)), more than the margin of ±1.48"."""
    if a is None or b is None:
        missing = name_a if a is None else name_b
        return f"{missing} has no result in this build, so {name_a} and {name_b} cannot be compared"
    diff = a.mean - b.mean
    margin = math.hypot(a.ci, b.ci)
    side = "above" if diff > 0 else "below"
    head = f"{name_a} ({a}) is {abs(diff):.2f} {unit} {side} {name_b} ({b})"
    if math.isnan(margin):
        return f"{head}; one of them is a single run without an interval, so this is not resolved"
    if outcome(a, b) == 0:
        return f"{head}, within the margin of ±{margin:.2f}: not resolved at this scale"
    return f"{head}, more than the margin of ±{margin:.2f}"


def ranking(values: Mapping[str, float], digits: int = 3, ascending: bool = False) -> str:
    """``values`` (name -> number; NaN dropped) in decreasing order, "a 0.297 > b 0.293 > c 0.268", or
    with ``ascending`` in increasing order, "c -1.159 < b -1.107 < a -0.886"."""
    items = sorted(((v, k) for k, v in values.items() if not math.isnan(v)), reverse=not ascending)
    if not items:
        return "no result"
    return (" < " if ascending else " > ").join(f"{k} {v:.{digits}f}" for v, k in items)


def trade_off_position(curve: Sequence[tuple[float, float]], point: tuple[float, float]) -> float | None:
    """Vertical offset of ``point`` (x, y) from the piecewise-linear ``curve`` [(x, y), ...] at its x.

    Used with x = uniformity and y = tolerance: the fixed-temperature runs trace the trade-off curve,
    and a positive offset means more tolerance than a fixed temperature of the same uniformity. None
    when x lies outside the curve's x-range (no interpolation there) or the curve has < 2 points.
    """
    pts = sorted(curve)
    x, y = point
    if len(pts) < 2 or not pts[0][0] <= x <= pts[-1][0]:
        return None
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:], strict=True):
        if x0 <= x <= x1:
            at = y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
            return y - at
    return None  # pragma: no cover (the range check above makes the loop return)


def from_aggregate(agg: Any, ablation: str, label: str) -> Estimate | None:
    """The :class:`Estimate` of one (ablation, label) row of :func:`dystress.study.aggregate`'s frame
    (None when the row is absent or has no result)."""
    rows = agg[(agg.ablation == ablation) & (agg.label == label)]
    if rows.empty or int(rows.iloc[0]["n"]) == 0:
        return None
    row = rows.iloc[0]
    return Estimate(float(row["mean"]), float(row["ci"]), int(row["n"]))
