"""The study's runner: each point of :mod:`dystress.study.ablations` run as a papermill execution of
the run notebook template, into its run folder (:mod:`dystress.study.notebook`).

A run folder holds the executed notebook ``run.ipynb``, ``run.json`` (status, parameters, timings,
host, error), and what the engine writes (``config.json``, ``records.jsonl``, ``snapshots/``,
``checkpoints/``, ``final_metrics.json``).

:func:`run_study` runs the points of a profile that are not complete yet: a complete run is skipped,
an interrupted one is executed again into the same folder (the engine resumes from its checkpoint), a
failing one is recorded with its error and the others go on. :func:`load_results` reads whatever
exists; :mod:`dystress.study.results` turns it into the book's tables and analyses. The command line
is ``dystress study run|list`` (:mod:`dystress.cli`).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dystress import provenance
from dystress._checks import as_int
from dystress.io import atomic_write_json, read_jsonl
from dystress.runlock import RunFolderBusy, is_locked, run_folder_lock
from dystress.study.ablations import ABLATIONS, Point, plan, training_images
from dystress.study.notebook import build_config, default_profile
from dystress.study.progress import EpochWatcher, format_duration

__all__ = [
    "ENGINES",
    "LOCAL_PROFILES",
    "RunResult",
    "StudyReport",
    "check_parallel",
    "default_parallel",
    "ensure_results",
    "load_results",
    "older_results",
    "run_point",
    "run_study",
    "threads_per_run",
]

#: Profiles whose runs fit a CPU: the book runs what is missing for these; ``paper`` needs a GPU.
LOCAL_PROFILES = ("smoke", "quick")


# ---------------------------------------------------------------------------------------------- runs
@dataclass
class RunResult:
    """One point's run as found on disk.

    ``status``: ``complete`` (``final_metrics.json`` present and the notebook finished), ``failed``
    (see ``error``), ``interrupted`` (started, not finished), ``missing`` (never started),
    ``running`` (locked by a live process), ``invalid`` (the configuration is rejected; see ``error``).
    """

    point: Point
    profile: str
    key: str
    run_dir: Path
    status: str
    final: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def error(self) -> str | None:
        return self.info.get("error")

    @property
    def dataset(self) -> str:
        """The dataset the point trains on: its ``dataset`` parameter, else its profile's."""
        from dystress.config import get_profile

        return self.point.parameters.get("dataset") or get_profile(self.profile).dataset

    def records(self) -> list[dict[str, Any]]:
        """The per-epoch records (``records.jsonl``), oldest first."""
        return read_jsonl(self.run_dir / "records.jsonl")

    def snapshot_paths(self) -> list[Path]:
        """The feature snapshots ``snapshots/epoch_XXXX.pt``, in epoch order."""
        return sorted((self.run_dir / "snapshots").glob("epoch_*.pt"))


def _read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path`` (``{}`` when there is no file); a ``ValueError`` naming a damaged one."""
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{path} is not valid JSON ({err}): remove it, and the run is done again") from None


def _status(run_dir: Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    info = _read_json(run_dir / "run.json")
    final = _read_json(run_dir / "final_metrics.json")
    state = info.get("status")
    if not info:
        return "missing", info, final
    if state == "complete" and final:
        return "complete", info, final
    if state == "failed":
        return "failed", info, final
    return ("running" if is_locked(run_dir) else "interrupted"), info, final


def _resolve(point: Point, profile: str, root: Path, code: str, threads: int | None = None) -> RunResult:
    try:
        config = build_config(profile, {**point.parameters, "num_threads": threads})
    except ValueError as err:
        info = {"error": f"invalid configuration: {err}"}
        return RunResult(point, profile, f"invalid:{point.id}", root / profile, "invalid", {}, info)
    key = provenance.run_folder_name(config, code)
    run_dir = root / profile / key
    status, info, final = _status(run_dir)
    return RunResult(point, profile, key, run_dir, status, final, info)


def load_results(
    profile: str | None = None, runs: str | Path | None = None, parallel: int | None = None
) -> list[RunResult]:
    """Every point of ``profile``'s plan with what exists on disk (status ``missing`` when nothing).

    ``parallel`` (default :func:`default_parallel`) picks the runs made that many at a time: their
    thread count is part of their folders (:func:`dystress.provenance.run_folder_name`)."""
    profile = profile or default_profile()
    root = Path(runs).resolve() if runs else provenance.runs_root()
    code = provenance.code_version()
    threads = threads_per_run(default_parallel() if parallel is None else parallel)
    return [_resolve(p, profile, root, code, threads) for p in plan(profile)]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _environment() -> dict[str, Any]:
    env: dict[str, Any] = {
        "host": platform.node(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    try:
        import torch

        env["torch"] = torch.__version__
        from dystress.runtime import device_name

        env["device"] = device_name(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    except Exception:  # noqa: BLE001 (informational only)
        pass
    return env


def _run_info(result: RunResult, template: Path, code: str, num_threads: int | None) -> dict[str, Any]:
    """The ``run.json`` of a run about to start (status ``running``)."""
    point = result.point
    config = build_config(result.profile, {**point.parameters, "num_threads": num_threads})
    return {
        "status": "running",
        "point": point.id,
        "ablation": point.ablation,
        "label": point.label,
        "profile": result.profile,
        "parameters": point.parameters,
        "key": result.key,
        "code_version": code,
        "config": config.to_dict(),
        "template": str(template),
        "attempts": int(result.info.get("attempts", 0)) + 1,
        "started": _now(),
        "environment": _environment(),
    }


#: How a run executes: the notebook template under papermill (the book's appendix shows it), or the
#: ``dystress pretrain`` command alone (a machine without the book's tools, e.g. a GPU node).
ENGINES = ("notebook", "cli")


class _PretrainFailed(Exception):
    """``dystress pretrain`` exited with an error: the message, and the log's last lines as ``log_tail``."""

    def __init__(self, message: str, log_tail: str) -> None:
        super().__init__(message)
        self.log_tail = log_tail


