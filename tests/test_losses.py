"""Contrastive losses against brute-force float64 references, identities, gradients and numerics."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import numpy as np
import pytest
import torch

from dystress.losses import LOSSES, DCLLoss, InfoNCELoss, MACLLoss, QueueInfoNCELoss, build_loss
from dystress.temperature import (
    ConstantTemperature,
    CosineScheduleTemperature,
    CosineTemperature,
    ExponentialTemperature,
    LinearTemperature,
    LogLinearTemperature,
    MACLTemperature,
    OneSidedCosineTemperature,
    ShiftedCosineTemperature,
    TemperatureFunction,
)

TauRef = Callable[[float], float]


# ---- the temperature formulas, one float at a time (STUDY.md), independent of the library ----
def cos_ref(lo: float, hi: float) -> TauRef:
    return lambda s: lo + 0.5 * (hi - lo) * (1 + math.cos(math.pi * (1 + s)))


def shifted_ref(lo: float, hi: float, ds: float, k: float) -> TauRef:
    return lambda s: hi if s > -ds else lo + 0.5 * (hi - lo) * (1 + math.cos(math.pi * (s + ds) / k))


def ts_ref(plus: float, minus: float, period: float, epoch: int) -> TauRef:
    value = minus + 0.5 * (plus - minus) * (1 + math.cos(2 * math.pi * epoch / period))
    return lambda s: value


def _ts(epoch: int) -> TemperatureFunction:
    fn = CosineScheduleTemperature(1.0, 0.1, 400)
    fn.set_epoch(epoch)
    return fn


# id -> (factory, reference tau(s)); MACL is a loss of its own (MACLLoss: tests/test_losses_macl.py).
TEMPERATURES: dict[str, tuple[Callable[[], float | TemperatureFunction], TauRef]] = {
    "fixed-0.5": (lambda: 0.5, lambda s: 0.5),
    "fixed-0.07": (lambda: ConstantTemperature(0.07), lambda s: 0.07),
    "cosine-0.1-0.2": (lambda: CosineTemperature(0.1, 0.2), cos_ref(0.1, 0.2)),
    "cosine-0.07-0.2": (lambda: CosineTemperature(0.07, 0.2), cos_ref(0.07, 0.2)),
    "cosine-0.05-1.0": (lambda: CosineTemperature(0.05, 1.0), cos_ref(0.05, 1.0)),
    "shifted-(-0.4,0.7)": (
        lambda: ShiftedCosineTemperature(0.1, 0.2, -0.4, 0.7),
        shifted_ref(0.1, 0.2, -0.4, 0.7),
    ),
    "shifted-(0.4,0.8)": (
        lambda: ShiftedCosineTemperature(0.07, 0.2, 0.4, 0.8),
        shifted_ref(0.07, 0.2, 0.4, 0.8),
    ),
    "one-sided-0.2": (lambda: OneSidedCosineTemperature(0.1, 0.2, 0.2), shifted_ref(0.1, 0.2, 0.2, 0.8)),
    "linear": (lambda: LinearTemperature(0.1, 0.3), lambda s: 0.1 + 0.2 * abs(s)),
    "exponential": (
        lambda: ExponentialTemperature(0.05, 0.2),
        lambda s: 0.2 - 0.15 * math.exp(-3.5 * abs(s)),
    ),
    "log-linear": (lambda: LogLinearTemperature(0.05, 0.2), lambda s: 0.05 * 4.0 ** abs(s)),
    "ts-epoch-130": (lambda: _ts(130), ts_ref(1.0, 0.1, 400, 130)),
}
PAIRWISE = ["cosine-0.1-0.2", "shifted-(-0.4,0.7)", "one-sided-0.2", "linear", "exponential", "log-linear"]


def views(
    n: int, d: int, seed: int = 0, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two correlated views (positives spread over high similarities, negatives over [-1, 1] at small D)."""
    gen = torch.Generator().manual_seed(seed + 1000 * n + d)
    z0 = torch.randn(n, d, generator=gen, dtype=torch.float64)
    z1 = z0 + 0.7 * torch.randn(n, d, generator=gen, dtype=torch.float64)
    return z0.to(dtype), z1.to(dtype)


