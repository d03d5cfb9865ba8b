"""Paired differences between rows of ``python -m parrot.evaluate`` outputs, over training seeds.

``parrot.evaluate`` draws image j of every prompt from seed ``seed + j`` for every method, so two rows of the
same prompts, seed and ``--images_per_prompt`` pair image by image, also across two ``--out`` folders (e.g. the
same trained runs under two guidances). Each argument of ``--a`` and ``--b`` is ``OUT:METHOD``; the i-th A is
paired with the i-th B (one B is paired with every A: an untrained reference). For each pair the script prints
each reward's Δ = mean(A − B) ± its paired standard error over prompts (each prompt's mean over its images), and
the Table-1 average's Δ (each reward min–max normalised over all images of every listed row, as
:mod:`parrot.table1` does over a table's methods); the last row is the mean ± standard error of the pairs' Δ
(one pair per training seed: the seed-to-seed spread, the figure to quote).

    python benchmarks/evaluate_paired.py --a runs/ev/pcg:s0 runs/ev/pcg:s1 runs/ev/pcg:s2 \\
        --b runs/ev/cfg:s0 runs/ev/cfg:s1 runs/ev/cfg:s2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.stats import sem

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the repo's packages importable
    sys.path.insert(0, str(REPO))

from parrot.evaluate import method_samples, read_results  # noqa: E402
from parrot.evaluation import EvaluationSamples, minmax_bounds, paired_deltas, paired_table1_delta, per_prompt_means  # noqa: E402
from parrot_base.cli import UsageError, run_cli  # noqa: E402

__all__ = ["load_row", "pair_rows", "paired_table", "main"]

AVERAGE = "Table-1 avg"


def load_row(spec: str) -> EvaluationSamples:
    """The images of ``OUT:METHOD`` (every prompt that method has in ``OUT/results.jsonl``, in file order)."""
    out, sep, method = spec.rpartition(":")
    if not sep or not out or not method:
        raise UsageError(f"{spec!r}: give OUT:METHOD (a parrot.evaluate --out folder and one of its methods)")
    done = read_results(Path(out))
    if not done:
        raise UsageError(f"{out}: no results.jsonl of parrot.evaluate there")
    prompts = [prompt for (name, prompt) in done if name == method]
    if not prompts:
        methods = sorted({name for name, _ in done})
        raise UsageError(f"{spec}: no method {method!r} in {out} (it has {', '.join(methods)})")
    names = list(next(iter(done.values()))["rewards"])
    return method_samples(done, method, prompts, names)


def pair_rows(a: list[str], b: list[str]) -> list[tuple[str, str]]:
    """The (A, B) pairs: element-wise, or the one B with every A."""
    if len(b) == 1:
        return [(spec, b[0]) for spec in a]
    if len(a) != len(b):
        raise UsageError(f"--a has {len(a)} rows and --b {len(b)}: give as many B as A, or one B")
    return list(zip(a, b))


def paired_table(pairs: list[tuple[str, str]]) -> str:
    """The markdown table: one row per pair and the mean ± SE over pairs."""
    rows = {spec: load_row(spec) for pair in pairs for spec in pair}
    lo, hi = minmax_bounds([np.asarray(s.scores, dtype=float) for s in rows.values()])
    names = list(next(iter(rows.values())).reward_names)
    header = ["A − B", *names, AVERAGE]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    deltas = []
    for a, b in pairs:
        try:
            per_reward = paired_deltas(rows[b], rows[a], "prompt")
        except ValueError as err:
            raise UsageError(f"{a} against {b}: {err}") from None
        average = paired_table1_delta(per_prompt_means(rows[b])[1], per_prompt_means(rows[a])[1], lo, hi)
        figures = [(per_reward[n].delta, per_reward[n].paired_se) for n in names] + [average]
        deltas.append([f[0] for f in figures])
        lines.append(f"| {a} − {b} | " + " | ".join(f"{m:+.4f} ± {s:.4f}" for m, s in figures) + " |")
    if len(deltas) > 1:
        d = np.asarray(deltas)
        cells = [f"**{m:+.4f} ± {s:.4f}**" for m, s in zip(d.mean(0), sem(d, axis=0))]
        lines.append(f"| mean ± SE over {len(deltas)} pairs | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", nargs="+", required=True, help="OUT:METHOD rows (one per training seed)")
    parser.add_argument("--b", nargs="+", required=True, help="OUT:METHOD rows paired with --a element-wise, or one for all")
    args = parser.parse_args(argv)
    print(paired_table(pair_rows(args.a, args.b)))
    print("\nΔ ± paired SE over prompts (each prompt's mean over its images); Table-1 average: min–max over all listed rows' images")


if __name__ == "__main__":
    run_cli(main)
