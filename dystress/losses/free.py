"""Temperature-free InfoNCE: the logit is 2 artanh(s) instead of s / tau.

Kim & Kim, "Temperature-Free Loss Function for Contrastive Learning", arXiv 2501.17683 (2025). The
cosine similarity s is read as the probability p = (1 + s) / 2 that two views match, and its log-odds
replace the temperature-scaled similarity::

    l(s) = log(p / (1 - p)) = log((1 + s) / (1 - s)) = 2 artanh(s),
    loss_i = -log exp(l(s_ip)) / (exp(l(s_ip)) + sum_k exp(l(s_ik)))

over the 2N anchors, with s clamped to [-1 + eps, 1 - eps]. The logits are unbounded (a fixed tau
bounds them to [-1/tau, 1/tau]) and dl/ds = 2 / (1 - s^2) grows as pairs align: the paper's argument
is that the gradient neither vanishes at moderate similarities (a small tau) nor stays large at the
optimum (a large tau). As a per-pair temperature this is tau(s) = s / (2 artanh s)
(:class:`~dystress.temperature.FreeTemperature`): 1/2 at s = 0, towards 0 as |s| -> 1, differentiated
through (the method has no detached temperature).

The factor 2 comes from the log-odds reading; implementations in the wild use artanh(s) alone, the
temperature-scaled logit's value at tau = 1 rather than tau = 1/2 near s = 0 (docs/STUDY.md).
"""

from __future__ import annotations

from torch import Tensor

from dystress._checks import as_bool
from dystress.losses._logits import (
    TemperatureLoss,
    check_negatives,
    check_pair,
    full_precision,
    infonce_nll,
    logit_terms,
    two_view_batch,
)
from dystress.temperature import FreeTemperature

__all__ = ["TemperatureFreeLoss", "free_infonce"]


def free_infonce(
    z0: Tensor, z1: Tensor, mapping: FreeTemperature | None = None, *, gather_distributed: bool = True
) -> tuple[Tensor, dict[str, Tensor]]:
    """Temperature-free InfoNCE over the 2N views (see the module docstring): ``(loss, diagnostics)``.

    Args:
        z0, z1: projections of the two views [N, D], floating point; N x world size >= 2.
        mapping: the :class:`~dystress.temperature.FreeTemperature` (its ``eps``); None: eps = 1e-6.
        gather_distributed: negatives from every rank under ``torch.distributed``.

    Returns:
        The loss (0-dim, float32 or wider) and the detached 0-dim diagnostics ``tau_pos``, ``tau_neg``
        (means of the equivalent temperatures s / l(s)), ``sim_pos``, ``sim_neg``.

    Example:
        >>> import math, torch
        >>> same = torch.ones(4, 16)  # every logit equal: the loss is log(2N - 1)
        >>> loss, diagnostics = free_infonce(same, same)
        >>> round(loss.item(), 4) == round(math.log(7), 4)
        True
    """
    mapping = FreeTemperature() if mapping is None else mapping
    if not isinstance(mapping, FreeTemperature):
        raise ValueError(f"mapping must be a FreeTemperature(eps) or None, got {type(mapping).__name__}")
    as_bool("gather_distributed", gather_distributed)
    check_pair(z0, z1)
    check_negatives("TemperatureFreeLoss", z0, gather_distributed)
    with full_precision(z0):
        batch = two_view_batch(z0, z1, gather_distributed)
        terms = logit_terms(
            batch.anchors, batch.candidates, batch.positive_similarity, mapping, excluded=batch.excluded
        )
        loss = infonce_nll(terms).mean()
    return loss, terms.diagnostics


class TemperatureFreeLoss(TemperatureLoss):
    """Temperature-free InfoNCE (Kim & Kim, arXiv 2501.17683): logits 2 artanh(s), no tau to tune.

    The module form of :func:`free_infonce`; ``build_loss("infonce", FreeTemperature())`` (the config's
    ``temperature: free``) builds it. Computed in float32 (float64 stays float64), autocast disabled.

    Args:
        eps: s is clamped to [-1 + eps, 1 - eps] before artanh, in (0, 0.5) (1e-6: logits within
            +-14.5).
        gather_distributed: under ``torch.distributed`` (world size > 1), take negatives from every
            rank; each rank's loss is the mean over its local anchors.

    After each call ``diagnostics`` holds detached 0-dim tensors ``tau_pos``, ``tau_neg`` (the
    equivalent temperatures s / l(s)), ``sim_pos``, ``sim_neg``.

    Example:
        >>> import torch
        >>> criterion = TemperatureFreeLoss()
        >>> z0, z1 = torch.randn(8, 16), torch.randn(8, 16)  # projections of the two views, [N, D]
        >>> criterion(z0, z1).shape
        torch.Size([])
    """

    temperature: FreeTemperature

    def __init__(self, eps: float = 1e-6, gather_distributed: bool = True) -> None:
        super().__init__()
        self.temperature = FreeTemperature(eps)
        self.gather_distributed = as_bool("gather_distributed", gather_distributed)
        self.diagnostics: dict[str, Tensor] = {}

    def forward(self, z0: Tensor, z1: Tensor) -> Tensor:
        """Loss (0-dim, float32 or wider) for projections of two views z0, z1 [N, D]."""
        loss, self.diagnostics = free_infonce(
            z0, z1, self.temperature, gather_distributed=self.gather_distributed
        )
        return loss

    def extra_repr(self) -> str:
        return f"temperature={self.temperature!r}, gather_distributed={self.gather_distributed}"
