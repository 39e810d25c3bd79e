"""The temperature regime a run trained in: how the similarities its loss saw were spread, per epoch.

DySTreSS's tau(s) only differs from tau_min where the cosine similarities move away from 0 (for the
reference range (0.07, 0.2), tau passes the middle of its range at |s| = 0.5). Whether a run's
temperature actually varied is therefore a question about the distribution of the similarities the
loss saw, which :class:`RegimeTracker` accumulates during training from the tensors the loss has
already computed: while a tracker is active (``with tracker.observing():``), every call of
:func:`dystress.losses._logits.contrastive_terms` (the core of every loss here) passes it its detached
[A, C] similarity matrix, the excluded columns, the positives' similarities and, for pairwise
functions, the [A, C] tau matrix (:func:`observe`; nothing happens without an active tracker):

- histograms of the negatives' and the positives' similarities over [-1, 1] in :data:`BINS` bins,
  added on the device (no host sync per step);
- the number of negatives whose tau(s) lies more than :data:`RAISED_FRACTION` of (tau_max - tau_min)
  above tau_min (pairwise functions with a range; ``None`` for a global temperature).

At the end of an epoch :meth:`RegimeTracker.summary` turns them into the record's ``regime`` entries:
quantiles 5/50/95/99 % of negatives and positives (read from the histogram, to within one bin width,
0.01), the share of negatives with s >= 0.5 (a bin edge: exact), the share with a raised tau, and the
histograms themselves (counts, for the book's figures and for what a pairwise function would have
done on another run's similarities).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from dystress.temperature import TemperatureFunction

__all__ = [
    "BINS",
    "QUANTILES",
    "RAISED_FRACTION",
    "RegimeTracker",
    "histogram_quantile",
    "observe",
    "raised_threshold",
    "regime_summary",
]

#: Histogram bins over [-1, 1] (width 0.01; 0.5 and 0 are bin edges).
BINS = 200
#: The quantiles recorded per epoch, in percent.
QUANTILES = (5, 50, 95, 99)
#: A negative's tau counts as raised above tau_min + RAISED_FRACTION (tau_max - tau_min).
RAISED_FRACTION = 0.1
#: Similarity from which a negative counts as "close" (DySTreSS's tau passes mid-range at |s| = 0.5).
CLOSE_SIMILARITY = 0.5


def raised_threshold(temperature: TemperatureFunction) -> float | None:
    """tau_min + :data:`RAISED_FRACTION` (tau_max - tau_min) for a pairwise function with a range;
    ``None`` for a global temperature (one tau per batch), a per-sample one (iSogCLR) or a function
    without tau_min/tau_max."""
    if not temperature.varies_per_pair:
        return None
    params = temperature.params()
    if "tau_min" not in params or "tau_max" not in params:
        return None
    return params["tau_min"] + RAISED_FRACTION * (params["tau_max"] - params["tau_min"])


def _histogram(values: Tensor) -> Tensor:
    """Counts [BINS] (float32) of ``values`` over [-1, 1]; values outside are not counted."""
    return torch.histc(values.float(), bins=BINS, min=-1.0, max=1.0)


#: The tracker the losses report to (None: no tracking).
_ACTIVE: contextvars.ContextVar[RegimeTracker | None] = contextvars.ContextVar("regime_tracker", default=None)


def observe(similarity: Tensor, positive: Tensor, excluded: Tensor | None, tau: Tensor | None) -> None:
    """Pass a loss's tensors to the active tracker (see :meth:`RegimeTracker.update`); a no-op without one."""
    tracker = _ACTIVE.get()
    if tracker is not None:
        tracker.update(similarity, positive, excluded, tau)


