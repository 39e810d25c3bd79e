"""MACL: InfoNCE with a temperature set by the batch's alignment and reweighted anchors.

Huang et al., "Model-Aware Contrastive Learning: Towards Escaping the Dilemmas", ICML 2023. With
A = the mean over the batch's positive pairs of their (detached) cosine similarity s_ip::

    tau_A = tau_0 (1 + alpha (A - A_0)),   l_ij = s_ij / tau_A,
    P_i = exp(l_ip) / (exp(l_ip) + sum_k exp(l_ik)),   loss_i = -sg[1 / (1 - P_i)] log P_i

averaged over the 2N anchors (sg: stop-gradient). The temperature is
:class:`~dystress.temperature.MACLTemperature` (tau_0, alpha, A_0); this module computes A and the
weights, which is why MACL is a loss of its own: the other losses refuse MACL's temperature, and
:func:`~dystress.losses.build_loss` turns the config's ``loss: infonce`` with ``temperature: macl``
into :class:`MACLLoss`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dystress._checks import as_bool
from dystress.distributed import all_gather_no_grad
from dystress.losses._logits import (
    TemperatureLoss,
    TwoViewBatch,
    batch_terms,
    check_negatives,
    check_pair,
    full_precision,
    infonce_nll,
    two_view_batch,
)
from dystress.temperature import MACLTemperature

__all__ = ["MACLLoss", "macl"]


def macl(
    z0: Tensor, z1: Tensor, temperature: MACLTemperature, *, gather_distributed: bool = True
) -> tuple[Tensor, dict[str, Tensor]]:
    """MACL's loss over the 2N views (see the module docstring for the formula): ``(loss, diagnostics)``.

    Args:
        z0, z1: projections of the two views [N, D], floating point; N x world size >= 2.
        temperature: the :class:`~dystress.temperature.MACLTemperature` (tau_0, alpha, A_0).
        gather_distributed: negatives and the statistic A from every rank under ``torch.distributed``.

    Returns:
        The loss (0-dim, float32 or wider) and the detached 0-dim diagnostics ``tau_pos`` = ``tau_neg``
        = tau_A, ``sim_pos``, ``sim_neg``.

    Example:
        >>> import math, torch
        >>> same = torch.ones(4, 16)  # every logit equal: P = 1 / 7, loss = log(7) / (1 - 1 / 7)
        >>> loss, diagnostics = macl(same, same, MACLTemperature(tau_0=0.1, alpha=0.5, a_0=0.0))
        >>> round(loss.item(), 4) == round(math.log(7) * 7 / 6, 4), round(diagnostics["tau_pos"].item(), 4)
        (True, 0.15)
    """
    if not isinstance(temperature, MACLTemperature):
        got = type(temperature).__name__
        raise ValueError(f"temperature must be a MACLTemperature(tau_0, alpha, a_0), got {got}")
    as_bool("gather_distributed", gather_distributed)
    check_pair(z0, z1)
    check_negatives("MACL", z0, gather_distributed)
    with full_precision(z0):
        batch = two_view_batch(z0, z1, gather_distributed)
        terms = batch_terms(batch, _batch_temperature(batch, temperature))
        nll = infonce_nll(terms)
        loss = (nll * _anchor_weights(-nll)).mean()
    return loss, terms.diagnostics


def _batch_temperature(batch: TwoViewBatch, temperature: MACLTemperature) -> Tensor:
    """tau_A (0-dim, detached): A = mean of the (gathered) detached positive similarities."""
    positive = batch.positive_similarity.detach()
    statistic = all_gather_no_grad(positive) if batch.distributed else positive
    return temperature(statistic.mean())


def _anchor_weights(log_prob_positive: Tensor) -> Tensor:
    """Stop-grad weights 1 / (1 - P_i) [A] from log P_i [A]."""
    # 1 - P = -expm1(log P), exact near P -> 1; the floor keeps 0 * weight finite without negatives.
    one_minus_p = torch.expm1(log_prob_positive.detach()).neg_()
    return one_minus_p.clamp_min_(torch.finfo(one_minus_p.dtype).tiny).reciprocal_()


class MACLLoss(TemperatureLoss):
    """MACL (Huang et al., "Model-Aware Contrastive Learning", ICML 2023): InfoNCE at tau_A, reweighted.

    ``loss_i = -sg[1 / (1 - P_i)] log P_i`` with P_i the InfoNCE probability of anchor i's positive at
    the batch temperature tau_A = tau_0 (1 + alpha (A - A_0)), A the batch mean of the detached
    positive similarities (gathered across ranks when gathering); the factor 1 + alpha (A - A_0) is
    floored at 0.01. tau_A and the weights are stop-grad by definition. Computed as log-sum-exp in
    float32 (float64 stays float64), with autocast disabled. The module form of :func:`macl`.

    Needs N x world size >= 2 samples (a ``ValueError`` otherwise, as for a non-tensor input). Values
    are not checked (no host sync): all-zero inputs give the finite log(2N - 1) / (1 - 1 / (2N - 1)).

    Args:
        tau_0: the temperature at A = A_0, > 0 (0.1 in the paper).
        alpha: the slope, in [0, 1] (0.5). alpha = 0 is InfoNCE at tau_0 with the anchor weights.
        a_0: the reference alignment A_0, in [0, 1] (0).
        gather_distributed: under ``torch.distributed`` (world size > 1), take negatives and A from
            every rank; each rank's loss is the mean over its local anchors.

    After each call ``diagnostics`` holds detached 0-dim tensors ``tau_pos`` = ``tau_neg`` = tau_A,
    ``sim_pos``, ``sim_neg``.

    Example:
        >>> import math, torch
        >>> criterion = MACLLoss(tau_0=0.1, alpha=0.5, a_0=0.0)
        >>> z0, z1 = torch.randn(8, 16), torch.randn(8, 16)  # projections of the two views, [N, D]
        >>> criterion(z0, z1).shape
        torch.Size([])
        >>> same = torch.ones(4, 16)  # A = 1: tau_A = 0.15; every logit equal: P = 1 / 7
        >>> round(float(criterion(same, same)), 4) == round(math.log(7) * 7 / 6, 4)
        True
        >>> round(float(criterion.diagnostics["tau_pos"]), 4)
        0.15
    """

    temperature: MACLTemperature

    def __init__(
        self, tau_0: float = 0.1, alpha: float = 0.5, a_0: float = 0.0, gather_distributed: bool = True
    ) -> None:
        super().__init__()
        self.temperature = MACLTemperature(tau_0, alpha, a_0)
        self.gather_distributed = as_bool("gather_distributed", gather_distributed)
        self.diagnostics: dict[str, Tensor] = {}

    def forward(self, z0: Tensor, z1: Tensor) -> Tensor:
        """Loss (0-dim, float32 or wider) for projections of two views z0, z1 [N, D]."""
        loss, self.diagnostics = macl(z0, z1, self.temperature, gather_distributed=self.gather_distributed)
        return loss

    def extra_repr(self) -> str:
        return f"temperature={self.temperature!r}, gather_distributed={self.gather_distributed}"
