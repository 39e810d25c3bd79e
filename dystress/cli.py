"""Command line: ``dystress pretrain | evaluate | study | config | data``.

    dystress pretrain [--profile P] [--config FILE] [--set key=value ...] [--run-dir DIR]
                      [--no-progress] [--wait]
    dystress evaluate CHECKPOINT [--out FILE] [--data-root DIR] [--device D] [--batch-size N]
    dystress study run [--profile P] [--runs DIR] [--retry-failed] [--only ABLATION ...] [--template NB]
                       [--parallel N]
    dystress study list [--profile P] [--runs DIR]
    dystress config show [--profile P] [--config FILE] [--set key=value ...]
    dystress data prepare [--profile P] [--config FILE] [--set key=value ...]

Expected failures print one line on stderr, naming the parameter or file and what to do, without a
traceback (``DYSTRESS_TRACEBACK=1`` shows it), and exit with a status of their own:

- 1: training diverged (``pretrain``), or some of the study's runs failed (``study run``);
- 2: bad input: a value, key, profile or argument; a missing file; a data file, checkpoint or config
  file that is not what it should be (corrupt, truncated, foreign, another config, another model);
- 3: the run folder is being written by another process (its lock, :mod:`dystress.runlock`);
- 4: the system refused a file operation: no permission, a read-only or full disk, a file where a
  folder should be or a folder where a file should be;
- 130: interrupted (Ctrl-C); ``pretrain`` says how to resume.

A real bug (any other exception) still shows its traceback.

Environment: ``$DYSTRESS_DATA`` is the data root of every config that does not set ``data_root``
(in ``--config`` or ``--set``); ``$DYSTRESS_RUNS`` replaces ``runs/`` as the parent of the default
run folder ``runs/<profile>/<slug>-<hash>`` (:func:`dystress.provenance.run_folder_name`, the
study's naming); ``$DYSTRESS_PROFILE`` is the study's default profile.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dystress.config import FIELD_HELP, PROFILES, PretrainConfig, get_profile, yaml_problem
from dystress.provenance import run_folder_name, runs_root
from dystress.runlock import RunFolderBusy, run_folder_lock_or_parents

__all__ = ["build_parser", "default_run_dir", "main", "resolve_config"]

DEFAULT_PROFILE = "quick"


#: Exit statuses of the expected failures (see the module docstring).
EXIT_DIVERGED, EXIT_BAD_INPUT, EXIT_BUSY, EXIT_REFUSED, EXIT_INTERRUPTED = 1, 2, 3, 4, 130

#: What to do about a refused file operation, by errno.
_NO_PERMISSION = (
    "choose a folder you may write (--run-dir, --runs, $DYSTRESS_RUNS, --out) or fix its permissions"
)
_OS_HINTS = {
    errno.EACCES: _NO_PERMISSION,
    errno.EPERM: _NO_PERMISSION,
    errno.EROFS: "the file system is read-only: choose a folder on a writable one",
    errno.ENOSPC: "the disk is full: free space or choose a folder on another disk",
    errno.EDQUOT: "the disk quota is used up: free space or choose a folder on another disk",
    errno.ENOTDIR: "a file stands where a folder is needed: move it or choose another path",
    errno.EEXIST: "a file stands where a folder is needed: move it or choose another path",
    errno.EISDIR: "a folder stands where a file is needed: name a file",
}


class _UserError(Exception):
    """An error in the user's input: reported on stderr with exit status 2."""


