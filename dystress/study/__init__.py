"""The study: the ablation plan, the runs that execute it and the book's tables, findings and figures.

Never imported by a training process (``import dystress`` does not import it, and the code version
of :mod:`dystress.provenance` leaves it out). Modules:

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