def _execute(
    result: RunResult,
    template: Path,
    info: dict[str, Any],
    prefix: str,
    stream: Any,
    engine: str = "notebook",
) -> None:
    """Execute the run (``engine``: the template into ``<run_dir>/run.ipynb``, or ``dystress pretrain``
    with its output in ``<run_dir>/run.log``), with its epochs shown as they end, and record the outcome
    in ``info`` and ``run.json`` (the caller holds the folder's lock)."""
    run_dir = result.run_dir
    watcher = EpochWatcher(run_dir / "records.jsonl", prefix, info["config"]["epochs"], stream)
    watcher.start()
    start = time.perf_counter()
    try:
        if engine == "cli":
            _run_pretrain_command(run_dir, info)
        else:
            _run_notebook(result, template, info)
        info.update(status="complete", error=None, traceback=None)
    except KeyboardInterrupt:
        info.update(status="interrupted", error="KeyboardInterrupt")
        raise
    except _PretrainFailed as err:
        info.update(status="failed", error=str(err), traceback=err.log_tail)
    except Exception as err:  # noqa: BLE001 (recorded; the study goes on)
        info.update(status="failed", error=_error_text(err), traceback=traceback.format_exc())
    finally:
        watcher.stop.set()
        watcher.join()
        info.update(finished=_now(), wall_s=round(time.perf_counter() - start, 2))
        atomic_write_json(run_dir / "run.json", info)


def _run_notebook(result: RunResult, template: Path, info: dict[str, Any]) -> None:
    """papermill executes the run notebook ``template`` into ``<run_dir>/run.ipynb``."""
    import papermill

    parameters = {
        **result.point.parameters,
        "profile": result.profile,
        "run_dir": str(result.run_dir),
        "progress": False,
        "num_threads": info["config"]["num_threads"],
    }
    papermill.execute_notebook(
        str(template),
        str(result.run_dir / "run.ipynb"),
        parameters=parameters,
        kernel_name="python3",
        progress_bar=False,  # no cwd: papermill would chdir the whole process, runs side by side too
    )


def _run_pretrain_command(run_dir: Path, info: dict[str, Any]) -> None:
    """``dystress pretrain`` on the run's configuration (``<run_dir>/pretrain_config.json``) in a
    process of its own, output in ``<run_dir>/run.log``; :class:`_PretrainFailed` when it fails."""
    import subprocess

    config_file = run_dir / "pretrain_config.json"
    atomic_write_json(config_file, info["config"])
    command = [sys.executable, "-m", "dystress.cli", "pretrain", "--config", str(config_file)]
    command += ["--run-dir", str(run_dir), "--no-progress"]
    with open(run_dir / "run.log", "w", encoding="utf-8") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    if code != 0:
        tail = (run_dir / "run.log").read_text(encoding="utf-8", errors="replace").strip().splitlines()
        message = f"dystress pretrain exited {code}: {tail[-1] if tail else ''}"
        raise _PretrainFailed(message, "\n".join(tail[-40:]))


