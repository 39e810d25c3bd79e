"""Argument checks shared by the whole package (one rule everywhere).

An integer is any ``numbers.Integral`` (Python or NumPy) and a real any finite ``numbers.Real``, never a
``bool``; both come back as plain Python ``int`` / ``float``. A name (:func:`is_name`) is a string that
stays inside the folder it names a file or folder of. Every failure is one ``ValueError`` naming the
parameter and what is allowed: :func:`require` for a condition with its own wording, the ``as_*``
functions for the common kinds.
"""

from __future__ import annotations

import math
import numbers
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

__all__ = [
    "NAME_RULE",
    "as_bool",
    "as_int",
    "as_name",
    "as_positive",
    "as_real",
    "is_int",
    "is_name",
    "is_real",
    "require",
]

#: What :func:`is_name` allows, in the words of an error message.
NAME_RULE = "a non-empty string without path separators ('/', '\\'), not '.' or '..' (it names a folder)"


def require(condition: bool, name: str, allowed: str, value: Any) -> None:
    """Raise ``ValueError("<name> must be <allowed>, got <value!r>")`` unless ``condition`` holds."""
    if not condition:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def is_int(value: Any) -> bool:
    """Whether ``value`` is an integer (``numbers.Integral``, not ``bool``)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """Whether ``value`` is a finite real number (``numbers.Real``, not ``bool``)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def is_name(value: Any) -> bool:
    """Whether ``value`` is a plain name (:data:`NAME_RULE`): joined to a folder, it stays inside it."""
    if not isinstance(value, str) or value in ("", ".", "..") or "\0" in value:
        return False
    if "/" in value or "\\" in value:
        return False
    return not (PurePosixPath(value).is_absolute() or PureWindowsPath(value).drive)


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


def as_positive(name: str, value: Any) -> float:
    """``value`` as a ``float`` after checking it is a finite number > 0 (one message for both)."""
    require(is_real(value) and value > 0, name, "a finite number > 0", value)
    return float(value)


def as_name(name: str, value: Any) -> str:
    """``value`` after checking it is a plain name (:func:`is_name`), e.g. a profile's folder."""
    require(is_name(value), name, NAME_RULE, value)
    return value
