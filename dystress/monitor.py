"""The per-epoch monitor of a pretraining run and its feature snapshots.

The monitor is a cheap stand-in for the final evaluation: weighted kNN (k, t of the config, k capped
by the bank size) with a bank of ``monitor_size`` fixed training images and queries ``monitor_size``
fixed test images (both test transform), plus uniformity, tolerance and inter-class uniformity of the
query features and the alignment of two augmented views of them (fixed generator). Its statistics go
into the epoch's record as ``monitor_*``.

At ``snapshot_epochs`` (0 = before training) the monitor's features are written to
``snapshots/epoch_XXXX.pt``: backbone features of the query images and of two augmented views of
them, and the projector's outputs of those views (the space tau(s) acts on).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from dystress.config import PretrainConfig
from dystress.data.augment import SimCLRAugmentation
from dystress.evaluate import embed_views, extract
from dystress.io import atomic_torch_save
from dystress.metrics import alignment, inter_class_uniformity, knn_accuracy, tolerance, uniformity
from dystress.models import ContrastiveModel
from dystress.runtime import RunData, fixed_subset

__all__ = ["Monitor", "make_monitor"]


@dataclass
class Monitor:
    """Fixed monitor subsets (on the device) and the fixed seed of their augmented views.

    bank_images/bank_labels: [Nb, 3, H, W] uint8 training images and their labels [Nb];
    query_images/query_labels: [Nq, 3, H, W] uint8 test images, labels [Nq], and their
    ``query_indices`` [Nq] in the test set.
    """

    bank_images: Tensor
    bank_labels: Tensor
    query_images: Tensor
    query_labels: Tensor
    query_indices: Tensor
    view_seed: int

    def features(
        self,
        model: ContrastiveModel,
        aug: SimCLRAugmentation,
        data: RunData,
        config: PretrainConfig,
        amp: bool,
    ) -> dict[str, Tensor]:
        """Monitor features (call in eval mode): ``features`` [M, F] of the test images (test transform),
        backbone features ``view0``/``view1`` [M, F] of two augmented views (fixed generator) and the
        projector's outputs ``proj_view0``/``proj_view1`` [M, out_dim] of those views (float32)."""
        device = self.query_images.device
        bs = config.eval_batch_size
        backbone = model.backbone
        feats = extract(backbone, self.query_images, data.test, bs, device, amp, config.crop_size)
        v0, v1 = embed_views(backbone, self.query_images, aug, self.view_seed, bs, amp)
        with torch.no_grad():
            p0, p1 = (torch.cat([model.projector(c) for c in v.split(bs)]).float() for v in (v0, v1))
        return {"features": feats, "view0": v0, "view1": v1, "proj_view0": p0, "proj_view1": p1}

    def record(
        self,
        model: ContrastiveModel,
        aug: SimCLRAugmentation,
        data: RunData,
        config: PretrainConfig,
        amp: bool,
    ) -> tuple[dict[str, float], dict[str, Tensor]]:
        """The ``monitor_*`` statistics of the epoch's record (call in eval mode), and the features
        of :meth:`features` they were computed from (for a snapshot)."""
        f = self.features(model, aug, data, config, amp)
        device = self.bank_images.device
        bank = extract(
            model.backbone,
            self.bank_images,
            data.train,
            config.eval_batch_size,
            device,
            amp,
            config.crop_size,
        )
        knn = knn_accuracy(
            bank,
            self.bank_labels,
            f["features"],
            self.query_labels,
            k=min(config.knn_k, bank.shape[0]),
            t=config.knn_t,
            num_classes=data.train.num_classes,
        )
        record = {
            "monitor_knn_top1": knn["top1"],
            "monitor_uniformity": uniformity(f["features"]),
            "monitor_tolerance": tolerance(f["features"], self.query_labels),
            "monitor_inter_class_uniformity": inter_class_uniformity(f["features"], self.query_labels),
            "monitor_alignment": alignment(f["view0"], f["view1"]),
        }
        return record, f

    def write_snapshot(self, run_dir: Path, epoch: int, feats: dict[str, Tensor]) -> None:
        """Write ``feats`` (of :meth:`features`), the query labels and indices to the snapshot of
        ``epoch`` (atomically; tensors on the CPU, features in float32)."""
        atomic_torch_save(
            run_dir / "snapshots" / f"epoch_{epoch:04d}.pt",
            {
                "epoch": epoch,
                "features": feats["features"].float().cpu(),
                "labels": self.query_labels.cpu(),
                "indices": self.query_indices.cpu(),
                "view0": feats["view0"].float().cpu(),
                "view1": feats["view1"].float().cpu(),
                "proj_view0": feats["proj_view0"].cpu(),
                "proj_view1": feats["proj_view1"].cpu(),
            },
        )


def make_monitor(config: PretrainConfig, data: RunData, device: torch.device) -> Monitor | None:
    """The monitor of the config (``None`` when ``monitor_size`` is 0): fixed subsets drawn with
    ``subset_seed + 1`` (bank) and ``+ 2`` (queries), views with ``subset_seed + 3``."""
    if config.monitor_size == 0:
        return None
    n_bank = min(config.monitor_size, len(data.train))
    n_query = min(config.monitor_size, len(data.test))
    bank_idx = fixed_subset(len(data.train), n_bank, config.subset_seed + 1)
    query_idx = fixed_subset(len(data.test), n_query, config.subset_seed + 2)
    return Monitor(
        bank_images=data.train.images[bank_idx].to(device),
        bank_labels=data.train.labels[bank_idx].to(device),
        query_images=data.test.images[query_idx].to(device),
        query_labels=data.test.labels[query_idx].to(device),
        query_indices=query_idx,
        view_seed=config.subset_seed + 3,
    )
