"""The ablations of the study: named points (notebook parameters) and the plan of each profile.

Every point of :data:`ABLATIONS` is a set of notebook parameters (config fields plus the temperature
function's own parameters); :func:`plan` lists a profile's points (:data:`SUBSETS`; ``paper``: all
but the CPU-only budget ablation). :mod:`dystress.study.runner` runs them; :mod:`dystress.study.results`
tabulates them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dystress.config import PretrainConfig

__all__ = [
    "ABLATIONS",
    "CPU_ONLY_ABLATIONS",
    "PROFILE_NAMES",
    "SUBSETS",
    "Ablation",
    "Point",
    "long_tailed_size",
    "training_images",
    "plan",
]

#: Profiles with a plan (``imagenet100`` is a config profile, not run by the study).
PROFILE_NAMES = ("smoke", "quick", "long", "paper")


@dataclass(frozen=True)
class Point:
    """One point of an ablation: notebook parameters (without ``profile``) and a label for tables."""

    ablation: str
    label: str
    params: tuple[tuple[str, Any], ...]

    @property
    def seed(self) -> int:
        return int(dict(self.params).get("seed", 0))

    @property
    def parameters(self) -> dict[str, Any]:
        """The notebook parameters as a dict (tuples stored for hashability come back as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.params}

    @property
    def id(self) -> str:
        return f"{self.ablation}/{self.label}/s{self.seed}"


@dataclass(frozen=True)
class Ablation:
    """A named family of points with a one-line description for the book."""

    name: str
    title: str
    description: str
    points: tuple[Point, ...]


def _point(ablation: str, label: str, seed: int = 0, **params: Any) -> Point:
    return Point(ablation, label, _freeze({**params, "seed": seed}))


def _freeze(params: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in params.items()))


#: The DySTreSS range of the authors' CIFAR script and of the profiles; the reference of the shifted
#: and functional-form ablations.
REFERENCE_RANGE = (0.07, 0.2)
FIXED_TAUS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
GRID_TAU_MIN = (0.05, 0.07, 0.1, 0.2)
GRID_TAU_MAX = (0.1, 0.2, 0.3, 0.5, 1.0)
SHIFTS = ((-0.4, 0.7), (-0.3, 0.7), (-0.5, 0.7), (-0.4, 0.6), (-0.4, 0.8), (0.4, 0.8))
FORMS = ("cosine", "linear", "exponential", "log_linear", "one_sided_cosine")
SEEDS = (0, 1, 2)


def _dystress(tau_min: float, tau_max: float, seed: int = 0, ablation: str = "dystress_grid") -> Point:
    return _point(
        ablation, f"({tau_min:g}, {tau_max:g})", seed, temperature="cosine", tau_min=tau_min, tau_max=tau_max
    )


def _fixed(tau: float, seed: int = 0) -> Point:
    return _point("fixed_tau", f"{tau:g}", seed, temperature="constant", tau=tau)


def _shifted(offset: float, scale: float, seed: int = 0) -> Point:
    lo, hi = REFERENCE_RANGE
    return _point(
        "shifted",
        f"({offset:g}, {scale:g})",
        seed,
        temperature="shifted_cosine",
        tau_min=lo,
        tau_max=hi,
        offset=offset,
        scale=scale,
    )


def _form(name: str, seed: int = 0) -> Point:
    lo, hi = REFERENCE_RANGE
    return _point("forms", name, seed, temperature=name, tau_min=lo, tau_max=hi)


def _baseline(name: str, seed: int = 0) -> Point:
    if name == "TS":
        # One period over twice the run, the shape of Kukleva et al.'s T = 400 for 200 epochs: epochs
        # count from 1 as in their code, so tau falls from just below tau_plus at the first epoch to
        # tau_minus at the last (quick, T = 12: 0.94, 0.775, 0.55, 0.325, 0.16, 0.1); the period is
        # filled in per profile by plan().
        return _point("baselines", "TS", seed, temperature="ts_schedule", tau_plus=1.0, tau_minus=0.1)
    return _point("baselines", "MACL", seed, temperature="macl", tau_0=0.1, alpha=0.5, a_0=0.0)


