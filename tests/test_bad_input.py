"""Hostile but realistic input and faults, as a user meets them through the command line.

Every case asserts what the user reads (one line on stderr naming the parameter or file and what to do,
no traceback), the exit status (see :mod:`dystress.cli`: 2 bad input, 3 busy run folder, 4 refused file
operation, 130 interrupted) and that nothing was executed or half-written. Deeper cases live beside
their code and are named here so the list is whole: two real writers on one folder and a killed holder
(``test_runlock.py``), SIGKILL and resume bit for bit (``test_train.py``), killed checkpoint writers
(``test_io.py``), malicious and truncated pickles at the unpickler (``test_io.py``), undecodable images
in worker processes (``test_imagefolder.py``).
"""

from __future__ import annotations

import errno
import os
import pickle
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import dystress.cli as cli
import dystress.train as train_module
from dystress.cli import main
from dystress.runlock import run_folder_lock


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    def one_line(self, *needles: str) -> str:
        """The single stderr line; every needle is in it."""
        lines = [line for line in self.err.splitlines() if line.strip()]
        assert len(lines) == 1, self.err
        assert "Traceback" not in self.err
        for needle in needles:
            assert needle in lines[0], (needle, lines[0])
        return lines[0]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No location variables from `make test`; relative run folders land in the test's folder."""
    for name in ("DYSTRESS_DATA", "DYSTRESS_RUNS", "DYSTRESS_TRACEBACK", "DYSTRESS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> Outcome:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return Outcome(code, out, err)


def tiny(root: Path, *extra: str) -> list[str]:
    """A pretrain command of seconds on a fake CIFAR-10 under ``root`` (40 training images)."""
    sets = [
        f"data_root={root}",
        "download=false",
        "train_subset=null",
        "test_subset=null",
        "batch_size=8",
        "monitor_size=0",
        "snapshot_epochs=[]",
        "knn_k=5",
        "eval_batch_size=16",
        "epochs=1",
        *extra,
    ]
    return ["pretrain", "--profile", "smoke", "--no-progress"] + [a for s in sets for a in ("--set", s)]


def files_under(path: Path) -> list[str]:
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*")) if path.exists() else []


class Marker:
    """A pickle payload that would create ``path`` if it were ever run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.path}",))


# ------------------------------------------------------------------------------------ configuration
@pytest.mark.parametrize(
    ("setting", "needles"),
    [
        ("nonsense=1", ["unknown config key 'nonsense'"]),
        ("epochs=abc", ["epochs"]),
        ("lr=.nan", ["lr", "finite"]),
        ("weight_decay=.inf", ["weight_decay"]),
        ("batch_size=1", ["batch_size"]),
        ("temperature=warm", ["temperature", "warm"]),
        ("temperature_params.tau_min=-1", ["temperature", "tau_min"]),
        ("loss=dcl", []),  # with the profile's cosine temperature: allowed (checked below for macl)
        ("profile=../../escape", ["profile", "path separators"]),
        ("profile=/tmp/escape", ["profile", "path separators"]),
        ("profile=..", ["profile"]),
        ("snapshot_epochs=[99]", ["snapshot_epochs"]),
    ],
)
def test_bad_config_values_are_one_line_before_any_work(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, setting: str, needles: list[str]
) -> None:
    outcome = run(capsys, "config", "show", "--profile", "smoke", "--set", setting)
    if not needles:
        assert outcome.code == 0
        return
    assert outcome.code == 2
    outcome.one_line(*needles)
    assert files_under(tmp_path) == []


def test_dcl_refuses_macl_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    outcome = run(capsys, "config", "show", "--set", "temperature=macl", "--set", "loss=dcl")
    assert outcome.code == 2
    outcome.one_line("loss must be infonce with temperature macl")


def test_a_yaml_tag_runs_nothing(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    outcome = run(capsys, "config", "show", "--set", f"lr=!!python/object/apply:os.system ['touch {marker}']")
    assert outcome.code == 2 and not marker.exists()
    outcome.one_line("lr=")
    config = tmp_path / "c.yaml"
    config.write_text(f"lr: !!python/object/apply:os.system ['touch {marker}']\n")
    outcome = run(capsys, "config", "show", "--config", str(config))
    assert outcome.code == 2 and not marker.exists()
    outcome.one_line(str(config))


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"\xff\xfe\x00\x01binary", "is not text"),
        (b"[1, 2]", "must hold a mapping"),
        (b"lr: [", "not valid YAML"),
    ],
)
def test_a_config_file_that_is_not_a_config_is_named(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes, needle: str
) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    outcome = run(capsys, "config", "show", "--config", str(path))
    assert outcome.code == 2
    outcome.one_line(str(path), needle)


def test_a_missing_config_file_is_named(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    outcome = run(capsys, "config", "show", "--config", str(tmp_path / "none.yaml"))
    assert outcome.code == 2
    outcome.one_line("none.yaml", "does not exist")


def test_unknown_profile_and_command_are_argparse_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["pretrain", "--profile", "nope"], ["frobnicate"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        assert "invalid choice" in capsys.readouterr().err


def test_notebook_parameters_are_checked_before_any_work(tmp_path: Path) -> None:
    from dystress.study.notebook import prepare_run

    with pytest.raises(ValueError, match=r"unknown parameters \['tau_mni'\]"):
        prepare_run({"profile": "smoke", "tau_mni": 0.1})
    with pytest.raises(ValueError, match="snapshot_epochs must be YAML"):
        prepare_run({"profile": "smoke", "snapshot_epochs": "[0, "})
    with pytest.raises(ValueError, match="lr"):
        prepare_run({"profile": "smoke", "lr": -1.0})
    assert files_under(tmp_path) == []


# ------------------------------------------------------------------------------------ folders and files
def test_a_run_dir_that_is_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    outcome = run(capsys, "pretrain", "--profile", "smoke", "--run-dir", str(blocker / "run"))
    assert outcome.code == 4
    outcome.one_line(str(blocker), "a file stands where a folder is needed")


def test_runs_variable_naming_a_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "runs.txt"
    blocker.write_text("x")
    monkeypatch.setenv("DYSTRESS_RUNS", str(blocker))
    outcome = run(capsys, "pretrain", "--profile", "smoke")
    assert outcome.code == 4
    outcome.one_line(str(blocker))
    outcome = run(capsys, "study", "list", "--profile", "smoke")
    assert outcome.code == 4
    outcome.one_line(str(blocker))


def test_study_runs_option_naming_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    blocker = tmp_path / "runs.txt"
    blocker.write_text("x")
    outcome = run(capsys, "study", "run", "--profile", "smoke", "--runs", str(blocker))
    assert outcome.code == 4
    outcome.one_line(str(blocker), "a file stands where a folder is needed")
    assert blocker.read_text() == "x"


def test_study_with_a_missing_template(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    outcome = run(
        capsys, "study", "run", "--profile", "smoke", "--runs", str(tmp_path / "r"), "--template", "no.ipynb"
    )
    assert outcome.code == 2
    outcome.one_line("no.ipynb")
    assert files_under(tmp_path / "r") == []


def test_a_read_only_runs_folder(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Root ignores permission bits, so the refusal the kernel would give is raised where the lock is
    taken (the first write of a run, before any data is read)."""

    def refuse(run_dir: Path, wait: bool = False):  # noqa: ANN202
        raise PermissionError(errno.EACCES, "Permission denied", str(run_dir))

    monkeypatch.setattr(cli, "run_folder_lock_or_parents", refuse)
    outcome = run(capsys, "pretrain", "--profile", "smoke", "--run-dir", str(tmp_path / "ro"))
    assert outcome.code == 4
    outcome.one_line(str(tmp_path / "ro"), "Permission denied", "choose a folder you may write")


def test_a_full_disk_at_a_checkpoint_keeps_the_run_resumable(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_cifar10
) -> None:
    """A full disk fails the write or fsync with ENOSPC and no file name (as on /dev/full): the line
    names the checkpoint all the same, and the same command then finishes the run."""
    import dystress.io

    run_dir = tmp_path / "run"
    real_fsync = os.fsync

    def full(fd: int) -> None:
        name = os.readlink(f"/proc/self/fd/{fd}")
        if ".last.pt." in name and name.endswith(".partial"):  # the checkpoint's temporary file
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(dystress.io.os, "fsync", full)
    outcome = run(capsys, *tiny(fake_cifar10.root), "--run-dir", str(run_dir))
    assert outcome.code == 4
    outcome.one_line("last.pt", "No space left on device", "free space")
    assert not (run_dir / "final_metrics.json").exists()
    assert not list((run_dir / "checkpoints").glob("*.partial"))
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    assert run(capsys, *tiny(fake_cifar10.root), "--run-dir", str(run_dir)).code == 0


def test_evaluate_out_naming_a_folder_stops_before_computing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dystress.evaluate

    def never(*_: object, **__: object) -> None:
        raise AssertionError("evaluation ran")

    monkeypatch.setattr(dystress.evaluate, "evaluate_checkpoint", never)
    outcome = run(capsys, "evaluate", str(tmp_path / "x.pt"), "--out", str(tmp_path))
    assert outcome.code == 4
    outcome.one_line(str(tmp_path), "a folder stands where a file is needed")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    outcome = run(capsys, "evaluate", str(tmp_path / "x.pt"), "--out", str(blocker / "m.json"))
    assert outcome.code == 4
    outcome.one_line(str(blocker), "a file stands where a folder is needed")


def test_evaluate_batch_size_and_missing_checkpoint(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    outcome = run(capsys, "evaluate", str(tmp_path), "--batch-size", "0")
    assert outcome.code == 2
    outcome.one_line("--batch-size")
    outcome = run(capsys, "evaluate", str(tmp_path / "none.pt"))
    assert outcome.code == 2
    outcome.one_line("none.pt")


# ------------------------------------------------------------------------------------ checkpoints
@pytest.fixture
def trained(tmp_path: Path, fake_cifar10, capsys: pytest.CaptureFixture[str]) -> Path:
    """A complete tiny run folder."""
    run_dir = tmp_path / "trained"
    assert run(capsys, *tiny(fake_cifar10.root), "--run-dir", str(run_dir)).code == 0
    return run_dir


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "last.pt"),
        (lambda p: p.write_bytes(b"\x00garbage" * 100), "last.pt"),
        (lambda p: torch.save({"w": torch.zeros(1)}, p), "is not a dystress checkpoint"),
    ],
)
def test_a_damaged_or_foreign_checkpoint_is_named(
    capsys: pytest.CaptureFixture[str], trained: Path, make, needle: str
) -> None:
    make(trained / "checkpoints" / "last.pt")
    outcome = run(capsys, "evaluate", str(trained))
    assert outcome.code == 2
    outcome.one_line(needle)