def _fields_epilog() -> str:
    lines = [
        "config fields (default value; set with --set key=value, nested: temperature_params.tau_min=0.05):"
    ]
    for f in dataclasses.fields(PretrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        lines.append(f"  {f.name} = {json.dumps(default)}\n      {FIELD_HELP.get(f.name, '')}")
    lines.append(f"profiles: {', '.join(PROFILES)} (see `dystress config show --profile P`)")
    return "\n".join(lines)


def _add_config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default=None,
        help=f"start from this profile (default {DEFAULT_PROFILE} unless --config is given)",
    )
    p.add_argument(
        "--config", metavar="FILE", help="YAML or JSON file of config fields, applied over the profile"
    )
    p.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        dest="overrides",
        help="override one field (value parsed as YAML); repeatable",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``dystress`` command."""
    parser = argparse.ArgumentParser(
        prog="dystress",
        description="DySTreSS study: pretraining, evaluation, ablations.",
        epilog="exit status: 0 done, 1 training diverged or study runs failed, 2 bad input (one line names "
        "it), 3 run folder busy (another process writes it), 4 a file operation refused (permission, "
        "read-only or full disk, a file or folder in the way), 130 interrupted",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "pretrain",
        help="pretrain one model (resumes from RUN_DIR/checkpoints/last.pt)",
        description="Pretrain one model. Config = profile, then --config FILE, then --set overrides.",
        epilog=_fields_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_config_options(p)
    p.add_argument(
        "--run-dir",
        metavar="DIR",
        help="run directory (default: $DYSTRESS_RUNS or runs, /<profile>/<run_id>)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--wait",
        action="store_true",
        help="when another process writes the run folder, wait for it instead of stopping at once",
    )

    p = sub.add_parser("evaluate", help="evaluate a checkpoint into one JSON record")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoints/last.pt file, or its run folder")
    p.add_argument("--out", metavar="FILE", help="write the metrics there as JSON (atomically)")
    p.add_argument(
        "--data-root", metavar="DIR", help="dataset folder (default: the one in the checkpoint's config)"
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="default auto")
    p.add_argument("--batch-size", type=int, metavar="N", help="feature-extraction batch size")

    _add_study_parser(sub)

    p = sub.add_parser("config", help="show a resolved config as YAML")
    config_sub = p.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    show = config_sub.add_parser("show", help="print the resolved config (YAML)")
    _add_config_options(show)

    p = sub.add_parser("data", help="prepare a run's data ahead of training")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    prepare = data_sub.add_parser(
        "prepare",
        help="download (CIFAR) or decode into the cache (image folders) the run's train and test sets",
        description="Load the training and test sets of the resolved config once, as a run would: CIFAR "
        "is downloaded when missing, an image folder is decoded by data_workers processes into its "
        "cache (e.g. on a CPU node before a GPU job). Prints what each split holds.",
    )
    _add_config_options(prepare)
    return parser


def _add_study_parser(sub: Any) -> None:
    """``dystress study run|list|export``: the study's runs (:mod:`dystress.study.runner`) and their
    shipped bundles (:mod:`dystress.study.shipped`)."""
    from dystress.study.ablations import ABLATIONS, PROFILE_NAMES  # light: no papermill, no torch

    p = sub.add_parser(
        "study",
        help="run the ablation study, or list its runs",
        description="Each point of the profile's plan runs as a papermill execution of the run notebook, "
        "into a folder named by its configuration and the code version.",
    )
    study_sub = p.add_subparsers(dest="study_command", required=True, metavar="ACTION")
    actions = (
        ("run", "run what is missing"),
        ("list", "list the runs and their status"),
        (
            "export",
            "write the compact bundles of the complete runs under results/<profile>/ (shipped results)",
        ),
    )
    for name, help_text in actions:
        q = study_sub.add_parser(name, help=help_text)
        q.add_argument(
            "--profile", default=None, choices=PROFILE_NAMES, help="default: $DYSTRESS_PROFILE or quick"
        )
        q.add_argument("--runs", default=None, help="runs folder (default: $DYSTRESS_RUNS or <repo>/runs)")
        q.add_argument(
            "--parallel",
            type=int,
            default=None,
            metavar="N",
            help="runs at once, each with its share of the CPU cores as threads; list and export find the "
            "runs made so (default: $DYSTRESS_PARALLEL, else 1)",
        )
        if name == "export":
            q.add_argument("--out", default=None, help="bundle folder (default: results/<profile>)")
            q.add_argument(
                "--merge",
                nargs="+",
                metavar="DIR",
                default=None,
                help="instead: merge these exports (made on several machines or calls, one code version)",
            )
        if name == "run":
            q.add_argument("--retry-failed", action="store_true", help="run failed runs again")
            q.add_argument("--only", nargs="+", choices=sorted(ABLATIONS), help="only these ablations")
            q.add_argument(
                "--points",
                nargs="+",
                metavar="ID",
                help="only the points whose id starts with one of these (e.g. 'fixed_tau/0.2/'; study list "
                "shows the ids)",
            )
            q.add_argument(
                "--engine",
                choices=("notebook", "cli"),
                default="notebook",
                help="notebook: each run is the notebook template executed by papermill (default); cli: "
                "`dystress pretrain` alone, for a machine without the book's tools (e.g. a GPU node)",
            )
            q.add_argument(
                "--template", default=None, help="notebook template (default: notebooks/pretrain_run.ipynb)"
            )


def resolve_config(profile: str | None, config_file: str | None, overrides: Sequence[str]) -> PretrainConfig:
    """Profile (default ``quick`` without a file; the dataclass defaults with a file and no profile),
    then the file's fields, then the ``key=value`` overrides; ``$DYSTRESS_DATA`` is the data root
    unless the file or an override sets one."""
    if profile is None and config_file is None:
        profile = DEFAULT_PROFILE
    config = get_profile(profile) if profile is not None else PretrainConfig()
    data: dict = {}
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise _UserError(f"config file {path} does not exist")
        import yaml

        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError:
            raise _UserError(f"config file {path} is not text (UTF-8 YAML or JSON)") from None
        except yaml.YAMLError as err:
            raise _UserError(f"config file {path} is not valid YAML/JSON: {yaml_problem(err)}") from None
        if not isinstance(data, dict):
            raise _UserError(f"config file {path} must hold a mapping of config fields")
        config = config.updated(data)
    sets_root = "data_root" in data or any(
        isinstance(o, str) and o.split("=", 1)[0].strip() == "data_root" for o in overrides
    )
    if os.environ.get("DYSTRESS_DATA") and not sets_root:
        config = config.updated({"data_root": os.environ["DYSTRESS_DATA"]})
    return config.with_overrides(list(overrides))


def _require_folder(path: Path) -> None:
    """Before any work: ``path`` can be a folder, i.e. it and its nearest existing ancestor are not
    files (raises ``NotADirectoryError`` naming the file in the way)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            if not candidate.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(candidate))
            return


