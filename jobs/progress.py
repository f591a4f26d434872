"""Progress for people: a bar with an ETA on a terminal, plain lines where the output is a log (CI, a Ray job).

The bars are Ray's own (`ray.experimental.tqdm_ray`, as Ray Data draws its): a bar made in a Ray
worker (a training epoch's) is drawn by the driver, which hides its bars while it prints the workers'
log lines, so neither garbles the other. Whether to draw them is decided once, by the command's
process (`decide`), and reaches Ray's workers through the environment (`ENV`; jobs.runtime forwards
BUSNET_* variables), since a worker's own output is never a terminal.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

ENV = "BUSNET_PROGRESS_BARS"  # "1": bars; "0": lines. Set by `decide`; a user's own setting wins.
LINE_EVERY_S = 5.0  # without bars, at most one progress line per this many seconds


def decide() -> bool:
    """Bars when stdout and stderr are both a terminal (a bar is drawn on stderr; a piped or logged
    stdout, `--json | jq` too, gets lines); BUSNET_PROGRESS_BARS=0 or 1 overrides."""
    os.environ.setdefault(ENV, "1" if sys.stdout.isatty() and sys.stderr.isatty() else "0")
    return bars()


def bars() -> bool:
    """Whether this process (the command's, or a Ray worker of it) draws bars."""
    return os.environ.get(ENV) == "1"


def bar(total: int | None, description: str, unit: str):
    """A `tqdm_ray.tqdm` bar (`update(n)`, `close()`) when `bars()`, else None."""
    if not bars():
        return None
    from ray.experimental import tqdm_ray

    return tqdm_ray.tqdm(total=total, desc=description, unit=unit)


class Meter:
    """Counts `what` done out of `total`: a bar on a terminal, else a line through `say` at most every
    LINE_EVERY_S and when the count reaches the total."""

    def __init__(self, total: int | None, what: str, say: Callable[[str], None]):
        self.total, self.what, self.say = total, what, say
        self.done, self.started, self.said = 0, time.monotonic(), time.monotonic()
        self.bar = bar(total, what, what.split()[0])

    def add(self, count: int) -> None:
        self.done += count
        if self.bar is not None:
            self.bar.update(count)
            return
        now = time.monotonic()
        if now - self.said >= LINE_EVERY_S or self.done == self.total:
            of = f"/{self.total}" if self.total is not None else ""
            rate = self.done / max(now - self.started, 1e-9)
            self.say(f"  {self.done}{of} {self.what} ({rate:.1f}/s)")
            self.said = now

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
