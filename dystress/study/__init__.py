"""The study: the ablation plan, the runs that execute it and the book's tables, findings and figures.

``import dystress`` does not import it, and the code version of :mod:`dystress.provenance` leaves it
out: the run notebook imports it (:func:`prepare_run`, the plots), but study code reaches a run only
through the run's configuration, which the run folder's name hashes. Modules:

- :mod:`~dystress.study.ablations`: the points of every ablation and each profile's plan;
- :mod:`~dystress.study.notebook`: the run notebook's parameters, a point's config and run folder;
- :mod:`~dystress.study.runner`: runs the plan with papermill, reads the runs on disk;
- :mod:`~dystress.study.progress`: the progress lines while a run executes;
- :mod:`~dystress.study.results`, :mod:`~dystress.study.findings`, :mod:`~dystress.study.plots`: the
  book's tables and analyses, its generated sentences, its figures (imported on use: pandas,
  matplotlib).
"""

from dystress.study.ablations import ABLATIONS, PROFILE_NAMES, Point, plan
from dystress.study.notebook import (
    build_config,
    data_root,
    default_profile,
    notebook_parameters,
    prepare_run,
)
from dystress.study.runner import (
    LOCAL_PROFILES,
    RunResult,
    StudyReport,
    ensure_results,
    load_results,
    run_point,
    run_study,
)

__all__ = [
    "ABLATIONS",
    "LOCAL_PROFILES",
    "PROFILE_NAMES",
    "Point",
    "RunResult",
    "StudyReport",
    "build_config",
    "data_root",
    "default_profile",
    "ensure_results",
    "load_results",
    "notebook_parameters",
    "plan",
    "prepare_run",
    "run_point",
    "run_study",
]


#: Names ``dystress.study`` held before it became a package (issue 12), and where they live now.
_MOVED = {
    **{
        name: f"dystress.provenance.{name}"
        for name in ("code_version", "runs_root", "repo_root", "template_path")
    },
    "run_key": "dystress.provenance.run_folder_name",
    "TEMPERATURE_PARAMETERS": "dystress.temperature.TEMPERATURE_PARAMETER_NAMES",
    "main": "the command line: dystress study run|list (dystress.cli.main)",
}


def __getattr__(name: str) -> object:
    """A clear error for a name that moved out of this package."""
    if name in _MOVED:
        raise ImportError(f"dystress.study.{name} moved: use {_MOVED[name]}")
    raise AttributeError(f"module 'dystress.study' has no attribute {name!r}")
