"""Soak: a long training run's resident memory (RSS) after warm-up must not keep growing.

Runs ``python -m parrot.train`` (default: ``--preset tiny`` for 200 iterations, evaluation off,
checkpoints every 10 iterations as the preset does) in a fresh process and samples that process's
RSS (``VmRSS`` of ``/proc/<pid>/status``) every ``--interval`` seconds, each sample tagged with the
number of iterations finished so far (lines of the run's ``curves.jsonl``). Growth is

    (median RSS over the last ``--window`` iterations − median RSS over the ``--window`` iterations
     after warm-up) ÷ the latter,

warm-up being the first ``--warmup`` iterations (allocator pools, lazily built kernels, the first
checkpoint). Goal: growth < 5 %. Linux only (``/proc``).

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/soak.py --json runs/soak.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from parrot_base.cli import UsageError, last_line, run_cli


def rss_mib(pid: int) -> float | None:
    """Resident set size of process ``pid`` in MiB, or None once it has gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
    except (FileNotFoundError, ProcessLookupError):
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0  # kB → MiB
    return None


def finished_iterations(run_dir: Path) -> int:
    """Iterations the run has logged so far (lines of ``curves.jsonl``; 0 before the first)."""
    path = run_dir / "curves.jsonl"
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip()) if path.exists() else 0


def growth(samples: list[tuple[int, float]], warmup: int, window: int, iterations: int) -> dict[str, float]:
    """RSS medians of the window after warm-up and of the last window, and the relative growth between them."""
    early = [rss for it, rss in samples if warmup <= it < warmup + window]
    late = [rss for it, rss in samples if it >= iterations - window]
    if not early or not late:
        raise UsageError(f"no RSS sample in a window (warm-up {warmup}, window {window}, {iterations} iterations): "
                         "lower --interval or widen --window")  # fmt: skip
    base, end = statistics.median(early), statistics.median(late)
    return {"rss_after_warmup_mib": base, "rss_end_mib": end, "growth": (end - base) / base,
            "rss_peak_mib": max(rss for _, rss in samples)}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20, help="iterations before the first window")
    parser.add_argument("--window", type=int, default=20, help="iterations in each window")
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between RSS samples")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.warmup + 2 * args.window > args.iterations:
        raise UsageError(f"--iterations {args.iterations} is too short for --warmup {args.warmup} and two windows of {args.window}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out, tempfile.TemporaryFile("w+", encoding="utf-8") as errors:
        command = [sys.executable, "-m", "parrot.train", "--preset", args.preset, "--iterations", str(args.iterations),
                   "--output_dir", out, "--evaluation.enabled", "false"]  # fmt: skip
        # stderr to a file, not a pipe: the progress bar of a long run would fill a pipe and block the run
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors, text=True)
        samples: list[tuple[int, float]] = []
        while process.poll() is None:
            rss = rss_mib(process.pid)
            if rss is not None:
                samples.append((finished_iterations(Path(out)), rss))
            time.sleep(args.interval)
        if process.returncode != 0:
            errors.seek(0)
            raise UsageError(f"parrot.train stopped ({process.returncode}): {last_line(errors.read())}")
    result = growth(samples, args.warmup, args.window, args.iterations)
    result |= {"iterations": args.iterations, "preset": args.preset, "samples": len(samples),
               "wall_s": time.perf_counter() - started}  # fmt: skip
    print(f"{args.preset}, {args.iterations} iterations, {len(samples)} samples: RSS {result['rss_after_warmup_mib']:.0f} MiB "
          f"after warm-up → {result['rss_end_mib']:.0f} MiB at the end (peak {result['rss_peak_mib']:.0f}); "
          f"growth {100 * result['growth']:+.2f} % (goal < 5 %); {result['wall_s']:.0f} s")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result | {"trace": samples}, indent=1), encoding="utf-8")


if __name__ == "__main__":
    run_cli(main)
