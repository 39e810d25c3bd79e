"""Results that ship with the repository: a compact bundle per run under ``results/<profile>/``.

A profile too long to run while the book builds (``long``: about 4.5 hours of 2 cores) ships its results
as reproducible studies ship theirs. :func:`export_results` writes them from the run folders, one
command (``dystress study export --profile long``):

    results/<profile>/manifest.json   profile, export date, code version and per-file code hashes,
                                      machine, and which run holds each point of the plan
    results/<profile>/<run key>.json  one complete run: its point, configuration, code version,
                                      environment, timings, per-epoch records (with the regime
                                      histograms) and final metrics; never checkpoints or snapshots

:func:`load_shipped` reads them back as :class:`ShippedResult` (a
:class:`~dystress.study.runner.RunResult` whose records come from the bundle), so the book's tables,
comparisons and figures treat them like local runs; :func:`code_changes` names the files of the
engine that changed since the export (the page says so; it does not hide the results). Bundles are
JSON, read with checks (a damaged or foreign file is named, never executed); ``dystress study run
--profile long`` makes the runs again.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dystress import provenance
from dystress.io import atomic_write_text
from dystress.study.ablations import plan
from dystress.study.runner import RunResult, load_results

__all__ = [
    "BUNDLE_FORMAT",
    "ShippedResult",
    "code_changes",
    "code_files",
    "data_origin",
    "export_results",
    "load_manifest",
    "load_shipped",
    "made_on",
    "merge_exports",
    "results_root",
]

#: Version of the bundle layout (``format`` in every file).
BUNDLE_FORMAT = 1
MANIFEST = "manifest.json"


def results_root() -> Path:
    """``<repo>/results``: where shipped results live, one folder per profile."""
    return provenance.repo_root() / "results"


@dataclass
class ShippedResult(RunResult):
    """A run read from its shipped bundle (``run_dir`` is the bundle file): ``records()`` come from
    the bundle, and it has no snapshots."""

    shipped_records: list[dict[str, Any]] = field(default_factory=list)

    def records(self) -> list[dict[str, Any]]:
        return self.shipped_records

    def snapshot_paths(self) -> list[Path]:
        return []


def _dumps(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n"


def _bundle(result: RunResult, code: str) -> dict[str, Any]:
    """The bundle of one complete run."""
    info = result.info
    return {
        "format": BUNDLE_FORMAT,
        "key": result.key,
        "profile": result.profile,
        "code_version": info.get("code_version", code),
        "config": info.get("config"),
        "environment": info.get("environment"),
        "run": {k: info.get(k) for k in ("started", "finished", "wall_s", "attempts")},
        "final_metrics": result.final,
        "records": result.records(),
    }


def export_results(
    profile: str,
    runs: str | Path | None = None,
    out: str | Path | None = None,
    parallel: int | None = None,
) -> Path:
    """Write the bundles of ``profile``'s complete runs (in ``runs``, default the runs root; made
    ``parallel`` at a time, which names their folders) into ``out`` (default
    ``results/<profile>``), replacing what was there; returns the folder.

    Raises ``ValueError`` before writing anything when no run of the plan is complete.
    """
    results = load_results(profile, runs, parallel)
    done = [r for r in results if r.status == "complete"]
    if not done:
        raise ValueError(
            f"no complete run of profile {profile} in {Path(runs) if runs else provenance.runs_root()} "
            f"(with --parallel {parallel or 1}): run `dystress study run --profile {profile}` first"
        )
    folder = Path(out) if out is not None else results_root() / profile
    folder.mkdir(parents=True, exist_ok=True)
    code = provenance.code_version()
    keys = sorted({r.key for r in done})
    for r in {r.key: r for r in done}.values():
        atomic_write_text(folder / f"{r.key}.json", _dumps(_bundle(r, code)))
    for stale in folder.glob("*.json"):
        if stale.name != MANIFEST and stale.stem not in keys:
            stale.unlink()
    versions = sorted({r.info.get("code_version", code) for r in done})
    manifest = {
        "format": BUNDLE_FORMAT,
        "profile": profile,
        "exported": datetime.now(UTC).isoformat(timespec="seconds"),
        "code_version": versions[0] if len(versions) == 1 else versions,
        # the files behind the runs' code version, when it is this code's (else unknown here)
        "code_files": code_files() if versions == [code] else None,
        "machine": {"host": platform.node(), "cpus": _cpus(done)},
        "data": _data_origin(done),
        "points": {r.point.id: r.key for r in done},
        "planned": [p.id for p in plan(profile)],
    }
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, sort_keys=True, indent=1) + "\n")
    return folder


def merge_exports(profile: str, sources: list[str | Path], out: str | Path | None = None) -> Path:
    """Merge exports of ``profile`` made on several machines or calls (each folder an ``export``'s
    output) into ``out`` (default ``results/<profile>``), replacing what was there; returns it.

    Every source must be an export of ``profile`` at one code version; a point shipped by two sources
    must be the same run (same key and same start). Raises ``ValueError`` naming the folder or point
    before writing.
    """
    manifests, bundles = _read_exports(profile, sources)
    folder = Path(out) if out is not None else results_root() / profile
    folder.mkdir(parents=True, exist_ok=True)
    for key, bundle in bundles.items():
        atomic_write_text(folder / f"{key}.json", _dumps(bundle))
    for stale in folder.glob("*.json"):
        if stale.name != MANIFEST and stale.stem not in bundles:
            stale.unlink()
    machines = [m["machine"] for m in manifests if m.get("machine")]
    data: dict[str, str] = {}
    for name, origin in ((n, o) for m in manifests for n, o in (m.get("data") or {}).items()):
        data[name] = (
            origin if data.get(name, origin) == origin else f"differs between exports: {data[name]}; {origin}"
        )
    manifest = {
        **manifests[0],
        "exported": max(m.get("exported", "") for m in manifests),
        "machine": machines[0] if machines and all(m == machines[0] for m in machines) else machines,
        "data": data,
        "points": {p: k for m in manifests for p, k in (m.get("points") or {}).items()},
        "merged_from": [m.get("exported") for m in manifests],
    }
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, sort_keys=True, indent=1) + "\n")
    return folder


def _read_exports(
    profile: str, sources: list[str | Path]
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The manifests of ``sources`` and their bundles by key, checked for :func:`merge_exports`."""
    if not sources:
        raise ValueError("merge_exports needs at least one export folder")
    manifests, bundles, where = [], {}, {}
    for source in map(Path, sources):
        manifest = _read(source / MANIFEST)
        if manifest.get("profile") != profile:
            raise ValueError(
                f"{source} holds an export of profile {manifest.get('profile')!r}, not {profile!r}"
            )
        manifests.append(manifest)
        for point, key in (manifest.get("points") or {}).items():
            if where.setdefault(point, key) != key:
                raise ValueError(f"point {point} ships as {where[point]} and as {key} ({source})")
            bundle = _read(source / f"{key}.json")
            if bundles.setdefault(key, bundle).get("run") != bundle.get("run"):
                raise ValueError(f"point {point} ships as two different runs of {key} ({source})")
    versions = {json.dumps(m.get("code_version")) for m in manifests}
    if len(versions) != 1:
        raise ValueError(f"the exports hold different code versions ({sorted(versions)}): export them again")
    return manifests, bundles