def _require_file_path(path: Path, what: str) -> None:
    """Before any work: ``path`` can be written as a file (not a folder; its folder can be made)."""
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"{what} names a folder", str(path))
    _require_folder(path.parent)


def default_run_dir(config: PretrainConfig) -> Path:
    """``$DYSTRESS_RUNS`` (else ``runs``, in the current folder) ``/<profile>/<run folder name>``: the
    folder the study would give the same configuration under the same code
    (:func:`dystress.provenance.run_folder_name`)."""
    return Path(os.environ.get("DYSTRESS_RUNS") or "runs") / config.profile / run_folder_name(config)


def _is_rank_zero() -> bool:
    """Whether this process is rank 0 of its job (or the only process): ``$RANK`` as torchrun sets it."""
    return os.environ.get("RANK", "0") in ("", "0")


def _note_older_runs(config: PretrainConfig, run_dir: Path, given: str | None) -> None:
    """When the default run folder is new, name the folders of the same configuration made by other
    code (their names differ in the hash), which this command will not resume."""
    if given or run_dir.exists() or not run_dir.parent.is_dir():
        return
    slug = run_dir.name.rsplit("-", 1)[0]
    older = sorted(p.name for p in run_dir.parent.glob(f"{slug}-*") if (p / "config.json").exists())
    if older:
        print(
            f"dystress pretrain: starting {run_dir.name}; runs of this configuration under other code are "
            f"kept in {', '.join(older)} (pass --run-dir to continue one of them)",
            file=sys.stderr,
        )


