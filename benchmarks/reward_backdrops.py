"""Does a world's learned reward read the backdrop as its rule does? The rule's and the head's change, per colour.

The world's aesthetic head and preference scorer are fitted to the rules a(x) and u (:mod:`shapes.heads`) on
CLIP features of the world's images; the rules reward the subject's luma contrast with its backdrop, an interaction
of two attributes the features may not carry. This script draws matched records (:func:`matched_records`: the same
shape, quality, light and specks on every backdrop; a large, centred subject, no companion) for every subject colour,
renders them with perfect rendering (:func:`shapes.rendering.render`), and prints per colour the change from the
backdrop ``--from`` to each of ``--to`` of the rule (its mean: the records differ only in the backdrop) and of the
learned reward (mean ± paired SE over the records, ``scipy.stats.sem``), for aesthetic (a(x) and its head) and
preference (u with adherence 1 and its scorer, each image scored against "a {colour} {shape}"). Where the two
disagree in sign, a policy following the learned reward moves against the rule there (BENCHMARKS.md, "A curation
habit").

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/reward_backdrops.py --json runs/reward_backdrops.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import stats

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the repo's packages importable
    sys.path.insert(0, str(REPO))

from parrot.models import built_world  # noqa: E402
from parrot_base.cli import UsageError, run_cli  # noqa: E402
from shapes.attributes import BACKGROUNDS, COLOURS, SHAPES, Attributes  # noqa: E402
from shapes.card import load_world_rewards  # noqa: E402
from shapes.heads import aesthetic_rating, own_caption_utility  # noqa: E402
from shapes.rendering import render  # noqa: E402

__all__ = ["matched_records", "rule_scores", "backdrop_changes", "main"]

#: (reward name in the world, its rule on a record) — preference's rule under the record's own caption (adherence 1)
RULES = {"laion_aesthetic": aesthetic_rating, "preference": own_caption_utility}


def matched_records(colour: str, backdrops: list[str], per_shape: int, seed: int) -> dict[str, list[Attributes]]:
    """{backdrop: records}: ``per_shape`` draws per shape of quality q ~ U(0.3, 0.9) (every factor q), light tint
    ~ U(−0.3, 0.3) and speck seed, the same draws on every backdrop; a large centred ``colour`` subject, no companion."""
    rng = np.random.default_rng(seed)
    draws = [
        (s, float(rng.uniform(0.3, 0.9)), float(rng.uniform(-0.3, 0.3)), int(rng.integers(2**30))) for s in SHAPES for _ in range(per_shape)
    ]

    def record(shape: str, backdrop: str, q: float, tint: float, specks: int) -> Attributes:
        factors = {"sharpness": q, "cleanliness": q, "vividness": q, "regularity": q}
        return Attributes(colour, shape, "large", backdrop, quality=q, tint=tint, detail_seed=specks, **factors)

    return {backdrop: [record(s, backdrop, q, t, d) for s, q, t, d in draws] for backdrop in backdrops}


def rule_scores(records: list[Attributes]) -> dict[str, np.ndarray]:
    """Each rule of :data:`RULES` on each record."""
    return {name: np.array([rule(a) for a in records]) for name, rule in RULES.items()}


@torch.no_grad()
def learned_scores(rewards: dict, records: list[Attributes]) -> dict[str, np.ndarray]:
    """Each learned reward of :data:`RULES` on the records' renders, against "a {colour} {shape}"."""
    images = torch.from_numpy(np.stack([render(a) for a in records])).permute(0, 3, 1, 2).float() / 255.0
    prompts = [f"a {a.colour} {a.shape}" for a in records]
    return {name: rewards[name](images, prompts).numpy().astype(np.float64) for name in RULES}


def backdrop_changes(before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> dict[str, tuple[float, float]]:
    """{reward: (mean, paired SE) of after − before} over matched records."""
    return {name: (float((after[name] - before[name]).mean()), float(stats.sem(after[name] - before[name]))) for name in before}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", default="", help="a built shapes world ('' = the committed shapes/world)")
    parser.add_argument("--from", dest="source", default="white", help="the backdrop changed from (default: %(default)s)")
    parser.add_argument("--to", nargs="+", default=["black", "gray"], help="the backdrops changed to (default: %(default)s)")
    parser.add_argument("--per_shape", type=int, default=8, help="matched records per shape and colour (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws (default: %(default)s)")
    parser.add_argument("--json", default="", help="also write the figures here")
    args = parser.parse_args(argv)
    unknown = [b for b in [args.source, *args.to] if b not in BACKGROUNDS]
    if unknown:
        raise UsageError(f"unknown backdrop(s) {unknown}; choose from {', '.join(BACKGROUNDS)}")
    if args.per_shape < 2:
        raise UsageError(f"--per_shape {args.per_shape}: at least 2 records per shape give a paired SE")
    rewards = load_world_rewards(built_world(args.world, ["clip", "aesthetic", "preference", "sentiment"]))
    figures: dict[str, dict] = {}
    print(f"| subject | {args.source} → | rule a(x) | aesthetic head | rule u | preference scorer |")
    print("|---|---|---:|---:|---:|---:|")
    for colour in COLOURS:
        backdrops = [b for b in [args.source, *args.to] if b != colour]
        if args.source not in backdrops:
            continue
        records = matched_records(colour, backdrops, args.per_shape, args.seed)
        rules = {b: rule_scores(r) for b, r in records.items()}
        learned = {b: learned_scores(rewards, r) for b, r in records.items()}
        for target in backdrops[1:]:
            rule = backdrop_changes(rules[args.source], rules[target])
            head = backdrop_changes(learned[args.source], learned[target])
            figures[f"{colour}:{target}"] = {"rule": rule, "learned": head}
            cells = [f"{rule[n][0]:+.2f}" + " | " + f"{head[n][0]:+.2f} ± {head[n][1]:.2f}" for n in RULES]
            print(f"| {colour} | {target} | " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    run_cli(main)
