"""The pretraining loop: schedule, LARS, run-dir contents, monitor wiring, divergence, resume."""

from __future__ import annotations

import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import dystress.runtime as runtime
import dystress.train as train_module
from dystress.checkpoint import load_checkpoint
from dystress.config import PretrainConfig, get_profile
from dystress.evaluate import evaluate_checkpoint, load_pretrained
from dystress.io import read_jsonl
from dystress.optim import LARS, build_optimizer, lr_at
from dystress.process_group import timeout_minutes
from dystress.train import TrainingDiverged, pretrain

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:cifar10. md5:UserWarning")


def write_lossless_cifar10(npz: Path, root: Path) -> Path:
    """The real lossless 4,000 / 1,000 CIFAR-10 images in the official pickle layout under root."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    with np.load(npz) as z:
        x_train, y_train = z["x_train"].transpose(0, 3, 1, 2), z["y_train"]
        x_test, y_test = z["x_test"].transpose(0, 3, 1, 2), z["y_test"]
        classes = [str(c) for c in z["class_names"]]
    for k, part in enumerate(np.array_split(np.arange(len(x_train)), 5)):
        batch = {"data": x_train[part].reshape(len(part), -1), "labels": y_train[part].tolist()}
        (folder / f"data_batch_{k + 1}").write_bytes(pickle.dumps(batch, protocol=2))
    test = {"data": x_test.reshape(len(x_test), -1), "labels": y_test.tolist()}
    (folder / "test_batch").write_bytes(pickle.dumps(test, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": classes}, protocol=2))
    return root


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory: pytest.TempPathFactory, lossless_cifar10_path: Path) -> Path:
    return write_lossless_cifar10(lossless_cifar10_path, tmp_path_factory.mktemp("cifar"))


def smoke_config(root: Path, *overrides: str) -> PretrainConfig:
    return get_profile("smoke").with_overrides([f"data_root={root}", "download=false", *overrides])


# --------------------------------------------------------------------------------------- schedule
@pytest.mark.parametrize(("total", "warmup"), [(10, 0), (10, 3), (100, 10), (7, 7), (1, 0)])
def test_lr_schedule(total: int, warmup: int) -> None:
    base = 0.3
    lrs = [lr_at(s, total, warmup, base) for s in range(total)]
    for s, lr in enumerate(lrs):
        if s < warmup:
            assert lr == pytest.approx(base * (s + 1) / warmup, rel=1e-12)
        else:
            k, n = s - warmup, total - warmup
            assert lr == pytest.approx(base * (1 + math.cos(math.pi * k / n)) / 2, rel=1e-12)
    if warmup < total:
        assert lrs[warmup] == pytest.approx(base)  # the peak right after warm-up
        assert all(a >= b for a, b in zip(lrs[warmup:], lrs[warmup + 1 :], strict=False))
        assert lr_at(total, total, warmup, base) == pytest.approx(0.0, abs=1e-12)  # cosine ends at 0


# --------------------------------------------------------------------------------------- LARS
def _lars_reference(ws, gs_per_step, excluded, lr, momentum, wd, eta):  # noqa: ANN001, ANN202
    """Float64 loops: trust ratio eta |w| / (|g| + wd |w|) on g + wd w, then heavy-ball momentum."""
    ws = [w.double().clone() for w in ws]
    bufs = [None] * len(ws)
    for gs in gs_per_step:
        for i, (w, g) in enumerate(zip(ws, gs, strict=True)):
            g = g.double()
            if not excluded[i]:
                wn = math.sqrt(sum(float(v) ** 2 for v in w.flatten()))
                gn = math.sqrt(sum(float(v) ** 2 for v in g.flatten()))
                trust = eta * wn / (gn + wd * wn) if wn > 0 and gn > 0 else 1.0
                d = (g + wd * w) * trust
            else:
                d = g
            bufs[i] = d.clone() if bufs[i] is None or momentum == 0 else momentum * bufs[i] + d
            ws[i] = w - lr * bufs[i]
    return ws


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("wd", [0.0, 1e-4, 0.1])
@pytest.mark.parametrize("eta", [0.001, 0.02])
def test_lars_matches_reference(momentum: float, wd: float, eta: float) -> None:
    g = torch.Generator().manual_seed(0)
    shapes = [(4, 3), (3,), (2, 2, 3), (5,)]
    excluded = [False, True, False, True]
    ws = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    ws[2].zero_()  # a zero weight: trust ratio 1
    params = [nn.Parameter(w.clone()) for w in ws]
    groups = [
        {"params": [p for p, e in zip(params, excluded, strict=True) if not e]},
        {
            "params": [p for p, e in zip(params, excluded, strict=True) if e],
            "lars_exclude": True,
            "weight_decay": 0.0,
        },
    ]
    opt = LARS(groups, lr=0.5, momentum=momentum, weight_decay=wd, eta=eta)
    steps = [[torch.randn(s, generator=g, dtype=torch.float64) for s in shapes] for _ in range(3)]
    for gs in steps:
        for p, grad in zip(params, gs, strict=True):
            p.grad = grad.clone()
        opt.step()
    expected = _lars_reference(ws, steps, excluded, 0.5, momentum, wd, eta)
    for p, e in zip(params, expected, strict=True):
        torch.testing.assert_close(p.detach(), e, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": 0.0}, "lr"),
        ({"momentum": 1.0}, "momentum"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"eta": 0.0}, "eta"),
    ],
)
def test_lars_validates(kwargs: dict, message: str) -> None:
    args = {"lr": 0.1, **kwargs}
    with pytest.raises(ValueError, match=message):
        LARS([nn.Parameter(torch.zeros(2))], **args)


def test_build_optimizer_groups() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    lars = build_optimizer(
        model, get_profile("smoke").with_overrides(["optimizer=lars", "weight_decay=1e-3"])
    )
    assert isinstance(lars, LARS)
    adapted, excluded = lars.param_groups
    assert {id(p) for p in adapted["params"]} == {id(model[0].weight), id(model[3].weight)}
    assert len(excluded["params"]) == 4 and excluded["lars_exclude"] and excluded["weight_decay"] == 0.0
    assert adapted["weight_decay"] == 1e-3 and not adapted["lars_exclude"]
    sgd = build_optimizer(model, get_profile("paper"))
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.param_groups[0]["momentum"] == 0.0 and not sgd.param_groups[0]["nesterov"]
    assert sgd.param_groups[0]["weight_decay"] == 5e-4


# --------------------------------------------------------------------------------------- a whole run
def _uniformity64(f: torch.Tensor) -> float:
    z = nn.functional.normalize(f.double(), dim=1)
    d2 = torch.cdist(z, z).pow(2)
    off = ~torch.eye(len(z), dtype=torch.bool)
    return math.log(torch.exp(-2 * d2[off]).mean().item())


def _tolerance64(f: torch.Tensor, y: torch.Tensor) -> float:
    z = nn.functional.normalize(f.double(), dim=1)
    total, count = 0.0, 0
    for c in y.unique():
        zc = z[y == c]
        s = zc @ zc.T
        total += float(s.sum() - s.diagonal().sum())
        count += len(zc) * (len(zc) - 1)
    return total / count


@pytest.fixture(scope="module")
def smoke_run(
    cifar_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[PretrainConfig, Path, dict]:
    config = smoke_config(cifar_root)
    run_dir = tmp_path_factory.mktemp("run")
    return config, run_dir, pretrain(config, run_dir, progress=False)


def test_run_dir_contents(smoke_run) -> None:  # noqa: ANN001
    config, run_dir, metrics = smoke_run
    assert json.loads((run_dir / "config.json").read_text()) == config.to_dict()
    assert json.loads((run_dir / "final_metrics.json").read_text()) == metrics
    records = read_jsonl(run_dir / "records.jsonl")
    assert [r["epoch"] for r in records] == [1, 2]
    assert [r["step"] for r in records] == [4, 8]  # 512 images / batch 128
    for r in records:
        for key in (
            "loss",
            "lr",
            "tau_pos",
            "tau_neg",
            "sim_pos",
            "sim_neg",
            "monitor_knn_top1",
            "images_per_second",
        ):
            assert math.isfinite(r[key]), key
        # DySTreSS (0.1, 0.2): tau in range, tau_pos = tau(sim_pos) only approximately (a mean of tau)
        assert 0.1 <= r["tau_pos"] <= 0.2 and 0.1 <= r["tau_neg"] <= 0.2
        assert -1 <= r["sim_neg"] <= r["sim_pos"] <= 1
    # the last step's lr of the per-step cosine schedule
    assert records[-1]["lr"] == pytest.approx(lr_at(7, 8, 0, config.lr))
    for r in records:  # the regime of every step's 256 anchors x 254 negatives (dystress.regime)
        assert sum(r["neg_sim_hist"]) == 4 * 256 * 254 and sum(r["pos_sim_hist"]) == 4 * 256
        assert -1 <= r["neg_sim_q05"] <= r["neg_sim_q50"] <= r["neg_sim_q95"] <= r["neg_sim_q99"] <= 1
        assert 0 <= r["neg_close_share"] <= 1 and 0 < r["neg_tau_raised_share"] < 1
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt", config=config.to_dict())
    assert (state["epoch"], state["step"]) == (2, 8)
    assert metrics["bank_size"] == 512 and metrics["test_size"] == 1000
    assert 0 <= metrics["knn10_majority"] <= 100 and 0 <= metrics["knn200_majority"] <= 100
    assert metrics["knn_k"] == config.knn_k and metrics["knn_t"] == config.knn_t
    assert 0 <= metrics["knn_top1"] <= 100 and metrics["knn_top1"] <= metrics["knn_top5"]
    assert metrics["run_id"] == config.run_id() and metrics["epochs"] == 2
    assert metrics["final_loss"] == records[-1]["loss"]
    assert metrics["train_seconds"] == pytest.approx(sum(r["epoch_seconds"] for r in records))
    phases = metrics["phase_seconds"]  # where this start's wall time went (issue: the book's breakdown)
    assert set(phases) == {"set_up", "train", "monitor", "snapshots", "checkpoints", "final_evaluation"}
    assert all(v >= 0 for v in phases.values())
    assert phases["train"] == pytest.approx(metrics["train_seconds"], abs=2e-3)
    assert phases["monitor"] == pytest.approx(sum(r["monitor_seconds"] for r in records), abs=2e-3)


def test_snapshots_and_monitor_wiring(smoke_run, cifar_root: Path) -> None:  # noqa: ANN001
    config, run_dir, _ = smoke_run
    expected = ["epoch_0000.pt", "epoch_0001.pt", "epoch_0002.pt"]
    assert sorted(p.name for p in (run_dir / "snapshots").iterdir()) == expected
    test_labels = torch.tensor(
        pickle.loads((cifar_root / "cifar-10-batches-py" / "test_batch").read_bytes())["labels"]
    )
    last = read_jsonl(run_dir / "records.jsonl")[-1]
    snaps = {}
    for epoch in (0, 2):
        snap = torch.load(run_dir / "snapshots" / f"epoch_{epoch:04d}.pt", weights_only=True)
        assert snap["epoch"] == epoch
        assert (
            snap["features"].shape == (config.monitor_size, 256) and snap["features"].dtype == torch.float32
        )
        assert snap["view0"].shape == snap["view1"].shape == snap["features"].shape
        assert torch.equal(snap["labels"], test_labels[snap["indices"]])
        assert len(set(snap["indices"].tolist())) == config.monitor_size
        snaps[epoch] = snap
    assert torch.equal(snaps[0]["indices"], snaps[2]["indices"])  # a fixed monitor subset
    assert not torch.equal(snaps[0]["features"], snaps[2]["features"])  # training changed the features
    assert not torch.equal(snaps[2]["view0"], snaps[2]["view1"])  # two different views
    # the epoch-2 record's geometry is that of the epoch-2 snapshot (float64 references)
    s = snaps[2]
    assert last["monitor_uniformity"] == pytest.approx(_uniformity64(s["features"]), rel=1e-4, abs=1e-5)
    assert last["monitor_tolerance"] == pytest.approx(
        _tolerance64(s["features"], s["labels"]), rel=1e-4, abs=1e-5
    )
    z0 = nn.functional.normalize(s["view0"].double(), dim=1)
    z1 = nn.functional.normalize(s["view1"].double(), dim=1)
    assert last["monitor_alignment"] == pytest.approx(
        float((z0 - z1).pow(2).sum(1).mean()), rel=1e-4, abs=1e-6
    )


def test_snapshots_hold_the_projector_outputs_of_the_views(smoke_run) -> None:  # noqa: ANN001
    """proj_view0/1 are the eval-mode projector of the stored backbone view features (the last
    snapshot is taken after the last epoch, with the weights of the final checkpoint)."""
    config, run_dir, _ = smoke_run
    snap = torch.load(run_dir / "snapshots" / "epoch_0002.pt", weights_only=True)
    pre = load_pretrained(run_dir / "checkpoints" / "last.pt")
    assert pre.epoch == 2 and pre.config == config and not pre.model.training
    for i in (0, 1):
        proj = snap[f"proj_view{i}"]
        assert proj.shape == (config.monitor_size, config.projector_out_dim) and proj.dtype == torch.float32
        with torch.no_grad():
            expected = pre.model.projector(snap[f"view{i}"])
        torch.testing.assert_close(proj, expected, rtol=1e-5, atol=1e-6)


def test_load_pretrained_validates_the_device_and_leaves_the_global_rng_alone(smoke_run) -> None:  # noqa: ANN001
    _, run_dir, _ = smoke_run
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_pretrained(run_dir / "checkpoints" / "last.pt")
    assert torch.equal(torch.rand(3), expected)
    with pytest.raises(ValueError, match=r"device must be one of \['auto', 'cpu', 'cuda'\], got 'gpu'"):
        load_pretrained(run_dir / "checkpoints" / "last.pt", device="gpu")


def test_load_pretrained_takes_a_run_folder(smoke_run, tmp_path: Path) -> None:  # noqa: ANN001
    _, run_dir, _ = smoke_run
    from_folder, from_file = load_pretrained(run_dir), load_pretrained(run_dir / "checkpoints" / "last.pt")
    assert from_folder.epoch == from_file.epoch == 2 and from_folder.config == from_file.config
    for (name, a), (_, b) in zip(
        from_folder.model.state_dict().items(), from_file.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    with pytest.raises(FileNotFoundError, match=r"run folder .* has no checkpoint .*last.pt"):
        load_pretrained(tmp_path)


def test_a_run_dir_holding_only_a_config_is_free(cifar_root: Path, tmp_path: Path) -> None:
    """A run that stopped before writing anything but config.json (its data failed to load) does not
    claim the folder; one with a record does."""
    config = smoke_config(cifar_root)
    (tmp_path / "config.json").write_text(config.with_overrides(["lr=0.02"]).to_json())
    train_module._check_run_dir_config(tmp_path, config)  # no error: nothing was trained there
    (tmp_path / "records.jsonl").write_text("{}\n")
    with pytest.raises(ValueError, match=r"belongs to another run \(differs in \['lr'\]\)"):
        train_module._check_run_dir_config(tmp_path, config)


def test_pretrain_names_arguments_of_the_wrong_kind(cifar_root: Path, tmp_path: Path) -> None:
    config = smoke_config(cifar_root)
    with pytest.raises(ValueError, match=r"config must be a PretrainConfig \(PretrainConfig.from_dict"):
        pretrain(config.to_dict(), tmp_path)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="run_dir must be a folder path"):
        pretrain(config, None)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_evaluate_checkpoint_reproduces_final_metrics(smoke_run, tmp_path: Path) -> None:  # noqa: ANN001
    config, run_dir, metrics = smoke_run
    out = tmp_path / "eval.json"
    result = evaluate_checkpoint(run_dir / "checkpoints" / "last.pt", out=out)
    assert json.loads(out.read_text()) == result
    for key in (
        "knn_top1",
        "knn_top5",
        "uniformity",
        "tolerance",
        "inter_class_uniformity",
        "alignment",
        "bank_size",
        "knn10_majority",
        "knn200_majority",
    ):
        assert result[key] == pytest.approx(metrics[key], rel=1e-6, abs=1e-9), key
    assert result["epoch"] == 2 and result["run_id"] == config.run_id()


def test_completed_run_is_returned_without_training(smoke_run, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    config, run_dir, metrics = smoke_run

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("trained again")

    monkeypatch.setattr(train_module, "_pretrain", fail)
    assert pretrain(config, run_dir, progress=False) == metrics


def test_run_dir_of_another_config_is_refused(smoke_run) -> None:  # noqa: ANN001
    config, run_dir, _ = smoke_run
    with pytest.raises(ValueError, match=r"config.json belongs to another run \(differs in \['lr'\]\)"):
        pretrain(config.with_overrides(["lr=0.02"]), run_dir, progress=False)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
    cifar_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_step = train_module.train_step
    calls = {"n": 0}

    def poisoned(model, loss_fn, optimizer, v0, v1, *rest):  # noqa: ANN001, ANN002, ANN202
        calls["n"] += 1
        loss = real_step(model, loss_fn, optimizer, v0, v1, *rest)
        return loss * float("nan") if calls["n"] == 4 else loss  # epoch 2, step index 1 (2 steps per epoch)

    monkeypatch.setattr(train_module, "train_step", poisoned)
    config = smoke_config(cifar_root, "train_subset=256", "monitor_size=0", "snapshot_epochs=[]")
    with pytest.raises(TrainingDiverged, match=r"non-finite loss at epoch 2, step 1 of 2 \(global step 3\)"):
        pretrain(config, tmp_path, progress=False)
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["epoch"] == 1
    assert [r["epoch"] for r in read_jsonl(tmp_path / "records.jsonl")] == [1]
    assert not (tmp_path / "final_metrics.json").exists()


def test_the_ts_schedule_counts_epochs_from_one(cifar_root: Path, tmp_path: Path) -> None:
    """As in Kukleva et al.'s code: epoch t = 1, 2 of period 4 train at 0.55 and tau_minus."""
    config = smoke_config(
        cifar_root,
        "train_subset=256",
        "monitor_size=0",
        "snapshot_epochs=[]",
        "temperature=ts_schedule",
        "temperature_params={tau_plus: 1.0, tau_minus: 0.1, period: 4}",
    )
    pretrain(config, tmp_path, progress=False)
    taus = [r["tau_pos"] for r in read_jsonl(tmp_path / "records.jsonl")]
    assert taus == pytest.approx([0.55, 0.1], rel=1e-6)
    assert all(r["neg_tau_raised_share"] is None for r in read_jsonl(tmp_path / "records.jsonl"))


