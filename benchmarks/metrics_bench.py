"""Time and peak memory of every metric in ``dystress.metrics`` at N = 10,000 and 50,000, D = 512.

    python benchmarks/metrics_bench.py                      # device: cuda if present, else cpu
    python benchmarks/metrics_bench.py --device cpu --sizes 10000
    python benchmarks/metrics_bench.py --metrics uniformity knn_accuracy

Each (metric, N) runs in a fresh spawned process, so that one metric's allocations cannot hide
another's. Data: N features [N, 512] float32 = 10 Gaussian class centres + unit noise, labels
``arange(N) % 10``, a second view = first view + 0.5 noise; kNN and the linear probe use a bank /
training set of N and N // 5 queries / test samples (50k / 10k is the CIFAR split).

Memory:
- CPU: ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` after the call minus the resident set size just
  before it (``/proc/self/statm``); tracemalloc does not see torch's allocator. The data are built in
  chunks beforehand, so the earlier high-water mark stays within a few MiB of the baseline.
- CUDA: ``torch.cuda.max_memory_allocated`` minus ``memory_allocated`` before the call (tensors only,
  not the caching allocator's reserve or the CUDA context).

Time: wall clock of one call after a warm-up call on 512 samples (lazy initialisation), with a CUDA
synchronisation before and after.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import resource
import time
from collections.abc import Callable

import torch

from dystress.runtime import device_name

DIM = 512
NUM_CLASSES = 10

SETTINGS: dict[str, str] = {
    "knn_accuracy": "k 200, t 0.1, N // 5 queries",
    "knn_class_averaged_accuracy": "k 10, majority, N // 5 queries",
    "linear_probe": "L-BFGS 300 it, wd 1e-4, N // 5 test",
    "alignment": "alpha 2",
    "uniformity": "t 2, distinct pairs",
    "tolerance": "10 classes",
    "inter_class_uniformity": "t 2, 10 classes",
    "similarity_distributions": "100k pairs / kind + hist + EMD",
    "trustworthiness": "k 5, low = 2-D",
    "knn_overlap": "k 10, low = 2-D",
    "knn_label_purity": "k 10, cosine",
    "centroid_distance_agreement": "10 classes",
}


def _features(n: int, device: torch.device, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two views [n, DIM] and labels [n], built in chunks of 4096 rows (small transient memory)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(NUM_CLASSES, DIM, generator=g)
    labels = torch.arange(n) % NUM_CLASSES
    z0 = torch.empty(n, DIM, device=device)
    z1 = torch.empty(n, DIM, device=device)
    for s in range(0, n, 4096):
        y = labels[s : s + 4096]
        a = centres[y] + torch.randn(len(y), DIM, generator=g)
        z0[s : s + len(y)] = a.to(device)
        z1[s : s + len(y)] = (a + 0.5 * torch.randn(len(y), DIM, generator=g)).to(device)
    return z0, z1, labels.to(device)


def _calls(n: int, device: torch.device) -> dict[str, Callable[[], object]]:
    from dystress import metrics as M

    z0, z1, y = _features(n, device, seed=0)
    q, _, yq = _features(max(n // 5, 1), device, seed=1)
    low = z0[:, :2].contiguous()

    def similarity() -> object:
        dists = M.similarity_distributions(z0, z1, y, max_pairs=100_000)
        M.similarity_histograms(dists)
        return M.pairwise_emd(dists)

    return {
        "knn_accuracy": lambda: M.knn_accuracy(z0, y, q, yq, k=min(200, n)),
        "knn_class_averaged_accuracy": lambda: M.knn_class_averaged_accuracy(z0, y, q, yq, k=min(10, n)),
        "linear_probe": lambda: M.linear_probe(z0, y, q, yq),
        "alignment": lambda: M.alignment(z0, z1),
        "uniformity": lambda: M.uniformity(z0),
        "tolerance": lambda: M.tolerance(z0, y),
        "inter_class_uniformity": lambda: M.inter_class_uniformity(z0, y),
        "similarity_distributions": similarity,
        "trustworthiness": lambda: M.trustworthiness(z0, low, k=5),
        "knn_overlap": lambda: M.knn_overlap(z0, low, k=10),
        "knn_label_purity": lambda: M.knn_label_purity(z0, y, k=10),
        "centroid_distance_agreement": lambda: M.centroid_distance_agreement(z0, low, y),
    }


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _measure(metric: str, n: int, device_name: str, threads: int | None) -> tuple[float, float]:
    """Run in a fresh process: seconds and peak extra MiB of one call of ``metric`` at size n."""
    if threads is not None:
        torch.set_num_threads(threads)
    device = torch.device(device_name)
    _calls(512, device)[metric]()  # warm-up: lazy initialisation of kernels / libraries
    call = _calls(n, device)[metric]
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        before = _rss_bytes()
    start = time.perf_counter()
    call()
    _sync(device)
    seconds = time.perf_counter() - start
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - before
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    return seconds, max(peak, 0) / 2**20


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--metrics", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    name = device_name(device)
    print(f"device: {name}; D = {DIM}; {NUM_CLASSES} classes; torch {torch.__version__}\n")
    memory = "peak alloc (MiB)" if device.type == "cuda" else "peak RSS delta (MiB)"
    print(f"| metric | N | setting | time (s) | {memory} |")
    print("| --- | ---: | --- | ---: | ---: |")
    context = multiprocessing.get_context("spawn")
    for n in args.sizes:
        for metric in args.metrics:
            with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
                seconds, mib = pool.submit(_measure, metric, n, args.device, args.threads).result()
            print(f"| {metric} | {n:,} | {SETTINGS[metric]} | {seconds:.2f} | {mib:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
