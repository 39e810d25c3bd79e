"""Temperature functions: published values, the formulas written out independently, validation."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from dystress.temperature import (
    TEMPERATURE_PARAMETER_NAMES,
    TEMPERATURES,
    ConstantTemperature,
    CosineScheduleTemperature,
    CosineTemperature,
    ExponentialTemperature,
    GlobalTemperature,
    LinearTemperature,
    LogLinearTemperature,
    MACLTemperature,
    OneSidedCosineTemperature,
    ShiftedCosineTemperature,
    TemperatureFunction,
    as_temperature,
    build_temperature,
)

S_GRID = torch.linspace(-1.0, 1.0, 401, dtype=torch.float64)
RANGES = [(0.1, 0.2), (0.07, 0.2), (0.07, 0.1), (0.05, 1.0), (0.2, 0.2)]


# Formulas from STUDY.md, one float at a time, written independently of the library.
def ref_cosine(s: float, lo: float, hi: float) -> float:
    return lo + 0.5 * (hi - lo) * (1 + math.cos(math.pi * (1 + s)))


def ref_shifted(s: float, lo: float, hi: float, ds: float, k: float) -> float:
    if s > -ds:
        return hi
    return lo + 0.5 * (hi - lo) * (1 + math.cos(math.pi * (s + ds) / k))


def ref_one_sided(s: float, lo: float, hi: float, knee: float) -> float:
    if s > -knee:
        return hi
    # cosine ramp: tau_min at s = -1 rising to tau_max at s = -knee
    phase = (s + 1) / (1 - knee)  # 0 at s = -1, 1 at s = -knee
    return lo + (hi - lo) * 0.5 * (1 - math.cos(math.pi * phase))


def check_against(fn: TemperatureFunction, ref, s: torch.Tensor = S_GRID) -> None:
    got = fn(s)
    want = torch.tensor([ref(v) for v in s.tolist()], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("lo,hi", RANGES)
def test_cosine_matches_formula_and_published_values(lo: float, hi: float) -> None:
    fn = CosineTemperature(lo, hi)
    check_against(fn, lambda s: ref_cosine(s, lo, hi))
    values = fn(torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)).tolist()
    assert values == pytest.approx([hi, lo, hi], abs=1e-14)
    # sin^2 form of the abstract
    torch.testing.assert_close(fn(S_GRID), lo + (hi - lo) * torch.sin(math.pi * S_GRID / 2) ** 2)
    # symmetric in s
    torch.testing.assert_close(fn(S_GRID), fn(-S_GRID))


def test_cosine_satisfies_proposition_1() -> None:
    """Slope negative for s < 0, positive for s > 0 (and 0.5 pi (tau_max - tau_min) sin(pi s))."""
    s = S_GRID.clone().requires_grad_()
    CosineTemperature(0.1, 0.2)(s).sum().backward()
    slope = s.grad
    assert (slope[S_GRID < -1e-9][1:] < 0).all() and (slope[S_GRID > 1e-9][:-1] > 0).all()
    torch.testing.assert_close(slope, 0.5 * math.pi * 0.1 * torch.sin(math.pi * S_GRID))


SHIFTS = [(-0.4, 0.7), (0.4, 0.8), (0.0, 0.5), (-0.2, 0.3), (0.1, 1.0)]


@pytest.mark.parametrize("lo,hi", RANGES[:3])
@pytest.mark.parametrize("ds,k", SHIFTS)
def test_shifted_cosine_formula_and_landmarks(lo: float, hi: float, ds: float, k: float) -> None:
    fn = ShiftedCosineTemperature(lo, hi, offset=ds, scale=k)
    check_against(fn, lambda s: ref_shifted(s, lo, hi, ds, k))
    point = torch.tensor([-ds, -ds - 1e-9, -ds + 1e-9, -ds - k, -ds - 2 * k], dtype=torch.float64)
    at_knee, left, right, bottom, again = fn(point).tolist()
    assert at_knee == pytest.approx(hi, abs=1e-12)  # continuous at s = -offset
    assert left == pytest.approx(hi, abs=1e-9) and right == hi
    assert bottom == pytest.approx(lo, abs=1e-12)  # tau_min at s = -offset - scale
    assert again == pytest.approx(hi, abs=1e-12)  # tau_max again at s = -offset - 2 scale


def test_shifted_cosine_best_setting_published_shape() -> None:
    """(ds, k) = (-0.4, 0.7): tau_max at s = -1, tau_min at s = -0.3, tau_max from s = 0.4 up."""
    fn = ShiftedCosineTemperature(0.1, 0.2, -0.4, 0.7)
    values = fn(torch.tensor([-1.0, -0.3, 0.4, 0.7, 1.0], dtype=torch.float64)).tolist()
    assert values == pytest.approx([0.2, 0.1, 0.2, 0.2, 0.2], abs=1e-12)
    # positive offset (the DCL variant, (0.4, 0.8)): rising ramp on [-1, -0.4], constant after
    ramp = ShiftedCosineTemperature(0.1, 0.2, 0.4, 0.8)(torch.linspace(-1.0, -0.4, 50, dtype=torch.float64))
    assert (ramp.diff() > 0).all() and ramp[-1].item() == pytest.approx(0.2)


@pytest.mark.parametrize("lo,hi", RANGES[:3])
@pytest.mark.parametrize("knee", [0.2, 0.0, 0.5, -0.3])
def test_one_sided_cosine(lo: float, hi: float, knee: float) -> None:
    fn = OneSidedCosineTemperature(lo, hi, knee=knee)
    check_against(fn, lambda s: ref_one_sided(s, lo, hi, knee))
    assert fn(torch.tensor(-1.0, dtype=torch.float64)).item() == pytest.approx(lo, abs=1e-12)
    assert fn(torch.tensor(-knee, dtype=torch.float64)).item() == pytest.approx(hi, abs=1e-12)
    ramp = fn(torch.linspace(-1.0, -knee, 60, dtype=torch.float64))
    assert (ramp.diff() >= 0).all()
    # the same function as the shifted cosine with offset = knee, scale = 1 - knee
    torch.testing.assert_close(fn(S_GRID), ShiftedCosineTemperature(lo, hi, knee, 1 - knee)(S_GRID))


@pytest.mark.parametrize("lo,hi", RANGES)
def test_linear_and_log_linear(lo: float, hi: float) -> None:
    check_against(LinearTemperature(lo, hi), lambda s: lo + (hi - lo) * abs(s))
    check_against(LogLinearTemperature(lo, hi), lambda s: lo * (hi / lo) ** abs(s))
    for cls in (LinearTemperature, LogLinearTemperature):
        values = cls(lo, hi)(torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)).tolist()
        assert values == pytest.approx([hi, lo, hi], rel=1e-12)
    # log-linear: geometric mean at |s| = 1/2
    mid = LogLinearTemperature(lo, hi)(torch.tensor(0.5, dtype=torch.float64)).item()
    assert mid == pytest.approx(math.sqrt(lo * hi), rel=1e-12)


def test_exponential_is_the_authors_a_minus_b_exp() -> None:
    a, b, c = 0.2, 0.1, 3.5  # the authors' earlier code
    check_against(ExponentialTemperature(), lambda s: a - b * math.exp(-c * abs(s)))
    check_against(ExponentialTemperature(0.07, 0.2, 2.0), lambda s: 0.2 - 0.13 * math.exp(-2.0 * abs(s)))
    edges = ExponentialTemperature()(torch.tensor([0.0, 1.0], dtype=torch.float64)).tolist()
    assert edges == pytest.approx([0.1, 0.2 - 0.1 * math.exp(-3.5)], rel=1e-12)  # tau_max not reached


@pytest.mark.parametrize("tau_plus,tau_minus,period", [(1.0, 0.1, 400), (0.5, 0.2, 100), (0.3, 0.3, 10)])
def test_ts_schedule(tau_plus: float, tau_minus: float, period: int) -> None:
    fn = CosineScheduleTemperature(tau_plus, tau_minus, period)
    s = torch.randn(3, 4, dtype=torch.float64)
    assert torch.equal(fn(s), torch.full_like(s, tau_plus))  # starts at tau_plus
    for epoch in [0, 1, period // 4, period // 2, period - 1, period, 3 * period // 2]:
        fn.set_epoch(epoch)
        want = tau_minus + 0.5 * (tau_plus - tau_minus) * (1 + math.cos(2 * math.pi * epoch / period))
        assert fn.value == pytest.approx(want, abs=1e-14)
        assert fn(s).unique().tolist() == pytest.approx([want], abs=1e-14)
    fn.set_epoch(period // 2)
    assert fn.value == pytest.approx(tau_minus, abs=1e-14)  # tau_minus at T / 2
    fn.set_epoch(period)
    assert fn.value == pytest.approx(tau_plus, abs=1e-14)
    assert isinstance(fn, GlobalTemperature)  # one tau per batch, not evaluated per pair


@pytest.mark.parametrize("tau_0,alpha,a_0", [(0.1, 0.5, 0.0), (0.2, 1.0, 0.5), (0.05, 0.0, 0.3)])
def test_macl(tau_0: float, alpha: float, a_0: float) -> None:
    """tau_A of the batch statistic A (MACLLoss computes A and the anchor weights: test_losses_macl)."""
    fn = MACLTemperature(tau_0, alpha, a_0)
    assert isinstance(fn, GlobalTemperature)
    a = torch.linspace(0.0, 1.0, 11, dtype=torch.float64)
    torch.testing.assert_close(fn(a), tau_0 * (1 + alpha * (a - a_0)))
    assert fn(torch.tensor(a_0, dtype=torch.float64)).item() == pytest.approx(tau_0)


def test_macl_stays_positive() -> None:
    fn = MACLTemperature(0.1, 1.0, 1.0)  # A - A_0 = -2 at A = -1 would give tau < 0
    assert fn(torch.tensor(-1.0)).item() == pytest.approx(0.1 * 0.01)


@pytest.mark.parametrize("tau", [0.01, 0.1, 0.5, 2])
def test_constant(tau: float) -> None:
    fn = ConstantTemperature(tau)
    s = torch.randn(2, 3, 5)
    assert torch.equal(fn(s), torch.full_like(s, float(tau)))
    assert isinstance(fn, GlobalTemperature)


ALL = [
    ConstantTemperature(0.2),
    CosineTemperature(0.1, 0.2),
    ShiftedCosineTemperature(0.1, 0.2, -0.4, 0.7),
    LinearTemperature(0.1, 0.2),
    ExponentialTemperature(0.1, 0.2),
    LogLinearTemperature(0.1, 0.2),
    OneSidedCosineTemperature(0.1, 0.2, 0.2),
    CosineScheduleTemperature(1.0, 0.1, 400),
    MACLTemperature(0.1, 0.5, 0.0),
]


@pytest.mark.parametrize("fn", ALL, ids=lambda f: type(f).__name__)
@pytest.mark.parametrize("shape", [(), (7,), (3, 4, 5)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_shape_dtype_device_preserved(fn: TemperatureFunction, shape: tuple, dtype: torch.dtype) -> None:
    s = (torch.rand(shape) * 2 - 1).to(dtype)
    tau = fn(s)
    assert tau.shape == s.shape and tau.dtype == dtype and tau.device == s.device
    assert (tau > 0).all()


@pytest.mark.parametrize("fn", ALL, ids=lambda f: type(f).__name__)
def test_input_not_modified(fn: TemperatureFunction) -> None:
    s = torch.rand(50, dtype=torch.float64) * 2 - 1
    before = s.clone()
    fn(s)
    assert torch.equal(s, before)


@pytest.mark.parametrize("fn", ALL, ids=lambda f: type(f).__name__)
def test_registry_round_trip_and_repr(fn: TemperatureFunction) -> None:
    name = next(k for k, v in TEMPERATURES.items() if v is type(fn))
    rebuilt = build_temperature(name, **fn.params())
    assert type(rebuilt) is type(fn) and rebuilt.params() == fn.params()
    s = torch.linspace(-1, 1, 21)
    assert torch.equal(rebuilt(s), fn(s))
    text = repr(fn)
    assert text.startswith(type(fn).__name__ + "(") and all(f"{k}=" in text for k in fn.params())


def test_registry_names() -> None:
    assert set(TEMPERATURES) == {
        "constant",
        "cosine",
        "shifted_cosine",
        "linear",
        "exponential",
        "log_linear",
        "one_sided_cosine",
        "ts_schedule",
        "macl",
        "learned",
        "isogclr",
        "free",
    }
    pairwise = [not isinstance(f, GlobalTemperature) for f in ALL]
    assert pairwise == [False, True, True, True, True, True, True, False, False]


def test_parameter_names_are_every_registered_functions_parameters() -> None:
    """The one list of temperature parameter names (configs and notebooks take them from here)."""
    assert TEMPERATURE_PARAMETER_NAMES == (
        "a_0",
        "alpha",
        "beta",
        "eps",
        "eta",
        "gamma",
        "grad_clip",
        "knee",
        "offset",
        "period",
        "rate",
        "rho",
        "scale",
        "tau",
        "tau_0",
        "tau_init",
        "tau_max",
        "tau_min",
        "tau_minus",
        "tau_plus",
    )
    assert set(TEMPERATURE_PARAMETER_NAMES) == {k for cls in TEMPERATURES.values() for k in cls().params()}


def test_temperature_functions_compute_tau_only() -> None:
    """No loss behaviour on a temperature function: MACL's statistic and weights are MACLLoss's."""
    for name in ("pairwise", "needs_positive_statistics", "from_positive_similarity", "anchor_weights"):
        assert not any(hasattr(cls, name) for cls in (TemperatureFunction, *TEMPERATURES.values())), name


def test_build_temperature_errors() -> None:
    with pytest.raises(ValueError, match="unknown temperature.*'cosine'.*'macl'"):
        build_temperature("cosin")
    known = re.escape(str(sorted(TEMPERATURES)))
    for bad in (["cosine"], None, 3, {"cosine": 1}):  # unhashable or not a string: listed, not a TypeError
        with pytest.raises(
            ValueError, match=rf"^unknown temperature function {re.escape(repr(bad))}; known: {known}$"
        ):
            build_temperature(bad)
    with pytest.raises(ValueError, match=r"unknown parameters \['tau_mx'\]"):
        build_temperature("cosine", tau_min=0.1, tau_mx=0.2)
    with pytest.raises(ValueError, match="tau_max"):
        build_temperature("cosine", tau_min=0.3, tau_max=0.2)


def test_as_temperature() -> None:
    fn = CosineTemperature()
    assert as_temperature(fn) is fn
    assert isinstance(as_temperature(0.3), ConstantTemperature) and as_temperature(0.3).tau == 0.3
    assert as_temperature(1).tau == 1.0
    for bad in ["0.1", None, True, torch.tensor(0.1), [0.1]]:
        with pytest.raises(ValueError, match="temperature"):
            as_temperature(bad)
    with pytest.raises(ValueError, match="tau must be > 0"):
        as_temperature(0.0)
    # NumPy reals are numbers (as_real): kept as plain Python floats
    for value, want in ((np.float64(0.3), 0.3), (np.float32(0.25), 0.25), (np.int64(2), 2.0)):
        tau = as_temperature(value).tau
        assert type(tau) is float and tau == want


def test_as_temperature_rejects_tensors_with_a_hint() -> None:
    """A 0-dim tensor is not converted (host sync, and a learnable tau would lose its gradient)."""
    for bad in (torch.tensor(0.2), torch.tensor(0.2, requires_grad=True), torch.tensor([0.2])):
        with pytest.raises(
            ValueError,
            match=re.escape(
                "temperature must be a positive number or a TemperatureFunction, got a Tensor "
                "(not converted: pass float(t) for a fixed tau)"
            ),
        ):
            as_temperature(bad)
    assert as_temperature(float(torch.tensor(0.25))).tau == 0.25


@pytest.mark.parametrize("fn", ALL, ids=lambda f: type(f).__name__)
@pytest.mark.parametrize(
    "bad,what",
    [
        (torch.tensor([0, 1]), "a torch.int64 tensor"),
        (torch.tensor([-1, 0, 1], dtype=torch.int32), "a torch.int32 tensor"),
        (torch.tensor([True, False]), "a torch.bool tensor"),
        (torch.tensor([0.5 + 0.0j]), "a torch.complex64 tensor"),
        (0.5, "float"),
        (1, "int"),
        ([0.0, 0.5], "list"),
        (np.array([0.0, 0.5]), "ndarray"),
        (None, "NoneType"),
    ],
)
def test_call_requires_a_floating_point_tensor(fn: TemperatureFunction, bad, what: str) -> None:
    message = f"s must be a floating-point torch.Tensor of cosine similarities, got {what}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        fn(bad)


def test_integer_similarities_are_rejected_not_truncated() -> None:
    """The reported bug: ConstantTemperature(0.5)(tensor([0, 1])) gave tensor([0, 0])."""
    fn = ConstantTemperature(0.5)
    with pytest.raises(ValueError, match="got a torch.int64 tensor"):
        fn(torch.tensor([0, 1]))
    assert fn(torch.tensor([0.0, 1.0])).tolist() == [0.5, 0.5]
    cosine = CosineTemperature(0.1, 0.2)(torch.tensor([0.0, 1.0], dtype=torch.float64)).tolist()
    assert cosine == pytest.approx([0.1, 0.2], abs=1e-15)


def test_subclasses_implement_the_tau_hook() -> None:
    class Doubling(TemperatureFunction):
        def _tau(self, s: torch.Tensor) -> torch.Tensor:
            return s.abs() * 2 + 0.1

        def params(self) -> dict[str, float]:
            return {}

    fn = Doubling()
    s = torch.tensor([-0.5, 0.0, 0.25], dtype=torch.float64)
    assert fn(s).tolist() == [1.1, 0.1, 0.6]
    with pytest.raises(ValueError, match="^s must be a floating-point"):
        fn(torch.tensor([1]))

    class NoHook(TemperatureFunction):
        def params(self) -> dict[str, float]:
            return {}

    with pytest.raises(NotImplementedError, match=r"NoHook must implement _tau\(s\) \(or __call__\(s\)\)"):
        NoHook()(torch.zeros(3))  # built (old-style subclasses define __call__ instead), fails when called


@pytest.mark.parametrize("fn", ALL, ids=lambda f: type(f).__name__)
def test_call_compiles_in_one_graph(fn: TemperatureFunction) -> None:
    """The input check reads types and dtypes only: no host sync, no graph break (fullgraph)."""
    torch._dynamo.reset()  # one code object (__call__) for every function: start each from a clean cache
    compiled = torch.compile(fn.__call__, backend="eager", fullgraph=True)
    s = torch.linspace(-1, 1, 21)
    assert torch.equal(compiled(s), fn(s))


def test_set_epoch_is_a_noop_for_the_others() -> None:
    fn = CosineTemperature()
    s = torch.linspace(-1, 1, 11)
    before = fn(s)
    fn.set_epoch(10)
    assert torch.equal(fn(s), before)


@pytest.mark.parametrize(
    "factory,kwargs,param",
    [
        (ConstantTemperature, {"tau": 0.0}, "tau"),
        (ConstantTemperature, {"tau": -0.1}, "tau"),
        (ConstantTemperature, {"tau": float("nan")}, "tau"),
        (ConstantTemperature, {"tau": float("inf")}, "tau"),
        (ConstantTemperature, {"tau": "0.1"}, "tau"),
        (CosineTemperature, {"tau_min": 0.0, "tau_max": 0.2}, "tau_min"),
        (CosineTemperature, {"tau_min": 0.3, "tau_max": 0.2}, "tau_max"),
        (CosineTemperature, {"tau_min": 0.1, "tau_max": None}, "tau_max"),
        (LinearTemperature, {"tau_min": -1.0, "tau_max": 0.2}, "tau_min"),
        (ExponentialTemperature, {"tau_min": 0.2, "tau_max": 0.1}, "tau_max"),
        (ExponentialTemperature, {"rate": 0.0}, "rate"),
        (LogLinearTemperature, {"tau_min": 0.2, "tau_max": 0.1}, "tau_max"),
        (ShiftedCosineTemperature, {"scale": 0.0}, "scale"),
        (ShiftedCosineTemperature, {"scale": -0.7}, "scale"),
        (ShiftedCosineTemperature, {"offset": 1.5}, "offset"),
        (ShiftedCosineTemperature, {"tau_min": 0.0}, "tau_min"),
        (OneSidedCosineTemperature, {"knee": 1.0}, "knee"),
        (OneSidedCosineTemperature, {"knee": -1.5}, "knee"),
        (OneSidedCosineTemperature, {"tau_max": 0.05}, "tau_max"),
        (CosineScheduleTemperature, {"tau_minus": 0.0}, "tau_minus"),
        (CosineScheduleTemperature, {"tau_plus": 0.05}, "tau_plus"),
        (CosineScheduleTemperature, {"period": 0}, "period"),
        (MACLTemperature, {"tau_0": 0.0}, "tau_0"),
        (MACLTemperature, {"alpha": 1.5}, "alpha"),
        (MACLTemperature, {"alpha": -0.1}, "alpha"),
        (MACLTemperature, {"a_0": 2.0}, "a_0"),
    ],
)
def test_invalid_parameters(factory, kwargs: dict, param: str) -> None:
    with pytest.raises(ValueError, match=param):
        factory(**kwargs)


@pytest.mark.parametrize("epoch", [-1, 1.5, True, "3"])
def test_ts_set_epoch_validates(epoch) -> None:
    with pytest.raises(ValueError, match="epoch"):
        CosineScheduleTemperature().set_epoch(epoch)


@pytest.mark.parametrize(
    "epoch",
    [
        100,
        np.int64(100),
        np.int32(100),
        np.array(100),
        torch.tensor(100),
        torch.tensor(100, dtype=torch.int32),
    ],
    ids=["int", "np.int64", "np.int32", "np.array-0d", "tensor-int64", "tensor-int8"],
)
def test_ts_set_epoch_accepts_any_integer(epoch) -> None:
    fn = CosineScheduleTemperature(1.0, 0.1, 400)
    fn.set_epoch(epoch)
    assert type(fn.epoch) is int and fn.epoch == 100
    assert fn.value == pytest.approx(
        0.1 + 0.45 * (1 + math.cos(math.pi / 2)), abs=1e-15
    )  # t = T / 4: midpoint


INTEGER_ONLY = "epoch must be an integer >= 0 (int, NumPy integer or 0-dim integer tensor), got "


@pytest.mark.parametrize(
    "epoch,message",
    [
        (-1, "epoch must be >= 0, got -1"),
        (np.int64(-3), "epoch must be >= 0, got -3"),
        (torch.tensor(-2), "epoch must be >= 0, got -2"),
        (1.5, INTEGER_ONLY + "1.5"),
        (2.0, INTEGER_ONLY + "2.0"),
        (True, INTEGER_ONLY + "True"),
        ("3", INTEGER_ONLY + "'3'"),
        (None, INTEGER_ONLY + "None"),
        (torch.tensor(3.0), INTEGER_ONLY + "a torch.float32 tensor of shape ()"),
        (torch.tensor([3]), INTEGER_ONLY + "a torch.int64 tensor of shape (1,)"),
        (torch.tensor(True), INTEGER_ONLY + "a torch.bool tensor of shape ()"),
    ],
)
@pytest.mark.parametrize("fn", [CosineScheduleTemperature(), CosineTemperature()], ids=["ts", "cosine"])
def test_set_epoch_rejects_non_integers_by_name(epoch, message: str, fn: TemperatureFunction) -> None:
    """Every temperature checks the epoch, the TS schedule and the no-op ones alike; state is kept."""
    before = fn(torch.linspace(-1, 1, 5))
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        fn.set_epoch(epoch)
    assert torch.equal(fn(torch.linspace(-1, 1, 5)), before)


def test_a_subclass_written_for_the_call_contract_keeps_working() -> None:
    """Before `_tau`, subclasses implemented `__call__`: such a class still builds and works in a loss."""
    from dystress.losses import InfoNCELoss
    from dystress.temperature import TemperatureFunction

    class Flat(TemperatureFunction):
        def __call__(self, s: torch.Tensor) -> torch.Tensor:
            return torch.full_like(s, 0.3)

        def params(self) -> dict[str, float]:
            return {"tau": 0.3}

    z0, z1 = torch.randn(6, 8, dtype=torch.float64), torch.randn(6, 8, dtype=torch.float64)
    reference = InfoNCELoss(0.3)(z0, z1)
    assert torch.equal(InfoNCELoss(Flat())(z0, z1), reference)
