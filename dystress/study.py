"""The study's runner: each point of :mod:`dystress.ablations` run as a papermill execution of a
notebook template, into a folder keyed by its configuration and the code version.

A point's configuration is its profile (:func:`dystress.config.get_profile`) with its parameters
applied (:func:`build_config`); its run lives in ``runs/<profile>/<run_key>/`` where the key hashes
the full configuration and the code version (:func:`run_key`), so two ablations that ask for the same
configuration share one run. A run folder holds the executed notebook ``run.ipynb``, ``run.json``
(status, parameters, timings, host, error), and what the engine writes (``config.json``,
``records.jsonl``, ``snapshots/``, ``checkpoints/``, ``final_metrics.json``).

:func:`run_study` runs the points of a profile that are not complete yet: a complete run is skipped,
an interrupted one is executed again into the same folder (the engine resumes from its checkpoint), a
failing one is recorded with its error and the others go on. :func:`load_results` reads whatever
exists; :mod:`dystress.results` turns it into the book's tables and analyses. ``dystress study run
--profile P`` is :func:`main`.

Environment: ``DYSTRESS_PROFILE`` (default ``quick``), ``DYSTRESS_RUNS`` (default ``<repo>/runs``),
``DYSTRESS_DATA`` (default ``<repo>/data``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import platform
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dystress.ablations import ABLATIONS, PROFILE_NAMES, Point, plan
from dystress.io import atomic_write_json, read_jsonl

__all__ = [
    "LOCAL_PROFILES",
    "TEMPERATURE_PARAMETERS",
    "RunResult",
    "StudyReport",
    "build_config",
    "code_version",
    "default_profile",
    "ensure_results",
    "load_results",
    "main",
    "notebook_parameters",
    "prepare_run",
    "repo_root",
    "run_key",
    "run_point",
    "run_study",
    "runs_root",
]

#: Profiles whose runs fit a CPU: the book runs what is missing for these; ``paper`` needs a GPU.
LOCAL_PROFILES = ("smoke", "quick")

#: Parameters of the temperature functions (``dystress.temperature``), accepted as top-level notebook
#: parameters and moved into ``temperature_params``.
TEMPERATURE_PARAMETERS = (
    "tau",
    "tau_min",
    "tau_max",
    "offset",
    "scale",
    "knee",
    "tau_plus",
    "tau_minus",
    "period",
    "tau_0",
    "alpha",
    "a_0",
)

#: Notebook parameters that are not config fields.
RUN_PARAMETERS = ("profile", "run_dir", "progress")

#: Source files that cannot change what a run computes: left out of :func:`code_version`.
_NOT_CODE = frozenset(
    {"study.py", "ablations.py", "results.py", "plots.py", "findings.py", "cli.py", "__init__.py"}
)
#: Modules used only to analyse snapshots after training (never by a run): left out of
#: :func:`code_version`; they key the cache of :func:`snapshot_analysis` instead.
_ANALYSIS_ONLY = frozenset({"metrics/similarity.py", "metrics/structure.py"})

TEMPLATE = "pretrain_run.ipynb"


# ---------------------------------------------------------------------------------------------- paths
def repo_root() -> Path:
    """The project folder (the parent of the ``dystress`` package)."""
    return Path(__file__).resolve().parents[1]


def default_profile() -> str:
    """``$DYSTRESS_PROFILE`` or ``quick``; raises ``ValueError`` for an unknown name."""
    name = os.environ.get("DYSTRESS_PROFILE", "") or "quick"
    if name not in PROFILE_NAMES:
        raise ValueError(f"DYSTRESS_PROFILE must be one of {list(PROFILE_NAMES)}, got {name!r}")
    return name


def runs_root() -> Path:
    """``$DYSTRESS_RUNS`` or ``<repo>/runs``: runs live in ``<runs_root>/<profile>/<run_key>/``."""
    return Path(os.environ.get("DYSTRESS_RUNS", "") or repo_root() / "runs").resolve()


def data_root() -> Path:
    """``$DYSTRESS_DATA`` or ``<repo>/data``."""
    return Path(os.environ.get("DYSTRESS_DATA", "") or repo_root() / "data").resolve()


def template_path() -> Path:
    """The run notebook template ``notebooks/pretrain_run.ipynb``."""
    return repo_root() / "notebooks" / TEMPLATE


# ---------------------------------------------------------------------------------------------- configs
def notebook_parameters() -> dict[str, Any]:
    """Every parameter of the run notebook with its default (``None``: the profile's value).

    ``profile`` picks the starting configuration, ``run_dir`` the folder (default: the run's key
    folder under :func:`runs_root`), ``progress`` the in-notebook progress bar; then every
    :class:`~dystress.config.PretrainConfig` field but ``profile`` and every name of
    :data:`TEMPERATURE_PARAMETERS`.
    """
    from dystress.config import PretrainConfig

    params: dict[str, Any] = {"profile": "quick", "run_dir": None, "progress": True}
    for f in dataclasses.fields(PretrainConfig):
        if f.name != "profile":
            params[f.name] = None
    for name in TEMPERATURE_PARAMETERS:
        params[name] = None
    return params


def check_parameter_names(names: Iterable[str]) -> None:
    """Raise ``ValueError`` listing any name that is not a notebook parameter."""
    known = notebook_parameters()
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(f"unknown parameters {unknown}; known parameters: {sorted(known)}")


def build_config(profile: str, params: Mapping[str, Any]):  # noqa: ANN201 (PretrainConfig, lazy import)
    """The :class:`~dystress.config.PretrainConfig` of ``profile`` with notebook ``params`` applied.

    ``None`` values keep the profile's value. Temperature parameters (``tau``, ``tau_min``, ...) go
    into ``temperature_params``; when ``temperature`` names another function than the profile's, the
    profile's ``temperature_params`` are dropped first (the function's defaults fill the rest). The
    data root is ``$DYSTRESS_DATA`` unless ``data_root`` is given (an image-folder profile such as
    ``imagenet100``, which the study does not run, needs it). Raises ``ValueError`` naming the bad
    parameter or value.
    """
    from dystress.config import PROFILES, get_profile

    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {list(PROFILES)}, got {profile!r}")
    check_parameter_names(params)
    base = get_profile(profile)
    if base.dataset == "imagefolder" and params.get("data_root") is None:
        raise ValueError(
            f"profile {profile} trains on an image folder: give its path as data_root "
            "(papermill: -p data_root /path/with/train/and/val)"
        )
    updates: dict[str, Any] = {"data_root": str(data_root())}
    temperature_params = dict(base.temperature_params)
    for name, value in params.items():
        if value is None or name in RUN_PARAMETERS:
            continue
        if name in TEMPERATURE_PARAMETERS:
            continue
        if isinstance(value, str) and isinstance(getattr(base, name, None), (list, dict)):
            value = _parse_text(name, value)  # papermill -p passes lists and mappings as text
        updates[name] = value
    if "temperature" in updates and updates["temperature"] != base.temperature:
        temperature_params = {}
    if "temperature_params" in updates:
        given = updates.pop("temperature_params")
        if not isinstance(given, dict):
            raise ValueError(
                f"temperature_params must be a mapping such as {{tau: 0.1}} (papermill: -y "
                f"'temperature_params: {{tau: 0.1}}'), got {given!r}"
            )
        temperature_params = dict(given)
    for name in TEMPERATURE_PARAMETERS:
        if params.get(name) is not None:
            temperature_params[name] = params[name]
    updates["temperature_params"] = temperature_params
    return base.updated(updates)


def _parse_text(name: str, text: str) -> Any:
    """A list or mapping parameter given as YAML text (``"[0, 5]"``, ``"{tau: 0.1}"``)."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(
            f"{name} must be YAML such as [0, 5] or {{tau: 0.1}}, got {text!r} ({err})"
        ) from None


