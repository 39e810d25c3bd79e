"""The fused CPU kernel (BatchNorm with batch statistics + 2x2 max-pool + ReLU): against a float64
reference, the running statistics of nn.BatchNorm2d, where it applies, and the fallback."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from dystress import cpu_kernels
from dystress.models import SmallCNN

needs_kernel = pytest.mark.skipif(not cpu_kernels.available(), reason="needs AVX-512 BF16 and a C++ compiler")


def _activations(shape: tuple[int, int, int, int], seed: int = 0) -> torch.Tensor:
    """bf16 channels-last activations with an offset (a mean to remove) and exact ties in some windows."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * 1.5 + 0.4
    if shape[2] % 4 == 0 and shape[3] % 2 == 0:  # ties: the first maximum in row-major order wins
        x[:, :, 0::4, 1::2] = x[:, :, 0::4, 0::2]  # top-left = top-right
        x[:, :, 2::4, 1::2] = x[:, :, 3::4, 0::2]  # top-right = bottom-left (column-major would differ)
    return x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)


def _bn(channels: int, seed: int = 1) -> nn.BatchNorm2d:
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(channels)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(channels, generator=g) * 2 - 0.5)  # some negative scales too
        bn.bias.copy_(torch.randn(channels, generator=g) * 0.3)
    return bn


def _relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    """The largest absolute difference relative to the reference's largest entry."""
    return float((value.detach().double() - reference.detach()).abs().max() / reference.detach().abs().max())


