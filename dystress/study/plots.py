"""Figures and tables of the book and of the run notebook (matplotlib, imported inside each function).

Every function takes plain data (records, result tables, temperature functions, arrays), draws one
figure and returns it (``None`` when there is nothing to draw); captions are the pages' business.
"""

from __future__ import annotations

import itertools
import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "METRIC_LABELS",
    "accuracy_heatmap",
    "config_label",
    "emd_curves",
    "fixed_tau_curve",
    "gap_vs_steps",
    "glue_figure",
    "glue_text",
    "placeholder",
    "regime_over_training",
    "metrics_table",
    "negative_weights",
    "run_curves",
    "similarities_with_temperature",
    "similarity_grid",
    "snapshot_similarities",
    "structure_curves",
    "temperature_profiles",
    "trajectories",
    "umap_grid",
    "uniformity_tolerance_plane",
]

#: Axis labels of the metrics in records and final metrics.
METRIC_LABELS = {
    "loss": "training loss",
    "lr": "learning rate",
    "tau_pos": "mean tau of positives",
    "tau_neg": "mean tau of negatives",
    "sim_pos": "mean similarity of positives",
    "sim_neg": "mean similarity of negatives",
    "monitor_knn_top1": "monitor kNN top-1 (%)",
    "monitor_uniformity": "uniformity (lower: more uniform)",
    "monitor_tolerance": "tolerance",
    "monitor_inter_class_uniformity": "inter-class uniformity",
    "monitor_alignment": "alignment",
    "knn_top1": "kNN top-1 (%)",
    "linear_top1": "linear top-1 (%)",
    "uniformity": "uniformity",
    "tolerance": "tolerance",
    "alignment": "alignment (lower: better aligned)",
    "trustworthiness": "trustworthiness of the 2-D view",
    "knn_overlap": "k-NN overlap (feature space vs 2-D)",
    "label_purity_high": "label purity of k-NN, feature space",
    "label_purity_low": "label purity of k-NN, 2-D view",
    "centroid_distance_agreement": "class-centroid distance agreement (Spearman)",
}

PAIR_COLORS = {"tp": "tab:green", "tn": "tab:blue", "fn": "tab:red"}
PAIR_NAMES = {"tp": "true positives", "tn": "true negatives", "fn": "false negatives"}


def _plt() -> Any:
    import matplotlib.pyplot as plt

    return plt


def _legend_below(fig: Any, handles: Sequence[Any], labels: Sequence[str], fontsize: float = 8) -> Any:
    """A figure legend below the axes (constrained layout makes room), as many columns as fit its width.

    Returns the legend (None for no entries).
    """
    if not handles:
        return None
    width = fig.get_figwidth() * fig.dpi
    renderer = fig.canvas.get_renderer() if hasattr(fig.canvas, "get_renderer") else None
    for ncol in range(len(handles), 0, -1):
        legend = fig.legend(handles, labels, loc="outside lower center", ncol=ncol, fontsize=fontsize)
        if ncol == 1 or renderer is None or legend.get_window_extent(renderer).width <= 0.98 * width:
            return legend
        legend.remove()
    return None  # unreachable: ncol == 1 always returns


def _unique_handles(axes: Sequence[Any]) -> tuple[list[Any], list[str]]:
    """The legend handles and labels of ``axes``, one per label, in order of first appearance."""
    seen: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    return list(seen.values()), list(seen)


def config_label(config: Any) -> str:
    """A short label of a run: temperature function and parameters, seed, profile."""
    params = ", ".join(f"{k}={v:g}" for k, v in config.temperature_params.items())
    return f"{config.temperature}({params}), seed {config.seed}, {config.profile}, {config.epochs} epochs"


def metrics_table(metrics: Mapping[str, Any]) -> Any:
    """The final metrics as a one-column ``pandas.DataFrame`` (numbers rounded for reading)."""
    import pandas as pd

    rows = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()}
    return pd.DataFrame({"value": pd.Series(rows, dtype=object)})


