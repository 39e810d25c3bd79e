r"""Training throughput (two-view pairs per second) of three pipelines feeding the same model.

    python benchmarks/throughput.py                     # GPU scale: ResNet-18 / CIFAR, batch 512
    python benchmarks/throughput.py --backbone small_cnn --batch-size 256 --precision bf16 --steps 10  # CPU

- ``engine``: this project's loop: uint8 images resident on the device (DeviceBatchLoader), batched
  per-sample SimCLR augmentation on the device (SimCLRAugmentation), model forward/backward, loss and
  optimizer step (``dystress.train.train_step``);
- ``host``: the same loop with the images in host memory (HostBatchLoader: a background thread gathers
  each batch into a pinned buffer, copied with ``non_blocking=True``), the placement of data sets that
  do not fit the device;
- ``pil``: the conventional pipeline: torchvision's PIL transforms of the SimCLR recipe
  (RandomResizedCrop, flip, ColorJitter p 0.8, grayscale p 0.2, ToTensor, Normalize), two views per
  image, in DataLoader worker processes, copied to the device, then the same step;
- ``model``: the same step on pre-made normalised tensors already on the device (compute bound);
- ``graph`` (CUDA only): the ``engine`` step, augmentation, forward, loss, backward and SGD step, captured
  once in one CUDA graph and replayed, each step's batch copied into the graph's input: what a step
  costs without Python and kernel launches (its learning rate is fixed: an engine would pass it as a
  tensor). The augmentation draws from the default CUDA generator, whose state CUDA graphs advance.

``--concurrent 1,2,4,8`` measures runs side by side instead: for each count N it starts N processes of
the ``engine`` pipeline on the same device (on a CPU each with its share of the cores as threads), lets
them all finish their warm-up, times their steps together and reports the aggregate pairs/s, so one
table says how much a GPU (or the CPU's cores) gains from several runs at once:

    python benchmarks/throughput.py --concurrent 1,2,4,8    # one GPU
    python benchmarks/throughput.py --concurrent 1,6 --concurrent-mode graph   # whole-step CUDA graphs
    python benchmarks/throughput.py --backbone small_cnn --batch-size 256 --precision bf16 \
        --steps 10 --concurrent 1,2 --device cpu             # 2 cores: 1 run x 2 threads vs 2 x 1

Data: the CIFAR-10 training images under ``--data-root`` when present, else random uint8 images.
Timings exclude ``--warmup`` steps and synchronise the device; they are printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dystress.config import PretrainConfig  # noqa: E402
from dystress.data.augment import SimCLRAugmentation  # noqa: E402
from dystress.data.loader import DeviceBatchLoader, HostBatchLoader  # noqa: E402
from dystress.data.transforms import NORMALIZATION  # noqa: E402
from dystress.io import atomic_write_json  # noqa: E402
from dystress.losses import build_loss  # noqa: E402
from dystress.optim import build_optimizer  # noqa: E402
from dystress.runtime import build_model, device_name, set_up_device, uses_bf16  # noqa: E402
from dystress.train import train_step  # noqa: E402

MEAN, STD = NORMALIZATION["cifar10"]


def _images(data_root: str | None, n: int) -> torch.Tensor:
    """uint8 [n, 3, 32, 32]: CIFAR-10 training images when available, else random pixels."""
    if data_root and (Path(data_root) / "cifar-10-batches-py").is_dir():
        from dystress.data.datasets import load_dataset

        images = load_dataset("cifar10", data_root, train=True, download=False).images
        return (
            images[:n]
            if n <= len(images)
            else images.repeat((n + len(images) - 1) // len(images), 1, 1, 1)[:n]
        )
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)


class _PILPairs(torch.utils.data.Dataset):
    """Two PIL-augmented views of each uint8 HWC image (the conventional SimCLR data pipeline)."""

    def __init__(self, images: np.ndarray) -> None:
        from torchvision import transforms as T

        self.images = images
        self.transform = T.Compose(
            [
                T.RandomResizedCrop(32, scale=(0.08, 1.0)),
                T.RandomHorizontalFlip(),
                T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                T.RandomGrayscale(p=0.2),
                T.ToTensor(),
                T.Normalize(MEAN, STD),
            ]
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image

        img = Image.fromarray(self.images[i])
        return self.transform(img), self.transform(img)


def _cycle(make: Callable[[], Iterator]) -> Iterator:
    while True:
        yield from make()


def _time(
    step: Callable[[], None],
    steps: int,
    warmup: int,
    device: torch.device,
    barrier: Callable[[], None] = lambda: None,
) -> float:
    """Seconds of ``steps`` calls of ``step`` after ``warmup`` untimed ones (and ``barrier``)."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    barrier()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def _wait_for_peers(folder: str | None, count: int, timeout_s: float = 900.0) -> None:
    """Say this process is warm (a file in ``folder``) and wait until ``count`` processes are."""
    if folder is None:
        return
    Path(folder, f"ready.{os.getpid()}").touch()
    deadline = time.monotonic() + timeout_s
    while len(list(Path(folder).glob("ready.*"))) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(list(Path(folder).glob('ready.*')))} of {count} runs got ready")
        time.sleep(0.01)


