"""The GPU measurements that ship (:mod:`dystress.study.gpu_shipped`) in words and tables: the
paper-scale page's GPU section and the introduction's summary of the headline comparison.

    section(gpu, budgets)  the page's Markdown: where and on what it was made, the throughput table
                           with its projection, the headline's runs, their final evaluation (means
                           and seed by seed), the gap at every budget that ships, the regime
    headline_lines(gpu)    one seed-by-seed sentence per final metric (the introduction's summary)
    seeds_by_metric(gpu)   metric -> method -> seed -> value (the page's seed-by-seed figure)
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from dystress.study import budget
from dystress.study.budget import REFERENCE, comparison_lines, final_by_seed
from dystress.study.findings import Paired, estimate, paired
from dystress.study.gpu_shipped import GpuMeasurements, projected_minutes

__all__ = ["HEADLINE_METRICS", "SIMCLR", "headline_gap", "headline_lines", "section", "seeds_by_metric"]

#: The headline's other method: SimCLR, the fixed tau of the authors' script.
SIMCLR = ("fixed_tau", "0.2")
#: The final metrics the headline compares: key -> name (the paper's tables use the majority vote).
HEADLINE_METRICS = {
    "knn_top1": "weighted 200-NN top-1 (t = 0.1)",
    "knn200_majority": "200-NN majority vote (the paper's kNN protocol)",
    "linear_top1": "linear probe top-1",
}
#: The statuses whose records count for the regime (a stopped run recorded its epochs).
_RECORDED = ("complete", "stopped")


def headline_gap(gpu: GpuMeasurements, key: str) -> Paired | None:
    """DySTreSS (0.07, 0.2) - SimCLR (fixed tau 0.2) on final metric ``key``, seed by seed, over the
    headline's complete runs (None without a seed that both have)."""
    return paired(final_by_seed(gpu.runs, REFERENCE, key), final_by_seed(gpu.runs, SIMCLR, key))


def headline_lines(gpu: GpuMeasurements) -> list[str]:
    """One seed-by-seed sentence per :data:`HEADLINE_METRICS` entry, DySTreSS (0.07, 0.2) against
    SimCLR (fixed tau 0.2) on the headline's complete runs, e.g. "200-NN majority vote (...): Seed by
    seed (seeds 0, 1, 2), DySTreSS (0.07, 0.2) is 0.05 points above ..."; none without complete runs."""
    return [
        f"{name}: {line}"
        for key, name in HEADLINE_METRICS.items()
        for line in comparison_lines(gpu.runs, key)
    ]


def seeds_by_metric(gpu: GpuMeasurements | None) -> dict[str, dict[str, dict[int, float]]]:
    """The headline's complete runs as ``{metric name: {method: {seed: value}}}`` (methods in the order
    of the runs; empty without a complete run), for :func:`dystress.study.plots.paired_seeds`."""
    values: dict[str, dict[str, dict[int, float]]] = {}
    for r in gpu.runs if gpu is not None else []:
        method = budget.method_name(r.point.ablation, r.point.label)
        for key, name in HEADLINE_METRICS.items():
            if r.status == "complete" and key in r.final:
                values.setdefault(name, {}).setdefault(method, {})[r.point.seed] = float(r.final[key])
    return values


def section(gpu: GpuMeasurements, budgets: Sequence[GpuMeasurements] = ()) -> str:
    """The paper-scale page's GPU section (Markdown) for the shipped measurements ``gpu`` and the
    headlines at every budget (:func:`~dystress.study.gpu_shipped.headline_budgets`; a table when
    more than one)."""
    lines = _provenance(gpu) + _throughput(gpu) + _headline(gpu)
    if len(budgets) > 1:
        lines += _budgets(budgets)
    return "\n".join(lines + _regime(gpu))


def _provenance(gpu: GpuMeasurements) -> list[str]:
    changed = gpu.code_changes
    same = f"not this build's: changed since, {', '.join(changed)}" if changed else "this build's"
    return [
        f"The headline below was made by `benchmarks/gpu_study.sh` on one {gpu.machine}, code version "
        f"{gpu.code_version} ({same}), {gpu.finished}, data: {gpu.data}."
    ]