def run_curves(records: Sequence[Mapping[str, Any]], title: str = "") -> Any:
    """Per-epoch curves of one run: loss, temperatures, monitor kNN, uniformity, tolerance, alignment.

    One panel per quantity (each on its own scale; panels without any value are left out), labelled
    with :data:`METRIC_LABELS`.
    """
    if not records:
        print("no per-epoch record (a run of 0 epochs)")
        return None
    plt = _plt()
    epochs = [r["epoch"] for r in records]
    panels = [
        ("loss", "training loss", ["loss"]),
        ("temperature", "temperature tau", ["tau_pos", "tau_neg"]),
        ("monitor kNN", METRIC_LABELS["monitor_knn_top1"], ["monitor_knn_top1"]),
        ("uniformity", METRIC_LABELS["monitor_uniformity"], ["monitor_uniformity"]),
        ("tolerance", "tolerance (mean same-class similarity)", ["monitor_tolerance"]),
        ("alignment", METRIC_LABELS["alignment"], ["monitor_alignment"]),
    ]
    present = [p for p in panels if any(r.get(key) is not None for r in records for key in p[2])]
    if not present:
        print("no per-epoch metric in the records")
        return None
    ncols = min(3, len(present))
    nrows = math.ceil(len(present) / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(4 * ncols, 3.2 * nrows), squeeze=False, constrained_layout=True
    )
    for ax, (name, ylabel, keys) in zip(axes.flat, present, strict=False):
        for key in keys:
            values = [r.get(key) for r in records]
            if any(v is not None for v in values):
                ys = [np.nan if v is None else v for v in values]
                ax.plot(epochs, ys, marker="o", ms=3, label=METRIC_LABELS.get(key, key))
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel, fontsize=9)
        ax.set_title(name, fontsize=10)
        if len(keys) > 1:
            ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=len(keys))
    for ax in axes.flat[len(present) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def snapshot_similarities(path: str | Path, bins: int = 60) -> Any:
    """TP / TN / FN cosine-similarity histograms of one snapshot file, with their EMDs in the legend."""
    import torch

    from dystress.metrics import pairwise_emd, similarity_distributions, similarity_histograms

    snap = torch.load(path, map_location="cpu", weights_only=True)
    dists = similarity_distributions(snap["view0"], snap["view1"], snap["labels"])
    edges, hists = similarity_histograms(dists, bins=bins)
    fig = similarity_grid({"": [(int(snap["epoch"]), edges, hists)]})
    emd = pairwise_emd(dists)
    fig.suptitle("EMD " + ", ".join(f"{k} {v:.3f}" for k, v in emd.items()), fontsize=9)
    return fig


# ---------------------------------------------------------------------------------------------- page 2
def temperature_profiles(
    panels: Mapping[str, Mapping[str, Any]], points: int = 801, log_tau: Sequence[str] = ()
) -> Any:
    """tau(s) on s in [-1, 1]: one axis per panel, one curve per named temperature function.

    Each panel's legend sits below its axes. ``log_tau``: titles of the panels drawn on a log tau axis
    (for a panel where one curve reaches a much larger tau than the others).
    """
    import torch

    plt = _plt()
    s = torch.linspace(-1.0, 1.0, points, dtype=torch.float64)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), constrained_layout=True)
    axes = np.atleast_1d(axes)
    for ax, (title, functions) in zip(axes, panels.items(), strict=True):
        for label, fn in functions.items():
            ax.plot(s.numpy(), fn(s).numpy(), label=label)
        if title in log_tau:
            ax.set_yscale("log")
        ax.set_xlabel("cosine similarity s")
        ax.set_ylabel("tau(s)" + (" (log scale)" if title in log_tau else ""))
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
    return fig


def negative_weights(functions: Mapping[str, Any], points: int = 801) -> Any:
    """Effective weight of a negative vs its similarity, exp(s / tau(s)) / tau(s), relative to s = 0.

    Left: the weight on a log axis; right: the slope d tau / d s (Proposition 1: negative for s < 0,
    positive for s > 0). One legend for both panels, below them.
    """
    import torch

    plt = _plt()
    s = torch.linspace(-1.0, 1.0, points, dtype=torch.float64)
    zero = torch.zeros(1, dtype=torch.float64)
    fig, (ax_w, ax_d) = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    for label, fn in functions.items():
        tau = fn(s)
        weight = torch.exp(s / tau) / tau
        weight0 = torch.exp(zero / fn(zero)) / fn(zero)
        ax_w.plot(s.numpy(), (weight / weight0).numpy(), label=label)
        ax_d.plot(s.numpy()[1:-1], (np.gradient(tau.numpy(), s.numpy()))[1:-1], label=label)
    ax_w.set_yscale("log")
    ax_w.set_xlabel("similarity s of the negative")
    ax_w.set_ylabel("weight relative to s = 0")
    ax_w.set_title("gradient weight exp(s / tau(s)) / tau(s)", fontsize=10)
    ax_d.axhline(0, color="grey", lw=0.6)
    ax_d.set_xlabel("s")
    ax_d.set_ylabel("d tau / d s")
    ax_d.set_title("slope of the temperature", fontsize=10)
    _legend_below(fig, *ax_w.get_legend_handles_labels())
    return fig


