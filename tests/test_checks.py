"""The shared argument checks: NumPy scalars are numbers, bools are not, bounds are inclusive, names
stay inside their folder."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dystress._checks import (
    NAME_RULE,
    as_bool,
    as_int,
    as_name,
    as_positive,
    as_real,
    is_int,
    is_name,
    is_real,
    require,
)


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


def test_shared_scalar_rule_numpy_scalars_in_bools_out():
    """Moved from test_metrics_validation (the metrics call these directly)."""
    assert as_int("k", np.int64(3), 1) == 3 and type(as_int("k", np.uint8(3), 1)) is int
    assert as_positive("t", np.float32(0.5)) == 0.5 and type(as_positive("t", np.float64(2))) is float
    assert as_positive("t", 2) == 2.0 and type(as_positive("t", 2)) is float
    for bad in (True, np.bool_(True), 2.0, "2", None):
        with pytest.raises(ValueError, match=r"^k must be an integer, got "):
            as_int("k", bad, 1)
    for bad in (True, "1", None, float("nan"), -float("inf"), 0, -0.5, np.float64(0)):
        with pytest.raises(ValueError, match=r"^t must be a finite number > 0, got "):
            as_positive("t", bad)
    with pytest.raises(ValueError, match=r"^k must be >= 1 and <= 5, got 6$"):
        as_int("k", np.int64(6), 1, 5)


def test_bools_are_bools_only() -> None:
    assert as_bool("amp", np.bool_(False)) is False and as_bool("amp", True) is True
    for bad in (0, 1, "yes", None):
        with pytest.raises(ValueError, match=f"^amp must be True or False, got {bad!r}$"):
            as_bool("amp", bad)


def test_require_words_the_error_as_allowed() -> None:
    require(True, "rank", "an int in [0, 2)", 5)
    with pytest.raises(ValueError, match=r"^rank must be an int in \[0, 2\), got 5$"):
        require(False, "rank", "an int in [0, 2)", 5)


@pytest.mark.parametrize("value", ["quick", "my-profile_2", "a.b", "...", "é"])
def test_names_that_stay_in_their_folder(value: str) -> None:
    assert is_name(value) and as_name("profile", value) == value


@pytest.mark.parametrize(
    "value",
    ["", ".", "..", "../../x", "a/b", "/abs", "a\\b", "C:x", "C:\\x", "\\\\server\\share", "a\0b", 3, None],
)
def test_names_that_would_leave_their_folder_are_refused(value: object) -> None:
    assert not is_name(value)
    with pytest.raises(ValueError) as info:
        as_name("profile", value)
    assert str(info.value) == f"profile must be {NAME_RULE}, got {value!r}"