def _rival(name: str, seed: int = 0) -> Point:
    """The other answers to "which temperature?" at their papers' settings: a learned global tau
    (CLIP's parametrisation, from 0.1, in [0.01, 1], at the model's learning rate), iSogCLR's learned
    tau per image (the reference code's CIFAR settings) and the temperature-free loss."""
    params: dict[str, Any] = {
        "learned tau": {"temperature": "learned", "tau_init": 0.1, "tau_min": 0.01, "tau_max": 1.0},
        "iSogCLR": {"temperature": "isogclr"},
        "temperature-free": {"temperature": "free"},
    }[name]
    return _point("rivals", name, seed, **params)


def _isogclr_long_tailed() -> tuple[Point, ...]:
    """iSogCLR on CIFAR-10-LT (every seed), where class frequency is known: its per-image taus per class
    test the paper's claim that frequent semantics get a larger tau."""
    lt = {"imbalance_ratio": LT_IMBALANCE_RATIO}
    return _on_dataset("cifar10_lt", ISOGCLR_LT_LABEL, _rival("iSogCLR"), "rivals", **lt)


#: Label of iSogCLR's CIFAR-10-LT point (ablation ``rivals``).
ISOGCLR_LT_LABEL = "iSogCLR, CIFAR-10-LT"


#: Epochs of the budget ablation's shorter runs (the ``long`` profile trains 20).
BUDGET_EPOCHS = 6


def _budget(point: Point) -> tuple[Point, ...]:
    """``point``'s method trained :data:`BUDGET_EPOCHS` epochs (a shorter budget, the same schedule
    shape), every seed; ablation ``budget``, label ``<label>, 6 epochs``."""
    name = {"fixed_tau": f"fixed tau {point.label}", "dystress_grid": f"DySTreSS {point.label}"}[
        point.ablation
    ]
    return _on_dataset("cifar10", f"{name}, {BUDGET_EPOCHS} epochs", point, "budget", epochs=BUDGET_EPOCHS)


def _random_init(seed: int = 0) -> Point:
    return _point("random_init", "random initialisation", seed, epochs=0, snapshot_epochs=[0])


#: Points repeated with the extra seeds of :data:`SEEDS` (in their own ablation) in the paper profile.
SEEDED_IDS = frozenset(
    p.id
    for p in (
        _fixed(0.1),
        _fixed(0.2),
        _fixed(0.5),
        _dystress(*REFERENCE_RANGE),
        _dystress(0.1, 0.2),
        _shifted(-0.4, 0.7),
        _baseline("TS"),
        _baseline("MACL"),
        _rival("learned tau"),
        _rival("iSogCLR"),
        _rival("temperature-free"),
    )
)


def _with_seeds(points: Iterable[Point]) -> tuple[Point, ...]:
    """Each point, followed by its repeats with the other :data:`SEEDS` when it is in :data:`SEEDED_IDS`."""
    out = []
    for p in points:
        out.append(p)
        if p.id in SEEDED_IDS:
            out.extend(
                Point(p.ablation, p.label, _freeze({**p.parameters, "seed": s})) for s in SEEDS if s != p.seed
            )
    return tuple(out)


_SEEDS_NOTE = f"; seeds {', '.join(map(str, SEEDS))} for the main points"

#: Kukleva et al.'s TS period (epochs); the length of the paper's long-tailed comparison with TS (their
#: training length, five TS periods); the imbalance ratio n_min / n_max of the long-tailed setups.
TS_PERIOD = 400
LT_TS_EPOCHS = 2000
LT_IMBALANCE_RATIO = 0.01
#: Labels of the long-tailed points trained for LT_TS_EPOCHS epochs.
LT_TS_LABEL = f"TS, {LT_TS_EPOCHS} epochs"
LT_DYSTRESS_LONG_LABEL = f"DySTreSS (0.07, 0.2), {LT_TS_EPOCHS} epochs"


def _on_dataset(
    dataset: str, label: str, point: Point, ablation: str | None = None, **params: Any
) -> tuple[Point, ...]:
    """``point``'s method trained on ``dataset`` (with ``params``): ablation ``ablation`` (default:
    ``dataset``), every seed."""
    base = {**point.parameters, **params, "dataset": dataset}
    return tuple(Point(ablation or dataset, label, _freeze({**base, "seed": s})) for s in SEEDS)


