"""Where the book's time goes: a breakdown of a profile's runs, read from their run folders.

    python benchmarks/book_time.py [--profile quick] [--runs DIR]

For every complete run of the profile's plan (the current code version's, or ``--all`` for every run
folder of the profile) it reads ``run.json`` (the papermill wall time), the executed notebook's cell
durations (papermill's metadata), ``records.jsonl`` and ``final_metrics.json``'s ``phase_seconds``
(runs made before that field existed give train and monitor from their records, the rest as one
"engine, other" part) and prints a Markdown table of the sum over runs and the mean per run:

- kernel start: the wall time outside every cell (kernel start-up, papermill's own work);
- first cell: imports and the configuration;
- engine phases: set up (checkpoint read, data load, model), train, monitor, snapshots, checkpoints,
  final evaluation, and what the engine cell spent outside them;
- plot cells: the notebook's tables and figures after training.

Setup (``make setup data``), the book's pages and Sphinx are timed around ``make book``, not here.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dystress import provenance  # noqa: E402
from dystress.io import read_jsonl  # noqa: E402
from dystress.study.runner import load_results  # noqa: E402

PHASES = ("set_up", "train", "monitor", "snapshots", "checkpoints", "final_evaluation")


def cell_seconds(notebook: Path) -> list[tuple[str, float]]:
    """(first source line, seconds) of every code cell papermill executed."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    out = []
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        duration = (cell.get("metadata", {}).get("papermill") or {}).get("duration") or 0.0
        out.append((source.strip().splitlines()[0] if source.strip() else "", float(duration)))
    return out


def breakdown(run_dir: Path) -> dict[str, float]:
    """Seconds of one run folder by part (see the module docstring)."""
    wall = float(json.loads((run_dir / "run.json").read_text())["wall_s"])
    cells = cell_seconds(run_dir / "run.ipynb")
    engine_index = next(i for i, (first, _) in enumerate(cells) if "pretrain" in first)
    engine = cells[engine_index][1]
    parts: dict[str, float] = {
        "kernel start": wall - sum(s for _, s in cells),
        "first cells (imports, config)": sum(s for _, s in cells[:engine_index]),
        "plot cells": sum(s for _, s in cells[engine_index + 1 :]),
    }
    final = json.loads((run_dir / "final_metrics.json").read_text())
    phases = final.get("phase_seconds")
    if phases is None:  # runs made before phase_seconds: train and monitor from the records
        records = read_jsonl(run_dir / "records.jsonl")
        phases = {
            "train": sum(r.get("epoch_seconds", 0.0) for r in records),
            "monitor": sum(r.get("monitor_seconds", 0.0) for r in records),
        }
    for name in PHASES:
        if name in phases:
            parts[f"engine: {name}"] = float(phases[name])
    parts["engine: other"] = engine - sum(float(v) for v in phases.values())
    parts["run wall"] = wall
    return parts


def table(run_dirs: list[Path]) -> str:
    """A Markdown table: each part's sum over the runs and mean per run."""
    sums: dict[str, float] = defaultdict(float)
    for run_dir in run_dirs:
        for part, seconds in breakdown(run_dir).items():
            sums[part] += seconds
    n = max(1, len(run_dirs))
    lines = [f"| part ({len(run_dirs)} runs) | total s | per run s |", "| --- | --- | --- |"]
    lines += [f"| {part} | {total:.1f} | {total / n:.1f} |" for part, total in sums.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--runs", default=None, help="runs folder (default: $DYSTRESS_RUNS or runs/)")
    parser.add_argument("--all", action="store_true", help="every complete run folder of the profile")
    args = parser.parse_args(argv)
    if args.all:
        root = Path(args.runs) if args.runs else provenance.runs_root()
        run_dirs = sorted(p.parent for p in (root / args.profile).glob("*/final_metrics.json"))
    else:
        results = load_results(args.profile, args.runs)
        run_dirs = sorted({r.run_dir for r in results if r.status == "complete"})
    run_dirs = [d for d in run_dirs if (d / "run.json").is_file() and (d / "run.ipynb").is_file()]
    if not run_dirs:
        print(f"no complete run of profile {args.profile} found", file=sys.stderr)
        return 1
    print(table(run_dirs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
