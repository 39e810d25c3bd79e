"""extract_features: equals a manual eval-mode forward, restores modes, validates input."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

from dystress.data.transforms import NORMALIZATION, normalize
from dystress.metrics import extract_features

MEAN, STD = NORMALIZATION["cifar10"]


def _backbone() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.AdaptiveAvgPool2d(1),  # output [B, 8, 1, 1]: flattened to [B, 8]
    )


def _images(n: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(n))


@pytest.mark.parametrize("batch_size", [1, 3, 7, 512])
def test_matches_manual_eval_forward(batch_size):
    model, images = _backbone(), _images(7)
    model[1].running_mean.uniform_(-0.5, 0.5)  # non-trivial BN statistics: eval mode must use them
    with torch.no_grad():
        ref = model.eval()(normalize(images, MEAN, STD)).flatten(1)
    model.train()
    feats = extract_features(model, images, MEAN, STD, batch_size=batch_size)
    assert feats.shape == (7, 8) and feats.dtype == torch.float32
    torch.testing.assert_close(feats, ref, rtol=1e-5, atol=1e-6)
    assert not feats.requires_grad
    assert model.training and all(m.training for m in model.modules())


def test_restores_mixed_modes_even_on_error():
    model = _backbone().train()
    model[1].eval()  # a frozen BN inside a training model
    extract_features(model, _images(4), MEAN, STD)
    assert model.training and not model[1].training and model[3].training

    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    broken = nn.Sequential(nn.Identity(), Boom()).train()
    with pytest.raises(RuntimeError, match="boom"):
        extract_features(broken, _images(2), MEAN, STD)
    assert all(m.training for m in broken.modules())


def test_features_can_feed_autograd():
    feats = extract_features(_backbone(), _images(5), MEAN, STD)
    w = torch.zeros(8, 2, requires_grad=True)
    (feats @ w).sum().backward()  # inference-mode tensors would fail here
    torch.testing.assert_close(w.grad, feats.sum(0)[:, None].expand(8, 2))


def test_bf16_autocast_is_close_to_fp32():
    model, images = _backbone(), _images(6)
    fp32 = extract_features(model, images, MEAN, STD)
    bf16 = extract_features(model, images, MEAN, STD, amp=True)
    assert bf16.dtype == torch.float32
    torch.testing.assert_close(bf16, fp32, rtol=0.05, atol=0.05)


@pytest.mark.parametrize(
    ("images", "kwargs", "match"),
    [
        (torch.zeros(2, 3, 4, 4), {}, "uint8"),
        (torch.zeros(2, 1, 4, 4, dtype=torch.uint8), {}, "images"),
        (torch.zeros(0, 3, 4, 4, dtype=torch.uint8), {}, "images"),
        (torch.zeros(2, 3, 4, 4, dtype=torch.uint8), {"batch_size": 0}, "batch_size"),
        (torch.zeros(2, 3, 4, 4, dtype=torch.uint8), {"std": (0.2, 0.0, 0.2)}, "std"),
        (torch.zeros(2, 3, 4, 4, dtype=torch.uint8), {"mean": (0.5, 0.5)}, "mean"),
    ],
)
def test_invalid_input_raises(images, kwargs, match):
    args = {"mean": MEAN, "std": STD, **kwargs}
    with pytest.raises(ValueError, match=match):
        extract_features(_backbone(), images, **args)


def _err(message: str) -> str:
    return f"^{re.escape(message)}$"


STD_ERR = "std must be 3 finite numbers > 0 (one per RGB channel), got "
MEAN_ERR = "mean must be 3 finite numbers (one per RGB channel), got "
DEVICE_ERR = "device must be None, a torch.device or a device string"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"std": None}, STD_ERR + "None"),
        ({"std": (0.2, -0.1, 0.2)}, STD_ERR + "(0.2, -0.1, 0.2)"),
        ({"std": (0.2, True, 0.2)}, STD_ERR + "(0.2, True, 0.2)"),
        ({"std": 0.5}, STD_ERR + "0.5"),
        ({"mean": None}, MEAN_ERR + "None"),
        ({"mean": "abc"}, MEAN_ERR + "'abc'"),
        ({"mean": [0.5, float("nan"), 0.5]}, MEAN_ERR + "[0.5, nan, 0.5]"),
        ({"mean": (0.5, 0.5, 0.5, 0.5)}, MEAN_ERR + "(0.5, 0.5, 0.5, 0.5)"),
        ({"mean": torch.tensor(0.5)}, MEAN_ERR + "tensor(0.5000)"),
        ({"device": "gpu"}, DEVICE_ERR + " such as 'cpu', 'cuda' or 'cuda:0', got 'gpu'"),
        ({"device": 0}, DEVICE_ERR + ", got int"),
        ({"amp": "yes"}, "amp must be True or False, got 'yes'"),
        ({"batch_size": 2.0}, "batch_size must be an integer, got 2.0 (float)"),
        ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
    ],
)
def test_invalid_settings_raise_before_any_work(kwargs, message):
    calls = []

    class Recorder(nn.Module):
        def forward(self, x):
            calls.append(x.shape)
            return x.flatten(1)

    model = nn.Sequential(Recorder()).train()
    args = {"mean": MEAN, "std": STD, **kwargs}
    with pytest.raises(ValueError, match=_err(message)):
        extract_features(model, _images(3), **args)
    with pytest.raises(ValueError, match=_err(message)):  # scalars before the images
        extract_features(model, torch.zeros(3, 3, 4, 4), **args)
    assert calls == [] and all(m.training for m in model.modules())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_cuda_device_without_cuda_raises():
    with pytest.raises(ValueError, match=_err("device is 'cuda' but CUDA is not available on this machine")):
        extract_features(_backbone(), _images(2), MEAN, STD, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_device_index_out_of_range_raises():
    n = torch.cuda.device_count()
    message = f"device is 'cuda:{n}' but this machine has {n} CUDA device(s)"
    with pytest.raises(ValueError, match=_err(message)):
        extract_features(_backbone(), _images(2), MEAN, STD, device=f"cuda:{n}")


def test_stats_and_device_of_every_accepted_kind_give_identical_features():
    model, images = _backbone(), _images(5)
    ref = extract_features(model, images, MEAN, STD, batch_size=2)
    for mean, std in [
        (list(MEAN), list(STD)),
        (np.array(MEAN), np.array(STD)),
        (torch.tensor(MEAN, dtype=torch.float64), torch.tensor(STD, dtype=torch.float64)),
        (tuple(np.float64(v) for v in MEAN), tuple(np.float64(v) for v in STD)),
    ]:
        assert torch.equal(extract_features(model, images, mean, std, batch_size=2), ref)
    for device in ("cpu", torch.device("cpu")):
        assert torch.equal(
            extract_features(model, images, MEAN, STD, batch_size=np.int64(2), device=device), ref
        )
    # float32 statistics are the float32 rounding of the float64 ones: normalize works in float32 anyway
    f32 = (torch.tensor(MEAN, dtype=torch.float32), torch.tensor(STD, dtype=torch.float32))
    assert torch.equal(extract_features(model, images, *f32, batch_size=2), ref)


def test_forward_chunk_slices_on_a_cpu_only():
    from dystress.metrics.features import CPU_FORWARD_CHUNK, forward_chunk

    assert forward_chunk(torch.device("cpu"), 1000) == CPU_FORWARD_CHUNK
    assert forward_chunk(torch.device("cpu"), 7) == 7
    assert forward_chunk(torch.device("cuda"), 1000) == 1000  # launch-bound there: whole batches


@pytest.mark.parametrize(
    ("name", "n", "amp"), [("small_cnn", 300, False), ("small_cnn", 300, True), ("resnet18", 140, True)]
)
def test_cpu_slices_give_the_features_of_one_whole_batch(name, n, amp):
    """A backbone of the study (channels-last as in training, eval mode) on n images: extract_features
    in one batch of n (CPU slices of 128) equals one forward of all n at once, bit for bit."""
    from dystress.models import build_backbone

    torch.manual_seed(0)
    model = build_backbone(name).to(memory_format=torch.channels_last)
    model.train()(torch.randn(16, 3, 32, 32))  # running statistics away from their initial values
    images = torch.randint(
        0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(2)
    )
    feats = extract_features(model, images, MEAN, STD, batch_size=n, amp=amp)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        whole = model.eval()(normalize(images, MEAN, STD)).flatten(1).float()
    assert torch.equal(feats, whole)
