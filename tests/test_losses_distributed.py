"""Two gloo processes on the CPU give the same loss and gradients as one process on the whole batch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from gloo_group import free_port, gloo_group
from torch import nn

from dystress.distributed import gather_with_grad, rank, world_size
from dystress.losses import (
    DCLLoss,
    InfoNCELoss,
    ISogCLRLoss,
    MACLLoss,
    QueueInfoNCELoss,
    TemperatureFreeLoss,
)
from dystress.temperature import CosineTemperature, LearnedTemperature, ShiftedCosineTemperature

WORLD, N, D = 2, 3, 5  # per-rank batch N; the whole batch is WORLD * N

CASES: dict[str, Callable[[], nn.Module]] = {
    "infonce-fixed": lambda: InfoNCELoss(0.2),
    "infonce-cosine": lambda: InfoNCELoss(CosineTemperature(0.1, 0.2)),
    "infonce-cosine-grad-tau": lambda: InfoNCELoss(CosineTemperature(0.05, 0.5), detach_temperature=False),
    "macl": lambda: MACLLoss(0.1, 0.5, 0.0),
    "dcl-shifted": lambda: DCLLoss(ShiftedCosineTemperature(0.1, 0.2, -0.4, 0.7)),
    "dclw-cosine": lambda: DCLLoss(CosineTemperature(0.1, 0.2), weighted=True, sigma=0.3),
    "free": lambda: TemperatureFreeLoss(),
    "learned": lambda: InfoNCELoss(LearnedTemperature(0.15)).double(),
}

#: iSogCLR's images: the whole batch holds training images ISOG_INDEX (rank r has slice r).
ISOG_INDEX = torch.tensor([9, 2, 5, 0, 7, 3])


def new_isogclr() -> ISogCLRLoss:
    return ISogCLRLoss(num_samples=10, rho=0.3, eta=0.05).double()


def run_isogclr(
    criterion: ISogCLRLoss, z0: torch.Tensor, z1: torch.Tensor, index: torch.Tensor
) -> list[dict]:
    """Two steps (the second sees the first's state) on the same images; results and state after each."""
    out = []
    for step in range(2):
        a, b = (z0 * (1 + step)).clone().requires_grad_(), z1.clone().requires_grad_()
        loss = criterion(a, b, index)
        loss.backward()
        state = {k: v.clone() for k, v in criterion.state_dict().items()}
        out.append({"loss": loss.detach(), "g0": a.grad, "g1": b.grad, "state": state})
    return out


def full_batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    z0 = torch.randn(WORLD * N, D, generator=gen, dtype=torch.float64)
    return z0, z0 + 0.8 * torch.randn(WORLD * N, D, generator=gen, dtype=torch.float64)


def rank_input(r: int) -> torch.Tensor:
    return torch.randn(N, D, dtype=torch.float64, generator=torch.Generator().manual_seed(r))


def new_queue() -> QueueInfoNCELoss:
    torch.manual_seed(123)  # the same initial queue in every process
    return QueueInfoNCELoss(CosineTemperature(0.1, 0.2), queue_size=8, dim=D).double()


def run(criterion: nn.Module, z0: torch.Tensor, z1: torch.Tensor) -> dict[str, object]:
    a, b = z0.clone().requires_grad_(), z1.clone().requires_grad_()
    loss = criterion(a, b)
    loss.backward()
    return {"loss": loss.detach(), "g0": a.grad, "g1": b.grad, "diagnostics": criterion.diagnostics}


def worker(rank_: int, port: int, out: str) -> None:
    with gloo_group(rank_, WORLD, port):
        torch.set_num_threads(1)
        assert (world_size(), rank()) == (WORLD, rank_)
        z0, z1 = full_batch()
        local = slice(rank_ * N, (rank_ + 1) * N)
        results: dict[str, object] = {name: run(make(), z0[local], z1[local]) for name, make in CASES.items()}
        results["local-only"] = run(InfoNCELoss(0.2, gather_distributed=False), z0[local], z1[local])
        queue = new_queue()
        results["queue"] = [run(queue, z0[local], z1[local]) for _ in range(2)]
        results["queue-state"] = queue.state_dict()
        results["isogclr"] = run_isogclr(new_isogclr(), z0[local], z1[local], ISOG_INDEX[local])
        # gather_with_grad alone: rank r's loss sum(y * c_r); x_r's gradient is sum_q c_q[slice r]
        x = rank_input(rank_).requires_grad_()
        y = gather_with_grad(x)
        c = torch.arange(WORLD * N * D, dtype=torch.float64).view(WORLD * N, D) * (rank_ + 1)
        (y * c).sum().backward()
        results["gather"] = {"y": y.detach(), "grad": x.grad}
        torch.save(results, Path(out) / f"rank{rank_}.pt")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(worker, args=(free_port(), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.mark.parametrize("name", list(CASES))
def test_loss_and_gradients_equal_one_process(ranks: list[dict], name: str) -> None:
    z0, z1 = full_batch()
    single = run(CASES[name](), z0, z1)
    # the mean of the ranks' losses (what DDP reports) is the whole-batch loss
    mean = sum(r[name]["loss"] for r in ranks) / WORLD
    assert mean.item() == pytest.approx(single["loss"].item(), rel=1e-12)
    # DDP averages the ranks' gradients: rank r's gradient / WORLD is the whole-batch gradient of its slice
    for r, result in enumerate(ranks):
        local = slice(r * N, (r + 1) * N)
        torch.testing.assert_close(result[name]["g0"] / WORLD, single["g0"][local], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(result[name]["g1"] / WORLD, single["g1"][local], rtol=1e-10, atol=1e-12)
    # equal local batches: the mean of the ranks' diagnostics is the whole-batch diagnostic
    for key, value in single["diagnostics"].items():
        got = sum(r[name]["diagnostics"][key] for r in ranks) / WORLD
        assert got.item() == pytest.approx(value.item(), rel=1e-10), key


def test_without_gathering_each_rank_uses_its_local_negatives(ranks: list[dict]) -> None:
    z0, z1 = full_batch()
    for r, result in enumerate(ranks):
        local = slice(r * N, (r + 1) * N)
        alone = run(InfoNCELoss(0.2), z0[local], z1[local])
        assert result["local-only"]["loss"].item() == pytest.approx(alone["loss"].item(), rel=1e-12)
        torch.testing.assert_close(result["local-only"]["g0"], alone["g0"])


def test_queue_matches_one_process(ranks: list[dict]) -> None:
    z0, z1 = full_batch()
    queue = new_queue()
    for step in range(2):
        single = run(queue, z0, z1)
        mean = sum(r["queue"][step]["loss"] for r in ranks) / WORLD
        assert mean.item() == pytest.approx(single["loss"].item(), rel=1e-12)
        for r, result in enumerate(ranks):
            local = slice(r * N, (r + 1) * N)
            torch.testing.assert_close(result["queue"][step]["g0"] / WORLD, single["g0"][local])
    for result in ranks:  # every rank enqueued the keys of all ranks, in rank order
        torch.testing.assert_close(result["queue-state"]["queue"], queue.queue)
        assert result["queue-state"]["queue_ptr"].item() == queue.queue_ptr.item() == (2 * WORLD * N) % 8


def test_isogclr_matches_one_process_and_keeps_one_state_on_every_rank(ranks: list[dict]) -> None:
    """Each rank updates its own images; every rank writes all of them: the state equals the one
    process's on the whole batch, on every rank, after each step."""
    z0, z1 = full_batch()
    single = run_isogclr(new_isogclr(), z0, z1, ISOG_INDEX)
    for step in range(2):
        mean = sum(r["isogclr"][step]["loss"] for r in ranks) / WORLD
        assert mean.item() == pytest.approx(single[step]["loss"].item(), rel=1e-12)
        for r, result in enumerate(ranks):
            local = slice(r * N, (r + 1) * N)
            mine = result["isogclr"][step]
            torch.testing.assert_close(mine["g0"] / WORLD, single[step]["g0"][local], rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(mine["g1"] / WORLD, single[step]["g1"][local], rtol=1e-10, atol=1e-12)
            for key, value in single[step]["state"].items():
                torch.testing.assert_close(mine["state"][key], value, rtol=1e-12, atol=0, equal_nan=True)
    touched = single[1]["state"]["tau"][ISOG_INDEX]
    assert (touched != single[1]["state"]["tau"][1]).all()  # images 1, 4, 6, 8 were never in a batch


def test_gather_with_grad_routes_every_slice(ranks: list[dict]) -> None:
    xs = [rank_input(r) for r in range(WORLD)]
    c = torch.arange(WORLD * N * D, dtype=torch.float64).view(WORLD * N, D)
    total = sum(c * (q + 1) for q in range(WORLD))
    for r, result in enumerate(ranks):
        torch.testing.assert_close(result["gather"]["y"], torch.cat(xs))
        torch.testing.assert_close(result["gather"]["grad"], total[r * N : (r + 1) * N])


def test_single_process_is_the_identity() -> None:
    x = torch.randn(4, 3, requires_grad=True)
    assert gather_with_grad(x) is x and world_size() == 1 and rank() == 0
