"""Sphinx extension of the dystress book: results first, then pages that follow the results.

- ``builder-inited``: :func:`dystress.study.ensure_results` for ``$DYSTRESS_PROFILE`` (default
  ``quick``): runs what is missing for a CPU profile (a failed run stops the build), only looks for
  ``paper``. Then copies the executed run notebooks into ``book/appendix/runs/`` (the appendix globs
  that folder), each marked as not to be executed again.
- ``autodoc-process-docstring``: bars in docstrings (``|s|``) are text, not reST substitutions.
- ``env-get-outdated``: every page is read (and so executed) again when the profile, the results on
  disk or the package code changed since the last build that ended without a warning, and only
  then: a second build with nothing changed executes nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

APPENDIX = Path(__file__).resolve().parents[1] / "appendix" / "runs"


def _copy_run_notebooks(profile: str) -> set[str]:
    """Copy the executed notebooks of ``profile``'s runs into :data:`APPENDIX` (removing older ones);
    return the names (without suffix) of the pages there."""
    from dystress import study

    results = study.load_results(profile)
    by_key: dict[str, list[Any]] = {}
    for r in results:
        by_key.setdefault(r.key, []).append(r)
    wanted: dict[str, str] = {}
    for key, rs in by_key.items():
        nb_path = rs[0].run_dir / "run.ipynb"
        if not nb_path.is_file():
            continue
        nb = json.loads(nb_path.read_text(encoding="utf-8"))
        points = ", ".join(f"{r.point.ablation}: {r.point.label} (seed {r.point.seed})" for r in rs)
        status = rs[0].status
        title = f"# {rs[0].point.ablation}: {rs[0].point.label} (seed {rs[0].point.seed}, {profile})"
        intro = (
            f"{title}\n\nRun `{key}` ({status}); points: {points}. This is the notebook as papermill "
            f"executed it in `{rs[0].run_dir}`, shown without executing it again.\n"
        )
        nb["cells"] = [{"cell_type": "markdown", "id": "run-title", "metadata": {}, "source": intro}] + [
            c for c in nb["cells"][1:]
        ]
        nb.setdefault("metadata", {})["mystnb"] = {"execution_mode": "off"}
        wanted[f"{key}.ipynb"] = json.dumps(nb, indent=1, sort_keys=True) + "\n"
    if not wanted:
        wanted["no_runs.md"] = (
            f"# No run yet\n\nNo run of profile `{profile}` has a notebook yet: see "
            "[Reproducing at paper scale](../../paper_scale.md) for how to make them.\n"
        )
    APPENDIX.mkdir(parents=True, exist_ok=True)
    for old in APPENDIX.iterdir():
        if old.suffix in (".ipynb", ".md") and old.name not in wanted:
            old.unlink()
    for name, text in wanted.items():
        path = APPENDIX / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
    return {Path(name).stem for name in wanted}


def _remove_stale_pages(outdir: Path, pages: set[str]) -> None:
    """Delete built appendix pages whose source is gone (runs of another profile or older code), so
    the published HTML holds no page that the book no longer links."""
    built = outdir / "appendix" / "runs"
    if built.is_dir():
        for old in built.glob("*.html"):
            if old.stem not in pages:
                old.unlink()


def _fingerprint(profile: str) -> str:
    """Hash of the profile, every package source file (:func:`dystress.provenance.source_version`:
    the pages' code and the API's docstrings too), the state of every run of the profile and the
    shipped results (``results/``)."""
    from dystress import study
    from dystress.provenance import source_version
    from dystress.study.shipped import results_root

    digest = hashlib.sha256(f"{profile}\0{source_version()}".encode())
    for r in study.load_results(profile):
        digest.update(f"{r.key}:{r.status}".encode())
        for name in ("final_metrics.json", "run.json"):
            f = r.run_dir / name
            if f.is_file():
                digest.update(f.read_bytes())
    for f in sorted(results_root().glob("*/*.json")):
        digest.update(f.name.encode() + f.read_bytes())
    return digest.hexdigest()


def _stamp(app: Any) -> Path:
    return Path(app.doctreedir) / "dystress_fingerprint"


def _builder_inited(app: Any) -> None:
    from dystress import study

    profile = study.default_profile()
    report = study.ensure_results(profile)
    missing = {r.key for r in report.results if r.status != "complete"}
    if missing:
        print(f"[dystress book] profile {profile}: {len(missing)} run(s) without results, shown as missing")
    _remove_stale_pages(Path(app.outdir), _copy_run_notebooks(profile))
    app.dystress_fingerprint = _fingerprint(profile)


def _env_get_outdated(app: Any, env: Any, added: set[str], changed: set[str], removed: set[str]) -> list[str]:
    stamp = _stamp(app)
    old = stamp.read_text(encoding="utf-8") if stamp.is_file() else None
    if old == app.dystress_fingerprint:
        return []
    stamp.unlink(missing_ok=True)  # written back only by a build that ends without a warning
    return sorted(set(env.found_docs) - added - changed)


def _build_finished(app: Any, exception: BaseException | None) -> None:
    if exception is None and getattr(app, "_warncount", 0) == 0:
        _stamp(app).parent.mkdir(parents=True, exist_ok=True)
        _stamp(app).write_text(app.dystress_fingerprint, encoding="utf-8")


_LITERAL = re.compile(r"(``.*?``)")


def _escape_bars(app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    """Docstrings write |s| for an absolute value; reST would read a substitution. Escape the bars
    outside inline literals."""
    for i, line in enumerate(lines):
        parts = _LITERAL.split(line)
        lines[i] = "".join(p if p.startswith("``") else p.replace("|", "\\|") for p in parts)


def setup(app: Any) -> dict[str, Any]:
    app.connect("autodoc-process-docstring", _escape_bars)
    app.connect("builder-inited", _builder_inited)
    app.connect("env-get-outdated", _env_get_outdated)
    app.connect("build-finished", _build_finished)
    return {"version": "1.0", "parallel_read_safe": False, "parallel_write_safe": True}
