"""Final evaluation of a frozen backbone, and of a checkpoint into one JSON record.

:func:`evaluate_backbone` is the one evaluation of the project, run at the end of
:func:`dystress.train.pretrain` and by :func:`evaluate_checkpoint` (and ``dystress evaluate``):

- weighted kNN (InstDisc; k = ``knn_k``, t = ``knn_t``, 200 and 0.1 in SimCLR-style codebases) with
  the bank = the run's training set (after ``train_subset``) under the test transform and the queries =
  the test set (or its fixed ``test_subset``); the test transform is the ``crop_size`` center crop (the
  whole image when it is null) and normalisation;
- for balanced datasets also the unweighted majority-vote 10-NN and 200-NN of the DySTreSS authors'
  final evaluation script (``knn10_majority``, ``knn200_majority``;
  :func:`dystress.metrics.knn_majority_accuracy`), the protocol of the paper's final tables;
- for long-tailed datasets, class-averaged plain 1-NN and 10-NN (bank = the long-tailed training set);
- optionally a linear probe on the cached features (:func:`dystress.metrics.linear_probe`);
- uniformity, tolerance and inter-class uniformity of the test features, and the alignment of the
  features of two augmented views of the test set (fixed generator).

The backbone evaluated is whatever it is given: ``pretrain`` passes the last epoch's, never one
selected on the test set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dystress.checkpoint import load_checkpoint, load_into
from dystress.config import DEVICES, PretrainConfig
from dystress.data.augment import SimCLRAugmentation
from dystress.data.datasets import ImageDataset
from dystress.data.transforms import center_crop
from dystress.io import atomic_write_json
from dystress.metrics import (
    alignment,
    extract_features,
    inter_class_uniformity,
    knn_accuracy,
    knn_class_averaged_accuracy,
    knn_majority_accuracy,
    linear_probe,
    tolerance,
    uniformity,
)
from dystress.metrics.features import eval_mode, forward_chunk
from dystress.models import ContrastiveModel
from dystress.runtime import RunData, build_augmentation, build_model, load_data, resolve_device, uses_bf16

__all__ = [
    "Pretrained",
    "checkpoint_file",
    "embed_views",
    "evaluate_backbone",
    "evaluate_checkpoint",
    "extract",
    "load_pretrained",
]

#: Seed of the generator of the augmented test views used for the alignment.
ALIGNMENT_VIEW_SEED = 12345


def extract(
    backbone: nn.Module,
    images: Tensor,
    dataset: ImageDataset,
    batch_size: int,
    device: torch.device,
    amp: bool = False,
    crop_size: int | None = None,
) -> Tensor:
    """Test-transform features [N, D] (float32) of uint8 ``images`` [N, 3, H, W].

    The test transform: the central ``crop_size`` square (``None``: the whole image), normalised with
    ``dataset``'s statistics.
    """
    images = center_crop(images, crop_size)
    return extract_features(backbone, images, dataset.mean, dataset.std, batch_size, device, amp=amp)


@torch.no_grad()
def embed_views(
    backbone: nn.Module,
    images: Tensor,
    augmentation: SimCLRAugmentation,
    seed: int,
    batch_size: int,
    amp: bool = False,
) -> tuple[Tensor, Tensor]:
    """Backbone features [N, D] (float32) of two augmented views of uint8 ``images`` [N, 3, H, W].

    The views are drawn from a generator seeded with ``seed`` on the images' device, batch by batch
    (view 0 then view 1 of each batch), so the same images and seed give the same views. The backbone
    runs in eval mode (each submodule gets its own mode back afterwards), on a CPU in slices of at most
    :data:`~dystress.metrics.features.CPU_FORWARD_CHUNK` images.
    """
    device = images.device
    g = torch.Generator(device=device).manual_seed(seed)
    outs: tuple[list[Tensor], list[Tensor]] = ([], [])
    with eval_mode(backbone):
        for start in range(0, images.shape[0], batch_size):
            batch = images[start : start + batch_size]
            for out in outs:
                view = augmentation(batch, g)  # in float32, as in training; only the backbone under autocast
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    for piece in view.split(forward_chunk(device, batch_size)):  # the draws stay per batch
                        out.append(backbone(piece).flatten(1).float())
    return torch.cat(outs[0]), torch.cat(outs[1])


def evaluate_backbone(
    backbone: nn.Module,
    data: RunData,
    config: PretrainConfig,
    device: torch.device,
    augmentation: SimCLRAugmentation,
    amp: bool = False,
) -> dict[str, Any]:
    """The final evaluation (see the module docstring) as a flat dict of plain values.

    Args:
        backbone: the frozen backbone (switched to eval mode here).
        data: ``train`` (the bank) and ``test`` (the queries) image sets.
        config: supplies knn_k, knn_t, linear_probe, eval_batch_size and the dataset name.
        device: where features are computed.
        augmentation: draws the two test views of the alignment.
        amp: bf16 autocast for the forward passes.
    """
    backbone.eval()
    bs = config.eval_batch_size
    bank = extract(backbone, data.train.images, data.train, bs, device, amp, config.crop_size)
    queries = extract(backbone, data.test.images, data.test, bs, device, amp, config.crop_size)
    y_bank = data.train.labels.to(device)
    y_test = data.test.labels.to(device)
    num_classes = data.train.num_classes
    k = min(config.knn_k, bank.shape[0])
    knn = knn_accuracy(bank, y_bank, queries, y_test, k=k, t=config.knn_t, num_classes=num_classes)
    metrics: dict[str, Any] = {
        "knn_top1": knn["top1"],
        "knn_top5": knn.get("top5"),
        "knn_k": k,
        "knn_t": config.knn_t,
        "bank_size": int(bank.shape[0]),
        "test_size": int(queries.shape[0]),
        "num_classes": num_classes,
    }
    if not config.dataset.endswith("_lt"):  # the authors' final protocol: unweighted votes, k 10 and 200
        for nn_k in (10, 200):
            res = knn_majority_accuracy(
                bank, y_bank, queries, y_test, k=min(nn_k, bank.shape[0]), num_classes=num_classes
            )
            metrics[f"knn{nn_k}_majority"] = res["top1"]
    if config.dataset.endswith("_lt"):
        for nn_k in (1, 10):
            res = knn_class_averaged_accuracy(
                bank, y_bank, queries, y_test, k=min(nn_k, bank.shape[0]), num_classes=num_classes
            )
            metrics[f"knn{nn_k}_class_averaged"] = res["accuracy"]
    if config.linear_probe:
        probe = linear_probe(bank, y_bank, queries, y_test, num_classes=num_classes, seed=config.seed)
        metrics["linear_top1"] = probe["top1"]
        metrics["linear_top5"] = probe.get("top5")
        metrics["linear_protocol"] = probe.get("protocol")
    v0, v1 = embed_views(backbone, data.test.images.to(device), augmentation, ALIGNMENT_VIEW_SEED, bs, amp)
    metrics.update(
        uniformity=uniformity(queries),
        tolerance=tolerance(queries, y_test),
        inter_class_uniformity=inter_class_uniformity(queries, y_test),
        alignment=alignment(v0, v1),
    )
    return metrics


@dataclass
class Pretrained:
    """A model loaded from a checkpoint: ``model`` (eval mode; ``model.backbone`` gives the features),
    the run's ``config`` and the ``epoch`` the checkpoint was written after."""

    model: ContrastiveModel
    config: PretrainConfig
    epoch: int


