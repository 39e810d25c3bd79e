"""GPU measurements shipped under results/paper: read back with their statuses, checked, projected, and
put in words for the pages (dystress.study.gpu_report)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dystress.study import budget
from dystress.study.gpu_report import headline_gap, headline_lines, section, seeds_by_metric
from dystress.study.gpu_shipped import headline_budgets, load_gpu_measurements, projected_minutes


def _write(folder: Path, runs: list[dict]) -> None:
    folder.mkdir(parents=True)
    (folder / "steps.log").write_text(
        "name, memory.total [MiB], driver_version\nNVIDIA H200, 143771 MiB, 580\n"
        "torch 2.11.0+cu130 cuda 13.0 torchvision 0.26.0\n16\n[gpu_study 23s] throughput\n"
    )
    rows = [{"runs": 1, "threads_each": 16, "pairs_per_s_per_run": 5000.0, "aggregate_pairs_per_s": 5000.0}]
    (folder / "throughput.json").write_text(json.dumps(rows))
    (folder / "headline.json").write_text(json.dumps({"code_version": "abc", "epochs": 2, "runs": runs}))


def _run(point: str, code: int, q99: float) -> dict:
    records = [
        {
            "epoch": e,
            "step": 390 * e,
            "neg_sim_q99": q99,
            "neg_close_share": 0.01,
            "neg_tau_raised_share": 0.1,
        }
        for e in (1, 2)
    ]
    final = {"knn_top1": 80.0} if code == 0 else None
    return {"point": point, "exit_status": code, "records": records, "final_metrics": final, "config": {}}


def test_runs_read_back_as_complete_or_stopped(tmp_path: Path) -> None:
    runs = [_run("fixed_tau/0.2/s0", 0, 0.5), _run("dystress_grid/(0.07, 0.2)/s0", -15, 0.4)]
    _write(tmp_path / "paper", runs)
    gpu = load_gpu_measurements(tmp_path)
    assert gpu.machine == "NVIDIA H200, torch 2.11.0+cu130" and gpu.code_version == "abc" and gpu.epochs == 2
    assert [(r.point.id, r.status) for r in gpu.runs] == [
        ("fixed_tau/0.2/s0", "complete"),
        ("dystress_grid/(0.07, 0.2)/s0", "stopped"),
    ]
    assert gpu.runs[0].final == {"knn_top1": 80.0} and gpu.runs[1].final == {}
    assert gpu.throughput[0]["aggregate_pairs_per_s"] == 5000.0
    # a stopped run's records count for the regime only when asked for
    assert budget.regime_sentence(gpu.runs) is None
    assert "q99 = 0.40" in budget.regime_sentence(gpu.runs, ("complete", "stopped"))


def test_the_headline_environment_names_machine_data_and_date(tmp_path: Path) -> None:
    _write(tmp_path / "paper", [_run("fixed_tau/0.2/s0", 0, 0.5)])
    headline = json.loads((tmp_path / "paper" / "headline.json").read_text())
    assert load_gpu_measurements(tmp_path).data == "not recorded"
    headline["environment"] = {
        "device": "NVIDIA H100",
        "torch": "2.12",
        "data": {"cifar10": "official release"},
        "finished": "2026-12-05T10:00:00+00:00",
    }
    (tmp_path / "paper" / "headline.json").write_text(json.dumps(headline))
    gpu = load_gpu_measurements(tmp_path)
    assert (gpu.machine, gpu.data, gpu.finished) == (
        "NVIDIA H100, torch 2.12",
        "cifar10 official release",
        "2026-12-05",
    )


def test_nothing_shipped_and_damaged_files(tmp_path: Path) -> None:
    assert load_gpu_measurements(tmp_path) is None
    _write(tmp_path / "paper", [_run("nothing/s0", 0, 0.5)])
    with pytest.raises(ValueError, match="'nothing/s0' is no point of the paper plan"):
        load_gpu_measurements(tmp_path)
    (tmp_path / "paper" / "headline.json").write_text("{not json")
    with pytest.raises(ValueError, match="headline.json cannot be read as JSON"):
        load_gpu_measurements(tmp_path)


def test_compiled_throughput_rows_read_back_and_are_checked(tmp_path: Path) -> None:
    _write(tmp_path / "paper", [_run("fixed_tau/0.2/s0", 0, 0.5)])
    assert load_gpu_measurements(tmp_path).throughput_compiled == []
    rows = [{"runs": 2, "threads_each": 8, "pairs_per_s_per_run": 6000.0, "aggregate_pairs_per_s": 12000.0}]
    (tmp_path / "paper" / "throughput_compiled.json").write_text(json.dumps(rows))
    assert load_gpu_measurements(tmp_path).throughput_compiled == rows
    (tmp_path / "paper" / "throughput_compiled.json").write_text(json.dumps([{"runs": 2}]))
    with pytest.raises(ValueError, match="throughput_compiled.json is no list of rows with aggregate"):
        load_gpu_measurements(tmp_path)


def test_the_engine_files_changed_since_the_headline_are_named(tmp_path: Path) -> None:
    from dystress import provenance
    from dystress.study.shipped import code_files

    _write(tmp_path / "paper", [_run("fixed_tau/0.2/s0", 0, 0.5)])
    path = tmp_path / "paper" / "headline.json"
    headline = json.loads(path.read_text())
    assert load_gpu_measurements(tmp_path).code_changes == [
        "the code version differs (the export did not record its files)"
    ]
    files = code_files()
    headline.update(code_version=provenance.code_version(), code_files=files)
    path.write_text(json.dumps(headline))
    assert load_gpu_measurements(tmp_path).code_changes == []
    headline.update(code_version="abc", code_files={**files, "models.py": "0" * 64})
    path.write_text(json.dumps(headline))
    assert load_gpu_measurements(tmp_path).code_changes == ["models.py (changed)"]


def test_headline_budgets_and_their_paired_gaps(tmp_path: Path) -> None:
    """headline.json and an earlier budget beside it, by epochs; the gap is DySTreSS - SimCLR over the
    seeds both completed (a stopped run is left out)."""

    def run(point: str, value: float, code: int = 0) -> dict:
        return {**_run(point, code, 0.5), "final_metrics": {"knn200_majority": value} if code == 0 else None}

    runs = [
        run("fixed_tau/0.2/s0", 60.0),
        run("fixed_tau/0.2/s1", 59.0),
        run("dystress_grid/(0.07, 0.2)/s0", 61.0),
        run("dystress_grid/(0.07, 0.2)/s1", 60.0),
        run("dystress_grid/(0.07, 0.2)/s2", 0.0, code=-15),
    ]
    _write(tmp_path / "paper", runs)
    earlier = {"code_version": "old", "epochs": 1, "runs": runs[:1] + runs[2:3]}
    (tmp_path / "paper" / "headline_1ep.json").write_text(json.dumps(earlier))
    budgets = headline_budgets(tmp_path)
    assert [(b.epochs, b.code_version) for b in budgets] == [(1, "old"), (2, "abc")]
    gap = headline_gap(budgets[1], "knn200_majority")
    assert (gap.diff, gap.ci, gap.seeds) == (1.0, 0.0, (0, 1))  # +1 on both seeds: no spread
    assert headline_gap(budgets[0], "knn200_majority").seeds == (0,)
    assert headline_gap(budgets[1], "linear_top1") is None
    (line,) = headline_lines(budgets[1])
    assert line.startswith("200-NN majority vote") and "1.00 points above SimCLR" in line


def test_the_page_section_tables_the_throughput_results_and_budgets(tmp_path: Path) -> None:
    """section(): the provenance, one throughput row per run count (eager and compiled side by side,
    "-" where one was not measured) with the projection from the fastest rates, the stopped run named,
    the complete runs' means, the seed-by-seed sentence, and the budget table when two ship."""
    runs = [
        {**_run("fixed_tau/0.2/s0", 0, 0.5), "final_metrics": {"linear_top1": 60.0}},
        {**_run("fixed_tau/0.2/s1", 0, 0.5), "final_metrics": {"linear_top1": 62.0}},
        {**_run("dystress_grid/(0.07, 0.2)/s0", 0, 0.4), "final_metrics": {"linear_top1": 61.0}},
        _run("dystress_grid/(0.07, 0.2)/s1", -15, 0.4),
    ]
    _write(tmp_path / "paper", runs)
    compiled = [
        {"runs": 2, "threads_each": 8, "pairs_per_s_per_run": 5000.0, "aggregate_pairs_per_s": 10000.0}
    ]
    (tmp_path / "paper" / "throughput_compiled.json").write_text(json.dumps(compiled))
    gpu = load_gpu_measurements(tmp_path)
    text = section(gpu)
    assert "code version abc (not this build's: changed since, the code version differs" in text
    assert "| 1 | 5,000 | 5,000 | - | - |" in text and "| 2 | - | - | 5,000 | 10,000 |" in text
    # 200 x 50,000 pairs: 33 minutes at 5,000 pairs/s alone; six runs at 10,000 together: 100 minutes
    assert "about 33 minutes alone (at the eager 1-run rate)" in text
    assert "about 100 minutes together (at the 2-run compiled rate)" in text
    assert "1 of 4 runs were stopped" in text and "ran 2 epochs each" in text
    assert "| SimCLR (fixed tau 0.2) | - | - | 61.00 ± 12.71 (n = 2) |" in text
    assert "linear probe top-1: Seed by seed (seed 0), DySTreSS (0.07, 0.2) is 1.00 points above" in text
    assert "every budget" not in text
    assert seeds_by_metric(gpu) == {
        "linear probe top-1": {
            "SimCLR (fixed tau 0.2)": {0: 60.0, 1: 62.0},
            "DySTreSS (0.07, 0.2)": {0: 61.0},
        }
    }
    earlier = {"code_version": "old", "epochs": 1, "runs": runs[:1] + runs[2:3]}
    (tmp_path / "paper" / "headline_1ep.json").write_text(json.dumps(earlier))
    text = section(gpu, headline_budgets(tmp_path))
    assert "| 1 | old | - | - | +1.00 no interval (n = 1) |" in text
    assert "| 2 | abc | - | - | +1.00 no interval (n = 1) |" in text