def test_a_pickle_bomb_in_a_checkpoint_runs_nothing(
    capsys: pytest.CaptureFixture[str], trained: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    with open(trained / "checkpoints" / "last.pt", "wb") as f:
        pickle.dump(Marker(marker), f)
    outcome = run(capsys, "evaluate", str(trained))
    assert outcome.code == 2 and not marker.exists()
    outcome.one_line("last.pt")


def test_a_checkpoint_of_the_wrong_shape_names_the_entry(
    capsys: pytest.CaptureFixture[str], trained: Path, fake_cifar10
) -> None:
    ckpt = trained / "checkpoints" / "last.pt"
    state = torch.load(ckpt, weights_only=True)
    name = next(k for k, v in state["model"].items() if v.ndim == 4)
    state["model"][name] = torch.zeros(3, 3, 3, 3)
    state["epoch"], state["step"] = 0, 0  # so the two-epoch run below resumes from it
    torch.save(state, ckpt)
    (trained / "final_metrics.json").unlink()
    outcome = run(capsys, "evaluate", str(trained))
    assert outcome.code == 2
    outcome.one_line(str(ckpt), name, "shape")


def test_a_complete_run_is_not_trained_again(
    capsys: pytest.CaptureFixture[str], trained: Path, fake_cifar10
) -> None:
    before = (trained / "final_metrics.json").read_bytes()
    outcome = run(capsys, *tiny(fake_cifar10.root), "--run-dir", str(trained))
    assert outcome.code == 0
    outcome.one_line("was already complete", "nothing was trained")
    assert (trained / "final_metrics.json").read_bytes() == before


# ------------------------------------------------------------------------------------ one writer
def test_a_second_writer_stops_at_once(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, fake_cifar10
) -> None:
    run_dir = tmp_path / "held"
    with run_folder_lock(run_dir):
        outcome = run(capsys, *tiny(fake_cifar10.root), "--run-dir", str(run_dir))
    assert outcome.code == 3
    outcome.one_line(str(run_dir), f"process {os.getpid()}", "--wait")
    assert files_under(run_dir) == [".lock"]


def test_a_dead_writers_leftovers_block_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, fake_cifar10
) -> None:
    """A lock file and a partial checkpoint of a killed process: the next run takes the folder and the
    partial file is gone when it ends."""
    run_dir = tmp_path / "left"
    (run_dir / "checkpoints").mkdir(parents=True)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    (run_dir / ".lock").write_text(dead.stdout.strip())
    partial = run_dir / "checkpoints" / f".last.pt.{dead.stdout.strip()}.partial"
    partial.write_bytes(b"half a checkpoint")
    assert run(capsys, *tiny(fake_cifar10.root), "--run-dir", str(run_dir)).code == 0
    assert not partial.exists()
    assert (run_dir / "final_metrics.json").exists()


