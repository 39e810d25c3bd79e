"""Write the run notebook template ``notebooks/pretrain_run.ipynb`` (run after changing it here).

    python notebooks/_make_notebooks.py

The parameters cell lists every notebook parameter of :func:`dystress.study.notebook_parameters`
(``None`` = the profile's value), so ``papermill notebooks/pretrain_run.ipynb out.ipynb -p tau_min 0.05
-p tau_max 0.3`` is a complete experiment. The committed ``.ipynb`` is what papermill and the study
run; ``tests/test_notebooks.py`` checks that it matches this script.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

INTRO = """\
# One pretraining run

A complete experiment: pretrain with the configuration below, evaluate it, and plot its curves.
Run it with papermill, e.g.

    papermill notebooks/pretrain_run.ipynb out.ipynb -p tau_min 0.05 -p tau_max 0.3

Every parameter left at `None` takes the value of the chosen `profile` (`smoke`, `quick`, `paper`, or
`imagenet100` with `-p data_root /path/to/imagenet100`; see `dystress.config`). Temperature
parameters (`tau`, `tau_min`, `tau_max`, `offset`, `scale`, ...) go to the temperature function named
by `temperature` (another function than the profile's starts from its own defaults). Lists and
mappings are YAML: `-y 'snapshot_epochs: [0, 5]'` or `-p snapshot_epochs '[0, 5]'`. The run folder
(default `$DYSTRESS_RUNS/<profile>/<slug>-<hash>`, named by the configuration and the code version)
receives the config, the per-epoch records, the feature snapshots and the final metrics; a complete run
is not trained again, an interrupted one resumes from its last checkpoint."""

GUARD = """\
# Names that exist before the parameters: whatever is new after the next cell is a parameter.
_names_before_parameters = set(globals())"""

SETUP = """\
_parameters = {
    k: v for k, v in globals().items() if k not in _names_before_parameters and not k.startswith("_")
}

from dystress.study import plots, prepare_run  # noqa: E402

# Unknown parameters or invalid values raise ValueError here, before any work.
config, run_dir = prepare_run(_parameters)
print(f"profile {_parameters.get('profile')}, run folder {run_dir}")
print(config.to_yaml())"""

TRAIN = """\
from dystress.train import pretrain  # noqa: E402

final_metrics = pretrain(config, run_dir, progress=progress)"""

RESULTS = """\
plots.metrics_table(final_metrics)"""

CURVES = """\
from dystress.io import read_jsonl  # noqa: E402

records = read_jsonl(run_dir / "records.jsonl")
plots.run_curves(records, title=plots.config_label(config));"""

SIMILARITIES = """\
snapshots = sorted((run_dir / "snapshots").glob("epoch_*.pt"))
if snapshots:
    plots.snapshot_similarities(snapshots[-1]);
else:
    print("no feature snapshot in this run (snapshot_epochs is empty)")"""


def _parameters_source() -> str:
    from dystress.study import notebook_parameters

    lines = [
        "# Parameters (papermill injects its values after this cell). None = the profile's value.",
    ]
    for name, default in notebook_parameters().items():
        lines.append(f"{name} = {default!r}")
    return "\n".join(lines)


def pretrain_run() -> nbformat.NotebookNode:
    """The run notebook template."""
    params = new_code_cell(_parameters_source(), metadata={"tags": ["parameters"]})
    cells = [
        new_markdown_cell(INTRO),
        new_code_cell(GUARD),
        params,
        new_code_cell(SETUP),
        new_markdown_cell("## Pretraining"),
        new_code_cell(TRAIN),
        new_markdown_cell("## Final metrics\n\nEvaluated on the backbone of the last epoch (no selection)."),
        new_code_cell(RESULTS),
        new_markdown_cell(
            "## Curves\n\nPer-epoch records: loss, the mean temperature of positives and negatives, the "
            "monitor kNN accuracy, uniformity, tolerance and alignment."
        ),
        new_code_cell(CURVES),
        new_markdown_cell(
            "## Similarity distributions\n\nCosine similarities of true positives (two views of one image), "
            "true negatives (different classes) and false negatives (same class, other image) on the monitor "
            "subset at the last snapshot, with their earth mover's distances."
        ),
        new_code_cell(SIMILARITIES),
    ]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"
    return nb


NOTEBOOKS = {"pretrain_run.ipynb": pretrain_run}


def main(argv: list[str]) -> int:
    """Write every notebook (``--check``: exit 1 if a committed one differs instead)."""
    check = "--check" in argv
    stale = []
    for name, make in NOTEBOOKS.items():
        text = nbformat.writes(make()) + "\n"
        path = HERE / name
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"out of date: {stale}; run python notebooks/_make_notebooks.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