def checkpoint_file(path: str | Path) -> Path:
    """``path`` itself when it is a file, ``path/checkpoints/last.pt`` when it is a run folder."""
    path = Path(path)
    if path.is_dir():
        last = path / "checkpoints" / "last.pt"
        if not last.is_file():
            raise FileNotFoundError(f"run folder {path} has no checkpoint {last} (has the run started?)")
        return last
    return path


def load_pretrained(path: str | Path, device: str = "cpu") -> Pretrained:
    """The model stored in checkpoint ``path`` (a ``checkpoints/last.pt``, or a run folder: its
    ``checkpoints/last.pt``; loaded weights-only), on ``device`` (``auto``, ``cpu`` or ``cuda``), in
    eval mode.

    Example::

        pre = load_pretrained("runs/quick/<run>")
        features = pre.model.backbone(images)  # images: normalised float [B, 3, H, W]
    """
    if device not in DEVICES:
        raise ValueError(f"device must be one of {list(DEVICES)}, got {device!r}")
    ckpt = checkpoint_file(path)
    state = load_checkpoint(ckpt)
    config = PretrainConfig.from_saved(state["config"])
    with torch.random.fork_rng(devices=[]):  # the initialisation it overwrites draws no caller's numbers
        model = build_model(config)
    load_into(model, state["model"], ckpt, "model")
    model.to(resolve_device(device)).eval()
    return Pretrained(model, config, int(state["epoch"]))


def evaluate_checkpoint(
    path: str | Path,
    data_root: str | Path | None = None,
    out: str | Path | None = None,
    device: str = "auto",
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Evaluate the backbone stored in checkpoint ``path`` (loaded weights-only).

    Args:
        path: a ``checkpoints/last.pt`` written by :func:`dystress.train.pretrain`, or its run folder.
        data_root: overrides the dataset folder stored in the checkpoint's config.
        out: when given, the metrics are also written there (JSON, atomically).
        device: ``auto``, ``cpu`` or ``cuda``.
        batch_size: overrides ``eval_batch_size``.

    Returns:
        the metrics of :func:`evaluate_backbone` plus ``checkpoint``, ``epoch`` and ``run_id``.
    """
    updates: dict[str, Any] = {"device": device}
    if data_root is not None:
        updates["data_root"] = str(data_root)
    if batch_size is not None:
        updates["eval_batch_size"] = batch_size
    pre = load_pretrained(path, device)
    config = pre.config.updated(updates)
    dev = next(pre.model.parameters()).device
    data = load_data(config)
    metrics = evaluate_backbone(
        pre.model.backbone,
        data,
        config,
        dev,
        build_augmentation(config, data.train, dev),
        amp=uses_bf16(config, dev),
    )
    metrics.update(checkpoint=str(checkpoint_file(path)), epoch=pre.epoch, run_id=pre.config.run_id())
    if out is not None:
        atomic_write_json(out, metrics)
    return metrics
