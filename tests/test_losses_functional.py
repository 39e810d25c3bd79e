"""Functional losses (infonce, dcl): equal to the modules bit for bit, to a float64 brute force, checked."""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from gloo_group import free_port, gloo_group

import dystress.losses.functional as functional
from dystress.losses import DCLLoss, InfoNCELoss
from dystress.losses.functional import dcl, infonce, macl
from dystress.temperature import (
    ConstantTemperature,
    CosineScheduleTemperature,
    CosineTemperature,
    MACLTemperature,
    ShiftedCosineTemperature,
    TemperatureFunction,
)


def _ts() -> TemperatureFunction:
    fn = CosineScheduleTemperature(1.0, 0.1, 400)
    fn.set_epoch(130)
    return fn


# id -> (factory, tau(s) on a Python float, for the brute force); a fresh temperature per use
TEMPS: dict[str, tuple[Callable[[], float | TemperatureFunction], Callable[[float], float]]] = {
    "float-0.3": (lambda: 0.3, lambda s: 0.3),
    "constant-0.07": (lambda: ConstantTemperature(0.07), lambda s: 0.07),
    "cosine": (
        lambda: CosineTemperature(0.1, 0.2),
        lambda s: 0.1 + 0.05 * (1 + math.cos(math.pi * (1 + s))),
    ),
    "shifted": (
        lambda: ShiftedCosineTemperature(0.1, 0.2, -0.4, 0.7),
        lambda s: 0.2 if s > 0.4 else 0.1 + 0.05 * (1 + math.cos(math.pi * (s - 0.4) / 0.7)),
    ),
    "ts-130": (_ts, lambda s: 0.1 + 0.45 * (1 + math.cos(2 * math.pi * 130 / 400))),
}


