"""PretrainConfig: validation, round trips, overrides, run ids and the profiles."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import yaml

from dystress.config import (
    LATER_FIELD_DEFAULTS,
    NON_IDENTITY_FIELDS,
    PROFILES,
    PretrainConfig,
    get_profile,
    identity_differences,
)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profile_round_trips(name: str) -> None:
    config = get_profile(name)
    assert config.profile == name
    assert PretrainConfig.from_dict(config.to_dict()) == config
    assert PretrainConfig.from_json(config.to_json()) == config
    assert PretrainConfig.from_yaml(config.to_yaml()) == config
    assert PretrainConfig.from_json(config.to_json()).run_id() == config.run_id()


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
def test_from_file(tmp_path, suffix: str) -> None:
    config = get_profile("smoke").with_overrides(["lr=0.5", "snapshot_epochs=[1]"])
    path = tmp_path / f"c{suffix}"
    path.write_text(config.to_json() if suffix == ".json" else config.to_yaml())
    assert PretrainConfig.from_file(path) == config
    with pytest.raises(FileNotFoundError):
        PretrainConfig.from_file(tmp_path / f"missing{suffix}")


def test_get_profile_returns_a_fresh_copy() -> None:
    a = get_profile("quick")
    a.temperature_params["tau_min"] = 0.01
    a.snapshot_epochs.append(3)
    assert PROFILES["quick"].temperature_params["tau_min"] == 0.07
    assert get_profile("quick") == PROFILES["quick"]
    with pytest.raises(ValueError, match="unknown profile 'nope'.*paper"):
        get_profile("nope")


def test_unknown_keys_are_listed() -> None:
    data = get_profile("smoke").to_dict()
    data.update(learning_rate=0.1, tau=0.2)
    with pytest.raises(ValueError, match=r"unknown config keys \['learning_rate', 'tau'\]"):
        PretrainConfig.from_dict(data)
    with pytest.raises(ValueError, match="must be a mapping"):
        PretrainConfig.from_dict([1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("override", "field", "expected"),
    [
        ("lr=0.5", "lr", 0.5),
        ("lr=1e-3", "lr", 1e-3),  # YAML 1.1 reads 1e-3 as text: coerced for float fields
        ("lr=2", "lr", 2.0),
        ("epochs=7", "epochs", 7),
        ("train_subset=null", "train_subset", None),
        ("train_subset=600", "train_subset", 600),
        ("compile=true", "compile", True),
        ("snapshot_epochs=[0, 1, 2]", "snapshot_epochs", [0, 1, 2]),
        ("temperature_params.tau_min=0.05", "temperature_params", {"tau_min": 0.05, "tau_max": 0.2}),
        ("temperature_params.tau_max=2e-1", "temperature_params", {"tau_min": 0.1, "tau_max": 0.2}),
        ("dataset=cifar100_lt", "dataset", "cifar100_lt"),
        ("optimizer=lars", "optimizer", "lars"),
    ],
)
def test_with_overrides(override: str, field: str, expected: object) -> None:
    base = get_profile("smoke")
    config = base.with_overrides([override])
    assert getattr(config, field) == expected
    assert type(getattr(config, field)) is type(expected)
    unchanged = {k: v for k, v in base.to_dict().items() if k != field}
    assert {k: v for k, v in config.to_dict().items() if k != field} == unchanged
    assert base == get_profile("smoke")  # the base is not mutated


def test_compile_mode_needs_compile_and_keeps_earlier_run_ids() -> None:
    base = get_profile("smoke")
    config = base.with_overrides(["compile=true", "compile_mode=reduce-overhead"])
    assert (config.compile, config.compile_mode) == (True, "reduce-overhead")
    with pytest.raises(ValueError, match="compile_mode must be default unless compile = true"):
        base.with_overrides(["compile_mode=reduce-overhead"])
    compiled = base.with_overrides(["compile=true"])
    saved = {
        k: v for k, v in compiled.to_dict().items() if k != "compile_mode"
    }  # a run made before the field
    assert PretrainConfig.from_saved(saved).run_id() == compiled.run_id()
    assert config.run_id() != compiled.run_id()  # another mode, other kernels: another run


def test_overrides_are_validated_together() -> None:
    base = get_profile("smoke")
    with pytest.raises(ValueError, match="temperature='constant'.*tau_min"):
        base.with_overrides(["temperature=constant", "temperature_params.tau_min=0.1"])
    config = base.with_overrides(["temperature=constant", "temperature_params={tau: 0.15}"])
    assert config.temperature_params == {"tau": 0.15}
    assert config.build_temperature().params() == {"tau": 0.15}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("lr", "key=value"),
        ("learning_rate=0.1", "unknown config key 'learning_rate'"),
        ("lr.x=0.1", "'lr' is not a mapping"),
        ("lr=[1", "not valid YAML"),
    ],
)
def test_bad_overrides(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        get_profile("smoke").with_overrides([override])


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("dataset", "mnist", "dataset must be one of"),
        ("backbone", "vit", "backbone must be one of"),
        ("stem", "tiny", "stem must be one of"),
        ("loss", "nce", "loss must be one of"),
        ("optimizer", "adam", "optimizer must be one of"),
        ("precision", "fp16", "precision must be one of"),
        ("device", "tpu", "device must be one of"),
        ("profile", "", "profile must be a non-empty string"),
        ("compile", "yes", "compile must be true or false"),
        ("compile_mode", "cudagraphs", "compile_mode must be one of"),
        ("channels_last", 1, "channels_last must be true or false"),
        ("epochs", -1, "epochs must be an integer >= 0"),
        ("stem", "imagenet", "stem must be cifar for backbone small_cnn"),
        ("epochs", 2.5, "epochs must be an integer >= 0"),
        ("epochs", True, "epochs must be an integer >= 0"),
        ("batch_size", 1, "batch_size must be an integer >= 2"),
        ("seed", -1, "seed must be an integer >= 0"),
        ("checkpoint_every", 0, "checkpoint_every must be an integer >= 1"),
        ("monitor_size", -1, "monitor_size must be an integer >= 0"),
        ("knn_k", 0, "knn_k must be an integer >= 1"),
        ("train_subset", 1, "train_subset must be null or an integer >= 2"),
        ("train_subset", 64, "train_subset must be null or >= batch_size"),
        ("num_threads", 0, "num_threads must be null or an integer >= 1"),
        ("data_placement", "gpu", "data_placement must be one of"),
        ("data_workers", -1, "data_workers must be null or an integer >= 0"),
        ("crop_size", 4, "crop_size must be null or an integer >= 8"),
        ("crop_size", 33, r"crop_size must be null or an integer <= the image side \(32\)"),
        ("image_size", 64, "image_size must be null or 32 for dataset cifar10"),
        ("lr", 0.0, "lr must be a finite number > 0"),
        ("lr", float("nan"), "lr must be a finite number > 0"),
        ("lr", float("inf"), "lr must be a finite number > 0"),
        ("knn_t", -0.1, "knn_t must be a finite number > 0"),
        ("momentum", 1.0, r"momentum must be a number in \[0, 1\)"),
        ("momentum", -0.1, r"momentum must be a number in \[0, 1\)"),
        ("weight_decay", -1e-4, "weight_decay must be a finite number >= 0"),
        ("warmup_epochs", 3, r"warmup_epochs must be a number in \[0, epochs = 2\]"),
        ("imbalance_ratio", 0.0, r"imbalance_ratio must be a number in \(0, 1\]"),
        ("crop_scale_min", 1.5, r"crop_scale_min must be a number in \(0, 1\]"),
        ("blur_prob", 1.1, r"blur_prob must be a number in \[0, 1\]"),
        ("jitter_strength", 2.6, r"jitter_strength must be a number in \[0, 2.5\]"),
        ("jitter_strength", -0.1, r"jitter_strength must be a number in \[0, 2.5\]"),
        ("jitter_strength", "strong", r"jitter_strength must be a number in \[0, 2.5\]"),
        ("view_forward", "split", "view_forward must be one of"),
        ("snapshot_epochs", [0, 3], r"snapshot_epochs must be a list of integers in \[0, epochs = 2\]"),
        ("snapshot_epochs", 1, "snapshot_epochs must be a list"),
        ("monitor_size", 0, "snapshot_epochs must be empty when monitor_size = 0"),
        ("temperature", "gaussian", "unknown temperature function 'gaussian'"),
        ("temperature_params", {"tau_min": 0.1, "tau_max": 0.2, "k": 1}, r"unknown parameters \['k'\]"),
        ("temperature_params", {"tau_min": 0.3, "tau_max": 0.2}, "tau_max must be >= tau_min"),
        ("temperature_params", {"tau_min": -0.1, "tau_max": 0.2}, "tau_min must be > 0"),
        ("temperature_params", [0.1, 0.2], "temperature_params must be a mapping"),
    ],
)
def test_validation_names_the_field(field: str, value: object, message: str) -> None:
    data = get_profile("smoke").to_dict()
    data[field] = value
    with pytest.raises(ValueError, match=message):
        PretrainConfig.from_dict(data)


def test_run_id_is_stable_and_sensitive() -> None:
    a, b = get_profile("quick"), get_profile("quick")
    assert a.run_id() == b.run_id()
    assert len(a.run_id()) == 12 and int(a.run_id(), 16) >= 0
    # the hash is of the canonical JSON of the identity fields, independent of key order
    canonical = json.dumps(dict(reversed(list(a.identity().items()))), sort_keys=True, separators=(",", ":"))
    import hashlib

    assert a.run_id() == hashlib.sha256(canonical.encode()).hexdigest()[:12]
    ids = {a.run_id()}
    for override in ["lr=0.016", "seed=1", "temperature_params.tau_min=0.1", "epochs=9", "profile=custom"]:
        ids.add(a.with_overrides([override]).run_id())
    assert len(ids) == 6
    for override in [
        "data_root=/elsewhere",
        "num_threads=1",
        "download=false",
        "checkpoint_every=5",
        "data_placement=host",
        "data_workers=3",
    ]:
        assert a.with_overrides([override]).run_id() == a.run_id()
    assert a.with_overrides(["crop_size=28"]).run_id() != a.run_id()
    assert a.with_overrides(["jitter_strength=1.0"]).run_id() != a.run_id()


def test_later_fields_at_their_old_value_keep_earlier_run_ids() -> None:
    """A field added later (jitter_strength) is left out of the hash at the value every earlier run
    had, so the id is the hash of the config without it; any other value is part of the identity."""
    import hashlib

    config = get_profile("quick")
    assert config.jitter_strength == LATER_FIELD_DEFAULTS["jitter_strength"] == 0.5
    left_out = {*NON_IDENTITY_FIELDS, "jitter_strength", "temperature_lr", "compile_mode"}
    without = {k: v for k, v in config.to_dict().items() if k not in left_out}
    canonical = json.dumps(without, sort_keys=True, separators=(",", ":"))
    assert config.run_id() == hashlib.sha256(canonical.encode()).hexdigest()[:12]
    # a config saved before the field existed loads with the old value and the same id
    old = config.to_dict()
    del old["jitter_strength"], old["temperature_lr"], old["compile_mode"]
    assert PretrainConfig.from_dict(old).run_id() == config.run_id()
    stronger = config.with_overrides(["jitter_strength=1.0"])
    assert stronger.identity()["jitter_strength"] == 1.0
    assert identity_differences(old, stronger.to_dict()) == {"jitter_strength": (0.5, 1.0)}
    assert set(NON_IDENTITY_FIELDS) == {
        "data_root",
        "download",
        "num_threads",
        "checkpoint_every",
        "data_placement",
        "data_workers",
    }


def test_saved_configs_without_later_fields_mean_their_old_values() -> None:
    """The CIFAR profiles forward the views separately (the authors' CIFAR script), imagenet100 jointly
    (their ImageNet code); a config saved before view_forward existed was a joint run and loads as one
    (from_saved), with its old run id."""
    import hashlib

    forwards = {name: get_profile(name).view_forward for name in PROFILES}
    assert forwards == {
        "smoke": "separate",
        "quick": "separate",
        "long": "separate",
        "paper": "separate",
        "imagenet100": "joint",
    }
    assert PretrainConfig().view_forward == "separate"
    old = get_profile("quick").to_dict()
    del old["view_forward"], old["jitter_strength"], old["temperature_lr"], old["compile_mode"]
    saved = PretrainConfig.from_saved(old)
    assert (saved.view_forward, saved.jitter_strength) == ("joint", 0.5)
    assert PretrainConfig.from_dict(old).view_forward == "separate"  # a new partial config: today's default
    identity = {k: v for k, v in old.items() if k not in NON_IDENTITY_FIELDS}
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    assert saved.run_id() == hashlib.sha256(canonical.encode()).hexdigest()[:12]
    assert get_profile("quick").run_id() != saved.run_id()
    differences = identity_differences(old, get_profile("quick").to_dict())
    assert differences == {"view_forward": ("joint", "separate")}
    with pytest.raises(ValueError, match="a config must be a mapping"):
        PretrainConfig.from_saved([1])


def test_imagefolder_needs_an_image_size_and_bounds_the_crop() -> None:
    base = get_profile("smoke").to_dict()
    with pytest.raises(ValueError, match="image_size must be an integer >= 8 for dataset imagefolder"):
        PretrainConfig.from_dict({**base, "dataset": "imagefolder", "image_size": None})
    with pytest.raises(ValueError, match=r"crop_size must be null or an integer <= the image side \(64\)"):
        PretrainConfig.from_dict({**base, "dataset": "imagefolder", "image_size": 64, "crop_size": 72})
    ok = PretrainConfig.from_dict({**base, "dataset": "imagefolder", "image_size": 256, "crop_size": 224})
    assert (ok.image_size, ok.crop_size) == (256, 224)


def test_profiles_follow_the_documented_setups() -> None:
    paper = get_profile("paper")
    # STUDY.md section 3 (the authors' CIFAR script) and section 1 (their CIFAR tau range)
    assert (paper.backbone, paper.stem, paper.projector_hidden_dim, paper.projector_out_dim) == (
        "resnet18",
        "cifar",
        512,
        128,
    )
    assert (paper.lr, paper.momentum, paper.weight_decay, paper.batch_size, paper.epochs) == (
        0.2,
        0.0,
        5e-4,
        128,
        200,
    )
    assert (paper.temperature, paper.temperature_params) == ("cosine", {"tau_min": 0.07, "tau_max": 0.2})
    assert (paper.knn_k, paper.knn_t, paper.crop_scale_min, paper.blur_prob) == (200, 0.1, 0.08, 0.0)
    assert paper.train_subset is None and paper.precision == "auto"
    quick = get_profile("quick")
    # TOOLCHAIN.md: best measured CPU recipe for the small CNN
    assert (quick.backbone, quick.lr, quick.momentum, quick.batch_size, quick.precision) == (
        "small_cnn",
        0.015,
        0.9,
        256,
        "bf16",
    )
    smoke = get_profile("smoke")
    assert smoke.train_subset <= 1024 and smoke.epochs <= 2 and smoke.backbone == "small_cnn"


def test_imagenet100_profile_follows_the_documented_setup() -> None:
    c = get_profile("imagenet100")
    # STUDY.md section 3: ResNet-50, 2048-2048-128, LARS lr 0.075 sqrt(batch), 10 warm-up epochs, batch 256,
    # 200 epochs, mixed precision, kNN k = 20, linear probe; section 1: (tau_min, tau_max) = (0.1, 0.2)
    assert (c.dataset, c.backbone, c.stem, c.projector_hidden_dim, c.projector_out_dim) == (
        "imagefolder",
        "resnet50",
        "imagenet",
        2048,
        128,
    )
    assert c.optimizer == "lars" and c.lr == pytest.approx(0.075 * math.sqrt(c.batch_size))
    assert (c.warmup_epochs, c.batch_size, c.epochs, c.precision, c.knn_k) == (10, 256, 200, "auto", 20)
    assert c.temperature == "cosine" and c.temperature_params == {"tau_min": 0.1, "tau_max": 0.2}
    assert (c.image_size, c.crop_size, c.linear_probe) == (256, 224, True)


def test_every_field_is_documented() -> None:
    from dystress.config import FIELD_HELP

    assert {f.name for f in dataclasses.fields(PretrainConfig)} == set(FIELD_HELP)


def test_yaml_is_plain_data() -> None:
    data = yaml.safe_load(get_profile("paper").to_yaml())
    assert data["temperature_params"] == {"tau_min": 0.07, "tau_max": 0.2}
    assert data["snapshot_epochs"] == [0, 1, 10, 50, 100, 200]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["temperature=constant", "temperature_params.tau=0.2"], ("constant", {"tau": 0.2})),
        (["temperature_params.tau=0.2", "temperature=constant"], ("constant", {"tau": 0.2})),  # any order
        (["temperature=constant"], ("constant", {})),  # the function's defaults
        (
            ["temperature=cosine", "temperature_params.tau_min=0.05"],
            ("cosine", {"tau_min": 0.05, "tau_max": 0.2}),
        ),
        (["temperature=macl", "temperature_params={tau_0: 0.2}"], ("macl", {"tau_0": 0.2})),
        (["temperature_params.tau_max=0.3"], ("cosine", {"tau_min": 0.1, "tau_max": 0.3})),
    ],
)
def test_switching_the_temperature_function_drops_the_old_parameters(overrides, expected) -> None:
    """As in the notebook: the smoke profile's cosine (0.1, 0.2) parameters do not leak into another
    function; the same function keeps them."""
    config = get_profile("smoke").with_overrides(overrides)
    assert (config.temperature, config.temperature_params) == expected
    updated = get_profile("smoke").updated({"temperature": expected[0]})
    assert updated.temperature_params == ({} if expected[0] != "cosine" else {"tau_min": 0.1, "tau_max": 0.2})


def test_dcl_rejects_a_temperature_set_from_the_positive_pairs() -> None:
    base = get_profile("smoke").to_dict()
    for loss in ("dcl", "dclw"):
        with pytest.raises(ValueError, match=r"loss must be infonce with temperature macl .*got '" + loss):
            PretrainConfig.from_dict({**base, "loss": loss, "temperature": "macl", "temperature_params": {}})
        ok = PretrainConfig.from_dict({**base, "loss": loss})  # the cosine temperature works with DCL
        assert ok.loss == loss


def test_fewer_epochs_drop_the_snapshot_epochs_beyond_them_unless_given() -> None:
    smoke = get_profile("smoke")
    assert smoke.snapshot_epochs == [0, 1, 2]
    assert smoke.updated({"epochs": 1}).snapshot_epochs == [0, 1]
    assert smoke.with_overrides(["epochs=1"]).snapshot_epochs == [0, 1]
    assert smoke.updated({"epochs": 5}).snapshot_epochs == [0, 1, 2]  # more epochs keep them
    assert smoke.updated({"epochs": 1, "snapshot_epochs": [1]}).snapshot_epochs == [1]
    with pytest.raises(ValueError, match=r"snapshot_epochs must be a list of integers in \[0, epochs = 1\]"):
        smoke.updated({"epochs": 1, "snapshot_epochs": [2]})  # given explicitly: checked, not dropped


def test_updates_and_overrides_of_the_wrong_kind_are_named() -> None:
    smoke = get_profile("smoke")
    with pytest.raises(ValueError, match="overrides must be a list of 'key=value' strings, got str"):
        smoke.with_overrides("epochs=1")
    with pytest.raises(ValueError, match="updates must be a dict of config fields, got list"):
        smoke.updated([("epochs", 1)])


def test_numpy_scalars_become_plain_numbers_that_serialise() -> None:
    import numpy as np

    cfg = get_profile("smoke").updated(
        {
            "epochs": np.int64(2),
            "lr": np.float32(0.5),
            "snapshot_epochs": [np.int64(0), 2],
            "temperature_params": {"tau_min": np.float64(0.1), "tau_max": 0.2},
        }
    )
    assert type(cfg.epochs) is int and type(cfg.lr) is float and cfg.lr == 0.5
    assert [type(e) for e in cfg.snapshot_epochs] == [int, int]
    assert PretrainConfig.from_json(cfg.to_json()) == cfg
    assert cfg.run_id() == get_profile("smoke").updated({"lr": 0.5, "snapshot_epochs": [0, 2]}).run_id()


def test_the_config_registries_are_the_owning_modules() -> None:
    """One source for the names: config imports them (the same objects), it keeps no copy."""
    from dystress import config, losses, models, temperature
    from dystress.data import datasets

    assert config.DATASETS is datasets.DATASETS
    assert config.BACKBONES is models.BACKBONES
    assert config.STEMS is models.STEMS
    assert config.LOSSES is losses.LOSSES
    assert config.TEMPERATURES is temperature.TEMPERATURES
    with pytest.raises(
        ValueError, match=r"backbone must be one of \['resnet18', 'resnet34', 'resnet50', 'small_cnn'\]"
    ):
        get_profile("smoke").with_overrides(["backbone=vit"])


# ------------------------------------------------------------------------------------ field metadata
def test_every_field_carries_its_help_part_and_identity() -> None:
    from dystress.config import FIELD_HELP, PARTS

    for f in dataclasses.fields(PretrainConfig):
        assert f.metadata["help"] == FIELD_HELP[f.name] and len(f.metadata["help"]) > 10, f.name
        assert f.metadata["part"] in PARTS, f.name
        assert f.metadata["identity"] is (f.name not in NON_IDENTITY_FIELDS), f.name
    parts = {f.name: f.metadata["part"] for f in dataclasses.fields(PretrainConfig)}
    assert (parts["dataset"], parts["backbone"], parts["temperature"], parts["lr"]) == (
        "data",
        "model",
        "loss",
        "optim",
    )
    assert (parts["precision"], parts["blur_prob"], parts["knn_k"], parts["profile"]) == (
        "execution",
        "augment",
        "eval",
        "run",
    )
    assert "macl" in FIELD_HELP["temperature"] and "cifar100_lt" in FIELD_HELP["dataset"]


# ------------------------------------------------------------------------------ names stay names
@pytest.mark.parametrize("name", ["../../x", "/tmp/x", "a/b", "a\\b", "..", ".", ""])
def test_a_profile_name_cannot_leave_the_runs_folder(name: str) -> None:
    """The profile names a folder under $DYSTRESS_RUNS: a path in it is refused, whichever way it comes."""
    from dystress._checks import NAME_RULE

    message = f"profile must be {NAME_RULE}, got {name!r}"
    assert "non-empty string without path separators" in message
    with pytest.raises(ValueError) as info:
        get_profile("smoke").with_overrides([f"profile={name}" if name else "profile=''"])
    assert str(info.value) == message
    with pytest.raises(ValueError, match="^profile must be a non-empty string without path separators"):
        PretrainConfig.from_dict({**get_profile("smoke").to_dict(), "profile": name})
    with pytest.raises(ValueError, match="^profile must be a non-empty string without path separators"):
        get_profile("smoke").with_parameters({"profile": name})
    assert get_profile("smoke").with_overrides(["profile=my-ablation_2"]).profile == "my-ablation_2"


# ----------------------------------------------------------------------------- the one override path
def test_temperature_parameter_names_come_from_the_registry() -> None:
    from dystress.temperature import TEMPERATURE_PARAMETER_NAMES

    names = TEMPERATURE_PARAMETER_NAMES
    assert names == tuple(sorted(names))
    assert set(names) == {
        "tau",
        "tau_min",
        "tau_max",
        "offset",
        "scale",
        "knee",
        "rate",
        "tau_plus",
        "tau_minus",
        "period",
        "tau_0",
        "alpha",
        "a_0",
        "tau_init",
        "rho",
        "gamma",
        "beta",
        "eta",
        "grad_clip",
        "eps",
    }
    assert not set(names) & {f.name for f in dataclasses.fields(PretrainConfig)}  # never ambiguous


def test_with_parameters_routes_temperature_parameters() -> None:
    """study.build_config's cases: top-level temperature parameters go into temperature_params."""
    quick = get_profile("quick")
    c = quick.with_parameters({"temperature": "constant", "tau": 0.3, "seed": 4})
    assert c.temperature == "constant" and c.temperature_params == {"tau": 0.3} and c.seed == 4
    c = quick.with_parameters({"tau_min": 0.05, "tau_max": 0.3})
    assert c.temperature == quick.temperature and c.temperature_params == {"tau_min": 0.05, "tau_max": 0.3}
    c = quick.with_parameters({"tau_min": 0.05})  # tau_max kept from the profile
    assert c.temperature_params == {"tau_min": 0.05, "tau_max": quick.temperature_params["tau_max"]}
    c = quick.with_parameters({"temperature_params": {"tau_min": 0.1, "tau_max": 0.5}, "tau_max": 0.3})
    assert c.temperature_params == {"tau_min": 0.1, "tau_max": 0.3}  # the named parameter last
    c = quick.with_parameters({"temperature": "cosine", "tau_max": 0.3})  # the same function keeps them
    assert c.temperature_params == {"tau_min": 0.07, "tau_max": 0.3}
    c = quick.with_parameters({"temperature_params.tau_min": 0.1, "tau_max": 0.4})
    assert c.temperature_params == {"tau_min": 0.1, "tau_max": 0.4}
    assert get_profile("smoke").with_overrides(["tau_min=0.05"]).temperature_params == {
        "tau_min": 0.05,
        "tau_max": 0.2,
    }


def test_with_parameters_none_keeps_the_value() -> None:
    smoke = get_profile("smoke")
    kept = smoke.with_parameters({"train_subset": None, "lr": None, "tau_min": None, "temperature": None})
    assert kept == smoke
    assert smoke.with_parameters({"train_subset": None}, none_keeps=False).train_subset is None
    assert smoke.with_overrides(["train_subset=null"]).train_subset is None
    assert smoke.updated({"train_subset": None}).train_subset is None
    assert smoke.with_parameters({}) == smoke and smoke == get_profile("smoke")  # never mutated


def test_with_parameters_reads_text_for_lists_and_mappings() -> None:
    """papermill -p passes lists and mappings as text: they are parsed, and a wrong shape names the
    parameter (and the -y form)."""
    smoke = get_profile("smoke")
    c = smoke.with_parameters(
        {"snapshot_epochs": "[0, 2]", "temperature": "constant", "temperature_params": "{tau: 0.3}"}
    )
    assert (c.snapshot_epochs, c.temperature, c.temperature_params) == ([0, 2], "constant", {"tau": 0.3})
    assert smoke.with_parameters({"profile": "[x]"}).profile == "[x]"  # text fields stay text
    message = (
        "temperature_params must be a mapping such as {tau: 0.1} (--set 'temperature_params={tau: 0.1}', "
        "papermill: -y 'temperature_params: {tau: 0.1}'), got 0.3"
    )
    with pytest.raises(ValueError) as info:
        smoke.with_parameters({"temperature_params": "0.3"})
    assert str(info.value) == message
    with pytest.raises(ValueError, match=r"temperature_params must be a mapping .*got \[0.1\]"):
        smoke.with_parameters({"temperature_params": [0.1]})
    with pytest.raises(ValueError, match=r"^snapshot_epochs must be YAML such as \[0, 5\] .*got '\[0, 2'"):
        smoke.with_parameters({"snapshot_epochs": "[0, 2"})
    with pytest.raises(ValueError, match=r"snapshot_epochs must be a list of integers in \[0, epochs = 2\]"):
        smoke.with_parameters({"snapshot_epochs": "[0, 7]"})


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"tau_mni": 0.1}, "^unknown config key 'tau_mni'; known keys: .*'warmup_epochs'.*'tau_min'"),
        ({"temperature_params.": 0.1}, "^unknown config key 'temperature_params.'"),
        ({"tau_min.x": 0.1}, "^unknown config key 'tau_min.x'"),
        ({3: 0.1}, "^unknown config key 3"),
        ({"lr.x": 0.1}, "^parameter 'lr.x': 'lr' is not a mapping$"),
        ({"tau_min": -0.1}, "tau_min must be > 0"),
        ({"tau_min": 0.3, "tau_max": 0.2}, "tau_max must be >= tau_min"),
        ({"temperature": "cosine", "tau": 0.2}, r"unknown parameters \['tau'\] for temperature"),
        ({"temperature": "warm"}, "unknown temperature function"),
        ({"batch_size": 0}, "batch_size must be an integer >= 2"),
    ],
)
def test_with_parameters_rejects_bad_parameters(params: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        get_profile("smoke").with_parameters(params)


def test_with_parameters_takes_a_mapping_only() -> None:
    with pytest.raises(ValueError, match="^parameters must be a mapping of config fields, got list$"):
        get_profile("smoke").with_parameters([("lr", 0.1)])  # type: ignore[arg-type]


def test_with_parameters_follows_dependent_fields() -> None:
    smoke = get_profile("smoke")
    assert smoke.with_parameters({"epochs": 1}).snapshot_epochs == [0, 1]
    assert smoke.with_parameters({"epochs": 1, "snapshot_epochs": "[1]"}).snapshot_epochs == [1]
    assert smoke.with_parameters({"temperature": "linear"}).temperature_params == {}
    assert smoke.with_parameters({"temperature": "linear", "tau_max": 0.5}).temperature_params == {
        "tau_max": 0.5
    }


def test_updated_takes_fields_only() -> None:
    """A config file (cli --config) holds fields: a temperature parameter name or a dotted key is not one."""
    smoke = get_profile("smoke")
    with pytest.raises(ValueError, match=r"^unknown config keys \['tau'\]"):
        smoke.updated({"tau": 0.1})
    with pytest.raises(ValueError, match=r"^unknown config keys \['temperature_params.tau_min'\]"):
        smoke.updated({"temperature_params.tau_min": 0.1})


def test_every_ablation_point_builds_through_with_parameters() -> None:
    """What the study runs: every point of every plan is its profile with the point's parameters."""
    from dystress.study import ablations

    for profile in ablations.PROFILE_NAMES:
        base = get_profile(profile)
        for point in ablations.plan(profile):
            config = base.with_parameters(point.parameters)
            assert config.seed == point.seed, point.id
            for key, value in point.parameters.items():
                if key in {f.name for f in dataclasses.fields(PretrainConfig)} - {"temperature_params"}:
                    assert getattr(config, key) == value, (point.id, key)
                elif key != "temperature_params":
                    assert config.temperature_params[key] == value, (point.id, key)


def test_from_file_names_the_file_it_cannot_read(tmp_path) -> None:
    for name, content in [("c.yaml", b"\xff\xfe\x00binary"), ("c.json", b"{"), ("d.yaml", b"lr: -1")]:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ValueError, match=f"^config file {path}: "):
            PretrainConfig.from_file(path)
