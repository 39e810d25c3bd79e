"""Compare two runs folders of one profile, run by run, bit for bit (timing fields excepted).

    python benchmarks/compare_runs.py BEFORE/quick AFTER/quick

Runs are matched by their slug (the folder name without its hash, which changes with the code
version). For each pair: every final metric of the first folder's run must have the same value in
the second's (metrics the second adds are listed as new), every per-epoch record must be equal, and
every tensor of every snapshot must be ``torch.equal``. The check behind "an engine change moves no
number" (e.g. a restructuring): run the study with the old code and the new, then compare.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

TIMING = {"epoch_seconds", "images_per_second", "monitor_seconds", "train_seconds", "phase_seconds"}


def _slug(run_dir: Path) -> str:
    return run_dir.name.rsplit("-", 1)[0]


def _strip(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in TIMING}


def _records(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "records.jsonl"
    return [_strip(json.loads(line)) for line in path.read_text().splitlines()] if path.exists() else []


def _snapshots_equal(a: Path, b: Path) -> tuple[bool, int]:
    snaps_a, snaps_b = sorted((a / "snapshots").glob("*.pt")), sorted((b / "snapshots").glob("*.pt"))
    same = [p.name for p in snaps_a] == [p.name for p in snaps_b]
    for x, y in zip(snaps_a, snaps_b, strict=False):
        ta, tb = torch.load(x, weights_only=True), torch.load(y, weights_only=True)
        same &= ta.keys() == tb.keys() and all(
            torch.equal(ta[k], tb[k]) if torch.is_tensor(ta[k]) else ta[k] == tb[k] for k in ta
        )
    return same, len(snaps_a)


def compare(a: Path, b: Path) -> str:
    """One line on run folders ``a`` (before) and ``b`` (after)."""
    fa, fb = (_strip(json.loads((p / "final_metrics.json").read_text())) for p in (a, b))
    moved = sorted(k for k in fa if fa[k] != fb.get(k))
    records_same = _records(a) == _records(b)
    snaps_same, n_snaps = _snapshots_equal(a, b)
    same = not moved and records_same and snaps_same
    details = [f"{len(fa)} final metrics, {len(_records(a))} records, {n_snaps} snapshots"]
    details += [f"moved: {moved}"] if moved else []
    details += [] if records_same else ["records differ"]
    details += [] if snaps_same else ["snapshots differ"]
    details += [f"new: {sorted(fb.keys() - fa.keys())}"] if fb.keys() - fa.keys() else []
    return f"{_slug(a)}: {'identical' if same else 'DIFFERENT'} ({'; '.join(details)})"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    before, after = (
        {_slug(p): p for p in Path(root).iterdir() if (p / "final_metrics.json").exists()} for root in argv
    )
    lines = [compare(before[s], after[s]) for s in sorted(before.keys() & after.keys())]
    print("\n".join(lines))
    identical = sum(line.split(": ", 1)[1].startswith("identical") for line in lines)
    print(
        f"{identical} identical, {len(lines) - identical} different; only before: "
        f"{sorted(before.keys() - after.keys())}; only after: {sorted(after.keys() - before.keys())}"
    )
    return 0 if identical == len(lines) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
