"""Checkpoints: weights-only round trips, RNG states, and refusal of unusable files."""

from __future__ import annotations

import pickle
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dystress.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    load_into,
    restore_rng_state,
    save_checkpoint,
)
from dystress.config import get_profile
from dystress.io import DataFileError
from dystress.temperature import build_temperature


class _WithBuffer(nn.Module):
    """A loss-like module with state (like a MoCo queue)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("queue", torch.randn(5, 3))


def _setup(momentum: float = 0.9) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=momentum)
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(8, 4)).pow(2).sum().backward()
        opt.step()
    return model, opt


def _save(path: Path, config: dict, **kwargs: object) -> Path:
    model, opt = _setup()
    args = {
        "config": config,
        "epoch": 3,
        "step": 30,
        "model": model,
        "optimizer": opt,
        "loss": _WithBuffer(),
        "temperature": build_temperature("ts_schedule", tau_plus=1.0, tau_minus=0.1, period=400),
        "temperature_name": "ts_schedule",
    }
    args.update(kwargs)
    return save_checkpoint(path, **args)  # type: ignore[arg-type]


def test_round_trip(tmp_path: Path) -> None:
    config = get_profile("smoke").to_dict()
    model, opt = _setup()
    loss = _WithBuffer()
    temp = build_temperature("ts_schedule", tau_plus=1.0, tau_minus=0.1, period=400)
    temp.set_epoch(3)
    g = torch.Generator().manual_seed(7)
    path = save_checkpoint(
        tmp_path / "c" / "last.pt",
        config=config,
        epoch=3,
        step=30,
        model=model,
        optimizer=opt,
        loss=loss,
        temperature=temp,
        temperature_name="ts_schedule",
        generators={"augmentation": g},
        extra={"note": "x"},
    )
    assert not list(path.parent.glob("*.partial"))
    torch.load(path, weights_only=True)  # loadable without unpickling code
    state = load_checkpoint(path, config=config)
    assert state["format_version"] == FORMAT_VERSION
    assert (state["epoch"], state["step"], state["extra"]) == (3, 30, {"note": "x"})
    assert state["config"] == config
    assert state["temperature"] == {
        "name": "ts_schedule",
        "params": {"tau_plus": 1.0, "tau_minus": 0.1, "period": 400.0},
        "epoch": 3,
    }
    for k, v in model.state_dict().items():
        assert torch.equal(state["model"][k], v)
    assert torch.equal(state["loss"]["queue"], loss.queue)
    model2, opt2 = _setup(momentum=0.9)
    opt2.load_state_dict(state["optimizer"])
    for p, q in zip(opt.param_groups[0]["params"], opt2.param_groups[0]["params"], strict=True):
        assert torch.equal(opt.state[p]["momentum_buffer"], opt2.state[q]["momentum_buffer"])
    assert torch.equal(state["rng"]["generators"]["augmentation"], g.get_state())


def test_rng_states_restore_every_stream() -> None:
    g = torch.Generator().manual_seed(3)
    torch.manual_seed(1)
    np.random.seed(2)  # noqa: NPY002
    random.seed(3)
    np.random.standard_normal()  # leaves a cached gaussian in the legacy state  # noqa: NPY002
    random.gauss(0, 1)
    state = capture_rng_state({"g": g})
    expected = (
        torch.rand(4),
        np.random.rand(4),  # noqa: NPY002
        [random.random() for _ in range(4)],
        random.gauss(0, 1),
        torch.rand(3, generator=g),
    )
    torch.manual_seed(99)
    np.random.seed(99)  # noqa: NPY002
    random.seed(99)
    g.manual_seed(99)
    restore_rng_state(state, {"g": g})
    got = (
        torch.rand(4),
        np.random.rand(4),  # noqa: NPY002
        [random.random() for _ in range(4)],
        random.gauss(0, 1),
        torch.rand(3, generator=g),
    )
    assert torch.equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])
    assert got[2] == expected[2] and got[3] == expected[3]
    assert torch.equal(got[4], expected[4])
    with pytest.raises(KeyError, match="'other'"):
        restore_rng_state(state, {"other": torch.Generator()})


@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.5, 0.9, 0.999])
def test_truncated_file_is_refused(tmp_path: Path, fraction: float) -> None:
    path = _save(tmp_path / "last.pt", get_profile("smoke").to_dict())
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(CheckpointError, match=f"checkpoint {path} cannot be read"):
        load_checkpoint(path)


class _Foreign:
    pass


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda p: torch.save({"model": {"w": torch.zeros(2)}}, p), "is not a dystress checkpoint"),
        (lambda p: torch.save(torch.zeros(3), p), "is not a dystress checkpoint"),
        (lambda p: p.write_text("hello"), "cannot be read"),
        (lambda p: p.write_bytes(pickle.dumps(_Foreign(), protocol=2)), "cannot be read"),
        (lambda p: torch.save({"x": _Foreign()}, p), "cannot be read"),  # weights_only refuses code
    ],
)
def test_foreign_files_are_refused(tmp_path: Path, write, message: str) -> None:  # noqa: ANN001
    path = tmp_path / "foreign.pt"
    write(path)
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_other_format_version_and_missing_entries(tmp_path: Path) -> None:
    path = _save(tmp_path / "last.pt", get_profile("smoke").to_dict())
    payload = torch.load(path, weights_only=True)
    torch.save({**payload, "format_version": FORMAT_VERSION + 1}, path)
    with pytest.raises(CheckpointError, match=f"format version {FORMAT_VERSION + 1}"):
        load_checkpoint(path)
    torch.save({k: v for k, v in payload.items() if k != "optimizer"}, path)
    with pytest.raises(CheckpointError, match=r"lacks the entries \['optimizer'\]"):
        load_checkpoint(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_config_must_match(tmp_path: Path) -> None:
    config = get_profile("smoke")
    path = _save(tmp_path / "last.pt", config.to_dict())
    other = config.with_overrides(["lr=0.5", "seed=4"]).to_dict()
    with pytest.raises(
        CheckpointError,
        match=r"another config \(lr: checkpoint 0.015 vs run 0.5, seed: checkpoint 0 vs run 4\)",
    ):
        load_checkpoint(path, config=other)
    # fields that do not change the computation may differ
    moved = config.with_overrides(["data_root=/elsewhere", "num_threads=1"]).to_dict()
    assert load_checkpoint(path, config=moved)["epoch"] == 3


# ------------------------------------------------------------------------- partial files, fit to the model

_KILLED_WHILE_SAVING = """
import sys, time
import torch
from dystress.checkpoint import load_checkpoint, save_checkpoint
real_save = torch.save
def slow_save(obj, f):
    real_save(obj, f)
    f.flush()
    print("writing", flush=True)
    time.sleep(120)  # killed here: the partial file is complete but never renamed
