"""Contrastive losses with per-pair temperatures: InfoNCE (SimCLR / DySTreSS), MoCo queue, DCL / DCLW."""

from __future__ import annotations

from torch import nn

from dystress.losses.dcl import DCLLoss
from dystress.losses.infonce import InfoNCELoss
from dystress.losses.queue_infonce import QueueInfoNCELoss
from dystress.temperature import TemperatureFunction

__all__ = ["LOSSES", "DCLLoss", "InfoNCELoss", "QueueInfoNCELoss", "build_loss"]

#: Names accepted by :func:`build_loss`.
LOSSES: tuple[str, ...] = ("infonce", "dcl", "dclw")


def build_loss(name: str, temperature: float | TemperatureFunction = 0.5, **kwargs: object) -> nn.Module:
    """Build a two-view loss by name: "infonce", "dcl" or "dclw" (extra keyword arguments pass through).

    Example:
        >>> from dystress.temperature import build_temperature
        >>> build_loss("dclw", build_temperature("cosine", tau_min=0.1, tau_max=0.2)).weighted
        True
    """
    if name == "infonce":
        return InfoNCELoss(temperature, **kwargs)
    if name == "dcl":
        return DCLLoss(temperature, weighted=False, **kwargs)
    if name == "dclw":
        return DCLLoss(temperature, weighted=True, **kwargs)
    raise ValueError(f"unknown loss {name!r}; known: {list(LOSSES)}")