def run_point(
    point: Point,
    profile: str,
    runs: str | Path | None = None,
    template: str | Path | None = None,
    retry_failed: bool = False,
    prefix: str = "",
    stream: Any = None,
    num_threads: int | None = None,
    engine: str = "notebook",
) -> RunResult:
    """Run one point with papermill (``engine = "cli"``: with ``dystress pretrain`` alone, see
    :data:`ENGINES`) unless it is complete (or failed, unless ``retry_failed``).

    ``num_threads``: the run's CPU threads (``None``: torch's default, every core); a field that
    does not change the run's folder (:data:`dystress.config.NON_IDENTITY_FIELDS`), recorded in
    ``run.json`` and in the run's ``config.json``.

    The executed notebook is ``<run_dir>/run.ipynb``; ``run.json`` records the parameters, status,
    timings and environment, and for a failure the error and its traceback. Exceptions of the run are
    recorded, not raised (``KeyboardInterrupt`` marks the run interrupted and is re-raised). The run
    folder is locked (:func:`dystress.runlock.run_folder_lock`) while it runs.
    """
    stream = sys.stderr if stream is None else stream
    root = Path(runs).resolve() if runs else provenance.runs_root()
    template = Path(template) if template else provenance.template_path()
    code = provenance.code_version()
    result = _resolve(point, profile, root, code, num_threads)
    if result.status in ("complete", "invalid") or (result.status == "failed" and not retry_failed):
        return result
    busy = f"{prefix} {point.id}: being run by another process, skipped"
    if result.status == "running":
        print(busy, file=stream, flush=True)
        return result
    try:
        with run_folder_lock(result.run_dir):
            info = _run_info(result, template.resolve(), code, num_threads)
            atomic_write_json(result.run_dir / "run.json", info)
            _execute(result, template, info, prefix, stream, engine)
    except RunFolderBusy:
        print(busy, file=stream, flush=True)
        result.status = "running"
        return result
    return _resolve(point, profile, root, code, num_threads)


def _error_text(err: BaseException) -> str:
    ename, evalue = getattr(err, "ename", None), getattr(err, "evalue", None)
    if ename:
        return f"{ename}: {evalue}"
    return f"{type(err).__name__}: {err}"


@dataclass
class StudyReport:
    """What :func:`run_study` did: every result, and the keys it ran now."""

    profile: str
    results: list[RunResult]
    ran: list[str]

    def by_status(self, status: str) -> list[RunResult]:
        return [r for r in self.results if r.status == status]


def _unique_runs(results: Sequence[RunResult]) -> list[RunResult]:
    seen: dict[str, RunResult] = {}
    for r in results:
        seen.setdefault(r.key, r)
    return list(seen.values())


def _to_run(
    profile: str,
    runs: str | Path | None,
    only: Sequence[str] | None,
    retry_failed: bool,
    parallel: int,
    points: Sequence[str] | None = None,
) -> tuple[int, list[RunResult]]:
    """(number of distinct runs selected, those to run now) of ``profile``, ``only`` these ablations
    and, with ``points``, only the points whose id starts with one of them."""
    if only:
        unknown = sorted(set(only) - set(ABLATIONS))
        if unknown:
            raise ValueError(f"unknown ablations {unknown}; known: {sorted(ABLATIONS)}")
    results = load_results(profile, runs, parallel)
    if points:
        unmatched = [p for p in points if not any(r.point.id.startswith(p) for r in results)]
        if unmatched:
            raise ValueError(
                f"points {unmatched} match no point of profile {profile} (ids such as "
                f"{results[0].point.id!r}; `dystress study list` shows them)"
            )
    wanted = [
        r
        for r in results
        if (not only or r.point.ablation in only) and (not points or r.point.id.startswith(tuple(points)))
    ]
    # Filter before de-duplicating: a run shared with an earlier ablation still belongs to ``only``.
    selected = _unique_runs(wanted)
    todo = [
        r
        for r in selected
        if r.status in ("missing", "interrupted") or (r.status == "failed" and retry_failed)
    ]
    if parallel > 1:  # longest first, so that the last runs end together (plan order among equals)
        todo.sort(key=lambda r: -training_images(build_config(r.profile, r.point.parameters)))
    return len(selected), todo


