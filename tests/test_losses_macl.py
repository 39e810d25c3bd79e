"""MACLLoss (Huang et al., ICML 2023): brute-force reference, its batch temperature and anchor weights,
the functional form, and build_loss's pairing of ``loss: infonce`` with ``temperature: macl``."""

from __future__ import annotations

import math
import re

import pytest
import torch
from test_losses import check_diagnostics, loss_and_grads, reference_and_grads, views

from dystress.losses import DCLLoss, InfoNCELoss, MACLLoss, QueueInfoNCELoss, build_loss
from dystress.losses._logits import two_view_batch
from dystress.losses.functional import macl
from dystress.losses.macl import _anchor_weights, _batch_temperature
from dystress.temperature import MACLTemperature, build_temperature

PARAMS = [(0.1, 0.5, 0.0), (0.2, 1.0, 0.3), (0.07, 0.0, 0.0)]


@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize("d", [3, 32])
@pytest.mark.parametrize("n", [2, 5, 16])
def test_macl_matches_reference(n: int, d: int, params: tuple[float, float, float]) -> None:
    z0, z1 = views(n, d)
    criterion = MACLLoss(*params)
    value, g0, g1 = loss_and_grads(criterion, z0, z1)
    want, w0, w1, diagnostics = reference_and_grads(z0, z1, tau_of=None, macl=params)
    assert value.item() == pytest.approx(want.item(), rel=1e-10)
    torch.testing.assert_close(g0, w0, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(g1, w1, rtol=1e-8, atol=1e-10)
    check_diagnostics(criterion.diagnostics, diagnostics)


@pytest.mark.parametrize("tau_0,alpha,a_0", [(0.1, 0.5, 0.0), (0.2, 1.0, 0.5), (0.05, 0.0, 0.3)])
def test_batch_temperature_and_anchor_weights(tau_0: float, alpha: float, a_0: float) -> None:
    """tau_A from the mean positive similarity A (detached, 0-dim); weights 1 / (1 - P), stop-grad."""
    z0, z1 = (z.requires_grad_() for z in views(10, 4))
    batch = two_view_batch(z0, z1, gather_distributed=True)
    tau = _batch_temperature(batch, MACLTemperature(tau_0, alpha, a_0))
    assert tau.ndim == 0 and not tau.requires_grad
    pos = torch.nn.functional.cosine_similarity(z0, z1).mean().item()
    assert tau.item() == pytest.approx(tau_0 * (1 + alpha * (pos - a_0)))
    p = torch.tensor([0.01, 0.3, 0.9, 0.999], dtype=torch.float64, requires_grad=True)
    weights = _anchor_weights(p.log())
    assert not weights.requires_grad
    torch.testing.assert_close(weights, 1 / (1 - p.detach()))


def test_functional_equals_module_exactly() -> None:
    z0, z1 = views(6, 4)
    module = MACLLoss(0.1, 0.5, 0.2)
    want, w0, w1 = loss_and_grads(module, z0, z1)
    a, b = z0.clone().requires_grad_(), z1.clone().requires_grad_()
    got, diagnostics = macl(a, b, MACLTemperature(0.1, 0.5, 0.2))
    got.backward()
    assert torch.equal(got, want) and torch.equal(a.grad, w0) and torch.equal(b.grad, w1)
    assert diagnostics.keys() == module.diagnostics.keys()
    assert all(torch.equal(diagnostics[k], module.diagnostics[k]) for k in diagnostics)


@pytest.mark.parametrize("n", [2, 3, 8])
def test_collinear_embeddings(n: int) -> None:
    """All similarities 1: every logit equal, P_pos = 1 / (2N - 1), reweighted by 1 / (1 - P_pos)."""
    v = torch.randn(1, 5, dtype=torch.float64)
    scales = torch.arange(1, n + 1, dtype=torch.float64)[:, None]
    z0, z1 = v * scales, v * scales.flip(0) * 0.3
    p = 1 / (2 * n - 1)
    assert MACLLoss()(z0, z1).item() == pytest.approx(math.log(2 * n - 1) / (1 - p), rel=1e-10)


def test_symmetric_in_views() -> None:
    z0, z1 = views(7, 5)
    criterion = MACLLoss()
    assert criterion(z0, z1).item() == pytest.approx(criterion(z1, z0).item(), rel=1e-12)


def test_finite_down_to_tau_0_01() -> None:
    z0, z1 = views(32, 16, dtype=torch.float32)
    for first, second in ((z0, z1), (z0, z0 + 1e-4 * z1), (z0, -z0)):
        a, b = first.clone().requires_grad_(), second.clone().requires_grad_()
        loss = MACLLoss(0.01, 0.5, 0.0)(a, b)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()


def test_bf16_autocast_runs_in_float32() -> None:
    z0, z1 = (z.to(torch.bfloat16) for z in views(16, 8))
    criterion = MACLLoss(0.1, 0.5, 0.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = criterion(z0, z1)
    assert loss.dtype == torch.float32
    assert torch.equal(loss, criterion(z0.float(), z1.float()))


# ---- the config's pairing: loss infonce + temperature macl is MACLLoss; DCL refuses it ----
@pytest.mark.parametrize("params", PARAMS)
def test_build_loss_gives_macl_loss_for_infonce_with_macl(params: tuple[float, float, float]) -> None:
    fn = build_temperature("macl", **dict(zip(("tau_0", "alpha", "a_0"), params, strict=True)))
    built = build_loss("infonce", fn)
    direct = MACLLoss(*params)
    assert type(built) is MACLLoss and repr(built) == repr(direct)
    assert built.temperature.params() == fn.params()
    z0, z1 = views(5, 7)
    a, a0, a1 = loss_and_grads(built, z0, z1)
    b, b0, b1 = loss_and_grads(direct, z0, z1)
    assert torch.equal(a, b) and torch.equal(a0, b0) and torch.equal(a1, b1)
    assert build_loss("infonce", fn, gather_distributed=False).gather_distributed is False


@pytest.mark.parametrize("loss", ["dcl", "dclw"])
def test_build_loss_refuses_dcl_with_macl_naming_loss(loss: str) -> None:
    message = (
        "loss must be infonce with temperature macl (it needs P(positive) and the batch's positive "
        f"pairs, which DCL does not give it), got '{loss}'"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        build_loss(loss, MACLTemperature())


def test_build_loss_macl_keywords() -> None:
    message = (
        "unknown parameters ['detach_temperature'] for loss 'infonce' with temperature macl; "
        "allowed: ['gather_distributed']"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        build_loss("infonce", MACLTemperature(), detach_temperature=False)


@pytest.mark.parametrize(
    "make,loss",
    [(InfoNCELoss, "InfoNCE"), (DCLLoss, "DCL"), (QueueInfoNCELoss, "QueueInfoNCE")],
)
def test_other_losses_refuse_macl_temperature_and_point_to_macl_loss(make, loss: str) -> None:
    message = (
        "temperature MACLTemperature(tau_0=0.2, alpha=0.5, a_0=0) needs P(positive) and the batch's "
        f"positive pairs, which {loss} does not give it; use MACLLoss(tau_0=0.2, alpha=0.5, a_0=0)"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        make(MACLTemperature(0.2))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"tau_0": 0.0}, "tau_0 must be > 0, got 0.0"),
        ({"alpha": 1.5}, "alpha must be in [0, 1], got 1.5"),
        ({"a_0": -0.5}, "a_0 must be in [0, 1], got -0.5"),
        ({"gather_distributed": 1}, "gather_distributed must be True or False, got 1"),
    ],
)
def test_invalid_constructor_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        MACLLoss(**kwargs)


def test_set_epoch_checks_the_epoch_and_changes_nothing() -> None:
    criterion = MACLLoss()
    z0, z1 = views(6, 5, seed=3)
    before = criterion(z0, z1)
    criterion.set_epoch(7)
    assert torch.equal(criterion(z0, z1), before)
    with pytest.raises(ValueError, match=r"^epoch must be >= 0, got -1$"):
        criterion.set_epoch(-1)
