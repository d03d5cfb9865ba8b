"""Sharing the cores: the demo's iteration time alone and beside one competing CPU-bound process.

Runs ``python -m parrot.train`` (the default preset, the ``make demo`` job) for a few iterations
without evaluation, in fresh processes, and reads each iteration's wall seconds from the run's
``curves.jsonl`` (``time/iteration_s``; the first iteration, which warms up, is dropped). Cases:

- ``alone``        the demo with the thread count it picks itself, nothing else running;
- ``alone-1``      the demo alone with ``OMP_NUM_THREADS=1``: what one core gives it, i.e. its
                   **fair share** when one other CPU-bound process wants the other core;
- ``shared``       the demo with its own thread count while one competitor spins on the CPU
                   (``--competitor python``: a pure-Python busy loop, one thread; ``torch``: a
                   matrix-product loop with torch's default threads, like a second training job).

The figure is shared ÷ alone-1 (goal ≤ 3: no more than 3× slower than its fair share). Extra
environment for the demo (e.g. ``OMP_WAIT_POLICY=ACTIVE`` to see the spinning default of the
OpenMP runtime) is given with ``--env KEY=VALUE``. The machine must be otherwise quiet: the
load average at start and end is printed and kept in the JSON.

    OMP_NUM_THREADS= HF_HUB_OFFLINE=1 python benchmarks/sharing_cores.py --json runs/sharing.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from parrot.run_dir import open_run, read_curves
from parrot_base.cli import UsageError, last_line, run_cli

COMPETITORS = {
    "python": "while True: pass",
    "torch": "import torch\na = torch.randn(512, 512)\nwhile True: a = torch.tanh(a @ a)",
}


def iteration_seconds(run_dir: Path) -> list[float]:
    """Wall seconds of each iteration of a run, in order, from its ``curves.jsonl``."""
    return read_curves(open_run(run_dir))["time/iteration_s"][1].tolist()


def demo_iteration_seconds(iterations: int, env: dict[str, str], extra: list[str]) -> list[float]:
    """Run the demo job for ``iterations`` iterations in a fresh process; its per-iteration seconds after the first."""
    with tempfile.TemporaryDirectory() as out:
        command = [
            sys.executable, "-m", "parrot.train", "--iterations", str(iterations), "--output_dir", out,
            "--evaluation.enabled", "false", "--checkpoint_every", "0", "--logging.images_every", "0", *extra,
        ]  # fmt: skip
        done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            raise UsageError(f"parrot.train stopped ({done.returncode}): {last_line(done.stderr)}")
        return iteration_seconds(Path(out))[1:]


def measure(case: str, args: argparse.Namespace) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env.update(dict(item.split("=", 1) for item in args.env))
    if case == "alone-1":
        env["OMP_NUM_THREADS"] = "1"
    competitor = None
    if case == "shared":
        competitor = subprocess.Popen([sys.executable, "-c", COMPETITORS[args.competitor]], env=os.environ.copy())
    try:
        seconds = demo_iteration_seconds(args.iterations, env, args.train_args)
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()
    return {"case": case, "seconds": seconds, "median_s": statistics.median(seconds)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=5, help="iterations per run (the first is dropped as warm-up)")
    parser.add_argument("--competitor", choices=sorted(COMPETITORS), default="torch")
    parser.add_argument("--env", nargs="*", default=[], metavar="KEY=VALUE", help="extra environment for the demo")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("train_args", nargs="*", help="extra parrot.train flags (after --)")
    args = parser.parse_args(argv)
    if args.iterations < 2:
        parser.error("--iterations must be at least 2 (the first is a warm-up)")
    load_start = os.getloadavg()[0]
    results = {case: measure(case, args) for case in ("alone", "alone-1", "shared")}
    load_end = os.getloadavg()[0]
    ratio = results["shared"]["median_s"] / results["alone-1"]["median_s"]
    for r in results.values():
        print(f"{r['case']:8s} median {r['median_s']:.2f} s/iteration  ({', '.join(f'{s:.2f}' for s in r['seconds'])})")
    print(f"shared ÷ fair share (alone-1) = {ratio:.2f}  (goal ≤ 3); competitor {args.competitor}; "
          f"load average {load_start:.2f} at start, {load_end:.2f} at end; env {' '.join(args.env) or '-'}")  # fmt: skip
    if args.json:
        record = {"cases": results, "ratio_shared_over_fair": ratio, "competitor": args.competitor, "env": args.env,
                  "load_start": load_start, "load_end": load_end, "cpus": os.cpu_count()}  # fmt: skip
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2), encoding="utf-8")


if __name__ == "__main__":
    run_cli(main)