def _cifar100() -> tuple[Point, ...]:
    return (
        _on_dataset("cifar100", "SimCLR (tau 0.2)", _fixed(0.2))
        + _on_dataset("cifar100", "MACL", _baseline("MACL"))
        + _on_dataset("cifar100", "DySTreSS (0.07, 0.2)", _dystress(*REFERENCE_RANGE))
        + _on_dataset("cifar100", "DySTreSS (0.1, 0.2)", _dystress(0.1, 0.2))
    )


def _long_tailed(dataset: str) -> tuple[Point, ...]:
    """The paper's long-tailed comparison with SimCLR, at the profile's epochs (paper: 200; quick: 6)."""
    lt = {"imbalance_ratio": LT_IMBALANCE_RATIO}
    return _on_dataset(dataset, "SimCLR (tau 0.2)", _fixed(0.2), **lt) + _on_dataset(
        dataset, "DySTreSS (0.07, 0.2)", _dystress(*REFERENCE_RANGE), **lt
    )


def _long_tailed_ts(dataset: str) -> tuple[Point, ...]:
    """The paper's long-tailed comparison with TS, at :data:`LT_TS_EPOCHS` epochs (TS needs several
    periods: in 200 epochs tau would only fall from tau_plus to tau_minus); ablation ``<dataset>_ts``."""
    long = {"imbalance_ratio": LT_IMBALANCE_RATIO, "epochs": LT_TS_EPOCHS}
    ablation = f"{dataset}_ts"
    return _on_dataset(
        dataset, LT_TS_LABEL, _baseline("TS"), ablation, period=TS_PERIOD, **long
    ) + _on_dataset(dataset, LT_DYSTRESS_LONG_LABEL, _dystress(*REFERENCE_RANGE), ablation, **long)


_SEEDS_ALL = f"; seeds {', '.join(map(str, SEEDS))}; paper profile only"
_LT_NOTE = (
    f"SimCLR (fixed tau 0.2) and DySTreSS (0.07, 0.2), imbalance ratio {LT_IMBALANCE_RATIO:g}; "
    f"class-averaged 1-NN and 10-NN on the balanced test set; seeds {', '.join(map(str, SEEDS))}"
)
_LT_TS_NOTE = (
    f"TS (tau_plus 1.0, tau_minus 0.1, period {TS_PERIOD}) and DySTreSS (0.07, 0.2) for {LT_TS_EPOCHS} "
    f"epochs (the paper's comparison with TS), imbalance ratio {LT_IMBALANCE_RATIO:g}; class-averaged "
    "1-NN and 10-NN on the balanced test set" + _SEEDS_ALL
)

