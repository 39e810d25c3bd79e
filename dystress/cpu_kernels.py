"""A fused CPU kernel for the small CNN's training step: BatchNorm (batch statistics), 2x2 max-pool and
ReLU of channels-last bf16 activations in two passes forward and two backward.

On a CPU the small CNN's step is bound by memory passes over bf16 activations, not by arithmetic:
PyTorch runs BatchNorm, the max-pool (with int64 indices and a zero-filled gradient) and the ReLU as
separate kernels, about a dozen passes over each block's activations per step. This kernel reads the
convolution's output twice forward (statistics; normalise, pool, ReLU) and twice backward (the two
per-channel sums of the BatchNorm gradient; the input gradient), and keeps every intermediate in
float32: measured on the 2-core development VM (one thread, 256 images), forward and backward of the
first block's 256 x 32 x 32 x 32 activations take 5.1 ms against PyTorch's 34.9 ms.

It is used where it applies (:func:`applies`): a CPU with AVX-512 (F, BW) and AVX-512 BF16, a C++
compiler to build it once per source version (``$CXX``, default ``c++``; into
``$XDG_CACHE_HOME/dystress`` or ``~/.cache/dystress``), a BatchNorm2d in training mode with affine
parameters and running statistics, bf16 channels-last input with a multiple of 16 channels and even
height and width. Elsewhere the model runs PyTorch's modules. The two round differently: PyTorch
rounds BatchNorm's output to bf16 before pooling and its gradients between the ops, this kernel only
its outputs; both are within a few bf16 rounding steps of a float64 reference
(``tests/test_cpu_kernels.py``). A NaN in a window gives a NaN output, as PyTorch's ops do.
Like PyTorch's own kernels, which differ by instruction set and thread count, results are
reproducible on one machine for one thread count, not across machines.

    >>> import torch
    >>> from dystress import cpu_kernels
    >>> bn = torch.nn.BatchNorm2d(16)
    >>> x = torch.randn(2, 16, 4, 4).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    >>> y = cpu_kernels.batch_norm_pool_relu(x, bn) if cpu_kernels.applies(x, bn) else None
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = ["applies", "available", "batch_norm_pool_relu", "why_not"]

_SOURCE = r"""
// BatchNorm (batch statistics) + 2x2 max-pool (stride 2) + ReLU on channels-last bf16 [N, H, W, C],
// C a multiple of 16, H and W even; float32 parameters and statistics; OpenMP over images (a team of
// exactly `threads`), each thread's partial sums added in thread order: the same sums for the same
// thread count. A NaN in a window gives a NaN output (as PyTorch's max-pool and ReLU do).
#include <cmath>
#include <cstdint>
#include <vector>
#include <immintrin.h>
#include <omp.h>

static inline __m512 load_bf16(const uint16_t* p) {
    __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}
static inline void store_bf16(uint16_t* p, __m512 v) {  // round to nearest even
    _mm256_storeu_si256((__m256i*)p, (__m256i)_mm512_cvtneps_pbh(v));
}
static inline __mmask16 any_nan(__m512 a, __m512 b, __m512 d, __m512 e) {
    return _mm512_cmp_ps_mask(a, b, _CMP_UNORD_Q) | _mm512_cmp_ps_mask(d, e, _CMP_UNORD_Q);
}