torch.save = slow_save
state = load_checkpoint(sys.argv[1])
model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 2))
model.load_state_dict(state["model"])
save_checkpoint(sys.argv[1], config=state["config"], epoch=4, step=40, model=model,
                optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
"""


def _saving_child(path: Path) -> subprocess.Popen:
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WHILE_SAVING, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout.readline().strip() == "writing"
    return child


@pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")
def test_a_writer_killed_while_saving_leaves_nothing_after_the_next_load_or_save(tmp_path: Path) -> None:
    config = get_profile("smoke").to_dict()
    path = _save(tmp_path / "checkpoints" / "last.pt", config)
    child = _saving_child(path)
    live = sorted(path.parent.glob(".last.pt.*.partial"))
    assert len(live) == 1
    assert load_checkpoint(path)["epoch"] == 3  # a live writer's partial file is kept
    assert sorted(path.parent.glob(".last.pt.*.partial")) == live
    child.kill()  # SIGKILL while last.pt is being written
    child.wait()
    assert load_checkpoint(path, config=config)["epoch"] == 3  # the old checkpoint, whole
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # removed at this load
    child = _saving_child(path)
    child.kill()
    child.wait()
    _save(path, config, epoch=5)  # ... and at the next save
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]
    assert load_checkpoint(path)["epoch"] == 5


def test_load_into_names_the_first_entry_of_another_shape(tmp_path: Path) -> None:
    path = _save(tmp_path / "last.pt", get_profile("smoke").to_dict())
    state = load_checkpoint(path)
    torch.manual_seed(1)
    wider = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Linear(5, 2))
    before = {k: v.clone() for k, v in wider.state_dict().items()}
    message = (
        f"checkpoint {path} does not fit this model: entry '0.weight' has shape [3, 4] in the "
        "checkpoint, [5, 4] in the model"
    )
    with pytest.raises(CheckpointError) as caught:
        load_into(wider, state["model"], path, "model")
    assert str(caught.value) == message
    assert all(torch.equal(v, before[k]) for k, v in wider.state_dict().items())  # nothing copied
    model, opt = _setup()
    load_into(model, state["model"], path, "model")  # a fitting state loads
    assert all(torch.equal(v, state["model"][k]) for k, v in model.state_dict().items())
    load_into(opt, state["optimizer"], path, "optimizer")
    assert opt.state_dict()["param_groups"] == state["optimizer"]["param_groups"]


def test_load_into_names_missing_and_unknown_entries_and_other_optimizers(tmp_path: Path) -> None:
    path = _save(tmp_path / "last.pt", get_profile("smoke").to_dict())
    state = load_checkpoint(path)
    model, _ = _setup()
    partial = {k: v for k, v in state["model"].items() if k != "2.bias"}
    with pytest.raises(CheckpointError, match=r"does not fit this model: it lacks \['2.bias'\] \(1 missing"):
        load_into(model, partial, path, "model")
    extra = {**state["model"], "3.weight": torch.zeros(1)}
    with pytest.raises(
        CheckpointError, match=r"it has unknown entries \['3.weight'\] \(0 missing, 1 unknown"
    ):
        load_into(model, extra, path, "model")
    with pytest.raises(CheckpointError, match=f"checkpoint {path}: its model state is a int, not a dict"):
        load_into(model, 5, path, "model")
    other = torch.optim.SGD([*model.parameters(), torch.nn.Parameter(torch.zeros(2))], lr=0.1, momentum=0.9)
    with pytest.raises(
        CheckpointError, match=f"checkpoint {path} does not fit this optimizer: .*parameter group"
    ):
        load_into(other, state["optimizer"], path, "optimizer")


def test_checkpoint_error_is_a_data_file_error() -> None:
    assert issubclass(CheckpointError, DataFileError) and issubclass(CheckpointError, ValueError)
