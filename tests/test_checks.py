"""The shared scalar checks: NumPy scalars are numbers, bools are not, bounds are inclusive."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dystress._checks import as_int, as_real, is_int, is_real


@pytest.mark.parametrize("value", [3, np.int64(3), np.int32(3), np.uint8(3)])
def test_integers_of_every_kind_come_back_as_int(value: object) -> None:
    assert is_int(value)
    out = as_int("k", value, minimum=1, maximum=3)
    assert out == 3 and type(out) is int


@pytest.mark.parametrize("value", [True, np.bool_(True), 3.0, "3", None, np.float64(3.0)])
def test_non_integers_are_rejected_by_name(value: object) -> None:
    assert not is_int(value)
    with pytest.raises(ValueError, match="^k must be an integer"):
        as_int("k", value)


@pytest.mark.parametrize(("value", "message"), [(0, "k must be >= 1 and <= 5, got 0"), (6, "got 6")])
def test_integer_bounds_are_inclusive_and_named(value: int, message: str) -> None:
    assert as_int("k", 1, 1, 5) == 1 and as_int("k", 5, 1, 5) == 5
    with pytest.raises(ValueError, match=message):
        as_int("k", value, 1, 5)


@pytest.mark.parametrize("value", [0.1, 1, np.float32(0.25), np.float64(0.1), np.int64(2)])
def test_reals_of_every_kind_come_back_as_float(value: object) -> None:
    assert is_real(value)
    out = as_real("tau", value, positive=True)
    assert type(out) is float and out == pytest.approx(float(value))


@pytest.mark.parametrize("value", [True, math.nan, math.inf, -math.inf, "0.1", None, np.float64(np.nan)])
def test_non_finite_or_non_numbers_are_rejected(value: object) -> None:
    assert not is_real(value)
    with pytest.raises(ValueError, match="^tau must be a finite real number"):
        as_real("tau", value)


def test_positive_excludes_zero_and_negatives() -> None:
    assert as_real("t", 0.0) == 0.0 and as_real("t", -2) == -2.0
    for bad in (0.0, -1e-9):
        with pytest.raises(ValueError, match="t must be > 0"):
            as_real("t", bad, positive=True)