extern "C" {

// out [N, H/2, W/2, C]; mean, var (biased), invstd, and the scale and shift of y = x * scale + shift
// that the backward pass recomputes y with (the same floats, so the same maxima) [C]
void bn_pool_relu_forward(const uint16_t* __restrict x, const float* weight, const float* bias, float eps,
                          int64_t N, int64_t H, int64_t W, int64_t C, int threads,
                          uint16_t* __restrict out, float* mean, float* var, float* invstd,
                          float* scale, float* shift) {
    omp_set_dynamic(0);
    const int64_t count = N * H * W, OH = H / 2, OW = W / 2;
    std::vector<float> origin(C);  // sums of x - (the first pixel): guards against |mean| >> std
    for (int64_t c = 0; c < C; c += 16) _mm512_storeu_ps(&origin[c], load_bf16(x + c));
    std::vector<double> sums(2 * C * threads, 0.0);
#pragma omp parallel num_threads(threads)
    {
        const int t = omp_get_thread_num();
        double* s = &sums[2 * C * t];
        std::vector<float> row_sum(C), row_sq(C);
#pragma omp for schedule(static)
        for (int64_t row = 0; row < N * H; ++row) {
            for (int64_t c = 0; c < C; c += 16) {
                __m512 a = _mm512_setzero_ps(), q = _mm512_setzero_ps(), o = _mm512_loadu_ps(&origin[c]);
                const uint16_t* p = x + row * W * C + c;
                for (int64_t j = 0; j < W; ++j) {
                    __m512 v = _mm512_sub_ps(load_bf16(p + j * C), o);
                    a = _mm512_add_ps(a, v);
                    q = _mm512_fmadd_ps(v, v, q);
                }
                _mm512_storeu_ps(&row_sum[c], a);
                _mm512_storeu_ps(&row_sq[c], q);
            }
            for (int64_t c = 0; c < C; ++c) { s[c] += row_sum[c]; s[C + c] += row_sq[c]; }
        }
    }
    for (int64_t c = 0; c < C; ++c) {
        double total = 0.0, total_sq = 0.0;
        for (int t = 0; t < threads; ++t) {
            total += sums[2 * C * t + c];
            total_sq += sums[2 * C * t + C + c];
        }
        const double d = total / count, raw = total_sq / count - d * d;
        const double v = raw < 0.0 ? 0.0 : raw;  // a NaN stays a NaN
        mean[c] = float(origin[c] + d); var[c] = float(v); invstd[c] = float(1.0 / std::sqrt(v + eps));
        scale[c] = weight[c] * invstd[c];
        shift[c] = bias[c] - mean[c] * scale[c];
    }
    const __m512 zero = _mm512_setzero_ps(), nan = _mm512_set1_ps(NAN);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t n = 0; n < N; ++n)
        for (int64_t oh = 0; oh < OH; ++oh)
            for (int64_t ow = 0; ow < OW; ++ow) {
                const uint16_t* p = x + ((n * H + 2 * oh) * W + 2 * ow) * C;
                uint16_t* o = out + ((n * OH + oh) * OW + ow) * C;
                for (int64_t c = 0; c < C; c += 16) {
                    __m512 sc = _mm512_loadu_ps(&scale[c]), sh = _mm512_loadu_ps(&shift[c]);
                    __m512 a = _mm512_fmadd_ps(load_bf16(p + c), sc, sh);
                    __m512 b = _mm512_fmadd_ps(load_bf16(p + C + c), sc, sh);
                    __m512 d = _mm512_fmadd_ps(load_bf16(p + W * C + c), sc, sh);
                    __m512 e = _mm512_fmadd_ps(load_bf16(p + W * C + C + c), sc, sh);
                    __m512 m = _mm512_max_ps(_mm512_max_ps(a, b), _mm512_max_ps(d, e));
                    __m512 r = _mm512_mask_mov_ps(_mm512_max_ps(m, zero), any_nan(a, b, d, e), nan);
                    store_bf16(o + c, r);
                }
            }
}

