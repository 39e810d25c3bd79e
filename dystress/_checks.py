"""Scalar argument checks shared by the whole package (one rule everywhere).

An integer is any ``numbers.Integral`` (Python or NumPy) and a real any ``numbers.Real``, never a
``bool``; both come back as plain Python ``int`` / ``float``. Each raises ``ValueError`` naming the
parameter and what is allowed.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

__all__ = ["as_bool", "as_int", "as_real", "is_int", "is_real"]


def is_int(value: Any) -> bool:
    """Whether ``value`` is an integer (``numbers.Integral``, not ``bool``)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """Whether ``value`` is a finite real number (``numbers.Real``, not ``bool``)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def as_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an ``int`` after checking ``minimum <= value <= maximum`` (each bound optional)."""
    if not is_int(value):
        raise ValueError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        low = "" if minimum is None else f">= {minimum}"
        high = "" if maximum is None else f"<= {maximum}"
        raise ValueError(f"{name} must be {' and '.join(b for b in (low, high) if b)}, got {value}")
    return value


def as_bool(name: str, value: Any) -> bool:
    """``value`` as a ``bool``: Python or NumPy booleans only (not 0 / 1)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def as_real(name: str, value: Any, positive: bool = False) -> float:
    """``value`` as a finite ``float`` (``positive``: also > 0)."""
    if not is_real(value):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    value = float(value)
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value
