"""GPU measurements that ship under ``results/paper/``, written by ``benchmarks/gpu_study.sh`` on one
CUDA machine and read with checks (:mod:`dystress.study.gpu_report` puts them in words).

    results/paper/steps.log        the machine (nvidia-smi, torch) and the command's timeline
    results/paper/throughput.json  aggregate pairs/s of 1, 2, 4, 8 engine processes side by side
                                   (``benchmarks/throughput.py --concurrent``; also as throughput.md)
    results/paper/throughput_compiled.json   the same with the model under ``torch.compile``
                                   (reduce-overhead: CUDA graphs), 1, 2, 4, 6 processes
    results/paper/throughput_graph.json      the same with the engine's whole step captured in one CUDA
                                   graph (``--concurrent-mode graph``; a fixed learning rate)
    results/paper/headline.json    the headline comparison (``benchmarks/headline.py``): SimCLR (tau
                                   0.2) and DySTreSS (0.07, 0.2), the paper configuration at the
                                   epochs that fit, per run its config, records and final metrics
    results/paper/headline_<N>ep.json   an earlier headline at N epochs, kept when a longer one came

A headline run stopped at the command's deadline (killed by a signal: negative exit status) keeps its
per-epoch records and has status ``stopped`` (no final metrics); a finished one is ``complete``; any
other is ``failed``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dystress.study.ablations import plan
from dystress.study.shipped import ShippedResult, code_changes, results_root

__all__ = ["GpuMeasurements", "headline_budgets", "load_gpu_measurements", "projected_minutes"]


@dataclass
class GpuMeasurements:
    """What one GPU command measured: the machine, the throughput rows (eager, with the model compiled,
    and the whole step in one CUDA graph: empty when not measured), the headline's runs, the data's
    origin, the date (``YYYY-MM-DD``) they ended, and the engine's files changed since (empty: this
    code version)."""

    machine: str
    throughput: list[dict[str, Any]]
    code_version: str
    epochs: int | None
    runs: list[ShippedResult]
    data: str = "not recorded"
    finished: str = "not recorded"
    throughput_compiled: list[dict[str, Any]] = field(default_factory=list)
    throughput_graph: list[dict[str, Any]] = field(default_factory=list)
    code_changes: list[str] = field(default_factory=list)


def headline_budgets(root: str | Path | None = None) -> list[GpuMeasurements]:
    """Every headline that ships under ``root/paper`` (``headline.json``, the current one, and earlier
    budgets kept beside it as ``headline_<epochs>ep.json``), by increasing epochs."""
    folder = Path(root or results_root()) / "paper"
    found = [load_gpu_measurements(root, path.name) for path in sorted(folder.glob("headline*.json"))]
    return sorted((g for g in found if g is not None), key=lambda g: g.epochs or 0)


def projected_minutes(pairs_per_s: float, epochs: int = 200, pairs_per_epoch: int = 50_000) -> float:
    """Minutes of training of ``epochs`` epochs of ``pairs_per_epoch`` pairs at ``pairs_per_s``."""
    if pairs_per_s <= 0:
        raise ValueError(f"pairs_per_s must be positive, got {pairs_per_s}")
    return epochs * pairs_per_epoch / pairs_per_s / 60


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"shipped GPU result {path} cannot be read as JSON ({err})") from None


def _rows(path: Path) -> list[dict[str, Any]]:
    """Throughput rows (``runs``, ``pairs_per_s_per_run``, ``aggregate_pairs_per_s``) from ``path``;
    none when it is absent; ``ValueError`` naming the file when it is not such a list."""
    if not path.is_file():
        return []
    rows = _json(path)
    keys = {"runs", "pairs_per_s_per_run", "aggregate_pairs_per_s"}
    if not isinstance(rows, list) or not all(isinstance(r, dict) and keys <= r.keys() for r in rows):
        raise ValueError(f"shipped GPU result {path} is no list of rows with {', '.join(sorted(keys))}")
    return rows


def _machine(steps_log: Path) -> str:
    """``GPU name, torch version`` from the first lines of ``steps.log`` (nvidia-smi's CSV, then
    ``torch X cuda Y ...``); ``unknown machine`` when absent."""
    lines = steps_log.read_text(encoding="utf-8").splitlines() if steps_log.is_file() else []
    gpu = next((line.split(",")[0] for line in lines[1:3] if "," in line), None)
    torch = next((line.split()[1] for line in lines if line.startswith("torch ")), None)
    return f"{gpu or 'unknown GPU'}, torch {torch or '?'}" if gpu or torch else "unknown machine"


def load_gpu_measurements(
    root: str | Path | None = None, headline_file: str = "headline.json"
) -> GpuMeasurements | None:
    """The measurements under ``root/paper`` (default :func:`~dystress.study.shipped.results_root`)
    with the headline of ``headline_file`` there, or ``None`` when it does not ship; ``ValueError``
    naming a damaged file or an unknown point."""
    folder = Path(root or results_root()) / "paper"
    path = folder / headline_file
    if not path.is_file():
        return None
    headline = _json(path)
    throughput, compiled, graph = (
        _rows(folder / f"throughput{kind}.json") for kind in ("", "_compiled", "_graph")
    )
    if not isinstance(headline, dict) or not isinstance(headline.get("runs"), list):
        raise ValueError(f"shipped GPU result {path} has no list of runs")
    points = {p.id: p for p in plan("paper")}
    runs = []
    for run in headline["runs"]:
        point = points.get(run.get("point"))
        if point is None:
            raise ValueError(f"{path}: {run.get('point')!r} is no point of the paper plan")
        final = run.get("final_metrics") or {}
        code = run.get("exit_status")
        status = (
            "complete"
            if code == 0 and final
            else "stopped"
            if isinstance(code, int) and code < 0
            else "failed"
        )
        info = {
            "config": run.get("config"),
            "wall_s": run.get("wall_s"),
            "exit_status": run.get("exit_status"),
        }
        key = f"headline:{point.id}"
        runs.append(ShippedResult(point, "paper", key, folder, status, final, info, run.get("records") or []))
    env = headline.get("environment") or {}
    machine = (
        f"{env['device']}, torch {env.get('torch', '?')}"
        if env.get("device")
        else _machine(folder / "steps.log")
    )
    data = "; ".join(f"{name} {origin}" for name, origin in sorted((env.get("data") or {}).items()))
    return GpuMeasurements(
        machine=machine,
        throughput=throughput,
        code_version=str(headline.get("code_version")),
        epochs=headline.get("epochs"),
        runs=runs,
        data=data or "not recorded",
        finished=str(env.get("finished") or "not recorded")[:10],
        throughput_compiled=compiled,
        throughput_graph=graph,
        code_changes=code_changes(headline),
    )
