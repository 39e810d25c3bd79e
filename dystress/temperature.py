"""Temperature functions tau(s): from cosine similarities to temperatures.

A :class:`TemperatureFunction` maps a tensor of cosine similarities (any shape) to temperatures of the
same shape, dtype and device, and nothing else: which loss uses which function, and how, is the
losses' business (:func:`dystress.losses.build_loss`). *Pairwise* functions (DySTreSS and its
ablations) give every pair its own temperature; a :class:`GlobalTemperature` gives one temperature to
the whole batch: a constant, the TS schedule (its state set explicitly by ``set_epoch(epoch)``), and
MACL's tau_A of the batch statistic A, which :class:`~dystress.losses.MACLLoss` computes. Nothing is
read from globals.

References:
    - DySTreSS: Manna et al., "Dynamically Scaled Temperature in Self-Supervised Contrastive
      Learning", arXiv 2308.01140.
    - TS: Kukleva et al., "Temperature Schedules for Self-Supervised Contrastive Methods on
      Long-Tail Data", ICLR 2023.
    - MACL: Huang et al., "Model-Aware Contrastive Learning: Towards Escaping the Dilemmas", ICML 2023.

Calling a function validates its input (a floating-point tensor; no value is read, so no host sync)
and evaluates the subclass hook ``_tau(s)``; ``set_epoch`` accepts any integer >= 0.

Example:
    >>> tau = build_temperature("cosine", tau_min=0.1, tau_max=0.2)
    >>> tau(torch.tensor([-1.0, 0.0, 1.0]))
    tensor([0.2000, 0.1000, 0.2000])
"""

from __future__ import annotations

import inspect
import math
import numbers
import operator
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from dystress._checks import as_int, as_real

__all__ = [
    "TEMPERATURES",
    "TEMPERATURE_PARAMETER_NAMES",
    "ConstantTemperature",
    "CosineScheduleTemperature",
    "CosineTemperature",
    "ExponentialTemperature",
    "FreeTemperature",
    "GlobalTemperature",
    "ISogCLRTemperature",
    "LearnedTemperature",
    "LinearTemperature",
    "LogLinearTemperature",
    "MACLTemperature",
    "OneSidedCosineTemperature",
    "ShiftedCosineTemperature",
    "TemperatureFunction",
    "as_temperature",
    "build_temperature",
]


def _check_range(
    tau_min: Any, tau_max: Any, low: str = "tau_min", high: str = "tau_max"
) -> tuple[float, float]:
    tau_min = as_real(low, tau_min, positive=True)
    tau_max = as_real(high, tau_max)
    if tau_max < tau_min:
        raise ValueError(f"{high} must be >= {low} = {tau_min}, got {tau_max}")
    return tau_min, tau_max


def _check_start(tau_init: Any, tau_min: float, tau_max: float) -> float:
    """``tau_init`` as a float in [tau_min, tau_max] (a learned temperature's starting value)."""
    value = as_real("tau_init", tau_init, positive=True)
    if not tau_min <= value <= tau_max:
        raise ValueError(f"tau_init must be in [tau_min, tau_max] = [{tau_min}, {tau_max}], got {tau_init}")
    return value


def _as_epoch(epoch: Any) -> int:
    """``epoch`` as a Python ``int`` >= 0: an int, a NumPy integer or a 0-dim integer tensor, not a bool.

    Integers are read through ``operator.index`` (a tensor on an accelerator syncs once, per epoch).
    """
    if isinstance(epoch, Tensor):
        what = f"a {epoch.dtype} tensor of shape {tuple(epoch.shape)}"
        usable = epoch.ndim == 0 and epoch.dtype != torch.bool
    else:
        what, usable = repr(epoch), not isinstance(epoch, bool)
    try:
        value = operator.index(epoch) if usable else None
    except TypeError:
        value = None
    if value is None:
        allowed = "an integer >= 0 (int, NumPy integer or 0-dim integer tensor)"
        raise ValueError(f"epoch must be {allowed}, got {what}")
    return as_int("epoch", value, minimum=0)


