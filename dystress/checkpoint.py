"""Atomic, weights-only checkpoints of a pretraining run.

A checkpoint is one ``torch.save``-d dict written atomically (:func:`dystress.io.atomic_torch_save`)
and read back with ``torch.load(..., weights_only=True)`` only: it holds tensors and plain Python
values, nothing that unpickles code. Contents (format :data:`FORMAT_VERSION`)::

    format            "dystress-checkpoint"
    format_version    int
    config            the run's config dict
    epoch             completed epochs
    step              completed optimizer steps
    model             ContrastiveModel state_dict (backbone + projector)
    optimizer         optimizer state_dict
    loss              loss state_dict (e.g. a MoCo queue)
    temperature       {"name", "params", "epoch"} of the temperature function
    rng               every RNG state: torch CPU, CUDA (all devices), numpy, python, named generators
    extra             free-form plain data

A truncated or foreign file, an unknown format version, or a config that differs from the run's
(fields of ``PretrainConfig.identity()``) raises :class:`CheckpointError` naming the file, so a run
never starts from a wrong state; so does a state that does not fit the model it is loaded into
(:func:`load_into`: the first mismatching entry and both shapes). The partial file of a writer killed
while saving (``checkpoints/.last.pt.*.partial``) is removed at the next save or load of that file
(:func:`dystress.io.remove_orphan_partials`; a live writer's partial file is locked and kept).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dystress.config import identity_differences
from dystress.io import DataFileError, atomic_torch_save, remove_orphan_partials

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "CheckpointError",
    "capture_rng_state",
    "load_checkpoint",
    "load_into",
    "restore_rng_state",
    "save_checkpoint",
]

FORMAT = "dystress-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(DataFileError):
    """A checkpoint that cannot be used for this run (unreadable, foreign, another config, or a state
    that does not fit the model); a `DataFileError`, hence a `ValueError`."""


def capture_rng_state(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Every RNG state as tensors and plain values (weights-only loadable).

    Args:
        generators: extra named generators (augmentation, loader), stored by name.
    """
    version, mt_state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)  # noqa: NPY002
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "python": {
            "version": int(version),
            "state": torch.tensor(mt_state, dtype=torch.int64),
            "gauss": gauss,
        },
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }
    return state


def restore_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    """Inverse of :func:`capture_rng_state` (CUDA states only when CUDA is available here)."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])
    np_state = state["numpy"]
    np.random.set_state(  # noqa: NPY002 (the legacy global state is what we save)
        (
            np_state["name"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["gauss"],
        )
    )
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    for name, g in (generators or {}).items():
        if name not in state["generators"]:
            raise KeyError(f"checkpoint holds no state for generator {name!r}")
        g.set_state(state["generators"][name])


def _state_dict(obj: Any) -> dict[str, Any]:
    return obj.state_dict() if hasattr(obj, "state_dict") else {}


def save_checkpoint(
    path: str | Path,
    *,
    config: dict[str, Any],
    epoch: int,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss: torch.nn.Module | None = None,
    temperature: Any = None,
    temperature_name: str | None = None,
    generators: dict[str, torch.Generator] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically to ``path`` (see the module docstring for the contents)."""
    temp_state = None
    if temperature is not None:
        temp_state = {
            "name": temperature_name,
            "params": dict(temperature.params()),
            "epoch": int(getattr(temperature, "epoch", epoch)),
        }
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config,
        "epoch": int(epoch),
        "step": int(step),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "loss": _state_dict(loss) if loss is not None else {},
        "temperature": temp_state,
        "rng": capture_rng_state(generators),
        "extra": extra or {},
    }
    return atomic_torch_save(path, payload)


def load_checkpoint(
    path: str | Path,
    config: dict[str, Any] | None = None,
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` and check it.

    Args:
        path: the checkpoint file.
        config: when given, the run's config dict; every identity field must match the stored one.
        map_location: where tensors are loaded.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: unreadable/truncated, not a dystress checkpoint, another format version, or a
            different config (the message names the file and the differing fields).
    """
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(
            f"checkpoint {path} is a folder; a run's checkpoint is <run>/checkpoints/last.pt"
        )
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    remove_orphan_partials(path.parent, f"{path.name}.")  # left by a writer killed while saving
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, foreign pickle, ...: all mean "unusable"
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise CheckpointError(
            f"checkpoint {path} cannot be read (truncated or not a checkpoint): {first_line}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a dystress checkpoint (no format marker {FORMAT!r})")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {payload.get('format_version')!r}; "
            f"this code reads version {FORMAT_VERSION}"
        )
    missing = [k for k in ("config", "epoch", "step", "model", "optimizer", "rng") if k not in payload]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks the entries {missing}")
    if config is not None:
        try:
            diff = identity_differences(payload["config"], config)
        except ValueError as err:
            raise CheckpointError(f"checkpoint {path} holds no valid config: {err}") from None
        if diff:
            details = ", ".join(f"{k}: checkpoint {a!r} vs run {b!r}" for k, (a, b) in diff.items())
            raise CheckpointError(f"checkpoint {path} belongs to another config ({details})")
    return payload


def load_into(target: Any, state: Any, path: str | Path, what: str) -> None:
    """``target.load_state_dict(state)`` for a module or optimizer, refusing a state that does not fit.

    For a module, the keys and every tensor's shape are compared first, so nothing is copied when the
    first missing or unexpected key, or the first entry whose shape differs, is reported.

    Args:
        target: an ``nn.Module`` (strict load) or anything with ``load_state_dict`` (an optimizer).
        state: the checkpoint's entry for it (e.g. ``payload["model"]``).
        path: the checkpoint file, for the message.
        what: what ``state`` is ("model", "optimizer", "loss"), for the message.

    Raises:
        CheckpointError: naming the file, ``what`` and the first mismatch (key, both shapes).
    """
    if not isinstance(state, Mapping):
        raise CheckpointError(f"checkpoint {path}: its {what} state is a {type(state).__name__}, not a dict")
    if isinstance(target, torch.nn.Module):
        problem = _module_mismatch(target.state_dict(), state)
        if problem is not None:
            raise CheckpointError(f"checkpoint {path} does not fit this {what}: {problem}")
    try:
        target.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError) as err:
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise CheckpointError(f"checkpoint {path} does not fit this {what}: {first_line}") from None


def _module_mismatch(own: Mapping[str, Any], state: Mapping[str, Any]) -> str | None:
    """The first difference between a module's state dict ``own`` and a checkpoint's ``state``, or None."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = [f"it lacks {missing[:3]}"] if missing else []
        parts += [f"it has unknown entries {unexpected[:3]}"] if unexpected else []
        return " and ".join(parts) + f" ({len(missing)} missing, {len(unexpected)} unknown)"
    for key, value in own.items():
        stored = state[key]
        if isinstance(value, torch.Tensor) and not (
            isinstance(stored, torch.Tensor) and stored.shape == value.shape
        ):
            found = list(stored.shape) if isinstance(stored, torch.Tensor) else type(stored).__name__
            return f"entry {key!r} has shape {found} in the checkpoint, {list(value.shape)} in the model"
    return None
