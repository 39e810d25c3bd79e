"""MoCo-style InfoNCE against a FIFO queue of negatives, with a per-pair temperature."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dystress._checks import as_bool, as_int
from dystress.distributed import all_gather_no_grad
from dystress.losses._logits import (
    TemperatureLoss,
    check_pair,
    contrastive_terms,
    full_precision,
    infonce_nll,
    loss_temperature,
    normalized,
)
from dystress.temperature import TemperatureFunction


class QueueInfoNCELoss(TemperatureLoss):
    """InfoNCE of queries against their keys (positives) and a queue of K past keys (negatives).

    MoCo (He et al., CVPR 2020; v2: Chen et al. 2020, tau 0.2, K = 65536). For query i::

        l_ij = s_ij / tau(s_ij),   loss_i = -log exp(l_ik_i) / (exp(l_ik_i) + sum_{j in queue} exp(l_ij))

    averaged over the local queries; keys are detached. In training mode the (normalised, gathered
    across ranks) keys are enqueued after the loss, first in first out. The queue and its write pointer
    are buffers: they move with ``.to(device)`` and are saved in ``state_dict``. The queue starts as
    random unit vectors, as in MoCo.

    The queue always holds K >= 1 negatives, so any N >= 1 works (N = 1 included). Non-tensor inputs
    raise ``ValueError``; values are not checked (no host sync): an all-zero query gives every logit 0,
    hence the finite log(K + 1), and a NaN gives a NaN loss.

    Args:
        temperature: a fixed tau > 0 or a :class:`~dystress.temperature.TemperatureFunction` other
            than MACL's (MACL is the two-view :class:`~dystress.losses.MACLLoss`).
        queue_size: K >= 1 negatives.
        dim: projection dimension D >= 1.
        detach_temperature: compute tau from detached similarities. False keeps the gradient through
            tau(s_ij): pairwise functions only (a constant or the TS schedule has no gradient).
        gather_distributed: enqueue the keys of every rank.

    After each call ``diagnostics`` holds detached 0-dim tensors ``tau_pos``, ``tau_neg``, ``sim_pos``,
    ``sim_neg``. An epoch-dependent temperature (TS) must be told the epoch: call :meth:`set_epoch` at
    the start of every epoch, or tau stays tau_plus for the whole run.

    Example:
        >>> import torch
        >>> from dystress.temperature import CosineScheduleTemperature, CosineTemperature
        >>> criterion = QueueInfoNCELoss(CosineTemperature(0.1, 0.2), queue_size=4096, dim=128)
        >>> queries, keys = torch.randn(256, 128), torch.randn(256, 128)  # model(x0), momentum model(x1)
        >>> criterion(queries, keys).shape, criterion.queue.shape
        (torch.Size([]), torch.Size([4096, 128]))
        >>> ts = QueueInfoNCELoss(CosineScheduleTemperature(1.0, 0.1, period=4), queue_size=64, dim=128)
        >>> for epoch in range(3):  # a hand-written loop: step the TS schedule every epoch
        ...     ts.set_epoch(epoch)
        ...     loss = ts(queries, keys)
        >>> round(float(ts.diagnostics["tau_pos"]), 4)  # epoch 2 = period / 2: tau_minus
        0.1
    """

    queue: Tensor
    queue_ptr: Tensor

    def __init__(
        self,
        temperature: float | TemperatureFunction = 0.2,
        queue_size: int = 65536,
        dim: int = 128,
        detach_temperature: bool = True,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        self.temperature = loss_temperature(temperature, "QueueInfoNCE")
        queue_size, dim = as_int("queue_size", queue_size, minimum=1), as_int("dim", dim, minimum=1)
        self.detach_temperature = as_bool("detach_temperature", detach_temperature)
        self.gather_distributed = as_bool("gather_distributed", gather_distributed)
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.diagnostics: dict[str, Tensor] = {}

    def forward(self, query: Tensor, key: Tensor) -> Tensor:
        """Loss (0-dim) for queries [N, D] and their keys [N, D] (key is detached)."""
        check_pair(query, key, ("query", "key"))
        if query.shape[1] != self.queue.shape[1]:
            dim = self.queue.shape[1]
            raise ValueError(f"query must have D = {dim} (the queue dim), got {tuple(query.shape)}")
        with full_precision(query):
            q = normalized(query)
            k = normalized(key.detach())
            # A copy: the enqueue below must not modify a tensor saved for backward.
            negatives = self.queue.to(dtype=q.dtype, copy=True)
            terms = contrastive_terms(
                q,
                negatives,
                (q * k).sum(dim=1),
                self.temperature,
                detach_temperature=self.detach_temperature,
            )
            loss = infonce_nll(terms).mean()
        self.diagnostics = terms.diagnostics
        if self.training:
            self._enqueue(all_gather_no_grad(k) if self.gather_distributed else k)
        return loss

    @torch.no_grad()
    def _enqueue(self, keys: Tensor) -> None:
        """Write keys [B, D] at the pointer (wrapping around), oldest first out; no host sync."""
        size, count = self.queue.shape[0], keys.shape[0]
        kept = keys[-size:]  # more keys than slots: the first ones would be overwritten anyway
        start = self.queue_ptr + (count - kept.shape[0])
        index = (start + torch.arange(kept.shape[0], device=self.queue.device)) % size
        self.queue.index_copy_(0, index, kept.to(self.queue.dtype))
        self.queue_ptr.copy_((self.queue_ptr + count) % size)

    def extra_repr(self) -> str:
        size, dim = self.queue.shape
        return f"temperature={self.temperature!r}, queue_size={size}, dim={dim}"
