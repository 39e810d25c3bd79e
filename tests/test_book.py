"""The smoke book, built end to end in a temporary copy of book/ and _config.yml (slow: minutes).

Checks what CI promises: the README's build command (``.venv/bin/jupyter-book build book/`` after
``make setup data``), with CI's ``-W -n --keep-going``, exits 0, every page and its figures exist and
are non-empty, the run notebooks are in the appendix, a second build with nothing changed runs no
experiment and executes no page, and a page that raises makes the build fail.

Needs CIFAR-10 under ``$DYSTRESS_DATA`` or ``<repo>/data`` (``make data``), or the offline copy in
``../shared/data`` (converted into the test's folder); skipped otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = (
    "intro",
    "temperature",
    "ablations",
    "budget",
    "uniformity_tolerance",
    "feature_structure",
    "reproduction",
    "paper_scale",
    "api",
    "appendix",
)
#: Figures each page must show (glued figures, placeholders included).
MIN_FIGURES = {
    "intro": 1,
    "temperature": 2,
    "ablations": 2,
    "uniformity_tolerance": 2,
    "feature_structure": 5,
    "budget": 5,
}
#: Pages whose numbers come from runs: each says what made them.
RESULT_PAGES = ("intro", "ablations", "uniformity_tolerance", "feature_structure", "reproduction")

pytestmark = [pytest.mark.book, pytest.mark.slow]


def _data_root(tmp: Path) -> Path:
    for candidate in (os.environ.get("DYSTRESS_DATA"), REPO / "data"):
        if candidate and (Path(candidate) / "cifar-10-batches-py" / "test_batch").is_file():
            return Path(candidate)
    maker = REPO.parent / "shared" / "data" / "make_cifar10.py"
    if not maker.is_file():
        pytest.skip("no CIFAR-10 copy: run `make data` or set DYSTRESS_DATA")
    subprocess.run([sys.executable, str(maker), str(tmp / "data")], check=True, capture_output=True)
    return tmp / "data"


def readme_build_command() -> list[str]:
    """The README's book command (``.venv/bin/jupyter-book build book/``), after its ``make setup
    data`` line, with ``.venv/bin`` the folder of this interpreter (the environment `make setup` makes)."""
    blocks = re.findall(r"\n\n((?:    .*\n)+)", (REPO / "README.md").read_text(encoding="utf-8"))
    block = next(b for b in blocks if "jupyter-book build" in b)
    lines = [line.strip() for line in block.splitlines()]
    assert lines == ["make setup data", ".venv/bin/jupyter-book build book/"], lines
    argv = shlex.split(lines[1])
    argv[0] = str(Path(sys.executable).with_name(Path(argv[0]).name))
    return argv


def test_readme_prerequisites_are_make_targets() -> None:
    readme_build_command()
    proc = subprocess.run(["make", "-n", "setup", "data"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def book(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("book")
    root = tmp / "project"
    root.mkdir()
    shutil.copy(REPO / "_config.yml", root / "_config.yml")
    shutil.copytree(REPO / "book", root / "book", ignore=shutil.ignore_patterns("*.ipynb", "no_runs.md"))
    env = {
        **os.environ,
        "DYSTRESS_PROFILE": "smoke",
        "DYSTRESS_RUNS": str(tmp / "runs"),
        "DYSTRESS_DATA": str(_data_root(tmp)),
    }
    command = readme_build_command()
    stale = root / "_build" / "html" / "appendix" / "runs" / "constant_tau0.1_s0-000000000000.html"
    stale.parent.mkdir(parents=True)
    stale.write_text("<html>a run of older code</html>")  # the build must remove it

    def build() -> subprocess.CompletedProcess:
        return subprocess.run(
            [*command, "-W", "-n", "--keep-going"],  # the README's command with CI's strictness
            capture_output=True,
            text=True,
            env=env,
            cwd=root,
            timeout=3600,
        )

    first = build()
    return {"root": root, "runs": tmp / "runs" / "smoke", "first": first, "build": build}


def _log(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def test_smoke_book_builds_every_page_with_its_figures(book: dict) -> None:
    assert book["first"].returncode == 0, _log(book["first"])[-5000:]
    html = book["root"] / "_build" / "html"
    for page in PAGES:
        path = html / f"{page}.html"
        assert path.is_file(), page
        text = path.read_text(encoding="utf-8")
        images = re.findall(r'<img[^>]+src="([^"]+\.png)"', text)
        assert len(images) >= MIN_FIGURES.get(page, 0), (page, images)
        for src in images:
            image = (path.parent / src).resolve()
            assert image.is_file() and image.stat().st_size > 1000, (page, src)
        assert "Traceback" not in text, page
        if page in RESULT_PAGES:
            assert "Made from:" in text and "profile smoke, code version" in text, page
        if page in ("intro", "ablations", "uniformity_tolerance"):  # generated findings render as a list
            shows = text[text.index('id="what-this-build-shows"') :]
            assert shows.index("<li>") < shows.index("</section>"), page
    runs = sorted(p for p in book["runs"].iterdir() if p.is_dir())
    assert len(runs) >= 4
    appendix = sorted((html / "appendix" / "runs").glob("*.html"))
    assert {p.stem for p in appendix} == {p.name for p in runs}
    for run in runs:
        assert json.loads((run / "run.json").read_text())["status"] == "complete"
        assert (run / "final_metrics.json").is_file() and (run / "run.ipynb").is_file()


def test_every_page_reads_offline_in_a_browser(book: dict) -> None:
    """Headless Chromium without network: every formula rendered (MathJax ships with the book), every
    image loaded, nothing wider than the page. CI installs Chromium (.ci/run); elsewhere the test is
    skipped without one."""
    from browser import check_pages, find_browser, problems

    if find_browser() is None:
        if os.environ.get("CI"):
            pytest.fail("no Chromium on a CI machine: .ci/run installs it (apt-get install chromium)")
        pytest.skip("no Chromium here (apt-get install chromium)")
    html = book["root"] / "_build" / "html"
    pages = [html / f"{page}.html" for page in PAGES]
    findings = check_pages(pages)
    assert not problems(findings), problems(findings)
    assert findings["temperature"]["maths"] > 5  # the page of formulas has them, rendered


def test_second_build_runs_nothing_and_a_raising_page_fails_the_build(book: dict) -> None:
    assert book["first"].returncode == 0
    stamps = {p: p.stat().st_mtime_ns for p in book["runs"].glob("*/run.json")}
    second = book["build"]()
    assert second.returncode == 0, _log(second)[-5000:]
    assert "0 to run" in _log(second)
    assert "Executing notebook" not in _log(second)  # no page executed again
    assert {p: p.stat().st_mtime_ns for p in book["runs"].glob("*/run.json")} == stamps

    book_dir = book["root"] / "book"
    (book_dir / "broken.md").write_text(
        (book_dir / "api.md").read_text().split("# API reference")[0]
        + "# Broken\n\n```{code-cell} ipython3\nraise RuntimeError('this page raises')\n```\n"
    )
    toc = (book_dir / "_toc.yml").read_text()
    (book_dir / "_toc.yml").write_text(toc.replace("  - file: api\n", "  - file: api\n  - file: broken\n"))
    third = book["build"]()
    assert third.returncode != 0
    assert "broken" in _log(third)  # the failing page is named; its traceback goes to the report
    report = book["root"] / "_build" / "html" / "reports" / "broken.err.log"
    assert "this page raises" in report.read_text()