def test_whole_step_graph_rows_get_their_own_columns(tmp_path: Path) -> None:
    """throughput_graph.json (``--concurrent-mode graph``) reads back and adds a column pair to the table
    only when it ships; the engine's projection keeps the engine's rates, the graph's are a bound."""
    _write(tmp_path / "paper", [_run("fixed_tau/0.2/s0", 0, 0.5)])
    assert load_gpu_measurements(tmp_path).throughput_graph == []
    assert "whole-step graph" not in section(load_gpu_measurements(tmp_path))
    graph = [
        {"runs": 1, "threads_each": 16, "pairs_per_s_per_run": 25000.0, "aggregate_pairs_per_s": 25000.0},
        {"runs": 6, "threads_each": 2, "pairs_per_s_per_run": 10000.0, "aggregate_pairs_per_s": 60000.0},
    ]
    (tmp_path / "paper" / "throughput_graph.json").write_text(json.dumps(graph))
    gpu = load_gpu_measurements(tmp_path)
    assert gpu.throughput_graph == graph
    text = section(gpu)
    header = "| runs at once |" + "".join(
        f" {kind}: per run | {kind}: together |" for kind in ("eager", "compiled", "whole-step graph")
    )
    assert header in text
    assert "| 1 | 5,000 | 5,000 | - | - | 25,000 | 25,000 |" in text
    assert "| 6 | - | - | - | - | 10,000 | 60,000 |" in text
    # the engine's projection keeps the engine's rates: 200 x 50,000 pairs at 5,000 pairs/s, 33 minutes
    assert "about 33 minutes alone (at the eager 1-run rate)" in text
    # the graph's rates as a bound: 25,000 pairs/s alone, 6.7 minutes; six at 60,000 together, 16.7
    assert "one 200-epoch run in about 7 minutes alone and the six headline runs in about 17 minutes" in text
    assert "(at its 6-run rate): the most that building the engine for it could give" in text
    (tmp_path / "paper" / "throughput_graph.json").write_text(json.dumps([{"runs": 6}]))
    with pytest.raises(ValueError, match="throughput_graph.json is no list of rows with aggregate"):
        load_gpu_measurements(tmp_path)


def test_projected_minutes_of_a_paper_run() -> None:
    """200 epochs of 50,000 pairs at 5,000 pairs/s: 2,000 s."""
    assert projected_minutes(5000) == pytest.approx(2000 / 60)
    assert projected_minutes(1000, epochs=6, pairs_per_epoch=10_000) == pytest.approx(1)
    with pytest.raises(ValueError, match="pairs_per_s must be positive"):
        projected_minutes(0)


def test_the_shipped_gpu_measurements_read_back() -> None:
    gpu = load_gpu_measurements()
    if gpu is not None:
        assert gpu.runs and all(r.status in ("complete", "stopped") for r in gpu.runs)
        assert all(r.records() for r in gpu.runs)
        assert all(
            row["aggregate_pairs_per_s"] > 0
            for row in gpu.throughput + gpu.throughput_compiled + gpu.throughput_graph
        )
