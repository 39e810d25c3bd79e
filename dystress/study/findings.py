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
    "PAIRED_RULE",
    "VERDICT_RULE",
    "BestFixed",
    "Estimate",
    "Paired",
    "TradeOff",
    "against_best_fixed",
    "best_fixed",
    "compare",
    "compare_paired",
    "estimate",
    "from_aggregate",
    "mean_ci95",
    "outcome",
    "paired",
    "paired_from_frame",
    "ranking",
    "trade_off_position",
    "verdict",
]

#: The rule of :func:`outcome`, in one sentence for the pages.
VERDICT_RULE = (
    "two results differ when the difference of their means exceeds the root sum of squares of their "
    "95% Student-t half-widths over seeds (never narrower than Welch's 95% interval of the difference); "
    "a result of one seed has no interval and is never called different"
)


#: The rule of :func:`compare_paired`, in one sentence for the pages.
PAIRED_RULE = (
    "runs with the same seed share their initialisation, data order and augmentation, so two methods are "
    "also compared seed by seed: the mean of the per-seed differences with its 95% Student-t interval "
    "(n - 1 degrees of freedom); its half-width is the smallest gap these seeds resolve at the observed "
    "spread of the differences"
)


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% Student-t interval of the mean (half-width NaN for one value)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("values must hold at least one number")
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return mean, math.nan
    from scipy.stats import t

    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(t.ppf(0.975, n - 1)) * sd / math.sqrt(n)


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


def estimate(values: Sequence[float]) -> Estimate | None:
    """The :class:`Estimate` of the results of one setting over its seeds (None for no result)."""
    values = [float(v) for v in values if not math.isnan(float(v))]
    return Estimate(*mean_ci95(values), len(values)) if values else None


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
    if not others:
        raise ValueError("others must name at least one result to compare with")
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
    if round(diff, 2) == 0:
        head = f"{name_a} ({a}) equals {name_b} ({b}) to 0.01 {unit}"
    else:
        side = "above" if diff > 0 else "below"
        head = f"{name_a} ({a}) is {abs(diff):.2f} {unit} {side} {name_b} ({b})"
    if math.isnan(margin):
        return f"{head}; one of them is a single run without an interval, so this is not resolved"
    if outcome(a, b) == 0:
        return f"{head}, within the margin of ±{margin:.2f}: not resolved at this scale"
    return f"{head}, more than the margin of ±{margin:.2f}"


@dataclass(frozen=True)
class Paired:
    """Two methods compared seed by seed: ``diff`` the mean of the per-seed differences a - b, ``ci`` the
    half-width of its 95% Student-t interval (NaN for one pair), ``seeds`` those both have, and the
    seeds only one of them has (``only_a``, ``only_b``: missing, failed or diverged on the other side)."""

    diff: float
    ci: float
    seeds: tuple[int, ...]
    only_a: tuple[int, ...] = ()
    only_b: tuple[int, ...] = ()

    @property
    def n(self) -> int:
        return len(self.seeds)


def paired(a: Mapping[int, float], b: Mapping[int, float]) -> Paired | None:
    """The seed-by-seed comparison of results ``a`` and ``b`` (seed -> value; NaN values count as
    missing); None when no seed has both."""
    a = {int(k): float(v) for k, v in a.items() if not math.isnan(float(v))}
    b = {int(k): float(v) for k, v in b.items() if not math.isnan(float(v))}
    seeds = tuple(sorted(a.keys() & b.keys()))
    if not seeds:
        return None
    diff, ci = mean_ci95([a[s] - b[s] for s in seeds])
    return Paired(diff, ci, seeds, tuple(sorted(a.keys() - b.keys())), tuple(sorted(b.keys() - a.keys())))


def paired_from_frame(
    frame: Any, a: tuple[str, str], b: tuple[str, str], value: str = "knn_top1"
) -> Paired | None:
    """:func:`paired` of two (ablation, label) points of :func:`dystress.study.results.results_frame`'s
    frame, on column ``value`` (runs without a result count as missing)."""

    def by_seed(ablation: str, label: str) -> dict[int, float]:
        rows = frame[(frame.ablation == ablation) & (frame.label == label)]
        return {int(s): float(v) for s, v in zip(rows["seed"], rows[value], strict=True) if v == v}

    return paired(by_seed(*a), by_seed(*b))


def compare_paired(name_a: str, name_b: str, p: Paired | None, unit: str = "points") -> str:
    """One sentence on the seed-by-seed difference, e.g. "Seed by seed (seeds 0, 1, 2), X is 2.07 points
    below Y (95% interval ±0.58): resolved"; it names the seeds one side lacks."""
    if p is None:
        return f"{name_a} and {name_b} share no seed, so they cannot be compared seed by seed"
    which = f"Seed by seed (seed{'s' if p.n > 1 else ''} {', '.join(str(s) for s in p.seeds)})"
    side = "above" if p.diff > 0 else "below"
    head = f"{which}, {name_a} is {abs(p.diff):.2f} {unit} {side} {name_b}"
    if round(p.diff, 2) == 0:
        head = f"{which}, {name_a} equals {name_b} to 0.01 {unit}"
    if math.isnan(p.ci):
        tail = "; one pair has no interval, so this is not resolved"
    elif abs(p.diff) > p.ci:
        tail = f" (95% interval ±{p.ci:.2f}): resolved"
    else:
        tail = (
            f" (95% interval ±{p.ci:.2f}): not resolved; {p.n} seeds at this spread resolve gaps larger "
            f"than {p.ci:.2f} {unit}"
        )
    missing = [
        f"{name} lacks seed(s) {', '.join(map(str, seeds))}"
        for name, seeds in ((name_b, p.only_a), (name_a, p.only_b))
        if seeds
    ]
    return head + tail + (f" ({'; '.join(missing)}: left out)" if missing else "")


