"""The dystress command line: config resolution, help, error handling, forwarding."""

from __future__ import annotations

import dataclasses
import json
import types
from pathlib import Path

import pytest
import torch
import yaml

import dystress.train as train_module
from dystress.cli import main
from dystress.config import PretrainConfig, get_profile
from dystress.provenance import run_folder_name


@pytest.fixture(autouse=True)
def _no_location_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`make test` exports DYSTRESS_DATA / DYSTRESS_RUNS; these tests set them where they test them.
    Relative run folders (and their locks) land in the test's own folder."""
    monkeypatch.delenv("DYSTRESS_DATA", raising=False)
    monkeypatch.delenv("DYSTRESS_RUNS", raising=False)
    monkeypatch.chdir(tmp_path)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("profile", ["smoke", "quick", "paper"])
def test_config_show_prints_the_profile(capsys: pytest.CaptureFixture[str], profile: str) -> None:
    code, out, _ = _run(capsys, "config", "show", "--profile", profile)
    assert code == 0
    assert PretrainConfig.from_dict(yaml.safe_load(out)) == get_profile(profile)


def test_layering_profile_file_overrides(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.05\nepochs: 5\ntemperature_params: {tau_min: 0.05, tau_max: 0.3}\n")
    code, out, _ = _run(
        capsys, "config", "show", "--profile", "smoke", "--config", str(path), "--set", "epochs=4"
    )
    assert code == 0
    config = PretrainConfig.from_dict(yaml.safe_load(out))
    expected = get_profile("smoke").with_overrides(
        ["lr=0.05", "epochs=4", "temperature_params={tau_min: 0.05, tau_max: 0.3}"]
    )
    assert config == expected
    # without --profile and --config: the quick profile; with only --config: the dataclass defaults + file
    code, out, _ = _run(capsys, "config", "show")
    assert PretrainConfig.from_dict(yaml.safe_load(out)) == get_profile("quick")
    code, out, _ = _run(capsys, "config", "show", "--config", str(path))
    assert PretrainConfig.from_dict(yaml.safe_load(out)) == PretrainConfig().with_overrides(
        ["lr=0.05", "epochs=5", "temperature_params={tau_min: 0.05, tau_max: 0.3}"]
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["config", "show", "--set", "lr=-1"], "lr must be a finite number > 0"),
        (["config", "show", "--set", "learning_rate=1"], "unknown config key 'learning_rate'"),
        (["config", "show", "--set", "lr"], "key=value"),
        (["config", "show", "--set", "temperature=gaussian"], "unknown temperature function"),
        (["config", "show", "--config", "/nonexistent/c.yaml"], "does not exist"),
        (["pretrain", "--profile", "smoke", "--set", "epochs=-1"], "epochs must be an integer >= 0"),
        (["evaluate", "/nonexistent/last.pt"], "does not exist"),
    ],
)
def test_user_errors_exit_2_without_traceback(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, out, err = _run(capsys, *args)
    assert code == 2
    assert message in err and "Traceback" not in err and out == ""


def test_bad_config_file_content(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for text, message in [
        ("[1, 2]", "must hold a mapping"),
        ("a: [", "not valid YAML"),
        ("tau: 1", "unknown config keys"),
    ]:
        path = tmp_path / "c.yaml"
        path.write_text(text)
        code, _, err = _run(capsys, "config", "show", "--config", str(path))
        assert code == 2 and message in err, err


def test_foreign_checkpoint_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    torch.save({"w": torch.zeros(1)}, path)
    code, _, err = _run(capsys, "evaluate", str(path))
    assert code == 2 and "is not a dystress checkpoint" in err and str(path) in err


def test_argparse_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["pretrain", "--profile", "nope"], [], ["frobnicate"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
    capsys.readouterr()


def test_pretrain_help_lists_every_field_with_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["pretrain", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--profile", "--config", "--set", "--run-dir", "--no-progress"):
        assert option in out
    defaults = PretrainConfig()
    for f in dataclasses.fields(PretrainConfig):
        assert f"  {f.name} = {json.dumps(getattr(defaults, f.name))}" in out, f.name


def test_pretrain_default_run_dir(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = {}

    def fake_pretrain(config: PretrainConfig, run_dir: Path, progress: bool = True) -> dict:
        seen.update(config=config, run_dir=run_dir, progress=progress)
        return {"knn_top1": 12.5}

    monkeypatch.setattr(train_module, "pretrain", fake_pretrain)
    monkeypatch.chdir(tmp_path)
    code, out, _ = _run(capsys, "pretrain", "--profile", "smoke", "--set", "seed=3", "--no-progress")
    assert code == 0
    config = get_profile("smoke").with_overrides(["seed=3"])
    run_dir = Path("runs") / "smoke" / run_folder_name(config)
    assert seen == {"config": config, "run_dir": run_dir, "progress": False}
    assert "12.50" in out
    code, _, _ = _run(capsys, "pretrain", "--profile", "smoke", "--run-dir", "elsewhere")
    assert seen["run_dir"] == Path("elsewhere") and seen["progress"] is True


def test_divergence_exits_1(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def diverging(*args: object, **kwargs: object) -> dict:
        raise train_module.TrainingDiverged("non-finite loss at epoch 3, step 1")

    monkeypatch.setattr(train_module, "pretrain", diverging)
    code, _, err = _run(capsys, "pretrain", "--profile", "smoke")
    assert code == 1 and "epoch 3, step 1" in err and "Traceback" not in err


def test_study_command_parses_its_options(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import dystress.study.runner as runner

    calls = []

    def fake_run_study(*args: object, **kwargs: object) -> types.SimpleNamespace:
        calls.append((args, kwargs))
        return types.SimpleNamespace(by_status=lambda status: ["a run"] if status == "failed" else [])

    monkeypatch.setattr(runner, "run_study", fake_run_study)
    argv = ["study", "run", "--profile", "quick", "--retry-failed", "--only", "fixed_tau", "shifted"]
    code, _, _ = _run(capsys, *argv, "--parallel", "2")
    assert calls == [
        (
            ("quick", None, None, True, ["fixed_tau", "shifted"]),
            {"parallel": 2, "points": None, "engine": "notebook"},
        )
    ]
    assert code == 1  # a failed run
    for bad in (["study", "run", "--set", "lr=1"], ["study", "list", "--profile", "huge"], ["study"]):
        with pytest.raises(SystemExit) as info:
            main(bad)
        assert info.value.code == 2, bad


def test_evaluate_prints_and_writes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dystress.evaluate as evaluate_module

    seen = {}

    def fake(
        path: str,
        data_root: str | None = None,
        out: str | None = None,
        device: str = "auto",
        batch_size: int | None = None,
    ) -> dict:
        seen.update(path=path, data_root=data_root, out=out, device=device, batch_size=batch_size)
        return {"knn_top1": 50.0}

    monkeypatch.setattr(evaluate_module, "evaluate_checkpoint", fake)
    code, out, _ = _run(
        capsys,
        "evaluate",
        "c.pt",
        "--out",
        "o.json",
        "--data-root",
        "d",
        "--device",
        "cpu",
        "--batch-size",
        "64",
    )
    assert code == 0 and json.loads(out) == {"knn_top1": 50.0}
    assert seen == {
        "path": "c.pt",
        "data_root": "d",
        "out": "o.json",
        "device": "cpu",
        "batch_size": 64,
    }


def test_traceback_variable_reraises_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DYSTRESS_TRACEBACK", "1")
    with pytest.raises(ValueError, match="epochs must be an integer >= 0"):
        main(["config", "show", "--profile", "smoke", "--set", "epochs=-1"])


def test_data_prepare_decodes_an_image_folder_once_into_its_cache(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np
    from PIL import Image

    import dystress.data.imagefolder as imagefolder

    rng = np.random.default_rng(0)
    for split, count in (("train", 5), ("val", 2)):
        for c in ("cat", "dog"):
            (tmp_path / "folder" / split / c).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, size=(12 + i, 10, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / "folder" / split / c / f"{i}.png")
    monkeypatch.setenv("DYSTRESS_CACHE", str(tmp_path / "cache"))
    argv = ["data", "prepare", "--profile", "smoke", "--set", f"data_root={tmp_path / 'folder'}"]
    argv += ["--set", "dataset=imagefolder", "--set", "image_size=8", "--set", "train_subset=null"]
    argv += ["--set", "test_subset=null", "--set", "batch_size=4", "--set", "data_workers=0"]
    code, out, _ = _run(capsys, *argv)
    assert code == 0
    assert out.splitlines() == [
        f"train: 10 images 3x8x8 uint8 ({10 * 192 / 1e9:.2f} GB), 2 classes (imagefolder)",
        f"test: 4 images 3x8x8 uint8 ({4 * 192 / 1e9:.2f} GB), 2 classes (imagefolder)",
        f"cache: {tmp_path / 'cache'}",
    ]
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2

    def no_decoding(*args: object) -> None:
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(imagefolder, "_decode_one", no_decoding)
    assert _run(capsys, *argv)[0] == 0


def test_data_prepare_reports_a_missing_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = ["data", "prepare", "--profile", "imagenet100", "--set", f"data_root={tmp_path / 'absent'}"]
    code, _, err = _run(capsys, *argv)
    assert code == 2 and f"{tmp_path / 'absent'}/train not found" in err


def test_location_environment_variables(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$DYSTRESS_DATA is the data root unless the config sets one; $DYSTRESS_RUNS holds default run dirs."""
    seen = {}

    def fake_pretrain(config: PretrainConfig, run_dir: Path, progress: bool = True) -> dict:
        seen.update(config=config, run_dir=run_dir)
        return {"knn_top1": 1.0}

    monkeypatch.setattr(train_module, "pretrain", fake_pretrain)
    monkeypatch.setenv("DYSTRESS_DATA", str(tmp_path / "d"))
    monkeypatch.setenv("DYSTRESS_RUNS", str(tmp_path / "r"))
    assert _run(capsys, "pretrain", "--profile", "smoke")[0] == 0
    config = get_profile("smoke").updated({"data_root": str(tmp_path / "d")})
    assert seen == {"config": config, "run_dir": tmp_path / "r" / "smoke" / run_folder_name(config)}
    assert config.run_id() == get_profile("smoke").run_id()  # the data root is not part of the identity
    _run(capsys, "pretrain", "--profile", "smoke", "--set", "data_root=mine")
    assert seen["config"].data_root == "mine"
    path = tmp_path / "c.yaml"
    path.write_text("data_root: fromfile\n")
    _run(capsys, "pretrain", "--profile", "smoke", "--config", str(path))
    assert seen["config"].data_root == "fromfile"
    code, out, _ = _run(capsys, "config", "show", "--profile", "smoke")
    assert yaml.safe_load(out)["data_root"] == str(tmp_path / "d")


def test_interrupted_pretrain_says_how_to_resume(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: object, **kwargs: object) -> dict:
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "pretrain", interrupted)
    code, _, err = _run(capsys, "pretrain", "--profile", "smoke", "--run-dir", "r1")
    assert code == 130 and "interrupted; the same command resumes r1 from its last checkpoint" in err
    assert "Traceback" not in err


def test_a_complete_run_says_nothing_was_trained(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(train_module, "pretrain", lambda *a, **k: {"knn_top1": 40.0})
    run_dir = tmp_path / "run"
    code, out, err = _run(capsys, "pretrain", "--profile", "smoke", "--run-dir", str(run_dir))
    assert code == 0 and "40.00" in out and "already complete" not in err
    run_dir.mkdir(exist_ok=True)  # made by the run folder's lock
    (run_dir / "final_metrics.json").write_text("{}")
    code, out, err = _run(capsys, "pretrain", "--profile", "smoke", "--run-dir", str(run_dir))
    assert code == 0 and "40.00" in out
    assert f"{run_dir} was already complete" in err and "nothing was trained" in err


def test_evaluate_takes_a_run_folder_and_checks_the_batch_size(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dystress.evaluate as evaluate_module

    seen = {}
    monkeypatch.setattr(
        evaluate_module,
        "evaluate_checkpoint",
        lambda path, **kwargs: seen.update(path=path) or {"knn_top1": 1.0},
    )
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"")
    assert _run(capsys, "evaluate", str(run))[0] == 0
    assert seen["path"] == str(run)  # evaluate_checkpoint takes a run folder (checkpoint_file)
    code, out, err = _run(capsys, "evaluate", str(run), "--batch-size", "0")
    assert code == 2 and "--batch-size must be an integer >= 1, got 0" in err and out == ""
    monkeypatch.undo()
    code, _, err = _run(capsys, "evaluate", str(tmp_path))
    assert code == 2 and f"run folder {tmp_path} has no checkpoint {tmp_path}/checkpoints/last.pt" in err
    (tmp_path / "notes.txt").write_text("not a checkpoint\n" * 50)
    code, _, err = _run(capsys, "evaluate", str(tmp_path / "notes.txt"))
    assert code == 2 and "cannot be read (truncated or not a checkpoint)" in err
    assert len(err.splitlines()) == 1 and len(err) < 500