// grad_out [N, H/2, W/2, C] -> grad_x [N, H, W, C], grad_weight, grad_bias [C]. The gradient of a
// window goes to its first maximum in row-major order (PyTorch's max-pool), where the maximum > 0.
void bn_pool_relu_backward(const uint16_t* __restrict x, const uint16_t* __restrict grad_out,
                           const float* scale, const float* shift, const float* mean, const float* invstd,
                           int64_t N, int64_t H, int64_t W, int64_t C, int threads,
                           uint16_t* __restrict grad_x, float* grad_weight, float* grad_bias) {
    omp_set_dynamic(0);
    const int64_t count = N * H * W, OH = H / 2, OW = W / 2;
    const __m512 zero = _mm512_setzero_ps();
    std::vector<double> sums(2 * C * threads, 0.0);
#pragma omp parallel num_threads(threads)
    {
        const int t = omp_get_thread_num();
        double* s = &sums[2 * C * t];
        std::vector<float> row_dy(C), row_dyx(C);
#pragma omp for schedule(static)
        for (int64_t row = 0; row < N * OH; ++row) {
            const int64_t n = row / OH, oh = row % OH;
            for (int64_t c = 0; c < C; c += 16) {
                __m512 sc = _mm512_loadu_ps(&scale[c]), sh = _mm512_loadu_ps(&shift[c]);
                __m512 mu = _mm512_loadu_ps(&mean[c]), is = _mm512_loadu_ps(&invstd[c]);
                __m512 dy = zero, dyx = zero;
                for (int64_t ow = 0; ow < OW; ++ow) {
                    const uint16_t* p = x + ((n * H + 2 * oh) * W + 2 * ow) * C + c;
                    __m512 xa = load_bf16(p), xb = load_bf16(p + C);
                    __m512 xd = load_bf16(p + W * C), xe = load_bf16(p + W * C + C);
                    __m512 a = _mm512_fmadd_ps(xa, sc, sh), b = _mm512_fmadd_ps(xb, sc, sh);
                    __m512 d = _mm512_fmadd_ps(xd, sc, sh), e = _mm512_fmadd_ps(xe, sc, sh);
                    __m512 m = _mm512_max_ps(_mm512_max_ps(a, b), _mm512_max_ps(d, e));
                    __m512 xm = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(d, m, _CMP_EQ_OQ), xe, xd);
                    xm = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(b, m, _CMP_EQ_OQ), xm, xb);
                    xm = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, m, _CMP_EQ_OQ), xm, xa);
                    __m512 g = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(m, zero, _CMP_GT_OQ),
                                                   load_bf16(grad_out + ((n * OH + oh) * OW + ow) * C + c));
                    dy = _mm512_add_ps(dy, g);
                    dyx = _mm512_fmadd_ps(g, _mm512_mul_ps(_mm512_sub_ps(xm, mu), is), dyx);
                }
                _mm512_storeu_ps(&row_dy[c], dy);
                _mm512_storeu_ps(&row_dyx[c], dyx);
            }
            for (int64_t c = 0; c < C; ++c) { s[c] += row_dy[c]; s[C + c] += row_dyx[c]; }
        }
    }
    std::vector<float> mean_dy(C), mean_dyx(C);
    for (int64_t c = 0; c < C; ++c) {
        double total_dy = 0.0, total_dyx = 0.0;
        for (int t = 0; t < threads; ++t) {
            total_dy += sums[2 * C * t + c];
            total_dyx += sums[2 * C * t + C + c];
        }
        grad_bias[c] = float(total_dy);
        grad_weight[c] = float(total_dyx);
        mean_dy[c] = float(total_dy / count);
        mean_dyx[c] = float(total_dyx / count);
    }
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t n = 0; n < N; ++n)
        for (int64_t oh = 0; oh < OH; ++oh)
            for (int64_t ow = 0; ow < OW; ++ow) {
                const int64_t base = ((n * H + 2 * oh) * W + 2 * ow) * C;
                const uint16_t* g0 = grad_out + ((n * OH + oh) * OW + ow) * C;
                for (int64_t c = 0; c < C; c += 16) {
                    __m512 sc = _mm512_loadu_ps(&scale[c]), sh = _mm512_loadu_ps(&shift[c]);
                    __m512 mu = _mm512_loadu_ps(&mean[c]), is = _mm512_loadu_ps(&invstd[c]);
                    __m512 k1 = _mm512_loadu_ps(&mean_dy[c]), k2 = _mm512_loadu_ps(&mean_dyx[c]);
                    const uint16_t* p = x + base + c;
                    const int64_t offsets[4] = {0, C, W * C, W * C + C};  // the window, row-major
                    __m512 xs[4], ys[4];
                    for (int k = 0; k < 4; ++k) {
                        xs[k] = load_bf16(p + offsets[k]);
                        ys[k] = _mm512_fmadd_ps(xs[k], sc, sh);
                    }
                    __m512 m = _mm512_max_ps(_mm512_max_ps(ys[0], ys[1]), _mm512_max_ps(ys[2], ys[3]));
                    __mmask16 positive = _mm512_cmp_ps_mask(m, zero, _CMP_GT_OQ);
                    __m512 g = _mm512_maskz_mov_ps(positive, load_bf16(g0 + c));
                    __mmask16 taken = 0;  // the first maximum of the window takes the gradient
                    for (int k = 0; k < 4; ++k) {
                        __mmask16 is_max = _mm512_cmp_ps_mask(ys[k], m, _CMP_EQ_OQ);
                        __mmask16 here = k < 3 ? (__mmask16)(is_max & ~taken) : (__mmask16)~taken;
                        taken |= here;
                        __m512 xhat = _mm512_mul_ps(_mm512_sub_ps(xs[k], mu), is);
                        __m512 dy = _mm512_sub_ps(_mm512_maskz_mov_ps(here, g), k1);
                        __m512 inner = _mm512_sub_ps(dy, _mm512_mul_ps(xhat, k2));
                        store_bf16(grad_x + base + offsets[k] + c, _mm512_mul_ps(sc, inner));
                    }
                }
            }
}

}  // extern "C"
"""

_FLAGS = ("-O3", "-mavx512f", "-mavx512bw", "-mavx512bf16", "-mfma", "-fopenmp", "-shared", "-fPIC")
_CPU_FLAGS = ("avx512f", "avx512bw", "avx512_bf16")
_P, _I = ctypes.c_void_p, ctypes.c_int64
_ARGTYPES = {
    "bn_pool_relu_forward": [
        _P,
        _P,
        _P,
        ctypes.c_float,
        _I,
        _I,
        _I,
        _I,
        ctypes.c_int,
        _P,
        _P,
        _P,
        _P,
        _P,
        _P,
    ],
    "bn_pool_relu_backward": [_P, _P, _P, _P, _P, _P, _I, _I, _I, _I, ctypes.c_int, _P, _P, _P],
}


def _cpu_has_instructions() -> bool:
    """Whether this CPU reports AVX-512 F, BW and BF16 (Linux's /proc/cpuinfo; elsewhere: no)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []
    )
    return all(flag in flags for flag in _CPU_FLAGS)


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dystress"


