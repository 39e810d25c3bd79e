"""The package installs what the design card names, and environment.yml mirrors pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_mirrors_pyproject() -> None:
    project = _pyproject()["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    listed = {req for req in pip_section if not req.startswith("-e")}
    assert listed == wanted
    assert "-e ." in pip_section


def test_design_card_packages_are_dependencies() -> None:
    names = {dep.split(">")[0].split("<")[0].split("=")[0] for dep in _pyproject()["project"]["dependencies"]}
    for package in (
        "torch",
        "torchvision",
        "jupyter-book",
        "papermill",
        "matplotlib",
        "seaborn",
        "umap-learn",
        "scikit-learn",
    ):
        assert package in names


def test_core_import_does_not_load_the_book_stack() -> None:
    code = (
        "import sys, dystress, dystress.io, dystress.data.transforms\n"
        "book_stack = ('papermill', 'umap', 'jupyter_book', 'matplotlib', 'seaborn')\n"
        "heavy = [m for m in book_stack if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