def code_files() -> dict[str, str]:
    """The sha256 (hex) of each file that :func:`~dystress.provenance.code_version` hashes
    (:func:`~dystress.provenance.code_files`), so that a page can name the files changed since an
    export. Hashed together as there, they give the code version."""
    return {name: hashlib.sha256(code).hexdigest() for name, code in sorted(provenance.code_files())}


def data_origin(name: str, root: str | Path) -> str:
    """Whether CIFAR dataset ``name``'s files under ``root`` are the official release, in words."""
    from dystress.data.datasets import is_official_release

    kind = {True: "official release", False: "a copy whose files differ from the official release"}
    return kind.get(is_official_release(name, root), "files not found")


def _data_origin(done: list[RunResult]) -> dict[str, str]:
    """Per CIFAR dataset of the runs: :func:`data_origin` of the files they trained on (read at
    export, on the machine that made them)."""
    origin = {}
    for r in done:
        config = r.info.get("config") or {}
        name, root = config.get("dataset"), config.get("data_root")
        if name and name != "imagefolder" and root and name not in origin:
            origin[name] = data_origin(name, root)
    return origin


def made_on(results: list[RunResult], manifest: dict[str, Any]) -> str:
    """Where shipped ``results`` were made, from their bundles and manifest: per device its CPU cores
    and torch, then the data's origin when the export recorded it (e.g. ``NVIDIA H200 (16 CPU cores,
    torch 2.11.0+cu130); data: cifar10 a copy ...``)."""
    envs = [
        r.info.get("environment") or {}
        for r in {r.key: r for r in results}.values()
        if r.status == "complete"
    ]
    if not envs:
        return "nothing (no complete run)"
    parts = []
    for device in sorted({str(e.get("device") or "an unrecorded device") for e in envs}):
        same = [e for e in envs if str(e.get("device") or "an unrecorded device") == device]
        cores = "/".join(str(c) for c in sorted({int(e["cpus"]) for e in same if e.get("cpus")})) or "?"
        torch = ", ".join(sorted({str(e["torch"]) for e in same if e.get("torch")})) or "?"
        parts.append(f"{device} ({cores} CPU cores, torch {torch})")
    text = " and ".join(parts)
    data = manifest.get("data")
    if data:
        text += "; data: " + "; ".join(f"{name} {origin}" for name, origin in sorted(data.items()))
    else:
        text += "; data: not recorded by the export"
    return text


