"""Forward + backward time of the contrastive losses: fixed tau vs DySTreSS and the other temperatures
(the learned ones and the temperature-free loss included; iSogCLR with its state update).

    python benchmarks/loss_bench.py                 # N = 256, 512, 1024, 4096, D = 128
    python benchmarks/loss_bench.py --quick         # N = 256, 1024
    python benchmarks/loss_bench.py --device cuda --dtype bfloat16

Prints a Markdown table: median milliseconds per forward + backward (after warm-up, CUDA-synchronised,
the losses timed round-robin) and the ratio to the first case (fixed-tau InfoNCE) at the same N.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from dystress.losses import DCLLoss, InfoNCELoss, ISogCLRLoss, MACLLoss, TemperatureFreeLoss
from dystress.runtime import device_name
from dystress.temperature import (
    CosineScheduleTemperature,
    CosineTemperature,
    ExponentialTemperature,
    LearnedTemperature,
    LinearTemperature,
    OneSidedCosineTemperature,
    ShiftedCosineTemperature,
)


class _WithIndex(nn.Module):
    """A loss with per-image state (iSogCLR) called on images 0..n-1 of a 50,000-image training set."""

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, z0: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
        return self.loss(z0, z1, torch.arange(z0.shape[0], device=z0.device))


CASES: dict[str, Callable[[], nn.Module]] = {
    "InfoNCE, fixed tau 0.1": lambda: InfoNCELoss(0.1),
    "DySTreSS (cosine 0.1-0.2)": lambda: InfoNCELoss(CosineTemperature(0.1, 0.2)),
    "DySTreSS* (shifted -0.4, 0.7)": lambda: InfoNCELoss(ShiftedCosineTemperature(0.1, 0.2, -0.4, 0.7)),
    "one-sided cosine": lambda: InfoNCELoss(OneSidedCosineTemperature(0.1, 0.2)),
    "linear": lambda: InfoNCELoss(LinearTemperature(0.1, 0.2)),
    "exponential": lambda: InfoNCELoss(ExponentialTemperature(0.1, 0.2)),
    "TS schedule": lambda: InfoNCELoss(CosineScheduleTemperature()),
    "MACL": lambda: MACLLoss(),
    "learned global tau": lambda: InfoNCELoss(LearnedTemperature(0.1)),
    "iSogCLR (per-image tau)": lambda: _WithIndex(ISogCLRLoss(num_samples=50_000)),
    "temperature-free": lambda: TemperatureFreeLoss(),
    "DCL, fixed tau 0.1": lambda: DCLLoss(0.1),
    "DCLW, cosine 0.1-0.2": lambda: DCLLoss(CosineTemperature(0.1, 0.2), weighted=True),
}


def time_losses(
    losses: dict[str, nn.Module],
    n: int,
    dim: int,
    device: torch.device,
    dtype: torch.dtype,
    warmup: int,
    repeats: int,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Median seconds of one forward + backward on random [n, dim] projections, per loss.

    The losses are timed round-robin (one call of each per round), so that a change of machine load
    (shared CPUs) affects every loss alike and the ratios stay meaningful.
    """
    gen = torch.Generator(device="cpu").manual_seed(0)
    z0 = torch.randn(n, dim, generator=gen).to(device=device, dtype=dtype).requires_grad_()
    z1 = torch.randn(n, dim, generator=gen).to(device=device, dtype=dtype).requires_grad_()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times: dict[str, list[float]] = {name: [] for name in losses}
    for step in range(warmup + repeats):
        for name, loss in losses.items():
            z0.grad = z1.grad = None
            sync()
            start = clock()
            loss(z0, z1).backward()
            sync()
            if step >= warmup:
                times[name].append(clock() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 4096])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="N = 256, 1024 only")
    parser.add_argument("--cases", nargs="+", default=list(CASES), help="subset of the case names")
    parser.add_argument(
        "--clock",
        choices=["wall", "process"],
        default="wall",
        help="wall clock (default) or this process's CPU time (CPU only: robust on a shared, loaded machine)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    sizes = [256, 1024] if args.quick else args.sizes
    unknown = sorted(set(args.cases) - set(CASES))
    if unknown:
        parser.error(f"unknown cases {unknown}; known: {list(CASES)}")
    if args.clock == "process" and device.type != "cpu":
        parser.error("--clock process measures CPU time: use it with --device cpu")
    clock = time.process_time if args.clock == "process" else time.perf_counter

    name = device_name(device)
    print(
        f"device: {name}; inputs {args.dtype}; D = {args.dim}; {args.clock} clock; "
        f"median of {args.repeats} after {args.warmup} warm-up"
    )
    print(f"torch {torch.__version__}\n")
    header = "| loss | " + " | ".join(f"N = {n}" for n in sizes) + " |"
    print(header)
    print("|" + " --- |" * (len(sizes) + 1))
    results = {}
    for n in sizes:
        losses = {case: CASES[case]().to(device) for case in args.cases}
        results[n] = time_losses(losses, n, args.dim, device, dtype, args.warmup, args.repeats, clock)
    for case in args.cases:
        cells = []
        for n in sizes:
            seconds, baseline = results[n][case], results[n][args.cases[0]]
            cells.append(f"{seconds * 1e3:.2f} ms ({seconds / baseline:.2f}x)")
        print(f"| {case} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