def _throughput(gpu: GpuMeasurements) -> list[str]:
    """The table of eager and compiled runs (and whole-step CUDA graphs, when measured) side by side,
    and what their best rates project."""
    measured = [("eager", gpu.throughput), ("compiled", gpu.throughput_compiled)]
    if gpu.throughput_graph:
        measured.append(("whole-step graph", gpu.throughput_graph))
    if not any(rows for _, rows in measured):
        return []
    tables = [{r["runs"]: r for r in rows} for _, rows in measured]

    def rate(table: dict[int, dict[str, Any]], n: int, key: str) -> str:
        return f"{table[n][key]:,.0f}" if n in table else "-"

    graph_note = (
        ", and with the engine's whole step captured once in one CUDA graph and replayed "
        "(`throughput.py --concurrent-mode graph`, its learning rate fixed)"
        if gpu.throughput_graph
        else ""
    )
    header = "".join(f" {name}: per run | {name}: together |" for name, _ in measured)
    lines = [
        "",
        "Throughput of the paper's model (ResNet-18, CIFAR stem) at its batch of 128 pairs, bf16, each "
        "process the engine's loop (GPU-resident images, batched augmentation), eager and with the model "
        f"under `torch.compile` (reduce-overhead: CUDA graphs){graph_note}, on the same kind of machine "
        "(dates and code versions in `results/paper/throughput.md`), pairs/s:",
        "",
        "| runs at once |" + header,
        "| ---: |" + " ---: | ---: |" * len(measured),
    ]
    lines += [
        f"| {n} |"
        + "".join(
            f" {rate(t, n, 'pairs_per_s_per_run')} | {rate(t, n, 'aggregate_pairs_per_s')} |" for t in tables
        )
        for n in sorted(set().union(*tables))
    ]
    # the engine's rates (the whole-step graph, a benchmark with a fixed learning rate, is an upper bound)
    kinds = [(name, r) for name, rows in measured[:2] for r in rows]
    if not kinds:
        return lines + ["", _graph_bound(gpu.throughput_graph)]
    alone = max(
        (k for k in kinds if k[1]["runs"] == 1), key=lambda k: k[1]["pairs_per_s_per_run"], default=None
    )
    best_kind, best = max(kinds, key=lambda k: k[1]["aggregate_pairs_per_s"])
    six_together = 6 * projected_minutes(best["aggregate_pairs_per_s"])
    projection = (
        f"At the fastest of these rates one 200-epoch run of the paper profile trains in about "
        f"{projected_minutes(alone[1]['pairs_per_s_per_run']):.0f} minutes alone (at the {alone[0]} 1-run "
        "rate), and "
        if alone
        else "At the fastest of these rates "
    )
    return lines + [
        "",
        projection
        + f"the six headline runs side by side in about {six_together:.0f} minutes together (at the "
        f"{best['runs']}-run {best_kind} rate). One eager run leaves the GPU idle much of the time: the host "
        "launching kernels bounds its step (in `throughput.md` the model alone takes about as long a step "
        "at 512 pairs as at 128). CUDA graphs remove most of the model's launches; "
        "the augmentation, still launched op by op, then bounds the engine's step, and several runs side by "
        "side fill the GPU." + (" " + _graph_bound(gpu.throughput_graph) if gpu.throughput_graph else ""),
    ]


def _graph_bound(rows: list[dict[str, Any]]) -> str:
    """What the whole-step graph's rates (``throughput.py --concurrent-mode graph``) would give a run."""
    alone = [r["pairs_per_s_per_run"] for r in rows if r["runs"] == 1]
    widest = max(rows, key=lambda r: r["aggregate_pairs_per_s"])
    alone_text = (
        f"one 200-epoch run in about {projected_minutes(alone[0]):.0f} minutes alone and " if alone else ""
    )
    return (
        "Captured once in one CUDA graph and replayed (augmentation, loss and optimizer too, at a fixed "
        "learning rate: a benchmark, not yet the engine's step), the step would train "
        f"{alone_text}the six headline runs in about "
        f"{6 * projected_minutes(widest['aggregate_pairs_per_s']):.0f} minutes together (at its "
        f"{widest['runs']}-run rate): the most that building the engine for it could give."
    )