# ---------------------------------------------------------------------------------------------- page 3
def _text_color(rgba: Sequence[float]) -> str:
    """Black on a light colour, white on a dark one (luminance 0.2126 R + 0.7152 G + 0.0722 B > 0.5)."""
    r, g, b = rgba[:3]
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.5 else "white"


def accuracy_heatmap(table: Any, value: str = "knn_top1", title: str = "") -> Any:
    """Heatmap of ``value`` over (tau_min rows, tau_max columns); empty cells are runs that do not exist.

    ``table``: columns ``tau_min, tau_max, value``, optionally ``ci`` (95% half-width, NaN for one seed)
    and ``n`` (seeds): then each cell reads the value over "±0.7 (n=3)" (or "(n=1)" for a NaN ``ci``).
    """
    plt = _plt()
    if table is None or len(table) == 0:
        return None
    grid = table.pivot_table(index="tau_min", columns="tau_max", values=value, aggfunc="mean")
    extra = {}
    if "ci" in table.columns and "n" in table.columns:
        for col in ("ci", "n"):
            cells = table.pivot_table(
                index="tau_min", columns="tau_max", values=col, aggfunc="first", dropna=False
            )
            extra[col] = cells.reindex(index=grid.index, columns=grid.columns).to_numpy(dtype=float)
    fig, ax = plt.subplots(
        figsize=(1.2 * grid.shape[1] + 2.5, (1.0 if extra else 0.8) * grid.shape[0] + 1.5),
        constrained_layout=True,
    )
    data = grid.to_numpy(dtype=float)
    im = ax.imshow(np.ma.masked_invalid(data), cmap="viridis", aspect="auto")
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            if math.isnan(data[i, j]):
                continue
            text = f"{data[i, j]:.1f}"
            if extra:
                ci, n = extra["ci"][i, j], extra["n"][i, j]
                seeds = "" if math.isnan(n) else f"(n={n:g})"
                text += "\n" + (seeds if math.isnan(ci) else f"±{ci:.1f} {seeds}").strip()
            color = _text_color(im.cmap(im.norm(data[i, j])))
            ax.text(j, i, text, ha="center", va="center", color=color, fontsize=9 if not extra else 8)
    ax.set_xticks(range(grid.shape[1]), [f"{c:g}" for c in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [f"{r:g}" for r in grid.index])
    ax.set_xlabel("tau_max")
    ax.set_ylabel("tau_min")
    fig.colorbar(im, ax=ax, label=METRIC_LABELS.get(value, value))
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def fixed_tau_curve(
    fixed: Any,
    references: Mapping[str, float | tuple[float, float]],
    random_init: float | None = None,
    value: str = "knn_top1",
) -> Any:
    """Accuracy vs fixed tau (mean and 95% interval over seeds), DySTreSS runs as horizontal lines.

    ``fixed``: a frame with columns ``tau``, ``mean``, ``ci`` (half-width, NaN for one seed).
    ``references``: label -> mean, or (mean, half-width of its interval; NaN for one seed) drawn as a
    shaded band around the line.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 3.8), constrained_layout=True)
    if fixed is not None and len(fixed):
        fixed = fixed.sort_values("tau")
        ax.errorbar(
            fixed["tau"],
            fixed["mean"],
            yerr=fixed["ci"].fillna(0),
            marker="o",
            capsize=3,
            color="black",
            label="fixed tau (SimCLR)",
        )
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, ref) in enumerate(references.items()):
        acc, ci = ref if isinstance(ref, tuple) else (ref, float("nan"))
        color = colors[i % len(colors)]
        ax.axhline(acc, ls="--", color=color, label=label)
        if np.isfinite(ci):
            ax.axhspan(acc - ci, acc + ci, color=color, alpha=0.15, lw=0)
    if random_init is not None:
        ax.axhline(random_init, ls=":", color="grey", label="random initialisation")
    ax.set_xscale("log")
    if fixed is not None and len(fixed):
        ax.set_xticks(list(fixed["tau"]), [f"{t:g}" for t in fixed["tau"]])
        ax.minorticks_off()
    ax.set_xlabel("fixed temperature tau")
    ax.set_ylabel(METRIC_LABELS.get(value, value))
    ax.legend(fontsize=7, loc="best")
    return fig


# ---------------------------------------------------------------------------------------------- page 4
def trajectories(
    series: Mapping[str, Sequence[Mapping[str, Any]]],
    keys: Sequence[str],
    references: Mapping[str, tuple[str, float]] | None = None,
) -> Any:
    """One panel per record key, one line per run (label -> per-epoch records); legend below the figure.

    ``references``: key -> (label, y), a grey dashed horizontal line with its label in that key's panel
    (e.g. ``{"label_purity_high": ("chance (1 / classes)", 0.1)}``).
    """
    plt = _plt()
    fig, axes = plt.subplots(1, len(keys), figsize=(4.3 * len(keys), 3.5), constrained_layout=True)
    axes = np.atleast_1d(axes)
    for ax, key in zip(axes, keys, strict=True):
        for label, records in series.items():
            pts = [(r["epoch"], r[key]) for r in records if r.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", ms=3, label=label)
        if references and key in references:
            ref_label, y = references[key]
            ax.axhline(y, color="grey", ls="--", lw=1, zorder=1)
            ax.annotate(
                ref_label,
                (0.01, y),
                xycoords=("axes fraction", "data"),
                xytext=(0, 2),
                textcoords="offset points",
                fontsize=8,
                color="dimgrey",
                va="bottom",
            )
        ax.set_xlabel("epoch")
        ax.set_ylabel(textwrap.fill(METRIC_LABELS.get(key, key), 36), fontsize=9)
        ax.set_title(METRIC_LABELS.get(key, key), fontsize=10)
    _legend_below(fig, *_unique_handles(axes))
    return fig


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def uniformity_tolerance_plane(
    table: Any, value: str = "knn_top1", connect: str | None = None, by: str | None = None
) -> Any:
    """Final uniformity (x) vs tolerance (y) of each run, coloured by ``value``, labelled by run.

    ``connect``: an ``ablation`` value (e.g. ``"fixed_tau"``) whose runs are joined by a thin grey line
    in order of their ``tau`` (the mean point per tau when several seeds share one).
    ``by``: a column grouping the runs (e.g. the method, for several seeds each): one marker per group,
    named in a legend, instead of a label per run.
    """
    plt = _plt()
    if table is None or len(table) == 0:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.5), constrained_layout=True)
    if connect is not None:
        rows = table[table["ablation"] == connect]
        taus = np.asarray(rows["tau"], dtype=float)
        finite = np.isfinite(taus)
        if finite.any():
            us = np.asarray(rows["uniformity"], dtype=float)[finite]
            ts = np.asarray(rows["tolerance"], dtype=float)[finite]
            levels = np.unique(taus[finite])  # sorted
            mean_u = [float(us[taus[finite] == t].mean()) for t in levels]
            mean_t = [float(ts[taus[finite] == t].mean()) for t in levels]
            ax.plot(mean_u, mean_t, color="grey", lw=0.8, zorder=1, label="fixed tau sweep")
            ax.legend(fontsize=8, loc="best")
    groups = (
        [(None, table)] if by is None else list(table.groupby(by, sort=False, dropna=False, observed=True))
    )
    norm = plt.Normalize(float(np.nanmin(table[value])), float(np.nanmax(table[value])))
    for marker, (group, rows) in zip(itertools.cycle(_MARKERS), groups):
        sc = ax.scatter(
            rows["uniformity"],
            rows["tolerance"],
            c=rows[value],
            cmap="viridis",
            norm=norm,
            s=60,
            marker=marker,
            edgecolor="black",
            zorder=2,
            label=group,
        )
    if by is None:
        for _, row in table.iterrows():
            ax.annotate(
                row["name"],
                (row["uniformity"], row["tolerance"]),
                fontsize=7,
                xytext=(4, 3),
                textcoords="offset points",
            )
    else:
        legend = ax.legend(fontsize=8, loc="best")
        for handle in legend.legend_handles:  # the marker's shape names the group, not its colour
            if hasattr(handle, "set_facecolor"):  # the groups' markers, not the fixed-tau line
                handle.set_facecolor("white")
    ax.set_xlabel("uniformity (lower: more uniform)")
    ax.set_ylabel("tolerance (mean same-class similarity)")
    fig.colorbar(sc, ax=ax, label=METRIC_LABELS.get(value, value))
    return fig


def regime_over_training(frame: Any, title: str = "") -> Any:
    """The similarities the loss saw, per method over epochs (mean over seeds; :func:`dystress.study.
    budget.regime_frame`): the negatives' 5-95 % band with its median and 99 % quantile, the share of
    negatives at s >= 0.5, and the share to which DySTreSS (0.07, 0.2) gives (or would give) a raised tau."""
    plt = _plt()
    if frame is None or len(frame) == 0 or frame["neg_sim_q50"].isna().all():
        return None
    means = frame.groupby(["name", "epoch"], sort=False).mean(numeric_only=True).reset_index()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), constrained_layout=True)
    for i, (name, rows) in enumerate(means.groupby("name", sort=False)):
        color = f"C{i % 10}"
        axes[0].fill_between(rows.epoch, rows.neg_sim_q05, rows.neg_sim_q95, color=color, alpha=0.15)
        axes[0].plot(rows.epoch, rows.neg_sim_q50, color=color, label=name)
        axes[0].plot(rows.epoch, rows.neg_sim_q99, color=color, ls="--", lw=1)
        axes[1].plot(rows.epoch, 100 * rows.neg_close_share, color=color, marker="o", ms=3)
        axes[2].plot(rows.epoch, 100 * rows.dystress_raised_share, color=color, marker="o", ms=3)
    axes[0].set_ylabel("similarity of negatives\n(5-95 % band, median; dashed: 99 %)", fontsize=9)
    axes[1].set_ylabel("negatives with s >= 0.5 (%)", fontsize=9)
    axes[2].set_ylabel("negatives DySTreSS (0.07, 0.2)\nwould raise above tau_min + 10 % (%)", fontsize=9)
    for ax in axes:
        ax.set_xlabel("epoch")
    if title:
        fig.suptitle(title, fontsize=11)
    _legend_below(fig, *_unique_handles(axes))
    return fig


def paired_seeds(values: Mapping[str, Mapping[str, Mapping[int, float]]], title: str = "") -> Any:
    """Two methods seed by seed, one panel per metric: ``values[metric][method][seed]`` (two methods
    per metric, in order), each seed both have as a line joining its two results (its paired
    difference), each method's mean over all its seeds as a bar; None when no metric has both."""
    plt = _plt()
    panels = {metric: by_method for metric, by_method in values.items() if len(by_method) == 2}
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.6), constrained_layout=True)
    for ax, (metric, by_method) in zip(np.atleast_1d(axes), panels.items(), strict=True):
        (name_a, a), (name_b, b) = by_method.items()
        for i, seed in enumerate(sorted(a.keys() & b.keys())):
            ax.plot([0, 1], [a[seed], b[seed]], "o-", color=f"C{i % 10}", label=f"seed {seed}")
        for x, runs in enumerate((a, b)):
            mean = float(np.mean(list(runs.values())))
            ax.plot([x - 0.15, x + 0.15], [mean, mean], color="black", lw=2)
        ax.set_xticks([0, 1], [name_a, name_b], fontsize=8)
        ax.set_xlim(-0.4, 1.4)
        ax.set_title(metric, fontsize=9)
        ax.set_ylabel("top-1 (%)", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    _legend_below(fig, *_unique_handles(list(np.atleast_1d(axes))))
    return fig


def gap_vs_steps(table: Any) -> Any:
    """Per training budget (:func:`dystress.study.budget.budget_table`): the paired gap DySTreSS (0.07,
    0.2) - fixed tau 0.1 with its 95 % interval, and the DySTreSS runs' 95 % / 99 % similarity
    quantiles of negatives, against optimiser steps (log scale)."""
    plt = _plt()
    if table is None or len(table) == 0:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
    ci = np.where(np.isfinite(table.ci), table.ci, 0.0)
    axes[0].errorbar(table.steps, table.gap, yerr=ci, fmt="o-", capsize=4)
    axes[0].axhline(0, color="grey", lw=0.8, ls="--")
    for _, row in table.iterrows():
        axes[0].annotate(
            row.budget, (row.steps, row.gap), fontsize=8, xytext=(5, 4), textcoords="offset points"
        )
    axes[0].set_ylabel(
        "kNN top-1 gap, DySTreSS (0.07, 0.2)\n- fixed tau 0.1 (points, paired 95 %)", fontsize=9
    )
    axes[1].plot(table.steps, table.neg_sim_q95, "o-", label="95 % quantile")
    axes[1].plot(table.steps, table.neg_sim_q99, "s--", label="99 % quantile")
    axes[1].axhline(0.5, color="grey", lw=0.8, ls=":", label="s = 0.5 (tau mid-range)")
    axes[1].set_ylabel("similarity of negatives\n(DySTreSS runs, last epoch)", fontsize=9)
    axes[1].legend(fontsize=8)
    steps = sorted(set(int(x) for x in table.steps))
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xticks(steps, [f"{x:,}" for x in steps])  # the budgets' own steps, no overlapping labels
        ax.minorticks_off()
        ax.set_xlabel("optimiser steps")
    return fig


def isogclr_temperatures(runs: Sequence[tuple[str, Mapping[str, Any]]]) -> Any:
    """iSogCLR's learned per-image taus from each run's last record (``(label, record)``, one line per
    run): left, each class's mean tau (``tau_sample_class_mean``) against the class index (on
    CIFAR-10-LT the classes run from the most to the least frequent); right, the mean tau in
    equal-count bins of the images' mean similarity to their negatives (``tau_by_similarity``)."""
    plt = _plt()
    usable = [
        (label, r) for label, r in runs if r.get("tau_sample_class_mean") and r.get("tau_by_similarity")
    ]
    if not usable:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
    for i, (label, record) in enumerate(usable):
        means = [math.nan if m is None else m for m in record["tau_sample_class_mean"]]
        axes[0].plot(range(len(means)), means, "o-", color=f"C{i % 10}", label=label)
        bins = np.asarray(record["tau_by_similarity"], dtype=float)
        axes[1].plot(bins[:, 0], bins[:, 1], "o-", color=f"C{i % 10}")
    axes[0].set_xlabel("class (CIFAR-10-LT: from the most to the least frequent)")
    axes[0].set_ylabel("mean learned tau of the class's images", fontsize=9)
    axes[1].set_xlabel("image's mean similarity to its negatives (equal-count bins)")
    axes[1].set_ylabel("mean learned tau", fontsize=9)
    _legend_below(fig, *_unique_handles(axes))
    return fig


# ---------------------------------------------------------------------------------------------- page 5
def _run_snapshot_grid(
    series: Mapping[str, Sequence[Any]], panel: tuple[float, float]
) -> tuple[Any, Any, list[tuple[Any, int, str, int, Any]]]:
    """A figure with one row per run and one column per snapshot, empty cells hidden.

    Returns ``(fig, axes [rows, cols], cells)`` with ``cells`` = [(ax, row, run name, column, item)].
    """
    plt = _plt()
    rows = list(series)
    cols = max(len(v) for v in series.values())
    size = (panel[0] * cols, panel[1] * len(rows))
    fig, axes = plt.subplots(len(rows), cols, figsize=size, squeeze=False, constrained_layout=True)
    cells = []
    for i, name in enumerate(rows):
        for j in range(cols):
            if j < len(series[name]):
                cells.append((axes[i, j], i, name, j, series[name][j]))
            else:
                axes[i, j].axis("off")
    return fig, axes, cells


def _class_norm_cmap(n_classes: int) -> tuple[Any, Any]:
    """The colormap and normalisation of class indices: tab10 on [0, 9] up to 10 classes, else turbo."""
    import matplotlib
    from matplotlib.colors import Normalize

    if n_classes <= 10:
        return matplotlib.colormaps["tab10"], Normalize(vmin=0, vmax=9)
    return matplotlib.colormaps["turbo"], Normalize(vmin=0, vmax=n_classes - 1)


def umap_grid(
    embeddings: Mapping[str, Sequence[tuple[int, np.ndarray]]],
    labels: np.ndarray,
    class_names: Sequence[str] | None = None,
) -> Any:
    """Rows: runs; columns: snapshot epochs; points coloured by class (labels for display only).

    Class ``c`` has the tab10 colour ``c`` (fixed per class index, whichever labels occur); with more
    than 10 classes the colours come from the continuous ``turbo`` map instead.
    ``class_names``: names of the classes 0, 1, ..., shown in a legend below the grid.
    """
    from matplotlib.lines import Line2D

    labels = np.asarray(labels)
    n_classes = max(len(class_names or ()), int(labels.max()) + 1 if labels.size else 0)
    cmap, norm = _class_norm_cmap(n_classes)
    fig, _, cells = _run_snapshot_grid(embeddings, (2.8, 2.8))
    for ax, _, name, j, (epoch, emb) in cells:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.scatter(
            emb[:, 0],
            emb[:, 1],
            c=labels,
            cmap=cmap,
            vmin=norm.vmin,
            vmax=norm.vmax,
            s=3,
            alpha=0.8,
            linewidths=0,
        )
        ax.set_title(f"epoch {epoch}", fontsize=9)
        if j == 0:
            ax.set_ylabel(textwrap.fill(name, 26), fontsize=10, fontweight="bold")
    if class_names:
        handles = [
            Line2D([], [], ls="", marker="o", ms=6, color=cmap(norm(c))) for c in range(len(class_names))
        ]
        _legend_below(fig, handles, list(class_names))
    return fig


def structure_curves(
    scores: Mapping[str, Sequence[Mapping[str, Any]]],
    keys: Sequence[str],
    references: Mapping[str, tuple[str, float]] | None = None,
) -> Any:
    """Structure scores over epochs: one panel per score, one line per run (records with ``epoch``).

    ``references``: as in :func:`trajectories` (e.g. chance label purity).
    """
    return trajectories(scores, keys, references=references)


def _nonzero_range(
    cells: Sequence[tuple[Any, Any, Mapping[str, Any]]], pad: float = 0.05
) -> tuple[float, float]:
    """[first, last] bin edge where any histogram of ``cells`` is non-zero, padded, clipped to [-1, 1]."""
    lo, hi = math.inf, -math.inf
    for _, edges, hists in cells:
        edges = np.asarray(edges, dtype=float)
        for kind in ("tp", "tn", "fn"):
            if kind in hists:
                nz = np.flatnonzero(np.asarray(hists[kind], dtype=float) > 0)
                if nz.size:
                    lo, hi = min(lo, edges[nz[0]]), max(hi, edges[nz[-1] + 1])
    if lo > hi:
        return -1.0, 1.0
    return max(-1.0, float(lo) - pad), min(1.0, float(hi) + pad)


def similarity_grid(
    histograms: Mapping[str, Sequence[tuple[int, Any, Mapping[str, Any]]]],
    xlabel: str = "cosine similarity",
) -> Any:
    """TP / TN / FN similarity histograms: rows are runs, columns snapshots; legend below the grid.

    ``histograms``: run name -> [(epoch, edges [bins + 1], {"tp"|"tn"|"fn": fractions [bins]})], as
    from :func:`dystress.metrics.similarity_histograms`. All panels share the x-range where any
    histogram is non-zero (padded by 0.05, within [-1, 1]).
    """
    fig, axes, cells = _run_snapshot_grid(histograms, (3.2, 2.6))
    xlim = _nonzero_range([item for *_, item in cells])
    for ax, _, name, _, (epoch, edges, hists) in cells:
        edges = np.asarray(edges, dtype=float)
        centers = 0.5 * (edges[1:] + edges[:-1])
        for kind in ("tp", "tn", "fn"):
            if kind in hists:
                ax.plot(centers, np.asarray(hists[kind]), color=PAIR_COLORS[kind], label=PAIR_NAMES[kind])
        ax.set_title(f"{name} epoch {epoch}".strip(), fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_xlim(*xlim)
        ax.set_yticks([])
    _legend_below(fig, *_unique_handles(axes.flat))
    return fig


def similarities_with_temperature(
    panels: Mapping[str, tuple[Any, Mapping[str, Any], Any]],
    xlabel: str = "cosine similarity of projections",
) -> Any:
    """TP / TN / FN similarity histograms with the run's tau(s) on a second y-axis, one panel per run.

    ``panels``: run name -> (edges [bins + 1], {"tp"|"tn"|"fn": fractions [bins]}, temperature function
    or None); the function is drawn at the bin centres over the panels' shared non-zero x-range (a
    constant temperature as a flat line), so the reader sees which temperature each kind of pair gets.
    Meant for per-pair temperatures and fixed ones: a TS schedule would be drawn at its current epoch
    and MACL's tau, which depends on the batch, not on the pair, has no such curve.
    """
    import torch

    plt = _plt()
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.0 * len(panels), 3.2), squeeze=False, constrained_layout=True
    )
    xlim = _nonzero_range([(None, edges, hists) for edges, hists, _ in panels.values()])
    twins = []
    for ax, (name, (edges, hists, fn)) in zip(axes[0], panels.items(), strict=True):
        edges = np.asarray(edges, dtype=float)
        centers = 0.5 * (edges[1:] + edges[:-1])
        for kind in ("tp", "tn", "fn"):
            if kind in hists:
                ax.plot(centers, np.asarray(hists[kind]), color=PAIR_COLORS[kind], label=PAIR_NAMES[kind])
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_xlim(*xlim)
        ax.set_ylabel("fraction of pairs")
        if fn is not None:
            twin = ax.twinx()
            tau = fn(torch.as_tensor(centers, dtype=torch.float64)).numpy()
            twin.plot(centers, tau, color="black", ls="--", lw=1.2, label="tau(s) of the run")
            twin.set_ylabel("tau(s)")
            twin.set_ylim(0, max(0.25, 1.15 * float(np.max(tau))))
            twins.append(twin)
    _legend_below(fig, *_unique_handles([*axes.flat, *twins]))
    return fig


