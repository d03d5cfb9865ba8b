"""The machine's load around a timed benchmark: recorded at start and end, and a run marked contended
when either exceeds a threshold, so BENCHMARKS.md quotes only quiet runs.

On a 2-core box a 1-minute load average above 1.5 means another runnable job most of the time,
and other jobs' OpenMP threads then slow ours 2–20× (README, "Sharing a machine").
"""

from __future__ import annotations

import os
import sys
import time

__all__ = ["QUIET_LOAD_PER_CORE", "LoadWatch", "load_threshold"]

#: the quiet threshold per core: 0.75 → 1.5 on 2 cores
QUIET_LOAD_PER_CORE = 0.75


def load_threshold(cores: int | None = None) -> float:
    """The 1-minute load average above which a run counts as contended (0.75 per core)."""
    return QUIET_LOAD_PER_CORE * (cores or os.cpu_count() or 1)


class LoadWatch:
    """Load averages at start (construction) and end (:meth:`finish`), and whether the run was contended."""

    def __init__(self, threshold: float | None = None, settle_s: float = 0.0, poll_s: float = 5.0):
        """``settle_s``: wait up to that long first for the 1-minute load to fall below the threshold (a run
        right after another one inherits its load for about a minute)."""
        self.threshold = load_threshold() if threshold is None else threshold
        started = time.monotonic()
        while time.monotonic() - started < settle_s and os.getloadavg()[0] > self.threshold:
            time.sleep(poll_s)
        self.settled_s = time.monotonic() - started
        self.at_start = os.getloadavg()
        self.at_end: tuple[float, float, float] | None = None

    def finish(self) -> dict:
        """The record for the JSON; prints a warning to stderr when the run was contended."""
        self.at_end = os.getloadavg()
        contended = max(self.at_start[0], self.at_end[0]) > self.threshold
        if contended:
            sys.stderr.write(
                f"warning: the machine was busy (1-minute load {self.at_start[0]:.2f} at start, {self.at_end[0]:.2f} at end, "
                f"above {self.threshold:.2f}): these timings are marked contended and are not quiet-machine figures\n"
            )
        return {"load_average_at_start": list(self.at_start), "load_average_at_end": list(self.at_end),
                "load_threshold": self.threshold, "contended": contended, "settled_s": self.settled_s}  # fmt: skip