#: Every ablation at full (paper) size; :func:`plan` takes a profile's subset.
ABLATIONS: dict[str, Ablation] = {
    a.name: a
    for a in (
        Ablation(
            "random_init",
            "Random initialisation",
            "the untrained network (epochs = 0) evaluated like every other run",
            (_random_init(),),
        ),
        Ablation(
            "fixed_tau",
            "Fixed temperature (SimCLR / NT-Xent)",
            "one temperature for every pair: " + ", ".join(f"{t:g}" for t in FIXED_TAUS) + _SEEDS_NOTE,
            _with_seeds(_fixed(t) for t in FIXED_TAUS),
        ),
        Ablation(
            "dystress_grid",
            "DySTreSS (tau_min, tau_max) grid",
            "cosine temperature, tau_min in {"
            + ", ".join(f"{t:g}" for t in GRID_TAU_MIN)
            + "} x tau_max in {"
            + ", ".join(f"{t:g}" for t in GRID_TAU_MAX)
            + "}, tau_min < tau_max"
            + _SEEDS_NOTE,
            _with_seeds(_dystress(lo, hi) for lo in GRID_TAU_MIN for hi in GRID_TAU_MAX if lo < hi),
        ),
        Ablation(
            "shifted",
            "Shifted cosine DySTreSS* (offset, scale)",
            f"(tau_min, tau_max) = {REFERENCE_RANGE}; (offset, scale) in "
            + ", ".join(map(str, SHIFTS))
            + _SEEDS_NOTE,
            _with_seeds(_shifted(o, k) for o, k in SHIFTS),
        ),
        Ablation(
            "forms",
            "Functional forms of tau(s)",
            f"(tau_min, tau_max) = {REFERENCE_RANGE}: " + ", ".join(FORMS),
            tuple(_form(f) for f in FORMS),
        ),
        Ablation(
            "baselines",
            "Baselines with a global temperature",
            "TS (tau_plus 1.0, tau_minus 0.1, period 2 x epochs) and MACL (tau_0 0.1, alpha 0.5, A_0 0)"
            + _SEEDS_NOTE,
            _with_seeds((_baseline("TS"), _baseline("MACL"))),
        ),
        Ablation(
            "rivals",
            "Learned and temperature-free",
            "a learned global tau (CLIP's tau = exp(-t), from 0.1, in [0.01, 1]), iSogCLR's learned tau per "
            "image (rho 0.4, gamma 0.8, beta 0.5, eta 0.03, tau in [0.05, 1]) and the temperature-free "
            "loss (logits 2 artanh(s))" + _SEEDS_NOTE + "; iSogCLR also on CIFAR-10-LT, where its claim "
            "that frequent semantics get a larger tau is testable",
            _with_seeds(_rival(name) for name in ("learned tau", "iSogCLR", "temperature-free"))
            + _isogclr_long_tailed(),
        ),
        Ablation(
            "budget",
            "Training budget",
            f"fixed tau 0.1 and DySTreSS {REFERENCE_RANGE} trained {BUDGET_EPOCHS} epochs instead of the "
            f"profile's, seeds {', '.join(map(str, SEEDS))}; long profile only (its 6-epoch point)",
            _budget(_fixed(0.1)) + _budget(_dystress(*REFERENCE_RANGE)),
        ),
        Ablation(
            "cifar100",
            "CIFAR-100",
            "SimCLR (fixed tau 0.2), MACL and DySTreSS (0.07, 0.2) and (0.1, 0.2) on CIFAR-100" + _SEEDS_ALL,
            _cifar100(),
        ),
        Ablation(
            "cifar10_lt",
            "CIFAR-10-LT",
            "on CIFAR-10-LT: " + _LT_NOTE + "; paper and quick profiles (quick: the whole long-tailed set)",
            _long_tailed("cifar10_lt"),
        ),
        Ablation(
            "cifar100_lt",
            "CIFAR-100-LT",
            "on CIFAR-100-LT: " + _LT_NOTE + "; paper profile only",
            _long_tailed("cifar100_lt"),
        ),
        Ablation(
            "cifar10_lt_ts",
            "CIFAR-10-LT vs TS",
            "on CIFAR-10-LT: " + _LT_TS_NOTE,
            _long_tailed_ts("cifar10_lt"),
        ),
        Ablation(
            "cifar100_lt_ts",
            "CIFAR-100-LT vs TS",
            "on CIFAR-100-LT: " + _LT_TS_NOTE,
            _long_tailed_ts("cifar100_lt"),
        ),
    )
}

#: Ablations of the CPU profiles only (``paper`` runs every point of every other ablation).
CPU_ONLY_ABLATIONS = frozenset({"budget"})

