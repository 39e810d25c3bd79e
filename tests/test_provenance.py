"""Run identity (dystress.provenance): run ids, the modules the code version counts, the code and
analysis versions, and the one naming scheme of run folders."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from dystress import provenance
from dystress.cli import default_run_dir
from dystress.config import PROFILES, get_profile
from dystress.study import ablations
from dystress.study.notebook import build_config, prepare_run

#: The modules a training process can import, which the code version hashes. A change here means
#: that the code version follows other files: update the list, and expect the study's runs to run
#: again (every run folder gets a new name).
COUNTED = [
    "dystress",
    "dystress._checks",
    "dystress.checkpoint",
    "dystress.config",
    "dystress.cpu_kernels",
    "dystress.data",
    "dystress.data.augment",
    "dystress.data.datasets",
    "dystress.data.decoded",
    "dystress.data.image_dataset",
    "dystress.data.imagefolder",
    "dystress.data.loader",
    "dystress.data.longtail",
    "dystress.data.transforms",
    "dystress.distributed",
    "dystress.evaluate",
    "dystress.io",
    "dystress.losses",
    "dystress.losses._logits",
    "dystress.losses.dcl",
    "dystress.losses.free",
    "dystress.losses.functional",
    "dystress.losses.infonce",
    "dystress.losses.isogclr",
    "dystress.losses.macl",
    "dystress.losses.queue_infonce",
    "dystress.metrics",
    "dystress.metrics._neighbours",
    "dystress.metrics._validation",
    "dystress.metrics.features",
    "dystress.metrics.geometry",
    "dystress.metrics.knn",
    "dystress.metrics.linear_probe",
    "dystress.metrics.similarity",
    "dystress.metrics.structure",
    "dystress.models",
    "dystress.monitor",
    "dystress.optim",
    "dystress.process_group",
    "dystress.provenance",
    "dystress.regime",
    "dystress.runtime",
    "dystress.temperature",
    "dystress.train",
]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DYSTRESS_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("DYSTRESS_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(provenance, "code_version", lambda template=None: "test-code")
    return tmp_path / "runs"


# ---------------------------------------------------------------------------------------------- modules
def test_the_counted_modules_are_the_training_import_closure() -> None:
    counted = provenance.counted_modules()
    assert counted == COUNTED, (
        "the code version now counts other modules: update COUNTED in this test, and expect the "
        "study's runs to run again (their folders are named by the code version)"
    )
    assert all(not m.startswith(("dystress.study", "dystress.cli")) for m in counted)
    assert not any(m.startswith("dystress.study") for m in provenance.import_closure(["dystress.train"]))


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "dystress" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "dystress"


def _template(path: Path, *cells: str) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# words")])
    nb.cells += [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, path)
    return path


FAKE = {
    "__init__.py": "from dystress import a\n",
    "a.py": "def f():\n    from .sub import b  # inside a function\n    return b\n",
    "sub/__init__.py": "",
    "sub/b.py": "import dystress.c as c\n",
    "c.py": "X = 1\n",
    "d.py": "from . import e\n",
    "e.py": "",
    "unused.py": "",
    "cli.py": "",
    "study/__init__.py": "from dystress.study import x\n",
    "study/x.py": "import dystress.unused\n",
    "train.py": "from dystress.sub import b\n\ndef pretrain():\n    '''Doc.'''\n    return b\n",
}


def test_closure_follows_every_import_a_new_module_cannot_escape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = _package(tmp_path, FAKE)
    monkeypatch.setattr(provenance, "_PACKAGE_DIR", package)
    template = _template(tmp_path / "t.ipynb", "from dystress.study import x\nfrom dystress import d")
    assert provenance.counted_modules(template) == [
        "dystress",
        "dystress.a",
        "dystress.c",
        "dystress.d",
        "dystress.e",
        "dystress.sub",
        "dystress.sub.b",
        "dystress.train",
    ]
    v1 = provenance.code_version(template)
    (package / "train.py").write_text(FAKE["train.py"].replace("'''Doc.'''", "# a note"))
    (package / "study" / "x.py").write_text("import dystress.unused\nY = 2\n")
    (package / "unused.py").write_text("Z = 3\n")
    assert provenance.code_version(template) == v1  # documentation, the study, an unused module
    (package / "c.py").write_text("X = 2\n")
    assert provenance.code_version(template) != v1  # a module reached by a lazy import of a parent
    (package / "train.py").write_text("import dystress.cli\n")
    with pytest.raises(RuntimeError, match=r"training code imports \['dystress.cli'\]"):
        provenance.counted_modules(template)


def test_code_version_follows_the_template_code_cells(tmp_path: Path) -> None:
    template = _template(tmp_path / "t.ipynb", "from dystress.train import pretrain")
    v1 = provenance.code_version(template)
    nb = nbformat.read(template, as_version=4)
    nb.cells[0].source += "\nmore words"
    nbformat.write(nb, template)
    assert provenance.code_version(template) == v1
    nb.cells[-1].source += "\nprint(1)"
    nbformat.write(nb, template)
    assert provenance.code_version(template) != v1


# ---------------------------------------------------------------------------------------------- identity
def _expected_run_id(identity: dict) -> str:
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


@pytest.mark.parametrize("profile", list(ablations.PROFILE_NAMES))
def test_run_id_is_the_hash_of_the_identity_for_every_point(env: Path, profile: str) -> None:
    for point in ablations.plan(profile):
        config = build_config(profile, point.parameters)
        assert provenance.run_id(config) == config.run_id() == _expected_run_id(config.identity())
    for name in PROFILES:
        config = get_profile(name)
        assert provenance.run_id(config) == _expected_run_id(config.identity())


def test_run_folder_name_is_a_slug_and_a_hash_of_run_id_and_code(env: Path) -> None:
    config = build_config("smoke", {"tau_min": 0.1, "tau_max": 0.2})
    digest = hashlib.sha256(f"{config.run_id()}:c1".encode()).hexdigest()[:12]
    assert provenance.run_folder_name(config, "c1") == f"cosine_tau_max0.2_tau_min0.1_s0-{digest}"
    assert provenance.run_folder_name(config) == provenance.run_folder_name(config, "test-code")
    lt = build_config("quick", {"dataset": "cifar10_lt", "temperature": "constant", "tau": 0.2, "epochs": 9})
    assert provenance.run_folder_name(lt, "c").startswith("cifar10_lt_constant_tau0.2_e9_s0-")
    untrained = build_config("quick", {"epochs": 0, "seed": 2})
    assert provenance.run_folder_name(untrained, "c").startswith("random_init_s2-")


def test_pretrain_and_the_study_name_run_folders_alike(env: Path) -> None:
    config, run_dir = prepare_run({"profile": "smoke", "tau_max": 0.3, "seed": 4})
    assert default_run_dir(config) == env / "smoke" / run_dir.name
    assert run_dir == env.resolve() / "smoke" / provenance.run_folder_name(config)


def test_analysis_version_follows_its_constant(monkeypatch: pytest.MonkeyPatch) -> None:
    v1 = provenance.analysis_version()
    assert len(v1) == 12 and int(v1, 16) >= 0 and provenance.analysis_version() == v1
    monkeypatch.setattr(provenance, "ANALYSIS_VERSION", provenance.ANALYSIS_VERSION + 1)
    assert provenance.analysis_version() != v1


def test_import_dystress_does_not_import_the_study() -> None:
    code = (
        "import sys, dystress\n"
        "print(sorted(m for m in sys.modules if m.startswith(('dystress.study', 'papermill'))))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
