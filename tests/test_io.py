"""Atomic writes leave either the old file or the complete new one, never a fragment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dystress.io import append_jsonl, atomic_torch_save, atomic_write, atomic_write_json, read_jsonl


def test_atomic_write_json_round_trip(tmp_path: Path) -> None:
    path = atomic_write_json(tmp_path / "sub" / "a.json", {"b": 1, "a": [1.5, None]})
    assert json.loads(path.read_text()) == {"a": [1.5, None], "b": 1}
    assert list(path.parent.iterdir()) == [path]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = atomic_write_json(tmp_path / "a.json", {"version": 1})

    def explode(f) -> None:
        f.write(b'{"version": 2')
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed"):
        atomic_write(path, explode)
    assert json.loads(path.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_atomic_torch_save_loads_weights_only(tmp_path: Path) -> None:
    state = {"w": torch.arange(6.0).reshape(2, 3), "step": 7}
    loaded = torch.load(atomic_torch_save(tmp_path / "c.pt", state), weights_only=True)
    assert torch.equal(loaded["w"], state["w"]) and loaded["step"] == 7


def test_jsonl_skips_a_truncated_last_line(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    append_jsonl(path, {"epoch": 1, "loss": 2.5})
    append_jsonl(path, {"epoch": 2, "loss": 2.25})
    with open(path, "a") as f:
        f.write('{"epoch": 3, "lo')
    assert read_jsonl(path) == [{"epoch": 1, "loss": 2.5}, {"epoch": 2, "loss": 2.25}]
    assert read_jsonl(tmp_path / "missing.jsonl") == []
