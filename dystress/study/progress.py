"""What the study prints while it runs: a line per finished epoch of the run in progress, and durations."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from dystress.io import read_jsonl

__all__ = ["EpochWatcher", "format_duration"]


class EpochWatcher(threading.Thread):
    """Prints a line per new record of ``records.jsonl`` while a run executes (the in-run progress).

    Polls the file every ``interval`` seconds until :attr:`stop` is set; records already there when
    it starts (a resumed run) are not printed again.
    """

    def __init__(self, path: Path, prefix: str, epochs: int, stream: Any, interval: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.path, self.prefix, self.epochs, self.stream = path, prefix, epochs, stream
        self.interval = interval
        self.stop = threading.Event()
        self.seen = len(read_jsonl(path))

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            records = read_jsonl(self.path)
            for r in records[self.seen :]:
                knn = r.get("monitor_knn_top1")
                extra = f", monitor kNN top-1 {knn:.1f}%" if isinstance(knn, (int, float)) else ""
                print(
                    f"{self.prefix}   epoch {r.get('epoch', '?')}/{self.epochs}{extra}",
                    file=self.stream,
                    flush=True,
                )
            self.seen = max(self.seen, len(records))


def format_duration(seconds: float) -> str:
    """``75`` -> ``1m15s``, ``42`` -> ``42s``."""
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