def _headline(gpu: GpuMeasurements) -> list[str]:
    """The headline's runs: how long, which stopped or failed, and the complete ones' final evaluation."""
    stopped = [r for r in gpu.runs if r.status == "stopped"]
    failed = [r for r in gpu.runs if r.status == "failed"]
    complete = [r for r in gpu.runs if r.status == "complete"]
    seconds = [rec["epoch_seconds"] for r in gpu.runs for rec in r.records() if rec.get("epoch_seconds")]
    lines = [
        "",
        f"**The headline comparison** (SimCLR with tau 0.2 and DySTreSS (0.07, 0.2), {len(gpu.runs)} runs, "
        "all side by side) ran "
        + (f"{gpu.epochs} epochs each" if gpu.epochs else "the profile's epochs each")
        + ", a complete cosine schedule over them"
        + (f", about {statistics.median(seconds):.0f} s an epoch." if seconds else ".")
        + (
            f" {len(stopped)} of {len(gpu.runs)} runs were stopped by the command's deadline after their "
            "last epoch's records but before the final evaluation: they have **no final evaluation**."
            if stopped
            else ""
        )
        + (f" {len(failed)} failed (exit status > 0) and are left out." if failed else ""),
    ]
    if not complete:
        return lines
    lines += [
        "",
        f"The final evaluation of the {len(complete)} complete runs, at their last epoch (frozen backbone; "
        "the 50,000 training images as the kNN bank and the probe's training set, the 10,000 test images "
        "scored; nothing selected on them), mean ± 95 % interval over seeds, %:",
        "",
        "| method | " + " | ".join(HEADLINE_METRICS.values()) + " |",
        "| --- |" + " ---: |" * len(HEADLINE_METRICS),
    ]
    for point, name in budget.MAIN_POINTS.items():
        runs = [r for r in complete if (r.point.ablation, r.point.label) == point]
        if runs:
            cells = [estimate([r.final[k] for r in runs if k in r.final]) for k in HEADLINE_METRICS]
            lines.append(f"| {name} | " + " | ".join(str(c) if c else "-" for c in cells) + " |")
    return lines + [
        "",
        "Seed by seed:",
        "",
        *[f"- {line}." for line in headline_lines(gpu)],
        "",
        f"{gpu.epochs} of the paper's 200 epochs is the start of its schedule: these numbers say how the "
        "two temperatures compare after that much training, not what either reaches at 200 epochs (the "
        "paper's numbers are on [Reproduction](reproduction.md)).",
    ]


def _budgets(budgets: Sequence[GpuMeasurements]) -> list[str]:
    """DySTreSS - SimCLR seed by seed at every budget, one row each."""
    lines = [
        "",
        "The headline at every budget that ships (DySTreSS (0.07, 0.2) - SimCLR (fixed tau 0.2), seed by "
        "seed, points, with the 95 % interval of the paired differences):",
        "",
        "| epochs | code version | " + " | ".join(HEADLINE_METRICS.values()) + " |",
        "| ---: | --- |" + " ---: |" * len(HEADLINE_METRICS),
    ]
    for b in budgets:
        gaps = [headline_gap(b, key) for key in HEADLINE_METRICS]
        cells = [_gap_cell(g) for g in gaps]
        lines.append(f"| {b.epochs} | {b.code_version} | " + " | ".join(cells) + " |")
    return lines


def _gap_cell(gap: Paired | None) -> str:
    """``+0.05 ± 1.15 (n = 3)``; no interval for one pair; ``-`` without a shared seed."""
    if gap is None:
        return "-"
    interval = "no interval" if math.isnan(gap.ci) else f"± {gap.ci:.2f}"
    return f"{gap.diff:+.2f} {interval} (n = {gap.n})"


def _regime(gpu: GpuMeasurements) -> list[str]:
    """How far the negatives spread at the last epoch: DySTreSS's regime sentence and SimCLR's q99."""
    regime = budget.regime_sentence(gpu.runs, _RECORDED)
    table = budget.method_regime(budget.regime_frame(gpu.runs, _RECORDED))
    simclr = table[table.name.str.startswith("SimCLR")] if table is not None and len(table) else None
    return [
        "",
        "Their records say how far the paper's configuration spreads the negatives: "
        + (regime or "no DySTreSS record")
        + (
            f"; SimCLR's negatives reach q99 = {simclr.neg_sim_q99.iloc[0]:.2f}, with "
            f"{100 * simclr.neg_close_share.iloc[0]:.2f} % at s >= 0.5"
            if simclr is not None and len(simclr)
            else ""
        )
        + ".",
    ]