def test_ctrl_c_says_how_to_resume(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_cifar10
) -> None:
    def interrupted(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "pretrain", interrupted)
    outcome = run(capsys, *tiny(fake_cifar10.root), "--run-dir", str(tmp_path / "r"))
    assert outcome.code == 130
    outcome.one_line("interrupted", "resumes")


# ------------------------------------------------------------------------------------ data files
def _batch_file(root: Path) -> Path:
    return root / "cifar-10-batches-py" / "data_batch_1"


@pytest.mark.parametrize("damage", ["malicious", "truncated", "garbage", "wrong structure"])
def test_a_bad_cifar_batch_is_named_and_runs_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, fake_cifar10, damage: str
) -> None:
    batch = _batch_file(fake_cifar10.root)
    marker = tmp_path / "ran"
    if damage == "malicious":
        batch.write_bytes(pickle.dumps(Marker(marker), protocol=2))
    elif damage == "truncated":
        batch.write_bytes(batch.read_bytes()[:100])
    elif damage == "garbage":
        batch.write_bytes(os.urandom(256))
    else:
        batch.write_bytes(pickle.dumps({"data": [1, 2, 3]}, protocol=2))
    run_dir = tmp_path / "run"
    outcome = run(capsys, *tiny(fake_cifar10.root), "--run-dir", str(run_dir))
    assert outcome.code == 2 and not marker.exists()
    outcome.one_line(str(batch))
    assert not (run_dir / "final_metrics.json").exists()


