"""One dataclass per pretraining run, and the named profiles (smoke, quick, long, paper).

A :class:`PretrainConfig` holds everything a run depends on. Each field carries its help line, the
part of the run it belongs to (data, model, loss, optim, execution, augment, eval) and its own check
in its metadata; checks across fields are one short function per part. A config validates itself on
construction (every bad value raises ``ValueError`` naming the field and what is allowed, before any
work), round trips through plain dicts, JSON and YAML, and hashes to a short stable
:meth:`PretrainConfig.run_id`. Names of datasets, backbones, stems, losses and temperature functions
come from the modules that define them.

One override path, :meth:`PretrainConfig.with_parameters`, serves ``--set key=value``
(:meth:`~PretrainConfig.with_overrides`: values parsed with ``yaml.safe_load``, nested keys with a dot:
``temperature_params.tau_min=0.05``), config files (:meth:`~PretrainConfig.updated`), the notebook's
parameters and the study (``tau_min=0.05`` at top level goes into ``temperature_params``).

Fields that only say *where* or *how fast* a run executes, or how often it is saved (``data_root``,
``download``, ``num_threads``, ``checkpoint_every``, ...: metadata ``identity=False``) are left out of
the run identity (:data:`NON_IDENTITY_FIELDS`): the same run moved to another machine or data folder
keeps its id and can resume its checkpoints. ``profile`` names a folder of runs: a plain name, never a
path.

Profiles (:data:`PROFILES`, :func:`get_profile`):

- ``smoke``: seconds on a CPU (512 CIFAR-10 training images, a 4-layer CNN, 2 epochs, evaluated on a
  fixed 1,000-image test subset); for tests and CI.
- ``quick``: the CPU default, about a minute a run on one core: a fixed 10k-image CIFAR-10 subset, the
  small CNN, bf16 autocast (AMX), SGD momentum 0.9 lr 0.015 batch 256 cosine, 6 epochs (lr from a
  preliminary measurement of this network on the development machine, where 0.06 and above trained
  worse; this setup has no validation split, so that measurement used the kNN accuracy on test
  images; the lr was fixed before any run of the study and is the same for every temperature and
  every baseline), evaluated on the full
  test set with the 10k training images as the kNN bank. Sized so that the quick book (30 runs: three
  seeds for four CIFAR-10 points and for the two CIFAR-10-LT points, one for the others) builds in
  about 20 minutes on 2 cores from a fresh clone (with the fused CPU kernel, ``dystress.cpu_kernels``).
- ``long``: the quick configuration on all 50,000 CIFAR-10 training images for 20 epochs (3,900
  optimiser steps: 17 times quick's 234, 3.3 times those of the same configuration trained 6 epochs on
  the full set), with the full training set as the kNN bank. For the core comparison only (fixed tau
  0.1 and 0.2, DySTreSS (0.07, 0.2) and (0.1, 0.2), MACL; three paired seeds) and the 6-epoch
  budget point: how the gap to fixed tau and the temperature regime move with the training budget.
  Sized by measurement on the 2-core development VM (AMD EPYC, torch 2.14, bf16 autocast): the quick
  configuration on the full set trains at about 1,300 two-view pairs per second with 2 threads and 6
  epochs took about 4.5 minutes a run (fixed tau 0.1: 55.7 %, DySTreSS (0.07, 0.2): 55.1 % weighted
  200-NN); 20 epochs were estimated at about 14 minutes a run and the profile at about 4 hours.
  Measured on the same VM, two runs side by side at 1 thread each (``--parallel 2``): an epoch takes
  80-100 s (with the monitor), a 20-epoch run 29-33 minutes with its evaluation, and the profile's
  21 runs (15 of 20 epochs, 6 of 6) about 4.5 hours of the machine when nothing else runs on it.
  Its results ship with the repository under ``results/long/`` (``dystress study export --profile
  long``); ``dystress study run --profile long`` makes them again. The shipped ones were made on one
  NVIDIA H200 (``--engine cli --parallel 6``): a 20-epoch run took 105 s beside five others (about
  90 s of training), 222 s beside five others and the six ResNet-18 headline runs.
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

import copy
import dataclasses
import json
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dystress import provenance
from dystress._checks import NAME_RULE, is_int, is_name, is_real, require
from dystress.data.datasets import DATASETS
from dystress.losses import LOSSES, build_loss
from dystress.models import BACKBONES, STEMS
from dystress.temperature import (
    TEMPERATURE_PARAMETER_NAMES,
    TEMPERATURES,
    TemperatureFunction,
    build_temperature,
)

__all__ = [
    "DATASETS",
    "FIELD_HELP",
    "NON_IDENTITY_FIELDS",
    "PARTS",
    "PROFILES",
    "PretrainConfig",
    "get_profile",
]

OPTIMIZERS = ("sgd", "lars")
PRECISIONS = ("fp32", "bf16", "auto")
#: torch.compile's modes (``compile_mode``).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
DEVICES = ("auto", "cpu", "cuda")
DATA_PLACEMENTS = ("auto", "device", "host")
VIEW_FORWARDS = ("separate", "joint")

#: The parts of a run a field belongs to (``field.metadata["part"]``); each part's checks that span
#: several fields are one function of :data:`_PART_CHECKS`.
PARTS = ("run", "data", "model", "loss", "optim", "execution", "augment", "eval")

#: Identity fields added after run ids were first published, with the value every earlier run had:
#: left out of :meth:`PretrainConfig.run_id` at that value, so earlier run folders keep their ids.
LATER_FIELD_DEFAULTS: dict[str, Any] = {
    "jitter_strength": 0.5,
    "view_forward": "joint",
    "temperature_lr": None,
    "compile_mode": "default",
}


def yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error in one line: what is wrong and where (``line L, column C`` of the text)."""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    mark = getattr(err, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


@dataclass(frozen=True)
class _Rule:
    """What one field allows on its own: ``ok(value)``, and ``allowed`` in the words of the error."""

    allowed: str
    ok: Callable[[Any], bool]


def _choice(choices: tuple[str, ...]) -> _Rule:
    return _Rule(f"one of {list(choices)}", lambda v: isinstance(v, str) and v in choices)


def _integer(low: int, optional: bool = False) -> _Rule:
    allowed = f"{'null or ' if optional else ''}an integer >= {low}"
    return _Rule(allowed, lambda v: (optional and v is None) or (is_int(v) and v >= low))


_NAME = _Rule(NAME_RULE, is_name)
_TEXT = _Rule("a non-empty string", lambda v: isinstance(v, str) and bool(v))
_FLAG = _Rule("true or false", lambda v: isinstance(v, bool))
_POSITIVE = _Rule("a finite number > 0", lambda v: is_real(v) and v > 0)
_UNIT = _Rule("a number in (0, 1]", lambda v: is_real(v) and 0 < v <= 1)
_MAPPING = _Rule(
    "a mapping from parameter names to numbers",
    lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v),
)


