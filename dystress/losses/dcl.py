"""Decoupled contrastive loss (DCL) and its weighted form (DCLW), with a per-pair temperature."""

from __future__ import annotations

from torch import Tensor

from dystress._checks import as_bool, as_real
from dystress.losses._logits import TemperatureLoss, loss_temperature
from dystress.losses.functional import dcl
from dystress.temperature import TemperatureFunction


class DCLLoss(TemperatureLoss):
    """DCL / DCLW (Yeh et al., "Decoupled Contrastive Learning", ECCV 2022, arXiv 2110.06848).

    The positive is removed from the denominator::

        loss_i = -w_i l_ip + log sum_k exp(l_ik),   l_ij = s_ij / tau(s_ij) (tau detached)

    over the 2N anchors and their 2N - 2 negatives. DCL: w_i = 1. DCLW: w_i = 2 - N softmax(s_pos / sigma)_i
    over the N positive pairs of the (gathered) batch, detached. MACL's reweighting is defined through
    P(positive), which DCL has not: MACL's temperature is rejected. The module form of
    :func:`~dystress.losses.functional.dcl`.

    Needs N x world size >= 2 samples (a negative per anchor; world size 1 without gathering): a
    smaller batch raises ``ValueError``, as does a non-tensor input. Values are not checked (no host
    sync): all-zero z0 and z1 give the finite log(2N - 2) (every logit 0), a NaN gives a NaN loss.

    Args:
        temperature: a fixed tau > 0 or a :class:`~dystress.temperature.TemperatureFunction` other than
            MACL's.
        weighted: DCLW instead of DCL.
        sigma: DCLW's softmax temperature, > 0 (0.5 in the paper).
        detach_temperature: compute tau from detached similarities (the study detaches everywhere).
            False keeps the gradient through tau(s_ij): pairwise functions only (a constant or the TS
            schedule has no gradient).
        gather_distributed: negatives (and DCLW's softmax) over every rank's samples.

    After each call ``diagnostics`` holds detached 0-dim tensors ``tau_pos``, ``tau_neg``, ``sim_pos``,
    ``sim_neg``. An epoch-dependent temperature (TS) must be told the epoch: call :meth:`set_epoch` at
    the start of every epoch (``pretrain`` does), or tau stays tau_plus for the whole run.

    Example:
        >>> import math, torch
        >>> from dystress.temperature import CosineScheduleTemperature, CosineTemperature
        >>> criterion = DCLLoss(CosineTemperature(0.1, 0.2), weighted=True)
        >>> z0, z1 = torch.randn(8, 16), torch.randn(8, 16)  # projections of the two views, [N, D]
        >>> criterion(z0, z1).shape
        torch.Size([])
        >>> same = torch.ones(4, 16)  # every logit equal, DCLW weight 1: log of the 2N - 2 negatives
        >>> round(float(criterion(same, same)), 4) == round(math.log(6), 4)
        True
        >>> ts = DCLLoss(CosineScheduleTemperature(tau_plus=1.0, tau_minus=0.1, period=4))
        >>> for epoch in range(3):  # a hand-written loop: step the TS schedule every epoch
        ...     ts.set_epoch(epoch)
        ...     loss = ts(z0, z1)
        >>> round(float(ts.diagnostics["tau_pos"]), 4)  # epoch 2 = period / 2: tau_minus
        0.1
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
        self.temperature = loss_temperature(temperature, "DCL")
        self.weighted = as_bool("weighted", weighted)
        self.sigma = as_real("sigma", sigma, positive=True)
        self.detach_temperature = as_bool("detach_temperature", detach_temperature)
        self.gather_distributed = as_bool("gather_distributed", gather_distributed)
        self.diagnostics: dict[str, Tensor] = {}

    def forward(self, z0: Tensor, z1: Tensor) -> Tensor:
        """Loss (0-dim) for projections of two views z0, z1 [N, D] (N x world size >= 2)."""
        loss, self.diagnostics = dcl(
            z0,
            z1,
            self.temperature,
            weighted=self.weighted,
            sigma=self.sigma,
            detach_temperature=self.detach_temperature,
            gather_distributed=self.gather_distributed,
        )
        return loss

    def extra_repr(self) -> str:
        return f"temperature={self.temperature!r}, weighted={self.weighted}, sigma={self.sigma}"
