"""HostBatchLoader on CUDA under a busy GPU: its batches must equal DeviceBatchLoader's (exit 1 if not).

    python benchmarks/host_loader_check.py            # on a CUDA machine (part of gpu_check.sh)

Each yielded batch is kept on the GPU while a long kernel (``torch.cuda._sleep``) is queued before it is
used, so the non-blocking host-to-device copies lag far behind the prefetch thread: a missing wait on a
staging buffer's copy would let the thread overwrite the buffer while its copy is still pending, and
the batches would differ. On the CPU the check runs without the sleep (a smoke test of the script).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dystress.data.loader import DeviceBatchLoader, HostBatchLoader  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=4096, help="images (uint8 3x64x64)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--sleep-cycles", type=int, default=50_000_000, help="GPU cycles queued per batch")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.n, 3, 64, 64), dtype=torch.uint8, generator=g)
    labels = torch.arange(args.n)
    host = HostBatchLoader(images, labels, args.batch_size, seed=1, device=device)
    reference = DeviceBatchLoader(images, labels, args.batch_size, seed=1, device=device)
    mismatches = 0
    for epoch in range(args.epochs):
        host.set_epoch(epoch)
        reference.set_epoch(epoch)
        kept = []
        for x, y, idx in host:
            if device.type == "cuda":
                torch.cuda._sleep(args.sleep_cycles)  # keep the stream busy: copies queue up behind it
            kept.append((x, y, idx))
        for (x, y, idx), (rx, ry, ridx) in zip(kept, reference, strict=True):
            mismatches += int(not (torch.equal(x, rx) and torch.equal(y, ry) and torch.equal(idx, ridx)))
    print(f"{device}: {mismatches} mismatched batches of {args.epochs * len(host)}")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