@functools.cache
def _library() -> ctypes.CDLL | None:
    """The kernel library, built once per source version and flags (atomically: runs side by side may
    build it at once) into a folder only this user can write, and loaded only from there; ``None``
    where the CPU lacks the instructions, and ``None`` with one warning where it cannot be built or
    loaded."""
    if not _cpu_has_instructions():
        return None
    try:
        return _build_and_load()
    except (OSError, RuntimeError, ValueError, AttributeError, subprocess.SubprocessError) as error:
        warnings.warn(
            f"dystress.cpu_kernels: the fused CPU kernel could not be built or loaded ({error}); "
            "PyTorch's kernels run instead (slower, other float rounding)",
            stacklevel=2,
        )
        return None


def _build_and_load() -> ctypes.CDLL:
    digest = hashlib.sha256((_SOURCE + " ".join(_FLAGS)).encode()).hexdigest()[:16]
    target = _cache_dir() / f"cpu_kernels-{digest}.so"
    _private_folder(target.parent)
    if not target.is_file():
        compiler = shlex.split(os.environ.get("CXX") or "c++")
        if not compiler or shutil.which(compiler[0]) is None:
            raise RuntimeError(
                f"no C++ compiler {' '.join(compiler) or '(empty $CXX)'!r}: set $CXX or install c++"
            )
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            source, built = Path(tmp, "cpu_kernels.cpp"), Path(tmp, target.name)
            source.write_text(_SOURCE, encoding="utf-8")
            done = subprocess.run(
                [*compiler, *_FLAGS, str(source), "-o", str(built)], capture_output=True, text=True
            )
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["no message"])[-1]
                raise RuntimeError(f"{' '.join(compiler)} failed: {last}")
            os.replace(built, target)
    _owned_and_private(target)  # a library someone else could have written is never loaded
    library = ctypes.CDLL(str(target))
    for name, argtypes in _ARGTYPES.items():
        getattr(library, name).argtypes = argtypes
        getattr(library, name).restype = None
    return library


