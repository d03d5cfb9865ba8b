"""Paired differences between two methods of a Pareto benchmark run, over their shared training seeds.

``python benchmarks/pareto_paired.py runs/pareto-v6/pareto.json parrot-t2i-noids-z ws2 [A B ...]`` prints, for each
pair (A, B), the mean ± standard error over seeds of A's cell minus B's cell (the same prompt draws and evaluation
noise) for the Table-1 average, the hypervolume of the per-prompt means and each reward's mean. An untrained B
(one cell, seed ``none``) is subtracted from every seed of A.

``--curves`` prints instead each reward's held-out mean, A − B, at every point of the two methods' held-out curves
(cells trained with ``--set "--evaluation.every N"``): where in training one method pulls ahead of or falls
behind the other on a reward.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.stats import sem

from parrot.evaluation import normalise
from parrot_base.cli import run_cli

__all__ = ["curve_point", "main", "paired_cells", "paired_curve_differences", "paired_differences", "read_run", "shared_iterations"]


def paired_differences(methods: dict, a: str, b: str) -> dict[str, tuple[float, float]]:
    """{figure: (mean, SE)} of A − B over the seeds both have (B's single cell when B is untrained)."""
    pairs = seed_pairs(methods, a, b)
    figures = {"table1_average": lambda c: c["average_normalised"], "hypervolume": lambda c: c["hypervolume"]}
    figures |= {name: (lambda c, n=name: c["means"][n]) for name in pairs[0][0]["means"]}
    out = {}
    for name, read in figures.items():
        difference = [read(x) - read(y) for x, y in pairs]
        out[name] = (float(np.mean(difference)), float(sem(difference)))
    return out


def paired_curve_differences(methods: dict, a: str, b: str, bounds: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, list]:
    """{"iterations": [n, ...], reward: [(mean, SE) of A − B at each n]} over the seeds both have, at the iterations
    every one of their held-out curves has; with the run's normalisation ``bounds`` (lo, hi) also "table1_average",
    the Table-1 average of each point's held-out means."""
    pairs = seed_pairs(methods, a, b)
    curves = [(x.get("heldout_curve") or {}, y.get("heldout_curve") or {}) for x, y in pairs]
    if not all(x and y for x, y in curves):
        raise SystemExit(f'{a} or {b} has cells without a held-out curve: train them with --set "--evaluation.every N"')
    shared = shared_iterations([c for pair in curves for c in pair])
    names = [k for k in curves[0][0] if k != "iterations"]
    points = [[(curve_point(x, n, names, bounds), curve_point(y, n, names, bounds)) for x, y in curves] for n in shared]
    out: dict[str, list] = {"iterations": shared}
    for name in points[0][0][0]:
        out[name] = []
        for at in points:
            difference = [x[name] - y[name] for x, y in at]
            out[name].append((float(np.mean(difference)), float(sem(difference))))
    return out


def shared_iterations(curves: list[dict]) -> list[int]:
    """The iterations every one of the held-out ``curves`` has, in order."""
    return sorted(set.intersection(*(set(c["iterations"]) for c in curves)))


def curve_point(curve: dict, n: int, names: list[str], bounds: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, float]:
    """A held-out curve's means of the rewards ``names`` at iteration ``n``; with the run's normalisation ``bounds``
    (lo, hi) also their "table1_average" (linear in the means: the Table-1 average of the images behind them)."""
    point = {name: curve[name][curve["iterations"].index(n)] for name in names}
    if bounds is not None:
        point["table1_average"] = float(normalise(np.array(list(point.values())), *bounds).mean())
    return point


def seed_pairs(methods: dict, a: str, b: str) -> list[tuple[dict, dict]]:
    """:func:`paired_cells`, refused in one line when a method is not in the run or the two share < 2 seeds."""
    for name in (a, b):
        if name not in methods:
            raise SystemExit(f"method {name!r} is not in this run; it has {sorted(methods)}")
    pairs = paired_cells(methods, a, b)
    if len(pairs) < 2:
        raise SystemExit(f"{a} and {b} share {len(pairs)} seed(s); a paired SE needs at least 2")
    return pairs


def paired_cells(methods: dict, a: str, b: str) -> list[tuple[dict, dict]]:
    """(A's cell, B's cell) for every training seed both have; B's one cell for each of A's when B is untrained."""
    cells_a, cells_b = methods[a]["seeds"], methods[b]["seeds"]
    return [
        (cells_a[s], cells_b["none"] if "none" in cells_b else cells_b[s]) for s in sorted(cells_a) if "none" in cells_b or s in cells_b
    ]


def read_run(path: Path) -> dict:
    """A ``pareto.json``; one line naming the file when it is not one (no ``methods`` in it)."""
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(run, dict) and isinstance(run.get("methods"), dict):
            return run
    except json.JSONDecodeError:
        pass
    raise SystemExit(f"{path} is not a pareto.json of benchmarks/pareto.py (no 'methods' in it)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pareto_json", type=Path, help="pareto.json of a benchmarks/pareto.py run")
    parser.add_argument("methods", nargs="+", help="pairs of method names: A B [A B ...] (A − B)")
    parser.add_argument("--curves", action="store_true", help="A − B at each point of the held-out curves instead")
    args = parser.parse_args(argv)
    if len(args.methods) % 2:
        raise SystemExit("give the methods in pairs: A B [A B ...]")
    run = read_run(args.pareto_json)
    methods = run["methods"]
    bounds = (np.asarray(run["normalisation"]["low"]), np.asarray(run["normalisation"]["high"])) if "normalisation" in run else None
    for a, b in zip(args.methods[::2], args.methods[1::2]):
        if args.curves:
            curves = paired_curve_differences(methods, a, b, bounds)
            for i, n in enumerate(curves.pop("iterations")):
                print(f"{a} − {b}, iteration {n}: " + "; ".join(f"{k} {v[i][0]:+.4f} ± {v[i][1]:.4f}" for k, v in curves.items()))
            continue
        figures = paired_differences(methods, a, b)
        print(f"{a} − {b}: " + "; ".join(f"{k} {m:+.4f} ± {s:.4f}" for k, (m, s) in figures.items()))


if __name__ == "__main__":
    run_cli(main)