def test_non_finite_weights_stop_the_run_even_when_the_loss_is_finite(
    cifar_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_step = train_module.train_step
    calls = {"n": 0}

    def overflowing(model, loss_fn, optimizer, v0, v1, *rest):  # noqa: ANN001, ANN002, ANN202
        calls["n"] += 1
        loss = real_step(model, loss_fn, optimizer, v0, v1, *rest)
        if calls["n"] == 4:  # the last step of epoch 2: its update overflows, its loss was finite
            with torch.no_grad():
                next(model.parameters()).view(-1)[0] = float("inf")
        return loss

    monkeypatch.setattr(train_module, "train_step", overflowing)
    config = smoke_config(cifar_root, "train_subset=256", "monitor_size=64", "snapshot_epochs=[]")
    with pytest.raises(TrainingDiverged, match=r"non-finite weights at the end of epoch 2 \(every loss"):
        pretrain(config, tmp_path, progress=False)
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    extra = {"world_size": 1, "device_type": "cpu", "bf16": False, "cpu_threads": torch.get_num_threads()}
    assert state["epoch"] == 1 and state["extra"] == extra
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert [r["epoch"] for r in read_jsonl(tmp_path / "records.jsonl")] == [1]


def test_resume_with_another_world_size_is_refused(cifar_root: Path, tmp_path: Path) -> None:
    from dystress.checkpoint import CheckpointError
    from dystress.io import atomic_torch_save

    config = smoke_config(cifar_root, "train_subset=256", "monitor_size=0", "snapshot_epochs=[]", "epochs=1")
    pretrain(config, tmp_path, progress=False)
    (tmp_path / "final_metrics.json").unlink()
    ckpt = tmp_path / "checkpoints" / "last.pt"
    state = load_checkpoint(ckpt)
    state["extra"]["world_size"] = 2
    atomic_torch_save(ckpt, state)
    with pytest.raises(CheckpointError, match=r"written by a run of 2 process\(es\), this one has 1"):
        pretrain(config, tmp_path, progress=False)


@pytest.mark.parametrize(
    ("key", "written", "message"),
    [
        ("device_type", "cuda", r"device_type = 'cuda', this run has 'cpu' \(device = 'auto'"),
        ("bf16", True, r"bf16 = True, this run has False \(device = 'auto', precision = 'auto', num_threads"),
        ("cpu_threads", 64, r"cpu_threads = 64, this run has \d+ \(device = 'auto'.*with the thread count"),
    ],
)
def test_resume_on_another_kind_of_device_or_precision_is_refused(
    cifar_root: Path, tmp_path: Path, key: str, written: object, message: str
) -> None:
    """device = auto and precision = auto resolve per machine: a run begun on a GPU in bf16 keeps its
    id on a CPU, but its checkpoint does not go on there in fp32."""
    from dystress.checkpoint import CheckpointError
    from dystress.io import atomic_torch_save

    config = smoke_config(
        cifar_root,
        "train_subset=256",
        "monitor_size=0",
        "snapshot_epochs=[]",
        "epochs=2",
        "device=auto",
        "precision=auto",
    )
    pretrain(config.with_overrides(["epochs=1"]), tmp_path / "short", progress=False)
    ckpt = tmp_path / "short" / "checkpoints" / "last.pt"
    state = load_checkpoint(ckpt)
    assert (state["extra"]["device_type"], state["extra"]["bf16"]) == ("cpu", False)
    state["config"], state["extra"][key] = config.to_dict(), written  # as if written by the 2-epoch run
    atomic_torch_save(tmp_path / "run" / "checkpoints" / "last.pt", state)
    with pytest.raises(CheckpointError, match=message):
        pretrain(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "final_metrics.json").exists()


def test_old_checkpoints_are_checked_against_the_world_size_of_their_record(
    cifar_root: Path, tmp_path: Path
) -> None:
    from dystress.checkpoint import CheckpointError
    from dystress.io import append_jsonl, atomic_torch_save

    config = smoke_config(cifar_root, "train_subset=256", "monitor_size=0", "snapshot_epochs=[]", "epochs=2")
    short = config.with_overrides(["epochs=1"])
    ckpt, records = tmp_path / "checkpoints" / "last.pt", tmp_path / "records.jsonl"
    # a run of two epochs stopped after epoch 1, its checkpoint written before the world_size entry
    pretrain(short, tmp_path, progress=False)
    state = load_checkpoint(ckpt)
    state["config"] = config.to_dict()
    state["extra"] = {}
    atomic_torch_save(ckpt, state)
    (tmp_path / "final_metrics.json").unlink()
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    kept = read_jsonl(records)
    records.unlink()
    for r in kept:
        append_jsonl(records, {**r, "world_size": 2})  # the record says: two processes
    with pytest.raises(CheckpointError, match=r"written by a run of 2 process\(es\), this one has 1"):
        pretrain(config, tmp_path, progress=False)
    records.unlink()  # no record of its epoch: nothing to check against, the resume goes on
    metrics = pretrain(config, tmp_path, progress=False)
    assert metrics["epochs"] == 2 and [r["epoch"] for r in read_jsonl(records)] == [2]


def test_bf16_auto_needs_native_support_and_fp32_names_tf32(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def native_only(including_emulation: bool = True) -> bool:
        calls.append(including_emulation)
        return including_emulation  # an emulating GPU (V100, T4): supported only with emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", native_only)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    auto = get_profile("smoke").with_overrides(["precision=auto"])
    assert not runtime.uses_bf16(auto, cuda) and calls == [False]
    assert not runtime.uses_bf16(auto, cpu)
    assert runtime.uses_bf16(auto.with_overrides(["precision=bf16"]), cpu)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    assert runtime.precision_label(False, cuda) == "fp32 (tf32 convolutions)"
    assert runtime.precision_label(False, cpu) == "fp32"
    assert runtime.precision_label(True, cuda) == "bf16"
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    assert runtime.precision_label(False, cuda) == "fp32"


def test_ranks_map_to_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert runtime.resolve_device("auto", local_rank=3) == torch.device("cuda", 0)  # one GPU per task
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun started two processes on a one-GPU machine
    with pytest.raises(ValueError, match="LOCAL_WORLD_SIZE = 2 processes on this machine, which has one GPU"):
        runtime.resolve_device("auto", local_rank=1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # a launcher gave each process one GPU of several
    assert runtime.resolve_device("auto", local_rank=1) == torch.device("cuda", 0)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert runtime.resolve_device("cuda", local_rank=0) == torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert runtime.resolve_device("cuda", local_rank=3) == torch.device("cuda", 3)
    with pytest.raises(ValueError, match="local rank 4 has no GPU: this machine has 4"):
        runtime.resolve_device("cuda", local_rank=4)
    assert runtime.resolve_device("cpu", local_rank=4) == torch.device("cpu")


@pytest.mark.parametrize("text", ["abc", "0", "-5", "nan", "inf", ""])
def test_distributed_timeout_is_validated(text: str) -> None:
    with pytest.raises(ValueError, match="DYSTRESS_DIST_TIMEOUT_MIN must be a number of minutes > 0"):
        timeout_minutes(text)
    assert timeout_minutes("2.5") == 2.5


def test_host_placement_trains_the_same_weights_as_device_placement(cifar_root: Path, tmp_path: Path) -> None:
    states = {}
    for placement in ("device", "host"):
        config = smoke_config(
            cifar_root,
            "train_subset=256",
            "monitor_size=0",
            "snapshot_epochs=[]",
            "num_threads=1",
            f"data_placement={placement}",
        )
        metrics = pretrain(config, tmp_path / placement, progress=False)
        assert metrics["data_placement"] == placement
        states[placement] = load_checkpoint(tmp_path / placement / "checkpoints" / "last.pt")["model"]
    _assert_same_state(states["device"], states["host"])


def _write_image_folder(root: Path, per_class: dict[str, int], seed: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, counts in per_class.items():
        for c in range(3):
            folder = root / split / f"class_{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(counts):
                h, w = rng.integers(20, 40, size=2)
                pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
                pixels[..., c] = 255 - 40 * c  # a class colour, so features separate the classes
                Image.fromarray(pixels).save(folder / f"{i}.png")


def test_image_folder_run_trains_on_crops_and_evaluates_the_center_crop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dystress.data.transforms import center_crop
    from dystress.metrics import extract_features, knn_accuracy, uniformity

    monkeypatch.setenv("DYSTRESS_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "folder"
    _write_image_folder(root, {"train": 12, "val": 4}, seed=0)
    overrides = [
        "dataset=imagefolder",
        "image_size=24",
        "crop_size=16",
        "batch_size=12",
        "epochs=1",
        "test_subset=null",
        "train_subset=null",
        "monitor_size=12",
        "snapshot_epochs=[1]",
        "knn_k=5",
        "data_workers=0",
        "num_threads=1",
    ]
    config = get_profile("smoke").with_overrides([f"data_root={root}", *overrides])
    metrics = pretrain(config, tmp_path / "run", progress=False)
    assert (metrics["bank_size"], metrics["test_size"], metrics["num_classes"]) == (36, 12, 3)
    assert list((tmp_path / "cache").glob("*.npy"))  # decoded once into the cache
    # the final kNN is the one of the 16 px center crops of the 24 px images
    model = runtime.build_model(config)
    model.load_state_dict(load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["model"])
    data = runtime.load_data(config)
    feats = {
        split: extract_features(model.backbone, center_crop(ds.images, 16), ds.mean, ds.std, 64)
        for split, ds in (("train", data.train), ("test", data.test))
    }
    assert data.train.images.shape[-1] == 24
    expected = knn_accuracy(
        feats["train"], data.train.labels, feats["test"], data.test.labels, k=5, t=config.knn_t, num_classes=3
    )
    assert metrics["knn_top1"] == pytest.approx(expected["top1"], abs=1e-9)
    assert metrics["uniformity"] == pytest.approx(uniformity(feats["test"]), rel=1e-5)
    whole = extract_features(model.backbone, data.test.images, data.test.mean, data.test.std, 64)
    assert abs(uniformity(whole) - metrics["uniformity"]) > 1e-4  # the crop is not a no-op here
    snapshot = torch.load(tmp_path / "run" / "snapshots" / "epoch_0001.pt", weights_only=True)
    assert snapshot["view0"].shape[0] == 12


@pytest.mark.slow
def test_imagenet100_profile_runs_end_to_end_on_a_small_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The profile's whole path (ResNet-50 + ImageNet stem at 224 px, LARS, blur, cache, linear probe)."""
    monkeypatch.setenv("DYSTRESS_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "imagenet100"
    _write_image_folder(root, {"train": 4, "val": 2}, seed=1)
    overrides = ["batch_size=4", "epochs=1", "warmup_epochs=0", "monitor_size=4", "snapshot_epochs=[1]"]
    config = get_profile("imagenet100").with_overrides([f"data_root={root}", "num_threads=2", *overrides])
    metrics = pretrain(config, tmp_path / "run", progress=False)
    assert (metrics["bank_size"], metrics["test_size"], metrics["knn_k"]) == (12, 6, 12)
    assert 0.0 <= metrics["linear_top1"] <= 100.0 and math.isfinite(metrics["final_loss"])
    records = read_jsonl(tmp_path / "run" / "records.jsonl")
    assert [r["step"] for r in records] == [3]
    snapshot = torch.load(tmp_path / "run" / "snapshots" / "epoch_0001.pt", weights_only=True)
    assert snapshot["features"].shape == (4, 2048)


def _assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
@pytest.mark.parametrize(
    "method",
    [[], ["temperature=isogclr", "temperature_params={}"], ["temperature=learned", "temperature_params={}"]],
    ids=["dystress", "isogclr", "learned-tau"],
)
def test_kill_and_resume_is_bit_identical(cifar_root: Path, tmp_path: Path, method: list[str]) -> None:
    """Killed after a checkpoint and resumed: the same weights, optimiser and loss state (iSogCLR's
    per-sample taus, a learned tau), records, final metrics and snapshots as an uninterrupted run."""
    overrides = ["epochs=3", "train_subset=256", "monitor_size=64", "num_threads=1", "snapshot_epochs=[0, 3]"]
    overrides += method
    config = smoke_config(cifar_root, *overrides)
    killed = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "dystress.cli",
        "pretrain",
        "--profile",
        "smoke",
        "--run-dir",
        str(killed),
        "--no-progress",
    ]
    for item in [f"data_root={cifar_root}", "download=false", *overrides]:
        cmd += ["--set", item]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = killed / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    killed_at = load_checkpoint(ckpt)["epoch"]
    assert killed_at < 3 and not (killed / "final_metrics.json").exists()

    rerun = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, timeout=180)
    assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
    assert f"{killed}: resuming after epoch {killed_at} of 3" in rerun.stderr.decode()

    threads = torch.get_num_threads()
    try:
        reference = pretrain(config, tmp_path / "uninterrupted", progress=False)
    finally:
        torch.set_num_threads(threads)
    a = load_checkpoint(killed / "checkpoints" / "last.pt", config=config.to_dict())
    b = load_checkpoint(tmp_path / "uninterrupted" / "checkpoints" / "last.pt", config=config.to_dict())
    assert a["epoch"] == b["epoch"] == 3
    _assert_same_state(a["model"], b["model"])
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        _assert_same_state(pa, pb)
    _assert_same_state(a["loss"], b["loss"])
    assert bool(a["loss"]) == bool(method)  # the loss state exists where the method has one
    ra, rb = read_jsonl(killed / "records.jsonl"), read_jsonl(tmp_path / "uninterrupted" / "records.jsonl")
    assert [r["epoch"] for r in ra] == [1, 2, 3]
    for x, y in zip(ra, rb, strict=True):
        for key in ("loss", "tau_pos", "tau_neg", "sim_pos", "sim_neg", "lr", "monitor_knn_top1"):
            assert x[key] == y[key], key
        assert {k: v for k, v in x.items() if k.startswith("tau_")} == {
            k: v for k, v in y.items() if k.startswith("tau_")
        }
    resumed = json.loads((killed / "final_metrics.json").read_text())
    assert resumed["knn_top1"] == reference["knn_top1"]
    for epoch in (0, 3):
        sa = torch.load(killed / "snapshots" / f"epoch_{epoch:04d}.pt", weights_only=True)
        sb = torch.load(tmp_path / "uninterrupted" / "snapshots" / f"epoch_{epoch:04d}.pt", weights_only=True)
        assert torch.equal(sa["features"], sb["features"]) and torch.equal(sa["view0"], sb["view0"])


class _Interrupted(Exception):
    """Stands for a kill right after a checkpoint was written."""


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([], None),
        (["compile=true"], [None]),
        (["compile=true", "compile_mode=reduce-overhead"], ["reduce-overhead"]),
    ],
)
def test_the_model_is_compiled_in_the_configured_mode(
    monkeypatch: pytest.MonkeyPatch, overrides: list[str], expected: list[str | None] | None
) -> None:
    """compile = false leaves the model as it is; else torch.compile gets compile_mode (default: its
    own default, mode None)."""
    from dystress.process_group import Ranks

    modes: list[str | None] = []
    monkeypatch.setattr(torch, "compile", lambda model, mode=None: modes.append(mode) or model)
    config = get_profile("smoke").with_overrides(overrides)
    model = nn.Linear(2, 2)
    assert train_module._wrap_model(model, config, torch.device("cpu"), Ranks()) is model
    assert modes == (expected or [])


@pytest.mark.slow
def test_compiled_run_matches_eager_saves_plain_keys_and_resumes(
    cifar_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``compile=true`` (inductor, C++ on the CPU): one compilation per run (the monitor's eval/train
    switches included), checkpoints of the plain module that ``evaluate_checkpoint`` reads, a bit-identical
    resume, and the per-step losses of the eager run up to fp32 reassociation. About 25 s with a cold
    inductor cache (the first compilation), a few seconds warm."""
    overrides = ["train_subset=256", "monitor_size=64", "snapshot_epochs=[]", "num_threads=1"]
    eager = smoke_config(cifar_root, *overrides)  # 2 epochs x 2 steps, monitor on
    compiled = smoke_config(cifar_root, *overrides, "compile=true")
    real_step = train_module.train_step
    calls: list[tuple[float, bool]] = []

    def spy(model, loss_fn, optimizer, v0, v1, *rest):  # noqa: ANN001, ANN002, ANN202
        loss = real_step(model, loss_fn, optimizer, v0, v1, *rest)
        calls.append((loss.item(), hasattr(model, "_orig_mod")))  # _orig_mod: a torch.compile wrapper
        return loss

    def run(config: PretrainConfig, run_dir: Path) -> list[tuple[float, bool]]:
        calls.clear()
        torch.compiler.reset()  # a fresh model is a fresh compilation, not a recompilation
        try:
            pretrain(config, run_dir, progress=False)
        finally:
            torch.set_num_threads(threads)
        return list(calls)

    threads = torch.get_num_threads()
    monkeypatch.setattr(train_module, "train_step", spy)
    monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", True)
    eager_steps = run(eager, tmp_path / "eager")
    compiled_steps = run(compiled, tmp_path / "compiled")
    assert [c for _, c in eager_steps] == [False] * 4 and [c for _, c in compiled_steps] == [True] * 4

    # fp32 on the CPU: the first loss (forward only, same weights) differs by an ulp (rel 8e-8 measured);
    # afterwards inductor's other reduction orders in the backward grow through the steps (rel <= 3e-4
    # measured over 4 steps with 1 and 2 threads; eager alone moves by 2e-5 from 1 to 2 threads), while
    # a real error (a skipped update, stale weights) moves the loss by its per-step change, >= 2%.
    (e0, *e_rest), (c0, *c_rest) = [loss for loss, _ in eager_steps], [loss for loss, _ in compiled_steps]
    assert c0 == pytest.approx(e0, rel=1e-6)
    assert c_rest == pytest.approx(e_rest, rel=2e-3)
    assert all(abs(a - b) > 1e-2 * abs(a) for a, b in zip(e_rest, [e0, *e_rest], strict=False))

    state = load_checkpoint(tmp_path / "compiled" / "checkpoints" / "last.pt", config=compiled.to_dict())
    assert list(state["model"]) == list(runtime.build_model(compiled).state_dict())  # no _orig_mod.
    metrics = json.loads((tmp_path / "compiled" / "final_metrics.json").read_text())
    evaluated = evaluate_checkpoint(tmp_path / "compiled" / "checkpoints" / "last.pt")
    for key in ("knn_top1", "knn_top5", "uniformity", "tolerance", "alignment"):
        assert evaluated[key] == pytest.approx(metrics[key], rel=1e-6, abs=1e-9), key

    real_save = train_module.save_checkpoint

    def save_then_die(path, **kwargs):  # noqa: ANN001, ANN003, ANN202
        real_save(path, **kwargs)
        raise _Interrupted

    resumed = tmp_path / "resumed"
    monkeypatch.setattr(train_module, "save_checkpoint", save_then_die)
    with pytest.raises(_Interrupted):
        run(compiled, resumed)
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)
    assert load_checkpoint(resumed / "checkpoints" / "last.pt")["epoch"] == 1
    assert run(compiled, resumed) == compiled_steps[2:]  # epoch 2 only, compiled, the same losses
    again = load_checkpoint(resumed / "checkpoints" / "last.pt", config=compiled.to_dict())
    assert again["epoch"] == 2
    _assert_same_state(again["model"], state["model"])
    assert json.loads((resumed / "final_metrics.json").read_text())["knn_top1"] == metrics["knn_top1"]


# --------------------------------------------------------------------------------------- evaluation
def test_evaluate_backbone_long_tailed_and_probe(cifar_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Wiring of the final evaluation against brute-force float64 references on the same backbone."""
    import dystress.evaluate as evaluate_module
    from dystress.data.datasets import load_dataset
    from dystress.data.transforms import normalize
    from dystress.evaluate import evaluate_backbone
    from dystress.runtime import RunData, build_augmentation, build_model

    config = smoke_config(cifar_root, "dataset=cifar10_lt", "linear_probe=true", "knn_k=5")
    train = load_dataset("cifar10_lt", cifar_root, train=True, download=False)
    test = load_dataset("cifar10_lt", cifar_root, train=False, download=False).subset(torch.arange(300))
    torch.manual_seed(0)
    backbone = build_model(config).backbone.eval()
    data = RunData(train=train, test=test)
    probe_args = {}

    def spy_probe(bank, y_bank, queries, y_test, **kwargs):  # noqa: ANN001, ANN003, ANN202
        probe_args.update(bank=bank, y_bank=y_bank, queries=queries, y_test=y_test, **kwargs)
        return {"top1": 12.0, "top5": 34.0, "protocol": {"name": "spy"}}

    monkeypatch.setattr(evaluate_module, "linear_probe", spy_probe)  # the probe itself: test_metrics_*
    metrics = evaluate_backbone(
        backbone, data, config, torch.device("cpu"), build_augmentation(config, train)
    )
    with torch.no_grad():
        fb = backbone(normalize(train.images, train.mean, train.std)).double()
        fq = backbone(normalize(test.images, test.mean, test.std)).double()
    sims = nn.functional.normalize(fq, dim=1) @ nn.functional.normalize(fb, dim=1).T
    # weighted kNN, k = 5, t = 0.1 (InstDisc)
    top = sims.topk(5, dim=1)
    votes = torch.zeros(len(fq), 10, dtype=torch.float64)
    for i in range(len(fq)):
        for s, j in zip(top.values[i], top.indices[i], strict=True):
            votes[i, train.labels[j]] += math.exp(float(s) / 0.1)
    assert metrics["knn_top1"] == pytest.approx(100 * float((votes.argmax(1) == test.labels).double().mean()))
    # class-averaged plain 1-NN
    pred = train.labels[sims.argmax(1)]
    per_class = [float((pred[test.labels == c] == c).double().mean()) for c in test.labels.unique()]
    assert metrics["knn1_class_averaged"] == pytest.approx(100 * sum(per_class) / len(per_class))
    assert 0 <= metrics["knn10_class_averaged"] <= 100
    assert (metrics["linear_top1"], metrics["linear_top5"], metrics["linear_protocol"]) == (
        12.0,
        34.0,
        {"name": "spy"},
    )
    torch.testing.assert_close(probe_args["bank"].double(), fb, rtol=1e-4, atol=1e-5)  # frozen bank features
    torch.testing.assert_close(probe_args["queries"].double(), fq, rtol=1e-4, atol=1e-5)
    assert torch.equal(probe_args["y_bank"], train.labels) and torch.equal(probe_args["y_test"], test.labels)
    assert probe_args["num_classes"] == 10
    assert (metrics["bank_size"], metrics["test_size"]) == (len(train), 300) and len(train) < 4000
    assert metrics["tolerance"] == pytest.approx(_tolerance64(fq, test.labels), rel=1e-4)
    assert metrics["uniformity"] == pytest.approx(_uniformity64(fq), rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("strength", [0.0, 0.5, 1.0, 2.5])
def test_build_augmentation_maps_the_jitter_strength(cifar_root: Path, strength: float) -> None:
    """SimCLR's colour-jitter strength s is ColorJitter(0.8 s, 0.8 s, 0.8 s, 0.2 s) (Chen et al. 2020,
    appendix A); s = 0.5 is exactly the CIFAR recipe of docs/STUDY.md, (0.4, 0.4, 0.4, 0.1)."""
    from dystress.data.augment import SimCLRAugmentation
    from dystress.data.datasets import load_dataset
    from dystress.runtime import build_augmentation

    config = smoke_config(cifar_root, f"jitter_strength={strength}")
    train = load_dataset("cifar10", cifar_root, train=True, download=False)
    aug = build_augmentation(config, train)
    assert (aug.brightness, aug.contrast, aug.saturation, aug.hue) == (
        0.8 * strength,
        0.8 * strength,
        0.8 * strength,
        0.2 * strength,
    )
    assert aug.jitter_prob == 0.8
    if strength == 0.5:
        recipe = SimCLRAugmentation()
        assert (aug.brightness, aug.contrast, aug.saturation, aug.hue) == (0.4, 0.4, 0.4, 0.1)
        assert repr(aug) == repr(recipe)


@pytest.mark.parametrize("separate", [True, False])
def test_train_step_forwards_the_views_as_configured(separate: bool) -> None:
    """train_step against a hand-written step: separate views = two passes (BatchNorm statistics per
    view), joint = one pass over both; the two give different updates."""
    import copy

    from dystress.losses import InfoNCELoss
    from dystress.models import ContrastiveModel, Projector, build_backbone

    torch.manual_seed(0)
    model = ContrastiveModel(build_backbone("small_cnn"), Projector(256, 64, 16)).train()
    reference, initial = copy.deepcopy(model), copy.deepcopy(model)
    v0, v1 = torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32) * 2 + 1
    loss_fn = InfoNCELoss(temperature=0.2)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.5)
    loss = train_module.train_step(model, loss_fn, opt, v0, v1, False, False, separate_views=separate)
    if separate:
        z0, z1 = reference(v0)[1], reference(v1)[1]
    else:
        z0, z1 = reference(torch.cat([v0, v1]))[1].chunk(2)
    ref_loss = loss_fn(z0, z1)
    ref_loss.backward()
    ref_opt.step()
    torch.testing.assert_close(loss, ref_loss.detach())
    for (name, a), b in zip(model.state_dict().items(), reference.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    z0, z1 = (initial(v0)[1], initial(v1)[1]) if not separate else initial(torch.cat([v0, v1]))[1].chunk(2)
    assert abs(float(loss_fn(z0, z1).detach()) - float(loss)) > 1e-3  # the other choice: another loss


def test_embed_views_augments_in_float32_under_autocast() -> None:
    """Only the backbone runs under bf16 autocast: the views (here with a blur, whose convolutions
    autocast would run in bf16) are those of the augmentation run on its own, in float32."""
    from dystress.data.augment import SimCLRAugmentation
    from dystress.evaluate import embed_views

    aug = SimCLRAugmentation(image_size=16, blur_prob=1.0, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    images = torch.randint(
        0, 256, (6, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    v0, v1 = embed_views(nn.Flatten(), images, aug, seed=7, batch_size=4, amp=True)
    g = torch.Generator().manual_seed(7)
    expected: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
    for start in (0, 4):  # batch by batch, view 0 then view 1 of each batch
        for out in expected:
            out.append(aug(images[start : start + 4], g).flatten(1))
    assert v0.dtype == torch.float32
    assert torch.equal(v0, torch.cat(expected[0])) and torch.equal(v1, torch.cat(expected[1]))


@pytest.mark.parametrize("amp", [False, True])
def test_embed_views_on_cpu_slices_the_forward_not_the_draws(amp: bool) -> None:
    """On a CPU the backbone sees at most CPU_FORWARD_CHUNK images a pass, the augmentation still one
    batch a draw: the features equal those of one forward of the whole batch (the small CNN,
    channels-last as in training, given in training mode: embed_views runs it in eval mode and gives
    the mode back), bit for bit."""
    from dystress.data.augment import SimCLRAugmentation
    from dystress.evaluate import embed_views
    from dystress.metrics.features import CPU_FORWARD_CHUNK
    from dystress.models import SmallCNN

    torch.manual_seed(0)
    backbone = SmallCNN().to(memory_format=torch.channels_last)
    backbone(torch.randn(16, 3, 32, 32))  # running statistics away from their initial values
    aug = SimCLRAugmentation(image_size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    n = 2 * CPU_FORWARD_CHUNK + 44  # three slices of one batch
    images = torch.randint(
        0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    v0, v1 = embed_views(backbone, images, aug, seed=3, batch_size=n, amp=amp)
    assert backbone.training and all(m.training for m in backbone.modules())
    g = torch.Generator().manual_seed(3)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        whole = [backbone.eval()(aug(images, g)).float() for _ in range(2)]
    assert torch.equal(v0, whole[0]) and torch.equal(v1, whole[1])
