"""Checkpoints: weights-only round trips, RNG states, and refusal of unusable files."""

from __future__ import annotations

import pickle
import random
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
    restore_rng_state,
    save_checkpoint,
)
from dystress.config import get_profile
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
