"""Figures of the book: what they draw, read back from the matplotlib artists."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pandas as pd
import pytest

from dystress import plots

matplotlib.use("Agg")


def test_fixed_tau_curve_draws_means_intervals_and_reference_bands() -> None:
    fixed = pd.DataFrame({"tau": [0.5, 0.1, 0.2], "mean": [41.5, 47.3, 44.7], "ci": [math.nan, 0.5, 1.3]})
    refs = {"DySTreSS a": (45.25, 0.77), "DySTreSS b": (45.19, math.nan), "plain": 44.0}
    fig = plots.fixed_tau_curve(fixed, refs, random_init=35.3)
    ax = fig.axes[0]
    curve = ax.lines[0]
    np.testing.assert_allclose(np.asarray(curve.get_xdata(), dtype=float), [0.1, 0.2, 0.5])  # sorted by tau
    np.testing.assert_allclose(np.asarray(curve.get_ydata(), dtype=float), [47.3, 44.7, 41.5])
    levels = sorted(float(line.get_ydata()[0]) for line in ax.lines if line.get_linestyle() in ("--", ":"))
    np.testing.assert_allclose(levels, [35.3, 44.0, 45.19, 45.25])
    bands = list(ax.patches)
    assert len(bands) == 1  # only the reference with a finite interval gets a band
    bottom, height = bands[0].get_y(), bands[0].get_height()  # a Rectangle, y in data units
    assert (bottom, bottom + height) == pytest.approx((45.25 - 0.77, 45.25 + 0.77))
    matplotlib.pyplot.close(fig)
