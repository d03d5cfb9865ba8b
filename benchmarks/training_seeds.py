"""The held-out before/after table of several training runs (one per seed), with paired errors.

Reads each run's ``evaluation.json`` (written by ``python -m parrot.train``: per-image rewards of
the held-out prompts × evaluation seeds, before = LoRA off and the SFT expander, after = trained,
from the same noise) and prints one markdown row per reward: the before mean, each run's paired
Δ = mean(after − before) ± its standard error, and the mean Δ over runs with its standard
deviation. The pairing unit is a held-out prompt by default (each prompt's mean over its seeds,
then ``scipy.stats.sem`` of the P per-prompt differences, ddof 1) or an image (``--per image``);
both are :func:`parrot.evaluation.paired_deltas`.

    python benchmarks/training_seeds.py runs/headline3-seed0 runs/headline3-seed1 runs/headline3-seed2
    python benchmarks/training_seeds.py --against plain_base --per image runs/v4-seed{0,1,2}
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from parrot import evaluation as shared
from parrot.evaluation import EvaluationSamples, PairedDelta
from parrot.run_dir import RunDir, open_run, read_evaluation_json

__all__ = ["SeedDelta", "paired_deltas", "seeds_table", "main"]

#: one run's change of one reward on the held-out set (before, after, delta, paired_se, count)
SeedDelta = PairedDelta


def paired_deltas(evaluation: dict, per: str = "prompt", against: str = "before") -> dict[str, SeedDelta]:
    """Per reward, the run's ``against`` mean ("before" = the untrained start, "plain_base" = the base
    model with CFG on c) and the trained run's paired Δ ± SE (refuses unpaired images and fewer than 2 units)."""
    if against not in evaluation["images"]:
        raise ValueError(f"evaluation.json has no {against!r} images (an older run?); use --against before")
    before = EvaluationSamples.from_json(evaluation["images"][against])
    after = EvaluationSamples.from_json(evaluation["images"]["after"])
    deltas = shared.paired_deltas(before, after, per)
    count = next(iter(deltas.values())).count
    if count < 2:
        raise ValueError(f"{count} held-out {per}(s): a paired standard error needs at least 2")
    return deltas


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
    parser.add_argument("--per", choices=("prompt", "image"), default="prompt", help="pairing unit (default: %(default)s)")
    parser.add_argument(
        "--against",
        choices=("before", "plain_base"),
        default="before",
        help="compare the trained run with its untrained start or with the plain base model",
    )
    args = parser.parse_args(argv)
    runs = {}
    for run in args.runs:
        evaluation = read_evaluation_json(open_run(run)) if run.is_dir() else None
        if evaluation is None:
            raise SystemExit(f"{RunDir(run).evaluation}: not found; run python -m parrot.train with --output_dir {run} first")
        runs[run.name] = paired_deltas(evaluation, args.per, args.against)
    table = seeds_table(runs)
    sys.stdout.write(table + "\n")
    return table


if __name__ == "__main__":
    main()
