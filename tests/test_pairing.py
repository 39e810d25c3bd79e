"""Runs of one seed are paired across temperature functions: the same initialisation, data order and
augmentation, whatever the temperature. The book compares methods seed by seed on this ground, so a
temperature function that drew from a random stream (or a loss that did) would break every paired
comparison silently; this test fails then."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dystress.config import get_profile
from dystress.study import ablations
from dystress.train import pretrain


def _study_temperatures() -> dict[str, dict]:
    """One parameter set per temperature function the study's plans use (quick and paper)."""
    found: dict[str, dict] = {}
    for profile in ("quick", "paper"):
        base = get_profile(profile)
        for point in ablations.plan(profile):
            config = base.with_parameters(point.parameters)
            found.setdefault(config.temperature, dict(config.temperature_params))
    return found


def test_the_study_compares_several_temperature_functions() -> None:
    assert {"constant", "cosine", "shifted_cosine", "ts_schedule", "macl"} <= set(_study_temperatures())


@pytest.mark.slow
def test_one_seed_shares_initialisation_data_order_and_augmentation(tmp_path: Path, fake_cifar10) -> None:
    states = {}
    for name, params in _study_temperatures().items():
        config = get_profile("smoke").with_parameters(
            {
                "data_root": str(fake_cifar10.root),
                "download": False,
                "train_subset": None,
                "test_subset": None,
                "batch_size": 8,
                "epochs": 2,
                "monitor_size": 8,
                "snapshot_epochs": [0],
                "knn_k": 5,
                "eval_batch_size": 16,
                "num_threads": 1,
                "temperature": name,
                "temperature_params": params,
                "seed": 3,
            },
            none_keeps=False,
        )
        run_dir = tmp_path / name
        pretrain(config, run_dir, progress=False)
        snapshot = torch.load(run_dir / "snapshots" / "epoch_0000.pt", weights_only=True)
        ckpt = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
        states[name] = (snapshot, ckpt["rng"])
    reference_name, (ref_snapshot, ref_rng) = next(iter(states.items()))
    for name, (snapshot, rng) in states.items():
        # the initial weights: the features of the monitor images and of their two views before training
        for key in ("features", "view0", "view1", "proj_view0", "proj_view1"):
            assert torch.equal(snapshot[key], ref_snapshot[key]), (name, reference_name, key)
        # after two epochs every stream is where the reference's is: nothing drew from them but the
        # engine (initialisation, shuffling from (seed, epoch), augmentation from (seed, epoch, rank))
        assert torch.equal(rng["torch"], ref_rng["torch"]), (name, "torch")
        assert torch.equal(rng["numpy"]["keys"], ref_rng["numpy"]["keys"]), (name, "numpy")
        assert rng["numpy"]["pos"] == ref_rng["numpy"]["pos"], (name, "numpy")
        aug, ref_aug = rng["generators"]["augmentation"], ref_rng["generators"]["augmentation"]
        assert torch.equal(aug, ref_aug), (name, "augmentation")
