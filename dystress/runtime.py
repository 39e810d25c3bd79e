"""What a training process is built from: its device and precision, the model, the data, the
augmentation and the batch loader.

Data stay on the device as uint8 (:class:`~dystress.data.loader.DeviceBatchLoader`), or, when they do
not fit (``data_placement``: ``auto`` puts them on the device when they take under half its free
memory), in host memory, streamed batch by batch (:class:`~dystress.data.loader.HostBatchLoader`; the
same batches either way).

bf16 autocast (+ channels-last) is used on CUDA, and on the CPU when ``precision="bf16"``. On CUDA,
cuDNN autotuning is on (``cudnn.benchmark``, :func:`set_up_device`), so GPU runs are reproducible in
distribution, not bit for bit; ``precision`` is recorded as ``fp32 (tf32 convolutions)`` when
cuDNN's TF32 default is in force (:func:`precision_label`).

On the CPU, :func:`set_up_device` asks glibc's allocator to keep freed memory
(:func:`keep_freed_memory`): by default every block over its mmap threshold goes back to the kernel
when freed, so each training step faults its large activations in again, page by page (a quick-profile
step spent about 10 % of its time so, its final evaluation about 40 %).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from dystress.config import PretrainConfig
from dystress.data.augment import SimCLRAugmentation
from dystress.data.datasets import ImageDataset, load_dataset
from dystress.data.loader import DeviceBatchLoader, HostBatchLoader, fits_on_device
from dystress.models import ContrastiveModel, Projector, build_backbone

__all__ = [
    "RunData",
    "build_augmentation",
    "build_loader",
    "build_model",
    "device_name",
    "fixed_subset",
    "keep_freed_memory",
    "load_data",
    "precision_label",
    "resolve_device",
    "resolve_placement",
    "set_up_device",
    "uses_bf16",
]


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA (this rank's GPU) when available, else CPU."""
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ValueError("device='cuda' but CUDA is not available here")
        if torch.cuda.device_count() == 1:  # one visible GPU per process (CUDA_VISIBLE_DEVICES per task)
            local_world = os.environ.get("LOCAL_WORLD_SIZE", "1")  # set by torchrun
            if "CUDA_VISIBLE_DEVICES" not in os.environ and local_world not in ("", "0", "1"):
                raise ValueError(  # a machine with one GPU, not a process given one of several
                    f"LOCAL_WORLD_SIZE = {local_world} processes on this machine, which has one GPU: start "
                    "one process per GPU (torchrun --nproc_per_node <number of GPUs>)"
                )
            return torch.device("cuda", 0)
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"local rank {local_rank} has no GPU: this machine has {torch.cuda.device_count()} "
                "(start at most one process per GPU, e.g. torchrun --nproc_per_node <number of GPUs>)"
            )
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def set_up_device(config: PretrainConfig, local_rank: int = 0) -> torch.device:
    """This process's device (:func:`resolve_device`), made ready: the CPU's thread count when
    ``num_threads`` is set and freed memory kept in the process (:func:`keep_freed_memory`), on CUDA the
    rank's GPU made current with cuDNN autotuning on."""
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    device = resolve_device(config.device, local_rank)
    if device.type == "cpu":
        keep_freed_memory()
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    return device


#: glibc's ``mallopt`` parameters (malloc.h): the trim threshold and the most blocks served by mmap.
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory in the process for reuse: no block is served by ``mmap``
    (so none is unmapped when freed) and the heap is trimmed only above 1 GiB free. Saves the page
    faults of re-allocating the same large tensors every step; changes no computed value. The process
    keeps its peak heap. Returns False where the C library has no ``mallopt`` (not glibc)."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))


def uses_bf16(config: PretrainConfig, device: torch.device) -> bool:
    """bf16 autocast: always for ``bf16``, for ``auto`` on a CUDA GPU with native bf16 (Ampere and later)."""
    if config.precision == "bf16":
        return True
    if config.precision != "auto" or device.type != "cuda":
        return False
    return torch.cuda.is_bf16_supported(including_emulation=False)  # not V100/T4's emulated bf16


