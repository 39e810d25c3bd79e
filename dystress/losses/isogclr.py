"""iSogCLR: a temperature per training sample, learned by a distributionally robust objective.

Qiu et al., "Not All Semantics are Created Equal: Contrastive Self-supervised Learning with Automatic
Temperature Individualization", ICML 2023 (arXiv 2305.11965). Anchor i (a view of training image
i, index in the data set) has its own tau_i and minimises

    F_i(w, tau_i) = tau_i log g_i(w, tau_i) + tau_i rho,   g_i = mean_k exp(s_ik / tau_i)

over its 2N - 2 negatives k (the KL-constrained DRO dual; a larger tau_i spreads the weight over more
negatives). g_i is estimated across epochs by a moving average u_i <- (1 - gamma) u_i + gamma g_i
(the first visit takes g_i), so that each step's gradient is, with p_ik = exp(s_ik / tau_i) / u_i
(stop-gradient),

    network:      grad of  mean_k p_ik s_ik - s_ip                       (the surrogate loss)
    temperature:  G_i = log u_i + rho - mean_k p_ik s_ik / tau_i          (dF_i / dtau_i)

and tau_i moves by its own momentum step m_i <- (1 - beta) m_i + beta clip(G_i), tau_i <- clamp(tau_i
- eta m_i, tau_min, tau_max). The two views of an image share tau_i, u_i and m_i: each view's row
gives its own estimate, and the stored u_i and the gradient G_i are the two views' means. The values
are the reference code's (see :class:`~dystress.temperature.ISogCLRTemperature`); u is kept as log u,
in float32 or wider, so any tau_min is safe from overflow.

Two choices differ from the reference code, both documented in docs/STUDY.md: the first visit of an
image takes u_i = g_i (the reference code's later fix; the paper's code took gamma g_i), and the loss
is the mean over the 2N anchors like every other loss here (the reference sums the two views, twice
the gradient at the same learning rate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dystress import regime
from dystress._checks import as_bool, as_int
from dystress.distributed import all_gather_no_grad
from dystress.losses._logits import (
    TemperatureLoss,
    check_negatives,
    check_pair,
    full_precision,
    pair_diagnostics,
    two_view_batch,
)
from dystress.temperature import ISogCLRTemperature

__all__ = ["SIMILARITY_BINS", "ISogCLRLoss", "SampleState", "isogclr"]

#: Equal-count bins of the images' mean similarity in the record's ``tau_by_similarity``.
SIMILARITY_BINS = 10


@dataclass(frozen=True)
class SampleState:
    """iSogCLR's per-sample state for a set of samples: ``tau``, ``log_u`` (log of the moving average
    u; -inf: not visited yet) and ``momentum`` (of the temperature gradient), each [n]; and, for
    analysis only (the method does not read it), ``mean_similarity`` [n]: each image's mean similarity
    to its negatives at its last visit (its two views' mean), or None."""

    tau: Tensor
    log_u: Tensor
    momentum: Tensor
    mean_similarity: Tensor | None = None


def isogclr(
    z0: Tensor,
    z1: Tensor,
    state: SampleState,
    settings: ISogCLRTemperature,
    *,
    gather_distributed: bool = True,
) -> tuple[Tensor, SampleState, dict[str, Tensor]]:
    """iSogCLR's surrogate loss and its samples' next state (module docstring): a pure function.

    Args:
        z0, z1: projections of the two views [n, D] of n training images; n x world size >= 2.
        state: the n images' current state (:class:`SampleState`, each [n]).
        settings: the :class:`~dystress.temperature.ISogCLRTemperature` (rho, gamma, beta, eta, ...).
        gather_distributed: negatives from every rank under ``torch.distributed``.

    Returns:
        The loss (0-dim; its gradient is iSogCLR's network gradient, its value is not an InfoNCE
        value), the n images' next :class:`SampleState` (detached) and the detached 0-dim diagnostics
        ``tau_pos`` = ``tau_neg`` (mean tau_i of the anchors), ``sim_pos``, ``sim_neg``.

    Example:
        >>> import torch
        >>> n, settings = 4, ISogCLRTemperature()
        >>> state = SampleState(torch.full((n,), 0.1), torch.full((n,), -torch.inf), torch.zeros(n))
        >>> loss, new, _ = isogclr(torch.ones(n, 8), torch.ones(n, 8), state, settings)
        >>> round(float(loss), 4), round(float(new.log_u[0]), 4)  # all s = 1: 1 - 1, g = e^10
        (0.0, 10.0)
    """
    if not isinstance(settings, ISogCLRTemperature):
        raise ValueError(f"settings must be an ISogCLRTemperature, got {type(settings).__name__}")
    as_bool("gather_distributed", gather_distributed)
    check_pair(z0, z1)
    _check_state(state, z0.shape[0])
    check_negatives("ISogCLRLoss", z0, gather_distributed)
    with full_precision(z0):
        batch = two_view_batch(z0, z1, gather_distributed)
        sim = batch.anchors @ batch.candidates.T  # [2n, C]
        num_negatives = sim.shape[1] - 2
        tau = torch.cat([state.tau, state.tau]).to(sim.dtype)  # [2n]: both views' rows
        with torch.no_grad():
            scaled = sim.detach() / tau[:, None]
            scaled.scatter_(1, batch.excluded, torch.finfo(scaled.dtype).min)  # exp(.) = 0 there
            log_g = torch.logsumexp(scaled, dim=1) - math.log(num_negatives)
            log_u = _moving_average(
                torch.cat([state.log_u, state.log_u]).to(sim.dtype), log_g, settings.gamma
            )
            weights = torch.exp(scaled - log_u[:, None])  # p_ik [2n, C], 0 on the excluded columns
            grad_tau = log_u + settings.rho - (weights * scaled).sum(dim=1) / num_negatives
        loss = ((weights * sim).sum(dim=1) / num_negatives - batch.positive_similarity).mean()
        with torch.no_grad():
            masked = sim.detach().scatter(1, batch.excluded, 0.0)
            mean_similarity = masked.sum(dim=1) / num_negatives  # [2n]
        new_state = _next_state(state, log_u, grad_tau, mean_similarity, settings)
        s_pos = batch.positive_similarity.detach()
        regime.observe(sim.detach(), s_pos, batch.excluded, None)
        diagnostics = pair_diagnostics(
            batch.anchors, batch.candidates, sim, tau.mean(), tau, s_pos, batch.excluded
        )
    return loss, new_state, diagnostics


def _check_state(state: SampleState, n: int) -> None:
    if not isinstance(state, SampleState):
        raise ValueError(f"state must be a SampleState(tau, log_u, momentum), got {type(state).__name__}")
    for name in ("tau", "log_u", "momentum"):
        value = getattr(state, name)
        if not isinstance(value, Tensor) or not value.is_floating_point() or tuple(value.shape) != (n,):
            what = (
                f"shape {tuple(value.shape)} {value.dtype}"
                if isinstance(value, Tensor)
                else type(value).__name__
            )
            raise ValueError(f"state.{name} must be a floating-point tensor [n] = [{n}], got {what}")


def _moving_average(log_u_old: Tensor, log_g: Tensor, gamma: float) -> Tensor:
    """log((1 - gamma) u + gamma g) per row; log g where u is not estimated yet (log u = -inf)."""
    if gamma == 1.0:
        return log_g
    mixed = torch.logaddexp(log_u_old + math.log1p(-gamma), log_g + math.log(gamma))
    return torch.where(torch.isneginf(log_u_old), log_g, mixed)


def _next_state(
    state: SampleState,
    log_u_rows: Tensor,
    grad_rows: Tensor,
    similarity_rows: Tensor,
    settings: ISogCLRTemperature,
) -> SampleState:
    """The two views' rows [2n] averaged per image; the momentum step on tau, clamped."""
    n = state.tau.shape[0]
    dtype = state.tau.dtype
    log_u = (torch.logaddexp(log_u_rows[:n], log_u_rows[n:]) - math.log(2.0)).to(dtype)
    grad = ((grad_rows[:n] + grad_rows[n:]) / 2).clamp(-settings.grad_clip, settings.grad_clip).to(dtype)
    momentum = state.momentum * (1.0 - settings.beta) + grad * settings.beta
    tau = (state.tau - settings.eta * momentum).clamp(settings.tau_min, settings.tau_max)
    mean_similarity = ((similarity_rows[:n] + similarity_rows[n:]) / 2).to(dtype)
    return SampleState(tau, log_u, momentum, mean_similarity)


class ISogCLRLoss(TemperatureLoss):
    """iSogCLR (Qiu et al., ICML 2023): contrastive loss with a learned temperature per training image.

    Keeps, for each of the ``num_samples`` training images, tau_i, log u_i and the momentum m_i as
    buffers (2 floats per image plus the momentum: ``state_dict`` and so checkpoints include them).
    Called as ``loss(z0, z1, index)`` with the images' indices in the training set (the loaders yield
    them); each call updates the batch's entries (module docstring for the algorithm). Under
    ``torch.distributed`` each rank computes its own images' updates and every rank writes all of
    them, so the state stays the same on every rank. The module form of :func:`isogclr`; the config's
    ``temperature: isogclr`` builds it. Indices must lie in [0, num_samples) (not checked: no host
    sync); an index repeated within a global batch keeps one of its updates.

    Args:
        num_samples: the training set's size, >= 2.
        tau_init, tau_min, tau_max, rho, gamma, beta, eta, grad_clip: the
            :class:`~dystress.temperature.ISogCLRTemperature` settings.
        gather_distributed: negatives (and the state's updates) from every rank.

    After each call ``diagnostics`` holds detached 0-dim tensors ``tau_pos`` = ``tau_neg`` (the
    anchors' mean tau_i), ``sim_pos``, ``sim_neg``.

    Example:
        >>> import torch
        >>> criterion = ISogCLRLoss(num_samples=100)
        >>> z0, z1 = torch.randn(8, 16), torch.randn(8, 16)  # projections of images 0..7, [N, D]
        >>> criterion(z0, z1, torch.arange(8)).shape
        torch.Size([])
        >>> bool((criterion.tau[:8] != 0.1).all()), bool((criterion.tau[8:] == 0.1).all())
        (True, True)
    """

    temperature: ISogCLRTemperature
    #: The training loop passes each image's index in the training set.
    needs_index = True

    def __init__(
        self,
        num_samples: int,
        tau_init: float = 0.1,
        tau_min: float = 0.05,
        tau_max: float = 1.0,
        rho: float = 0.4,
        gamma: float = 0.8,
        beta: float = 0.5,
        eta: float = 0.03,
        grad_clip: float = 3.0,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        self.temperature = ISogCLRTemperature(tau_init, tau_min, tau_max, rho, gamma, beta, eta, grad_clip)
        self.num_samples = as_int("num_samples", num_samples, minimum=2)
        self.gather_distributed = as_bool("gather_distributed", gather_distributed)
        self.register_buffer("tau", torch.full((self.num_samples,), float(tau_init)))
        self.register_buffer("log_u", torch.full((self.num_samples,), -math.inf))
        self.register_buffer("tau_momentum", torch.zeros(self.num_samples))
        self.register_buffer("mean_similarity", torch.full((self.num_samples,), math.nan))  # analysis only
        self.diagnostics: dict[str, Tensor] = {}

    def forward(self, z0: Tensor, z1: Tensor, index: Tensor) -> Tensor:
        """Loss (0-dim) for projections z0, z1 [n, D] of the training images ``index`` [n] (int64)."""
        if not isinstance(index, Tensor) or index.dtype != torch.int64 or index.ndim != 1:
            what = (
                f"a {index.dtype} tensor of shape {tuple(index.shape)}"
                if isinstance(index, Tensor)
                else repr(index)
            )
            raise ValueError(f"index must be an int64 tensor [n] of training-set indices, got {what}")
        if isinstance(z0, Tensor) and index.shape[0] != z0.shape[0]:
            raise ValueError(f"index must have one entry per row of z0 ({z0.shape[0]}), got {index.shape[0]}")
        state = SampleState(self.tau[index], self.log_u[index], self.tau_momentum[index])
        loss, new, self.diagnostics = isogclr(
            z0, z1, state, self.temperature, gather_distributed=self.gather_distributed
        )
        self._write(index, new)
        return loss

    @torch.no_grad()
    def _write(self, index: Tensor, new: SampleState) -> None:
        """Store the batch's next state; every rank's, when gathering across ranks."""
        values = torch.stack([new.tau, new.log_u, new.momentum, new.mean_similarity], dim=1)  # [n, 4]
        if self.gather_distributed:
            index, values = all_gather_no_grad(index), all_gather_no_grad(values)
        buffers = (self.tau, self.log_u, self.tau_momentum, self.mean_similarity)
        for buffer, column in zip(buffers, values.unbind(1), strict=True):
            buffer.index_copy_(0, index, column.to(buffer.dtype))

    def record(self, labels: Tensor | None = None) -> dict[str, Any]:
        """The per-sample taus of the images visited so far, for the epoch's record: quantiles 5/50/95 %
        (``tau_sample_q05`` ...); ``tau_by_similarity``: the visited images in :data:`SIMILARITY_BINS`
        equal-count bins of their mean similarity to their negatives, as ``[mean similarity, mean tau,
        images]`` per bin; and, given the training labels [num_samples], each class's mean tau
        (``tau_sample_class_mean``, a list; None for a class with no visited image)."""
        visited = ~torch.isneginf(self.log_u)
        taus = self.tau[visited].double()
        out: dict[str, Any] = {}
        for q in (5, 50, 95):
            out[f"tau_sample_q{q:02d}"] = float(torch.quantile(taus, q / 100)) if taus.numel() else None
        similarity, order = self.mean_similarity[visited].double().sort()
        out["tau_by_similarity"] = [
            [float(s.mean()), float(t.mean()), int(t.numel())]
            for s, t in zip(
                similarity.tensor_split(SIMILARITY_BINS),
                taus[order].tensor_split(SIMILARITY_BINS),
                strict=True,
            )
            if t.numel()
        ]
        if labels is not None:
            labels = labels.to(self.tau.device)
            classes = int(labels.max()) + 1 if labels.numel() else 0
            sums = torch.zeros(classes, dtype=torch.float64, device=self.tau.device)
            counts = torch.zeros_like(sums)
            sums.index_add_(0, labels[visited], taus)
            counts.index_add_(0, labels[visited], torch.ones_like(taus))
            out["tau_sample_class_mean"] = [
                float(s / c) if c else None for s, c in zip(sums, counts, strict=True)
            ]
        return out

    def extra_repr(self) -> str:
        return (
            f"num_samples={self.num_samples}, temperature={self.temperature!r}, "
            f"gather_distributed={self.gather_distributed}"
        )
