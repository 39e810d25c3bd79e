"""Decoupled contrastive loss (DCL) and its weighted form (DCLW), with a per-pair temperature."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from dystress.distributed import all_gather_no_grad, rank, world_size
from dystress.losses._logits import check_flag, check_pair, full_precision, two_view_terms
from dystress.temperature import TemperatureFunction, as_temperature


class DCLLoss(nn.Module):
    """DCL / DCLW (Yeh et al., "Decoupled Contrastive Learning", ECCV 2022, arXiv 2110.06848).

    The positive is removed from the denominator::

        loss_i = -w_i l_ip + log sum_k exp(l_ik),   l_ij = s_ij / tau(s_ij) (tau detached)

    over the 2N anchors and their 2N - 2 negatives. DCL: w_i = 1. DCLW: w_i = 2 - N softmax(s_pos / sigma)_i
    over the N positive pairs of the (gathered) batch, detached. Needs N >= 2 (a negative per anchor).
    MACL's reweighting is defined through P(positive), which DCL has not: MACL is rejected.

    Args:
        temperature: a fixed tau > 0 or a pairwise/global :class:`~dystress.temperature.TemperatureFunction`.
        weighted: DCLW instead of DCL.
        sigma: DCLW's softmax temperature, > 0 (0.5 in the paper).
        detach_temperature: compute tau from detached similarities (the study detaches everywhere).
        gather_distributed: negatives (and DCLW's softmax) over every rank's samples.

    Example:
        >>> import math, torch
        >>> from dystress.temperature import CosineTemperature
        >>> criterion = DCLLoss(CosineTemperature(0.1, 0.2), weighted=True)
        >>> z0, z1 = torch.randn(8, 16), torch.randn(8, 16)  # projections of the two views, [N, D]
        >>> criterion(z0, z1).shape
        torch.Size([])
        >>> same = torch.ones(4, 16)  # every logit equal, DCLW weight 1: log of the 2N - 2 negatives
        >>> round(float(criterion(same, same)), 4) == round(math.log(6), 4)
        True
    """

    def __init__(
        self,
        temperature: float | TemperatureFunction = 0.1,
        weighted: bool = False,
        sigma: float = 0.5,
        detach_temperature: bool = True,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        self.temperature = as_temperature(temperature)
        if self.temperature.needs_positive_statistics:
            raise ValueError(
                f"temperature {self.temperature!r} needs P(positive), which DCL removes; use InfoNCELoss"
            )
        self.weighted = check_flag("weighted", weighted)
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not (0 < sigma < math.inf):
            raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
        self.sigma = float(sigma)
        self.detach_temperature = check_flag("detach_temperature", detach_temperature)
        self.gather_distributed = check_flag("gather_distributed", gather_distributed)
        self.diagnostics: dict[str, Tensor] = {}

    def forward(self, z0: Tensor, z1: Tensor) -> Tensor:
        """Loss (0-dim) for projections of two views z0, z1 [N, D] (N x world size >= 2)."""
        check_pair(z0, z1)
        distributed = self.gather_distributed and world_size() > 1
        if z0.shape[0] * (world_size() if distributed else 1) < 2:
            raise ValueError(f"DCL needs N >= 2 samples (a negative per anchor), got shape {tuple(z0.shape)}")
        with full_precision(z0):
            terms, pair_similarity = two_view_terms(
                z0,
                z1,
                self.temperature,
                detach_temperature=self.detach_temperature,
                gather_distributed=self.gather_distributed,
            )
            positive = terms.positive
            if self.weighted:
                positive = positive * self._positive_weights(pair_similarity, distributed)
            loss = (terms.negative_lse - positive).mean()
        self.diagnostics = terms.diagnostics
        return loss

    def _positive_weights(self, pair_similarity: Tensor, distributed: bool) -> Tensor:
        """DCLW weights [2n] = 2 - N softmax(s_pos / sigma) over the global batch, detached."""
        s = all_gather_no_grad(pair_similarity) if distributed else pair_similarity.detach()
        weights = 2.0 - s.shape[0] * torch.softmax(s / self.sigma, dim=0)
        n = pair_similarity.shape[0]
        if distributed:
            weights = weights[rank() * n : (rank() + 1) * n]
        return torch.cat([weights, weights])

    def extra_repr(self) -> str:
        return f"temperature={self.temperature!r}, weighted={self.weighted}, sigma={self.sigma}"