def _pretrain(args: argparse.Namespace) -> int:
    """``dystress pretrain``: train (or resume) under the run folder's lock."""
    config = resolve_config(args.profile, args.config, args.overrides)
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(config)
    _require_folder(run_dir)
    from dystress.train import TrainingDiverged, pretrain

    final = run_dir / "final_metrics.json"
    finished = final.stat().st_mtime if final.exists() else None
    # One writer per run folder: rank 0 of a torchrun job holds the lock for every rank of it.
    # (the study's runner, which locks a run before it starts this command for it, counts as this one)
    lock = (
        run_folder_lock_or_parents(run_dir, wait=args.wait) if _is_rank_zero() else contextlib.nullcontext()
    )
    _note_older_runs(config, run_dir, args.run_dir)
    try:
        with lock:
            metrics = pretrain(config, run_dir, progress=not args.no_progress)
    except TrainingDiverged as err:
        print(f"dystress pretrain: {err}", file=sys.stderr)
        return EXIT_DIVERGED
    except KeyboardInterrupt:
        print(
            f"\ndystress pretrain: interrupted; the same command resumes {run_dir} from its last "
            "checkpoint (checkpoints/last.pt, written every checkpoint_every epochs)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    if finished is not None:
        import datetime

        when = datetime.datetime.fromtimestamp(finished).isoformat(" ", "minutes")
        print(
            f"dystress pretrain: {run_dir} was already complete (finished {when}): its metrics are shown "
            "and nothing was trained; use another --run-dir to train again",
            file=sys.stderr,
        )
    if metrics:
        print(f"{run_dir}: kNN top-1 {metrics['knn_top1']:.2f} %")
    return 0


def _study(args: argparse.Namespace) -> int:
    """``dystress study run|list|export``."""
    from dystress.provenance import code_version
    from dystress.study.runner import check_parallel, load_results, older_results, run_study

    _require_folder(Path(args.runs) if args.runs else runs_root())
    if args.study_command == "run":
        report = run_study(
            args.profile,
            args.runs,
            args.template,
            args.retry_failed,
            args.only,
            parallel=args.parallel,
            points=args.points,
            engine=args.engine,
        )
        return EXIT_DIVERGED if report.by_status("failed") or report.by_status("invalid") else 0
    if args.study_command == "export":
        from dystress.study.notebook import default_profile
        from dystress.study.shipped import export_results, merge_exports

        profile = args.profile or default_profile()
        parallel = None if args.parallel is None else check_parallel(args.parallel, sys.stderr)
        if args.out:
            _require_folder(Path(args.out))
        if args.merge:
            folder = merge_exports(profile, args.merge, args.out)
            print(
                f"dystress study export: {len(args.merge)} exports of profile {profile} merged into {folder}"
            )
            return 0
        folder = export_results(profile, args.runs, args.out, parallel)
        print(f"dystress study export: the complete runs of profile {profile} are in {folder}")
        return 0
    parallel = None if args.parallel is None else check_parallel(args.parallel, sys.stderr)
    results = load_results(args.profile, args.runs, parallel)
    print(f"code version {code_version()} (run folders are named by the config and this version)")
    seen: set[str] = set()
    for r in results:
        shared = " (shared)" if r.key in seen else ""
        seen.add(r.key)
        older = older_results(r) if r.status == "missing" else []
        note = f" (results of other code: {', '.join(older)})" if older else ""
        print(f"{r.status:<11} {r.point.id:<40} {r.run_dir}{shared}{note}")
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.command == "pretrain":
        return _pretrain(args)
    if args.command == "evaluate":
        from dystress.evaluate import evaluate_checkpoint

        if args.batch_size is not None and args.batch_size < 1:
            raise _UserError(f"--batch-size must be an integer >= 1, got {args.batch_size}")
        if args.out is not None:
            _require_file_path(Path(args.out), "--out")
        metrics = evaluate_checkpoint(
            args.checkpoint,  # a checkpoint file or a run folder
            data_root=args.data_root,
            out=args.out,
            device=args.device,
            batch_size=args.batch_size,
        )
        print(json.dumps(metrics, indent=2, sort_keys=True))
        return 0
    if args.command == "study":
        return _study(args)
    if args.command == "data":
        from dystress.data.imagefolder import default_cache_dir
        from dystress.runtime import load_data

        config = resolve_config(args.profile, args.config, args.overrides)
        data = load_data(config)
        for split, ds in (("train", data.train), ("test", data.test)):
            shape = "x".join(str(d) for d in ds.images.shape[1:])
            size_gb = ds.images.numel() / 1e9
            print(
                f"{split}: {len(ds):,} images {shape} uint8 ({size_gb:.2f} GB), "
                f"{ds.num_classes} classes ({config.dataset})"
            )
        if config.dataset == "imagefolder":
            print(f"cache: {default_cache_dir(config.data_root)}")
        return 0
    if args.command == "config":
        config = resolve_config(args.profile, args.config, args.overrides)
        sys.stdout.write(config.to_yaml())
        return 0
    raise AssertionError(args.command)  # argparse guarantees a known command


def _refusal_line(err: OSError) -> str:
    """One line for a refused file operation: the path, the system's words and what to do."""
    path = f"{err.filename} -> {err.filename2}" if err.filename2 else str(err.filename)
    hint = _OS_HINTS.get(err.errno or 0, "check that path")
    return f"{path}: {err.strerror or err}; {hint}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dystress`` command; returns the exit status (see the module docstring)."""
    from dystress.checkpoint import CheckpointError

    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    show = os.environ.get("DYSTRESS_TRACEBACK")
    where = " (DYSTRESS_TRACEBACK=1 shows where)"
    try:
        return _run(args)
    except KeyboardInterrupt:
        print(f"\ndystress {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except RunFolderBusy as err:
        print(f"dystress {args.command}: error: {err}", file=sys.stderr)
        return EXIT_BUSY
    except (_UserError, CheckpointError, ValueError, FileNotFoundError) as err:
        # Bad input is reported in one line; a ValueError from deep inside a run would be hidden the
        # same way, so the full traceback stays one variable away.
        if show:
            raise
        print(f"dystress {args.command}: error: {err}{where}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as err:
        if show or err.filename is None:  # no file named: not a refusal we can explain, show it all
            raise
        print(f"dystress {args.command}: error: {_refusal_line(err)}{where}", file=sys.stderr)
        return EXIT_REFUSED


if __name__ == "__main__":
    sys.exit(main())
