"""The run notebook template: in sync with its generator, parameters, validation in the first cell."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from dystress import provenance, study

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "notebooks" / "pretrain_run.ipynb"


def _generator():
    path = REPO / "notebooks" / "_make_notebooks.py"
    spec = importlib.util.spec_from_file_location("_make_notebooks", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def template() -> nbformat.NotebookNode:
    return nbformat.read(TEMPLATE, as_version=4)


def test_committed_template_matches_its_generator() -> None:
    assert _generator().main(["--check"]) == 0, "run python notebooks/_make_notebooks.py"


def test_template_has_python3_kernel_and_one_parameters_cell(template: nbformat.NotebookNode) -> None:
    nbformat.validate(template)
    assert template.metadata.kernelspec.name == "python3"
    tagged = [i for i, c in enumerate(template.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    namespace: dict = {}
    exec(template.cells[tagged[0]].source, namespace)  # noqa: S102 (our own template)
    namespace.pop("__builtins__")
    assert namespace == study.notebook_parameters()


def _run_first_cells(template: nbformat.NotebookNode, injected: str) -> dict:
    """Execute the cells up to the setup cell in-process, with papermill's injection after the parameters."""
    tagged = next(i for i, c in enumerate(template.cells) if "parameters" in c.metadata.get("tags", []))
    code = [c.source for c in template.cells[: tagged + 1] if c.cell_type == "code"]
    setup = next(c.source for c in template.cells[tagged + 1 :] if c.cell_type == "code")
    namespace: dict = {}
    for source in [*code, injected, setup]:
        exec(source, namespace)  # noqa: S102 (our own template)
    return namespace


def test_first_cell_builds_config_and_run_folder(
    template: nbformat.NotebookNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DYSTRESS_RUNS", str(tmp_path))
    ns = _run_first_cells(template, 'profile = "smoke"\ntau_min = 0.05\ntau_max = 0.3\nseed = 3')
    config = ns["config"]
    assert config.temperature_params == {"tau_min": 0.05, "tau_max": 0.3} and config.seed == 3
    assert config.epochs == 2  # the smoke profile's value: unset parameters keep the profile
    assert ns["run_dir"] == tmp_path.resolve() / "smoke" / provenance.run_folder_name(config)


@pytest.mark.parametrize(
    ("injected", "match"),
    [
        ("tau_mni = 0.05", "unknown parameters \\['tau_mni'\\]"),
        ("learning_rate = 0.1\nepochz = 3", "unknown parameters \\['epochz', 'learning_rate'\\]"),
        ("tau_min = -1.0", "tau_min"),
        ("tau_min = 0.5\ntau_max = 0.2", "tau_max"),
        ('profile = "huge"', "profile must be one of"),
        ('temperature = "hot"', "unknown temperature function"),
        ("epochs = 2.5", "epochs"),
    ],
)
def test_first_cell_rejects_bad_parameters(
    template: nbformat.NotebookNode, injected: str, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        _run_first_cells(template, injected)


def test_papermill_fails_in_the_first_cell_on_unknown_parameter(tmp_path: Path) -> None:
    out = tmp_path / "out.ipynb"
    env_runs = tmp_path / "runs"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "papermill",
            str(TEMPLATE),
            str(out),
            "-p",
            "profile",
            "smoke",
            "-p",
            "tau_mni",
            "0.05",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "DYSTRESS_RUNS": str(env_runs)},
        timeout=300,
    )
    assert proc.returncode != 0
    nb = json.loads(out.read_text())
    assert nb["metadata"]["papermill"]["exception"] is True
    errors = [
        (i, o) for i, c in enumerate(nb["cells"]) for o in c.get("outputs", []) if o["output_type"] == "error"
    ]
    assert len(errors) == 1
    index, error = errors[0]
    cell = nb["cells"][index]
    assert "prepare_run" in "".join(cell["source"])  # the first cell after the parameters
    assert error["ename"] == "ValueError" and "tau_mni" in error["evalue"]
    assert not env_runs.exists()  # failed before any work