def test_missing_data_without_download(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    outcome = run(capsys, *tiny(tmp_path / "nodata"), "--run-dir", str(tmp_path / "run"))
    assert outcome.code == 2
    outcome.one_line(str(tmp_path / "nodata"))


@pytest.mark.parametrize("content", [b"", b"not an image at all"])
def test_an_undecodable_image_in_a_folder_is_named_and_leaves_no_lock(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes
) -> None:
    from PIL import Image

    root = tmp_path / "folder"
    for split in ("train", "val"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (12, 12), (i * 90, 20, 30)).save(root / split / c / f"{i}.png")
    bad = root / "train" / "a" / "broken.jpg"
    bad.write_bytes(content)
    outcome = run(
        capsys,
        "data",
        "prepare",
        "--set",
        "dataset=imagefolder",
        "--set",
        f"data_root={root}",
        "--set",
        "image_size=8",
        "--set",
        "data_workers=1",
        "--set",
        "train_subset=null",
        "--set",
        "batch_size=2",
    )
    assert outcome.code == 2
    outcome.one_line(str(bad), "cannot decode")
    assert [p for p in (root / ".dystress_cache").rglob("*") if p.is_file()] == []


# ------------------------------------------------------------------------------------ library API
def test_the_loss_on_meta_tensors_under_autocast() -> None:
    import dystress

    loss_fn = dystress.InfoNCELoss(dystress.CosineTemperature(0.07, 0.2))
    z = torch.empty(8, 4, device="meta")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = loss_fn(z, z)
    assert loss.device.type == "meta" and loss.dim() == 0


@pytest.mark.parametrize(
    ("build", "needle"),
    [
        (lambda d: d.InfoNCELoss(temperature=-0.1), "tau"),
        (lambda d: d.CosineTemperature(tau_min=0.3, tau_max=0.2), "tau_min"),
        (
            lambda d: d.knn_accuracy(
                torch.full((4, 3), float("nan")),
                torch.zeros(4).long(),
                torch.ones(2, 3),
                torch.zeros(2).long(),
                k=1,
            ),
            "train_features contains NaN or inf",
        ),
    ],
)
def test_library_calls_name_the_bad_argument(build, needle: str) -> None:
    import dystress

    with pytest.raises(ValueError, match=needle):
        build(dystress)


# ------------------------------------------------------------------------------------ moved and retired names
def test_moved_names_say_where_they_went() -> None:
    with pytest.raises(ImportError, match="dystress.train.LARS moved: import it from dystress.optim"):
        from dystress.train import LARS  # noqa: F401
    with pytest.raises(ImportError, match="dystress.study.code_version moved: use dystress.provenance"):
        from dystress.study import code_version  # noqa: F401
    with pytest.raises(ImportError, match="dystress.results moved: use dystress.study.results"):
        from dystress import results  # noqa: F401


def test_a_temperature_written_for_the_old_contract_is_refused() -> None:
    from dystress.temperature import TemperatureFunction

    with pytest.raises(TypeError, match=r"defines \['anchor_weights'\].*MACLLoss"):

        class Old(TemperatureFunction):  # noqa: F841
            def _tau(self, s: torch.Tensor) -> torch.Tensor:
                return s

            def anchor_weights(self, log_prob: torch.Tensor) -> torch.Tensor:
                return log_prob


def test_a_damaged_json_file_of_a_run_is_named(
    capsys: pytest.CaptureFixture[str], trained: Path, fake_cifar10
) -> None:
    (trained / "final_metrics.json").write_text("{ half")
    outcome = run(capsys, *tiny(fake_cifar10.root), "--run-dir", str(trained))
    assert outcome.code == 2
    outcome.one_line(str(trained / "final_metrics.json"), "not valid JSON")


def test_only_rank_zero_takes_the_run_folder_lock(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_cifar10
) -> None:
    """Under torchrun every rank runs the command: rank 0 holds the folder for the job."""
    seen = []
    monkeypatch.setattr(
        train_module, "pretrain", lambda config, run_dir, progress: seen.append(run_dir) or {}
    )
    run_dir = tmp_path / "ddp"
    with run_folder_lock(run_dir):  # as rank 0 of the job would
        monkeypatch.setenv("RANK", "1")
        assert run(capsys, *tiny(fake_cifar10.root), "--run-dir", str(run_dir)).code == 0
    assert seen == [run_dir]


def test_ctrl_c_in_any_command_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "resolve_config", interrupted)
    outcome = run(capsys, "config", "show")
    assert outcome.code == 130
    outcome.one_line("dystress config: interrupted")
