"""The machine's load around a timed benchmark: recorded at start and end, and a run marked contended
when other work competed with it, so BENCHMARKS.md quotes only quiet runs.

On a 2-core box a 1-minute load average above 1.5 means another runnable job most of the time,
and other jobs' OpenMP threads then slow ours 2–20× (README, "Sharing a machine"). Three checks, any
of which marks the run contended:

- the 1-minute load average at start above the threshold (0.75 per core): the run began on a busy machine;
- the load average at end, *less the benchmark's own threads* (its torch threads, which a quiet run
  adds to the load by itself), above the threshold;
- where ``/proc`` lists processes (Linux): other processes' runnable threads, sampled every
  ``sample_s`` during the run, above :data:`OTHERS_RUNNABLE_LIMIT` on average. The benchmark's own
  process tree (a peer it runs in a subprocess included) is not counted: this is the direct measure
  of competition that the load average only approximates.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

__all__ = ["OTHERS_RUNNABLE_LIMIT", "QUIET_LOAD_PER_CORE", "LoadWatch", "load_threshold", "runnable_threads"]

#: the quiet threshold per core: 0.75 → 1.5 on 2 cores
QUIET_LOAD_PER_CORE = 0.75
#: other processes' runnable threads, averaged over the run, above which it counts as contended (another
#: job holding half a core on average)
OTHERS_RUNNABLE_LIMIT = 0.5


def load_threshold(cores: int | None = None) -> float:
    """The 1-minute load average above which a run counts as contended (0.75 per core)."""
    return QUIET_LOAD_PER_CORE * (cores or os.cpu_count() or 1)


def _stat_fields(path: Path) -> list[str] | None:
    """The fields of a ``/proc/…/stat`` line after the command name (field 3, the state, first); None if it is gone."""
    try:
        text = path.read_text()
    except OSError:  # the process or thread ended between the listing and the read
        return None
    return text[text.rfind(")") + 2 :].split()


def runnable_threads(proc: Path = Path("/proc"), own_pid: int | None = None) -> tuple[int, int] | None:
    """(runnable threads of other processes, runnable threads of ``own_pid``'s process tree) now, from
    ``/proc/<pid>/task/<tid>/stat`` (state ``R``); None where ``proc`` lists no processes (not Linux)."""
    own_pid = os.getpid() if own_pid is None else own_pid
    parents: dict[int, int] = {}
    for entry in proc.glob("[0-9]*"):
        fields = _stat_fields(entry / "stat")
        if fields is not None:
            parents[int(entry.name)] = int(fields[1])
    if not parents:
        return None
    own = {own_pid}
    grew = True
    while grew:  # the process tree below own_pid (a peer benchmark run in a subprocess is ours)
        children = {pid for pid, parent in parents.items() if parent in own} - own
        own |= children
        grew = bool(children)
    counts = [0, 0]
    for pid in parents:
        states = [fields[0] for task in (proc / str(pid) / "task").glob("[0-9]*") if (fields := _stat_fields(task / "stat"))]
        counts[pid in own] += states.count("R")
    return counts[0], counts[1]


class LoadWatch:
    """Load averages at start (construction) and end (:meth:`finish`), other processes' runnable threads in
    between, and whether the run was contended (the module docstring's three checks)."""

    def __init__(self, threshold: float | None = None, settle_s: float = 0.0, poll_s: float = 5.0, sample_s: float = 0.5,
                 own_threads: int = 0):  # fmt: skip
        """``settle_s``: wait up to that long first for the 1-minute load to fall below the threshold (a run
        right after another one inherits its load for about a minute). ``own_threads``: the benchmark's own
        compute threads, taken off the end load. ``sample_s``: the period of the runnable-thread sampling (0: off)."""
        self.threshold = load_threshold() if threshold is None else threshold
        self.own_threads = own_threads
        started = time.monotonic()
        while time.monotonic() - started < settle_s and os.getloadavg()[0] > self.threshold:
            time.sleep(poll_s)
        self.settled_s = time.monotonic() - started
        self.at_start = os.getloadavg()
        self.at_end: tuple[float, float, float] | None = None
        self.others: list[int] = []  # other processes' runnable threads at each sample
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, args=(sample_s,), daemon=True) if sample_s > 0 else None
        if self._sampler is not None:
            self._sampler.start()

    def _sample(self, period_s: float) -> None:
        while not self._stop.is_set():
            counts = runnable_threads()
            if counts is None:
                return
            self.others.append(counts[0])
            self._stop.wait(period_s)

    def finish(self) -> dict:
        """The record for the JSON; prints a warning to stderr when the run was contended."""
        self.at_end = os.getloadavg()
        if self._sampler is not None:
            self._stop.set()
            self._sampler.join()
        others = sum(self.others) / len(self.others) if self.others else None
        reasons = []
        if self.at_start[0] > self.threshold:
            reasons.append(f"1-minute load {self.at_start[0]:.2f} at start")
        if self.at_end[0] - self.own_threads > self.threshold:
            reasons.append(f"1-minute load {self.at_end[0]:.2f} at end ({self.at_end[0] - self.own_threads:.2f} less own threads)")
        if reasons:
            reasons = [", ".join(reasons) + f", above {self.threshold:.2f}"]
        if others is not None and others > OTHERS_RUNNABLE_LIMIT:
            reasons.append(f"other processes had {others:.2f} runnable threads on average, above {OTHERS_RUNNABLE_LIMIT}")
        if reasons:
            sys.stderr.write(f"warning: the machine was busy ({'; '.join(reasons)}): these timings are marked contended "
                             "and are not quiet-machine figures\n")  # fmt: skip
        return {"load_average_at_start": list(self.at_start), "load_average_at_end": list(self.at_end),
                "load_threshold": self.threshold, "own_threads": self.own_threads, "others_runnable_mean": others,
                "others_runnable_samples": len(self.others), "contended": bool(reasons), "settled_s": self.settled_s}  # fmt: skip