class RegimeTracker:
    """Accumulates, over an epoch's steps, the similarity histograms and the raised-tau count.

    ``state`` [2 BINS + 2] (float64, on ``device``): negatives' histogram, positives' histogram, the
    number of negatives with a raised tau, the number of negatives seen. Train inside
    :meth:`observing` (the losses then call :meth:`update`), :meth:`reset` at the start of an epoch,
    and sum ``state`` over the ranks before :meth:`summary`.

    Example:
        >>> import torch
        >>> from dystress.losses import InfoNCELoss
        >>> from dystress.temperature import CosineTemperature
        >>> tau = CosineTemperature(0.07, 0.2)
        >>> tracker, criterion = RegimeTracker(tau, "cpu"), InfoNCELoss(tau)
        >>> with tracker.observing():
        ...     loss = criterion(torch.randn(8, 16), torch.randn(8, 16))
        >>> sum(tracker.summary()["neg_sim_hist"])  # 2N anchors x (2N - 2) negatives
        224
    """

    def __init__(self, temperature: TemperatureFunction, device: torch.device | str) -> None:
        self.threshold = raised_threshold(temperature)
        self.state = torch.zeros(2 * BINS + 2, dtype=torch.float64, device=device)

    def reset(self) -> None:
        self.state.zero_()

    @contextlib.contextmanager
    def observing(self) -> Iterator[RegimeTracker]:
        """Make this the tracker every loss call reports to, for the block."""
        token = _ACTIVE.set(self)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)

    @torch.no_grad()
    def update(
        self, similarity: Tensor, positive: Tensor, excluded: Tensor | None, tau: Tensor | None
    ) -> None:
        """Add one loss call: ``similarity`` [A, C] of anchors and candidates, ``positive`` [A] (s_ip),
        ``excluded`` [A, E] (columns of ``similarity`` that are not negatives; None: all are) and
        ``tau`` [A, C] (pairwise functions; None or 0-dim for a global temperature). No host sync."""
        neg = _histogram(similarity)
        count = similarity.new_tensor(float(similarity.numel()))
        if excluded is not None:
            neg = neg - _histogram(similarity.gather(1, excluded))
            count = count - excluded.numel()
        parts = [neg, _histogram(positive), self._raised(similarity, excluded, tau), count]
        self.state += torch.cat([p.reshape(-1).double() for p in parts])

    def _raised(self, similarity: Tensor, excluded: Tensor | None, tau: Tensor | None) -> Tensor:
        """Number of negatives with tau > threshold (0 without a threshold or a pairwise tau)."""
        if self.threshold is None or tau is None or tau.ndim != 2:
            return similarity.new_zeros(())
        raised = (tau > self.threshold).sum()
        if excluded is not None:
            raised = raised - (tau.gather(1, excluded) > self.threshold).sum()
        return raised

    def summary(self) -> dict[str, Any]:
        """The record entries of the accumulated state (one host sync): see :func:`regime_summary`."""
        return regime_summary(self.state.tolist(), self.threshold is not None)


def regime_summary(state: list[float], pairwise: bool) -> dict[str, Any]:
    """Record entries from a tracker's ``state`` (as a list): ``neg_sim_qXX`` / ``pos_sim_qXX`` for
    :data:`QUANTILES`, ``neg_close_share`` (s >= 0.5), ``neg_tau_raised_share`` (``None`` unless
    ``pairwise``) and the histograms ``neg_sim_hist`` / ``pos_sim_hist`` (counts [BINS])."""
    neg, pos = [round(c) for c in state[:BINS]], [round(c) for c in state[BINS : 2 * BINS]]
    raised, seen = state[2 * BINS], state[2 * BINS + 1]
    out: dict[str, Any] = {}
    for name, counts in (("neg", neg), ("pos", pos)):
        for q in QUANTILES:
            out[f"{name}_sim_q{q:02d}"] = round(histogram_quantile(counts, q / 100), 6)
    first_close = round((CLOSE_SIMILARITY + 1.0) * BINS / 2)
    total = sum(neg)
    out["neg_close_share"] = sum(neg[first_close:]) / total if total else math.nan
    out["neg_tau_raised_share"] = raised / seen if pairwise and seen else None
    out["neg_sim_hist"], out["pos_sim_hist"] = neg, pos
    return out


def histogram_quantile(counts: list[int] | list[float], q: float) -> float:
    """The ``q``-quantile (0 <= q <= 1) of values binned in ``counts`` [BINS] over [-1, 1], by linear
    interpolation within the bin where the cumulative share reaches ``q`` (NaN for an empty one)."""
    total = float(sum(counts))
    if total <= 0:
        return math.nan
    width = 2.0 / len(counts)
    target, cumulative = q * total, 0.0
    for i, c in enumerate(counts):
        if c > 0 and cumulative + c >= target:
            return -1.0 + width * (i + (target - cumulative) / c)
        cumulative += c
    return 1.0
