"""One dataclass per pretraining run, and the named profiles (smoke, quick, paper).

A :class:`PretrainConfig` holds everything a run depends on. It validates itself on construction
(every bad value raises ``ValueError`` naming the field and what is allowed, before any work), round
trips through plain dicts, JSON and YAML, takes ``key=value`` overrides (values parsed with
``yaml.safe_load``, nested keys with a dot: ``temperature_params.tau_min=0.05``) and hashes to a short
stable :meth:`PretrainConfig.run_id`.

Fields that only say *where* or *how fast* a run executes, or how often it is saved (``data_root``,
``download``, ``num_threads``, ``checkpoint_every``) are left out of the run identity
(:data:`NON_IDENTITY_FIELDS`): the same run moved to another machine or data folder keeps its id and
can resume its checkpoints.

Profiles (:data:`PROFILES`, :func:`get_profile`):

- ``smoke``: seconds on a CPU (512 CIFAR-10 training images, a 4-layer CNN, 2 epochs, evaluated on a
  fixed 1,000-image test subset); for tests and CI.
- ``quick``: the CPU default, about 1.5 minutes on 2 cores: a fixed 10k-image CIFAR-10 subset, the
  small CNN, bf16 autocast (AMX), SGD momentum 0.9 lr 0.015 batch 256 cosine, 6 epochs (lr from a
  preliminary measurement of this network on the development machine, where 0.06 and above trained
  worse; this setup has no validation split, so that measurement used the kNN accuracy on test
  images; the lr was fixed before any run of the study and is the same for every temperature and
  every baseline), evaluated on the full
  test set with the 10k training images as the kNN bank. Sized so that the quick book (26 runs: three
  seeds for four CIFAR-10 points and for the two CIFAR-10-LT points, one for the others) builds in
  about 40 minutes on 2 cores.
- ``paper``: the CIFAR-10 setup of Manna et al. (arXiv 2308.01140) as in the authors' CIFAR script:
  ResNet-18 with the CIFAR stem, 512-512-128 projector, SGD lr 0.2, no momentum, weight decay 5e-4,
  cosine schedule, 200 epochs, batch 128 (the script's value; the paper does not state its batch),
  DySTreSS with (tau_min, tau_max) = (0.07, 0.2) (the script's CIFAR range; the paper's CIFAR range is
  not stated), bf16 autocast on GPU, each view forwarded on its own (BatchNorm statistics per view,
  as the script does, ``view_forward = separate``; so do smoke and quick). The script steps its cosine
  schedule once per epoch; here it is stepped per optimizer step (a shift of half an epoch at most).
- ``imagenet100``: the ImageNet-100 setup of docs/STUDY.md section 3 for a GPU, on an image folder
  (``data_root`` = a folder with ``train/<class>/`` and ``val/<class>/``): ResNet-50 with the ImageNet
  stem, 2048-2048-128 projector, LARS lr 0.075 sqrt(256) = 1.2, momentum 0.9, 10 warm-up epochs then
  cosine, batch 256, 200 epochs, bf16 autocast, DySTreSS (0.1, 0.2) (the paper's ImageNet range),
  kNN k = 20, linear probe. Images are decoded once to 256 px (shorter side, center square) and cached;
  training crops of 224 px are taken from that square (not from the whole image, a deviation that
  loses the edges of non-square images) and evaluation uses the 224 px center crop (Resize 256 +
  CenterCrop 224). Where the paper is silent we use SimCLR's ImageNet values: weight decay 1e-6, blur
  with probability 0.5, colour-jitter strength 1.0 (ColorJitter(0.8, 0.8, 0.8, 0.2) with p 0.8; the
  CIFAR recipe is strength 0.5). Both views go through the network as one batch (``view_forward =
  joint``), as in the authors' ImageNet code (built on lightly's ImageNet benchmark, with synchronised
  BatchNorm). The cosine decays to 0, where lightly's scheduler ends at 0.001 x the peak. ``lr`` is not
  rescaled when ``batch_size`` is overridden: set ``lr = 0.075 * sqrt(batch_size)`` with it. The linear
  probe is this project's (L-BFGS on frozen center-crop features), not the authors' 90-epoch SGD probe
  with augmentation, which reports the best validation accuracy over its epochs (a selection on the
  evaluation set that the paper's ImageNet numbers carry and ours do not).

``device`` is part of the identity on purpose: the same config gives different numbers on the CPU and
on a GPU, so a checkpoint written on one does not resume on the other under the same id.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from dystress import provenance
from dystress._checks import is_int as _is_int
from dystress._checks import is_real as _is_real

if TYPE_CHECKING:
    from dystress.temperature import TemperatureFunction

__all__ = [
    "DATASETS",
    "FIELD_HELP",
    "NON_IDENTITY_FIELDS",
    "PROFILES",
    "PretrainConfig",
    "get_profile",
]

DATASETS = ("cifar10", "cifar100", "cifar10_lt", "cifar100_lt", "imagefolder")
BACKBONES = ("resnet18", "resnet34", "resnet50", "small_cnn")
STEMS = ("cifar", "imagenet")
LOSSES = ("infonce", "dcl", "dclw")
OPTIMIZERS = ("sgd", "lars")
PRECISIONS = ("fp32", "bf16", "auto")
DEVICES = ("auto", "cpu", "cuda")
DATA_PLACEMENTS = ("auto", "device", "host")
VIEW_FORWARDS = ("separate", "joint")

#: Fields that do not change what a run computes; excluded from :meth:`PretrainConfig.run_id` and
#: from the check that a checkpoint belongs to the run.
NON_IDENTITY_FIELDS = (
    "data_root",
    "download",
    "num_threads",
    "checkpoint_every",
    "data_placement",
    "data_workers",
)

#: Identity fields added after run ids were first published, with the value every earlier run had:
#: left out of :meth:`PretrainConfig.run_id` at that value, so earlier run folders keep their ids.
LATER_FIELD_DEFAULTS: dict[str, Any] = {"jitter_strength": 0.5, "view_forward": "joint"}

#: One line of documentation per field (used by ``dystress pretrain --help``).
FIELD_HELP: dict[str, str] = {
    "profile": "name of the profile this config started from (recorded, not interpreted)",
    "dataset": f"one of {', '.join(DATASETS)}",
    "data_root": "folder holding the datasets (e.g. data/cifar-10-batches-py)",
    "download": "download the dataset when missing",
    "train_subset": "null, or train on a fixed subset of this many training images (drawn with subset_seed)",
    "test_subset": "null (the whole test set), or evaluate on a fixed subset of this many test images",
    "subset_seed": "seed of every data subset (train_subset, monitor subsets, long-tail sampling)",
    "imbalance_ratio": "n_min / n_max of the long-tailed datasets, in (0, 1]",
    "image_size": "null (dataset native) or the side images are resized and center-cropped to (imagefolder)",
    "crop_size": "null (= the image side) or the side of the training crops and of the evaluated center crop "
    "(imagefolder with image_size 256, crop_size 224: the ImageNet protocol)",
    "backbone": f"one of {', '.join(BACKBONES)}",
    "stem": "cifar (3x3 conv, no max-pool) or imagenet (7x7 conv + max-pool)",
    "projector_hidden_dim": "projector hidden width",
    "projector_out_dim": "projector output width (the contrastive space)",
    "loss": f"one of {', '.join(LOSSES)}",
    "temperature": "temperature function: constant, cosine (DySTreSS), shifted_cosine, linear, exponential, "
    "one_sided_cosine, ts_schedule, macl",
    "temperature_params": "keyword arguments of the temperature function, e.g. {tau_min: 0.07, tau_max: 0.2}",
    "optimizer": "sgd or lars (LARS excludes biases and norm parameters from adaptation and weight decay)",
    "lr": "peak learning rate (not scaled with the batch size)",
    "momentum": "SGD/LARS momentum in [0, 1) (0: plain SGD as in the authors' CIFAR script)",
    "weight_decay": "L2 weight decay >= 0",
    "lars_eta": "LARS trust coefficient eta > 0",
    "warmup_epochs": "linear warm-up epochs (may be fractional) before the per-step cosine decay",
    "epochs": "training epochs >= 0 (0: evaluate the random initialisation)",
    "batch_size": "global batch size (pairs per step, over all ranks)",
    "seed": "seed of initialisation, shuffling and augmentation",
    "precision": "fp32, bf16 (autocast, also on CPU) or auto (bf16 on a CUDA GPU with native bf16, "
    "else fp32)",
    "channels_last": "channels-last memory format where bf16 autocast runs",
    "compile": "torch.compile the model (tested on one process; under DDP, torch.compile breaks its graph at "
    "synchronised BatchNorm: PyTorch issues 161302, 107372)",
    "view_forward": "separate (each view through the network on its own: BatchNorm statistics per view, as "
    "the authors' CIFAR script, solo-learn and lightly's CIFAR benchmark) or joint (both views in one batch, "
    "as SimCLR's code and the authors' ImageNet code)",
    "device": "auto, cpu or cuda",
    "data_placement": "where the uint8 training images live: device (GPU-resident), host (batches streamed "
    "from host memory / the image-folder cache) or auto (device when they take under half the free memory)",
    "data_workers": "null (all CPU cores, at most 32) or the processes decoding an image folder to its cache",
    "crop_scale_min": "lower bound of the random-resized-crop area scale, in (0, 1]",
    "jitter_strength": "SimCLR colour-jitter strength s in [0, 2.5]: ColorJitter(0.8 s, 0.8 s, 0.8 s, 0.2 s) "
    "with p 0.8 (0.5 for CIFAR, 1.0 for ImageNet)",
    "blur_prob": "Gaussian blur probability in [0, 1] (0 for CIFAR)",
    "checkpoint_every": "write checkpoints/last.pt every this many epochs (and at the end)",
    "snapshot_epochs": "epochs whose monitor features are saved (0: before training; needs a monitor)",
    "monitor_size": "size of the fixed test subset (and train bank) of the per-epoch monitor; 0 = off",
    "knn_k": "neighbours of the weighted kNN evaluation",
    "knn_t": "vote temperature of the weighted kNN evaluation",
    "linear_probe": "also train a linear probe on frozen features at the end",
    "eval_batch_size": "batch size of feature extraction",
    "num_threads": "null (torch default) or the number of CPU threads",
}


def _fail(name: str, allowed: str, value: Any) -> None:
    raise ValueError(f"{name} must be {allowed}, got {value!r}")


def _plain(value: Any) -> Any:
    """NumPy (or other ``numbers``) scalars as plain ``int`` / ``float``, so configs serialise to JSON."""
    if isinstance(value, bool) or type(value) in (int, float):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return value


@dataclass
class PretrainConfig:
    """Everything a pretraining run depends on (see :data:`FIELD_HELP` for each field)."""

    profile: str = "custom"
    # data
    dataset: str = "cifar10"
    data_root: str = "data"
    download: bool = True
    train_subset: int | None = None
    test_subset: int | None = None
    subset_seed: int = 0
    imbalance_ratio: float = 0.01
    image_size: int | None = None
    crop_size: int | None = None
    # model
    backbone: str = "resnet18"
    stem: str = "cifar"
    projector_hidden_dim: int = 512
    projector_out_dim: int = 128
    # loss
    loss: str = "infonce"
    temperature: str = "cosine"
    temperature_params: dict[str, float] = field(default_factory=lambda: {"tau_min": 0.07, "tau_max": 0.2})
    # optimisation
    optimizer: str = "sgd"
    lr: float = 0.2
    momentum: float = 0.0
    weight_decay: float = 5e-4
    lars_eta: float = 0.001
    warmup_epochs: float = 0.0
    epochs: int = 200
    batch_size: int = 128
    seed: int = 0
    # execution
    precision: str = "auto"
    channels_last: bool = True
    compile: bool = False
    view_forward: str = "separate"
    device: str = "auto"
    data_placement: str = "auto"
    data_workers: int | None = None
    num_threads: int | None = None
    # augmentation
    crop_scale_min: float = 0.08
    jitter_strength: float = 0.5
    blur_prob: float = 0.0
    # bookkeeping and evaluation
    checkpoint_every: int = 1
    snapshot_epochs: list[int] = field(default_factory=list)
    monitor_size: int = 1000
    knn_k: int = 200
    knn_t: float = 0.1
    linear_probe: bool = False
    eval_batch_size: int = 512

    def __post_init__(self) -> None:
        self._coerce()
        self.validate()

    # ------------------------------------------------------------------ validation
    def _coerce(self) -> None:
        """Accept ints for float fields and numeric strings that YAML 1.1 leaves as text (``1e-3``)."""
        for f in dataclasses.fields(self):
            value = _plain(getattr(self, f.name))
            setattr(self, f.name, value)
            if f.type in ("float", "float | None") and isinstance(value, str):
                try:
                    setattr(self, f.name, float(value))
                except ValueError:
                    pass
            elif f.type == "float" and _is_int(value):
                setattr(self, f.name, float(value))
        if isinstance(self.temperature_params, dict):
            params = {}
            for k, v in self.temperature_params.items():
                v = _plain(v)
                if isinstance(v, str):
                    try:
                        v = float(v)
                    except ValueError:
                        pass
                params[k] = v
            self.temperature_params = params
        if isinstance(self.snapshot_epochs, (tuple, list)):
            self.snapshot_epochs = [_plain(e) for e in self.snapshot_epochs]

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field and what it allows."""
        for name, choices in (
            ("dataset", DATASETS),
            ("backbone", BACKBONES),
            ("stem", STEMS),
            ("loss", LOSSES),
            ("optimizer", OPTIMIZERS),
            ("precision", PRECISIONS),
            ("device", DEVICES),
            ("data_placement", DATA_PLACEMENTS),
            ("view_forward", VIEW_FORWARDS),
        ):
            if getattr(self, name) not in choices:
                _fail(name, f"one of {list(choices)}", getattr(self, name))
        for name in ("profile", "data_root"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                _fail(name, "a non-empty string", getattr(self, name))
        for name in ("download", "channels_last", "compile", "linear_probe"):
            if not isinstance(getattr(self, name), bool):
                _fail(name, "true or false", getattr(self, name))
        for name, low in (
            ("projector_hidden_dim", 1),
            ("projector_out_dim", 1),
            ("epochs", 0),
            ("batch_size", 2),
            ("seed", 0),
            ("subset_seed", 0),
            ("checkpoint_every", 1),
            ("monitor_size", 0),
            ("knn_k", 1),
            ("eval_batch_size", 1),
        ):
            value = getattr(self, name)
            if not _is_int(value) or value < low:
                _fail(name, f"an integer >= {low}", value)
        for name, low in (
            ("train_subset", 2),
            ("test_subset", 2),
            ("image_size", 8),
            ("crop_size", 8),
            ("num_threads", 1),
        ):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < low):
                _fail(name, f"null or an integer >= {low}", value)
        if self.data_workers is not None and (not _is_int(self.data_workers) or self.data_workers < 0):
            _fail("data_workers", "null or an integer >= 0", self.data_workers)
        if self.dataset == "imagefolder" and self.image_size is None:
            _fail(
                "image_size",
                "an integer >= 8 for dataset imagefolder (e.g. 64, or 256 with crop_size 224)",
                None,
            )
        if self.dataset != "imagefolder" and self.image_size not in (None, 32):
            _fail("image_size", f"null or 32 for dataset {self.dataset}", self.image_size)
        side = self.image_size if self.image_size is not None else 32
        if self.crop_size is not None and self.crop_size > side:
            _fail("crop_size", f"null or an integer <= the image side ({side})", self.crop_size)
        for name in ("lr", "knn_t", "lars_eta"):
            value = getattr(self, name)
            if not _is_real(value) or value <= 0:
                _fail(name, "a finite number > 0", value)
        if not _is_real(self.momentum) or not 0.0 <= self.momentum < 1.0:
            _fail("momentum", "a number in [0, 1)", self.momentum)
        if not _is_real(self.weight_decay) or self.weight_decay < 0:
            _fail("weight_decay", "a finite number >= 0", self.weight_decay)
        if not _is_real(self.warmup_epochs) or not 0 <= self.warmup_epochs <= self.epochs:
            _fail("warmup_epochs", f"a number in [0, epochs = {self.epochs}]", self.warmup_epochs)
        if not _is_real(self.imbalance_ratio) or not 0 < self.imbalance_ratio <= 1:
            _fail("imbalance_ratio", "a number in (0, 1]", self.imbalance_ratio)
        if not _is_real(self.crop_scale_min) or not 0 < self.crop_scale_min <= 1:
            _fail("crop_scale_min", "a number in (0, 1]", self.crop_scale_min)
        if not _is_real(self.jitter_strength) or not 0 <= self.jitter_strength <= 2.5:
            _fail(
                "jitter_strength",
                "a number in [0, 2.5] (the hue range 0.2 s is at most 0.5)",
                self.jitter_strength,
            )
        if not _is_real(self.blur_prob) or not 0 <= self.blur_prob <= 1:
            _fail("blur_prob", "a number in [0, 1]", self.blur_prob)
        if not isinstance(self.snapshot_epochs, list) or not all(
            _is_int(e) and 0 <= e <= self.epochs for e in self.snapshot_epochs
        ):
            _fail(
                "snapshot_epochs", f"a list of integers in [0, epochs = {self.epochs}]", self.snapshot_epochs
            )
        if self.backbone == "small_cnn" and self.stem != "cifar":
            _fail("stem", "cifar for backbone small_cnn (it has no ImageNet stem)", self.stem)
        if self.snapshot_epochs and self.monitor_size == 0:
            _fail(
                "snapshot_epochs",
                "empty when monitor_size = 0 (snapshots hold monitor features)",
                self.snapshot_epochs,
            )
        if self.train_subset is not None and self.train_subset < self.batch_size:
            _fail("train_subset", f"null or >= batch_size = {self.batch_size}", self.train_subset)
        if not isinstance(self.temperature_params, dict) or not all(
            isinstance(k, str) for k in self.temperature_params
        ):
            _fail("temperature_params", "a mapping from parameter names to numbers", self.temperature_params)
        temperature = self.build_temperature()
        if self.loss in ("dcl", "dclw") and temperature.needs_positive_statistics:
            _fail(
                "loss",
                f"infonce with temperature {self.temperature} (it sets tau from the positive pairs' "
                "probability, which DCL removes from the denominator)",
                self.loss,
            )

    def build_temperature(self) -> TemperatureFunction:
        """The run's temperature function (raises ``ValueError`` naming ``temperature``/its params)."""
        from dystress.temperature import build_temperature

        try:
            return build_temperature(self.temperature, **self.temperature_params)
        except (ValueError, TypeError) as err:
            raise ValueError(
                f"temperature={self.temperature!r} with temperature_params={self.temperature_params!r}: {err}"
            ) from None

    # ------------------------------------------------------------------ conversions
    def to_dict(self) -> dict[str, Any]:
        """Plain-data dict of every field (a deep copy)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PretrainConfig:
        """Build from a dict of fields; unknown keys raise ``ValueError`` listing them."""
        if not isinstance(data, dict):
            raise ValueError(f"a config must be a mapping of fields, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known keys: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_saved(cls, data: dict[str, Any]) -> PretrainConfig:
        """Build from a config written by an earlier run (``config.json``, a checkpoint): fields added
        since then (:data:`LATER_FIELD_DEFAULTS`) take the value that run had, not today's default."""
        if not isinstance(data, dict):
            raise ValueError(f"a config must be a mapping of fields, got {type(data).__name__}")
        return cls.from_dict({**LATER_FIELD_DEFAULTS, **data})

    def to_json(self) -> str:
        """The config as indented JSON (sorted keys)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PretrainConfig:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    def to_yaml(self) -> str:
        """The config as YAML (sorted keys)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=True, default_flow_style=None)

    @classmethod
    def from_yaml(cls, text: str) -> PretrainConfig:
        """Inverse of :meth:`to_yaml` (an empty document is the default config)."""
        return cls.from_dict(yaml.safe_load(text) or {})

    @classmethod
    def from_file(cls, path: str | Path) -> PretrainConfig:
        """Read a ``.json`` or ``.yaml``/``.yml`` file (a missing file raises ``FileNotFoundError``)."""
        path = Path(path)
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            return cls.from_json(text)
        return cls.from_yaml(text)

    def updated(self, updates: dict[str, Any]) -> PretrainConfig:
        """A new config with ``updates`` (a dict of fields) applied; validated once at the end.

        Dependent fields follow a change unless given too (:meth:`_follow`): another ``temperature``
        function drops the old function's parameters (the new function's defaults apply), and a
        smaller ``epochs`` drops the ``snapshot_epochs`` beyond it.
        """
        if not isinstance(updates, dict):
            raise ValueError(f"updates must be a dict of config fields, got {type(updates).__name__}")
        data = self.to_dict()
        self._follow(data, updates, given=set(updates))
        data.update(updates)
        return type(self).from_dict(data)

    def _follow(self, data: dict[str, Any], new: dict[str, Any], given: set[str]) -> None:
        """Reset in ``data`` the fields that depend on a changed field of ``new`` and are not ``given``."""
        temperature = new.get("temperature")
        if temperature is not None and temperature != self.temperature and "temperature_params" not in given:
            data["temperature_params"] = {}
        epochs = new.get("epochs")
        if _is_int(epochs) and epochs != self.epochs and "snapshot_epochs" not in given:
            data["snapshot_epochs"] = [e for e in self.snapshot_epochs if e <= epochs]

    def with_overrides(self, overrides: list[str] | tuple[str, ...]) -> PretrainConfig:
        """Apply ``["key=value", "temperature_params.tau_min=0.05", ...]`` (values parsed as YAML).

        Dependent fields follow as in :meth:`updated`: ``temperature=NAME`` naming another function
        drops the old function's parameters unless a whole ``temperature_params=...`` is given, so
        ``temperature=constant temperature_params.tau=0.2`` works from any profile; ``epochs=N`` drops
        the snapshot epochs beyond N unless ``snapshot_epochs=...`` is given.
        """
        if isinstance(overrides, str) or not isinstance(overrides, (list, tuple)):
            raise ValueError(
                f"overrides must be a list of 'key=value' strings, got {type(overrides).__name__} "
                f"{overrides!r}"
            )
        data = self.to_dict()
        known = {f.name for f in dataclasses.fields(self)}
        parsed: list[tuple[str, str, str, Any]] = []
        for item in overrides:
            if not isinstance(item, str) or "=" not in item:
                raise ValueError(f"override {item!r} must have the form key=value")
            key, text = item.split("=", 1)
            key = key.strip()
            try:
                value = yaml.safe_load(text) if text.strip() else None
            except yaml.YAMLError as err:
                raise ValueError(f"override {item!r}: value is not valid YAML ({err})") from None
            head, _, sub = key.partition(".")
            if head not in known:
                raise ValueError(
                    f"override {item!r}: unknown config key {head!r}; known keys: {sorted(known)}"
                )
            parsed.append((item, head, sub, value))
        whole = {head: value for _, head, sub, value in parsed if not sub}
        self._follow(data, whole, given=set(whole))
        for item, head, sub, value in parsed:
            if sub:
                if not isinstance(data[head], dict):
                    raise ValueError(f"override {item!r}: {head!r} is not a mapping")
                data[head] = {**data[head], sub: value}
            else:
                data[head] = value
        return type(self).from_dict(data)

    # ------------------------------------------------------------------ identity
    def identity(self) -> dict[str, Any]:
        """The fields that determine what the run computes (all but :data:`NON_IDENTITY_FIELDS`, and
        the :data:`LATER_FIELD_DEFAULTS` at their old value)."""
        old_default = LATER_FIELD_DEFAULTS.get
        return {
            k: v
            for k, v in self.to_dict().items()
            if k not in NON_IDENTITY_FIELDS and not (k in LATER_FIELD_DEFAULTS and v == old_default(k))
        }

    def run_id(self) -> str:
        """Short stable hash (12 hex digits) of the canonical JSON of :meth:`identity`
        (:func:`dystress.provenance.run_id`)."""
        return provenance.run_id(self)


