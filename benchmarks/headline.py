r"""The paper's headline comparison side by side on one GPU, then one compact JSON of what it recorded.

SimCLR (fixed tau 0.2, the authors' script) and DySTreSS (0.07, 0.2), seeds 0, 1, 2 (the ``paper``
profile's points ``fixed_tau/0.2/s*`` and ``dystress_grid/(0.07, 0.2)/s*``), each a ``dystress
pretrain`` process of its own, all at once; ``--epochs`` shortens every run (the cosine schedule then
spans the shorter budget: a complete run at that budget, not a cut 200-epoch run):

    python benchmarks/headline.py --out runs/headline                    # 200 epochs, the paper's budget
    python benchmarks/headline.py --out runs/headline --epochs 20
    python benchmarks/headline.py --out runs/headline --minutes 6 --pairs-per-s 30000   # sized to fit

``--minutes`` with ``--pairs-per-s`` (the aggregate of the runs side by side, e.g. from
``benchmarks/throughput.py --concurrent``) picks the most epochs whose training fits the minutes.
The summary (``<out>/headline.json``) holds the code version (and its files' hashes) and per run:
point id, configuration, wall time, exit status, per-epoch records (with the regime diagnostics) and
final metrics; never checkpoints.
A run that fails is kept in the summary with the end of its log; ``--deadline-s`` stops the runs still
going at that time (their records so far are kept; exit status negative). Dry run on the CPU (seconds):

    python benchmarks/headline.py --out /tmp/h --epochs 1 --seeds 0 --set device=cpu \
        --set backbone=small_cnn --set train_subset=512 --set test_subset=500 --set monitor_size=200
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dystress import provenance  # noqa: E402
from dystress.io import atomic_write_json, read_jsonl  # noqa: E402
from dystress.study.ablations import plan  # noqa: E402
from dystress.study.notebook import build_config  # noqa: E402
from dystress.study.shipped import code_files  # noqa: E402

#: The headline's points in the paper profile's plan (id prefixes).
HEADLINE = ("fixed_tau/0.2/", "dystress_grid/(0.07, 0.2)/")
#: CIFAR-10 training images (pairs per epoch of the paper profile).
TRAIN_IMAGES = 50_000


def epochs_to_fit(minutes: float, pairs_per_s: float, runs: int, per_epoch: int = TRAIN_IMAGES) -> int:
    """The most epochs (at least 1) of ``runs`` runs side by side whose training takes at most
    ``minutes`` at an aggregate ``pairs_per_s``."""
    if minutes <= 0 or pairs_per_s <= 0 or runs < 1:
        raise ValueError(
            f"minutes, pairs_per_s and runs must be positive, got {minutes}, {pairs_per_s}, {runs}"
        )
    return max(1, int(minutes * 60 * pairs_per_s // (runs * per_epoch)))


def _summary(point_id: str, run_dir: Path, code: int, wall_s: float, log: Path) -> dict[str, Any]:
    final = run_dir / "final_metrics.json"
    tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-20:]
    return {
        "point": point_id,
        "exit_status": code,
        "wall_s": round(wall_s, 1),
        "config": json.loads((run_dir / "pretrain_config.json").read_text()),
        "records": read_jsonl(run_dir / "records.jsonl") if (run_dir / "records.jsonl").is_file() else [],
        "final_metrics": json.loads(final.read_text()) if final.is_file() else None,
        "log_tail": tail if code else [],
    }


def _environment() -> dict[str, Any]:
    """Where the runs were made: device, CPU cores, torch, the data's origin, the time they ended."""
    from datetime import UTC, datetime

    import torch

    from dystress.runtime import device_name
    from dystress.study.notebook import data_root
    from dystress.study.shipped import data_origin

    return {
        "device": device_name(torch.device("cuda" if torch.cuda.is_available() else "cpu")),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "data": {"cifar10": data_origin("cifar10", data_root())},
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _wait(
    started: list[tuple[str, Path, Path, subprocess.Popen, float]], deadline_s: float | None
) -> list[float]:
    """Wait for every run and return when each ended (``time.perf_counter()``); past ``deadline_s``
    seconds, stop those still running (SIGTERM, then SIGKILL for any left after one shared 20 s
    grace): their summary keeps the epochs they recorded, with a negative exit status."""
    end = None if deadline_s is None else time.perf_counter() + deadline_s
    ended: dict[int, float] = {}
    while len(ended) < len(started):
        for i, (*_, proc, _) in enumerate(started):
            if i not in ended and proc.poll() is not None:
                ended[i] = time.perf_counter()
        if len(ended) < len(started) and end is not None and time.perf_counter() > end:
            print(f"[headline] deadline of {deadline_s:.0f} s reached: stopping the runs left", flush=True)
            left = [proc for i, (*_, proc, _) in enumerate(started) if i not in ended]
            for proc in left:
                proc.terminate()
            grace = time.perf_counter() + 20
            for proc in left:
                try:
                    proc.wait(timeout=max(0.0, grace - time.perf_counter()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            now = time.perf_counter()
            return [ended.get(i, now) for i in range(len(started))]
        time.sleep(0.5)
    return [ended[i] for i in range(len(started))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder of the run folders and headline.json")
    p.add_argument("--epochs", type=int, default=None, help="epochs of every run (default: the profile's)")
    p.add_argument("--minutes", type=float, default=None, help="with --pairs-per-s: size the epochs to fit")
    p.add_argument("--pairs-per-s", type=float, default=None, help="aggregate pairs/s of the runs together")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--deadline-s", type=float, default=None, help="stop the runs still going after this")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    args = p.parse_args(argv)
    points = [
        pt
        for pt in plan("paper")
        if pt.id.startswith(HEADLINE) and pt.parameters.get("seed", 0) in args.seeds
    ]
    if len(points) != len(HEADLINE) * len(set(args.seeds)):
        raise SystemExit(f"--seeds {args.seeds}: the paper plan has {len(points)} headline points for them")
    for name in ("minutes", "pairs_per_s", "deadline_s"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            raise SystemExit(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    epochs = args.epochs
    if epochs is None and args.minutes is not None:
        if args.pairs_per_s is None:
            raise SystemExit("--minutes needs --pairs-per-s")
        epochs = epochs_to_fit(args.minutes, args.pairs_per_s, len(points))
    if epochs is not None and epochs < 1:
        raise SystemExit(f"--epochs must be >= 1, got {epochs}")
    threads = max(1, (os.cpu_count() or 1) // len(points))
    out = Path(args.out)
    started = []
    for pt in points:
        try:  # --set after the thread share, --epochs last (as documented)
            config = build_config("paper", pt.parameters).updated({"num_threads": threads})
            config = config.with_overrides(args.overrides)
        except ValueError as err:
            raise SystemExit(f"--set: {err}") from None
        if epochs is not None:
            config = config.updated({"epochs": epochs, "snapshot_epochs": [0, epochs]})
        run_dir = out / pt.id.replace("/", "_").replace(" ", "").replace(",", "-").strip("_")
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / "pretrain_config.json", config.to_dict())
        command = [
            sys.executable,
            "-m",
            "dystress.cli",
            "pretrain",
            "--config",
            str(run_dir / "pretrain_config.json"),
        ]
        command += ["--run-dir", str(run_dir), "--no-progress"]
        log = run_dir / "run.log"
        with open(log, "w", encoding="utf-8") as handle:
            proc = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
        started.append((pt.id, run_dir, log, proc, time.perf_counter()))
        print(f"[headline] {pt.id}: {config.epochs} epochs, {threads} thread(s), {run_dir}", flush=True)
    ends = _wait(started, args.deadline_s)
    runs = []
    for (point_id, run_dir, log, proc, start), ended in zip(started, ends, strict=True):
        runs.append(_summary(point_id, run_dir, proc.returncode, ended - start, log))
        print(f"[headline] {point_id}: exit {proc.returncode} after {runs[-1]['wall_s']:.0f} s", flush=True)
    summary = {
        "code_version": provenance.code_version(),
        "code_files": code_files(),  # lets a page name the engine's files changed since
        "epochs": epochs,
        "environment": _environment(),
        "runs": runs,
    }
    atomic_write_json(out / "headline.json", summary)
    return 1 if any(r["exit_status"] for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
