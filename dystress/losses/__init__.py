"""Contrastive losses and their temperatures: InfoNCE (SimCLR / DySTreSS, a learned global tau), MoCo
queue, DCL / DCLW, MACL, iSogCLR (a learned tau per sample) and the temperature-free InfoNCE.

Modules (``InfoNCELoss``, ``QueueInfoNCELoss``, ``DCLLoss``, ``MACLLoss``, ``ISogCLRLoss``,
``TemperatureFreeLoss``) and pure functional forms in :mod:`dystress.losses.functional`
(``functional.infonce``, ``functional.dcl``, ``functional.macl``, ``functional.isogclr``,
``functional.free_infonce``),
which the two-view modules wrap (``from dystress.losses.functional import infonce``, as with
``torch.nn.functional``). :func:`build_loss` is the one place that decides which loss a config's
``loss`` and temperature function give.
"""

from __future__ import annotations

import inspect

from torch import nn

from dystress.losses import functional
from dystress.losses._logits import OWN_LOSS
from dystress.losses.dcl import DCLLoss
from dystress.losses.free import TemperatureFreeLoss
from dystress.losses.infonce import InfoNCELoss
from dystress.losses.isogclr import ISogCLRLoss
from dystress.losses.macl import MACLLoss
from dystress.losses.queue_infonce import QueueInfoNCELoss
from dystress.temperature import TEMPERATURES, TemperatureFunction

__all__ = [
    "LOSSES",
    "DCLLoss",
    "ISogCLRLoss",
    "InfoNCELoss",
    "MACLLoss",
    "QueueInfoNCELoss",
    "TemperatureFreeLoss",
    "build_loss",
    "functional",
]

#: The losses that own a temperature (:data:`~dystress.losses._logits.OWN_LOSS`), by class name.
_OWN_LOSSES: dict[str, type[nn.Module]] = {
    cls.__name__: cls for cls in (MACLLoss, ISogCLRLoss, TemperatureFreeLoss)
}

#: Names accepted by :func:`build_loss` (a config's ``loss``).
LOSSES: tuple[str, ...] = ("infonce", "dcl", "dclw")


def build_loss(
    name: str,
    temperature: float | TemperatureFunction | None = None,
    *,
    num_samples: int | None = None,
    **kwargs: object,
) -> nn.Module:
    """Build a two-view loss by name: "infonce", "dcl" or "dclw" (extra keyword arguments pass through).

    "infonce" with a temperature whose method is a loss of its own builds that loss with the
    temperature's parameters: MACL's (:class:`~dystress.temperature.MACLTemperature`, the config's
    ``temperature: macl``) :class:`MACLLoss`, iSogCLR's (``isogclr``) :class:`ISogCLRLoss`, the
    temperature-free mapping (``free``) :class:`TemperatureFreeLoss`; DCL / DCLW refuse them (a
    ``ValueError`` naming ``loss``). ``num_samples``: the training set's size, which iSogCLR's
    per-sample state needs (required there, unused by the others). ``temperature=None`` keeps the class
    default (InfoNCELoss 0.5, DCLLoss 0.1). DCL vs DCLW is chosen by the name: a ``weighted`` keyword is
    rejected. Unknown names or keywords raise ``ValueError``.

    Example:
        >>> from dystress.temperature import build_temperature
        >>> build_loss("dclw", build_temperature("cosine", tau_min=0.1, tau_max=0.2)).weighted
        True
        >>> build_loss("dcl").temperature.tau  # DCLLoss's own default
        0.1
        >>> build_loss("infonce", build_temperature("macl", tau_0=0.2))
        MACLLoss(temperature=MACLTemperature(tau_0=0.2, alpha=0.5, a_0=0), gather_distributed=True)
        >>> build_loss("infonce", build_temperature("isogclr"), num_samples=50_000).tau.shape
        torch.Size([50000])
    """
    if not isinstance(name, str) or name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known: {list(LOSSES)}")
    if "weighted" in kwargs:
        raise ValueError(
            f"build_loss takes no 'weighted' keyword (got weighted={kwargs['weighted']!r}): "
            "use name 'dclw' for DCLW and 'dcl' for DCL"
        )
    own_name, lacks = OWN_LOSS.get(type(temperature), (None, ""))
    own = _OWN_LOSSES[own_name] if own_name else None
    config_name = next((k for k, cls in TEMPERATURES.items() if cls is type(temperature)), None)
    if own is not None and name != "infonce":
        why = "it " + lacks.format(loss="DCL")
        raise ValueError(f"loss must be infonce with temperature {config_name} ({why}), got {name!r}")
    cls = own or (InfoNCELoss if name == "infonce" else DCLLoss)
    allowed = set(inspect.signature(cls.__init__).parameters) - {
        "self",
        "temperature",
        "weighted",
        "num_samples",
    }
    allowed -= set(temperature.params()) if own else set()
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        what = f"loss {name!r}" + (f" with temperature {config_name}" if own else "")
        raise ValueError(f"unknown parameters {unknown} for {what}; allowed: {sorted(allowed)}")
    if own is ISogCLRLoss:
        if num_samples is None:
            raise ValueError(
                "num_samples (the training set's size) is required for iSogCLR's per-sample state"
            )
        return ISogCLRLoss(num_samples, **temperature.params(), **kwargs)
    if own is not None:
        return own(**temperature.params(), **kwargs)
    if temperature is not None:
        kwargs["temperature"] = temperature
    if name == "infonce":
        return InfoNCELoss(**kwargs)
    return DCLLoss(weighted=name == "dclw", **kwargs)