def precision_label(bf16: bool, device: torch.device) -> str:
    """What the forward passes ran in: ``bf16``, ``fp32`` or ``fp32 (tf32 convolutions)`` on CUDA."""
    if bf16:
        return "bf16"
    if device.type == "cuda" and torch.backends.cudnn.allow_tf32:
        return "fp32 (tf32 convolutions)"
    return "fp32"


def build_model(config: PretrainConfig) -> ContrastiveModel:
    """Backbone + projector of the config (initialised from the global torch RNG)."""
    backbone = build_backbone(config.backbone, stem=config.stem)
    projector = Projector(backbone.feature_dim, config.projector_hidden_dim, config.projector_out_dim)
    return ContrastiveModel(backbone, projector)


@dataclass
class RunData:
    """The run's training set (after ``train_subset``) and the full test set, on the CPU."""

    train: ImageDataset
    test: ImageDataset


def fixed_subset(n: int, size: int, seed: int) -> Tensor:
    """Sorted indices of a seeded random subset of ``size`` out of ``n`` (int64, CPU)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:size].sort().values


def load_data(config: PretrainConfig) -> RunData:
    """Load the training split and the test split, reduced to the fixed ``train_subset``/``test_subset``."""
    kwargs = {
        "root": config.data_root,
        "download": config.download,
        "imbalance_ratio": config.imbalance_ratio,
        "seed": config.subset_seed,
        "image_size": config.image_size,
        "workers": config.data_workers,
    }
    train = load_dataset(config.dataset, train=True, **kwargs)
    test = load_dataset(config.dataset, train=False, **kwargs)
    if config.train_subset is not None:
        if config.train_subset > len(train):
            raise ValueError(f"train_subset = {config.train_subset} exceeds the {len(train)} training images")
        train = train.subset(fixed_subset(len(train), config.train_subset, config.subset_seed))
    if config.test_subset is not None:
        if config.test_subset > len(test):
            raise ValueError(f"test_subset = {config.test_subset} exceeds the {len(test)} test images")
        test = test.subset(fixed_subset(len(test), config.test_subset, config.subset_seed))
    return RunData(train=train, test=test)


def build_augmentation(
    config: PretrainConfig, dataset: ImageDataset, device: torch.device | str = "cpu"
) -> SimCLRAugmentation:
    """The SimCLR augmentation of the config (output side ``crop_size``, else ``dataset``'s image side)
    with ``dataset``'s statistics, on ``device``. Colour jitter of strength s is SimCLR's
    ColorJitter(0.8 s, 0.8 s, 0.8 s, 0.2 s) (Chen et al. 2020, appendix A)."""
    s = config.jitter_strength
    return SimCLRAugmentation(
        image_size=config.crop_size or int(dataset.images.shape[-1]),
        crop_scale=(config.crop_scale_min, 1.0),
        brightness=0.8 * s,
        contrast=0.8 * s,
        saturation=0.8 * s,
        hue=0.2 * s,
        blur_prob=config.blur_prob,
        mean=dataset.mean,
        std=dataset.std,
    ).to(device)


def resolve_placement(placement: str, num_bytes: int, device: torch.device) -> str:
    """``device`` or ``host`` for the training images (``auto``: device when they fit, see
    :func:`~dystress.data.loader.fits_on_device`)."""
    if placement == "auto":
        return "device" if fits_on_device(num_bytes, device) else "host"
    return placement


def build_loader(
    config: PretrainConfig,
    train: ImageDataset,
    placement: str,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
) -> DeviceBatchLoader | HostBatchLoader:
    """The shuffling, last-incomplete-batch-dropping loader of the training images, on the device
    (``placement = device``) or streamed from host memory (``host``); this rank's share of each global
    batch of ``batch_size``."""
    loader_class = DeviceBatchLoader if placement == "device" else HostBatchLoader
    return loader_class(
        train.images,
        train.labels,
        config.batch_size,
        shuffle=True,
        drop_last=True,
        seed=config.seed,
        device=device,
        rank=rank,
        world_size=world_size,
    )


def device_name(device: torch.device) -> str:
    """Readable name of ``device`` for records and reports: the GPU model, or the CPU model and threads."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"cpu ({line.split(':', 1)[1].strip()}, {torch.get_num_threads()} threads)"
    except OSError:
        pass
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"