# ---- brute-force references: loops over anchors, -log exp(l_p) / sum_k exp(l_k) in float64 ----
def reference(
    z0: torch.Tensor,
    z1: torch.Tensor,
    tau_of: TauRef | None,
    kind: str = "infonce",
    sigma: float = 0.5,
    macl: tuple[float, float, float] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss and diagnostics. tau is evaluated on Python floats: frozen, i.e. the detached-tau gradient."""
    z = torch.cat([z0, z1]).double()
    z = z / z.norm(dim=1, keepdim=True)
    n2 = z.shape[0]
    n = n2 // 2
    sim = z @ z.T  # one row per anchor below
    value = sim.detach().tolist()
    pair = [value[j][j + n] for j in range(n)]
    if macl is not None:
        tau_0, alpha, a_0 = macl
        tau_macl = tau_0 * (1 + alpha * (sum(pair) / n - a_0))
        tau_of = lambda s: tau_macl  # noqa: E731
    e = [math.exp(p / sigma) for p in pair]
    dclw = [2 - n * ei / sum(e) for ei in e]
    losses, taus_pos, taus_neg, sims_neg = [], [], [], []
    for i in range(n2):
        p = (i + n) % n2
        negatives = [k for k in range(n2) if k not in (i, p)]
        tau_p = tau_of(value[i][p])
        tau_n = [tau_of(value[i][k]) for k in negatives]
        lp = sim[i, p] / tau_p
        ln = sim[i, negatives] / torch.tensor(tau_n, dtype=torch.float64)
        taus_pos.append(tau_p)
        taus_neg += tau_n
        sims_neg += [value[i][k] for k in negatives]
        if kind == "infonce":
            denominator = torch.exp(lp) + torch.exp(ln).sum()
            loss = -torch.log(torch.exp(lp) / denominator)
            if macl is not None:
                loss = loss / (1 - float((torch.exp(lp) / denominator).detach()))
        else:
            weight = dclw[i % n] if kind == "dclw" else 1.0
            loss = -weight * lp + torch.log(torch.exp(ln).sum())
        losses.append(loss)
    mean = lambda xs: sum(xs) / len(xs) if xs else math.nan  # noqa: E731
    diagnostics = {
        "tau_pos": mean(taus_pos),
        "tau_neg": mean(taus_neg),
        "sim_pos": mean(pair),
        "sim_neg": mean(sims_neg),
    }
    return torch.stack(losses).mean(), diagnostics


def check_diagnostics(got: dict[str, torch.Tensor], want: dict[str, float], rtol: float = 1e-9) -> None:
    assert set(got) == {"tau_pos", "tau_neg", "sim_pos", "sim_neg"}
    for key, value in got.items():
        assert value.ndim == 0 and not value.requires_grad, key
        if math.isnan(want[key]):
            assert math.isnan(value.item()), key
        else:
            assert value.item() == pytest.approx(want[key], rel=rtol, abs=1e-9), key


def loss_and_grads(loss: torch.nn.Module, z0: torch.Tensor, z1: torch.Tensor):
    z0, z1 = z0.clone().requires_grad_(), z1.clone().requires_grad_()
    value = loss(z0, z1)
    value.backward()
    return value.detach(), z0.grad, z1.grad


def reference_and_grads(z0: torch.Tensor, z1: torch.Tensor, **kwargs):
    z0, z1 = z0.clone().requires_grad_(), z1.clone().requires_grad_()
    value, diagnostics = reference(z0, z1, **kwargs)
    value.backward()
    return value.detach(), z0.grad, z1.grad, diagnostics


# ---- InfoNCE ----
@pytest.mark.parametrize("temp", list(TEMPERATURES))
@pytest.mark.parametrize("d", [3, 32])
@pytest.mark.parametrize("n", [2, 5, 16])  # N = 1 has no negative: rejected (test_one_sample_is_rejected)
def test_infonce_matches_reference(n: int, d: int, temp: str) -> None:
    factory, tau_of = TEMPERATURES[temp]
    z0, z1 = views(n, d)
    criterion = InfoNCELoss(factory())
    value, g0, g1 = loss_and_grads(criterion, z0, z1)
    want, w0, w1, diagnostics = reference_and_grads(z0, z1, tau_of=tau_of)
    assert value.dtype == torch.float64
    assert value.item() == pytest.approx(want.item(), rel=1e-10)
    torch.testing.assert_close(g0, w0, rtol=1e-8, atol=1e-10)  # detached tau = frozen-tau gradient
    torch.testing.assert_close(g1, w1, rtol=1e-8, atol=1e-10)
    check_diagnostics(criterion.diagnostics, diagnostics)
    # float32 inputs: float32 computation, same value to float32 accuracy
    value32 = criterion(z0.float(), z1.float())
    assert value32.dtype == torch.float32
    assert value32.item() == pytest.approx(want.item(), rel=2e-5, abs=2e-5)


# ---- DCL / DCLW ----
DCL_TEMPERATURES = ["fixed-0.5", "cosine-0.1-0.2", "shifted-(-0.4,0.7)", "shifted-(0.4,0.8)", "exponential"]


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("temp", DCL_TEMPERATURES)
@pytest.mark.parametrize("d", [3, 32])
@pytest.mark.parametrize("n", [2, 5, 16])
def test_dcl_matches_reference(n: int, d: int, temp: str, weighted: bool) -> None:
    factory, tau_of = TEMPERATURES[temp]
    z0, z1 = views(n, d, seed=1)
    sigma = 0.5 if n != 5 else 0.2
    criterion = DCLLoss(factory(), weighted=weighted, sigma=sigma)
    value, g0, g1 = loss_and_grads(criterion, z0, z1)
    kind = "dclw" if weighted else "dcl"
    want, w0, w1, diagnostics = reference_and_grads(z0, z1, tau_of=tau_of, kind=kind, sigma=sigma)
    assert value.item() == pytest.approx(want.item(), rel=1e-10, abs=1e-12)
    torch.testing.assert_close(g0, w0, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(g1, w1, rtol=1e-8, atol=1e-10)
    check_diagnostics(criterion.diagnostics, diagnostics)


def test_build_loss() -> None:
    fn = CosineTemperature(0.1, 0.2)
    assert isinstance(build_loss("infonce", fn), InfoNCELoss)
    dcl, dclw = build_loss("dcl", fn), build_loss("dclw", fn, sigma=0.3)
    assert isinstance(dcl, DCLLoss) and not dcl.weighted
    assert isinstance(dclw, DCLLoss) and dclw.weighted and dclw.sigma == 0.3
    assert build_loss("infonce", 0.2).temperature.tau == 0.2
    with pytest.raises(ValueError, match=r"unknown loss 'simclr'.*'infonce', 'dcl', 'dclw'"):
        build_loss("simclr", fn)
    assert LOSSES == ("infonce", "dcl", "dclw")


def test_build_loss_default_temperature_is_the_class_default() -> None:
    """temperature=None: the class's own default (InfoNCE 0.5, DCL / DCLW 0.1), as when built directly."""
    assert build_loss("infonce").temperature.tau == InfoNCELoss().temperature.tau == 0.5
    assert build_loss("dcl").temperature.tau == DCLLoss().temperature.tau == 0.1
    dclw = build_loss("dclw")
    assert dclw.weighted and dclw.temperature.tau == 0.1 and dclw.sigma == 0.5
    assert build_loss("dcl", None, sigma=0.2).temperature.tau == 0.1


@pytest.mark.parametrize("name", ["infonce", "dcl", "dclw"])
@pytest.mark.parametrize("temp", ["fixed-0.5", "cosine-0.1-0.2", "ts-epoch-130"])
def test_build_loss_with_explicit_temperature_as_before(name: str, temp: str) -> None:
    """What pretrain does (build_loss(config.loss, temperature)): the same module, the same numbers."""
    factory, _ = TEMPERATURES[temp]
    fn = factory()
    built = build_loss(name, fn)
    direct = InfoNCELoss(fn) if name == "infonce" else DCLLoss(fn, weighted=name == "dclw")
    assert type(built) is type(direct) and repr(built) == repr(direct)
    if not isinstance(fn, float):
        assert built.temperature is fn  # the same object: pretrain's temperature.set_epoch reaches the loss
    z0, z1 = views(5, 7)
    a, a0, a1 = loss_and_grads(built, z0, z1)
    b, b0, b1 = loss_and_grads(direct, z0, z1)
    assert torch.equal(a, b) and torch.equal(a0, b0) and torch.equal(a1, b1)


def test_build_loss_rejects_weighted_and_unknown_keywords() -> None:
    message = "build_loss takes no 'weighted' keyword (got weighted=True): "
    message += "use name 'dclw' for DCLW and 'dcl' for DCL"
    for name in ("dcl", "dclw", "infonce"):
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            build_loss(name, 0.1, weighted=True)
    allowed = "['detach_temperature', 'gather_distributed', 'sigma']"
    with pytest.raises(
        ValueError, match=re.escape(f"unknown parameters ['sgima'] for loss 'dcl'; allowed: {allowed}")
    ):
        build_loss("dcl", 0.1, sgima=0.3)
    with pytest.raises(
        ValueError, match=re.escape("unknown parameters ['sigma'] for loss 'infonce'; allowed: [")
    ):
        build_loss("infonce", 0.1, sigma=0.3)
    with pytest.raises(
        ValueError, match=re.escape("unknown loss ['dcl']; known: ['infonce', 'dcl', 'dclw']")
    ):
        build_loss(["dcl"])


# ---- MoCo queue ----
def queue_reference(q, k, queue, tau_of: TauRef) -> torch.Tensor:
    q = q / q.norm(dim=1, keepdim=True)
    k = k / k.norm(dim=1, keepdim=True)  # the queue holds keys normalised when enqueued: used as stored
    losses = []
    for i in range(q.shape[0]):
        s_pos = (q[i] * k[i]).sum()
        lp = s_pos / tau_of(float(s_pos.detach()))
        s_neg = queue @ q[i]
        ln = s_neg / torch.tensor([tau_of(s) for s in s_neg.tolist()], dtype=torch.float64)
        losses.append(-torch.log(torch.exp(lp) / (torch.exp(lp) + torch.exp(ln).sum())))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("temp", ["fixed-0.07", "cosine-0.1-0.2", "shifted-(-0.4,0.7)", "exponential"])
@pytest.mark.parametrize("n,d,size", [(1, 3, 4), (5, 3, 7), (16, 32, 24)])
def test_queue_infonce_matches_reference_and_is_fifo(n: int, d: int, size: int, temp: str) -> None:
    factory, tau_of = TEMPERATURES[temp]
    criterion = QueueInfoNCELoss(factory(), queue_size=size, dim=d).double()
    expected = [row for row in criterion.queue.clone()]  # FIFO simulated on a Python list
    pointer = 0
    for step in range(3):
        q, k = views(n, d, seed=10 + step)
        k.requires_grad_()
        queue_before = criterion.queue.clone()
        qg = q.clone().requires_grad_()
        value = criterion(qg, k)
        value.backward()
        qr = q.clone().requires_grad_()
        want = queue_reference(qr, k.detach(), queue_before, tau_of)
        want.backward()
        assert value.item() == pytest.approx(want.item(), rel=1e-10)
        torch.testing.assert_close(qg.grad, qr.grad, rtol=1e-8, atol=1e-10)
        assert k.grad is None  # keys are detached
        for row in k.detach() / k.detach().norm(dim=1, keepdim=True):
            expected[pointer] = row
            pointer = (pointer + 1) % size
        torch.testing.assert_close(criterion.queue, torch.stack(expected))
        assert criterion.queue_ptr.item() == pointer


def test_queue_larger_batch_than_queue_keeps_last_keys() -> None:
    criterion = QueueInfoNCELoss(0.2, queue_size=3, dim=4)
    q, k = views(5, 4, dtype=torch.float32)
    criterion(q, k)
    kn = k / k.norm(dim=1, keepdim=True)
    # as if written one by one: k0 k1 k2 at slots 0 1 2, then k3 k4 over slots 0 1
    torch.testing.assert_close(criterion.queue, kn[[3, 4, 2]])
    assert criterion.queue_ptr.item() == 5 % 3


def test_queue_eval_mode_does_not_enqueue_and_state_dict_round_trips() -> None:
    criterion = QueueInfoNCELoss(CosineTemperature(), queue_size=8, dim=6)
    q, k = views(3, 6, dtype=torch.float32)
    criterion(q, k)
    state = criterion.state_dict()
    assert set(state) == {"queue", "queue_ptr"} and state["queue_ptr"].item() == 3
    restored = QueueInfoNCELoss(CosineTemperature(), queue_size=8, dim=6)
    restored.load_state_dict(state)
    restored.eval()
    before = restored.queue.clone()
    assert restored(q, k).item() == pytest.approx(criterion.eval()(q, k).item(), rel=1e-6)
    assert torch.equal(restored.queue, before) and restored.queue_ptr.item() == 3


# ---- identities ----
@pytest.mark.parametrize(
    "cls", [CosineTemperature, LinearTemperature, ExponentialTemperature, LogLinearTemperature]
)
@pytest.mark.parametrize("tau", [0.07, 0.5])
@pytest.mark.parametrize("loss_cls", [InfoNCELoss, DCLLoss])
def test_equal_range_is_fixed_tau(cls, tau: float, loss_cls) -> None:
    z0, z1 = views(6, 8)
    pairs = [
        (loss_cls(cls(tau, tau)), loss_cls(tau)),
        (loss_cls(ShiftedCosineTemperature(tau, tau, 0.3, 0.4)), loss_cls(tau)),
        (loss_cls(OneSidedCosineTemperature(tau, tau)), loss_cls(ConstantTemperature(tau))),
    ]
    for dynamic, fixed in pairs:
        a, a0, a1 = loss_and_grads(dynamic, z0, z1)
        b, b0, b1 = loss_and_grads(fixed, z0, z1)
        assert a.item() == pytest.approx(b.item(), rel=1e-12)
        torch.testing.assert_close(a0, b0)
        torch.testing.assert_close(a1, b1)


ALL_FACTORIES = {name: factory for name, (factory, _) in TEMPERATURES.items()}


@pytest.mark.parametrize("temp", list(TEMPERATURES))
@pytest.mark.parametrize("n", [2, 3, 8])
def test_collinear_embeddings(n: int, temp: str) -> None:
    """All similarities 1: every logit equal, so InfoNCE = log(2N - 1) and DCL = log(2N - 2)."""
    v = torch.randn(1, 5, dtype=torch.float64)
    scales = torch.arange(1, n + 1, dtype=torch.float64)[:, None]  # normalisation happens inside
    z0, z1 = v * scales, v * scales.flip(0) * 0.3
    assert InfoNCELoss(ALL_FACTORIES[temp]())(z0, z1).item() == pytest.approx(math.log(2 * n - 1), abs=1e-10)
    for weighted in (False, True):
        dcl = DCLLoss(ALL_FACTORIES[temp](), weighted=weighted)(z0, z1)
        assert dcl.item() == pytest.approx(math.log(2 * n - 2), abs=1e-10)


@pytest.mark.parametrize("temp", ["fixed-0.5", "cosine-0.1-0.2", "shifted-(-0.4,0.7)", "linear"])
@pytest.mark.parametrize(
    "make",
    [
        lambda fn: InfoNCELoss(fn),
        lambda fn: DCLLoss(fn),
        lambda fn: DCLLoss(fn, weighted=True),
        lambda fn: InfoNCELoss(fn, detach_temperature=False),
    ],
    ids=["infonce", "dcl", "dclw", "infonce-grad-tau"],
)
def test_symmetric_in_views_and_scale_invariant(temp: str, make) -> None:
    z0, z1 = views(7, 5)
    criterion = make(ALL_FACTORIES[temp]())
    a, a0, a1 = loss_and_grads(criterion, z0, z1)
    b, b1, b0 = loss_and_grads(criterion, z1, z0)
    assert a.item() == pytest.approx(b.item(), rel=1e-12)
    torch.testing.assert_close(a0, b0)
    torch.testing.assert_close(a1, b1)
    assert criterion(3 * z0, 0.1 * z1).item() == pytest.approx(a.item(), rel=1e-12)


# ---- gradients ----
def _gradcheck(criterion: torch.nn.Module, n: int = 3, d: int = 4) -> None:
    z0, z1 = views(n, d, seed=7)
    z0.requires_grad_()
    z1.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: criterion(a, b), (z0, z1), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("temp", PAIRWISE + ["fixed-0.07", "ts-epoch-130"])
@pytest.mark.parametrize("kind", ["infonce", "dcl"])
def test_gradcheck_with_gradient_through_tau(temp: str, kind: str) -> None:
    """detach_temperature=False: the backward is the true derivative of the forward.

    (DCLW's weights and MACL's tau and weights are stop-grad by definition: their gradients are
    checked against the frozen-weight references above.)
    """
    fn = ALL_FACTORIES[temp]()
    if kind == "infonce":
        _gradcheck(InfoNCELoss(fn, detach_temperature=False))
    else:
        _gradcheck(DCLLoss(fn, detach_temperature=False))


@pytest.mark.parametrize("temp", ["fixed-0.07", "ts-epoch-130"])
def test_gradcheck_global_tau_detached(temp: str) -> None:
    """A global tau has no gradient to lose: detached or not, the backward is exact."""
    _gradcheck(InfoNCELoss(ALL_FACTORIES[temp]()))
    _gradcheck(DCLLoss(ALL_FACTORIES[temp]()))


def test_gradcheck_queue() -> None:
    for fn in (0.2, CosineTemperature(0.1, 0.2)):
        criterion = QueueInfoNCELoss(fn, queue_size=6, dim=4, detach_temperature=False).double().eval()
        q, k = views(3, 4, seed=3)
        q.requires_grad_()
        assert torch.autograd.gradcheck(lambda a, c=criterion, k=k: c(a, k), (q,), eps=1e-6, atol=1e-6)


def test_detaching_changes_the_gradient_only_for_pairwise_tau() -> None:
    z0, z1 = views(6, 4)
    for fn, differs in ((CosineTemperature(0.1, 0.5), True), (ConstantTemperature(0.2), False)):
        _, a0, _ = loss_and_grads(InfoNCELoss(fn), z0, z1)
        _, b0, _ = loss_and_grads(InfoNCELoss(fn, detach_temperature=False), z0, z1)
        assert (not torch.allclose(a0, b0)) == differs


def test_diagnostics_of_detached_temperature_have_no_grad() -> None:
    z0, z1 = views(4, 6)
    z0.requires_grad_()
    criterion = InfoNCELoss(CosineTemperature(), detach_temperature=False)
    criterion(z0, z1)
    assert all(not v.requires_grad and v.ndim == 0 for v in criterion.diagnostics.values())


# ---- numerics ----
@pytest.mark.parametrize("tau", [0.01, 1.0])
@pytest.mark.parametrize("make", [InfoNCELoss, DCLLoss], ids=["infonce", "dcl"])
def test_bf16_autocast_runs_in_float32(tau: float, make) -> None:
    gen = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(64, 32, generator=gen), torch.randn(64, 32, generator=gen)
    x1 = x0 + 0.3 * x1
    weight = (torch.randn(32, 16, generator=gen) / 4).requires_grad_()
    criterion = make(tau)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z0, z1 = x0 @ weight, x1 @ weight
        assert z0.dtype == torch.bfloat16
        loss = criterion(z0, z1)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(weight.grad).all()
    # the same bf16 projections, upcast by hand, without autocast: identical up to float32 rounding
    assert loss.item() == pytest.approx(criterion(z0.float(), z1.float()).item(), rel=1e-6, abs=1e-6)
    # against a float32 pipeline: each logit moves by at most max|ds| / tau and the loss (-l_p + lse,
    # each 1-Lipschitz in the max-norm of the logits) by at most twice that
    with torch.no_grad():
        f0, f1 = x0 @ weight, x1 @ weight
        full = criterion(f0, f1)
        u = torch.nn.functional.normalize(torch.cat([f0, f1]), dim=1)
        v = torch.nn.functional.normalize(torch.cat([z0, z1]).float(), dim=1)
        max_ds = (u @ u.T - v @ v.T).abs().max().item()
    assert max_ds > 0
    assert abs(loss.item() - full.item()) <= 2 * max_ds / tau + 1e-5


def test_naive_exp_sum_log_overflows_but_ours_does_not() -> None:
    """At tau = 0.01, s = 1 gives exp(100) > float32 max: exp/sum/log is inf/nan, log-sum-exp is exact."""
    z0, z1 = views(8, 16, dtype=torch.float32)
    z1 = z0 + 1e-3 * z1  # positives at s ~ 1
    tau = 0.01
    z = torch.nn.functional.normalize(torch.cat([z0, z1]), dim=1)
    logits = z @ z.T / tau
    n2 = z.shape[0]
    exp = torch.exp(logits) * (1 - torch.eye(n2))
    positive = exp[torch.arange(n2), (torch.arange(n2) + n2 // 2) % n2]
    naive = -torch.log(positive / exp.sum(1)).mean()
    assert not torch.isfinite(naive)
    ours = InfoNCELoss(tau)(z0, z1)
    want, _ = reference(z0.double(), z1.double(), tau_of=lambda s: tau)
    assert torch.isfinite(ours) and ours.item() == pytest.approx(want.item(), rel=1e-4, abs=1e-4)


@pytest.mark.parametrize(
    "fn",
    [
        ConstantTemperature(0.01),
        CosineTemperature(0.01, 0.2),
        ShiftedCosineTemperature(0.01, 0.05, -0.4, 0.7),
        LinearTemperature(0.01, 0.01),
        ExponentialTemperature(0.01, 1.0),
        LogLinearTemperature(0.01, 1.0),
    ],
    ids=lambda f: type(f).__name__,
)
@pytest.mark.parametrize("make", [InfoNCELoss, lambda fn: InfoNCELoss(fn, detach_temperature=False), DCLLoss])
def test_finite_down_to_tau_0_01(fn: TemperatureFunction, make) -> None:
    """(MACL at tau_0 = 0.01: tests/test_losses_macl.py.)"""
    z0, z1 = views(32, 16, dtype=torch.float32)
    for first, second in ((z0, z1), (z0, z0 + 1e-4 * z1), (z0, -z0)):
        a, b = first.clone().requires_grad_(), second.clone().requires_grad_()
        loss = make(fn)(a, b)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()


# ---- validation ----
@pytest.mark.parametrize(
    "build,param",
    [
        (lambda: InfoNCELoss(0.0), "tau"),
        (lambda: InfoNCELoss(-1.0), "tau"),
        (lambda: InfoNCELoss("0.5"), "temperature"),
        (lambda: InfoNCELoss(None), "temperature"),
        (lambda: InfoNCELoss(0.5, detach_temperature="yes"), "detach_temperature"),
        (lambda: InfoNCELoss(0.5, gather_distributed=1), "gather_distributed"),
        (lambda: DCLLoss(0.1, sigma=0.0), "sigma"),
        (lambda: DCLLoss(0.1, sigma=-1.0), "sigma"),
        (lambda: DCLLoss(0.1, sigma=float("nan")), "sigma"),
        (lambda: DCLLoss(0.1, weighted="no"), "weighted"),
        (lambda: DCLLoss(MACLTemperature()), "DCL"),
        (lambda: InfoNCELoss(MACLTemperature()), "MACLLoss"),
        (lambda: QueueInfoNCELoss(MACLTemperature()), "MACLLoss"),
        (lambda: QueueInfoNCELoss(0.2, queue_size=0), "queue_size"),
        (lambda: QueueInfoNCELoss(0.2, queue_size=8.0), "queue_size"),
        (lambda: QueueInfoNCELoss(0.2, dim=0), "dim"),
        (lambda: QueueInfoNCELoss(0.0), "tau"),
    ],
)
def test_invalid_constructor_arguments(build, param: str) -> None:
    with pytest.raises(ValueError, match=param):
        build()


@pytest.mark.parametrize(
    "z0,z1,param",
    [
        (torch.randn(4, 8), torch.randn(4, 9), "same shape"),
        (torch.randn(4, 8), torch.randn(5, 8), "same shape"),
        (torch.randn(8), torch.randn(8), "z0"),
        (torch.randn(0, 8), torch.randn(0, 8), "z0"),
        (torch.ones(4, 8, dtype=torch.long), torch.ones(4, 8, dtype=torch.long), "floating"),
    ],
)
@pytest.mark.parametrize(
    "make", [lambda: InfoNCELoss(CosineTemperature()), lambda: DCLLoss(0.1), lambda: MACLLoss()]
)
def test_invalid_inputs(z0: torch.Tensor, z1: torch.Tensor, param: str, make) -> None:
    criterion = make()
    with pytest.raises(ValueError, match=param):
        criterion(z0, z1)
    assert criterion.diagnostics == {}


def test_dcl_needs_two_samples_and_queue_checks_dim_before_work() -> None:
    with pytest.raises(ValueError, match="N >= 2"):
        DCLLoss(0.1)(torch.randn(1, 4), torch.randn(1, 4))
    criterion = QueueInfoNCELoss(0.2, queue_size=5, dim=4)
    before = criterion.queue.clone()
    with pytest.raises(ValueError, match="D = 4"):
        criterion(torch.randn(2, 3), torch.randn(2, 3))
    with pytest.raises(ValueError, match="same shape"):
        criterion(torch.randn(2, 4), torch.randn(3, 4))
    assert torch.equal(criterion.queue, before) and criterion.queue_ptr.item() == 0


# ---- non-tensor inputs: a ValueError naming the argument, before autocast or anything else ----
@pytest.mark.parametrize(
    "make",
    [
        lambda: InfoNCELoss(CosineTemperature()),
        lambda: DCLLoss(0.1),
        lambda: DCLLoss(0.1, weighted=True),
        lambda: MACLLoss(),
    ],
    ids=["infonce", "dcl", "dclw", "macl"],
)
def test_non_tensor_inputs_are_named(make) -> None:
    criterion = make()
    array = np.ones((4, 8), dtype=np.float32)
    cases = [
        (array, torch.ones(4, 8), "z0 must be a torch.Tensor [N, D], got ndarray"),
        (torch.ones(4, 8), array.tolist(), "z1 must be a torch.Tensor [N, D], got list"),
        (array, array, "z0 must be a torch.Tensor [N, D], got ndarray"),
    ]
    for z0, z1, message in cases:
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            criterion(z0, z1)
        with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(ValueError, match=re.escape(message)):
            criterion(z0, z1)
    assert criterion.diagnostics == {}


def test_queue_non_tensor_inputs_are_named() -> None:
    criterion = QueueInfoNCELoss(0.2, queue_size=5, dim=4)
    before = criterion.queue.clone()
    with pytest.raises(ValueError, match=re.escape("query must be a torch.Tensor [N, D], got ndarray")):
        criterion(np.ones((2, 4)), torch.ones(2, 4))
    with pytest.raises(ValueError, match=re.escape("key must be a torch.Tensor [N, D], got tuple")):
        criterion(torch.ones(2, 4), (1.0, 2.0))
    assert torch.equal(criterion.queue, before) and criterion.queue_ptr.item() == 0


# ---- one sample: no negative, rejected like DCL (the global batch counts) ----
@pytest.mark.parametrize("gather", [True, False])
@pytest.mark.parametrize("temp", ["fixed-0.5", "cosine-0.1-0.2", "macl"])
def test_one_sample_is_rejected(temp: str, gather: bool) -> None:
    if temp == "macl":
        criterion, loss = MACLLoss(gather_distributed=gather), "MACL"
    else:
        fn = TEMPERATURES[temp][0]()
        criterion, loss = InfoNCELoss(fn, gather_distributed=gather), "InfoNCE"
    message = (
        f"{loss} needs N >= 2 samples (a negative per anchor; N = local batch x world size when gathering "
        "across ranks), got shape (1, 4) with world size 1"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        criterion(torch.randn(1, 4), torch.randn(1, 4))
    assert criterion.diagnostics == {}
    if temp != "macl":
        with pytest.raises(ValueError, match=re.escape(message.replace(loss, "DCL"))):
            DCLLoss(fn, gather_distributed=gather)(torch.randn(1, 4), torch.randn(1, 4))


def test_queue_accepts_one_sample() -> None:
    """The queue always holds K >= 1 negatives: N = 1 is a valid batch (value against brute force)."""
    criterion = QueueInfoNCELoss(CosineTemperature(0.1, 0.2), queue_size=4, dim=3).double()
    q, k = views(1, 3, seed=5)
    want = queue_reference(q, k, criterion.queue.clone(), cos_ref(0.1, 0.2))
    assert criterion(q, k).item() == pytest.approx(want.item(), rel=1e-12)


# ---- the epoch step: set_epoch on every loss, forwarded to the temperature ----
def _queue(fn: float | TemperatureFunction) -> QueueInfoNCELoss:
    return QueueInfoNCELoss(fn, queue_size=6, dim=5).double().eval()


LOSS_KINDS = {
    "infonce": InfoNCELoss,
    "dcl": DCLLoss,
    "dclw": lambda fn: DCLLoss(fn, weighted=True),
    "queue": _queue,
}


def _want(kind: str, criterion, z0: torch.Tensor, z1: torch.Tensor, tau_of: TauRef) -> float:
    if kind == "queue":
        return queue_reference(z0, z1, criterion.queue.clone(), tau_of).item()
    return reference(z0, z1, tau_of=tau_of, kind=kind)[0].item()


@pytest.mark.parametrize("kind", list(LOSS_KINDS))
def test_set_epoch_steps_the_ts_schedule(kind: str) -> None:
    criterion = LOSS_KINDS[kind](CosineScheduleTemperature(1.0, 0.1, 400))
    z0, z1 = views(6, 5, seed=2)
    criterion(z0, z1)  # never stepped: tau_plus
    assert criterion.diagnostics["tau_pos"].item() == 1.0
    for epoch, want_tau in ((np.int64(200), 0.1), (torch.tensor(100), 0.55), (400, 1.0), (300, 0.55)):
        criterion.set_epoch(epoch)
        assert type(criterion.temperature.epoch) is int and criterion.temperature.epoch == int(epoch)
        value = criterion(z0, z1)
        assert criterion.diagnostics["tau_pos"].item() == pytest.approx(want_tau, abs=1e-15)
        want = _want(kind, criterion, z0, z1, ts_ref(1.0, 0.1, 400, int(epoch)))
        assert value.item() == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("kind", list(LOSS_KINDS))
def test_set_epoch_is_a_noop_without_a_schedule(kind: str) -> None:
    criterion = LOSS_KINDS[kind](CosineTemperature(0.1, 0.2))
    z0, z1 = views(6, 5, seed=3)
    before = criterion(z0, z1)
    criterion.set_epoch(7)
    assert torch.equal(criterion(z0, z1), before)


@pytest.mark.parametrize("kind", list(LOSS_KINDS))
@pytest.mark.parametrize(
    "epoch,message",
    [
        (-1, "epoch must be >= 0, got -1"),
        (1.5, "epoch must be an integer >= 0 (int, NumPy integer or 0-dim integer tensor), got 1.5"),
        (True, "epoch must be an integer >= 0 (int, NumPy integer or 0-dim integer tensor), got True"),
        (
            torch.tensor(2.0),
            "epoch must be an integer >= 0 (int, NumPy integer or 0-dim integer tensor), "
            "got a torch.float32 tensor of shape ()",
        ),
        (
            torch.tensor([2]),
            "epoch must be an integer >= 0 (int, NumPy integer or 0-dim integer tensor), "
            "got a torch.int64 tensor of shape (1,)",
        ),
    ],
)
@pytest.mark.parametrize("schedule", [True, False], ids=["ts", "constant"])
def test_set_epoch_rejects_non_integers(kind: str, epoch, message: str, schedule: bool) -> None:
    fn = CosineScheduleTemperature(1.0, 0.1, 400) if schedule else ConstantTemperature(0.2)
    criterion = LOSS_KINDS[kind](fn)
    criterion.set_epoch(50)
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        criterion.set_epoch(epoch)
    if schedule:
        assert criterion.temperature.epoch == 50  # unchanged


# ---- degenerate values are not checked (no host sync): documented results ----
@pytest.mark.parametrize("temp", ["fixed-0.5", "cosine-0.1-0.2", "shifted-(-0.4,0.7)", "ts-epoch-130"])
@pytest.mark.parametrize("n", [2, 5])
def test_all_zero_inputs_give_log_of_the_negatives(n: int, temp: str) -> None:
    """All-zero rows normalise to 0: every logit is 0, InfoNCE = log(2N - 1), DCL(W) = log(2N - 2)."""
    zeros = torch.zeros(n, 4, dtype=torch.float64)
    make = ALL_FACTORIES[temp]
    assert InfoNCELoss(make())(zeros, zeros).item() == pytest.approx(math.log(2 * n - 1), abs=1e-12)
    for weighted in (False, True):
        value = DCLLoss(make(), weighted=weighted)(zeros, zeros)
        assert value.item() == pytest.approx(math.log(2 * n - 2), abs=1e-12)
    queue = QueueInfoNCELoss(make(), queue_size=7, dim=4).double()
    assert queue(zeros, zeros).item() == pytest.approx(math.log(7 + 1), abs=1e-12)


@pytest.mark.parametrize("kind", list(LOSS_KINDS))
def test_nan_input_gives_a_nan_loss(kind: str) -> None:
    z0, z1 = views(4, 5)
    z0[2, 1] = math.nan
    criterion = LOSS_KINDS[kind](CosineTemperature(0.1, 0.2))
    assert math.isnan(criterion(z0, z1).item())


# ---- meta tensors (shape inference): autocast has no meta backend, so none is touched there ----
@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize(
    "make",
    [
        lambda: InfoNCELoss(CosineTemperature()),
        lambda: InfoNCELoss(0.5),
        lambda: DCLLoss(CosineScheduleTemperature(), weighted=True),
        lambda: MACLLoss(),
        lambda: QueueInfoNCELoss(CosineTemperature(), queue_size=8, dim=16).to("meta"),
    ],
    ids=["infonce", "infonce-fixed", "dclw", "macl", "queue"],
)
def test_meta_tensors_give_a_meta_loss(make, autocast: bool) -> None:
    criterion = make()
    z0, z1 = torch.empty(4, 16, device="meta"), torch.empty(4, 16, device="meta")
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = criterion(z0, z1)
    assert loss.device.type == "meta" and loss.shape == () and loss.dtype == torch.float32
    assert all(v.device.type == "meta" and v.shape == () for v in criterion.diagnostics.values())