def _cpus(done: list[RunResult]) -> Any:
    cpus = sorted({(r.info.get("environment") or {}).get("cpus") for r in done} - {None})
    return cpus[0] if len(cpus) == 1 else cpus


def _read(path: Path) -> dict[str, Any]:
    """A bundle or manifest as a dict, checked for its format; ``ValueError`` naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"shipped result {path} cannot be read as JSON ({err})") from None
    if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
        raise ValueError(f"shipped result {path} is not a dystress bundle of format {BUNDLE_FORMAT}")
    return data


def load_manifest(profile: str, root: str | Path | None = None) -> dict[str, Any] | None:
    """The manifest of ``profile``'s shipped results (``root``: default :func:`results_root`), or
    ``None`` when nothing ships for it."""
    path = Path(root or results_root()) / profile / MANIFEST
    return _read(path) if path.is_file() else None


def load_shipped(profile: str, root: str | Path | None = None) -> list[ShippedResult]:
    """Every point of ``profile``'s plan with its shipped run (status ``complete``), or status
    ``missing`` when none ships; ``[]`` when the profile ships nothing."""
    manifest = load_manifest(profile, root)
    if manifest is None:
        return []
    folder = Path(root or results_root()) / profile
    points: dict[str, str] = manifest.get("points") or {}
    bundles: dict[str, dict[str, Any]] = {}
    out = []
    for point in plan(profile):
        key = points.get(point.id)
        if key is None:
            out.append(ShippedResult(point, profile, f"missing:{point.id}", folder, "missing"))
            continue
        if key not in bundles:
            bundles[key] = _read(folder / f"{key}.json")
        b = bundles[key]
        info = {
            "code_version": b.get("code_version"),
            "environment": b.get("environment"),
            **b.get("run", {}),
        }
        out.append(
            ShippedResult(
                point,
                profile,
                key,
                folder / f"{key}.json",
                "complete",
                b.get("final_metrics") or {},
                info,
                b.get("records") or [],
            )
        )
    return out


def code_changes(manifest: dict[str, Any]) -> list[str]:
    """The files of the engine whose code changed since the export (``name (changed|new|removed)``);
    ``[]`` when the code version is the same."""
    if manifest.get("code_version") == provenance.code_version():
        return []
    then, now = manifest.get("code_files"), code_files()
    if not then:
        return ["the code version differs (the export did not record its files)"]
    changes = [f"{n} (changed)" for n in sorted(then.keys() & now.keys()) if then[n] != now[n]]
    changes += [f"{n} (new)" for n in sorted(now.keys() - then.keys())]
    changes += [f"{n} (removed)" for n in sorted(then.keys() - now.keys())]
    return changes or ["the code version differs"]
