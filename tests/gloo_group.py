"""Real two-process gloo groups on the CPU for the distributed tests (used inside ``mp.spawn`` workers)."""

from __future__ import annotations

import contextlib
import datetime
import socket
from collections.abc import Iterator

import torch.distributed as dist


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for a spawned group's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def gloo_group(rank: int, world_size: int, port: int) -> Iterator[None]:
    """This process as ``rank`` of a gloo group of ``world_size`` at 127.0.0.1:``port`` (a hang fails
    after 60 s instead of waiting); the group is destroyed on exit."""
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        yield
    finally:
        dist.destroy_process_group()
