"""The other answers to "which temperature?": a learned global tau, iSogCLR's per-sample taus and the
temperature-free loss, each against a float64 loop written here from the papers' formulas."""

from __future__ import annotations

import math
import re

import pytest
import torch

from dystress.config import get_profile
from dystress.losses import InfoNCELoss, ISogCLRLoss, TemperatureFreeLoss, build_loss
from dystress.losses.functional import free_infonce, infonce, isogclr
from dystress.losses.isogclr import SampleState
from dystress.optim import build_optimizer, set_lr
from dystress.regime import RegimeTracker
from dystress.temperature import (
    FreeTemperature,
    ISogCLRTemperature,
    LearnedTemperature,
    build_temperature,
)

N, D = 5, 7


def pair(seed: int = 0, dtype: torch.dtype = torch.float64, n: int = N) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z0 = torch.randn(n, D, generator=g, dtype=dtype)
    return z0, z0 + 0.7 * torch.randn(n, D, generator=g, dtype=dtype)


def unit_rows(z0: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
    z = torch.cat([z0, z1])
    return z / z.norm(dim=1, keepdim=True)


def positive_of(i: int, n: int) -> int:
    return (i + n) % (2 * n)


# ---------------------------------------------------------------------------------- temperature-free
def free_reference(z0: torch.Tensor, z1: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """-log of the positive's softmax share with logits log((1 + s) / (1 - s)), anchor by anchor."""
    z, n = unit_rows(z0, z1), z0.shape[0]

    def log_odds(s: torch.Tensor) -> torch.Tensor:
        s = s.clamp(-1 + eps, 1 - eps)
        return torch.log((1 + s) / (1 - s))

    losses = []
    for i in range(2 * n):
        others = torch.stack([log_odds(z[i] @ z[k]) for k in range(2 * n) if k != i])
        losses.append(torch.logsumexp(others, 0) - log_odds(z[i] @ z[positive_of(i, n)]))
    return torch.stack(losses).mean()


def test_free_loss_and_gradients_equal_the_loop() -> None:
    z0, z1 = (z.requires_grad_() for z in pair())
    loss = TemperatureFreeLoss()(z0, z1)
    g0, g1 = torch.autograd.grad(loss, (z0, z1))
    ref = free_reference(z0, z1)
    r0, r1 = torch.autograd.grad(ref, (z0, z1))
    assert loss.item() == pytest.approx(ref.item(), rel=1e-12)
    torch.testing.assert_close(g0, r0, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g1, r1, rtol=1e-10, atol=1e-12)


def test_free_loss_passes_gradcheck() -> None:
    z0, z1 = (z.requires_grad_() for z in pair(1, n=3))
    assert torch.autograd.gradcheck(lambda a, b: free_infonce(a, b)[0], (z0, z1))


def test_free_logit_is_infonce_with_the_temperature_s_over_2_artanh_s() -> None:
    """The known identity: s / tau(s) with tau(s) = s / (2 artanh s), differentiated through tau."""
    mapping = FreeTemperature()
    s = torch.linspace(-0.999, 0.999, 101, dtype=torch.float64)
    torch.testing.assert_close(s / mapping(s), torch.log((1 + s) / (1 - s)), rtol=1e-9, atol=1e-12)
    assert mapping(torch.zeros(1, dtype=torch.float64)).item() == 0.5
    z0, z1 = pair(2)
    as_pairwise = infonce(z0, z1, _PairwiseFree(), detach_temperature=False)[0]
    assert as_pairwise.item() == pytest.approx(free_infonce(z0, z1)[0].item(), rel=1e-9)


class _PairwiseFree(FreeTemperature):
    """The same tau(s) as a plain pairwise function (not the loss-of-its-own marker)."""


def test_free_loss_diagnostics_give_the_equivalent_temperatures() -> None:
    z0, z1 = pair(3)
    criterion = TemperatureFreeLoss()
    criterion(z0, z1)
    z, n = unit_rows(z0, z1), N
    s_pos = torch.stack([z[i] @ z[positive_of(i, n)] for i in range(2 * n)])
    tau_pos = (s_pos / (2 * torch.atanh(s_pos))).mean()
    assert criterion.diagnostics["tau_pos"].item() == pytest.approx(tau_pos.item(), rel=1e-9)
    s_neg = torch.stack(
        [z[i] @ z[k] for i in range(2 * n) for k in range(2 * n) if k not in (i, positive_of(i, n))]
    )
    tau_neg = (s_neg / (2 * torch.atanh(s_neg))).mean()
    assert criterion.diagnostics["tau_neg"].item() == pytest.approx(tau_neg.item(), rel=1e-9)


# ---------------------------------------------------------------------------------- learned global tau
def infonce_reference(z0: torch.Tensor, z1: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    z, n = unit_rows(z0, z1), z0.shape[0]
    losses = []
    for i in range(2 * n):
        others = torch.stack([z[i] @ z[k] / tau for k in range(2 * n) if k != i])
        losses.append(torch.logsumexp(others, 0) - z[i] @ z[positive_of(i, n)] / tau)
    return torch.stack(losses).mean()


def test_learned_temperature_loss_and_its_gradient_equal_the_loop() -> None:
    criterion = InfoNCELoss(LearnedTemperature(tau_init=0.15, tau_min=0.01, tau_max=1.0)).double()
    z0, z1 = (z.requires_grad_() for z in pair(4))
    loss = criterion(z0, z1)
    t = criterion.temperature.log_inverse_tau
    g0, gt = torch.autograd.grad(loss, (z0, t))
    t_ref = t.detach().clone().requires_grad_()  # log(1 / 0.15), as stored (float32, widened)
    ref = infonce_reference(z0, z1, torch.exp(-t_ref))
    r0, rt = torch.autograd.grad(ref, (z0, t_ref))
    assert loss.item() == pytest.approx(ref.item(), rel=1e-12)
    torch.testing.assert_close(g0, r0, rtol=1e-10, atol=1e-12)
    assert gt.item() == pytest.approx(rt.item(), rel=1e-10)
    assert criterion.record() == {"tau_learned": pytest.approx(0.15, rel=1e-6)}


def test_learned_temperature_passes_gradcheck() -> None:
    tau = LearnedTemperature(tau_init=0.3).double()
    z0, z1 = (z.requires_grad_() for z in pair(5, n=3))

    def loss(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            tau.log_inverse_tau.copy_(t)
        return infonce(a, b, _Wired(tau, t))[0]

    t = tau.log_inverse_tau.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(loss, (z0, z1, t))


class _Wired(LearnedTemperature):
    """A LearnedTemperature whose tau is exp(-t) of an outside tensor t (so gradcheck can perturb t)."""

    def __init__(self, template: LearnedTemperature, t: torch.Tensor) -> None:
        super().__init__(template.tau_init, template.tau_min, template.tau_max)
        self.outside = t

    def _tau(self, s: torch.Tensor) -> torch.Tensor:
        return torch.exp(-self.outside.clamp(*self.bounds)).expand(s.shape)


def test_learned_temperature_trains_in_its_own_group_and_is_clamped_after_each_step() -> None:
    config = get_profile("smoke").with_overrides(["lr=0.5", "temperature_lr=0.05", "weight_decay=0.1"])
    model = torch.nn.Linear(3, 2)
    criterion = build_loss("infonce", LearnedTemperature(tau_init=0.1, tau_min=0.05, tau_max=0.2))
    optimizer = build_optimizer(model, config, criterion)
    group = optimizer.param_groups[-1]
    assert group["params"] == [criterion.temperature.log_inverse_tau]
    assert group["weight_decay"] == 0.0 and group["lr_scale"] == pytest.approx(0.1)
    set_lr(optimizer, 0.2)
    assert optimizer.param_groups[0]["lr"] == 0.2 and group["lr"] == pytest.approx(0.02)
    criterion.temperature.log_inverse_tau.grad = torch.tensor(-1e4)  # a step far past 1 / tau_min
    optimizer.step()
    assert criterion.temperature.log_inverse_tau.item() == pytest.approx(-math.log(0.05))
    criterion.temperature.log_inverse_tau.grad = torch.tensor(1e5)  # it leaves the bound, to the other
    optimizer.step()
    assert criterion.temperature.value.item() == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"tau_init": 0.5, "tau_max": 0.2}, "tau_init must be in [tau_min, tau_max] = [0.01, 0.2], got 0.5"),
        ({"tau_min": 0.0}, "tau_min must be > 0, got 0.0"),
        ({"tau_min": 0.3, "tau_max": 0.2}, "tau_max must be >= tau_min = 0.3, got 0.2"),
    ],
)
def test_learned_temperature_rejects_bad_settings(params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        LearnedTemperature(**params)


# ---------------------------------------------------------------------------------- iSogCLR
def isogclr_reference(
    z0: torch.Tensor,
    z1: torch.Tensor,
    tau: list[float],
    u: list[float | None],
    m: list[float],
    s: ISogCLRTemperature,
) -> tuple[torch.Tensor, list[float], list[float], list[float], list[float]]:
    """One iSogCLR step written from the paper's algorithm, anchor by anchor, u in linear scale
    (None: not visited). Returns the loss and each image's next tau, u and momentum, and its mean
    similarity to its negatives."""
    z, n = unit_rows(z0, z1), z0.shape[0]
    surrogate, u_rows, g_rows, mean_rows = [], [], [], []
    for i in range(2 * n):
        j, p = i % n, positive_of(i, n)
        sims = [z[i] @ z[k] for k in range(2 * n) if k not in (i, p)]
        e = [math.exp(x.item() / tau[j]) for x in sims]
        g = sum(e) / len(sims)
        u_i = g if u[j] is None else (1 - s.gamma) * u[j] + s.gamma * g
        w = [ek / u_i for ek in e]
        surrogate.append(sum(wk * x for wk, x in zip(w, sims, strict=True)) / len(sims) - z[i] @ z[p])
        u_rows.append(u_i)
        mean_rows.append(sum(x.item() for x in sims) / len(sims))
        g_rows.append(
            math.log(u_i)
            + s.rho
            - sum(wk * x.item() / tau[j] for wk, x in zip(w, sims, strict=True)) / len(sims)
        )
    new_tau, new_u, new_m = [], [], []

    for j in range(n):
        grad = min(max((g_rows[j] + g_rows[j + n]) / 2, -s.grad_clip), s.grad_clip)
        new_m.append((1 - s.beta) * m[j] + s.beta * grad)
        new_tau.append(min(max(tau[j] - s.eta * new_m[-1], s.tau_min), s.tau_max))
        new_u.append((u_rows[j] + u_rows[j + n]) / 2)
    mean_similarity = [(mean_rows[j] + mean_rows[j + n]) / 2 for j in range(n)]
    return torch.stack(surrogate).mean(), new_tau, new_u, new_m, mean_similarity


def test_isogclr_two_steps_equal_the_loop() -> None:
    settings = ISogCLRTemperature(tau_init=0.1, rho=0.4, gamma=0.8, beta=0.5, eta=0.03)
    criterion = ISogCLRLoss(num_samples=9, **settings.params()).double()
    index = torch.tensor([7, 0, 3, 8, 4])
    tau, u, m = criterion.tau[index].tolist(), [None] * N, [0.0] * N  # 0.1 as stored (float32, widened)
    for step in range(2):
        z0, z1 = (z.requires_grad_() for z in pair(10 + step))
        loss = criterion(z0, z1, index)
        g0, g1 = torch.autograd.grad(loss, (z0, z1))
        ref, tau, u, m, similarity = isogclr_reference(z0, z1, tau, u, m, settings)
        r0, r1 = torch.autograd.grad(ref, (z0, z1))
        assert loss.item() == pytest.approx(ref.item(), rel=1e-10, abs=1e-12), step
        torch.testing.assert_close(g0, r0, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(g1, r1, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(
            criterion.tau[index], torch.tensor(tau, dtype=torch.float64), rtol=1e-10, atol=0
        )
        torch.testing.assert_close(
            criterion.log_u[index].exp(), torch.tensor(u, dtype=torch.float64), rtol=1e-10, atol=0
        )
        torch.testing.assert_close(
            criterion.tau_momentum[index], torch.tensor(m, dtype=torch.float64), rtol=1e-9, atol=1e-12
        )
    untouched = torch.tensor([1, 2, 5, 6])
    start = torch.tensor(0.1, dtype=torch.float32).double()
    assert (criterion.tau[untouched] == start).all() and torch.isneginf(criterion.log_u[untouched]).all()
    assert (criterion.tau[index] != start).all()


def dro_objective(z0: torch.Tensor, z1: torch.Tensor, tau: torch.Tensor, rho: float) -> torch.Tensor:
    """mean_i [tau_i log mean_k exp(s_ik / tau_i) + tau_i rho - s_ip]: iSogCLR's objective with the
    batch's own estimate of g_i (an image's first visit), tau [n] shared by its two views."""
    z, n = unit_rows(z0, z1), z0.shape[0]
    rows = []
    for i in range(2 * n):
        t = tau[i % n]
        sims = torch.stack([z[i] @ z[k] for k in range(2 * n) if k not in (i, positive_of(i, n))])
        rows.append(
            t * (torch.logsumexp(sims / t, 0) - math.log(len(sims))) + t * rho - z[i] @ z[positive_of(i, n)]
        )
    return torch.stack(rows).mean()


def test_isogclr_first_visit_gradients_are_the_dro_objectives() -> None:
    """With u = g (first visit), the surrogate's gradient is the DRO objective's, checked against
    central differences, and the stored momentum is beta x its tau-gradient (averaged over the views)."""
    settings = ISogCLRTemperature(tau_init=0.2, rho=0.4, beta=0.5, eta=0.03, grad_clip=100.0)
    tau = torch.tensor([0.2, 0.3, 0.15], dtype=torch.float64)
    state = SampleState(
        tau, torch.full((3,), -math.inf, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    )
    z0, z1 = (z.requires_grad_() for z in pair(6, n=3))
    loss, new, _ = isogclr(z0, z1, state, settings)
    g0, g1 = torch.autograd.grad(loss, (z0, z1))
    h = 1e-6
    for z, g in ((z0, g0), (z1, g1)):
        for idx in [(0, 0), (1, 3), (2, 6)]:
            with torch.no_grad():
                z[idx] += h
                up = dro_objective(z0, z1, tau, settings.rho)
                z[idx] -= 2 * h
                down = dro_objective(z0, z1, tau, settings.rho)
                z[idx] += h
            assert g[idx].item() == pytest.approx(((up - down) / (2 * h)).item(), rel=1e-6, abs=1e-9)
    t = tau.clone().requires_grad_()
    # d/dtau_i of the objective: each image's two rows, each weighted 1 / (2n) in the mean
    (grad_tau,) = torch.autograd.grad(dro_objective(z0.detach(), z1.detach(), t, settings.rho), t)
    torch.testing.assert_close(new.momentum / settings.beta, grad_tau * 3, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(new.tau, tau - settings.eta * new.momentum, rtol=1e-12, atol=0)


def test_isogclr_state_is_in_the_state_dict_and_survives_a_reload() -> None:
    a = ISogCLRLoss(num_samples=6)
    z0, z1 = pair(7, torch.float32, n=4)
    a(z0, z1, torch.tensor([0, 1, 2, 3]))
    b = ISogCLRLoss(num_samples=6)
    b.load_state_dict(a.state_dict())
    assert sorted(a.state_dict()) == ["log_u", "mean_similarity", "tau", "tau_momentum"]
    for x in (a, b):
        loss = x(z1, z0, torch.tensor([2, 3, 4, 5]))
        assert loss.isfinite()
    assert torch.equal(a.tau, b.tau) and torch.equal(a.log_u, b.log_u)


def test_isogclr_record_gives_quantiles_and_class_means_of_visited_images() -> None:
    criterion = ISogCLRLoss(num_samples=6)
    with torch.no_grad():
        criterion.tau.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4, 0.9, 0.9]))
        criterion.log_u[:4] = 0.0  # images 4 and 5 not visited
        criterion.mean_similarity.copy_(torch.tensor([0.4, 0.3, 0.2, 0.1, 0.0, 0.0]))
    record = criterion.record(torch.tensor([0, 0, 1, 1, 2, 2]))
    assert record["tau_sample_q50"] == pytest.approx(0.25)
    # 4 visited images in 10 equal-count bins: one image a bin, by rising similarity
    assert record["tau_by_similarity"] == [
        [pytest.approx(s), pytest.approx(t), 1] for s, t in ((0.1, 0.4), (0.2, 0.3), (0.3, 0.2), (0.4, 0.1))
    ]
    assert record["tau_sample_class_mean"] == [pytest.approx(0.15), pytest.approx(0.35), None]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda c, z: c(z, z, torch.arange(4.0)),
            "index must be an int64 tensor [n] of training-set indices",
        ),
        (lambda c, z: c(z, z, torch.arange(3)), "index must have one entry per row of z0 (4), got 3"),
        (lambda c, z: c(z, z, [0, 1, 2, 3]), "index must be an int64 tensor [n]"),
    ],
)
def test_isogclr_rejects_bad_indices(call, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        call(ISogCLRLoss(num_samples=10), torch.randn(4, 3))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"gamma": 0.0}, "gamma must be in (0, 1], got 0.0"),
        ({"beta": 1.5}, "beta must be in (0, 1], got 1.5"),
        ({"rho": -1.0}, "rho must be > 0, got -1.0"),
        ({"tau_init": 2.0}, "tau_init must be in [tau_min, tau_max] = [0.05, 1.0], got 2.0"),
        ({"eta": float("nan")}, "eta must be a finite real number"),
    ],
)
def test_isogclr_settings_are_checked(params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        ISogCLRTemperature(**params)


# ---------------------------------------------------------------------------------- shared behaviour
def _learned() -> torch.nn.Module:
    return InfoNCELoss(LearnedTemperature(tau_init=0.02, tau_min=0.01))


def _isogclr() -> torch.nn.Module:
    return ISogCLRLoss(num_samples=8, tau_init=0.01, tau_min=0.005)


@pytest.mark.parametrize(
    "make", [_learned, _isogclr, TemperatureFreeLoss], ids=["learned", "isogclr", "free"]
)
def test_bf16_autocast_at_small_temperatures_runs_in_float32(make) -> None:
    """Under bf16 autocast the loss is the float32 loss of the same bf16 projections, and finite."""
    z0, z1 = (z.bfloat16() for z in pair(8, torch.float32, n=8))
    extra = (torch.arange(8),) if make is _isogclr else ()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = make()(z0, z1, *extra)
    expected = make()(z0.float(), z1.float(), *extra)
    assert got.dtype == torch.float32 and got.isfinite()
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_build_loss_gives_each_method_its_loss_and_refuses_the_wrong_pairings() -> None:
    assert isinstance(build_loss("infonce", build_temperature("free")), TemperatureFreeLoss)
    learned = build_loss("dcl", build_temperature("learned", tau_init=0.2))
    assert [n for n, _ in learned.named_parameters()] == ["temperature.log_inverse_tau"]
    isog = build_loss("infonce", build_temperature("isogclr", rho=0.3), num_samples=10)
    assert isinstance(isog, ISogCLRLoss) and isog.temperature.rho == 0.3 and isog.tau.shape == (10,)
    with pytest.raises(ValueError, match=re.escape("num_samples (the training set's size) is required")):
        build_loss("infonce", build_temperature("isogclr"))
    with pytest.raises(ValueError, match="loss must be infonce with temperature isogclr "):
        build_loss("dclw", build_temperature("isogclr"), num_samples=10)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "replaces s / tau by the logit 2 artanh(s), differentiated through the mapping, which InfoNCE "
            "does not; use TemperatureFreeLoss(eps=1e-06)"
        ),
    ):
        InfoNCELoss(FreeTemperature())


def test_regime_reports_no_raised_share_for_learned_per_sample_and_free_taus() -> None:
    for temperature in (LearnedTemperature(), ISogCLRTemperature(), FreeTemperature()):
        tracker = RegimeTracker(temperature, "cpu")
        assert tracker.threshold is None, temperature


def test_config_checks_the_new_temperatures_and_temperature_lr() -> None:
    base = get_profile("smoke")
    assert (
        base.with_overrides(["temperature=isogclr", "temperature_params={rho: 0.3}"]).build_temperature().rho
        == 0.3
    )
    with pytest.raises(
        ValueError, match=re.escape("temperature_lr must be null or a finite number > 0, got -1")
    ):
        base.with_overrides(["temperature_lr=-1"]).validate()
    with pytest.raises(ValueError, match="gamma must be in"):
        base.with_overrides(["temperature=isogclr", "temperature_params={gamma: 2}"]).validate()
    # a field added later keeps the run ids of the configs that leave it at its default
    assert "temperature_lr" not in base.identity()
