"""dystress: dynamically scaled temperature (DySTreSS) in contrastive self-supervised learning.

A reproducible study of Manna et al., "Dynamically Scaled Temperature in Self-Supervised Contrastive
Learning", arXiv 2308.01140: exact temperature-scaled contrastive losses, a GPU-first pretraining
engine, feature-space metrics and the papermill-driven ablations behind the book.

Example:
    >>> import torch, dystress
    >>> loss_fn = dystress.InfoNCELoss(temperature=dystress.CosineTemperature(tau_min=0.1, tau_max=0.2))
    >>> loss = loss_fn(torch.randn(8, 16), torch.randn(8, 16))
"""

from dystress.checkpoint import CheckpointError
from dystress.config import PROFILES, PretrainConfig, get_profile
from dystress.data.augment import SimCLRAugmentation
from dystress.data.datasets import DATASETS, ImageDataset, load_dataset
from dystress.data.imagefolder import load_image_folder
from dystress.data.loader import DeviceBatchLoader, HostBatchLoader
from dystress.evaluate import Pretrained, evaluate_checkpoint, load_pretrained
from dystress.losses import DCLLoss, InfoNCELoss, MACLLoss, QueueInfoNCELoss, build_loss
from dystress.metrics import (
    alignment,
    extract_features,
    inter_class_uniformity,
    knn_accuracy,
    knn_class_averaged_accuracy,
    linear_probe,
    tolerance,
    uniformity,
)
from dystress.models import BACKBONES, ContrastiveModel, Projector, build_backbone
from dystress.runtime import build_model
from dystress.temperature import (
    ConstantTemperature,
    CosineScheduleTemperature,
    CosineTemperature,
    ExponentialTemperature,
    GlobalTemperature,
    LinearTemperature,
    LogLinearTemperature,
    MACLTemperature,
    OneSidedCosineTemperature,
    ShiftedCosineTemperature,
    TemperatureFunction,
    as_temperature,
    build_temperature,
)
from dystress.train import TrainingDiverged, pretrain

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """A clear error for the study's modules that moved into :mod:`dystress.study` (issue 12)."""
    if name in ("ablations", "results", "findings", "plots"):
        raise ImportError(f"dystress.{name} moved: use dystress.study.{name}")
    raise AttributeError(f"module 'dystress' has no attribute {name!r}")


__all__ = [
    "BACKBONES",
    "DATASETS",
    "PROFILES",
    "CheckpointError",
    "ConstantTemperature",
    "ContrastiveModel",
    "CosineScheduleTemperature",
    "CosineTemperature",
    "DCLLoss",
    "DeviceBatchLoader",
    "ExponentialTemperature",
    "LogLinearTemperature",
    "GlobalTemperature",
    "HostBatchLoader",
    "ImageDataset",
    "InfoNCELoss",
    "LinearTemperature",
    "MACLLoss",
    "MACLTemperature",
    "OneSidedCosineTemperature",
    "Pretrained",
    "PretrainConfig",
    "Projector",
    "QueueInfoNCELoss",
    "ShiftedCosineTemperature",
    "SimCLRAugmentation",
    "TemperatureFunction",
    "TrainingDiverged",
    "alignment",
    "as_temperature",
    "build_backbone",
    "build_loss",
    "build_model",
    "build_temperature",
    "evaluate_checkpoint",
    "extract_features",
    "get_profile",
    "inter_class_uniformity",
    "knn_accuracy",
    "knn_class_averaged_accuracy",
    "linear_probe",
    "load_dataset",
    "load_image_folder",
    "load_pretrained",
    "pretrain",
    "tolerance",
    "uniformity",
]