#: Point ids run by each profile (``paper``: every point of every ablation but :data:`CPU_ONLY_ABLATIONS`;
#: CIFAR-100, CIFAR-100-LT and the 2000-epoch comparisons with TS are paper-only).
SUBSETS: dict[str, frozenset[str]] = {
    "smoke": frozenset(
        p.id
        for p in (_random_init(), _fixed(0.1), _fixed(0.5), _dystress(*REFERENCE_RANGE), _shifted(-0.4, 0.7))
    ),
    # every seed of the points that the reproduction compares (SimCLR's tau 0.2, MACL, DySTreSS (0.07,
    # 0.2)) and of the fixed tau that scored best in the first quick build (0.1), one seed of the
    # others: fixed 0.05 and 0.15 on either side of it, so that the sweep brackets its best value, and
    # TS. The cosine form is the grid's (0.07, 0.2) run under another ablation's name (no extra run).
    "quick": frozenset(
        p.id
        for p in (
            _random_init(),
            _fixed(0.05),
            *(_fixed(0.1, s) for s in SEEDS),
            _fixed(0.15),
            *(_fixed(0.2, s) for s in SEEDS),
            _fixed(0.5),
            *(_dystress(*REFERENCE_RANGE, seed=s) for s in SEEDS),
            _dystress(0.1, 0.2),
            _dystress(0.1, 0.5),
            _shifted(-0.4, 0.7),
            _form("cosine"),
            _baseline("TS"),
            *(_baseline("MACL", s) for s in SEEDS),
            # the rival temperatures, one seed each, and iSogCLR's per-image taus on CIFAR-10-LT
            _rival("learned tau"),
            _rival("iSogCLR"),
            _rival("temperature-free"),
            _isogclr_long_tailed()[0],
            # the paper's long-tailed comparison with SimCLR, on CIFAR-10-LT (12,406 images: about the
            # size of the quick subset, so about one quick run each); CIFAR-10 is all the CPU books need
            *_long_tailed("cifar10_lt"),
        )
    ),
    # the core comparison with three paired seeds each, and the same two main methods at 6 epochs (the
    # training-budget point between quick and long); see the profile's docstring in dystress.config
    "long": frozenset(
        p.id
        for p in (
            *(_fixed(0.1, s) for s in SEEDS),
            *(_fixed(0.2, s) for s in SEEDS),
            *(_dystress(*REFERENCE_RANGE, seed=s) for s in SEEDS),
            *(_dystress(0.1, 0.2, seed=s) for s in SEEDS),
            *(_baseline("MACL", s) for s in SEEDS),
            *_budget(_fixed(0.1)),
            *_budget(_dystress(*REFERENCE_RANGE)),
        )
    ),
    "paper": frozenset(
        p.id for a in ABLATIONS.values() if a.name not in CPU_ONLY_ABLATIONS for p in a.points
    ),
}


#: Long-tailed datasets: (training images per class before the long tail, classes).
_LONG_TAILED = {"cifar10_lt": (5000, 10), "cifar100_lt": (500, 100)}


def long_tailed_size(dataset: str, imbalance_ratio: float = LT_IMBALANCE_RATIO) -> int:
    """Training images of long-tailed ``dataset`` (``cifar10_lt`` / ``cifar100_lt``) at
    ``imbalance_ratio``: 12,406 / 10,847 at the study's 0.01."""
    if dataset not in _LONG_TAILED:
        raise ValueError(f"dataset must be one of {sorted(_LONG_TAILED)}, got {dataset!r}")
    from dystress.data.longtail import longtail_counts

    per_class, classes = _LONG_TAILED[dataset]
    return sum(longtail_counts(per_class, classes, imbalance_ratio))


#: Training images of the full CIFAR training sets.
_CIFAR_TRAIN = {"cifar10": 50_000, "cifar100": 50_000}


def training_images(config: PretrainConfig) -> int:
    """Images a run's training sees (epochs x training-set size) from its ``config`` alone: CIFAR sets,
    their subsets and long-tailed versions; 0 for an image folder (its size is on disk)."""
    if config.dataset in _LONG_TAILED:
        size = long_tailed_size(config.dataset, config.imbalance_ratio)
    elif config.dataset in _CIFAR_TRAIN:
        size = _CIFAR_TRAIN[config.dataset]
    else:
        return 0
    if config.train_subset is not None:
        size = min(size, config.train_subset)
    return config.epochs * size


def _profile_point(point: Point, base: PretrainConfig) -> Point:
    """Fill in the parameters that depend on the profile ``base``: the TS period (twice its epochs),
    and, where it trains on a subset (``train_subset``), the whole long-tailed set for a long-tailed
    point (a subset of it would redraw the class profile)."""
    params = point.parameters
    if params.get("temperature") == "ts_schedule" and "period" not in params:
        params["period"] = 2 * base.epochs
    if params.get("dataset") in _LONG_TAILED and base.train_subset is not None:
        params["train_subset"] = long_tailed_size(params["dataset"], params["imbalance_ratio"])
    return point if params == point.parameters else Point(point.ablation, point.label, _freeze(params))


def plan(profile: str) -> list[Point]:
    """The points of ``profile`` in ablation order (a configuration may appear in several ablations).

    Each profile runs its :data:`SUBSETS` (``paper``: every ablation but the CPU-only ones).
    """
    if profile not in PROFILE_NAMES:
        raise ValueError(f"profile must be one of {list(PROFILE_NAMES)}, got {profile!r}")
    from dystress.config import get_profile

    subset = SUBSETS[profile]
    base = get_profile(profile)
    return [
        _profile_point(p, base) for ablation in ABLATIONS.values() for p in ablation.points if p.id in subset
    ]
