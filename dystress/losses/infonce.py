"""InfoNCE / NT-Xent (SimCLR) with a per-pair temperature: the DySTreSS loss."""

from __future__ import annotations

from torch import Tensor

from dystress._checks import as_bool
from dystress.losses._logits import TemperatureLoss, loss_temperature
from dystress.losses.functional import infonce
from dystress.temperature import TemperatureFunction


class InfoNCELoss(TemperatureLoss):
    """NT-Xent over the 2N views with tau = tau(s_ij) on the positive and on every negative.

    For anchor i with positive p and negatives k (the 2N - 2 other views)::

        l_ij = s_ij / tau(s_ij),   loss_i = -log exp(l_ip) / (exp(l_ip) + sum_k exp(l_ik))

    averaged over all 2N anchors (symmetric in the views). A float gives plain SimCLR (Chen et al.
    2020); ``CosineTemperature`` gives DySTreSS (Manna et al., arXiv 2308.01140). MACL (Huang et al.,
    ICML 2023) sets tau from the batch and reweights the anchors: that is
    :class:`~dystress.losses.MACLLoss`, and a ``MACLTemperature`` given here raises ``ValueError``
    pointing there. Computed as log-sum-exp in float32 (float64 stays float64), with autocast
    disabled. The module form of :func:`~dystress.losses.functional.infonce`.

    Needs N x world size >= 2 samples (a negative per anchor; world size 1 without gathering): a
    smaller batch raises ``ValueError``, as does a non-tensor input. Values are not checked (no host
    sync): all-zero z0 and z1 give the finite log(2N - 1) (every logit 0), a NaN gives a NaN loss.

    Args:
        temperature: a fixed tau > 0 or a :class:`~dystress.temperature.TemperatureFunction` other
            than MACL's.
        detach_temperature: compute tau from detached similarities (the method). False keeps the
            gradient through tau(s_ij), for analysis; it matters for pairwise functions only: a
            constant or the TS schedule has no gradient.
        gather_distributed: under ``torch.distributed`` (world size > 1), take negatives from every
            rank; each rank's loss is the mean over its local anchors.

    After each call ``diagnostics`` holds detached 0-dim tensors ``tau_pos``, ``tau_neg``, ``sim_pos``,
    ``sim_neg`` (means over positives / negatives of the local anchors).

    An epoch-dependent temperature (TS, :class:`~dystress.temperature.CosineScheduleTemperature`) must
    be told the epoch: call :meth:`set_epoch` at the start of every epoch (``pretrain`` does), or tau
    stays tau_plus for the whole run.

    Example:
        >>> import math, torch
        >>> from dystress.temperature import CosineScheduleTemperature, CosineTemperature
        >>> criterion = InfoNCELoss(CosineTemperature(tau_min=0.1, tau_max=0.2))
        >>> z0, z1 = torch.randn(8, 16), torch.randn(8, 16)  # projections of the two views, [N, D]
        >>> criterion(z0, z1).shape
        torch.Size([])
        >>> same = torch.ones(4, 16)  # every logit equal: the loss is log(2N - 1)
        >>> round(float(criterion(same, same)), 4) == round(math.log(7), 4)
        True
        >>> ts = InfoNCELoss(CosineScheduleTemperature(tau_plus=1.0, tau_minus=0.1, period=4))
        >>> for epoch in range(3):  # a hand-written loop: step the TS schedule every epoch
        ...     ts.set_epoch(epoch)
        ...     loss = ts(z0, z1)
        >>> round(float(ts.diagnostics["tau_pos"]), 4)  # epoch 2 = period / 2: tau_minus
        0.1
    """

    def __init__(
        self,
        temperature: float | TemperatureFunction = 0.5,
        detach_temperature: bool = True,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        self.temperature = loss_temperature(temperature, "InfoNCE")
        self.detach_temperature = as_bool("detach_temperature", detach_temperature)
        self.gather_distributed = as_bool("gather_distributed", gather_distributed)
        self.diagnostics: dict[str, Tensor] = {}

    def forward(self, z0: Tensor, z1: Tensor) -> Tensor:
        """Loss (0-dim, float32 or wider) for projections of two views z0, z1 [N, D]."""
        loss, self.diagnostics = infonce(
            z0,
            z1,
            self.temperature,
            detach_temperature=self.detach_temperature,
            gather_distributed=self.gather_distributed,
        )
        return loss

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature!r}, detach_temperature={self.detach_temperature}, "
            f"gather_distributed={self.gather_distributed}"
        )
