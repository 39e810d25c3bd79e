"""Shared core of the contrastive losses: per-pair-temperature logits, reduced to two numbers per anchor.

Every loss here (InfoNCE, its MoCo-queue form, DCL) needs, for each anchor i, the positive logit
l_ip = s_ip / tau(s_ip) and the log-sum-exp of its negative logits l_ik = s_ik / tau(s_ik); they differ
only in how they combine the two. :func:`contrastive_terms` computes both from one [A, C] similarity
matrix, by log-sum-exp (never exp, sum, log), in float32 or wider. A loss gives it a pairwise
temperature function or the batch's one tau (a 0-dim tensor): :func:`loss_temperature` is where the
losses refuse MACL's temperature, which only :class:`~dystress.losses.MACLLoss` knows how to use.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dystress import regime
from dystress.distributed import gather_with_grad, rank, world_size
from dystress.temperature import (
    FreeTemperature,
    GlobalTemperature,
    ISogCLRTemperature,
    LearnedTemperature,
    MACLTemperature,
    TemperatureFunction,
    _as_epoch,
    as_temperature,
)

#: Temperatures that only a loss of their own can use: that loss's class name, and what the others lack.
#: The one table of that pairing: :func:`dystress.losses.build_loss` reads it too.
OWN_LOSS: dict[type[TemperatureFunction], tuple[str, str]] = {
    MACLTemperature: (
        "MACLLoss",
        "needs P(positive) and the batch's positive pairs, which {loss} does not give it",
    ),
    ISogCLRTemperature: ("ISogCLRLoss", "is per training image and learned, which {loss} does not keep"),
    FreeTemperature: (
        "TemperatureFreeLoss",
        "replaces s / tau by the logit 2 artanh(s), differentiated through the mapping, "
        "which {loss} does not",
    ),
}


@dataclass(frozen=True)
class ContrastiveTerms:
    """Per-anchor terms: ``positive`` [A] = l_ip; ``negative_lse`` [A] = log sum_k exp(l_ik), k negative."""

    positive: Tensor
    negative_lse: Tensor
    diagnostics: dict[str, Tensor]


@dataclass(frozen=True)
class TwoViewBatch:
    """SimCLR layout of a two-view batch, normalised (see :func:`two_view_batch`).

    ``anchors`` [2n, D] = [z0; z1] (local); ``candidates`` [2N, D] = every rank's anchors when gathering
    (else the anchors); ``excluded`` [2n, 2] = each anchor's own column and its positive's;
    ``pair_similarity`` [n] = the positive pairs' similarities and ``positive_similarity`` [2n] = s_ip
    per anchor (the pairs twice; grad attached); ``distributed`` = gathered across ranks.
    """

    anchors: Tensor
    candidates: Tensor
    excluded: Tensor
    pair_similarity: Tensor
    positive_similarity: Tensor
    distributed: bool


def loss_temperature(temperature: float | TemperatureFunction, loss: str) -> TemperatureFunction:
    """``temperature`` as a TemperatureFunction for ``loss``; ValueError for one that needs its own loss.

    MACL's tau comes from the batch's positive pairs and its anchor weights from P(positive)
    (:class:`~dystress.losses.MACLLoss`); iSogCLR's taus are per training sample
    (:class:`~dystress.losses.ISogCLRLoss`); the temperature-free logit has its gradient through the
    mapping (:class:`~dystress.losses.TemperatureFreeLoss`). ``build_loss("infonce", t)`` returns the
    right loss for each.
    """
    temperature = as_temperature(temperature)
    own = OWN_LOSS.get(type(temperature))
    if own is not None:
        params = ", ".join(f"{k}={v:g}" for k, v in temperature.params().items())
        lacks = own[1].format(loss=loss)
        raise ValueError(f"temperature {temperature!r} {lacks}; use {own[0]}({params})")
    return temperature


@contextlib.contextmanager
def full_precision(reference: Tensor) -> Iterator[None]:
    """Disable autocast on ``reference``'s device: the loss runs in float32 (or float64) under AMP.

    A device without autocast (``meta``) has none to disable: the loss runs as it is.
    """
    device = reference.device.type
    context = torch.autocast(device, enabled=False) if torch.amp.is_autocast_available(device) else None
    with context or contextlib.nullcontext():
        yield


def normalized(z: Tensor) -> Tensor:
    """Projections z [N, D] (validated by :func:`check_pair`), L2-normalised and upcast to >= float32."""
    return F.normalize(z.to(torch.promote_types(z.dtype, torch.float32)), dim=1)


def check_pair(z0: Tensor, z1: Tensor, names: tuple[str, str] = ("z0", "z1")) -> None:
    """Raise ValueError unless both are floating-point torch.Tensors [N, D] (N, D >= 1) of the same shape.

    Types first: nothing else (autocast, normalisation) may touch a non-tensor.
    """
    for z, name in zip((z0, z1), names, strict=True):
        if not isinstance(z, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor [N, D], got {type(z).__name__}")
    for z, name in zip((z0, z1), names, strict=True):
        if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] == 0:
            raise ValueError(f"{name} must have shape [N, D] with N, D >= 1, got {tuple(z.shape)}")
        if not z.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {z.dtype}")
    if z0.shape != z1.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape, got {tuple(z0.shape)} and {tuple(z1.shape)}"
        )


def check_negatives(loss: str, z0: Tensor, gather_distributed: bool) -> bool:
    """Raise ValueError unless the two-view batch has N >= 2 samples, N = n x world size when gathering.

    With one sample no anchor has a negative. Returns whether the batch is gathered across ranks.
    """
    distributed = gather_distributed and world_size() > 1
    ranks = world_size() if distributed else 1
    if z0.shape[0] * ranks < 2:
        raise ValueError(
            f"{loss} needs N >= 2 samples (a negative per anchor; N = local batch x world size when "
            f"gathering across ranks), got shape {tuple(z0.shape)} with world size {ranks}"
        )
    return distributed


def contrastive_terms(
    anchors: Tensor,
    candidates: Tensor,
    positive_similarity: Tensor,
    temperature: TemperatureFunction | Tensor,
    *,
    excluded: Tensor | None = None,
    detach_temperature: bool = True,
) -> ContrastiveTerms:
    """Positive logits and negatives' log-sum-exp with a per-pair temperature.

    Args:
        anchors: normalised anchors [A, D].
        candidates: normalised candidates [C, D]; the negatives of anchor i are all candidates except
            the columns ``excluded[i]``.
        positive_similarity: s_ip [A], each anchor's cosine similarity with its positive.
        temperature: tau(s), evaluated on every entry of the [A, C] matrix, or the batch's one tau: a
            :class:`~dystress.temperature.GlobalTemperature`'s value, or a 0-dim tensor (MACL's tau_A).
        excluded: [A, E] column indices that are not negatives (the anchor itself, its positive).
        detach_temperature: compute tau from detached similarities (no gradient through tau).

    Returns:
        :class:`ContrastiveTerms` with detached 0-dim diagnostics tau_pos, tau_neg, sim_pos, sim_neg.
        The detached similarities (and pairwise taus) also go to the active
        :class:`~dystress.regime.RegimeTracker`, when there is one (:func:`dystress.regime.observe`).
    """
    sim = anchors @ candidates.T  # [A, C]
    s_pos_d = positive_similarity.detach()
    if isinstance(temperature, Tensor):
        tau = tau_pos = temperature
    elif isinstance(temperature, GlobalTemperature):
        tau = tau_pos = temperature(sim.new_zeros(()))
    else:
        tau = temperature(sim.detach() if detach_temperature else sim)
        tau_pos = temperature(s_pos_d if detach_temperature else positive_similarity)
    return _terms(
        anchors, candidates, sim, sim / tau, positive_similarity / tau_pos, tau, tau_pos, excluded, s_pos_d
    )


def logit_terms(
    anchors: Tensor,
    candidates: Tensor,
    positive_similarity: Tensor,
    logit: FreeTemperature,
    *,
    excluded: Tensor | None = None,
) -> ContrastiveTerms:
    """:func:`contrastive_terms` with l_ij = ``logit.logit(s_ij)`` in place of s_ij / tau(s_ij) (the
    temperature-free loss), differentiable through the mapping; the diagnostics' taus are the
    equivalent temperatures s / l(s) (:class:`~dystress.temperature.FreeTemperature`)."""
    sim = anchors @ candidates.T  # [A, C]
    s_pos_d = positive_similarity.detach()
    logits, positive = logit.logit(sim), logit.logit(positive_similarity)
    with torch.no_grad():
        tau, tau_pos = logit.tau_from_logit(sim, logits), logit.tau_from_logit(s_pos_d, positive)
    return _terms(anchors, candidates, sim, logits, positive, tau, tau_pos, excluded, s_pos_d)


def _terms(
    anchors: Tensor,
    candidates: Tensor,
    sim: Tensor,
    logits: Tensor,
    positive: Tensor,
    tau: Tensor,
    tau_pos: Tensor,
    excluded: Tensor | None,
    s_pos: Tensor,
) -> ContrastiveTerms:
    """Mask the excluded columns of ``logits`` [A, C], reduce them by log-sum-exp, report to the regime
    tracker and compute the diagnostics."""
    if excluded is not None:
        logits.scatter_(1, excluded, torch.finfo(logits.dtype).min)  # finite: no NaN when a row is empty
    negative_lse = torch.logsumexp(logits, dim=1)
    regime.observe(sim.detach(), s_pos, excluded, tau.detach())  # a no-op unless a run tracks it
    diagnostics = pair_diagnostics(anchors, candidates, sim, tau, tau_pos, s_pos, excluded)
    return ContrastiveTerms(positive, negative_lse, diagnostics)


def pair_diagnostics(
    anchors: Tensor,
    candidates: Tensor,
    sim: Tensor,
    tau: Tensor,
    tau_pos: Tensor,
    s_pos: Tensor,
    excluded: Tensor | None,
) -> dict[str, Tensor]:
    """Mean tau and similarity over positives and negatives, from tensors at hand (no host sync)."""
    with torch.no_grad():
        n_anchors, n_candidates = sim.shape
        n_excluded = 0 if excluded is None else excluded.shape[1]
        count = n_anchors * (n_candidates - n_excluded)
        # sum_ij a_i . c_j = (sum_i a_i) . (sum_j c_j): O((A + C) D) instead of a pass over [A, C].
        sim_sum = anchors.detach().sum(0) @ candidates.detach().sum(0)
        if excluded is not None:
            sim_sum = sim_sum - sim.detach().gather(1, excluded).sum()
        tau_d = tau.detach()
        if count == 0:  # no negatives (the losses reject N = 1; kept for direct calls): nothing to average
            tau_neg, sim_neg = torch.full_like(sim_sum, float("nan")), torch.full_like(sim_sum, float("nan"))
        else:
            if tau_d.ndim == 0:
                tau_neg = tau_d.clone()
            else:
                tau_sum = tau_d.sum() - (tau_d.gather(1, excluded).sum() if excluded is not None else 0.0)
                tau_neg = tau_sum / count
            sim_neg = sim_sum / count
        return {
            "tau_pos": tau_pos.detach().mean(),
            "tau_neg": tau_neg,
            "sim_pos": s_pos.mean(),
            "sim_neg": sim_neg,
        }


def two_view_batch(z0: Tensor, z1: Tensor, gather_distributed: bool) -> TwoViewBatch:
    """SimCLR layout: anchors [z0; z1] (2n local), negatives = all other views of the (gathered) batch.

    Anchor i's positive is the other view of the same sample; its negatives are the 2N - 2 other
    samples' views, N = n x world size when gathering across ranks. Inputs are validated by the
    caller (:func:`check_pair`, :func:`check_negatives`).
    """
    a0, a1 = normalized(z0), normalized(z1)
    n = a0.shape[0]
    anchors = torch.cat([a0, a1], dim=0)
    distributed = gather_distributed and world_size() > 1
    candidates = gather_with_grad(anchors) if distributed else anchors
    offset = 2 * n * rank() if distributed else 0
    index = torch.arange(2 * n, device=anchors.device)
    excluded = torch.stack([index + offset, (index + n) % (2 * n) + offset], dim=1)
    pair_similarity = (a0 * a1).sum(dim=1)
    positive_similarity = torch.cat([pair_similarity, pair_similarity])
    return TwoViewBatch(anchors, candidates, excluded, pair_similarity, positive_similarity, distributed)


def batch_terms(
    batch: TwoViewBatch, temperature: TemperatureFunction | Tensor, detach_temperature: bool = True
) -> ContrastiveTerms:
    """:func:`contrastive_terms` of a :class:`TwoViewBatch`: the 2n local anchors against the batch."""
    return contrastive_terms(
        batch.anchors,
        batch.candidates,
        batch.positive_similarity,
        temperature,
        excluded=batch.excluded,
        detach_temperature=detach_temperature,
    )


# softplus(x) = log(1 + e^x) is returned as x above the threshold: 50 keeps it exact in float64.
_SOFTPLUS_THRESHOLD = 50.0


def infonce_nll(terms: ContrastiveTerms) -> Tensor:
    """Per anchor [A]: -log exp(l_ip) / (exp(l_ip) + sum_k exp(l_ik)) = softplus(lse_neg - l_ip)."""
    return F.softplus(terms.negative_lse - terms.positive, threshold=_SOFTPLUS_THRESHOLD)


class TemperatureLoss(nn.Module):
    """Base of the loss modules: a ``temperature`` (:class:`TemperatureFunction`), its epoch step and
    what the epoch's record says of it."""

    temperature: TemperatureFunction
    #: Whether ``forward`` takes the images' training-set indices as a third argument (iSogCLR).
    needs_index = False

    def record(self, labels: Tensor | None = None) -> dict[str, Any]:
        """Entries for the epoch's record: ``tau_learned`` for a
        :class:`~dystress.temperature.LearnedTemperature`, nothing for the others (``labels``: the
        training set's, for losses that report per class)."""
        if isinstance(self.temperature, LearnedTemperature):
            return {"tau_learned": float(self.temperature.value)}
        return {}

    def set_epoch(self, epoch: int) -> None:
        """Give the temperature the epoch number (TS schedule; a no-op for the others). ``pretrain``
        passes 1 for the first epoch, as the TS reference code counts; 0 keeps the schedule's start.

        ``epoch``: an int, NumPy integer or 0-dim integer tensor, >= 0 (else ``ValueError``).
        """
        self.temperature.set_epoch(_as_epoch(epoch))