def _field(default: Any, part: str, help: str, rule: _Rule | None = None, *, identity: bool = True) -> Any:
    """A dataclass field whose metadata holds its ``help`` line, its ``part`` of the run, its own check
    (``rule``; checks that span fields are per part) and whether it is part of the run ``identity``."""
    metadata = {"help": help, "part": part, "rule": rule, "identity": identity}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def _plain(value: Any) -> Any:
    """NumPy (or other ``numbers``) scalars as plain ``int`` / ``float``, so configs serialise to JSON."""
    if isinstance(value, bool) or type(value) in (int, float):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return value


def _as_float(value: Any) -> Any:
    """A numeric string (YAML 1.1 reads ``1e-3`` as text) as a float; anything else as it is."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


@dataclass
class PretrainConfig:
    """Everything a pretraining run depends on; each field's help is ``FIELD_HELP`` (its metadata)."""

    profile: str = _field(
        "custom", "run", "name of the profile this config started from (recorded, not interpreted)", _NAME
    )
    # data
    dataset: str = _field("cifar10", "data", f"one of {', '.join(DATASETS)}", _choice(DATASETS))
    data_root: str = _field(
        "data", "data", "folder holding the datasets (e.g. data/cifar-10-batches-py)", _TEXT, identity=False
    )
    download: bool = _field(True, "data", "download the dataset when missing", _FLAG, identity=False)
    train_subset: int | None = _field(
        None,
        "data",
        "null, or train on a fixed subset of this many training images (drawn with subset_seed)",
        _integer(2, optional=True),
    )
    test_subset: int | None = _field(
        None,
        "data",
        "null (the whole test set), or evaluate on a fixed subset of this many test images",
        _integer(2, optional=True),
    )
    subset_seed: int = _field(
        0,
        "data",
        "seed of every data subset (train_subset, monitor subsets, long-tail sampling)",
        _integer(0),
    )
    imbalance_ratio: float = _field(
        0.01, "data", "n_min / n_max of the long-tailed datasets, in (0, 1]", _UNIT
    )
    image_size: int | None = _field(
        None,
        "data",
        "null (dataset native) or the side images are resized and center-cropped to (imagefolder)",
        _integer(8, optional=True),
    )
    crop_size: int | None = _field(
        None,
        "data",
        "null (= the image side) or the side of the training crops and of the evaluated center crop "
        "(imagefolder with image_size 256, crop_size 224: the ImageNet protocol)",
        _integer(8, optional=True),
    )
    # model
    backbone: str = _field("resnet18", "model", f"one of {', '.join(BACKBONES)}", _choice(BACKBONES))
    stem: str = _field(
        "cifar", "model", "cifar (3x3 conv, no max-pool) or imagenet (7x7 conv + max-pool)", _choice(STEMS)
    )
    projector_hidden_dim: int = _field(512, "model", "projector hidden width", _integer(1))
    projector_out_dim: int = _field(
        128, "model", "projector output width (the contrastive space)", _integer(1)
    )
    # loss
    loss: str = _field("infonce", "loss", f"one of {', '.join(LOSSES)}", _choice(LOSSES))
    temperature: str = _field(
        "cosine", "loss", f"temperature function, one of {', '.join(TEMPERATURES)} (cosine: DySTreSS)"
    )
    temperature_params: dict[str, float] = _field(
        {"tau_min": 0.07, "tau_max": 0.2},
        "loss",
        "keyword arguments of the temperature function, e.g. {tau_min: 0.07, tau_max: 0.2}",
        _MAPPING,
    )
    # optimisation
    optimizer: str = _field(
        "sgd",
        "optim",
        "sgd or lars (LARS excludes biases and norm parameters from adaptation and weight decay)",
        _choice(OPTIMIZERS),
    )
    lr: float = _field(0.2, "optim", "peak learning rate (not scaled with the batch size)", _POSITIVE)
    temperature_lr: float | None = _field(
        None,
        "optim",
        "peak learning rate of a learned temperature (temperature: learned; null: lr), on the same "
        "warm-up and cosine schedule, never with weight decay",
        _Rule("null or a finite number > 0", lambda v: v is None or (is_real(v) and v > 0)),
    )
    momentum: float = _field(
        0.0,
        "optim",
        "SGD/LARS momentum in [0, 1) (0: plain SGD as in the authors' CIFAR script)",
        _Rule("a number in [0, 1)", lambda v: is_real(v) and 0.0 <= v < 1.0),
    )
    weight_decay: float = _field(
        5e-4, "optim", "L2 weight decay >= 0", _Rule("a finite number >= 0", lambda v: is_real(v) and v >= 0)
    )
    lars_eta: float = _field(0.001, "optim", "LARS trust coefficient eta > 0", _POSITIVE)
    warmup_epochs: float = _field(
        0.0, "optim", "linear warm-up epochs (may be fractional) before the per-step cosine decay"
    )
    epochs: int = _field(
        200, "optim", "training epochs >= 0 (0: evaluate the random initialisation)", _integer(0)
    )
    batch_size: int = _field(128, "optim", "global batch size (pairs per step, over all ranks)", _integer(2))
    seed: int = _field(0, "optim", "seed of initialisation, shuffling and augmentation", _integer(0))
    # execution
    precision: str = _field(
        "auto",
        "execution",
        "fp32, bf16 (autocast, also on CPU) or auto (bf16 on a CUDA GPU with native bf16, else fp32)",
        _choice(PRECISIONS),
    )
    channels_last: bool = _field(
        True, "execution", "channels-last memory format where bf16 autocast runs", _FLAG
    )
    compile: bool = _field(
        False,
        "execution",
        "torch.compile the model (tested on one process; under DDP, torch.compile breaks its graph at "
        "synchronised BatchNorm: PyTorch issues 161302, 107372)",
        _FLAG,
    )
    compile_mode: str = _field(
        "default",
        "execution",
        "torch.compile's mode where compile = true: default (inductor's fused kernels), reduce-overhead "
        "(the same and CUDA graphs: the fewest kernel launches, which bound a GPU step at the paper's "
        "batch; on the CPU as default), max-autotune or max-autotune-no-cudagraphs",
        _choice(COMPILE_MODES),
    )
    view_forward: str = _field(
        "separate",
        "execution",
        "separate (each view through the network on its own: BatchNorm statistics per view, as the "
        "authors' CIFAR script, solo-learn and lightly's CIFAR benchmark) or joint (both views in one "
        "batch, as SimCLR's code and the authors' ImageNet code)",
        _choice(VIEW_FORWARDS),
    )
    device: str = _field("auto", "execution", "auto, cpu or cuda", _choice(DEVICES))
    data_placement: str = _field(
        "auto",
        "execution",
        "where the uint8 training images live: device (GPU-resident), host (batches streamed from host "
        "memory / the image-folder cache) or auto (device when they take under half the free memory)",
        _choice(DATA_PLACEMENTS),
        identity=False,
    )
    data_workers: int | None = _field(
        None,
        "execution",
        "null (all CPU cores, at most 32) or the processes decoding an image folder to its cache",
        _integer(0, optional=True),
        identity=False,
    )
    num_threads: int | None = _field(
        None,
        "execution",
        "null (torch default) or the number of CPU threads",
        _integer(1, optional=True),
        identity=False,
    )
    # augmentation
    crop_scale_min: float = _field(
        0.08, "augment", "lower bound of the random-resized-crop area scale, in (0, 1]", _UNIT
    )
    jitter_strength: float = _field(
        0.5,
        "augment",
        "SimCLR colour-jitter strength s in [0, 2.5]: ColorJitter(0.8 s, 0.8 s, 0.8 s, 0.2 s) with p 0.8 "
        "(0.5 for CIFAR, 1.0 for ImageNet)",
        _Rule(
            "a number in [0, 2.5] (the hue range 0.2 s is at most 0.5)",
            lambda v: is_real(v) and 0 <= v <= 2.5,
        ),
    )
    blur_prob: float = _field(
        0.0,
        "augment",
        "Gaussian blur probability in [0, 1] (0 for CIFAR)",
        _Rule("a number in [0, 1]", lambda v: is_real(v) and 0 <= v <= 1),
    )
    # bookkeeping and evaluation
    checkpoint_every: int = _field(
        1,
        "eval",
        "write checkpoints/last.pt every this many epochs (and at the end)",
        _integer(1),
        identity=False,
    )
    snapshot_epochs: list[int] = _field(
        [], "eval", "epochs whose monitor features are saved (0: before training; needs a monitor)"
    )
    monitor_size: int = _field(
        1000,
        "eval",
        "size of the fixed test subset (and train bank) of the per-epoch monitor; 0 = off",
        _integer(0),
    )
    knn_k: int = _field(200, "eval", "neighbours of the weighted kNN evaluation", _integer(1))
    knn_t: float = _field(0.1, "eval", "vote temperature of the weighted kNN evaluation", _POSITIVE)
    linear_probe: bool = _field(
        False, "eval", "also train a linear probe on frozen features at the end", _FLAG
    )
    eval_batch_size: int = _field(512, "eval", "batch size of feature extraction", _integer(1))

    def __post_init__(self) -> None:
        self._coerce()
        self.validate()

    # ------------------------------------------------------------------ validation
    def _coerce(self) -> None:
        """Accept ints for float fields and numeric strings that YAML 1.1 leaves as text (``1e-3``)."""
        for f in dataclasses.fields(self):
            value = _plain(getattr(self, f.name))
            if f.type in ("float", "float | None"):
                value = _as_float(value)
            if f.type == "float" and is_int(value):
                value = float(value)
            setattr(self, f.name, value)
        if isinstance(self.temperature_params, dict):
            self.temperature_params = {k: _as_float(_plain(v)) for k, v in self.temperature_params.items()}
        if isinstance(self.snapshot_epochs, (tuple, list)):
            self.snapshot_epochs = [_plain(e) for e in self.snapshot_epochs]

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field and what it allows: each field's own rule (in
        field order), then each part's checks across fields (:data:`_PART_CHECKS`)."""
        for f in dataclasses.fields(self):
            rule = f.metadata["rule"]
            if rule is not None:
                value = getattr(self, f.name)
                require(rule.ok(value), f.name, rule.allowed, value)
        for check in _PART_CHECKS:
            check(self)

    def build_temperature(self) -> TemperatureFunction:
        """The run's temperature function (raises ``ValueError`` naming ``temperature``/its params)."""
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
    def _check_keys(cls, data: Any) -> None:
        """Raise ``ValueError`` unless ``data`` is a dict whose keys are all fields (listing the others)."""
        if not isinstance(data, dict):
            raise ValueError(f"a config must be a mapping of fields, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known, key=str)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known keys: {sorted(known)}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PretrainConfig:
        """Build from a dict of fields; unknown keys raise ``ValueError`` listing them."""
        cls._check_keys(data)
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
        """Read a ``.json`` or ``.yaml``/``.yml`` file (a missing file raises ``FileNotFoundError``; text
        that is not UTF-8, JSON/YAML or a valid config raises ``ValueError`` naming the file)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
            return cls.from_json(text) if path.suffix == ".json" else cls.from_yaml(text)
        except yaml.YAMLError as err:
            raise ValueError(f"config file {path}: not valid YAML ({yaml_problem(err)})") from None
        except ValueError as err:  # UnicodeDecodeError and JSONDecodeError included
            raise ValueError(f"config file {path}: {err}") from None

    # ------------------------------------------------------------------ overrides
    def with_parameters(self, params: Mapping[str, Any], *, none_keeps: bool = True) -> PretrainConfig:
        """A new config with ``params`` applied: the one override path (``--set``, notebooks, the study).

        Keys are fields, ``field.key`` for one entry of a mapping field
        (``temperature_params.tau_min``) or a temperature parameter name
        (:data:`~dystress.temperature.TEMPERATURE_PARAMETER_NAMES`: ``tau_min=0.05`` sets
        ``temperature_params.tau_min``). A ``None`` value keeps the current value
        (``none_keeps=False``: sets it, as ``null`` does in :meth:`with_overrides`). A string for a
        list or mapping field is read as YAML (papermill ``-p`` passes them as text). Whole fields
        are applied first, then dotted keys, then temperature parameters; dependent fields follow
        unless given too: another ``temperature`` function drops the old one's parameters (the new
        one's defaults apply), a smaller ``epochs`` drops the ``snapshot_epochs`` beyond it.
        Validated once, at the end; an unknown key raises ``ValueError`` listing the known ones.
        """
        if not isinstance(params, Mapping):
            raise ValueError(f"parameters must be a mapping of config fields, got {type(params).__name__}")
        whole, dotted, tau = self._sort_parameters(params, none_keeps)
        data = self.to_dict()
        if whole.get("temperature") not in (None, self.temperature) and "temperature_params" not in whole:
            data["temperature_params"] = {}
        epochs = whole.get("epochs")
        if is_int(epochs) and epochs != self.epochs and "snapshot_epochs" not in whole:
            data["snapshot_epochs"] = [e for e in self.snapshot_epochs if e <= epochs]
        data.update(whole)
        for (head, sub), value in dotted.items():
            if not isinstance(data[head], dict):
                raise ValueError(f"parameter '{head}.{sub}': {head!r} is not a mapping")
            data[head] = {**data[head], sub: value}
        data["temperature_params"] = {**data["temperature_params"], **tau}
        return type(self).from_dict(data)

    def _sort_parameters(
        self, params: Mapping[str, Any], none_keeps: bool
    ) -> tuple[dict[str, Any], dict[tuple[str, str], Any], dict[str, Any]]:
        """``params`` as (whole fields, {(field, key): value}, temperature parameters), checked."""
        known = [f.name for f in dataclasses.fields(self)]
        tau_names = TEMPERATURE_PARAMETER_NAMES
        whole: dict[str, Any] = {}
        dotted: dict[tuple[str, str], Any] = {}
        tau: dict[str, Any] = {}
        for key, value in params.items():
            if value is None and none_keeps:
                continue
            head, dot, sub = key.partition(".") if isinstance(key, str) else (key, "", "")
            if head not in known and (dot or head not in tau_names) or (dot and not sub):
                raise ValueError(
                    f"unknown config key {key!r}; known keys: {sorted(known)}, 'field.key' for "
                    f"temperature_params and the temperature parameters {list(tau_names)}"
                )
            if dot:
                dotted[head, sub] = value
            elif head in known:
                whole[head] = self._parse_text(head, value)
            else:
                tau[head] = value
        return whole, dotted, tau

    def _parse_text(self, name: str, value: Any) -> Any:
        """``value`` for field ``name``, a list or mapping given as YAML text parsed (``"[0, 5]"``)."""
        if isinstance(value, str) and isinstance(getattr(self, name), (list, dict)):
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError as err:
                raise ValueError(
                    f"{name} must be YAML such as [0, 5] or {{tau: 0.1}}, got {value!r} ({yaml_problem(err)})"
                ) from None
        if name == "temperature_params":
            require(
                isinstance(value, Mapping),
                name,
                "a mapping such as {tau: 0.1} (--set 'temperature_params={tau: 0.1}', papermill: "
                "-y 'temperature_params: {tau: 0.1}')",
                value,
            )
            value = dict(value)
        return value

    def updated(self, updates: dict[str, Any]) -> PretrainConfig:
        """A new config with ``updates`` (a dict of fields; ``None`` is a value) applied by
        :meth:`with_parameters`; a key that is not a field raises ``ValueError`` listing them."""
        if not isinstance(updates, dict):
            raise ValueError(f"updates must be a dict of config fields, got {type(updates).__name__}")
        self._check_keys(updates)
        return self.with_parameters(updates, none_keeps=False)

    def with_overrides(self, overrides: list[str] | tuple[str, ...]) -> PretrainConfig:
        """Apply ``["key=value", "temperature_params.tau_min=0.05", ...]`` (values parsed as YAML, ``null``
        sets None) by :meth:`with_parameters`: ``temperature=constant temperature_params.tau=0.2`` works
        from any profile, ``epochs=N`` drops the snapshot epochs beyond N unless given."""
        if isinstance(overrides, str) or not isinstance(overrides, (list, tuple)):
            raise ValueError(
                f"overrides must be a list of 'key=value' strings, got {type(overrides).__name__} "
                f"{overrides!r}"
            )
        params: dict[str, Any] = {}
        for item in overrides:
            if not isinstance(item, str) or "=" not in item:
                raise ValueError(f"override {item!r} must have the form key=value")
            key, text = item.split("=", 1)
            try:
                params[key.strip()] = yaml.safe_load(text) if text.strip() else None
            except yaml.YAMLError as err:
                raise ValueError(
                    f"override {item!r}: value is not valid YAML ({yaml_problem(err)})"
                ) from None
        return self.with_parameters(params, none_keeps=False)

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


#: Fields that do not change what a run computes (metadata ``identity=False``: where or how fast a run
#: executes, how often it is saved); excluded from :meth:`PretrainConfig.run_id` and from the check
#: that a checkpoint belongs to the run.
NON_IDENTITY_FIELDS = tuple(f.name for f in dataclasses.fields(PretrainConfig) if not f.metadata["identity"])

#: One line of documentation per field (its metadata ``help``; used by ``dystress pretrain --help``).
FIELD_HELP: dict[str, str] = {f.name: f.metadata["help"] for f in dataclasses.fields(PretrainConfig)}


# ---------------------------------------------------------------------- checks that span fields, per part
def _check_data(c: PretrainConfig) -> None:
    """Image size and crop for the dataset; a training subset holds at least one batch."""
    if c.dataset == "imagefolder":
        allowed = "an integer >= 8 for dataset imagefolder (e.g. 64, or 256 with crop_size 224)"
        require(c.image_size is not None, "image_size", allowed, c.image_size)
    else:
        require(c.image_size in (None, 32), "image_size", f"null or 32 for dataset {c.dataset}", c.image_size)
    side = c.image_size if c.image_size is not None else 32
    ok = c.crop_size is None or c.crop_size <= side
    require(ok, "crop_size", f"null or an integer <= the image side ({side})", c.crop_size)
    ok = c.train_subset is None or c.train_subset >= c.batch_size
    require(ok, "train_subset", f"null or >= batch_size = {c.batch_size}", c.train_subset)


def _check_model(c: PretrainConfig) -> None:
    """small_cnn has only the CIFAR stem."""
    ok = c.backbone != "small_cnn" or c.stem == "cifar"
    require(ok, "stem", "cifar for backbone small_cnn (it has no ImageNet stem)", c.stem)


def _check_optim(c: PretrainConfig) -> None:
    """The warm-up fits in the training epochs."""
    ok = is_real(c.warmup_epochs) and 0 <= c.warmup_epochs <= c.epochs
    require(ok, "warmup_epochs", f"a number in [0, epochs = {c.epochs}]", c.warmup_epochs)


def _check_eval(c: PretrainConfig) -> None:
    """Snapshot epochs lie in the run and have a monitor to take features from."""
    epochs = c.snapshot_epochs
    ok = isinstance(epochs, list) and all(is_int(e) and 0 <= e <= c.epochs for e in epochs)
    require(ok, "snapshot_epochs", f"a list of integers in [0, epochs = {c.epochs}]", epochs)
    allowed = "empty when monitor_size = 0 (snapshots hold monitor features)"
    require(not (epochs and c.monitor_size == 0), "snapshot_epochs", allowed, epochs)


def _check_execution(c: PretrainConfig) -> None:
    """A compile mode only with compile = true (else the run would silently not compile)."""
    ok = c.compile or c.compile_mode == "default"
    allowed = "default unless compile = true (set compile=true to compile, or compile_mode=default)"
    require(ok, "compile_mode", allowed, c.compile_mode)


def _check_loss(c: PretrainConfig) -> None:
    """The temperature function builds with its parameters, and the loss can take it
    (:func:`dystress.losses.build_loss` is the one place that pairs losses with temperatures)."""
    build_loss(c.loss, c.build_temperature(), num_samples=2)  # any size: this checks the pairing


#: The checks across fields, one per part, in the order :meth:`PretrainConfig.validate` runs them
#: (the temperature function, the only one that builds something, last).
_PART_CHECKS: tuple[Callable[[PretrainConfig], None], ...] = (
    _check_data,
    _check_model,
    _check_optim,
    _check_eval,
    _check_execution,
    _check_loss,
)


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


def _long() -> PretrainConfig:
    return _quick().updated(
        {"profile": "long", "train_subset": None, "epochs": 20, "snapshot_epochs": [0, 20]}
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
    "long": _long(),
    "paper": _paper(),
    "imagenet100": _imagenet100(),
}


def get_profile(name: str) -> PretrainConfig:
    """A fresh copy of profile ``name`` (one of :data:`PROFILES`)."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; known profiles: {sorted(PROFILES)}")
    return PretrainConfig.from_dict(PROFILES[name].to_dict())