def identity_differences(a: dict[str, Any], b: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Identity fields whose values differ between two config dicts: ``{field: (value in a, in b)}``.

    Both dicts go through :meth:`PretrainConfig.from_saved` first (absent fields take the value runs
    had before the field existed, so a config saved then still matches); raises ``ValueError`` for an
    invalid one.
    """
    ca, cb = PretrainConfig.from_saved(dict(a)), PretrainConfig.from_saved(dict(b))
    da, db = ca.to_dict(), cb.to_dict()
    keys = ca.identity().keys() | cb.identity().keys()
    return {k: (da[k], db[k]) for k in sorted(keys) if da[k] != db[k]}


def _smoke() -> PretrainConfig:
    return PretrainConfig(
        profile="smoke",
        dataset="cifar10",
        train_subset=512,
        test_subset=1000,
        backbone="small_cnn",
        projector_hidden_dim=128,
        projector_out_dim=64,
        temperature="cosine",
        temperature_params={"tau_min": 0.1, "tau_max": 0.2},
        lr=0.015,
        momentum=0.9,
        weight_decay=5e-4,
        epochs=2,
        batch_size=128,
        precision="fp32",
        checkpoint_every=1,
        snapshot_epochs=[0, 1, 2],
        monitor_size=128,
        knn_k=20,
        eval_batch_size=256,
    )


def _quick() -> PretrainConfig:
    return PretrainConfig(
        profile="quick",
        dataset="cifar10",
        train_subset=10_000,
        backbone="small_cnn",
        projector_hidden_dim=512,
        projector_out_dim=128,
        temperature="cosine",
        temperature_params={"tau_min": 0.07, "tau_max": 0.2},
        lr=0.015,
        momentum=0.9,
        weight_decay=5e-4,
        epochs=6,
        batch_size=256,
        precision="bf16",
        checkpoint_every=1,
        snapshot_epochs=[0, 1, 2, 4, 6],
        monitor_size=1000,
        knn_k=200,
        eval_batch_size=1000,
    )


def _paper() -> PretrainConfig:
    return PretrainConfig(
        profile="paper",
        dataset="cifar10",
        backbone="resnet18",
        stem="cifar",
        projector_hidden_dim=512,
        projector_out_dim=128,
        temperature="cosine",
        temperature_params={"tau_min": 0.07, "tau_max": 0.2},
        optimizer="sgd",
        lr=0.2,
        momentum=0.0,
        weight_decay=5e-4,
        epochs=200,
        batch_size=128,
        precision="auto",
        checkpoint_every=10,
        snapshot_epochs=[0, 1, 10, 50, 100, 200],
        monitor_size=1000,
        knn_k=200,
        linear_probe=True,
        eval_batch_size=1024,
    )


def _imagenet100() -> PretrainConfig:
    return PretrainConfig(
        profile="imagenet100",
        dataset="imagefolder",
        data_root="data/imagenet100",
        download=False,
        image_size=256,
        crop_size=224,
        backbone="resnet50",
        stem="imagenet",
        projector_hidden_dim=2048,
        projector_out_dim=128,
        temperature="cosine",
        temperature_params={"tau_min": 0.1, "tau_max": 0.2},
        optimizer="lars",
        lr=0.075 * math.sqrt(256),
        momentum=0.9,
        weight_decay=1e-6,
        warmup_epochs=10,
        epochs=200,
        batch_size=256,
        precision="auto",
        jitter_strength=1.0,
        blur_prob=0.5,
        view_forward="joint",
        checkpoint_every=5,
        snapshot_epochs=[0, 50, 100, 200],
        monitor_size=1000,
        knn_k=20,
        linear_probe=True,
        eval_batch_size=512,
    )


#: Named profiles; :func:`get_profile` returns a fresh copy.
PROFILES: dict[str, PretrainConfig] = {
    "smoke": _smoke(),
    "quick": _quick(),
    "paper": _paper(),
    "imagenet100": _imagenet100(),
}


def get_profile(name: str) -> PretrainConfig:
    """A fresh copy of profile ``name`` (one of :data:`PROFILES`)."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; known profiles: {sorted(PROFILES)}")
    return PretrainConfig.from_dict(PROFILES[name].to_dict())
