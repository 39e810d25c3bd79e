"""Shipped results: bundles written from run folders, read back as the runs, and the code-change note."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from dystress import provenance
from dystress.cli import main
from dystress.study import shipped
from dystress.study.runner import load_results


def _fake_runs(runs: Path, profile: str = "smoke") -> list:
    """Complete run folders for every point of ``profile`` but the last, as the runner leaves them."""
    results = load_results(profile, runs)
    for i, r in enumerate(results[:-1]):
        r.run_dir.mkdir(parents=True, exist_ok=True)
        info = {
            "status": "complete",
            "code_version": provenance.code_version(),
            "config": {"seed": r.point.seed},
            "environment": {"cpus": 2, "host": "test"},
            "started": "2026-12-03T00:00:00+00:00",
            "finished": "2026-12-03T00:01:00+00:00",
            "wall_s": 60.0 + i,
        }
        (r.run_dir / "run.json").write_text(json.dumps(info))
        (r.run_dir / "final_metrics.json").write_text(json.dumps({"knn_top1": 10.0 + i}))
        records = [{"epoch": e, "loss": 1.0 / e, "neg_sim_hist": [0, e, 2]} for e in (1, 2)]
        (r.run_dir / "records.jsonl").write_text("".join(json.dumps(x) + "\n" for x in records))
        (r.run_dir / "checkpoints").mkdir()
        (r.run_dir / "checkpoints" / "last.pt").write_bytes(b"never shipped")
    return load_results(profile, runs)


def test_export_and_load_give_the_runs_back(tmp_path: Path) -> None:
    results = _fake_runs(tmp_path / "runs")
    folder = shipped.export_results("smoke", tmp_path / "runs", tmp_path / "results" / "smoke")
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["manifest.json"] + [f"{r.key}.json" for r in results[:-1]]
    )
    loaded = shipped.load_shipped("smoke", tmp_path / "results")
    assert [r.point.id for r in loaded] == [r.point.id for r in results]
    for got, want in zip(loaded[:-1], results[:-1], strict=True):
        assert got.status == "complete" and got.key == want.key
        assert got.final == want.final and got.records() == want.records()
        assert got.info["wall_s"] == want.info["wall_s"] and got.snapshot_paths() == []
    assert loaded[-1].status == "missing"
    manifest = shipped.load_manifest("smoke", tmp_path / "results")
    assert manifest["code_version"] == provenance.code_version() and manifest["machine"]["cpus"] == 2
    assert shipped.code_changes(manifest) == []


def test_code_files_hash_to_the_code_version() -> None:
    digest = hashlib.sha256()
    for name, hexdigest in sorted(shipped.code_files().items()):
        digest.update(name.encode() + b"\0" + bytes.fromhex(hexdigest))
    assert digest.hexdigest()[:12] == provenance.code_version()


def test_code_changes_name_the_files(tmp_path: Path) -> None:
    now = shipped.code_files()
    then = {**now, "train.py": "0" * 64, "gone.py": "1" * 64}
    del then["regime.py"]
    changes = shipped.code_changes({"code_version": "older", "code_files": then})
    assert changes == ["train.py (changed)", "regime.py (new)", "gone.py (removed)"]
    assert shipped.code_changes({"code_version": "older", "code_files": None}) == [
        "the code version differs (the export did not record its files)"
    ]


def test_nothing_to_export_is_refused_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no complete run of profile smoke"):
        shipped.export_results("smoke", tmp_path / "runs", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_damaged_bundle_is_named(tmp_path: Path) -> None:
    results = _fake_runs(tmp_path / "runs")
    folder = shipped.export_results("smoke", tmp_path / "runs", tmp_path / "results" / "smoke")
    (folder / f"{results[0].key}.json").write_text("{not json")
    with pytest.raises(ValueError, match=f"{results[0].key}.json cannot be read as JSON"):
        shipped.load_shipped("smoke", tmp_path / "results")
    (folder / f"{results[0].key}.json").write_text('{"format": 99}')
    with pytest.raises(ValueError, match="is not a dystress bundle"):
        shipped.load_shipped("smoke", tmp_path / "results")


def test_nothing_shipped_is_an_empty_list(tmp_path: Path) -> None:
    assert shipped.load_shipped("long", tmp_path) == [] and shipped.load_manifest("long", tmp_path) is None


def test_export_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fake_runs(tmp_path / "runs")
    out = tmp_path / "bundles"
    args = ["study", "export", "--profile", "smoke", "--runs", str(tmp_path / "runs"), "--out", str(out)]
    assert main(args) == 0
    assert (out / "manifest.json").is_file() and str(out) in capsys.readouterr().out
    assert main(["study", "export", "--profile", "smoke", "--runs", str(tmp_path / "none")]) == 2
    assert "no complete run of profile smoke" in capsys.readouterr().err


def test_the_repository_ships_at_most_20_mb() -> None:
    root = provenance.repo_root() / "results"
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.is_dir() else 0
    assert size < 20 * 2**20
    for manifest in root.glob("*/manifest.json"):  # every shipped profile reads back
        assert all(r.status in ("complete", "missing") for r in shipped.load_shipped(manifest.parent.name))


def test_exports_of_several_machines_merge_into_one(tmp_path: Path) -> None:
    """Two exports of disjoint points (two machines) merge into one folder that reads back as every
    point; the same point as two different runs, another profile or another code version is refused
    before anything is written."""
    results = _fake_runs(tmp_path / "runs")
    both = shipped.export_results("smoke", tmp_path / "runs", tmp_path / "all" / "smoke")
    halves = []
    for i, part in enumerate((results[:2], results[2:-1])):
        folder = tmp_path / f"half{i}"
        folder.mkdir()
        manifest = json.loads((both / "manifest.json").read_text())
        manifest["points"] = {r.point.id: r.key for r in part}
        manifest["machine"] = {"cpus": 2, "host": f"machine{i}"}
        (folder / "manifest.json").write_text(json.dumps(manifest))
        for r in part:
            (folder / f"{r.key}.json").write_text((both / f"{r.key}.json").read_text())
        halves.append(folder)
    out = tmp_path / "merged" / "smoke"
    (out).mkdir(parents=True)
    (out / "stale.json").write_text("{}")
    assert shipped.merge_exports("smoke", halves, out) == out
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in both.iterdir())
    merged = shipped.load_shipped("smoke", tmp_path / "merged")
    assert [(r.point.id, r.status, r.final) for r in merged] == [
        (r.point.id, r.status, r.final) for r in shipped.load_shipped("smoke", tmp_path / "all")
    ]
    manifest = shipped.load_manifest("smoke", tmp_path / "merged")
    assert len(manifest["machine"]) == 2 and len(manifest["merged_from"]) == 2
    clash = json.loads((halves[1] / "manifest.json").read_text())
    clash["points"][results[0].point.id] = "another-run"
    (halves[1] / "manifest.json").write_text(json.dumps(clash))
    with pytest.raises(ValueError, match=f"point {re.escape(results[0].point.id)} ships as"):
        shipped.merge_exports("smoke", halves, tmp_path / "never")
    with pytest.raises(ValueError, match="not 'quick'"):
        shipped.merge_exports("quick", halves[:1], tmp_path / "never")
    clash["points"].pop(results[0].point.id)
    clash["code_version"] = "0" * 12
    (halves[1] / "manifest.json").write_text(json.dumps(clash))
    with pytest.raises(ValueError, match="different code versions"):
        shipped.merge_exports("smoke", halves, tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_made_on_names_the_device_cores_torch_and_data(tmp_path: Path) -> None:
    results = _fake_runs(tmp_path / "runs")
    folder = shipped.export_results("smoke", tmp_path / "runs", tmp_path / "results" / "smoke")
    manifest = shipped.load_manifest("smoke", tmp_path / "results")
    assert manifest["data"] == {}  # the fake runs' configs name no dataset
    loaded = shipped.load_shipped("smoke", folder.parent)
    assert (
        shipped.made_on(loaded, manifest)
        == "an unrecorded device (2 CPU cores, torch ?); data: not recorded by the export"
    )
    manifest["data"] = {"cifar10": "official release"}
    for r in loaded:
        r.info["environment"] = {"device": "NVIDIA H200", "cpus": 16, "torch": "2.11"}
    assert (
        shipped.made_on(loaded, manifest)
        == "NVIDIA H200 (16 CPU cores, torch 2.11); data: cifar10 official release"
    )
    assert shipped.made_on(results[-1:], manifest) == "nothing (no complete run)"


def test_the_same_key_made_twice_is_two_runs_and_is_refused(tmp_path: Path) -> None:
    """Two machines can make the same point under the same key (same configuration and threads): the
    merge compares the runs themselves and refuses to pick one silently."""
    _fake_runs(tmp_path / "runs")
    first = shipped.export_results("smoke", tmp_path / "runs", tmp_path / "a")
    second = tmp_path / "b"
    second.mkdir()
    for path in first.iterdir():
        (second / path.name).write_text(path.read_text())
    assert shipped.merge_exports("smoke", [first, second], tmp_path / "same").is_dir()  # the same runs
    key = next(p for p in second.glob("*.json") if p.name != "manifest.json")
    bundle = json.loads(key.read_text())
    bundle["run"]["started"] = "2026-12-04T00:00:00+00:00"
    key.write_text(json.dumps(bundle))
    with pytest.raises(ValueError, match=f"ships as two different runs of {key.stem}"):
        shipped.merge_exports("smoke", [first, second], tmp_path / "never")
    assert not (tmp_path / "never").exists()
