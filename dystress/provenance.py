"""What a run's numbers come from: its configuration, the code that trained it and the folder it lives in.

- :func:`run_id`: 12 hex digits of the sha256 of the canonical JSON of ``config.identity()`` (the
  fields that change what a run computes); the same value as :meth:`PretrainConfig.run_id`.
- :func:`code_version`: 12 hex digits hashing the code a training process can run: every module of
  :func:`counted_modules` (without comments, docstrings and blank lines, :func:`_code_only`) and the
  code cells of the run notebook template. The modules are found, not listed: the static import
  closure (:func:`import_closure`) of :data:`TRAINING_ENTRY` and of the template's ``dystress``
  imports, parent packages included; the study package and the command line never count. A new
  module that training imports is counted the moment something imports it.
- :func:`analysis_version`: 12 hex digits keying the cache of the snapshot analysis
  (:data:`ANALYSIS_VERSION` and the sources of :data:`ANALYSIS_MODULES`).
- :func:`run_folder_name`: ``<slug>-<12 hex>``, a readable slug (temperature function and
  parameters, seed, dataset) and a hash of the run id and the code version: the one naming scheme of
  every run folder (the study's and ``dystress pretrain``'s default).
- :func:`source_version`: a hash of every source file of the package (the book's pages and
  docstrings included), for the book's rebuild stamp.

This module imports nothing of the package: ``dystress.config`` imports it.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import io
import json
import os
import sys
import tokenize
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "ANALYSIS_MODULES",
    "ANALYSIS_VERSION",
    "NEVER_COUNTED",
    "TRAINING_ENTRY",
    "analysis_version",
    "code_version",
    "counted_modules",
    "import_closure",
    "repo_root",
    "run_folder_name",
    "run_id",
    "runs_root",
    "source_version",
    "template_path",
]

PACKAGE = "dystress"
#: The module whose import closure is the training code (``pretrain`` and everything it can import).
TRAINING_ENTRY = "dystress.train"
#: Packages and modules that never count in the code version (a training process never imports them;
#: :func:`counted_modules` refuses a closure that reaches them).
NEVER_COUNTED = ("dystress.study", "dystress.cli")
#: Bumped when the snapshot analysis changes in a way the analysis modules' sources do not show.
ANALYSIS_VERSION = 2
#: The modules the snapshot analysis (``dystress.study.results.snapshot_analysis``) computes with.
ANALYSIS_MODULES = ("dystress.metrics.similarity", "dystress.metrics.structure")
TEMPLATE = "pretrain_run.ipynb"

_PACKAGE_DIR = Path(__file__).resolve().parent


# ---------------------------------------------------------------------------------------------- places
def repo_root() -> Path:
    """The project folder (the parent of the ``dystress`` package)."""
    return _PACKAGE_DIR.parent


def runs_root() -> Path:
    """``$DYSTRESS_RUNS`` or ``<repo>/runs``: the study's runs live in ``<runs_root>/<profile>/<name>/``."""
    return Path(os.environ.get("DYSTRESS_RUNS", "") or repo_root() / "runs").resolve()


def template_path() -> Path:
    """The run notebook template ``notebooks/pretrain_run.ipynb``."""
    return repo_root() / "notebooks" / TEMPLATE


