"""Differentiable all-gather for contrastive losses with negatives from every rank.

With world size W and a local batch x [n, ...] on every rank (same n everywhere),
:func:`gather_with_grad` returns the concatenation [W n, ...] ordered by rank. Its backward sums the
incoming gradients over ranks (all_reduce) and keeps this rank's slice: every rank's loss depends on
every rank's samples, so the gradient of the sum of all ranks' losses reaches each sample. With losses
averaged over local anchors, DDP's gradient averaging then equals one process on the whole batch.

Without an initialised process group, or with W = 1, everything here is the identity.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["all_gather_no_grad", "gather_with_grad", "is_distributed", "rank", "world_size"]


def is_distributed() -> bool:
    """True inside an initialised ``torch.distributed`` process group."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes (1 outside a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if is_distributed() else 0


def _all_gather(x: Tensor) -> Tensor:
    x = x.contiguous()
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x)
    return torch.cat(parts, dim=0)


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # noqa: ANN001
        ctx.local_size = x.shape[0]
        return _all_gather(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: ANN001
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        n = ctx.local_size
        return grad[dist.get_rank() * n : (dist.get_rank() + 1) * n]


def gather_with_grad(x: Tensor) -> Tensor:
    """All-gather x [n, ...] from every rank into [W n, ...] (rank order), differentiably.

    All ranks must pass the same shape. The identity when not distributed.
    """
    if world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


def all_gather_no_grad(x: Tensor) -> Tensor:
    """All-gather x [n, ...] into [W n, ...] (rank order) without gradient (statistics, queue keys)."""
    if world_size() == 1:
        return x.detach()
    with torch.no_grad():
        return _all_gather(x.detach())