def _graphed(
    step: Callable[[torch.Tensor], None], batches: Iterator, device: torch.device
) -> Callable[[], None]:
    """``step`` (one uint8 batch [B, 3, H, W] -> one training step) captured in one CUDA graph; the
    returned callable copies the next batch into the graph's input and replays the graph.

    Three eager steps on a side stream come first (momentum buffers, cuDNN's plans, the allocator's
    pools), as CUDA graph capture requires; then one step is captured (PyTorch's whole-network capture:
    gradients are allocated in the graph's private pool)."""
    x = next(batches)[0].clone()
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):
            step(x)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):  # a host loader's thread may run
        step(x)

    def replay() -> None:
        x.copy_(next(batches)[0], non_blocking=True)
        graph.replay()

    return replay


def _concurrent(args: argparse.Namespace, counts: list[int]) -> None:
    """For each N in ``counts``: N engine processes side by side; print their aggregate pairs/s."""
    cores = os.cpu_count() or 1
    rows = []
    for n in counts:
        threads = max(1, cores // n)
        with tempfile.TemporaryDirectory() as barrier:
            common = [sys.executable, __file__, "--modes", args.concurrent_mode, "--json"]
            common += ["--barrier", barrier]
            common += ["--barrier-n", str(n), "--num-threads", str(threads), "--backbone", args.backbone]
            common += ["--batch-size", str(args.batch_size), "--steps", str(args.steps)]
            common += ["--warmup", str(args.warmup), "--device", args.device, "--precision", args.precision]
            common += ["--data-root", args.data_root, "--view-forward", args.view_forward]
            common += ["--compile", args.compile]
            procs = [subprocess.Popen(common, stdout=subprocess.PIPE, text=True) for _ in range(n)]
            outputs = [proc.communicate()[0] for proc in procs]
        if any(proc.returncode for proc in procs):
            raise SystemExit(
                f"a run of the {n} side by side failed (exit statuses {[p.returncode for p in procs]})"
            )
        each = [json.loads(out.strip().splitlines()[-1])["pairs_per_second"] for out in outputs]
        rows.append((n, threads, sum(each) / n, sum(each)))
        if args.rows_json:  # after each count: a deadline that stops the next keeps the rows so far
            keys = ("runs", "threads_each", "pairs_per_s_per_run", "aggregate_pairs_per_s")
            atomic_write_json(args.rows_json, [dict(zip(keys, row, strict=True)) for row in rows])
    base = rows[0][3]
    pipeline = "engine pipeline" if args.concurrent_mode == "engine" else "engine step in one CUDA graph"
    print(f"\n{args.backbone}, batch {args.batch_size} pairs, {pipeline}, {args.steps} timed steps each\n")
    print("| runs at once | threads each | pairs/s per run | aggregate pairs/s | vs the first row |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for n, threads, mean, total in rows:
        print(f"| {n} | {threads} | {mean:,.0f} | {total:,.0f} | {total / base:.2f}x |")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--backbone", default="resnet18", choices=["resnet18", "resnet34", "resnet50", "small_cnn"]
    )
    p.add_argument("--batch-size", type=int, default=512, help="pairs per step (default 512)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per pipeline")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument(
        "--workers", type=int, default=min(8, os.cpu_count() or 1), help="DataLoader workers (pil)"
    )
    p.add_argument("--num-threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--data-root", default="data", help="CIFAR-10 root (random images when absent)")
    p.add_argument(
        "--view-forward",
        default="separate",
        choices=["separate", "joint"],
        help="views through the network one at a time (the default) or as one batch",
    )
    p.add_argument(
        "--modes",
        default="engine,host,pil,model",
        help="comma-separated subset of engine,host,pil,model,graph (graph: CUDA only)",
    )
    p.add_argument(
        "--compile",
        default="none",
        choices=["none", "default", "reduce-overhead", "max-autotune-no-cudagraphs"],
        help="torch.compile the model in this mode (reduce-overhead: CUDA graphs); warm-up steps compile",
    )
    p.add_argument(
        "--concurrent",
        default=None,
        metavar="N,N,...",
        help="run N engine processes side by side for each N and report their aggregate pairs/s",
    )
    p.add_argument(
        "--concurrent-mode",
        default="engine",
        choices=["engine", "graph"],
        help="with --concurrent: the pipeline each process runs (graph: CUDA only)",
    )
    p.add_argument(
        "--rows-json", metavar="FILE", default=None, help="with --concurrent: the rows as JSON too"
    )
    p.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # one JSON line (for --concurrent)
    p.add_argument("--barrier", default=None, help=argparse.SUPPRESS)  # folder the side-by-side runs meet in
    p.add_argument("--barrier-n", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.concurrent_mode != "engine" and not args.concurrent:
        p.error("--concurrent-mode needs --concurrent (alone, give the pipeline with --modes)")
    if args.rows_json and not args.concurrent:
        p.error("--rows-json needs --concurrent (it holds the side-by-side rows)")
    wants_graph = args.concurrent_mode == "graph" if args.concurrent else "graph" in args.modes.split(",")
    if wants_graph and (args.device == "cpu" or not torch.cuda.is_available()):
        p.error("the graph pipeline captures CUDA graphs: it needs a CUDA device (--device cuda or auto)")
    if wants_graph and args.compile != "none":
        p.error("the graph pipeline captures the eager step itself: use it with --compile none")
    if args.concurrent:
        counts = [int(c) for c in args.concurrent.split(",") if c.strip()]
        if not counts or min(counts) < 1:
            p.error(f"--concurrent must list counts >= 1, e.g. 1,2,4,8; got {args.concurrent!r}")
        _concurrent(args, counts)
        return
    modes = args.modes.split(",")
    if not set(modes) <= {"engine", "host", "pil", "model", "graph"}:
        p.error(f"--modes must name engine, host, pil, model or graph, got {args.modes!r}")
    if args.num_threads:
        torch.set_num_threads(args.num_threads)

    config = PretrainConfig(
        profile="benchmark",
        backbone=args.backbone,
        batch_size=args.batch_size,
        precision=args.precision,
        device=args.device,
        lr=0.01,
        momentum=0.9,
        temperature="cosine",
        temperature_params={"tau_min": 0.1, "tau_max": 0.2},
        view_forward=args.view_forward,
    )
    device = set_up_device(config)  # as the engine's runs: cuDNN autotuning, the CPU keeps freed memory
    bf16 = uses_bf16(config, device)
    channels_last = config.channels_last and (bf16 or device.type == "cuda")
    torch.manual_seed(0)
    model = build_model(config).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = build_loss(config.loss, config.build_temperature()).to(device)
    optimizer = build_optimizer(model, config)
    if args.compile != "none":  # the optimizer keeps the parameters, which the compiled module shares
        model = torch.compile(model, mode=None if args.compile == "default" else args.compile)
    n_images = max(4 * args.batch_size, args.batch_size * (args.steps + args.warmup))
    images = _images(args.data_root, min(n_images, 50_000))
    bs = args.batch_size

    def run_step(v0: torch.Tensor, v1: torch.Tensor) -> None:
        train_step(model, loss_fn, optimizer, v0, v1, bf16, channels_last, config.view_forward == "separate")

    results: dict[str, float] = {}
    aug = SimCLRAugmentation(32, mean=MEAN, std=STD).to(device)

    def batches_of(loader_class: type) -> Iterator:
        """The images' batches through ``loader_class``, epoch after epoch."""
        loader = loader_class(images, torch.zeros(len(images), dtype=torch.long), bs, device=device)
        return _cycle(lambda: iter(loader))

    def barrier() -> None:
        _wait_for_peers(args.barrier, args.barrier_n)

    engines = {
        "engine": ("engine (device data + batched aug)", DeviceBatchLoader),
        "host": ("engine, host data (HostBatchLoader) + batched aug", HostBatchLoader),
    }
    for mode, (label, loader_class) in engines.items():
        if mode not in modes:
            continue
        g = torch.Generator(device=device).manual_seed(0)
        batches = batches_of(loader_class)

        def engine_step(batches: Iterator = batches, g=g) -> None:
            x = next(batches)[0]
            run_step(*aug.two_views(x, g))

        results[label] = _time(engine_step, args.steps, args.warmup, device, barrier)
    if "graph" in modes:
        replay = _graphed(lambda x: run_step(*aug.two_views(x)), batches_of(DeviceBatchLoader), device)
        results["engine step in one CUDA graph (aug + model + loss + SGD)"] = _time(
            replay, args.steps, args.warmup, device, barrier
        )
    if "pil" in modes:
        ds = _PILPairs(np.ascontiguousarray(images.permute(0, 2, 3, 1).numpy()))
        dl = torch.utils.data.DataLoader(
            ds,
            batch_size=bs,
            shuffle=True,
            drop_last=True,
            num_workers=args.workers,
            pin_memory=device.type == "cuda",
            persistent_workers=args.workers > 0,
            prefetch_factor=4 if args.workers > 0 else None,
        )
        pairs = _cycle(lambda: iter(dl))

        def pil_step() -> None:
            v0, v1 = next(pairs)
            run_step(v0.to(device, non_blocking=True), v1.to(device, non_blocking=True))

        results[f"PIL transforms, {args.workers} DataLoader workers"] = _time(
            pil_step, args.steps, args.warmup, device
        )
    if "model" in modes:
        g = torch.Generator(device=device).manual_seed(0)
        v0 = torch.randn(bs, 3, 32, 32, device=device, generator=g)
        v1 = torch.randn(bs, 3, 32, 32, device=device, generator=g)
        results["model only (pre-made tensors)"] = _time(
            lambda: run_step(v0, v1), args.steps, args.warmup, device
        )

    if args.json:
        print(json.dumps({"pairs_per_second": args.steps * bs / next(iter(results.values()))}))
        return
    name = device_name(device)
    compiled = f", torch.compile {args.compile}" if args.compile != "none" else ""
    print(
        f"\n{args.backbone}, batch {bs} pairs, {args.view_forward} views, {'bf16' if bf16 else 'fp32'}"
        f"{' + channels_last' if channels_last else ''}"
        f"{compiled}, {name}, torch {torch.__version__}, "
        f"{args.steps} timed steps\n"
    )
    print("| pipeline | pairs/s | ms/step |")
    print("| --- | ---: | ---: |")
    for label, seconds in results.items():
        print(f"| {label} | {args.steps * bs / seconds:,.0f} | {1000 * seconds / args.steps:,.1f} |")


if __name__ == "__main__":
    main()