def _hash_files(paths: Iterable[tuple[str, bytes]]) -> str:
    digest = hashlib.sha256()
    for name, content in sorted(paths):
        digest.update(name.encode() + b"\0" + hashlib.sha256(content).digest())
    return digest.hexdigest()


@functools.lru_cache(maxsize=512)  # keyed by the source text: parsed once per file version
def _code_only(source: str) -> bytes:
    """``source`` (Python) without its comments, docstrings, trailing spaces and blank lines.

    Docstrings are found with ``ast`` and cut out, with the comments, by the character spans of their
    ``tokenize`` tokens; what remains is the source text itself, so the result does not depend on the
    Python version that computes it. Source that does not parse is returned as it is.
    """
    import ast
    import io
    import tokenize

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source.encode()
    lines = source.splitlines()

    def char_position(row: int, byte_col: int) -> tuple[int, int]:  # ast counts UTF-8 bytes
        return row, len(lines[row - 1].encode()[:byte_col].decode())

    docstrings: list[tuple[tuple[int, int], tuple[int, int]]] = []
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body:
            first = body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                end = (first.end_lineno or first.lineno, first.end_col_offset or 0)
                docstrings.append((char_position(first.lineno, first.col_offset), char_position(*end)))
    cuts = []  # ((row, col), (row, col)) spans, 1-based rows, character columns
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        in_docstring = tok.type == tokenize.STRING and any(
            a <= tok.start and tok.end <= b for a, b in docstrings
        )
        if tok.type == tokenize.COMMENT or in_docstring:
            cuts.append((tok.start, tok.end))
    for (r0, c0), (r1, c1) in sorted(cuts, reverse=True):
        head, tail = lines[r0 - 1][:c0], lines[r1 - 1][c1:]
        lines[r0 - 1 : r1] = [head + tail] + [""] * (r1 - r0)
    return "\n".join(line.rstrip() for line in lines if line.strip()).encode()