@needs_kernel
@pytest.mark.parametrize("shape", [(8, 32, 16, 16), (4, 64, 8, 8), (3, 16, 4, 6)])
@pytest.mark.parametrize("threads", [1, 2])
def test_matches_a_float64_reference(shape, threads):
    """Output and the gradients of x, weight and bias equal relu(max_pool2d(batch_norm(x), 2)) in
    float64 on the same bf16 input, element by element within bf16 rounding (weight and bias, and the
    batch mean and variance: float32 sums). The output gradient has a mean, so BatchNorm's coupling
    terms weigh in every input gradient."""
    x, bn = _activations(shape), _bn(shape[1])
    grad = torch.randn(
        shape[0], shape[1], shape[2] // 2, shape[3] // 2, generator=torch.Generator().manual_seed(2)
    )
    grad = (grad + 1.0).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    x64 = x.double().requires_grad_()
    w64, b64 = (p.detach().double().requires_grad_() for p in (bn.weight, bn.bias))
    y64 = nn.functional.batch_norm(x64, None, None, w64, b64, training=True, eps=bn.eps)
    out64 = torch.relu(nn.functional.max_pool2d(y64, 2))
    out64.backward(grad.double())

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert cpu_kernels.applies(x, bn)
        xk = x.clone().requires_grad_()
        out = cpu_kernels.batch_norm_pool_relu(xk, bn)
        out.backward(grad)
    finally:
        torch.set_num_threads(previous)
    assert out.dtype == torch.bfloat16 and out.is_contiguous(memory_format=torch.channels_last)
    assert xk.grad.dtype == torch.bfloat16 and xk.grad.is_contiguous(memory_format=torch.channels_last)
    scale = x64.grad.abs().max().item()
    torch.testing.assert_close(out.double(), out64.detach(), rtol=2**-8, atol=1e-6)
    torch.testing.assert_close(xk.grad.double(), x64.grad, rtol=2**-8, atol=1e-5 * scale)
    torch.testing.assert_close(bn.weight.grad.double(), w64.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bn.bias.grad.double(), b64.grad, rtol=1e-5, atol=1e-5)
    _, mean, var = cpu_kernels._BatchNormPoolReLU.apply(x, bn.weight, bn.bias, bn.eps)
    torch.testing.assert_close(mean.double(), x64.detach().mean((0, 2, 3)), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(
        var.double(), x64.detach().var((0, 2, 3), unbiased=False), rtol=1e-6, atol=1e-6
    )


@needs_kernel
def test_the_first_maximum_of_a_window_takes_the_gradient():
    """Four equal values in a window: the gradient of the pooled output reaches the top-left one only
    (PyTorch's max-pool); the others get only BatchNorm's coupling terms, the same for all three."""
    x = _activations((4, 16, 4, 4))
    x[0, :, 0:2, 0:2] = x[0, :, 0:1, 0:1].expand(-1, 2, 2)  # keeps channels-last strides
    assert x.is_contiguous(memory_format=torch.channels_last)
    bn = _bn(16)
    with torch.no_grad():
        bn.weight.abs_().add_(0.1)  # positive scales: the window's value is its maximum after BN
        bn.bias.fill_(5.0)  # and above zero, so the ReLU passes the gradient
    grad = torch.zeros(4, 16, 2, 2, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    grad[0, :, 0, 0] = 1.0
    xk = x.clone().requires_grad_()
    cpu_kernels.batch_norm_pool_relu(xk, bn).backward(grad)
    window = xk.grad[0, :, 0:2, 0:2].float().reshape(16, 4)
    assert torch.all(window[:, 1:] == window[:, 1:2])  # the three others alike
    assert torch.all(window[:, 0] != window[:, 1])  # the first one apart


@needs_kernel
def test_two_threads_give_the_same_floats_every_time_and_a_nan_stays_a_nan():
    """A fixed thread count fixes the sums (bit for bit from call to call); a NaN input reaches the
    output (the channel's statistics are NaN), so a diverged run stops as it would without the kernel."""
    x, bn = _activations((8, 32, 16, 16)), _bn(32)
    grad = torch.ones(8, 32, 8, 8, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        results = []
        for _ in range(2):
            xk = x.clone().requires_grad_()
            out = cpu_kernels.batch_norm_pool_relu(xk, bn)
            out.backward(grad)
            results.append((out, xk.grad))
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    x[0, 3, 5, 5] = float("nan")
    out = cpu_kernels.batch_norm_pool_relu(x, bn)
    assert out[:, 3].isnan().all() and not out[:, 4].isnan().any()
    assert bn.running_var[3].isnan() and not bn.running_var[4].isnan()  # as nn.BatchNorm2d's


@needs_kernel
def test_running_statistics_follow_batch_norm():
    """running_mean, running_var (the unbiased batch variance) and num_batches_tracked move as
    nn.BatchNorm2d's do over three steps."""
    fused, reference = _bn(32), _bn(32)
    for step in range(3):
        x = _activations((6, 32, 8, 8), seed=step)
        cpu_kernels.batch_norm_pool_relu(x, fused)
        reference(x)
    torch.testing.assert_close(fused.running_mean, reference.running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused.running_var, reference.running_var, rtol=1e-5, atol=1e-6)
    assert int(fused.num_batches_tracked) == int(reference.num_batches_tracked) == 3


@needs_kernel
def test_applies_only_to_what_it_computes():
    x, bn = _activations((2, 32, 8, 8)), _bn(32)
    assert cpu_kernels.applies(x, bn)
    assert not cpu_kernels.applies(x.float(), bn)  # bf16 only
    assert not cpu_kernels.applies(x.contiguous(), bn)  # channels-last only
    assert not cpu_kernels.applies(_activations((2, 24, 8, 8)), _bn(24))  # 16 channels a vector
    assert not cpu_kernels.applies(_activations((2, 32, 8, 7)), bn)  # even width
    assert not cpu_kernels.applies(x[:, :, :, :4], bn)  # a strided view
    assert not cpu_kernels.applies(x, _bn(16))  # not bn's channels
    assert not cpu_kernels.applies(x, nn.BatchNorm2d(32, affine=False))
    assert not cpu_kernels.applies(x, nn.BatchNorm2d(32, track_running_stats=False))
    assert not cpu_kernels.applies(x, nn.BatchNorm2d(32, momentum=None))  # a cumulative average
    assert not cpu_kernels.applies(x, nn.SyncBatchNorm(32))  # another module's forward
    assert cpu_kernels.why_not(x, nn.ReLU()) == "bn is not an nn.BatchNorm2d"  # said, not raised
    no_bias = _bn(32)
    no_bias.bias = None
    assert cpu_kernels.why_not(x, no_bias) == "bn lacks affine parameters or running statistics"
    assert cpu_kernels.why_not(x[0], bn) == "x is not a bf16 CPU tensor [N, C, H, W]"
    with pytest.raises(ValueError, match="does not apply: bn is in eval mode"):
        cpu_kernels.batch_norm_pool_relu(x, bn.eval())  # eval mode: running statistics, PyTorch's modules


@needs_kernel
def test_the_small_cnn_trains_through_the_kernel_as_accurately_as_through_its_modules(monkeypatch):
    """SmallCNN in training under bf16 autocast, against the same network in float64: with the kernel
    (its three pooled blocks) the features and the first and last convolutions' gradients are as
    close to float64 as with PyTorch's modules (bf16 autocast is lossy either way: about 1 % on the
    features, 20 % on a gradient's largest entry)."""
    import copy

    torch.manual_seed(0)
    base = SmallCNN().to(memory_format=torch.channels_last)
    images = torch.randn(32, 3, 32, 32).contiguous(memory_format=torch.channels_last)

    def train_step(model: SmallCNN, bf16: bool) -> list[torch.Tensor]:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(images if bf16 else images.double())
        out.double().square().sum().backward()
        return [out.double(), model.features[0].weight.grad.double(), model.features[-3].weight.grad.double()]

    reference = train_step(copy.deepcopy(base).double(), bf16=False)
    calls = []
    kernel = cpu_kernels.batch_norm_pool_relu
    monkeypatch.setattr(
        cpu_kernels, "batch_norm_pool_relu", lambda x, bn: calls.append(x.shape) or kernel(x, bn)
    )
    fused = copy.deepcopy(base)
    with_kernel = train_step(fused, bf16=True)
    assert [tuple(s) for s in calls] == [(32, 32, 32, 32), (32, 64, 16, 16), (32, 128, 8, 8)]
    monkeypatch.setattr(cpu_kernels, "applies", lambda x, bn: False)
    modules = copy.deepcopy(base)
    with_modules = train_step(modules, bf16=True)
    for k, r, m in zip(with_kernel, reference, with_modules, strict=True):
        assert (
            _relative_error(k.detach(), r.detach()) <= 1.25 * _relative_error(m.detach(), r.detach()) + 1e-3
        )
    torch.testing.assert_close(
        fused.features[1].running_var, modules.features[1].running_var, rtol=1e-3, atol=0
    )


@needs_kernel
def test_a_library_others_could_write_is_never_loaded(monkeypatch, tmp_path):
    """The cache folder is made private; a built library that is group- or other-writable is refused
    (one warning, PyTorch's modules run)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    (tmp_path / "dystress").mkdir(mode=0o777)
    (tmp_path / "dystress").chmod(0o777)
    cpu_kernels._library.cache_clear()
    try:
        assert cpu_kernels.available()  # built into the folder, now 0700
        assert (tmp_path / "dystress").stat().st_mode & 0o777 == 0o700
        (library,) = (tmp_path / "dystress").glob("cpu_kernels-*.so")
        library.chmod(0o666)
        cpu_kernels._library.cache_clear()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert not cpu_kernels.available()
        assert len(caught) == 1 and "is not this user's alone" in str(caught[0].message)
    finally:
        cpu_kernels._library.cache_clear()


def test_without_a_compiler_the_modules_run(monkeypatch, tmp_path):
    """No C++ compiler: one warning naming what is missing, available() is False and nothing applies."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CXX", "no-such-compiler-dystress")
    cpu_kernels._library.cache_clear()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            available = cpu_kernels.available()
        assert not cpu_kernels.applies(_activations((2, 32, 8, 8)), _bn(32))
    finally:
        cpu_kernels._library.cache_clear()
    if cpu_kernels._cpu_has_instructions():
        assert not available
        assert [str(w.message) for w in caught] == [
            "dystress.cpu_kernels: the fused CPU kernel could not be built or loaded (no C++ compiler "
            "'no-such-compiler-dystress': set $CXX or install c++); PyTorch's kernels run instead "
            "(slower, other float rounding)"
        ]
    else:
        assert not available and not caught  # nothing to build on this CPU