def run_study(
    profile: str | None = None,
    runs: str | Path | None = None,
    template: str | Path | None = None,
    retry_failed: bool = False,
    only: Sequence[str] | None = None,
    stream: Any = None,
    parallel: int | None = None,
    points: Sequence[str] | None = None,
    engine: str = "notebook",
) -> StudyReport:
    """Run every missing or interrupted run of ``profile`` (each configuration once), ``parallel`` at a
    time (default :func:`default_parallel`); with several at once each run gets its share of the CPU
    cores as threads (:func:`threads_per_run`), and each run's numbers depend on its configuration,
    seed and thread count alone.

    A run failing with ``FileNotFoundError`` (its dataset is missing and cannot be downloaded) makes
    the later runs of the same dataset be skipped (left missing). ``only``: restrict to these ablation
    names; ``points``: to the points whose id starts with one of these (e.g. ``fixed_tau/0.2/``);
    ``engine``: ``notebook`` (papermill) or ``cli`` (``dystress pretrain`` alone, :data:`ENGINES`).
    Prints ``[i/n]`` progress with the time spent and an estimate of what is left to ``stream``
    (stderr), and a summary that says how to run failed runs again. Raises ``ValueError`` for an
    unknown ablation or a ``template`` that is not a file, before any run.
    """
    stream = sys.stderr if stream is None else stream
    profile = profile or default_profile()
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {list(ENGINES)}, got {engine!r}")
    if template is not None and not Path(template).is_file():
        default = provenance.template_path()
        raise ValueError(f"template {template} is not a notebook file (default: {default})")
    parallel = check_parallel(default_parallel() if parallel is None else parallel, stream)
    runs = Path(runs).resolve() if runs else provenance.runs_root()  # once: workers may start elsewhere
    template = Path(template).resolve() if template else provenance.template_path()
    threads = threads_per_run(parallel)
    total, todo = _to_run(profile, runs, only, retry_failed, parallel, points)
    at_once = f", {parallel} at a time with {threads} thread(s) each" if parallel > 1 else ""
    print(
        f"[study] profile {profile}: {total} runs, {total - len(todo)} done, {len(todo)} to run{at_once}",
        file=stream,
        flush=True,
    )
    job = _Job(profile, runs, template, retry_failed, stream, threads, engine)
    ran, skipped = _run_each(todo, job, parallel)
    final = load_results(profile, runs, parallel)
    _print_summary(profile, final, len(ran), skipped, stream)
    return StudyReport(profile, final, ran)


def default_parallel() -> int:
    """``$DYSTRESS_PARALLEL`` when set, else 1 (one run at a time, with every core)."""
    text = os.environ.get("DYSTRESS_PARALLEL", "").strip()
    if not text:
        return 1
    if not text.isdigit():
        raise ValueError(f"DYSTRESS_PARALLEL must be an integer >= 1, got {text!r}")
    return int(text)


def check_parallel(parallel: Any, stream: Any) -> int:
    """``parallel`` as an int >= 1 (``ValueError`` otherwise); a warning on ``stream`` when it exceeds
    the CPU cores (each run then gets one thread and they share the cores)."""
    parallel = as_int("parallel", parallel, 1)
    cores = os.cpu_count() or 1
    if parallel > cores:
        print(
            f"[study] warning: {parallel} runs at once on {cores} CPU cores: each gets 1 thread and "
            "they share the cores (slower per run than one at a time per core)",
            file=stream,
            flush=True,
        )
    return parallel


