"""What the run notebook and the study share: the notebook's parameters, a point's configuration and
its run folder.

A point's configuration is its profile (:func:`dystress.config.get_profile`) with its notebook
parameters applied through :meth:`PretrainConfig.with_parameters` (:func:`build_config`); its run
lives in ``<runs_root>/<profile>/<run_folder_name>/`` (:mod:`dystress.provenance`), so two
ablations that ask for the same configuration share one run.

Environment: ``DYSTRESS_PROFILE`` (default ``quick``), ``DYSTRESS_RUNS`` (default ``<repo>/runs``),
``DYSTRESS_DATA`` (default ``<repo>/data``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dystress import provenance
from dystress.study.ablations import PROFILE_NAMES

if TYPE_CHECKING:
    from dystress.config import PretrainConfig

__all__ = [
    "RUN_PARAMETERS",
    "build_config",
    "check_parameter_names",
    "data_root",
    "default_profile",
    "notebook_parameters",
    "prepare_run",
]

#: Notebook parameters that are not config fields.
RUN_PARAMETERS = ("profile", "run_dir", "progress")


def default_profile() -> str:
    """``$DYSTRESS_PROFILE`` or ``quick``; raises ``ValueError`` for an unknown name."""
    name = os.environ.get("DYSTRESS_PROFILE", "") or "quick"
    if name not in PROFILE_NAMES:
        raise ValueError(f"DYSTRESS_PROFILE must be one of {list(PROFILE_NAMES)}, got {name!r}")
    return name


def data_root() -> Path:
    """``$DYSTRESS_DATA`` or ``<repo>/data``."""
    return Path(os.environ.get("DYSTRESS_DATA", "") or provenance.repo_root() / "data").resolve()


def notebook_parameters() -> dict[str, Any]:
    """Every parameter of the run notebook with its default (``None``: the profile's value).

    ``profile`` picks the starting configuration, ``run_dir`` the folder (default: the run's folder
    under :func:`~dystress.provenance.runs_root`), ``progress`` the in-notebook progress bar; then
    every :class:`~dystress.config.PretrainConfig` field but ``profile`` and every temperature
    parameter name (:data:`dystress.temperature.TEMPERATURE_PARAMETER_NAMES`).
    """
    from dystress.config import PretrainConfig
    from dystress.temperature import TEMPERATURE_PARAMETER_NAMES

    params: dict[str, Any] = {"profile": "quick", "run_dir": None, "progress": True}
    for f in dataclasses.fields(PretrainConfig):
        if f.name != "profile":
            params[f.name] = None
    for name in TEMPERATURE_PARAMETER_NAMES:
        params[name] = None
    return params


def check_parameter_names(names: Iterable[str]) -> None:
    """Raise ``ValueError`` listing any name that is not a notebook parameter."""
    known = notebook_parameters()
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(f"unknown parameters {unknown}; known parameters: {sorted(known)}")


def build_config(profile: str, params: Mapping[str, Any]) -> PretrainConfig:
    """The :class:`~dystress.config.PretrainConfig` of ``profile`` with notebook ``params`` applied.

    ``None`` values keep the profile's value; the rest goes through
    :meth:`PretrainConfig.with_parameters` (temperature parameters such as ``tau_min`` go into
    ``temperature_params``, text for a list or mapping is YAML). The data root is ``$DYSTRESS_DATA``
    unless ``data_root`` is given (an image-folder profile such as ``imagenet100``, which the study
    does not run, needs it). Raises ``ValueError`` naming the bad parameter or value.
    """
    from dystress.config import PROFILES, get_profile

    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {list(PROFILES)}, got {profile!r}")
    check_parameter_names(params)
    base = get_profile(profile)
    if base.dataset == "imagefolder" and params.get("data_root") is None:
        raise ValueError(
            f"profile {profile} trains on an image folder: give its path as data_root "
            "(papermill: -p data_root /path/with/train/and/val)"
        )
    given = {k: v for k, v in params.items() if v is not None and k not in RUN_PARAMETERS}
    return base.with_parameters({"data_root": str(data_root()), **given})


def prepare_run(params: Mapping[str, Any]) -> tuple[PretrainConfig, Path]:
    """What the run notebook's first cell does: validate ``params``, build the config, pick the folder.

    Returns ``(config, run_dir)``; ``run_dir`` is ``params["run_dir"]`` or the run's folder under
    :func:`~dystress.provenance.runs_root`. The process then holds the folder's lock for its life
    (:func:`dystress.runlock.hold_run_folder`; the study's runner holds it for the notebook it runs),
    so a second writer of the folder stops at once. Raises ``ValueError`` for unknown parameters or
    invalid values, :class:`~dystress.runlock.RunFolderBusy` for a folder another process writes.
    """
    from dystress.runlock import hold_run_folder

    check_parameter_names(params)
    profile = params.get("profile") or "quick"
    config = build_config(profile, params)
    run_dir = params.get("run_dir")
    path = Path(run_dir) if run_dir else provenance.runs_root() / profile / provenance.run_folder_name(config)
    hold_run_folder(path)
    return config, path.resolve()