def views(n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    z0 = torch.randn(n, d, generator=gen, dtype=torch.float64)
    return z0, z0 + 0.6 * torch.randn(n, d, generator=gen, dtype=torch.float64)


def brute_force(z0: torch.Tensor, z1: torch.Tensor, tau_of, kind: str, sigma: float = 0.5) -> torch.Tensor:
    """Float64 loops over the 2N anchors; tau evaluated on Python floats (frozen, i.e. detached)."""
    z = torch.cat([z0, z1]).double()
    z = z / z.norm(dim=1, keepdim=True)
    n2, n = z.shape[0], z.shape[0] // 2
    sim = z @ z.T
    value = sim.detach().tolist()
    pos = [value[i][i + n] for i in range(n)]
    soft = [math.exp(p / sigma) for p in pos]
    losses = []
    for i in range(n2):
        p = (i + n) % n2
        lp = sim[i, p] / tau_of(value[i][p])
        ln = torch.stack([sim[i, k] / tau_of(value[i][k]) for k in range(n2) if k not in (i, p)])
        if kind == "infonce":
            losses.append(-lp + torch.log(torch.exp(lp) + torch.exp(ln).sum()))
        else:
            w = 2 - n * soft[i % n] / sum(soft) if kind == "dclw" else 1.0
            losses.append(-w * lp + torch.log(torch.exp(ln).sum()))
    return torch.stack(losses).mean()


def _grads(call, z0: torch.Tensor, z1: torch.Tensor):
    a, b = z0.clone().requires_grad_(), z1.clone().requires_grad_()
    out = call(a, b)
    loss, diagnostics = out if isinstance(out, tuple) else (out, None)
    loss.backward()
    return loss.detach(), a.grad, b.grad, diagnostics


def _same(x: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> bool:
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


# ---- one implementation: the modules are the functions ----
@pytest.mark.parametrize("temp", list(TEMPS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("detach", [True, False])
def test_infonce_equals_module_exactly(temp: str, dtype: torch.dtype, detach: bool) -> None:
    factory, _ = TEMPS[temp]
    z0, z1 = (z.to(dtype) for z in views(7, 5))
    module = InfoNCELoss(factory(), detach_temperature=detach)
    want, w0, w1, _ = _grads(module, z0, z1)
    got, g0, g1, diagnostics = _grads(
        lambda a, b: infonce(a, b, factory(), detach_temperature=detach), z0, z1
    )
    assert got.dtype == dtype
    assert torch.equal(got, want) and torch.equal(g0, w0) and torch.equal(g1, w1)
    assert _same(diagnostics, module.diagnostics)


@pytest.mark.parametrize("temp", list(TEMPS))
@pytest.mark.parametrize("weighted,sigma", [(False, 0.5), (True, 0.5), (True, 0.2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dcl_equals_module_exactly(temp: str, weighted: bool, sigma: float, dtype: torch.dtype) -> None:
    factory, _ = TEMPS[temp]
    z0, z1 = (z.to(dtype) for z in views(7, 5, seed=1))
    module = DCLLoss(factory(), weighted=weighted, sigma=sigma)
    want, w0, w1, _ = _grads(module, z0, z1)
    got, g0, g1, diagnostics = _grads(
        lambda a, b: dcl(a, b, factory(), weighted=weighted, sigma=sigma), z0, z1
    )
    assert torch.equal(got, want) and torch.equal(g0, w0) and torch.equal(g1, w1)
    assert _same(diagnostics, module.diagnostics)


def test_equal_under_bf16_autocast() -> None:
    z0, z1 = (z.to(torch.bfloat16) for z in views(8, 6))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a, da = infonce(z0, z1, CosineTemperature())
        b = InfoNCELoss(CosineTemperature())(z0, z1)
        c, _ = dcl(z0, z1, 0.2, weighted=True)
        d = DCLLoss(0.2, weighted=True)(z0, z1)
    assert a.dtype == torch.float32 and torch.equal(a, b) and torch.equal(c, d)
    assert all(v.dtype == torch.float32 for v in da.values())


# ---- against the float64 brute force ----
@pytest.mark.parametrize("temp", list(TEMPS))
@pytest.mark.parametrize("n,d", [(2, 3), (6, 4), (12, 16)])
def test_functional_matches_brute_force(temp: str, n: int, d: int) -> None:
    factory, tau_of = TEMPS[temp]
    z0, z1 = views(n, d, seed=n)
    for kind, sigma in (("infonce", 0.5), ("dcl", 0.5), ("dclw", 0.3)):
        if kind == "infonce":
            call = lambda a, b: infonce(a, b, factory())  # noqa: E731
        else:
            call = lambda a, b, k=kind, s=sigma: dcl(a, b, factory(), weighted=k == "dclw", sigma=s)  # noqa: E731
        got, g0, g1, diagnostics = _grads(call, z0, z1)
        want, w0, w1, _ = _grads(lambda a, b, k=kind, s=sigma: brute_force(a, b, tau_of, k, s), z0, z1)
        assert got.item() == pytest.approx(want.item(), rel=1e-12), kind
        torch.testing.assert_close(g0, w0, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(g1, w1, rtol=1e-9, atol=1e-12)
        assert set(diagnostics) == {"tau_pos", "tau_neg", "sim_pos", "sim_neg"}
        z = torch.nn.functional.normalize(torch.cat([z0, z1]), dim=1)
        assert diagnostics["sim_pos"].item() == pytest.approx((z[:n] * z[n:]).sum(1).mean().item(), rel=1e-12)


# ---- the public API ----
def test_exported_from_dystress_losses() -> None:
    import importlib

    import dystress.losses as losses

    assert losses.functional is functional and "functional" in losses.__all__
    # the class modules stay reachable under their names (no function shadows them)
    assert importlib.import_module("dystress.losses.dcl").DCLLoss is DCLLoss
    assert losses.infonce.InfoNCELoss is InfoNCELoss
    assert losses.macl.MACLLoss is losses.MACLLoss and losses.macl.macl is macl
    for fn, keywords in (
        (infonce, ["detach_temperature", "gather_distributed"]),
        (dcl, ["weighted", "sigma", "detach_temperature", "gather_distributed"]),
        (macl, ["gather_distributed"]),
    ):
        params = inspect.signature(fn).parameters
        assert list(params)[:3] == ["z0", "z1", "temperature"]
        assert [p for p in params if params[p].kind is inspect.Parameter.KEYWORD_ONLY] == keywords
    assert inspect.signature(dcl).parameters["sigma"].default == 0.5


def test_compiles_in_one_graph() -> None:
    """No graph break (fullgraph) and no host sync from the checks: the same numbers compiled."""
    z0, z1 = views(6, 8)
    for fn, temperature, kwargs in (
        (infonce, CosineTemperature, {}),
        (dcl, CosineTemperature, {"weighted": True}),
        (macl, MACLTemperature, {}),
    ):
        compiled = torch.compile(fn, backend="eager", fullgraph=True)
        got, got_d = compiled(z0, z1, temperature(), **kwargs)
        want, want_d = fn(z0, z1, temperature(), **kwargs)
        assert torch.equal(got, want) and _same(got_d, want_d)


# ---- validation, before any work ----
@pytest.mark.parametrize(
    "call,message",
    [
        (
            lambda z: infonce(z, z, "0.1"),
            "temperature must be a positive number or a TemperatureFunction, got str",
        ),
        (lambda z: infonce(z, z, 0.0), "tau must be > 0, got 0.0"),
        (
            lambda z: infonce(z, z, 0.1, detach_temperature=1),
            "detach_temperature must be True or False, got 1",
        ),
        (
            lambda z: dcl(z, z, 0.1, gather_distributed=None),
            "gather_distributed must be True or False, got None",
        ),
        (lambda z: dcl(z, z, 0.1, weighted="yes"), "weighted must be True or False, got 'yes'"),
        (lambda z: dcl(z, z, 0.1, sigma=0), "sigma must be > 0, got 0.0"),
        (lambda z: dcl(z, z, 0.1, sigma=math.inf), "sigma must be a finite real number, got inf"),
        (
            lambda z: dcl(z, z, MACLTemperature()),
            "temperature MACLTemperature(tau_0=0.1, alpha=0.5, a_0=0) needs P(positive) and the batch's "
            "positive pairs, which DCL does not give it; use MACLLoss(tau_0=0.1, alpha=0.5, a_0=0)",
        ),
        (
            lambda z: infonce(z, z, MACLTemperature(0.2, 1, 0.3)),
            "temperature MACLTemperature(tau_0=0.2, alpha=1, a_0=0.3) needs P(positive) and the batch's "
            "positive pairs, which InfoNCE does not give it; use MACLLoss(tau_0=0.2, alpha=1, a_0=0.3)",
        ),
        (lambda z: macl(z, z, 0.1), "temperature must be a MACLTemperature(tau_0, alpha, a_0), got float"),
        (
            lambda z: macl(z, z, MACLTemperature(), gather_distributed="yes"),
            "gather_distributed must be True or False, got 'yes'",
        ),
        (
            lambda z: macl(z[:1], z[:1], MACLTemperature()),
            "MACL needs N >= 2 samples (a negative per anchor; N = local batch x world size when "
            "gathering across ranks), got shape (1, 4) with world size 1",
        ),
        (lambda z: infonce(z.numpy(), z, 0.1), "z0 must be a torch.Tensor [N, D], got ndarray"),
        (lambda z: dcl(z, [[1.0]], 0.1), "z1 must be a torch.Tensor [N, D], got list"),
        (lambda z: infonce(z, z[:, :2], 0.1), "z0 and z1 must have the same shape, got (3, 4) and (3, 2)"),
        (lambda z: dcl(z.long(), z.long(), 0.1), "z0 must be a floating-point tensor, got torch.int64"),
        (
            lambda z: infonce(z[:1], z[:1], 0.1),
            "InfoNCE needs N >= 2 samples (a negative per anchor; N = local batch x world size when "
            "gathering across ranks), got shape (1, 4) with world size 1",
        ),
        (
            lambda z: dcl(z[:1], z[:1], 0.1, gather_distributed=False),
            "DCL needs N >= 2 samples (a negative per anchor; N = local batch x world size when "
            "gathering across ranks), got shape (1, 4) with world size 1",
        ),
    ],
)
def test_invalid_arguments(call, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        call(torch.randn(3, 4))


def test_numpy_temperature_scalars_are_numbers() -> None:
    z0, z1 = views(4, 3)
    assert torch.equal(infonce(z0, z1, np.float64(0.2))[0], infonce(z0, z1, 0.2)[0])


# ---- the one-sample check counts the global batch: N = 1 per rank is fine on 2 ranks ----
WORLD = 2
CASES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "infonce-module": lambda a, b: InfoNCELoss(CosineTemperature(0.1, 0.2))(a, b),
    "infonce-functional": lambda a, b: infonce(a, b, 0.2)[0],
    "dclw-functional": lambda a, b: dcl(a, b, CosineTemperature(0.1, 0.2), weighted=True)[0],
    "dcl-module": lambda a, b: DCLLoss(0.3)(a, b),
}


def _worker(rank: int, port: int, out: str) -> None:
    with gloo_group(rank, WORLD, port):
        torch.set_num_threads(1)
        z0, z1 = views(WORLD, 5, seed=9)
        local = slice(rank, rank + 1)
        results: dict[str, object] = {}
        for name, call in CASES.items():
            loss, g0, g1, _ = _grads(call, z0[local], z1[local])
            results[name] = {"loss": loss, "g0": g0, "g1": g1}
        try:
            InfoNCELoss(0.2, gather_distributed=False)(z0[local], z1[local])
            results["local-error"] = ""
        except ValueError as err:
            results["local-error"] = str(err)
        torch.save(results, Path(out) / f"rank{rank}.pt")


def test_one_sample_per_rank_uses_the_global_batch(tmp_path: Path) -> None:
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    z0, z1 = views(WORLD, 5, seed=9)
    for name, call in CASES.items():
        single, s0, s1, _ = _grads(call, z0, z1)
        mean = sum(r[name]["loss"] for r in ranks) / WORLD
        assert mean.item() == pytest.approx(single.item(), rel=1e-12), name
        for r, result in enumerate(ranks):
            torch.testing.assert_close(result[name]["g0"] / WORLD, s0[r : r + 1], rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(result[name]["g1"] / WORLD, s1[r : r + 1], rtol=1e-10, atol=1e-12)
    for result in ranks:  # without gathering, one local sample has no negative
        assert (
            result["local-error"].startswith("InfoNCE needs N >= 2 samples")
            and "world size 1" in (result["local-error"])
        )