# ---------------------------------------------------------------------------------------------- identity
def run_id(config: Any) -> str:
    """Short stable hash (12 hex digits) of the canonical JSON of ``config.identity()``."""
    canonical = json.dumps(config.identity(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


def _profile_epochs(config: Any) -> int | None:
    """The epochs of ``config``'s profile, read from the profiles of the config's own module.

    Looked up at run time, not imported: ``dystress.config`` imports this module, so importing it
    back would make a cycle.
    """
    profiles = getattr(sys.modules[type(config).__module__], "PROFILES", {})
    profile = profiles.get(config.profile)
    return None if profile is None else profile.epochs


def _slug(config: Any) -> str:
    """``<dataset>_<temperature>_<param><value>..._e<epochs>_s<seed>`` (CIFAR-10 unprefixed, epochs only
    when they differ from the profile's; ``random_init_s<seed>`` for an untrained network)."""
    parts = [config.temperature] + [f"{k}{v:g}" for k, v in sorted(config.temperature_params.items())]
    if config.epochs not in (0, _profile_epochs(config)):  # e.g. the 2000-epoch long-tailed runs
        parts.append(f"e{config.epochs}")
    parts.append(f"s{config.seed}")
    if config.epochs == 0:
        parts = ["random_init", f"s{config.seed}"]
    if config.dataset != "cifar10":  # CIFAR-10 runs keep their unprefixed names
        parts.insert(0, config.dataset)
    return "_".join(parts).replace("-", "m")


def run_folder_name(config: Any, code: str | None = None) -> str:
    """Folder name of a run: a readable slug and 12 hex digits hashing the run id and the code version
    (``code``, default :func:`code_version`): the same configuration under new code gets a new folder.

    A set ``num_threads`` (runs side by side, ``dystress study run --parallel``) joins the slug and the
    hash: CPU float sums can depend on the thread count, so runs with another count never share, or
    resume, a folder with the default runs (``num_threads`` stays out of :func:`run_id`).
    """
    code = code_version() if code is None else code
    threads = getattr(config, "num_threads", None)
    key = f"{run_id(config)}:{code}" + (f":t{threads}" if threads is not None else "")
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return f"{_slug(config)}{f'_t{threads}' if threads is not None else ''}-{digest}"


# ---------------------------------------------------------------------------------------------- modules
def _module_file(name: str) -> Path | None:
    """The source file of package module ``name`` (``dystress.a.b``), or None when there is none."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = _PACKAGE_DIR.joinpath(*parts[1:])
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imported_names(source: str, module: str, is_package: bool) -> set[str]:
    """Every module name an ``import`` statement of ``source`` can load, at any depth of the code.

    ``from A import b`` names ``A`` and ``A.b`` (``b`` may be a submodule); relative imports are
    resolved against ``module``. Names outside the package are kept too; the caller drops them.
    """
    names: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)
    return names


def _with_parents(name: str) -> list[str]:
    """``a.b.c`` -> ``[a, a.b, a.b.c]``: importing a module runs its parent packages first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def import_closure(roots: Iterable[str]) -> list[str]:
    """Sorted names of the package modules that importing ``roots`` can load.

    Follows every ``import`` statement (module level, inside functions, under ``TYPE_CHECKING``) and
    adds each module's parent packages, whose ``__init__`` runs first; names that are not modules of
    the package (third-party modules, attributes imported from a package) are dropped.
    """
    seen: set[str] = set()
    todo = [parent for root in roots for parent in _with_parents(root)]
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if name in seen or path is None:
            continue
        seen.add(name)
        source = path.read_text(encoding="utf-8")
        for imported in _imported_names(source, name, path.name == "__init__.py"):
            todo.extend(p for p in _with_parents(imported) if p not in seen)
    return sorted(seen)


def _never_counted(name: str) -> bool:
    return any(name == n or name.startswith(n + ".") for n in NEVER_COUNTED)


def _template_cells(path: Path) -> list[str]:
    """The code cells of a notebook (outputs, markdown and metadata do not count)."""
    if not path.is_file():
        return []
    cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    sources = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"] for c in cells]
    return [s for c, s in zip(cells, sources, strict=True) if c.get("cell_type") == "code"]


def counted_modules(template: Path | None = None) -> list[str]:
    """Sorted names of the modules :func:`code_version` hashes.

    The import closure of :data:`TRAINING_ENTRY` and of the package modules the template's code cells
    import (``template``, default :func:`template_path`), without the :data:`NEVER_COUNTED` ones the
    template imports. Raises ``RuntimeError`` when training code imports a :data:`NEVER_COUNTED`
    module: the study and the command line must stay outside a training process.
    """
    cells = _template_cells(template_path() if template is None else template)
    from_template = set()
    for cell in cells:
        from_template |= _imported_names(cell, "__main__", False)
    roots = [TRAINING_ENTRY] + sorted(n for n in from_template if not _never_counted(n))
    training = import_closure([TRAINING_ENTRY])
    leaked = [n for n in training if _never_counted(n)]
    if leaked:
        raise RuntimeError(f"training code imports {leaked}; the study and the CLI must stay outside it")
    return [n for n in import_closure(roots) if not _never_counted(n)]


def counted_sources(template: Path | None = None) -> list[tuple[str, Path]]:
    """The files of :func:`counted_modules` as (path relative to the package, absolute path), sorted."""
    files = [_module_file(name) for name in counted_modules(template)]
    return sorted((p.relative_to(_PACKAGE_DIR).as_posix(), p) for p in files if p is not None)


# ---------------------------------------------------------------------------------------------- versions
def _hash_files(files: Iterable[tuple[str, bytes]]) -> str:
    digest = hashlib.sha256()
    for name, content in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(content).digest())
    return digest.hexdigest()


@functools.lru_cache(maxsize=512)  # keyed by the source text: parsed once per file version
def _code_only(source: str) -> bytes:
    """``source`` (Python) without its comments, docstrings, trailing spaces and blank lines.

    Docstrings are found with ``ast`` and cut out, with the comments, by the character spans of their
    ``tokenize`` tokens; what remains is the source text itself, so the result does not depend on the
    Python version that computes it. Source that does not parse is returned as it is.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source.encode()
    lines = source.splitlines()
    docstrings = _docstrings(tree, lines)
    cuts = [
        (tok.start, tok.end)
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
        or (tok.type == tokenize.STRING and any(a <= tok.start and tok.end <= b for a, b in docstrings))
    ]
    for (r0, c0), (r1, c1) in sorted(cuts, reverse=True):  # 1-based rows, character columns
        head, tail = lines[r0 - 1][:c0], lines[r1 - 1][c1:]
        lines[r0 - 1 : r1] = [head + tail] + [""] * (r1 - r0)
    return "\n".join(line.rstrip() for line in lines if line.strip()).encode()


Span = tuple[tuple[int, int], tuple[int, int]]


def _docstrings(tree: ast.AST, lines: list[str]) -> tuple[Span, ...]:
    """The (start, end) character spans of the docstrings of the module, its classes and functions."""

    def char_position(row: int, byte_col: int) -> tuple[int, int]:  # ast counts UTF-8 bytes
        return row, len(lines[row - 1].encode()[:byte_col].decode())

    spans = []
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
                spans.append((char_position(first.lineno, first.col_offset), char_position(*end)))
    return tuple(spans)


def code_version(template: Path | None = None) -> str:
    """12 hex digits: the :func:`counted_modules` without comments, docstrings and layout
    (:func:`_code_only`), and the code cells of the run notebook template (``template``, default
    :func:`template_path`): editing documentation does not make the study's runs stale, editing code
    a training process can import does. The package version is in ``dystress/__init__.py``, which
    counts (the parent of every module)."""
    return _hash_files(code_files(template))[:12]


def code_files(template: Path | None = None) -> list[tuple[str, bytes]]:
    """What :func:`code_version` hashes, as (name, code) per file: each counted module's path relative
    to the package with its :func:`_code_only` text, and ``notebooks/<template>`` with its code cells."""
    path = template_path() if template is None else template
    files = [(rel, _code_only(p.read_text(encoding="utf-8"))) for rel, p in counted_sources(path)]
    files.append((f"notebooks/{TEMPLATE}", "\n\0\n".join(_template_cells(path)).encode()))
    return files


def analysis_version() -> str:
    """12 hex digits keying the snapshot-analysis cache: :data:`ANALYSIS_VERSION` and the sources
    (comments included) of :data:`ANALYSIS_MODULES`."""
    paths = [_PACKAGE_DIR.joinpath(*name.split(".")[1:]).with_suffix(".py") for name in ANALYSIS_MODULES]
    files = [(p.relative_to(_PACKAGE_DIR).as_posix(), p.read_bytes()) for p in paths]
    files.append(("ANALYSIS_VERSION", str(ANALYSIS_VERSION).encode()))
    return _hash_files(files)[:12]


def source_version() -> str:
    """Hex sha256 of every ``.py`` file of the package as it is (docstrings included: the book's API
    pages and its analysis code are made from them); what the book's rebuild stamp hashes."""
    files = [(p.relative_to(_PACKAGE_DIR).as_posix(), p.read_bytes()) for p in _PACKAGE_DIR.rglob("*.py")]
    return _hash_files(files)
