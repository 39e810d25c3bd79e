"""Contrastive losses with per-pair temperatures: InfoNCE (SimCLR / DySTreSS), MoCo queue, DCL / DCLW.

Modules (``InfoNCELoss``, ``QueueInfoNCELoss``, ``DCLLoss``) and pure functional forms in
:mod:`dystress.losses.functional` (``functional.infonce``, ``functional.dcl``), which the two-view
modules wrap (``from dystress.losses.functional import infonce``, as with ``torch.nn.functional``).
"""

from __future__ import annotations

import inspect

from torch import nn

from dystress.losses import functional
from dystress.losses.dcl import DCLLoss
from dystress.losses.infonce import InfoNCELoss
from dystress.losses.queue_infonce import QueueInfoNCELoss
from dystress.temperature import TemperatureFunction

__all__ = ["LOSSES", "DCLLoss", "InfoNCELoss", "QueueInfoNCELoss", "build_loss", "functional"]

#: Names accepted by :func:`build_loss`.
LOSSES: tuple[str, ...] = ("infonce", "dcl", "dclw")


def build_loss(
    name: str, temperature: float | TemperatureFunction | None = None, **kwargs: object
) -> nn.Module:
    """Build a two-view loss by name: "infonce", "dcl" or "dclw" (extra keyword arguments pass through).

    ``temperature=None`` keeps the class default (InfoNCELoss 0.5, DCLLoss 0.1). DCL vs DCLW is chosen
    by the name: a ``weighted`` keyword is rejected. Unknown names or keywords raise ``ValueError``.

    Example:
        >>> from dystress.temperature import build_temperature
        >>> build_loss("dclw", build_temperature("cosine", tau_min=0.1, tau_max=0.2)).weighted
        True
        >>> build_loss("dcl").temperature.tau  # DCLLoss's own default
        0.1
    """
    if not isinstance(name, str) or name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known: {list(LOSSES)}")
    if "weighted" in kwargs:
        raise ValueError(
            f"build_loss takes no 'weighted' keyword (got weighted={kwargs['weighted']!r}): "
            "use name 'dclw' for DCLW and 'dcl' for DCL"
        )
    cls = InfoNCELoss if name == "infonce" else DCLLoss
    allowed = set(inspect.signature(cls.__init__).parameters) - {"self", "temperature", "weighted"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ValueError(f"unknown parameters {unknown} for loss {name!r}; allowed: {sorted(allowed)}")
    if temperature is not None:
        kwargs["temperature"] = temperature
    if name == "infonce":
        return InfoNCELoss(**kwargs)
    return DCLLoss(weighted=name == "dclw", **kwargs)