def ranking(values: Mapping[str, float], digits: int = 3, ascending: bool = False) -> str:
    """``values`` (name -> number; NaN dropped) in decreasing order, "a 0.297 > b 0.293 > c 0.268", or
    with ``ascending`` in increasing order, "c -1.159 < b -1.107 < a -0.886"."""
    items = sorted(((v, k) for k, v in values.items() if not math.isnan(v)), reverse=not ascending)
    if not items:
        return "no result"
    return (" < " if ascending else " > ").join(f"{k} {v:.{digits}f}" for v, k in items)


@dataclass(frozen=True)
class TradeOff:
    """Where a run lies against the curve the fixed temperatures trace: ``offset`` = its y minus the
    curve's y at its x; ``margin`` = 1.96 sd sqrt(1 + w^2 + (1 - w)^2), the 95% noise of that offset
    when every run's y has the standard deviation ``sd`` over seeds and the curve's y at x is the
    mix w y_left + (1 - w) y_right of two runs (NaN when sd is unknown)."""

    offset: float
    margin: float

    @property
    def resolved(self) -> bool:
        """Whether the offset is larger than its noise (False when the noise is unknown)."""
        return abs(self.offset) > self.margin  # False for a NaN margin


def trade_off_position(
    curve: Sequence[tuple[float, float]], point: tuple[float, float], sd: float = math.nan
) -> TradeOff | None:
    """``point`` (x, y) against the polyline ``curve`` [(x, y), ...] given in its own order (the fixed
    runs in order of tau), interpolated linearly at the point's x.

    Used with x = uniformity and y = tolerance: a positive offset means more tolerance than a fixed
    temperature of the same uniformity. None when the curve's x is not monotone along it (the fixed
    runs trace no single trade-off curve), has < 2 points, or x lies outside its range.
    """
    pts = list(curve)
    if len(pts) < 2:
        return None
    xs = [p[0] for p in pts]
    steps = [b - a for a, b in zip(xs[:-1], xs[1:], strict=True)]
    if not (all(d > 0 for d in steps) or all(d < 0 for d in steps)):
        return None
    pts = sorted(pts)
    x, y = point
    if not pts[0][0] <= x <= pts[-1][0]:
        return None
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:], strict=True):
        if x0 <= x <= x1:
            w = (x1 - x) / (x1 - x0)  # weight of the left end
            at = w * y0 + (1 - w) * y1
            return TradeOff(y - at, 1.96 * sd * math.sqrt(1 + w**2 + (1 - w) ** 2))
    return None  # pragma: no cover (the range check above makes the loop return)


@dataclass(frozen=True)
class BestFixed:
    """The fixed temperature with the highest mean of a sweep (a test-set oracle): ``label``, ``tau``,
    its :class:`Estimate` and ``caveats`` (a sentence, possibly empty) on how far to trust the pick."""

    label: str
    tau: float
    estimate: Estimate
    caveats: str


def best_fixed(agg: Any, ablation: str = "fixed_tau") -> BestFixed | None:
    """The best fixed temperature among the rows of ``ablation`` in :func:`dystress.study.results.aggregate`'s
    frame that have a result; None when there is none. The caveats name a pick at the edge of the
    temperatures run (the optimum may lie beyond) and a pick resting on one seed."""
    rows = agg[(agg.ablation == ablation) & (agg.n > 0)]
    if rows.empty:
        return None
    row = rows.loc[rows["mean"].idxmax()]
    notes = []
    if len(rows) > 1 and row["tau"] in (rows["tau"].min(), rows["tau"].max()):
        side = "smallest" if row["tau"] == rows["tau"].min() else "largest"
        notes.append(f"it is the {side} temperature run here, so the best fixed value may lie beyond it")
    if int(row["n"]) == 1:
        notes.append("it rests on one seed, and the largest of several single runs is biased upwards")
    text = "; ".join(notes)
    caveats = text[:1].upper() + text[1:] + "." if text else ""
    best = from_aggregate(agg, ablation, row["label"])
    return BestFixed(str(row["label"]), float(row["tau"]), best, caveats)  # type: ignore[arg-type]


def against_best_fixed(name: str, ours: Estimate | None, agg: Any, ablation: str = "fixed_tau") -> list[str]:
    """Sentences comparing ``ours`` (named ``name``) with the best fixed temperature of ``agg``'s
    ``ablation`` (a test-set oracle, with its caveats) and, when that pick rests on one seed, with the
    best one run with several seeds; empty when no fixed temperature has a result."""
    best = best_fixed(agg, ablation)
    if best is None:
        return []
    oracle = f"the best fixed tau of the sweep ({best.label}, a test-set oracle)"
    lines = [compare(name, ours, oracle, best.estimate) + "." + (f" {best.caveats}" if best.caveats else "")]
    seeded = best_fixed(agg[agg.n >= 2], ablation)
    if best.estimate.n == 1 and seeded is not None:
        several = f"the best fixed tau run with several seeds ({seeded.label})"
        lines.append(compare(name, ours, several, seeded.estimate) + ".")
    return lines


def from_aggregate(agg: Any, ablation: str, label: str) -> Estimate | None:
    """The :class:`Estimate` of one (ablation, label) row of :func:`dystress.study.results.aggregate`'s frame
    (None when the row is absent or has no result)."""
    rows = agg[(agg.ablation == ablation) & (agg.label == label)]
    if rows.empty or int(rows.iloc[0]["n"]) == 0:
        return None
    row = rows.iloc[0]
    return Estimate(float(row["mean"]), float(row["ci"]), int(row["n"]))