def emd_curves(emds: Mapping[str, Sequence[tuple[int, Mapping[str, float]]]]) -> Any:
    """EMD between the TP, TN and FN distributions over training: one panel per pair, one line per run."""
    plt = _plt()
    pairs = ("tp-tn", "tp-fn", "tn-fn")
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.2 * len(pairs), 3.4), constrained_layout=True)
    for ax, pair in zip(axes, pairs, strict=True):
        for name, series in emds.items():
            pts = [(e, d[pair]) for e, d in series if pair in d]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=name)
        a, b = pair.split("-")
        ax.set_title(f"EMD {a.upper()}\u2013{b.upper()}\n{PAIR_NAMES[a]} vs {PAIR_NAMES[b]}", fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("EMD (Wasserstein-1)")
    _legend_below(fig, *_unique_handles(axes))
    return fig


# ---------------------------------------------------------------------------------------------- book helpers
def placeholder(message: str) -> Any:
    """A small figure that only says ``message`` (for a figure whose runs do not exist yet)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 1.2))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=10, wrap=True)
    return fig


def glue_figure(name: str, fig: Any, missing: str = "no result of this profile yet") -> None:
    """``myst_nb.glue`` a figure as a PNG (a placeholder saying ``missing`` for None), then close it.

    The figure is rendered here, so pyplot figures and bare ``matplotlib.figure.Figure`` objects (which
    have no notebook display of their own) are glued alike.
    """
    import io

    from IPython.display import Image
    from myst_nb import glue

    plt = _plt()
    fig = placeholder(missing) if fig is None else fig
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    glue(name, Image(data=buffer.getvalue(), format="png"), display=False)
    plt.close(fig)


def glue_text(name: str, value: Any, fmt: str = "") -> None:
    """``myst_nb.glue`` ``value`` as Markdown text (format spec ``fmt`` for numbers; NaN/None: "n/a")."""
    from IPython.display import Markdown
    from myst_nb import glue

    if value is None or (isinstance(value, float) and math.isnan(value)):
        text = "n/a"
    else:
        text = format(value, fmt)
    glue(name, Markdown(text), display=False)
