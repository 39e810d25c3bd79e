"""Contrastive losses with per-pair temperatures: InfoNCE (SimCLR / DySTreSS), MoCo queue, DCL / DCLW, MACL.

Modules (``InfoNCELoss``, ``QueueInfoNCELoss``, ``DCLLoss``, ``MACLLoss``) and pure functional forms in
:mod:`dystress.losses.functional` (``functional.infonce``, ``functional.dcl``, ``functional.macl``),
which the two-view modules wrap (``from dystress.losses.functional import infonce``, as with
``torch.nn.functional``). :func:`build_loss` is the one place that decides which loss a config's
``loss`` and temperature function give.
"""

from __future__ import annotations

import inspect

from torch import nn

from dystress.losses import functional
from dystress.losses.dcl import DCLLoss
from dystress.losses.infonce import InfoNCELoss
from dystress.losses.macl import MACLLoss
from dystress.losses.queue_infonce import QueueInfoNCELoss
from dystress.temperature import MACLTemperature, TemperatureFunction

__all__ = ["LOSSES", "DCLLoss", "InfoNCELoss", "MACLLoss", "QueueInfoNCELoss", "build_loss", "functional"]

#: Names accepted by :func:`build_loss` (a config's ``loss``).
LOSSES: tuple[str, ...] = ("infonce", "dcl", "dclw")


def build_loss(
    name: str, temperature: float | TemperatureFunction | None = None, **kwargs: object
) -> nn.Module:
    """Build a two-view loss by name: "infonce", "dcl" or "dclw" (extra keyword arguments pass through).

    "infonce" with MACL's temperature (:class:`~dystress.temperature.MACLTemperature`, the config's
    ``temperature: macl``) is :class:`MACLLoss` with its parameters; DCL / DCLW refuse it (MACL sets tau
    from P(positive), which DCL removes): a ``ValueError`` naming ``loss``. ``temperature=None`` keeps
    the class default (InfoNCELoss 0.5, DCLLoss 0.1). DCL vs DCLW is chosen by the name: a
    ``weighted`` keyword is rejected. Unknown names or keywords raise ``ValueError``.

    Example:
        >>> from dystress.temperature import build_temperature
        >>> build_loss("dclw", build_temperature("cosine", tau_min=0.1, tau_max=0.2)).weighted
        True
        >>> build_loss("dcl").temperature.tau  # DCLLoss's own default
        0.1
        >>> build_loss("infonce", build_temperature("macl", tau_0=0.2))
        MACLLoss(temperature=MACLTemperature(tau_0=0.2, alpha=0.5, a_0=0), gather_distributed=True)
    """
    if not isinstance(name, str) or name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known: {list(LOSSES)}")
    if "weighted" in kwargs:
        raise ValueError(
            f"build_loss takes no 'weighted' keyword (got weighted={kwargs['weighted']!r}): "
            "use name 'dclw' for DCLW and 'dcl' for DCL"
        )
    macl = isinstance(temperature, MACLTemperature)
    if macl and name != "infonce":
        raise ValueError(
            "loss must be infonce with temperature macl (it sets tau from the positive pairs' "
            f"probability, which DCL removes from the denominator), got {name!r}"
        )
    cls = MACLLoss if macl else InfoNCELoss if name == "infonce" else DCLLoss
    allowed = set(inspect.signature(cls.__init__).parameters) - {"self", "temperature", "weighted"}
    allowed -= set(temperature.params()) if macl else set()
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        what = f"loss {name!r}" + (" with temperature macl" if macl else "")
        raise ValueError(f"unknown parameters {unknown} for {what}; allowed: {sorted(allowed)}")
    if macl:
        return MACLLoss(**temperature.params(), **kwargs)
    if temperature is not None:
        kwargs["temperature"] = temperature
    if name == "infonce":
        return InfoNCELoss(**kwargs)
    return DCLLoss(weighted=name == "dclw", **kwargs)
