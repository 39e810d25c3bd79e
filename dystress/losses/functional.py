"""Functional two-view losses: pure functions returning ``(loss, diagnostics)``.

:class:`~dystress.losses.InfoNCELoss`, :class:`~dystress.losses.DCLLoss` and
:class:`~dystress.losses.MACLLoss` are thin ``nn.Module`` wrappers over :func:`infonce`, :func:`dcl`
and :func:`macl` (one implementation; :func:`macl`, :func:`isogclr` and :func:`free_infonce` live with
their losses in :mod:`dystress.losses.macl`, :mod:`~dystress.losses.isogclr` and
:mod:`~dystress.losses.free`).
``temperature`` is a fixed tau > 0 or a :class:`~dystress.temperature.TemperatureFunction` other than
MACL's; a TS schedule is stepped by the caller with ``temperature.set_epoch(epoch)``. The diagnostics
are detached 0-dim tensors ``tau_pos``, ``tau_neg``, ``sim_pos``, ``sim_neg`` (means over the local
anchors' positives / negatives).

Every argument is checked before any work. Values are not (that would need a host sync): all-zero
inputs give every logit 0, hence the finite log(2N - 1) (InfoNCE) / log(2N - 2) (DCL) (MACL scales
them by its anchor weights 1 / (1 - P_pos)), and a NaN anywhere gives a NaN loss.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dystress._checks import as_bool, as_real
from dystress.distributed import all_gather_no_grad, rank
from dystress.losses._logits import (
    batch_terms,
    check_negatives,
    check_pair,
    full_precision,
    infonce_nll,
    loss_temperature,
    two_view_batch,
)
from dystress.losses.free import free_infonce
from dystress.losses.isogclr import isogclr
from dystress.losses.macl import macl
from dystress.temperature import TemperatureFunction

__all__ = ["dcl", "free_infonce", "infonce", "isogclr", "macl"]


def infonce(
    z0: Tensor,
    z1: Tensor,
    temperature: float | TemperatureFunction,
    *,
    detach_temperature: bool = True,
    gather_distributed: bool = True,
) -> tuple[Tensor, dict[str, Tensor]]:
    """InfoNCE / NT-Xent over the 2N views with tau = tau(s_ij) (SimCLR; DySTreSS, arXiv 2308.01140).

    loss_i = -log exp(l_ip) / (exp(l_ip) + sum_k exp(l_ik)), l_ij = s_ij / tau(s_ij), averaged over
    the 2N anchors. See :class:`~dystress.losses.InfoNCELoss` for the arguments (MACL: :func:`macl`).

    Args:
        z0, z1: projections of the two views [N, D], floating point; N x world size >= 2.
        temperature: a fixed tau > 0 or a TemperatureFunction other than MACL's.
        detach_temperature: tau from detached similarities (only pairwise functions have a gradient).
        gather_distributed: negatives from every rank under ``torch.distributed``.

    Returns:
        The loss (0-dim, float32 or wider) and the diagnostics.

    Example:
        >>> import math, torch
        >>> from dystress.temperature import CosineTemperature
        >>> same = torch.ones(4, 16)  # every logit equal: the loss is log(2N - 1)
        >>> loss, diagnostics = infonce(same, same, CosineTemperature(0.1, 0.2))
        >>> round(loss.item(), 4) == round(math.log(7), 4), sorted(diagnostics)
        (True, ['sim_neg', 'sim_pos', 'tau_neg', 'tau_pos'])
        >>> infonce(torch.randn(8, 16), torch.randn(8, 16), 0.5)[0].shape
        torch.Size([])
    """
    temperature = loss_temperature(temperature, "InfoNCE")
    as_bool("detach_temperature", detach_temperature)
    as_bool("gather_distributed", gather_distributed)
    check_pair(z0, z1)
    check_negatives("InfoNCE", z0, gather_distributed)
    with full_precision(z0):
        terms = batch_terms(two_view_batch(z0, z1, gather_distributed), temperature, detach_temperature)
        loss = infonce_nll(terms).mean()
    return loss, terms.diagnostics


def dcl(
    z0: Tensor,
    z1: Tensor,
    temperature: float | TemperatureFunction,
    *,
    weighted: bool = False,
    sigma: float = 0.5,
    detach_temperature: bool = True,
    gather_distributed: bool = True,
) -> tuple[Tensor, dict[str, Tensor]]:
    """DCL / DCLW (Yeh et al., ECCV 2022, arXiv 2110.06848): the positive left out of the denominator.

    loss_i = -w_i l_ip + log sum_k exp(l_ik), l_ij = s_ij / tau(s_ij), over the 2N anchors; w_i = 1
    (DCL) or 2 - N softmax(s_pos / sigma)_i, detached (DCLW). See :class:`~dystress.losses.DCLLoss`.

    Args:
        z0, z1: projections of the two views [N, D], floating point; N x world size >= 2.
        temperature: a fixed tau > 0 or a TemperatureFunction other than MACL's.
        weighted: DCLW instead of DCL.
        sigma: DCLW's softmax temperature, > 0.
        detach_temperature: tau from detached similarities (only pairwise functions have a gradient).
        gather_distributed: negatives (and DCLW's softmax) from every rank under ``torch.distributed``.

    Returns:
        The loss (0-dim, float32 or wider) and the diagnostics.

    Example:
        >>> import math, torch
        >>> from dystress.temperature import CosineTemperature
        >>> same = torch.ones(4, 16)  # every logit equal, DCLW weight 1: log of the 2N - 2 negatives
        >>> loss, _ = dcl(same, same, CosineTemperature(0.1, 0.2), weighted=True)
        >>> round(loss.item(), 4) == round(math.log(6), 4)
        True
    """
    temperature = loss_temperature(temperature, "DCL")
    as_bool("weighted", weighted)
    sigma = as_real("sigma", sigma, positive=True)
    as_bool("detach_temperature", detach_temperature)
    as_bool("gather_distributed", gather_distributed)
    check_pair(z0, z1)
    check_negatives("DCL", z0, gather_distributed)
    with full_precision(z0):
        batch = two_view_batch(z0, z1, gather_distributed)
        terms = batch_terms(batch, temperature, detach_temperature)
        positive = terms.positive
        if weighted:
            positive = positive * _dclw_weights(batch.pair_similarity, sigma, batch.distributed)
        loss = (terms.negative_lse - positive).mean()
    return loss, terms.diagnostics


def _dclw_weights(pair_similarity: Tensor, sigma: float, distributed: bool) -> Tensor:
    """DCLW weights [2n] = 2 - N softmax(s_pos / sigma) over the global batch, detached."""
    s = all_gather_no_grad(pair_similarity) if distributed else pair_similarity.detach()
    weights = 2.0 - s.shape[0] * torch.softmax(s / sigma, dim=0)
    n = pair_similarity.shape[0]
    if distributed:
        weights = weights[rank() * n : (rank() + 1) * n]
    return torch.cat([weights, weights])
