"""Runs side by side (``dystress study run --parallel N``): a run's numbers depend on its
configuration, seed and thread count alone, never on what runs beside it."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from dystress.study import ablations, runner

TIMING = {"epoch_seconds", "images_per_second", "monitor_seconds", "train_seconds", "phase_seconds"}


def _numbers(run_dir: Path) -> tuple[list[dict], dict]:
    """Records and final metrics without the fields that measure time."""
    records = [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines()]
    final = json.loads((run_dir / "final_metrics.json").read_text())
    strip = lambda d: {k: v for k, v in d.items() if k not in TIMING}  # noqa: E731
    return [strip(r) for r in records], strip(final)


@pytest.mark.slow
def test_a_run_beside_others_equals_the_run_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline_cifar10_root: Path
) -> None:
    monkeypatch.setenv("DYSTRESS_DATA", str(offline_cifar10_root))  # runs side by side are processes
    out = io.StringIO()
    report = runner.run_study("smoke", tmp_path / "side", only=["fixed_tau"], parallel=2, stream=out)
    threads = runner.threads_per_run(2)
    assert f"2 at a time with {threads} thread(s) each" in out.getvalue()
    assert [r.status for r in report.results if r.point.ablation == "fixed_tau"] == ["complete"] * 2
    point = next(p for p in ablations.plan("smoke") if p.ablation == "fixed_tau")
    alone = runner.run_point(point, "smoke", tmp_path / "alone", num_threads=threads, stream=io.StringIO())
    assert alone.status == "complete", alone.error
    beside = next(r for r in report.results if r.point == point)
    assert json.loads((beside.run_dir / "run.json").read_text())["config"]["num_threads"] == threads
    assert beside.run_dir.name.split("-")[0].endswith(f"_t{threads}")  # never a default run's folder
    assert _numbers(beside.run_dir) == _numbers(alone.run_dir)


def test_parallel_must_be_a_positive_integer_and_more_than_the_cores_warns() -> None:
    for bad in (0, -1, 1.5, "2"):
        with pytest.raises(ValueError, match="parallel must be"):
            runner.check_parallel(bad, io.StringIO())
    out = io.StringIO()
    cores = os.cpu_count() or 1
    assert runner.check_parallel(cores + 1, out) == cores + 1
    assert f"{cores + 1} runs at once on {cores} CPU cores: each gets 1 thread" in out.getvalue()
    assert runner.threads_per_run(1) is None
    assert runner.threads_per_run(cores + 1) == 1
    assert runner.threads_per_run(2) == max(1, cores // 2)


def test_the_parallel_variable_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DYSTRESS_PARALLEL", "two")
    with pytest.raises(ValueError, match="DYSTRESS_PARALLEL must be an integer >= 1, got 'two'"):
        runner.default_parallel()
    monkeypatch.setenv("DYSTRESS_PARALLEL", "3")
    assert runner.default_parallel() == 3
    monkeypatch.delenv("DYSTRESS_PARALLEL")
    assert runner.default_parallel() == 1


@pytest.mark.slow
def test_the_cli_engine_runs_points_without_papermill_and_equals_the_notebook(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline_cifar10_root: Path
) -> None:
    """The paper headline on a GPU node runs this way: ``--engine cli --points ... --parallel N``, then
    ``study export``; the same point gives the same numbers as through the notebook."""
    from dystress.study.shipped import export_results, load_shipped

    monkeypatch.setenv("DYSTRESS_DATA", str(offline_cifar10_root))
    out = io.StringIO()
    report = runner.run_study(
        "smoke", tmp_path / "cli", points=["fixed_tau/0.1/"], parallel=2, engine="cli", stream=out
    )
    done = [r for r in report.results if r.status == "complete"]
    assert [r.point.id for r in done] == ["fixed_tau/0.1/s0"], out.getvalue()
    run_dir = done[0].run_dir
    assert (run_dir / "run.log").is_file() and not (run_dir / "run.ipynb").exists()
    notebook = runner.run_point(
        done[0].point, "smoke", tmp_path / "nb", num_threads=runner.threads_per_run(2), stream=io.StringIO()
    )
    assert _numbers(run_dir) == _numbers(notebook.run_dir)
    folder = export_results("smoke", tmp_path / "cli", tmp_path / "results" / "smoke", parallel=2)
    shipped = [r for r in load_shipped("smoke", folder.parent) if r.status == "complete"]
    assert [r.point.id for r in shipped] == ["fixed_tau/0.1/s0"] and shipped[0].records()
    with pytest.raises(ValueError, match=r"points \['nothing/'\] match no point of profile smoke"):
        runner.run_study("smoke", tmp_path / "cli", points=["nothing/"], engine="cli", stream=io.StringIO())
    with pytest.raises(ValueError, match="engine must be one of"):
        runner.run_study("smoke", tmp_path / "cli", engine="gpu", stream=io.StringIO())


def test_a_failing_pretrain_command_is_recorded_with_the_end_of_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cli engine records a failed ``dystress pretrain`` as the notebook engine records a failed
    notebook: status, the error's last line, the log's end as the traceback; the study goes on."""
    monkeypatch.setenv("DYSTRESS_DATA", str(tmp_path / "no-data"))  # nothing to train on
    monkeypatch.setenv("DYSTRESS_NO_DATA_CACHE", "1")
    point = next(p for p in ablations.plan("smoke") if p.id == "fixed_tau/0.1/s0")
    result = runner.run_point(point, "smoke", tmp_path / "runs", engine="cli", stream=io.StringIO())
    assert result.status == "failed"
    info = json.loads((result.run_dir / "run.json").read_text())
    assert info["status"] == "failed" and info["error"].startswith(
        "dystress pretrain exited 2: dystress pretrain: error: cifar10: "
    )
    log = (result.run_dir / "run.log").read_text()
    assert info["traceback"].splitlines()[-1] == log.strip().splitlines()[-1]
    assert "no-data" in log and info["wall_s"] > 0


def test_training_images_counts_epochs_times_the_training_set() -> None:
    from dystress.config import get_profile

    quick = get_profile("quick")
    assert ablations.training_images(quick) == 6 * 10_000
    # CIFAR-10-LT at imbalance 0.01 has 12,406 training images (the count of Cao et al. 2019, LDAM-DRW)
    lt = quick.updated({"dataset": "cifar10_lt", "train_subset": None})
    assert ablations.training_images(lt) == 6 * 12_406
    assert ablations.training_images(get_profile("long")) == 20 * 50_000
    assert ablations.training_images(quick.updated({"dataset": "cifar100", "epochs": 3})) == 3 * 10_000
    assert ablations.training_images(quick.updated({"epochs": 0})) == 0


def test_side_by_side_the_longest_runs_start_first(tmp_path: Path) -> None:
    """With --parallel 2 the long-tailed runs (12,406 images) go first and the untrained one last, so
    no core idles at the end while one long run finishes; one at a time keeps the plan's order."""
    _, in_order = runner._to_run("quick", tmp_path, None, False, 1)
    _, longest_first = runner._to_run("quick", tmp_path, None, False, 2)
    assert sorted(r.point.id for r in in_order) == sorted(r.point.id for r in longest_first)
    assert in_order[0].point.ablation == "random_init"
    lt = [i for i, r in enumerate(longest_first) if r.dataset.endswith("_lt")]
    assert lt == list(range(len(lt))) and len(lt) >= 2
    assert longest_first[-1].point.ablation == "random_init"
    rest = [r.point.id for r in longest_first[len(lt) : -1]]
    assert rest == [r.point.id for r in in_order if r.point.id in set(rest)]  # plan order among equals