def _private_folder(folder: Path) -> None:
    """Make ``folder`` (and its parents) if needed; it must be this user's and writable by no one else
    (made so when this user owns it); ``RuntimeError`` otherwise."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = folder.stat()
    if info.st_uid == os.getuid() and info.st_mode & 0o022:
        folder.chmod(0o700)
    _owned_and_private(folder)


def _owned_and_private(path: Path) -> None:
    """``RuntimeError`` unless ``path`` belongs to this user and no one else can write it."""
    info = path.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise RuntimeError(f"{path} is not this user's alone (owner or group/other write permission)")


def available() -> bool:
    """Whether the fused kernel runs on this machine (its CPU, a compiler to build it once)."""
    return _library() is not None


def applies(x: Tensor, bn: nn.Module) -> bool:
    """Whether :func:`batch_norm_pool_relu` computes ``relu(max_pool2d(bn(x), 2))`` for these inputs
    (see :func:`why_not`)."""
    return why_not(x, bn) is None


def why_not(x: Tensor, bn: nn.Module) -> str | None:
    """Why the kernel does not compute ``relu(max_pool2d(bn(x), 2))`` here, or ``None`` when it does:
    it needs a plain ``nn.BatchNorm2d`` in training mode with float32 affine parameters on the CPU,
    running statistics and a momentum; bf16 channels-last CPU input [N, C, H, W] with C = the
    BatchNorm's features, a multiple of 16, H and W even; eager mode (not under torch.compile);
    a machine where it is :func:`available`."""
    if type(bn) is not nn.BatchNorm2d:
        return "bn is not an nn.BatchNorm2d"
    if not bn.training:
        return "bn is in eval mode (running statistics: PyTorch's modules)"
    if not (bn.affine and bn.track_running_stats) or bn.weight is None or bn.bias is None:
        return "bn lacks affine parameters or running statistics"
    if bn.momentum is None:
        return "bn has no momentum (a cumulative average)"
    if not all(p.dtype == torch.float32 and p.device.type == "cpu" for p in (bn.weight, bn.bias)):
        return "bn's parameters are not float32 on the CPU"
    if not (isinstance(x, Tensor) and x.device.type == "cpu" and x.dtype == torch.bfloat16 and x.ndim == 4):
        return "x is not a bf16 CPU tensor [N, C, H, W]"
    if x.shape[1] != bn.num_features or x.shape[1] % 16 != 0:
        return "x's channels are not bn's, a multiple of 16"
    if x.shape[2] % 2 != 0 or x.shape[3] % 2 != 0 or x.shape[0] * x.shape[2] * x.shape[3] < 2:
        return "x's height and width are not even"
    if not x.is_contiguous(memory_format=torch.channels_last):
        return "x is not channels-last contiguous"
    if torch.compiler.is_compiling():
        return "under torch.compile"
    return None if available() else "the kernel is not available on this machine"


def _address(t: Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


class _BatchNormPoolReLU(torch.autograd.Function):
    """relu(max_pool2d(batch_norm(x), 2)) with batch statistics; returns (output, mean, biased var)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:  # noqa: ANN001
        n, c, h, w = x.shape
        weight, bias = weight.detach().contiguous(), bias.detach().contiguous()
        out = torch.empty(
            (n, c, h // 2, w // 2), dtype=x.dtype, device="cpu", memory_format=torch.channels_last
        )
        mean, var, invstd, scale, shift = torch.empty((5, c), dtype=torch.float32, device="cpu")
        _library().bn_pool_relu_forward(
            _address(x), _address(weight), _address(bias), eps, n, h, w, c, torch.get_num_threads(),
            _address(out), _address(mean), _address(var), _address(invstd), _address(scale), _address(shift),
        )  # fmt: skip
        ctx.save_for_backward(x, scale, shift, mean, invstd)
        ctx.mark_non_differentiable(mean, var)
        return out, mean, var

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor, _mean: Tensor, _var: Tensor) -> tuple[Tensor, Tensor, Tensor, None]:  # noqa: ANN001
        x, scale, shift, mean, invstd = ctx.saved_tensors
        n, c, h, w = x.shape
        grad_out = grad_out.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
        grad_x = torch.empty_like(x, memory_format=torch.channels_last)
        grad_weight, grad_bias = torch.empty((2, c), dtype=torch.float32, device="cpu")
        _library().bn_pool_relu_backward(
            _address(x), _address(grad_out), _address(scale), _address(shift), _address(mean),
            _address(invstd), n, h, w, c, torch.get_num_threads(),
            _address(grad_x), _address(grad_weight), _address(grad_bias),
        )  # fmt: skip
        return grad_x, grad_weight, grad_bias, None


def batch_norm_pool_relu(x: Tensor, bn: nn.BatchNorm2d) -> Tensor:
    """``relu(max_pool2d(bn(x), 2))`` for a training-mode ``bn`` in one fused kernel: x [N, C, H, W]
    bf16 channels-last -> [N, C, H/2, W/2] bf16 channels-last; ``ValueError`` saying why where it
    does not apply (:func:`why_not`).

    Updates ``bn``'s running statistics as ``nn.BatchNorm2d`` does (the unbiased batch variance,
    ``momentum``, ``num_batches_tracked``); gradients flow to x, ``bn.weight`` and ``bn.bias``. Hooks
    on ``bn`` do not run (the module is not called)."""
    reason = why_not(x, bn)
    if reason is not None:
        raise ValueError(f"batch_norm_pool_relu does not apply: {reason}")
    out, mean, var = _BatchNormPoolReLU.apply(x, bn.weight, bn.bias, bn.eps)
    count = x.shape[0] * x.shape[2] * x.shape[3]
    with torch.no_grad():
        bn.running_mean.mul_(1.0 - bn.momentum).add_(mean, alpha=bn.momentum)
        bn.running_var.mul_(1.0 - bn.momentum).add_(var * (count / (count - 1)), alpha=bn.momentum)
        bn.num_batches_tracked.add_(1)
    return out