class TemperatureFunction(ABC):
    """Base class: ``tau = temperature(s)``, same shape, dtype and device as the similarities ``s``.

    Calling it checks that ``s`` is a floating-point tensor (a ``ValueError`` naming ``s`` otherwise:
    integer tensors would give truncated temperatures) and returns the subclass hook :meth:`_tau`.
    The check reads only the type and dtype, never values: no host sync, no graph break under
    ``torch.compile``. Subclasses implement :meth:`_tau` (and :meth:`params`); a subclass written for
    the earlier contract, which overrides ``__call__`` itself, keeps working (without the check).
    One that is not a :class:`GlobalTemperature` is *pairwise*: the losses evaluate it on every pair.
    """

    #: Whether tau is a function of each pair's similarity (the regime's raised-tau share applies).
    varies_per_pair: ClassVar[bool] = True

    #: Hooks of the earlier contract that the losses no longer call (a subclass defining one would
    #: silently change meaning): where each concern lives now.
    _RETIRED = {
        "pairwise": "derive from GlobalTemperature for one tau per batch",
        "needs_positive_statistics": "use dystress.losses.MACLLoss (the positive pairs' statistic)",
        "from_positive_similarity": "use dystress.losses.MACLLoss (the positive pairs' statistic)",
        "anchor_weights": "use dystress.losses.MACLLoss (its anchor reweighting)",
    }

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        retired = sorted(set(vars(cls)) & set(TemperatureFunction._RETIRED))
        if retired:
            hints = "; ".join(f"{name}: {TemperatureFunction._RETIRED[name]}" for name in retired)
            raise TypeError(
                f"{cls.__name__} defines {retired}, which temperature functions no longer have (they "
                f"compute tau only): {hints}"
            )

    def __call__(self, s: Tensor) -> Tensor:
        """Temperatures for cosine similarities ``s`` (floating-point tensor, any shape), same shape."""
        if not isinstance(s, Tensor) or not s.is_floating_point():
            what = f"a {s.dtype} tensor" if isinstance(s, Tensor) else type(s).__name__
            raise ValueError(f"s must be a floating-point torch.Tensor of cosine similarities, got {what}")
        return self._tau(s)

    def _tau(self, s: Tensor) -> Tensor:
        """tau(s) for a validated floating-point tensor ``s``; must not modify ``s``."""
        raise NotImplementedError(f"{type(self).__name__} must implement _tau(s) (or __call__(s))")

    def set_epoch(self, epoch: int) -> None:
        """Advance an epoch-dependent schedule; checks ``epoch`` (an integer >= 0), else a no-op."""
        _as_epoch(epoch)

    @abstractmethod
    def params(self) -> dict[str, float]:
        """Constructor parameters, for configs and plot labels."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v:g}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


class GlobalTemperature(TemperatureFunction):
    """One temperature for the whole batch: tau depends on no pair's similarity.

    The losses divide every logit by one 0-dim tau instead of evaluating the function on the [A, C]
    similarity matrix. A constant and the TS schedule ignore ``s`` (their value is fixed, or set by
    :meth:`set_epoch`); MACL's :class:`MACLTemperature` maps one batch statistic to tau.
    """

    varies_per_pair = False


class ConstantTemperature(GlobalTemperature):
    """One fixed temperature for every pair: plain SimCLR / NT-Xent (Chen et al. 2020)."""

    def __init__(self, tau: float = 0.5) -> None:
        self.tau = as_real("tau", tau, positive=True)

    def _tau(self, s: Tensor) -> Tensor:
        return torch.full_like(s, self.tau)

    def params(self) -> dict[str, float]:
        return {"tau": self.tau}


class CosineTemperature(TemperatureFunction):
    """DySTreSS: tau(s) = tau_min + 0.5 (tau_max - tau_min)(1 + cos(pi (1 + s))).

    Equivalently tau_min + (tau_max - tau_min) sin^2(pi s / 2): tau_max at s = +-1, tau_min at s = 0,
    symmetric in s (Manna et al., arXiv 2308.01140).
    """

    def __init__(self, tau_min: float = 0.1, tau_max: float = 0.2) -> None:
        self.tau_min, self.tau_max = _check_range(tau_min, tau_max)

    def _tau(self, s: Tensor) -> Tensor:
        # 1 + cos(pi (1 + s)) = 1 - cos(pi s): one transcendental pass, the rest fused in place.
        half = 0.5 * (self.tau_max - self.tau_min)
        return torch.cos(s * math.pi).mul_(-half).add_(self.tau_min + half)

    def params(self) -> dict[str, float]:
        return {"tau_min": self.tau_min, "tau_max": self.tau_max}


class ShiftedCosineTemperature(TemperatureFunction):
    """DySTreSS*: tau_max for s > -offset, else a cosine with period 2 scale.

    tau(s) = tau_min + 0.5 (tau_max - tau_min)(1 + cos(pi (s + offset) / scale)) for s <= -offset.

    Continuous at s = -offset (tau_max), tau_min at s = -offset - scale, tau_max again at
    s = -offset - 2 scale, below which the cosine goes on and tau falls again, as in the authors' code
    (this happens within [-1, 1] when -offset - 2 scale > -1: (-0.5, 0.7) and (-0.4, 0.6) of the
    study's shifted ablation). One formula for both signs of
    ``offset`` (the authors' code mis-indexes the positive branch). Best reported (offset, scale) =
    (-0.4, 0.7): tau_max at s = -1, tau_min at s = -0.3, tau_max from s = 0.4 up.
    """

    def __init__(
        self, tau_min: float = 0.1, tau_max: float = 0.2, offset: float = -0.4, scale: float = 0.7
    ) -> None:
        self.tau_min, self.tau_max = _check_range(tau_min, tau_max)
        self.offset = as_real("offset", offset)
        if not -1.0 <= self.offset <= 1.0:
            raise ValueError(f"offset must be in [-1, 1] (the knee -offset is a cosine), got {self.offset}")
        self.scale = as_real("scale", scale, positive=True)

    def _tau(self, s: Tensor) -> Tensor:
        # cos(min(phase, 0)): the phase is > 0 exactly where s > -offset, and cos(0) gives tau_max
        # there; a clamp instead of a boolean mask saves a pass and an allocation.
        half, rate = 0.5 * (self.tau_max - self.tau_min), math.pi / self.scale
        phase = (s * rate).add_(self.offset * rate).clamp_max_(0.0)
        return torch.cos(phase).mul_(half).add_(self.tau_min + half)

    def params(self) -> dict[str, float]:
        return {"tau_min": self.tau_min, "tau_max": self.tau_max, "offset": self.offset, "scale": self.scale}


class OneSidedCosineTemperature(ShiftedCosineTemperature):
    """ "cosconst": tau_max for s > -knee, cosine ramp from tau_min at s = -1 up to tau_max at s = -knee.

    tau(s) = tau_min + 0.5 (tau_max - tau_min)(1 - cos(pi (s + 1) / (1 - knee))) for s <= -knee, which
    is exactly :class:`ShiftedCosineTemperature` with offset = knee and scale = 1 - knee.
    """

    def __init__(self, tau_min: float = 0.1, tau_max: float = 0.2, knee: float = 0.2) -> None:
        knee = as_real("knee", knee)
        if not -1.0 <= knee < 1.0:
            raise ValueError(f"knee must be in [-1, 1) (tau_max for s > -knee), got {knee}")
        super().__init__(tau_min, tau_max, offset=knee, scale=1.0 - knee)
        self.knee = knee

    def params(self) -> dict[str, float]:
        return {"tau_min": self.tau_min, "tau_max": self.tau_max, "knee": self.knee}


class LinearTemperature(TemperatureFunction):
    """Linear ablation (our form; the paper gives none): tau(s) = tau_min + (tau_max - tau_min) |s|.

    Like the cosine: symmetric in s, tau_min at s = 0, tau_max at |s| = 1.
    """

    def __init__(self, tau_min: float = 0.1, tau_max: float = 0.2) -> None:
        self.tau_min, self.tau_max = _check_range(tau_min, tau_max)

    def _tau(self, s: Tensor) -> Tensor:
        return s.abs().mul_(self.tau_max - self.tau_min).add_(self.tau_min)

    def params(self) -> dict[str, float]:
        return {"tau_min": self.tau_min, "tau_max": self.tau_max}


class ExponentialTemperature(TemperatureFunction):
    """The DySTreSS authors' exponential form: tau(s) = a - b exp(-c |s|), here written
    tau(s) = tau_max - (tau_max - tau_min) exp(-rate |s|) (a = tau_max, b = tau_max - tau_min, c = rate).

    The paper names an exponential ablation without its formula; the authors' earlier code defines it
    as above with (a, b, c) = (0.2, 0.1, 3.5), i.e. (tau_min, tau_max, rate) = (0.1, 0.2, 3.5), the
    defaults. Symmetric in s and concave in |s|: tau_min at s = 0, rising quickly (63 % of the range by
    |s| = 1 / rate) towards tau_max, which it approaches but does not reach at |s| = 1
    (tau_max - (tau_max - tau_min) e^-rate). Our log-linear form is :class:`LogLinearTemperature`.
    """

    def __init__(self, tau_min: float = 0.1, tau_max: float = 0.2, rate: float = 3.5) -> None:
        self.tau_min, self.tau_max = _check_range(tau_min, tau_max)
        self.rate = as_real("rate", rate, positive=True)

    def _tau(self, s: Tensor) -> Tensor:
        # in place up to exp_ only: exp's backward reads its output, which must stay unmodified
        decay = s.abs().mul_(-self.rate).exp_()
        return self.tau_max - (self.tau_max - self.tau_min) * decay

    def params(self) -> dict[str, float]:
        return {"tau_min": self.tau_min, "tau_max": self.tau_max, "rate": self.rate}


class LogLinearTemperature(TemperatureFunction):
    """Log-linear ablation (our form): tau(s) = tau_min (tau_max / tau_min)^|s|.

    Like the cosine: symmetric in s, tau_min at s = 0, tau_max at |s| = 1 (log tau linear in |s|, so
    convex). Until session 7 this form was registered as ``exponential``, a name that now belongs to the
    authors' form (:class:`ExponentialTemperature`).
    """

    def __init__(self, tau_min: float = 0.1, tau_max: float = 0.2) -> None:
        self.tau_min, self.tau_max = _check_range(tau_min, tau_max)

    def _tau(self, s: Tensor) -> Tensor:
        rate = math.log(self.tau_max / self.tau_min)
        return s.abs().mul_(rate).add_(math.log(self.tau_min)).exp_()

    def params(self) -> dict[str, float]:
        return {"tau_min": self.tau_min, "tau_max": self.tau_max}


class CosineScheduleTemperature(GlobalTemperature):
    """TS (Kukleva et al., ICLR 2023): one global tau per epoch t, with period T.

    tau(t) = tau_minus + 0.5 (tau_plus - tau_minus)(1 + cos(2 pi t / T)).

    t is the epoch number as the reference code counts it, from 1 for the first epoch (``pretrain``
    passes 1, 2, ...); t = 0, the value before any :meth:`set_epoch`, is tau_plus, and tau_minus is
    reached at t = T / 2 (with T = 2 x epochs, at the last epoch).
    """

    def __init__(self, tau_plus: float = 1.0, tau_minus: float = 0.1, period: float = 400) -> None:
        self.tau_minus, self.tau_plus = _check_range(tau_minus, tau_plus, "tau_minus", "tau_plus")
        self.period = as_real("period", period, positive=True)
        self.epoch = 0

    @property
    def value(self) -> float:
        """The current epoch's temperature."""
        cos = math.cos(2.0 * math.pi * self.epoch / self.period)
        return self.tau_minus + 0.5 * (self.tau_plus - self.tau_minus) * (1.0 + cos)

    def set_epoch(self, epoch: int) -> None:
        """Use epoch number t = ``epoch`` (an int, NumPy integer or 0-dim integer tensor, >= 0)."""
        self.epoch = _as_epoch(epoch)

    def _tau(self, s: Tensor) -> Tensor:
        return torch.full_like(s, self.value)

    def params(self) -> dict[str, float]:
        return {"tau_plus": self.tau_plus, "tau_minus": self.tau_minus, "period": self.period}


class MACLTemperature(GlobalTemperature):
    """MACL's temperature (Huang et al., ICML 2023): tau_A = tau_0 (1 + alpha (A - A_0)).

    A is a batch statistic, the mean of the detached positive-pair similarities: the function maps
    values of A (any shape) to tau_A. :class:`~dystress.losses.MACLLoss` computes A, evaluates this
    function and reweights the anchors (the config's ``temperature: macl`` with ``loss: infonce``
    builds it); the other losses refuse it. The factor 1 + alpha (A - A_0) is floored at 0.01 so tau
    stays positive (it can reach 0 only for A <= A_0 - 1 / alpha, i.e. collapsed-apart positives).
    """

    def __init__(self, tau_0: float = 0.1, alpha: float = 0.5, a_0: float = 0.0) -> None:
        self.tau_0 = as_real("tau_0", tau_0, positive=True)
        self.alpha = as_real("alpha", alpha)
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        self.a_0 = as_real("a_0", a_0)
        if not 0.0 <= self.a_0 <= 1.0:
            raise ValueError(f"a_0 must be in [0, 1], got {self.a_0}")

    def _tau(self, s: Tensor) -> Tensor:
        return ((s - self.a_0) * self.alpha + 1.0).clamp_min(0.01) * self.tau_0

    def params(self) -> dict[str, float]:
        return {"tau_0": self.tau_0, "alpha": self.alpha, "a_0": self.a_0}


class LearnedTemperature(GlobalTemperature, nn.Module):
    """One temperature learned with the network, as CLIP learns its logit scale (Radford et al. 2021).

    tau = exp(-t) with t = log(1 / tau) a trained parameter (``log_inverse_tau``, 0-dim), started at
    log(1 / tau_init) and kept in [log(1 / tau_max), log(1 / tau_min)]: the forward pass clamps it, and
    the optimiser (:func:`dystress.optim.build_optimizer`) clamps the parameter itself after every step,
    as CLIP's training code does, so it can leave a bound again. Its learning rate is the config's
    ``temperature_lr`` (default: the model's), without weight decay. Being a module, it lives inside the
    loss that uses it: ``.to(device)``, ``parameters()`` and the checkpoint's ``state_dict`` include it.

    Example:
        >>> tau = LearnedTemperature(tau_init=0.1, tau_min=0.01, tau_max=1.0)
        >>> round(float(tau.value), 4), [name for name, _ in tau.named_parameters()]
        (0.1, ['log_inverse_tau'])
    """

    def __init__(self, tau_init: float = 0.1, tau_min: float = 0.01, tau_max: float = 1.0) -> None:
        nn.Module.__init__(self)
        self.tau_min, self.tau_max = _check_range(tau_min, tau_max)
        self.tau_init = _check_start(tau_init, self.tau_min, self.tau_max)
        self.log_inverse_tau = nn.Parameter(torch.tensor(-math.log(self.tau_init)))

    @property
    def bounds(self) -> tuple[float, float]:
        """The range of the parameter t: (log(1 / tau_max), log(1 / tau_min))."""
        return -math.log(self.tau_max), -math.log(self.tau_min)

    @property
    def value(self) -> Tensor:
        """The current tau (0-dim, detached)."""
        return torch.exp(-self.log_inverse_tau.detach().clamp(*self.bounds))

    @torch.no_grad()
    def clamp_(self) -> None:
        """Put the parameter back into its range (after an optimiser step)."""
        self.log_inverse_tau.clamp_(*self.bounds)

    def _tau(self, s: Tensor) -> Tensor:
        tau = torch.exp(-self.log_inverse_tau.clamp(*self.bounds))
        return tau.to(device=s.device, dtype=torch.promote_types(s.dtype, tau.dtype)).expand(s.shape)

    def params(self) -> dict[str, float]:
        return {"tau_init": self.tau_init, "tau_min": self.tau_min, "tau_max": self.tau_max}

    __call__ = TemperatureFunction.__call__  # not nn.Module's (hooks): tau(s) as every function
    __repr__ = TemperatureFunction.__repr__


class FreeTemperature(TemperatureFunction):
    """The temperature-free logit of Kim & Kim (arXiv 2501.17683), seen as a per-pair temperature.

    Their loss replaces s / tau by the log-odds of p = (1 + s) / 2, l(s) = log((1 + s) / (1 - s))
    = 2 artanh(s), with s clamped to [-1 + eps, 1 - eps]. Written as s / tau(s), that is the pairwise
    temperature tau(s) = s / (2 artanh s): 1/2 at s = 0, falling to 0 as |s| -> 1, the opposite shape to
    DySTreSS's. This function gives that tau (for the book's plots and the regime diagnostics);
    :class:`~dystress.losses.TemperatureFreeLoss` computes the loss from l(s) directly, with the gradient
    through the mapping (dl/ds = 2 / (1 - s^2)), and the config's ``temperature: free`` builds it.
    """

    def __init__(self, eps: float = 1e-6) -> None:
        self.eps = as_real("eps", eps, positive=True)
        if self.eps >= 0.5:
            raise ValueError(f"eps must be in (0, 0.5), got {eps}")

    def logit(self, s: Tensor) -> Tensor:
        """l(s) = 2 artanh(clamp(s, -1 + eps, 1 - eps)), same shape as ``s``."""
        return torch.atanh(s.clamp(-1.0 + self.eps, 1.0 - self.eps)).mul_(2.0)

    def _tau(self, s: Tensor) -> Tensor:
        return self.tau_from_logit(s, self.logit(s))

    def tau_from_logit(self, s: Tensor, logit: Tensor) -> Tensor:
        """The equivalent tau s / l(s), given ``logit`` = :meth:`logit` of ``s`` (same shape): what the
        loss reports without a second artanh over its [A, C] matrix."""
        s = s.clamp(-1.0 + self.eps, 1.0 - self.eps)
        series = 0.5 - s * s / 6.0  # s / (2 artanh s) = 1/2 - s^2 / 6 + O(s^4): no 0 / 0 near s = 0
        return torch.where(s.abs() < 1e-3, series, s / logit)

    def params(self) -> dict[str, float]:
        return {"eps": self.eps}


class ISogCLRTemperature(TemperatureFunction):
    """iSogCLR's settings (Qiu et al., ICML 2023, arXiv 2305.11965): a temperature per training sample.

    Each training image i has its own tau_i, learned by iSogCLR's distributionally robust objective
    (moving-average estimates u_i, per-sample momentum; see :class:`~dystress.losses.ISogCLRLoss`,
    which keeps that state and is what the config's ``temperature: isogclr`` builds). This class only
    holds and checks the settings; tau depends on the sample, not on a similarity, so calling it raises.

    Args:
        tau_init: every tau_i at the start (0.1).
        tau_min, tau_max: the range tau_i is clamped to (0.05, 1.0 in the reference code).
        rho: the DRO radius, > 0 (0.4: the reference's CIFAR command).
        gamma: the moving average's weight of the new batch estimate, in (0, 1] (0.8).
        beta: the temperature gradient's momentum weight, in (0, 1] (0.5).
        eta: the temperature's step size, > 0 (0.03).
        grad_clip: the temperature gradient is clipped to [-grad_clip, grad_clip], > 0 (3.0).
    """

    varies_per_pair = False

    def __init__(
        self,
        tau_init: float = 0.1,
        tau_min: float = 0.05,
        tau_max: float = 1.0,
        rho: float = 0.4,
        gamma: float = 0.8,
        beta: float = 0.5,
        eta: float = 0.03,
        grad_clip: float = 3.0,
    ) -> None:
        self.tau_min, self.tau_max = _check_range(tau_min, tau_max)
        self.tau_init = _check_start(tau_init, self.tau_min, self.tau_max)
        self.rho = as_real("rho", rho, positive=True)
        for name, value in (("gamma", gamma), ("beta", beta)):
            if not (as_real(name, value) > 0.0 and value <= 1.0):
                raise ValueError(f"{name} must be in (0, 1], got {value!r}")
        self.gamma, self.beta = float(gamma), float(beta)
        self.eta = as_real("eta", eta, positive=True)
        self.grad_clip = as_real("grad_clip", grad_clip, positive=True)

    def _tau(self, s: Tensor) -> Tensor:
        raise ValueError("iSogCLR's temperature is per training sample, not a function of s: use ISogCLRLoss")

    def params(self) -> dict[str, float]:
        return {
            "tau_init": self.tau_init,
            "tau_min": self.tau_min,
            "tau_max": self.tau_max,
            "rho": self.rho,
            "gamma": self.gamma,
            "beta": self.beta,
            "eta": self.eta,
            "grad_clip": self.grad_clip,
        }


#: Registry used by :func:`build_temperature` (and configs).
TEMPERATURES: dict[str, type[TemperatureFunction]] = {
    "constant": ConstantTemperature,
    "cosine": CosineTemperature,
    "shifted_cosine": ShiftedCosineTemperature,
    "linear": LinearTemperature,
    "exponential": ExponentialTemperature,
    "log_linear": LogLinearTemperature,
    "one_sided_cosine": OneSidedCosineTemperature,
    "ts_schedule": CosineScheduleTemperature,
    "macl": MACLTemperature,
    "learned": LearnedTemperature,
    "isogclr": ISogCLRTemperature,
    "free": FreeTemperature,
}


def _parameter_names(cls: type[TemperatureFunction]) -> set[str]:
    """The constructor's parameter names of a temperature function class."""
    return set(inspect.signature(cls.__init__).parameters) - {"self"}


#: Every parameter name of every registered function, sorted: what configs accept in
#: ``temperature_params`` (and notebooks as top-level parameters).
TEMPERATURE_PARAMETER_NAMES: tuple[str, ...] = tuple(
    sorted(set().union(*(_parameter_names(cls) for cls in TEMPERATURES.values())))
)


def build_temperature(name: str, **params: Any) -> TemperatureFunction:
    """Build a registered temperature function: ``build_temperature("cosine", tau_min=0.1, tau_max=0.2)``."""
    if not isinstance(name, str) or name not in TEMPERATURES:
        raise ValueError(f"unknown temperature function {name!r}; known: {sorted(TEMPERATURES)}")
    cls = TEMPERATURES[name]
    allowed = _parameter_names(cls)
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(f"unknown parameters {unknown} for temperature {name!r}; allowed: {sorted(allowed)}")
    return cls(**params)


def as_temperature(temperature: float | TemperatureFunction) -> TemperatureFunction:
    """A real number becomes :class:`ConstantTemperature`; a :class:`TemperatureFunction` passes through.

    A tensor, even 0-dim, is rejected: reading it would sync with its device, and a learnable tau would
    silently lose its gradient. Pass ``float(t)``, or write a :class:`TemperatureFunction`.
    """
    if isinstance(temperature, TemperatureFunction):
        return temperature
    if isinstance(temperature, Tensor):
        raise ValueError(
            "temperature must be a positive number or a TemperatureFunction, got a Tensor "
            "(not converted: pass float(t) for a fixed tau)"
        )
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise ValueError(
            "temperature must be a positive number or a TemperatureFunction, "
            f"got {type(temperature).__name__}"
        )
    return ConstantTemperature(temperature)
