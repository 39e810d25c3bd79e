"""Image-folder decoding, caching and host-resident batching, on synthetic JPEGs.

    python benchmarks/imagefolder_bench.py                        # 2000 JPEGs of 500x375 -> 224 px, CPU
    python benchmarks/imagefolder_bench.py --n 20000 --workers 16 --device cuda --compute-ms 50

Writes `--n` JPEGs (smooth random fields plus noise, quality 90, the size of a typical ImageNet image)
into `--classes` class folders of a temporary root, then times:

- ``scan``: listing and stat-ing the files (the cache key), paid by every load;
- ``decode serial`` / ``decode N workers``: `load_image_folder(cache=False)` in-process / in a pool;
- ``cache build``: the first cached load (parallel decode into the .npy, fsync, rename);
- ``cache hit``: a later load (scan + memory-map, no pixel read) and ``cache hit + copy into RAM``: plus
  reading every byte once (from the page cache here: the file was just written);
- one epoch of ``DeviceBatchLoader`` (set resident on `--device`) and of ``HostBatchLoader`` (set in
  the memory-mapped cache; prefetch on and off), each batch followed by `--compute-ms` of simulated
  device work (a sleep), so the prefetch overlap shows; the device is synchronised at the end.

Figures are printed as a Markdown table (seconds and images/s).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dystress.data.imagefolder import load_image_folder, scan_image_folder  # noqa: E402
from dystress.data.loader import DeviceBatchLoader, HostBatchLoader  # noqa: E402


def write_jpegs(root: Path, n: int, classes: int, width: int, height: int, seed: int = 0) -> None:
    """`n` JPEGs of width x height spread over `classes` folders of root/train."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        coarse = rng.integers(0, 256, (height // 25 + 2, width // 25 + 2, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))
        noisy = np.clip(smooth.astype(np.int16) + rng.integers(-12, 13, smooth.shape), 0, 255).astype(
            np.uint8
        )
        path = root / "train" / f"class_{i % classes:03d}" / f"img_{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(noisy).save(path, quality=90)


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def epoch_seconds(loader: DeviceBatchLoader | HostBatchLoader, epochs: int, compute_ms: float) -> float:
    """Mean seconds of one epoch (after one warm-up epoch), each batch followed by `compute_ms` of work."""
    device = loader.device

    def run(epoch: int) -> None:
        loader.set_epoch(epoch)
        for images, _labels, _idx in loader:
            if compute_ms > 0:
                time.sleep(compute_ms / 1000)
            del images
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    run(0)
    return sum(timed(lambda e=e: run(e))[0] for e in range(1, epochs + 1)) / epochs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=2000, help="number of JPEGs")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=2, help="decoding processes of the parallel runs")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=2, help="timed loader epochs (after one warm-up)")
    parser.add_argument("--compute-ms", type=float, default=0.0, help="simulated work per batch")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dir", default=None, help="folder for the images (default: a temporary one)")
    args = parser.parse_args()
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp) / "data"
        gen_s, _ = timed(lambda: write_jpegs(root, args.n, args.classes, args.width, args.height))
        mb = sum(p.stat().st_size for p in root.rglob("*.jpg")) / 1e6
        print(f"wrote {args.n} JPEGs of {args.width}x{args.height} ({mb:.0f} MB) in {gen_s:.1f} s")
        size = args.image_size
        rows: list[tuple[str, float, int]] = []
        t, _ = timed(lambda: scan_image_folder(root, True))
        rows.append(("scan (list + stat)", t, args.n))
        t, serial = timed(lambda: load_image_folder(root, True, size, workers=0, cache=False))
        rows.append(("decode serial (cache=False)", t, args.n))
        t, _ = timed(lambda: load_image_folder(root, True, size, workers=args.workers, cache=False))
        rows.append((f"decode {args.workers} workers (cache=False)", t, args.n))
        cache_dir = Path(tmp) / "cache"
        t, _ = timed(lambda: load_image_folder(root, True, size, workers=args.workers, cache_dir=cache_dir))
        rows.append((f"cache build ({args.workers} workers)", t, args.n))
        t, cached = timed(lambda: load_image_folder(root, True, size, cache_dir=cache_dir))
        rows.append(("cache hit (scan + map)", t, args.n))
        assert torch.equal(cached.images, serial.images), "cached images differ from the serial decode"
        t, _ = timed(lambda: load_image_folder(root, True, size, cache_dir=cache_dir).images.clone())
        rows.append(("cache hit + copy into RAM", t, args.n))

        batch = min(args.batch_size, args.n)
        common = {"batch_size": batch, "shuffle": True, "drop_last": True, "seed": 0, "device": device}
        loaders = [
            ("epoch DeviceBatchLoader", DeviceBatchLoader(serial.images, serial.labels, **common)),
            ("epoch HostBatchLoader (mmap cache)", HostBatchLoader(cached.images, cached.labels, **common)),
            (
                "epoch HostBatchLoader, no prefetch",
                HostBatchLoader(cached.images, cached.labels, prefetch=False, **common),
            ),
        ]
        reference = [tuple(t.cpu() for t in b) for b in loaders[0][1]]
        for name, loader in loaders[1:]:
            for u, v in zip(reference, loader, strict=True):
                assert all(torch.equal(a, b.cpu()) for a, b in zip(u, v, strict=True)), f"{name} differs"
        for name, loader in loaders:
            images_per_epoch = len(loader) * batch
            rows.append((name, epoch_seconds(loader, args.epochs, args.compute_ms), images_per_epoch))

    print(
        f"\n{args.n} images -> {size} px, batch {batch}, device {device}, "
        f"compute {args.compute_ms} ms/batch, {os.cpu_count()} CPUs\n"
    )
    print("| step | seconds | images/s |\n| --- | ---: | ---: |")
    for name, seconds, count in rows:
        print(f"| {name} | {seconds:.3f} | {count / seconds:,.0f} |")


if __name__ == "__main__":
    main()
