"""Figures of the book: what they draw, read back from the matplotlib artists."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pandas as pd
import pytest

from dystress.study import plots

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


def _rgba(color: object) -> np.ndarray:
    return np.asarray(matplotlib.colors.to_rgba(color), dtype=float)


def test_accuracy_heatmap_annotates_mean_interval_seeds_with_contrasting_text() -> None:
    table = pd.DataFrame(
        {
            "tau_min": [0.1, 0.1, 0.2, 0.2],
            "tau_max": [0.2, 0.5, 0.2, 0.5],
            "knn_top1": [45.5, 45.8, 40.0, 47.0],
            "ci": [0.7, math.nan, 1.23, 0.26],
            "n": [3, 1, 3, 3],
        }
    )
    fig = plots.accuracy_heatmap(table, "knn_top1")
    ax = fig.axes[0]
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t for t in ax.texts}  # (row, col)
    expected = {
        (0, 0): "45.5\n±0.7 (n=3)",
        (0, 1): "45.8\n(n=1)",
        (1, 0): "40.0\n±1.2 (n=3)",
        (1, 1): "47.0\n±0.3 (n=3)",
    }
    assert {k: t.get_text() for k, t in texts.items()} == expected
    # text colour from the cell's viridis colour, computed here independently of the figure
    cmap, norm = matplotlib.colormaps["viridis"], matplotlib.colors.Normalize(40.0, 47.0)
    values = {(0, 0): 45.5, (0, 1): 45.8, (1, 0): 40.0, (1, 1): 47.0}
    for cell, v in values.items():
        r, g, b, _ = cmap(norm(v))
        want = "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.5 else "white"
        np.testing.assert_allclose(_rgba(texts[cell].get_color()), _rgba(want))
    np.testing.assert_allclose(_rgba(texts[(1, 0)].get_color()), _rgba("white"))  # 40.0: darkest cell
    np.testing.assert_allclose(_rgba(texts[(1, 1)].get_color()), _rgba("black"))  # 47.0: lightest cell
    matplotlib.pyplot.close(fig)
    # without ci / n columns: the value alone
    fig = plots.accuracy_heatmap(table[["tau_min", "tau_max", "knn_top1"]], "knn_top1")
    assert sorted(t.get_text() for t in fig.axes[0].texts) == ["40.0", "45.5", "45.8", "47.0"]
    matplotlib.pyplot.close(fig)


def test_similarity_grid_shares_padded_nonzero_range_and_legend_below() -> None:
    edges = np.linspace(-1.0, 1.0, 41)  # bins of width 0.05

    def hist(first: int, last: int) -> np.ndarray:
        h = np.zeros(40)
        h[first : last + 1] = 1.0
        return h / h.sum()

    histograms = {
        "run a": [
            (0, edges, {"tp": hist(30, 39), "tn": hist(18, 24), "fn": hist(20, 28)}),
            (5, edges, {"tp": hist(32, 36), "tn": hist(16, 22), "fn": hist(20, 26)}),
        ],
        "run b": [(0, edges, {"tp": hist(28, 35), "tn": hist(12, 20), "fn": hist(14, 25)})],
    }
    fig = plots.similarity_grid(histograms, xlabel="cos s")
    lo = min(
        edges[np.flatnonzero(h > 0)[0]] for run in histograms.values() for _, _, d in run for h in d.values()
    )
    hi = max(
        edges[np.flatnonzero(h > 0)[-1] + 1]
        for run in histograms.values()
        for _, _, d in run
        for h in d.values()
    )
    expected = (max(-1.0, lo - 0.05), min(1.0, hi + 0.05))
    assert expected == pytest.approx((-0.45, 1.0))  # the last bin is filled: clipped at 1
    drawn = [ax for ax in fig.axes if ax.axison]
    assert len(drawn) == 3  # run b's second cell is hidden
    for ax in drawn:
        assert ax.get_xlim() == pytest.approx(expected)
        assert ax.get_xlabel() == "cos s"
        assert ax.get_legend() is None
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "true positives",
        "true negatives",
        "false negatives",
    ]
    matplotlib.pyplot.close(fig)


def test_trajectories_reference_line_labels_and_legend_below() -> None:
    series = {
        f"run {i}": [
            {"epoch": e, "label_purity_high": 0.2 + 0.1 * e + i, "trustworthiness": 0.9} for e in range(3)
        ]
        for i in range(3)
    }
    keys = ["label_purity_high", "trustworthiness", "unlabelled_key"]
    for i, records in enumerate(series.values()):
        for r in records:
            r["unlabelled_key"] = float(i)
    refs = {"label_purity_high": ("chance (1 / classes)", 0.1)}
    fig = plots.structure_curves(series, keys, references=refs)
    axes = fig.axes
    assert len(axes) == 3
    dashed = [[line for line in ax.lines if line.get_linestyle() == "--"] for ax in axes]
    assert [len(d) for d in dashed] == [1, 0, 0]  # only in the panel of its key
    np.testing.assert_allclose(np.asarray(dashed[0][0].get_ydata(), dtype=float), [0.1, 0.1])
    assert "chance (1 / classes)" in [t.get_text() for t in axes[0].texts]
    for ax, key in zip(axes, keys, strict=True):
        assert ax.get_ylabel().strip()
        assert ax.get_ylabel().replace("\n", " ") == plots.METRIC_LABELS.get(key, key)
        assert ax.get_xlabel() == "epoch"
        assert ax.get_legend() is None
    assert axes[0].get_title() == "label purity of k-NN, feature space"
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == list(series)  # one entry per run
    matplotlib.pyplot.close(fig)


@pytest.mark.parametrize("used", [list(range(10)), [2, 5, 7]])  # [2, 5, 7]: neither 0 nor 9 occurs
def test_umap_grid_class_legend_matches_scatter_colours(used: list[int]) -> None:
    rng = np.random.default_rng(0)
    labels = np.asarray(used * 5)
    emb = rng.normal(size=(labels.size, 2))
    names = [f"class {c}" for c in range(10)]
    fig = plots.umap_grid(
        {"fixed tau 0.1": [(0, emb), (10, emb)], "run b": [(0, emb)]}, labels, class_names=names
    )
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == names
    tab10 = matplotlib.colormaps["tab10"]
    for c, handle in enumerate(legend.legend_handles):
        np.testing.assert_allclose(_rgba(handle.get_markerfacecolor()), tab10(c), atol=1e-9)
    fig.canvas.draw()
    scatter = fig.axes[0].collections[0]
    np.testing.assert_allclose(scatter.get_facecolors()[:, :3], tab10(labels)[:, :3], atol=1e-9)
    assert fig.axes[0].get_ylabel() == "fixed tau 0.1"
    matplotlib.pyplot.close(fig)
    fig = plots.umap_grid({"run": [(0, emb)]}, labels)
    assert not fig.legends
    matplotlib.pyplot.close(fig)


def test_uniformity_tolerance_plane_connects_fixed_tau_runs_by_tau() -> None:
    table = pd.DataFrame(
        {
            "ablation": ["fixed_tau", "dystress_grid", "fixed_tau", "fixed_tau", "dystress_grid"],
            "tau": [0.5, math.nan, 0.1, 0.2, math.nan],
            "uniformity": [-2.0, -3.2, -3.5, -3.0, -3.1],
            "tolerance": [0.6, 0.45, 0.3, 0.4, 0.42],
            "knn_top1": [40.0, 45.5, 46.0, 45.0, 45.2],
            "name": ["f 0.5", "d a", "f 0.1", "f 0.2", "d b"],
        }
    )
    fig = plots.uniformity_tolerance_plane(table, connect="fixed_tau")
    ax = fig.axes[0]
    (line,) = [line for line in ax.lines if line.get_label() == "fixed tau sweep"]
    np.testing.assert_allclose(np.asarray(line.get_xdata(), dtype=float), [-3.5, -3.0, -2.0])
    np.testing.assert_allclose(np.asarray(line.get_ydata(), dtype=float), [0.3, 0.4, 0.6])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["fixed tau sweep"]
    assert sorted(t.get_text() for t in ax.texts) == sorted(table["name"])  # annotations stay
    matplotlib.pyplot.close(fig)
    fig = plots.uniformity_tolerance_plane(table)
    assert not fig.axes[0].lines
    matplotlib.pyplot.close(fig)


def test_uniformity_tolerance_plane_by_group_names_groups_in_a_legend() -> None:
    table = pd.DataFrame(
        {
            "uniformity": [-2.0, -3.2, -3.5, -3.0],
            "tolerance": [0.6, 0.45, 0.3, 0.4],
            "knn_top1": [40.0, 45.5, 46.0, 45.0],
            "method": ["fixed", "dystress", "fixed", "dystress"],
        }
    )
    fig = plots.uniformity_tolerance_plane(table, by="method")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["fixed", "dystress"]
    assert not ax.texts  # no label per run
    collections = {c.get_label(): c for c in ax.collections}
    np.testing.assert_allclose(collections["fixed"].get_offsets(), [[-2.0, 0.6], [-3.5, 0.3]])
    assert collections["fixed"].norm.vmin == 40.0 and collections["dystress"].norm.vmax == 46.0  # one scale
    matplotlib.pyplot.close(fig)
    # with the fixed-tau line in the legend too, and a run without a group (kept, not dropped)
    table["ablation"], table["tau"] = ["fixed_tau", "x", "fixed_tau", "x"], [0.1, math.nan, 0.2, math.nan]
    table.loc[3, "method"] = None
    fig = plots.uniformity_tolerance_plane(table, connect="fixed_tau", by="method")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[0] == "fixed tau sweep" and len(labels) == 4
    assert sum(len(c.get_offsets()) for c in fig.axes[0].collections) == 4
    matplotlib.pyplot.close(fig)


def test_run_curves_one_panel_per_quantity_with_readable_labels() -> None:
    records = [
        {
            "epoch": e,
            "loss": 5.0 - e,
            "tau_pos": 0.2,
            "tau_neg": 0.1,
            "monitor_knn_top1": 30.0 + e,
            "monitor_uniformity": -2.0 - e,
            "monitor_tolerance": 0.5,
            "monitor_alignment": 0.8,
        }
        for e in range(1, 4)
    ]
    fig = plots.run_curves(records, title="a run")
    drawn = [ax for ax in fig.axes if ax.lines]
    groups = [["loss"], ["tau_pos", "tau_neg"], ["monitor_knn_top1"]]
    groups += [["monitor_uniformity"], ["monitor_tolerance"], ["monitor_alignment"]]
    assert len(drawn) == len(groups)
    for ax, keys in zip(drawn, groups, strict=True):
        assert [line.get_label() for line in ax.lines] == [plots.METRIC_LABELS[k] for k in keys]
        assert ax.get_ylabel().strip()
    legends = [ax.get_legend() for ax in drawn if ax.get_legend() is not None]
    assert len(legends) == 1
    assert [t.get_text() for t in legends[0].get_texts()] == [
        "mean tau of positives",
        "mean tau of negatives",
    ]
    matplotlib.pyplot.close(fig)
    partial = [{k: v for k, v in r.items() if k != "monitor_alignment"} for r in records]
    fig = plots.run_curves(partial)
    assert len([ax for ax in fig.axes if ax.lines]) == len(groups) - 1
    matplotlib.pyplot.close(fig)


def test_emd_curves_labels_pairs_and_legend_below() -> None:
    emds = {
        "a": [
            (0, {"tp-tn": 0.5, "tp-fn": 0.3, "tn-fn": 0.2}),
            (5, {"tp-tn": 0.6, "tp-fn": 0.2, "tn-fn": 0.3}),
        ]
    }
    emds["b"] = emds["a"][:1]
    fig = plots.emd_curves(emds)
    assert [ax.get_title().split("\n") for ax in fig.axes] == [
        ["EMD TP\u2013TN", "true positives vs true negatives"],
        ["EMD TP\u2013FN", "true positives vs false negatives"],
        ["EMD TN\u2013FN", "true negatives vs false negatives"],
    ]
    assert {ax.get_ylabel() for ax in fig.axes} == {"EMD (Wasserstein-1)"}
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["a", "b"]
    matplotlib.pyplot.close(fig)


def test_temperature_legends_sit_below_the_curves() -> None:
    from dystress.temperature import build_temperature

    functions = {
        "fixed 0.1": build_temperature("constant", tau=0.1),
        "DySTreSS (0.05, 1)": build_temperature("cosine", tau_min=0.05, tau_max=1.0),
    }
    fig = plots.temperature_profiles({"a": functions, "b": functions}, points=51, log_tau=["a"])
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        assert ax.get_legend().get_window_extent(renderer).y1 <= ax.get_window_extent(renderer).y0
    assert [ax.get_yscale() for ax in fig.axes] == ["log", "linear"]
    matplotlib.pyplot.close(fig)
    fig = plots.negative_weights(functions, points=51)
    fig.canvas.draw()
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == list(functions)
    top = legend.get_window_extent(renderer := fig.canvas.get_renderer()).y1
    assert all(top <= ax.get_window_extent(renderer).y0 for ax in fig.axes)
    assert all(ax.get_legend() is None for ax in fig.axes)
    matplotlib.pyplot.close(fig)


def test_similarities_with_temperature_overlays_each_runs_tau_at_the_bin_centres() -> None:
    import torch

    from dystress.temperature import ConstantTemperature, CosineTemperature

    edges = np.linspace(-1.0, 1.0, 11)
    hists = {"tp": np.eye(10)[8], "tn": np.eye(10)[5], "fn": np.eye(10)[6]}  # bins 5..8 are non-zero
    cosine = CosineTemperature(0.07, 0.2)
    fig = plots.similarities_with_temperature(
        {
            "DySTreSS": (edges, hists, cosine),
            "fixed": (edges, hists, ConstantTemperature(0.1)),
            "none": (edges, hists, None),
        }
    )
    hist_axes = [ax for ax in fig.axes if ax.get_ylabel() == "fraction of pairs"]
    twins = [ax for ax in fig.axes if ax.get_ylabel() == "tau(s)"]
    assert len(hist_axes) == 3 and len(twins) == 2  # no temperature, no twin axis
    centers = 0.5 * (edges[1:] + edges[:-1])
    tau_line = twins[0].lines[0]
    np.testing.assert_allclose(tau_line.get_xdata(), centers)
    expected = 0.07 + 0.5 * (0.2 - 0.07) * (1 + np.cos(np.pi * (1 + centers)))  # the paper's formula
    np.testing.assert_allclose(tau_line.get_ydata(), expected, rtol=1e-12)
    np.testing.assert_allclose(twins[1].lines[0].get_ydata(), np.full(10, 0.1))
    assert hist_axes[0].get_xlim() == pytest.approx((0.0 - 0.05, 0.8 + 0.05))  # shared non-zero range
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == [
        "true positives",
        "true negatives",
        "false negatives",
        "tau(s) of the run",
    ]
    assert torch.is_tensor(cosine(torch.zeros(1)))  # the function itself is left as it was
    matplotlib.pyplot.close(fig)


def test_isogclr_temperatures_draws_class_means_and_similarity_bins() -> None:
    record = {
        "tau_sample_class_mean": [0.3, None, 0.1],
        "tau_by_similarity": [[-0.1, 0.2, 5], [0.0, 0.25, 5], [0.2, 0.4, 4]],
    }
    fig = plots.isogclr_temperatures([("iSogCLR, seed 0", record), ("no taus", {"tau_sample_q50": 0.1})])
    left, right = fig.axes[:2]
    assert len(left.lines) == len(right.lines) == 1  # the run without per-image taus is not drawn
    np.testing.assert_allclose(np.asarray(left.lines[0].get_ydata(), dtype=float), [0.3, math.nan, 0.1])
    np.testing.assert_allclose(np.asarray(right.lines[0].get_xdata(), dtype=float), [-0.1, 0.0, 0.2])
    np.testing.assert_allclose(np.asarray(right.lines[0].get_ydata(), dtype=float), [0.2, 0.25, 0.4])
    assert plots.isogclr_temperatures([("none", {})]) is None


def test_paired_seeds_joins_each_seeds_two_results_and_marks_the_means() -> None:
    values = {
        "kNN": {"A": {0: 60.0, 1: 59.0, 2: 61.0}, "B": {0: 60.5, 1: 59.5, 2: 60.0}},
        "probe": {"A": {0: 67.0}},  # one method: no panel
    }
    fig = plots.paired_seeds(values, "title")
    (ax,) = fig.axes
    pairs = [tuple(line.get_ydata()) for line in ax.lines if line.get_label().startswith("seed")]
    assert pairs == [(60.0, 60.5), (59.0, 59.5), (61.0, 60.0)]
    means = [line.get_ydata()[0] for line in ax.lines if line.get_color() == "black"]
    assert means == pytest.approx([60.0, 60.0])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["A", "B"] and ax.get_title() == "kNN"
    assert plots.paired_seeds({"probe": {"A": {0: 67.0}}}) is None