def _template_code(path: Path) -> bytes:
    """The code cells of a notebook (outputs and metadata do not count)."""
    if not path.is_file():
        return b""
    cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    sources = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"] for c in cells]
    code = [s for c, s in zip(cells, sources, strict=True) if c.get("cell_type") == "code"]
    return "\n\0\n".join(code).encode()


def _package_sources() -> list[tuple[str, Path]]:
    """Every ``.py`` file of the package as (path relative to the package, absolute path), sorted."""
    import dystress

    package = Path(dystress.__file__).resolve().parent
    return sorted((p.relative_to(package).as_posix(), p) for p in package.rglob("*.py"))


def code_version() -> str:
    """12 hex digits: the package version, every engine source file and the template's code cells.

    Left out: the files that cannot change a run's numbers (:data:`_NOT_CODE`: this module, the
    plotting helpers, the CLI, the package ``__init__``; :data:`_ANALYSIS_ONLY`), and the comments,
    docstrings and layout of the engine files (:func:`_code_only`): editing documentation does not
    make the study's runs stale.
    """
    files = [
        (rel, _code_only(path.read_text(encoding="utf-8")))
        for rel, path in _package_sources()
        if rel not in _NOT_CODE and rel not in _ANALYSIS_ONLY
    ]
    from dystress import __version__

    files.append(("__version__", __version__.encode()))
    files.append((f"notebooks/{TEMPLATE}", _template_code(template_path())))
    return _hash_files(files)[:12]


def _slug(config: Any) -> str:
    from dystress.config import PROFILES

    parts = [config.temperature] + [f"{k}{v:g}" for k, v in sorted(config.temperature_params.items())]
    profile = PROFILES.get(config.profile)
    if profile is not None and config.epochs not in (0, profile.epochs):  # e.g. the 2000-epoch LT runs
        parts.append(f"e{config.epochs}")
    parts.append(f"s{config.seed}")
    if config.epochs == 0:
        parts = ["random_init", f"s{config.seed}"]
    if config.dataset != "cifar10":  # CIFAR-10 runs keep their unprefixed names
        parts.insert(0, config.dataset)
    return "_".join(parts).replace("-", "m")


