"""The held-out before/after table of several training runs (one per seed), with paired errors.

Reads each run's ``evaluation.json`` (written by ``python -m parrot.train``: per-image rewards of
the held-out prompts × evaluation seeds, before = LoRA off and the SFT expander, after = trained,
from the same noise) and prints one markdown row per reward: the before mean, each run's
Δ = mean(after − before) ± the paired standard error of the per-image differences
(``scipy.stats.sem``, ddof 1), and the mean Δ over runs with its standard deviation.

    python benchmarks/training_seeds.py runs/headline3-seed0 runs/headline3-seed1 runs/headline3-seed2
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import sem

__all__ = ["SeedDelta", "paired_deltas", "seeds_table", "main"]


@dataclass(frozen=True)
class SeedDelta:
    """One run's change of one reward on the held-out images."""

    before: float  # mean over images before training
    delta: float  # mean over images of after − before
    paired_se: float  # standard error of that mean over the per-image differences


def paired_deltas(evaluation: dict) -> dict[str, SeedDelta]:
    """Per reward, the run's before mean and its paired Δ ± SE (refuses unpaired before/after images)."""
    before, after = evaluation["images"]["before"], evaluation["images"]["after"]
    if before["prompts"] != after["prompts"] or before["seeds"] != after["seeds"]:
        raise ValueError("before and after hold different held-out prompts or seeds: their images cannot be paired")
    b, a = np.asarray(before["scores"], dtype=float), np.asarray(after["scores"], dtype=float)
    if len(b) < 2:
        raise ValueError(f"{len(b)} held-out image(s): a paired standard error needs at least 2")
    d = a - b
    return {
        name: SeedDelta(float(b[:, k].mean()), float(d[:, k].mean()), float(sem(d[:, k])))
        for k, name in enumerate(before["reward_names"])
    }


def seeds_table(runs: dict[str, dict[str, SeedDelta]]) -> str:
    """Markdown: reward | before | Δ per run ± paired SE | mean Δ (std over runs)."""
    labels = list(runs)
    rewards = list(next(iter(runs.values())))
    head = ["reward", "before", *(f"Δ {label}" for label in labels), "mean Δ (std over runs)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in rewards:
        cells = [runs[label][name] for label in labels]
        deltas = np.array([c.delta for c in cells])
        spread = f"{deltas.std(ddof=1):.3f}" if len(deltas) > 1 else "–"
        row = [name, f"{cells[0].before:.4f}", *(f"{c.delta:+.3f} ± {c.paired_se:.3f}" for c in cells),
               f"**{deltas.mean():+.3f}** ({spread})"]  # fmt: skip
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="training output directories holding evaluation.json")
    args = parser.parse_args(argv)
    runs = {}
    for run in args.runs:
        path = run / "evaluation.json"
        if not path.is_file():
            raise SystemExit(f"{path}: not found; run python -m parrot.train with --output_dir {run} first")
        runs[run.name] = paired_deltas(json.loads(path.read_text()))
    table = seeds_table(runs)
    sys.stdout.write(table + "\n")
    return table


if __name__ == "__main__":
    main()