def threads_per_run(parallel: int) -> int | None:
    """CPU threads of each run when ``parallel`` run at once: ``None`` (torch's default, every core)
    for one, else an equal share of the cores, at least 1."""
    return None if parallel == 1 else max(1, (os.cpu_count() or 1) // parallel)


@dataclass
class _Job:
    """What every run of one :func:`run_study` call shares."""

    profile: str
    runs: str | Path | None
    template: str | Path | None
    retry_failed: bool
    stream: Any
    threads: int | None
    engine: str = "notebook"


@dataclass
class _Progress:
    """The study's progress across runs that may execute side by side (guarded by ``lock``)."""

    total: int
    parallel: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    started: int = 0
    durations: list[float] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    no_data: dict[str, str] = field(default_factory=dict)  # dataset -> why its runs are skipped
    skipped: int = 0

    def eta(self, left: int) -> str:
        """ ", about Xm left after it": ``left`` runs at the mean duration so far, ``parallel`` at a time."""
        if not self.durations:
            return ""
        mean = sum(self.durations) / len(self.durations)
        return f", about {format_duration(left * mean / self.parallel)} left after it"


def _run_each(todo: Sequence[RunResult], job: _Job, parallel: int) -> tuple[list[str], int]:
    """Run ``todo`` in order, ``parallel`` at a time, with progress lines; returns (the keys run, how
    many were skipped for want of data).

    Side by side, each run executes in a worker process of its own (papermill changes the working
    directory of the process it runs in, and Ctrl-C must reach every run); a Ctrl-C cancels the runs
    not started and marks the ones in flight interrupted, to be resumed by the next ``study run``."""
    progress = _Progress(len(todo), parallel)
    if parallel == 1:
        for r in todo:
            _run_one(r, job, progress, run_point)
        return progress.ran, progress.skipped
    context = multiprocessing.get_context("spawn")
    with (
        ProcessPoolExecutor(parallel, mp_context=context) as processes,
        ThreadPoolExecutor(parallel) as threads,
    ):

        def in_a_process(*args: Any) -> RunResult:
            return processes.submit(run_point, *args).result()

        futures = [threads.submit(_run_one, r, job, progress, in_a_process) for r in todo]
        try:
            for future in futures:
                future.result()
        except BaseException:
            threads.shutdown(wait=False, cancel_futures=True)
            processes.shutdown(wait=False, cancel_futures=True)
            raise
    return progress.ran, progress.skipped


def _run_one(r: RunResult, job: _Job, progress: _Progress, run: Callable[..., RunResult]) -> None:
    """Run one of the study's runs with ``run`` (:func:`run_point`, here or in a worker process) unless
    its dataset's data are known missing, and report it."""
    stream = job.stream
    with progress.lock:
        progress.started += 1
        prefix = f"[study {progress.started}/{progress.total}]"
        if r.dataset in progress.no_data:  # every run of this dataset would fail the same way
            progress.skipped += 1
            print(
                f"{prefix} {r.point.id}: skipped, no {r.dataset} data ({progress.no_data[r.dataset]})",
                file=stream,
            )
            return
        left = progress.total - progress.started
        print(
            f"{prefix} {r.point.id} -> {r.run_dir.name} ({left} more to run{progress.eta(left)})",
            file=stream,
            flush=True,
        )
    start = time.perf_counter()
    worker_stream = stream if run is run_point else None  # a worker process writes to its own stderr
    new = run(
        r.point,
        job.profile,
        job.runs,
        job.template,
        job.retry_failed,
        prefix,
        worker_stream,
        job.threads,
        job.engine,
    )
    with progress.lock:
        progress.durations.append(time.perf_counter() - start)
        progress.ran.append(new.key)
        note = f": {new.error}" if new.status == "failed" else ""
        print(
            f"{prefix} {new.status} in {format_duration(progress.durations[-1])}{note}",
            file=stream,
            flush=True,
        )
        if new.status == "failed" and str(new.error).startswith("FileNotFoundError"):
            progress.no_data[r.dataset] = f"see the failure of {r.point.id}"


def _print_summary(profile: str, final: Sequence[RunResult], ran: int, skipped: int, stream: Any) -> None:
    """The study's last lines: how many ran and failed, how to retry the failed ones, invalid points."""
    failed = len({r.key for r in final if r.status == "failed"})
    skip_note = f", {skipped} skipped for missing data" if skipped else ""
    retry = (
        f" (their notebooks hold the traceback; `dystress study run --profile {profile} --retry-failed` "
        "runs them again)"
        if failed
        else ""
    )
    print(
        f"[study] profile {profile}: {ran} run now, {failed} failed{skip_note}{retry}",
        file=stream,
        flush=True,
    )
    for r in final:
        if r.status == "invalid":
            print(f"[study] {r.point.id}: {r.error}", file=stream, flush=True)


def ensure_results(profile: str | None = None, runs: str | Path | None = None) -> StudyReport:
    """What the book calls first: run what is missing for a CPU profile, or only report for ``paper``.

    Raises ``RuntimeError`` when a run of a CPU profile failed (the others are run first), so the
    book build fails loudly. ``paper`` runs are made on a GPU (``dystress study run --profile
    paper``); their absence is reported, not an error.
    """
    profile = profile or default_profile()
    if profile not in LOCAL_PROFILES:
        results = load_results(profile, runs)
        return StudyReport(profile, results, [])
    report = run_study(profile, runs)
    failed = {r.key: r for r in report.results if r.status in ("failed", "invalid")}
    if failed:
        lines = "\n".join(f"  {r.point.id} ({r.run_dir}): {r.error}" for r in failed.values())
        raise RuntimeError(
            f"{len(failed)} run(s) of profile {profile!r} failed (their notebooks hold the traceback):\n"
            f"{lines}\nfix the cause, then `dystress study run --profile {profile} --retry-failed` "
            "(or delete the folders)"
        )
    return report


def older_results(result: RunResult) -> list[str]:
    """Complete run folders of the same point made by other code versions (same slug, other key)."""
    slug = result.key.rsplit("-", 1)[0]
    folder = result.run_dir.parent
    if not folder.is_dir():
        return []
    return sorted(
        p.name
        for p in folder.glob(f"{slug}-*")
        if p.name != result.key and p.name.rsplit("-", 1)[0] == slug and (p / "final_metrics.json").is_file()
    )