def run_key(config: Any, code: str | None = None) -> str:
    """Folder name of a run: a readable slug and 12 hex digits hashing the config and the code version."""
    code = code_version() if code is None else code
    digest = hashlib.sha256(f"{config.run_id()}:{code}".encode()).hexdigest()[:12]
    return f"{_slug(config)}-{digest}"


def prepare_run(params: Mapping[str, Any]) -> tuple[Any, Path]:
    """What the run notebook's first cell does: validate ``params``, build the config, pick the folder.

    Returns ``(config, run_dir)``; ``run_dir`` is ``params["run_dir"]`` or the key folder under
    :func:`runs_root`. Raises ``ValueError`` for unknown parameters or invalid values.
    """
    check_parameter_names(params)
    profile = params.get("profile") or "quick"
    config = build_config(profile, params)
    run_dir = params.get("run_dir")
    path = Path(run_dir) if run_dir else runs_root() / profile / run_key(config)
    return config, path.resolve()


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


def _status(run_dir: Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    info_path = run_dir / "run.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    final_path = run_dir / "final_metrics.json"
    final = json.loads(final_path.read_text()) if final_path.is_file() else {}
    state = info.get("status")
    if not info:
        return "missing", info, final
    if state == "complete" and final:
        return "complete", info, final
    if state == "failed":
        return "failed", info, final
    return ("running" if _is_locked(run_dir) else "interrupted"), info, final


def _is_locked(run_dir: Path) -> bool:
    try:
        import fcntl
    except ImportError:  # pragma: no cover (Windows)
        return False
    lock = run_dir / ".lock"
    if not lock.exists():
        return False
    with open(lock, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


@contextlib.contextmanager
def _locked(run_dir: Path) -> Iterator[bool]:
    """Hold an exclusive lock on ``run_dir`` (yields False when another process holds it)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover (Windows)
        yield True
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _resolve(point: Point, profile: str, root: Path, code: str) -> RunResult:
    try:
        config = build_config(profile, point.parameters)
    except ValueError as err:
        info = {"error": f"invalid configuration: {err}"}
        return RunResult(point, profile, f"invalid:{point.id}", root / profile, "invalid", {}, info)
    key = run_key(config, code)
    run_dir = root / profile / key
    status, info, final = _status(run_dir)
    return RunResult(point, profile, key, run_dir, status, final, info)


def load_results(profile: str | None = None, runs: str | Path | None = None) -> list[RunResult]:
    """Every point of ``profile``'s plan with what exists on disk (status ``missing`` when nothing)."""
    profile = profile or default_profile()
    root = Path(runs).resolve() if runs else runs_root()
    code = code_version()
    return [_resolve(p, profile, root, code) for p in plan(profile)]


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
        from dystress.train import device_name

        env["device"] = device_name(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    except Exception:  # noqa: BLE001 (informational only)
        pass
    return env


class _EpochWatcher(threading.Thread):
    """Prints a line per new record of ``records.jsonl`` while a run executes (the in-run progress)."""

    def __init__(self, path: Path, prefix: str, epochs: int, stream: Any) -> None:
        super().__init__(daemon=True)
        self.path, self.prefix, self.epochs, self.stream = path, prefix, epochs, stream
        self.stop = threading.Event()
        self.seen = len(read_jsonl(path))

    def run(self) -> None:
        while not self.stop.wait(2.0):
            records = read_jsonl(self.path)
            for r in records[self.seen :]:
                knn = r.get("monitor_knn_top1")
                extra = f", monitor kNN top-1 {knn:.1f}%" if isinstance(knn, (int, float)) else ""
                print(
                    f"{self.prefix}   epoch {r.get('epoch', '?')}/{self.epochs}{extra}",
                    file=self.stream,
                    flush=True,
                )
            self.seen = max(self.seen, len(records))


def run_point(
    point: Point,
    profile: str,
    runs: str | Path | None = None,
    template: str | Path | None = None,
    retry_failed: bool = False,
    prefix: str = "",
    stream: Any = None,
) -> RunResult:
    """Run one point with papermill unless it is complete (or failed, unless ``retry_failed``).

    The executed notebook is ``<run_dir>/run.ipynb``; ``run.json`` records the parameters, status,
    timings and environment, and for a failure the error and its traceback. Exceptions of the run are
    recorded, not raised (``KeyboardInterrupt`` marks the run interrupted and is re-raised).
    """
    import papermill

    stream = sys.stderr if stream is None else stream
    root = Path(runs).resolve() if runs else runs_root()
    template = Path(template) if template else template_path()
    result = _resolve(point, profile, root, code_version())
    if result.status in ("complete", "invalid") or (result.status == "failed" and not retry_failed):
        return result
    if result.status == "running":
        print(f"{prefix} {point.id}: being run by another process, skipped", file=stream, flush=True)
        return result
    with _locked(result.run_dir) as ok:
        if not ok:
            result.status = "running"
            return result
        config = build_config(profile, point.parameters)
        attempts = int(result.info.get("attempts", 0)) + 1
        info: dict[str, Any] = {
            "status": "running",
            "point": point.id,
            "ablation": point.ablation,
            "label": point.label,
            "profile": profile,
            "parameters": point.parameters,
            "key": result.key,
            "code_version": code_version(),
            "config": config.to_dict(),
            "template": str(template),
            "attempts": attempts,
            "started": _now(),
            "environment": _environment(),
        }
        atomic_write_json(result.run_dir / "run.json", info)
        parameters = {
            **point.parameters,
            "profile": profile,
            "run_dir": str(result.run_dir),
            "progress": False,
        }
        watcher = _EpochWatcher(result.run_dir / "records.jsonl", prefix, config.epochs, stream)
        watcher.start()
        start = time.perf_counter()
        try:
            papermill.execute_notebook(
                str(template),
                str(result.run_dir / "run.ipynb"),
                parameters=parameters,
                kernel_name="python3",
                progress_bar=False,
                cwd=str(result.run_dir),
            )
            info.update(status="complete", error=None, traceback=None)
        except KeyboardInterrupt:
            info.update(status="interrupted", error="KeyboardInterrupt")
            raise
        except Exception as err:  # noqa: BLE001 (recorded; the study goes on)
            info.update(status="failed", error=_error_text(err), traceback=traceback.format_exc())
        finally:
            watcher.stop.set()
            watcher.join()
            info.update(finished=_now(), wall_s=round(time.perf_counter() - start, 2))
            atomic_write_json(result.run_dir / "run.json", info)
    return _resolve(point, profile, root, info["code_version"])


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


def run_study(
    profile: str | None = None,
    runs: str | Path | None = None,
    template: str | Path | None = None,
    retry_failed: bool = False,
    only: Sequence[str] | None = None,
    stream: Any = None,
) -> StudyReport:
    """Run every missing or interrupted run of ``profile`` (each configuration once), one after another.

    A run failing with ``FileNotFoundError`` (its dataset is missing and cannot be downloaded) makes
    the later runs of the same dataset be skipped (left missing). ``only``: restrict to these ablation
    names. Prints ``[i/n]`` progress with the time spent and an
    estimate of what is left to ``stream`` (stderr).
    """
    stream = sys.stderr if stream is None else stream
    profile = profile or default_profile()
    if only:
        unknown = sorted(set(only) - set(ABLATIONS))
        if unknown:
            raise ValueError(f"unknown ablations {unknown}; known: {sorted(ABLATIONS)}")
    results = load_results(profile, runs)
    # Filter before de-duplicating: a run shared with an earlier ablation still belongs to ``only``.
    selected = _unique_runs([r for r in results if not only or r.point.ablation in only])
    todo = [
        r
        for r in selected
        if r.status in ("missing", "interrupted") or (r.status == "failed" and retry_failed)
    ]
    total = len(selected)
    done = total - len(todo)
    print(
        f"[study] profile {profile}: {total} runs, {done} done, {len(todo)} to run", file=stream, flush=True
    )
    ran: list[str] = []
    durations: list[float] = []
    no_data: dict[str, str] = {}  # dataset -> the run whose data could not be found
    skipped = 0
    for i, r in enumerate(todo, 1):
        left = len(todo) - i
        prefix = f"[study {i}/{len(todo)}]"
        if r.dataset in no_data:  # every run of this dataset would fail the same way
            skipped += 1
            print(f"{prefix} {r.point.id}: skipped, no {r.dataset} data ({no_data[r.dataset]})", file=stream)
            continue
        eta = f", about {_fmt(left * sum(durations) / len(durations))} left after it" if durations else ""
        print(f"{prefix} {r.point.id} -> {r.run_dir.name} ({left} more to run{eta})", file=stream, flush=True)
        start = time.perf_counter()
        new = run_point(r.point, profile, runs, template, retry_failed, prefix, stream)
        durations.append(time.perf_counter() - start)
        ran.append(new.key)
        note = f": {new.error}" if new.status == "failed" else ""
        print(f"{prefix} {new.status} in {_fmt(durations[-1])}{note}", file=stream, flush=True)
        if new.status == "failed" and str(new.error).startswith("FileNotFoundError"):
            no_data[r.dataset] = f"see the failure of {r.point.id}"
    final = load_results(profile, runs)
    failed = len({r.key for r in final if r.status == "failed"})
    skip_note = f", {skipped} skipped for missing data" if skipped else ""
    print(
        f"[study] profile {profile}: {len(ran)} run now, {failed} failed{skip_note}", file=stream, flush=True
    )
    for r in final:
        if r.status == "invalid":
            print(f"[study] {r.point.id}: {r.error}", file=stream, flush=True)
    return StudyReport(profile, final, ran)


def _fmt(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


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


# ---------------------------------------------------------------------------------------------- CLI
def _older_results(result: RunResult) -> list[str]:
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


def _cmd_list(args: argparse.Namespace) -> int:
    results = load_results(args.profile, args.runs)
    print(f"code version {code_version()} (run folders are keyed by the config and this version)")
    seen: set[str] = set()
    for r in results:
        shared = " (shared)" if r.key in seen else ""
        seen.add(r.key)
        older = _older_results(r) if r.status == "missing" else []
        note = f" (results of other code: {', '.join(older)})" if older else ""
        print(f"{r.status:<11} {r.point.id:<40} {r.run_dir}{shared}{note}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    report = run_study(args.profile, args.runs, args.template, args.retry_failed, args.only)
    return 1 if report.by_status("failed") or report.by_status("invalid") else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``dystress study {run,list} --profile P [--runs DIR] [--retry-failed] [--only ABLATION ...]``."""
    parser = argparse.ArgumentParser(prog="dystress study", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("run", "run what is missing"), ("list", "list the runs and their status")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument(
            "--profile", default=None, choices=PROFILE_NAMES, help="default: $DYSTRESS_PROFILE or quick"
        )
        p.add_argument("--runs", default=None, help="runs folder (default: $DYSTRESS_RUNS or <repo>/runs)")
        if name == "run":
            p.add_argument("--retry-failed", action="store_true", help="run failed runs again")
            p.add_argument("--only", nargs="+", choices=sorted(ABLATIONS), help="only these ablations")
            p.add_argument(
                "--template", default=None, help="notebook template (default: notebooks/pretrain_run.ipynb)"
            )
    args = parser.parse_args(argv)
    return _cmd_run(args) if args.command == "run" else _cmd_list(args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
