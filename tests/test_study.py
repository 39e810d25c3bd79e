"""The study: ablation plan, configs and run keys, and the papermill orchestration.

The orchestration tests run a stand-in template: the real run notebook (from
``notebooks/_make_notebooks.py``) with the training cell replaced by a fake ``pretrain`` that writes
records and final metrics in milliseconds, so hash keys, skipping, resuming, failure recording and
progress are tested independently of training.
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest

from dystress import provenance, study
from dystress.cli import main
from dystress.config import get_profile
from dystress.study import ablations, findings, runner
from dystress.study import results as study_results
from dystress.temperature import TEMPERATURE_PARAMETER_NAMES

REPO = Path(__file__).resolve().parents[1]

FAKE_RUN = """\
import json, os, pathlib

run_dir = pathlib.Path(run_dir)
if temperature == os.environ.get("FAKE_FAIL_TEMPERATURE"):
    raise RuntimeError("planned failure of " + temperature)
records = run_dir / "records.jsonl"
done = len(records.read_text().splitlines()) if records.exists() else 0
with open(records, "a") as f:
    for epoch in range(done + 1, 3):
        f.write(json.dumps({"epoch": epoch, "loss": 1.0 / epoch, "monitor_knn_top1": 10.0}) + "\\n")
final = {"knn_top1": 100 * (tau or 0.5), "resumed_after": done}
(run_dir / "final_metrics.json").write_text(json.dumps(final))"""


def _make_notebooks_module():
    path = REPO / "notebooks" / "_make_notebooks.py"
    spec = importlib.util.spec_from_file_location("_make_notebooks", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fake_template(tmp_path: Path) -> Path:
    """A template that takes the study's parameters and writes 2 epochs of records without importing torch."""
    params = "profile = None\nrun_dir = None\nprogress = True\ntemperature = None\ntau = None\nseed = 0"
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell(FAKE_RUN),
        ]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "template.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    runs = tmp_path / "runs"
    monkeypatch.setenv("DYSTRESS_RUNS", str(runs))
    monkeypatch.setenv("DYSTRESS_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("FAKE_FAIL_TEMPERATURE", raising=False)
    # The tree may be edited while a test runs: pin the code version the keys hash.
    monkeypatch.setattr(provenance, "code_version", lambda: "test-code")
    return runs


# ---------------------------------------------------------------------------------------------- plan
def _labels(profile: str, ablation: str) -> set[str]:
    return {p.label for p in ablations.plan(profile) if p.ablation == ablation}


def test_paper_plan_covers_the_required_ablations() -> None:
    assert {"0.05", "0.1", "0.15", "0.2", "0.3", "0.5", "1"} <= _labels("paper", "fixed_tau")
    assert {"(0.1, 0.2)", "(0.07, 0.2)", "(0.07, 0.1)"} <= _labels("paper", "dystress_grid")
    assert "(-0.4, 0.7)" in _labels("paper", "shifted")
    assert _labels("paper", "forms") == {"cosine", "linear", "exponential", "log_linear", "one_sided_cosine"}
    assert _labels("paper", "baselines") == {"TS", "MACL"}
    assert _labels("paper", "random_init") == {"random initialisation"}
    seeds: dict[tuple[str, str], set[int]] = {}
    for p in ablations.plan("paper"):
        seeds.setdefault((p.ablation, p.label), set()).add(p.seed)
    repeated = {k for k, v in seeds.items() if len(v) >= 3}
    assert {("fixed_tau", "0.2"), ("dystress_grid", "(0.07, 0.2)"), ("baselines", "MACL")} <= repeated
    assert len(repeated) >= 6


@pytest.mark.parametrize("profile", ["smoke", "quick"])
def test_cpu_profiles_are_subsets_of_the_paper_plan(profile: str) -> None:
    paper = {(p.ablation, p.label, p.seed) for p in ablations.plan("paper")}
    points = ablations.plan(profile)
    assert {(p.ablation, p.label, p.seed) for p in points} <= paper
    assert {"random_init", "fixed_tau", "dystress_grid"} <= {p.ablation for p in points}


def test_quick_profile_stays_within_its_cpu_budget(env: Path) -> None:
    # 29 training runs of about 1.5 minutes (the rival temperatures added four to 25); the
    # functional-forms point "cosine" is the grid's (0.07, 0.2) run, so it adds no run.
    keys = {r.key for r in study.load_results("quick") if r.point.ablation != "random_init"}
    assert len(keys) == 29
    assert len(ablations.plan("quick")) == 31


# The CPU profiles' plans, written out: a new ablation must not lengthen the CPU books.
CPU_PLANS = {
    "smoke": [
        "random_init/random initialisation/s0",
        "fixed_tau/0.1/s0",
        "fixed_tau/0.5/s0",
        "dystress_grid/(0.07, 0.2)/s0",
        "shifted/(-0.4, 0.7)/s0",
    ],
    "quick": [
        "random_init/random initialisation/s0",
        "fixed_tau/0.05/s0",
        "fixed_tau/0.1/s0",
        "fixed_tau/0.1/s1",
        "fixed_tau/0.1/s2",
        "fixed_tau/0.15/s0",
        "fixed_tau/0.2/s0",
        "fixed_tau/0.2/s1",
        "fixed_tau/0.2/s2",
        "fixed_tau/0.5/s0",
        "dystress_grid/(0.07, 0.2)/s0",
        "dystress_grid/(0.07, 0.2)/s1",
        "dystress_grid/(0.07, 0.2)/s2",
        "dystress_grid/(0.1, 0.2)/s0",
        "dystress_grid/(0.1, 0.5)/s0",
        "shifted/(-0.4, 0.7)/s0",
        "forms/cosine/s0",
        "baselines/TS/s0",
        "baselines/MACL/s0",
        "baselines/MACL/s1",
        "baselines/MACL/s2",
        "rivals/learned tau/s0",
        "rivals/iSogCLR/s0",
        "rivals/temperature-free/s0",
        "rivals/iSogCLR, CIFAR-10-LT/s0",
        "cifar10_lt/SimCLR (tau 0.2)/s0",
        "cifar10_lt/SimCLR (tau 0.2)/s1",
        "cifar10_lt/SimCLR (tau 0.2)/s2",
        "cifar10_lt/DySTreSS (0.07, 0.2)/s0",
        "cifar10_lt/DySTreSS (0.07, 0.2)/s1",
        "cifar10_lt/DySTreSS (0.07, 0.2)/s2",
    ],
}
#: Datasets of the CPU plans: the offline machines have CIFAR-10 only (CIFAR-10-LT is drawn from it).
CPU_DATASETS = {"smoke": {"cifar10"}, "quick": {"cifar10", "cifar10_lt"}}


@pytest.mark.parametrize("profile", ["smoke", "quick"])
def test_cpu_plans_are_unchanged_and_need_cifar10_only(env: Path, profile: str) -> None:
    points = ablations.plan(profile)
    assert [p.id for p in points] == CPU_PLANS[profile]
    assert {study.build_config(profile, p.parameters).dataset for p in points} == CPU_DATASETS[profile]
    assert {r.dataset for r in study.load_results(profile)} == CPU_DATASETS[profile]


def test_long_tailed_points_train_on_the_whole_long_tailed_set() -> None:
    # 12,406 / 10,847 images: the exponential profile n_c = n_max r^(c / (C - 1)), summed (STUDY.md)
    expected = {
        "cifar10_lt": sum(int(5000 * 0.01 ** (c / 9)) for c in range(10)),
        "cifar100_lt": sum(int(500 * 0.01 ** (c / 99)) for c in range(100)),
    }
    assert expected == {"cifar10_lt": 12406, "cifar100_lt": 10847}
    import torch

    from dystress.data.longtail import longtail_indices

    for name, size in expected.items():
        assert ablations.long_tailed_size(name) == size
        # the loader's long-tailed set has exactly that many images (a larger train_subset would fail,
        # a smaller one redraw the class profile)
        per_class, classes = (5000, 10) if name == "cifar10_lt" else (500, 100)
        labels = torch.arange(classes).repeat_interleave(per_class)[torch.randperm(per_class * classes)]
        assert longtail_indices(labels, 0.01, seed=3, num_classes=classes).numel() == size
    assert ablations.long_tailed_size("cifar10_lt", 0.1) == sum(int(5000 * 0.1 ** (c / 9)) for c in range(10))
    with pytest.raises(
        ValueError, match=r"dataset must be one of \['cifar100_lt', 'cifar10_lt'\], got 'cifar10'"
    ):
        ablations.long_tailed_size("cifar10")
    quick_lt = [p for p in ablations.plan("quick") if p.ablation == "cifar10_lt"]
    assert len(quick_lt) == 6
    for p in quick_lt:  # the quick profile's 10k subset would redraw the class profile: the whole set
        config = study.build_config("quick", p.parameters)
        assert config.train_subset == 12406 and config.imbalance_ratio == 0.01
    for p in ablations.plan("paper"):  # the paper profile trains on whole sets already
        assert "train_subset" not in p.parameters


# (ablation, label) -> the parameters every seed of that point must carry in the paper plan (all of them
# paper-only but cifar10_lt, which the quick profile also runs, on its whole long-tailed set).
OTHER_DATASETS = {
    ("cifar100", "SimCLR (tau 0.2)"): {"dataset": "cifar100", "temperature": "constant", "tau": 0.2},
    ("cifar100", "MACL"): {
        "dataset": "cifar100",
        "temperature": "macl",
        "tau_0": 0.1,
        "alpha": 0.5,
        "a_0": 0.0,
    },
    ("cifar100", "DySTreSS (0.07, 0.2)"): {
        "dataset": "cifar100",
        "temperature": "cosine",
        "tau_min": 0.07,
        "tau_max": 0.2,
    },
    ("cifar100", "DySTreSS (0.1, 0.2)"): {
        "dataset": "cifar100",
        "temperature": "cosine",
        "tau_min": 0.1,
        "tau_max": 0.2,
    },
    ("rivals", "iSogCLR, CIFAR-10-LT"): {
        "dataset": "cifar10_lt",
        "imbalance_ratio": 0.01,
        "temperature": "isogclr",
    },
    # the paper's long-tailed comparisons: with SimCLR at 200 epochs, with TS at 2000 (five periods of 400)
    **{
        (lt, "SimCLR (tau 0.2)"): {
            "dataset": lt,
            "imbalance_ratio": 0.01,
            "temperature": "constant",
            "tau": 0.2,
        }
        for lt in ("cifar10_lt", "cifar100_lt")
    },
    **{
        (lt, "DySTreSS (0.07, 0.2)"): {
            "dataset": lt,
            "imbalance_ratio": 0.01,
            "temperature": "cosine",
            "tau_min": 0.07,
            "tau_max": 0.2,
        }
        for lt in ("cifar10_lt", "cifar100_lt")
    },
    **{
        (f"{lt}_ts", "TS, 2000 epochs"): {
            "dataset": lt,
            "imbalance_ratio": 0.01,
            "epochs": 2000,
            "temperature": "ts_schedule",
            "tau_plus": 1.0,
            "tau_minus": 0.1,
            "period": 400,
        }
        for lt in ("cifar10_lt", "cifar100_lt")
    },
    **{
        (f"{lt}_ts", "DySTreSS (0.07, 0.2), 2000 epochs"): {
            "dataset": lt,
            "imbalance_ratio": 0.01,
            "epochs": 2000,
            "temperature": "cosine",
            "tau_min": 0.07,
            "tau_max": 0.2,
        }
        for lt in ("cifar10_lt", "cifar100_lt")
    },
}


def test_paper_plan_runs_cifar100_and_long_tailed_points_with_three_seeds() -> None:
    found: dict[tuple[str, str], set[int]] = {}
    for p in ablations.plan("paper"):
        params = p.parameters
        if params.get("dataset", "cifar10") == "cifar10":
            continue
        expected = OTHER_DATASETS[(p.ablation, p.label)]
        assert {k: params.get(k) for k in expected} == expected, p.id
        found.setdefault((p.ablation, p.label), set()).add(p.seed)
    assert found == {key: {0, 1, 2} for key in OTHER_DATASETS}


@pytest.mark.parametrize(("ablation", "label"), sorted(OTHER_DATASETS))
def test_paper_only_points_build_valid_paper_configs(env: Path, ablation: str, label: str) -> None:
    paper = get_profile("paper")
    points = [p for p in ablations.plan("paper") if (p.ablation, p.label) == (ablation, label)]
    expected = OTHER_DATASETS[(ablation, label)]
    for p in points:
        c = study.build_config("paper", p.parameters)
        assert c.dataset == expected["dataset"] and c.temperature == expected["temperature"]
        assert c.temperature_params == {k: v for k, v in expected.items() if k in TEMPERATURE_PARAMETER_NAMES}
        assert c.seed == p.seed and c.epochs == expected.get("epochs", paper.epochs) and paper.epochs == 200
        assert (c.backbone, c.lr, c.batch_size, c.knn_k) == (paper.backbone, paper.lr, paper.batch_size, 200)
        if "imbalance_ratio" in expected:
            assert c.imbalance_ratio == 0.01
        assert provenance.run_folder_name(c, "c").startswith(expected["dataset"] + "_")


def test_paper_plan_keys_and_ids_are_unique_across_datasets(env: Path) -> None:
    points = ablations.plan("paper")
    ids = [p.id for p in points]
    assert len(ids) == len(set(ids))
    by_key: dict[str, set[str]] = {}
    for r in study.load_results("paper"):
        assert r.status != "invalid", r.error
        by_key.setdefault(r.key, set()).add(r.dataset)
    assert all(len(datasets) == 1 for datasets in by_key.values())
    # The same temperature on two datasets, or for another number of epochs, is another run:
    # DySTreSS (0.07, 0.2) seed 0 on four datasets, and for 2000 epochs on the two long-tailed ones.
    reference = {
        r.key
        for r in study.load_results("paper")
        if r.point.label in ("(0.07, 0.2)", "DySTreSS (0.07, 0.2)", "DySTreSS (0.07, 0.2), 2000 epochs")
        and r.point.seed == 0
        and r.point.parameters.get("temperature") == "cosine"
    }
    assert len(reference) == 6
    # and every distinct configuration has its own readable slug (the 2000-epoch runs say e2000), so
    # `study list` never takes another configuration's folder for an older version of a run
    slugs = {r.key.rsplit("-", 1)[0] for r in study.load_results("paper")}
    assert len(slugs) == len(by_key)
    assert any(s.endswith("_e2000_s0") for s in slugs)


def test_results_frame_has_dataset_and_class_averaged_columns(env: Path) -> None:
    results = study.load_results("paper")
    lt = next(r for r in results if r.point.ablation == "cifar10_lt")
    lt.run_dir.mkdir(parents=True)
    final = {"knn_top1": 50.0, "knn1_class_averaged": 41.5, "knn10_class_averaged": 44.25, "test_size": 10000}
    (lt.run_dir / "final_metrics.json").write_text(json.dumps(final))
    (lt.run_dir / "run.json").write_text(json.dumps({"status": "complete"}))
    frame = study_results.results_frame(study.load_results("paper"))
    row = frame[frame.id == lt.point.id].iloc[0]
    assert row.dataset == "cifar10_lt" and row.status == "complete"
    assert (row.knn1_class_averaged, row.knn10_class_averaged) == (41.5, 44.25)
    assert set(frame.dataset) == {"cifar10", "cifar100", "cifar10_lt", "cifar100_lt"}
    assert set(frame[frame.dataset == "cifar10"].ablation).isdisjoint(
        {"cifar100", "cifar10_lt", "cifar100_lt", "cifar10_lt_ts", "cifar100_lt_ts"}
    )


def test_ts_period_is_twice_the_profile_epochs() -> None:
    for profile in ("smoke", "quick", "paper"):
        ts = [
            ablations._profile_point(p, get_profile(profile))
            for p in ablations.ABLATIONS["baselines"].points
            if p.label == "TS"
        ]
        assert {p.parameters["period"] for p in ts} == {2 * get_profile(profile).epochs}


def test_plan_rejects_unknown_profile() -> None:
    with pytest.raises(ValueError, match="profile must be one of"):
        ablations.plan("huge")


# ---------------------------------------------------------------------------------------------- configs
def test_notebook_parameters_cover_every_config_field_and_temperature_parameter() -> None:
    import dataclasses

    from dystress.config import PretrainConfig

    names = set(study.notebook_parameters())
    assert {f.name for f in dataclasses.fields(PretrainConfig)} - {"profile"} <= names
    assert set(TEMPERATURE_PARAMETER_NAMES) <= names
    assert {"profile", "run_dir", "progress"} <= names


def test_build_config_routes_temperature_parameters(env: Path) -> None:
    c = study.build_config("quick", {"temperature": "constant", "tau": 0.3, "seed": 4})
    assert c.temperature == "constant" and c.temperature_params == {"tau": 0.3} and c.seed == 4
    c = study.build_config("quick", {"tau_min": 0.05, "tau_max": 0.3})
    assert c.temperature == get_profile("quick").temperature
    assert c.temperature_params == {"tau_min": 0.05, "tau_max": 0.3}
    c = study.build_config("quick", {"tau_min": 0.05})  # tau_max kept from the profile
    assert c.temperature_params == {
        "tau_min": 0.05,
        "tau_max": get_profile("quick").temperature_params["tau_max"],
    }
    assert c.data_root == str((env.parent / "data").resolve())


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"tau_mni": 0.1}, "unknown parameters \\['tau_mni'\\]"),
        ({"tau_min": -0.1}, "tau_min"),
        ({"tau_min": 0.3, "tau_max": 0.2}, "tau_max"),
        ({"temperature": "cosine", "tau": 0.2}, "unknown parameters \\['tau'\\] for temperature"),
        ({"temperature": "warm"}, "unknown temperature function"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_build_config_rejects_bad_parameters(env: Path, params: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        study.build_config("smoke", params)


def test_run_key_hashes_config_and_code(env: Path) -> None:
    a = study.build_config("smoke", {"tau_min": 0.1, "tau_max": 0.2})
    b = study.build_config("smoke", {"tau_min": 0.1, "tau_max": 0.2})
    assert provenance.run_folder_name(a, "c1") == provenance.run_folder_name(b, "c1")
    assert provenance.run_folder_name(a, "c1") != provenance.run_folder_name(a, "c2")
    for change in ({"seed": 1}, {"tau_max": 0.3}, {"lr": 0.02}, {"temperature": "linear"}):
        other = study.build_config("smoke", {"tau_min": 0.1, "tau_max": 0.2, **change})
        assert provenance.run_folder_name(other, "c1") != provenance.run_folder_name(a, "c1"), change
    moved = study.build_config("smoke", {"tau_min": 0.1, "tau_max": 0.2, "data_root": "/elsewhere"})
    assert provenance.run_folder_name(moved, "c1") == provenance.run_folder_name(
        a, "c1"
    )  # where the data lie is not identity
    assert provenance.run_folder_name(a, "c1").startswith("cosine_tau_max0.2_tau_min0.1_s0-")


def test_code_version_follows_template_code_not_markdown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nb = _make_notebooks_module().pretrain_run()
    path = tmp_path / "t.ipynb"
    monkeypatch.setattr(provenance, "template_path", lambda: path)
    nbformat.write(nb, path)
    v1 = provenance.code_version()
    nb.cells[0].source += "\nmore words"
    nbformat.write(nb, path)
    assert provenance.code_version() == v1
    nb.cells[-1].source += "\nprint(1)"
    nbformat.write(nb, path)
    assert provenance.code_version() != v1


def test_mean_ci95_matches_student_t() -> None:
    mean, half = findings.mean_ci95([1.0, 2.0, 3.0])
    assert mean == pytest.approx(2.0)
    assert half == pytest.approx(4.302652729911275 * 1.0 / math.sqrt(3), rel=1e-9)  # t(0.975, 2) sd / sqrt(n)
    mean, half = findings.mean_ci95([80.0, 82.0])
    assert mean == pytest.approx(81.0)
    assert half == pytest.approx(12.706204736174704 * math.sqrt(2.0) / math.sqrt(2), rel=1e-9)
    assert math.isnan(findings.mean_ci95([5.0])[1])
    with pytest.raises(ValueError, match="values"):
        findings.mean_ci95([])


# ---------------------------------------------------------------------------------------------- orchestration
def test_run_study_runs_skips_records_failures_and_resumes(
    env: Path, fake_template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_FAIL_TEMPERATURE", "shifted_cosine")
    out = io.StringIO()
    report = study.run_study("smoke", template=fake_template, only=["fixed_tau", "shifted"], stream=out)
    by_label = {r.point.label: r for r in report.results if r.point.ablation in ("fixed_tau", "shifted")}
    assert by_label["0.1"].status == "complete" and by_label["0.5"].status == "complete"
    assert by_label["(-0.4, 0.7)"].status == "failed"
    assert "planned failure of shifted_cosine" in by_label["(-0.4, 0.7)"].error
    assert by_label["0.1"].final["knn_top1"] == pytest.approx(10.0)
    assert len(report.ran) == 3
    run_dir = by_label["0.1"].run_dir
    assert run_dir.parent == env / "smoke"
    for name in ("run.ipynb", "run.json", "records.jsonl", "final_metrics.json"):
        assert (run_dir / name).is_file(), name
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "complete" and info["config"]["temperature_params"] == {"tau": 0.1}
    assert [r["epoch"] for r in by_label["0.1"].records()] == [1, 2]
    failed_nb = json.loads((by_label["(-0.4, 0.7)"].run_dir / "run.ipynb").read_text())
    assert failed_nb["metadata"]["papermill"]["exception"] is True
    text = out.getvalue()
    assert "[study 1/3]" in text and "[study 3/3]" in text and "2 more to run" in text
    assert (
        "1 failed" in text and "`dystress study run --profile smoke --retry-failed` runs them again" in text
    )

    # Nothing changed: nothing runs, and the failure is not retried unless asked.
    again = study.run_study(
        "smoke", template=fake_template, only=["fixed_tau", "shifted"], stream=io.StringIO()
    )
    assert again.ran == []
    monkeypatch.delenv("FAKE_FAIL_TEMPERATURE")
    retried = study.run_study(
        "smoke", template=fake_template, only=["shifted"], retry_failed=True, stream=io.StringIO()
    )
    assert len(retried.ran) == 1
    assert {r.status for r in retried.results if r.point.ablation == "shifted"} == {"complete"}

    # An interrupted run (started, no final metrics, no live lock) is executed again and resumes.
    target = by_label["0.5"].run_dir
    (target / "final_metrics.json").unlink()
    (target / "records.jsonl").write_text(json.dumps({"epoch": 1, "loss": 9.0}) + "\n")
    info = json.loads((target / "run.json").read_text())
    (target / "run.json").write_text(json.dumps({**info, "status": "running"}))
    resumed = study.run_study("smoke", template=fake_template, only=["fixed_tau"], stream=io.StringIO())
    assert resumed.ran == [by_label["0.5"].key]
    records = by_label["0.5"].records()
    assert records[0]["loss"] == 9.0 and [r["epoch"] for r in records] == [1, 2]
    assert json.loads((target / "final_metrics.json").read_text())["resumed_after"] == 1
    assert json.loads((target / "run.json").read_text())["attempts"] == 2


def test_run_study_only_keeps_a_run_shared_with_an_earlier_ablation(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # forms/cosine is the same configuration as dystress_grid/(0.07, 0.2), which comes first in the plan.
    forms = [p for p in ablations.plan("paper") if p.ablation == "forms"]
    assert dict(forms[0].parameters) == dict(
        next(p for p in ablations.plan("paper") if p.id == "dystress_grid/(0.07, 0.2)/s0").parameters
    )
    called: list[str] = []

    def fake_run_point(point, profile, *args):  # noqa: ANN001, ANN202
        called.append(point.id)
        return SimpleNamespace(key=point.id, status="complete", error=None)

    monkeypatch.setattr(runner, "run_point", fake_run_point)
    study.run_study("paper", only=["forms"], stream=io.StringIO())
    assert len(called) == len(forms) == 5
    assert {provenance.run_folder_name(study.build_config("paper", p.parameters)) for p in forms} == {
        r.key for r in study.load_results("paper") if r.point.id in called
    }


def test_ensure_results_raises_on_failure_and_only_reports_paper(
    env: Path, fake_template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = study.ensure_results("paper")
    assert report.ran == [] and not (env / "paper").exists()
    assert {r.status for r in report.results} <= {"missing", "invalid"}
    monkeypatch.setattr(provenance, "template_path", lambda: fake_template)
    monkeypatch.setattr(
        runner, "plan", lambda profile: [ablations._fixed(0.1), ablations._dystress(0.1, 0.2)]
    )
    done = study.load_results("smoke")[0].run_dir  # the fixed-tau run is already complete
    done.mkdir(parents=True)
    (done / "final_metrics.json").write_text("{}")
    (done / "run.json").write_text(json.dumps({"status": "complete"}))
    monkeypatch.setenv("FAKE_FAIL_TEMPERATURE", "cosine")
    with pytest.raises(RuntimeError, match="1 run\\(s\\) of profile 'smoke' failed"):
        study.ensure_results("smoke")
    statuses = {r.point.ablation: r.status for r in study.load_results("smoke")}
    assert statuses == {"fixed_tau": "complete", "dystress_grid": "failed"}


def test_prepare_run_rejects_unknown_names_and_picks_key_folder(env: Path) -> None:
    with pytest.raises(ValueError, match="unknown parameters \\['learning_rate'\\]"):
        study.prepare_run({"profile": "smoke", "learning_rate": 0.1})
    config, run_dir = study.prepare_run({"profile": "smoke", "tau_max": 0.3})
    assert run_dir == env.resolve() / "smoke" / provenance.run_folder_name(config)
    config, run_dir = study.prepare_run({"profile": "smoke", "run_dir": str(env / "mine")})
    assert run_dir == (env / "mine").resolve()


def test_cli_list_and_bad_arguments(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["study", "list", "--profile", "smoke"]) == 0
    out = capsys.readouterr().out
    assert "missing" in out and "fixed_tau/0.1/s0" in out
    assert f"code version {provenance.code_version()}" in out and "results of other code" not in out
    # --parallel N lists the folders that N runs at once would use (their thread count in the name)
    assert main(["study", "list", "--profile", "smoke", "--parallel", "2"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "fixed_tau/0.1/s0" in x)
    assert re.search(r"_t\d+-[0-9a-f]{12}$", line), line
    # a complete run of the same point under older code is pointed out (its folder has another key)
    point = next(p for p in ablations.plan("smoke") if p.id == "fixed_tau/0.1/s0")
    key = provenance.run_folder_name(study.build_config("smoke", point.parameters))
    older = env / "smoke" / (key.rsplit("-", 1)[0] + "-0123456789ab")
    older.mkdir(parents=True)
    (older / "final_metrics.json").write_text("{}")
    (env / "smoke" / (key.rsplit("-", 1)[0] + "_s1-0123456789ab")).mkdir()  # another slug: not listed
    assert main(["study", "list", "--profile", "smoke"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "fixed_tau/0.1/s0" in x)
    assert line.startswith("missing") and line.endswith(f"(results of other code: {older.name})")
    with pytest.raises(SystemExit):
        main(["study", "run", "--profile", "huge"])


def test_papermill_text_parameters_are_parsed_as_yaml(env: Path) -> None:
    """papermill -p passes lists and mappings as text: they are parsed, and a wrong shape names the
    parameter and the -y form."""
    config = study.build_config(
        "smoke", {"snapshot_epochs": "[0, 2]", "temperature": "constant", "temperature_params": "{tau: 0.3}"}
    )
    assert (config.snapshot_epochs, config.temperature, config.temperature_params) == (
        [0, 2],
        "constant",
        {"tau": 0.3},
    )
    with pytest.raises(ValueError, match=r"temperature_params must be a mapping .*-y 'temperature_params"):
        study.build_config("smoke", {"temperature_params": "0.3"})
    with pytest.raises(ValueError, match="snapshot_epochs must be YAML"):
        study.build_config("smoke", {"snapshot_epochs": "[0, 2"})
    with pytest.raises(ValueError, match="snapshot_epochs must be a list of integers"):
        study.build_config("smoke", {"snapshot_epochs": "[0, 7]"})


def test_notebook_runs_the_imagenet100_profile_on_a_given_folder(env: Path, tmp_path: Path) -> None:
    """The run notebook takes every profile of dystress.config; an image-folder one needs data_root."""
    with pytest.raises(
        ValueError, match="profile imagenet100 trains on an image folder: give its path as data_root"
    ):
        study.build_config("imagenet100", {"tau_min": 0.05})
    config, run_dir = study.prepare_run(
        {"profile": "imagenet100", "data_root": str(tmp_path), "tau_min": 0.05}
    )
    assert (config.dataset, config.data_root, config.backbone) == ("imagefolder", str(tmp_path), "resnet50")
    assert config.temperature_params == {"tau_min": 0.05, "tau_max": 0.2}
    assert run_dir == env.resolve() / "imagenet100" / provenance.run_folder_name(config)
    with pytest.raises(
        ValueError, match=r"profile must be one of \['smoke', 'quick', 'long', 'paper', 'imagenet100'\]"
    ):
        study.build_config("huge", {})


def test_run_study_skips_the_runs_of_a_dataset_whose_data_are_missing(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first CIFAR-100 run fails for want of data: the other CIFAR-100 runs are skipped (left
    missing), the CIFAR-10 runs still run, and the summary says how many were skipped."""
    called: list[str] = []

    def fake_run_point(point, profile, *args):  # noqa: ANN001, ANN202
        called.append(point.id)
        if point.ablation == "cifar100":
            return SimpleNamespace(
                key=point.id, status="failed", error="FileNotFoundError: cifar100: not found"
            )
        return SimpleNamespace(key=point.id, status="complete", error=None)

    monkeypatch.setattr(runner, "run_point", fake_run_point)
    out = io.StringIO()
    study.run_study("paper", only=["cifar100", "random_init"], stream=out)
    cifar100 = [p.id for p in ablations.plan("paper") if p.ablation == "cifar100"]
    assert called == ["random_init/random initialisation/s0", cifar100[0]]
    text = out.getvalue()
    assert f"skipped, no cifar100 data (see the failure of {cifar100[0]})" in text
    assert f"2 run now, 0 failed, {len(cifar100) - 1} skipped for missing data" in text
    # another failure (not missing data) does not stop the dataset's other runs
    called.clear()
    monkeypatch.setattr(
        runner,
        "run_point",
        lambda point, *a: (
            called.append(point.id) or SimpleNamespace(key=point.id, status="failed", error="ValueError: x")
        ),
    )
    study.run_study("paper", only=["cifar100"], stream=io.StringIO())
    assert called == cifar100


def test_code_only_drops_comments_and_docstrings_and_keeps_every_statement() -> None:
    source = '''"""Module docstring."""

import math  # a comment


class A:
    """Class docstring,
    on two lines."""

    x = "not a docstring"  # kept: an assignment

    def f(self) -> float:  # trailing comment
        """Method docstring."""
        return math.pi * 2   # twice

def g(): """one-liner docstring"""; return f"{1 + 1}#"
'''
    expected = '''import math


class A:

    x = "not a docstring"

    def f(self) -> float:

        return math.pi * 2

def g(): ; return f"{1 + 1}#"'''
    assert provenance._code_only(source).decode() == "\n".join(
        line.rstrip() for line in expected.splitlines() if line.strip()
    )
    edited = source.replace("# twice", "# two pi").replace("Method docstring.", "Returns 2 pi.")
    assert provenance._code_only(edited) == provenance._code_only(source)  # documentation only: same code
    assert provenance._code_only(source.replace("* 2", "* 3")) != provenance._code_only(source)
    assert provenance._code_only("def broken(:\n") == b"def broken(:\n"  # unparsable: as it is


def test_code_version_ignores_docstrings_of_engine_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    engine = package / "engine.py"
    engine.write_text('def f():\n    """Doc."""\n    return 1\n')
    monkeypatch.setattr(provenance, "counted_sources", lambda template=None: [("engine.py", engine)])
    v1 = provenance.code_version()
    engine.write_text('def f():\n    """Longer documentation."""\n    # a note\n    return 1\n')
    assert provenance.code_version() == v1
    engine.write_text('def f():\n    """Doc."""\n    return 2\n')
    assert provenance.code_version() != v1
