"""How much an expander could still gain over the SFT expander's beam: a grid of written expansions, scored.

Parrot's joint loop can beat "base + SFT expander" only where some expansion of c scores better than the SFT
expander's near-greedy (beam) one, or where the T2I update adds what no words can. This script measures the first
on a shapes world: for every prompt c = "a {colour} {shape}" of a split it writes the expansions of one grammar
(:func:`candidate_expansions`: size × neutral background × companion or none × "warm light" or none, each with
every positive quality word, "masterpiece" and, on a contrasting background, "high contrast", in the world's word
order) and samples each, the SFT beam and c itself with the world's SD model on the same noise (CFG 4 on the text,
DDIM 20 steps, η = 1, as the card samples), scored against c by the world's four rewards. It prints, per split, each
expansion's paired Δ against the beam: the Table-1 average (each reward min–max normalised over all the split's
images, the mean over rewards; mean ± SE over prompts of each prompt's Δ) and each reward's mean Δ.

``--grid words`` keeps the scene of the v8 beams (a large subject on a white background, no companion) and varies
the quality words instead (:func:`word_expansions`: all five positive words, none, each alone, all but each): what
the words are worth, i.e. the headroom an SFT expander whose beam left some of them out would leave to RL.
``--grid light`` keeps that scene and all the words and varies the light word (:func:`light_expansions`: none,
"warm light", "cold light"): the headroom an SFT expander with a habit for one light would leave.

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/expansion_headroom.py --json runs/expansion_headroom.json
    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/expansion_headroom.py --grid words
    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/expansion_headroom.py --grid light
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the repo's packages importable
    sys.path.insert(0, str(REPO))

from parrot.evaluation import minmax_bounds, paired_table1_delta  # noqa: E402
from parrot.models import built_world  # noqa: E402
from parrot_base.cli import UsageError, run_cli  # noqa: E402
from prompt_expander import PromptExpander  # noqa: E402
from shapes.attributes import POSITIVE_WORDS, SIZES  # noqa: E402
from shapes.captions import short_prompt  # noqa: E402
from shapes.card import REWARDS, CardSettings, load_world_rewards, sample_scores, written_expansion  # noqa: E402
from shapes.data import HELD_OUT_PAIRS, training_pairs  # noqa: E402
from t2i import Guidance, StableDiffusionPolicy  # noqa: E402

__all__ = [
    "NEUTRAL_BACKGROUNDS",
    "GRIDS",
    "candidate_expansions",
    "word_expansions",
    "light_expansions",
    "table1_deltas",
    "measure_split",
    "main",
]

#: the backgrounds of the grid (a coloured background is never the rules' best for any subject colour)
NEUTRAL_BACKGROUNDS = ("white", "black", "gray")
BEAM, PLAIN = "SFT beam", "c (plain prompt)"


def candidate_expansions(colour: str, shape: str) -> dict[str, str]:
    """{"size/background/companion/light": :func:`shapes.card.written_expansion`} for one colour × shape (24)."""
    return {
        f"{size}/{background}/{'companion' if companion else 'alone'}/{'warm' if warm else 'plain light'}": written_expansion(
            colour, shape, size, background, companion, extra=("warm light",) if warm else ()
        )
        for size, background, companion, warm in itertools.product(SIZES, NEUTRAL_BACKGROUNDS, (False, True), (False, True))
    }


def word_expansions(colour: str, shape: str) -> dict[str, str]:
    """{"words: …": caption} for one colour × shape: a large subject on a white background with all five positive
    words ("masterpiece" among them), none, each alone and all but each (12 expansions), plus "high contrast" where
    the background contrasts, as the beam has it."""
    subsets = {"all": POSITIVE_WORDS, "none": ()}
    subsets |= {f"only {w}": (w,) for w in POSITIVE_WORDS}
    subsets |= {f"all but {w}": tuple(v for v in POSITIVE_WORDS if v != w) for w in POSITIVE_WORDS}
    return {f"words: {name}": written_expansion(colour, shape, "large", "white", False, quality=words) for name, words in subsets.items()}


def light_expansions(colour: str, shape: str) -> dict[str, str]:
    """{"light: …": caption} for one colour × shape: the v8 beams' scene (a large subject on a white background, every
    positive word, "high contrast") with no light word, "warm light" or "cold light" (3 expansions): what a curation
    habit for one light would leave to the expander."""
    return {
        f"light: {name}": written_expansion(colour, shape, "large", "white", False, extra=extra)
        for name, extra in (("none", ()), ("warm", ("warm light",)), ("cold", ("cold light",)))
    }


#: ``--grid`` → the expansions written for each prompt
GRIDS = {"scene": candidate_expansions, "words": word_expansions, "light": light_expansions}


def table1_deltas(scores: dict[str, np.ndarray], reference: str, prompts: int) -> dict[str, dict]:
    """Per row of ``scores`` ({row: (prompts·n, K) scores, prompt-major}), its paired Δ against ``reference``:
    {"table1": (mean, SE over prompts), "rewards": [mean Δ per reward]}; min–max bounds over every row's images."""
    lo, hi = minmax_bounds(list(scores.values()))

    def per_prompt(matrix: np.ndarray) -> np.ndarray:  # (prompts, K) means
        return matrix.reshape(prompts, -1, matrix.shape[1]).mean(1)

    means = {row: per_prompt(matrix) for row, matrix in scores.items()}
    base = means[reference]
    return {row: {"table1": paired_table1_delta(base, m, lo, hi), "rewards": (m - base).mean(0).tolist()} for row, m in means.items()}


def measure_split(
    policy, rewards, expander, pairs: list[tuple[str, str]], n: int, settings: CardSettings, grid: str = "scene"
) -> tuple[list[str], dict[str, dict]]:
    """(the SFT beams, every row's Δ against the beam) for the prompts of ``pairs``, ``n`` images each, the
    expansions of ``GRIDS[grid]``; ``policy``, ``rewards`` and ``expander`` are the world's."""
    prompts = [short_prompt(c, s) for c, s in pairs]
    beams = expander.beam_search(prompts, num_beams=settings.num_beams).texts
    originals = [p for p in prompts for _ in range(n)]
    seeds = settings.image_seeds(len(prompts), n)
    grids = [GRIDS[grid](c, s) for c, s in pairs]
    rows = {PLAIN: prompts, BEAM: beams} | {name: [grid[name] for grid in grids] for name in grids[0]}
    guidance = Guidance.cfg(settings.guidance)
    scores = {}
    for row, texts in rows.items():
        scored = sample_scores(policy, rewards, [t for t in texts for _ in range(n)], originals, guidance, settings, seeds)
        scores[row] = np.stack([scored[name] for name in REWARDS], 1)
    return beams, table1_deltas(scores, BEAM, len(prompts))


def format_split(title: str, beams: list[str], deltas: dict[str, dict]) -> str:
    lines = [f"{title} (SFT beam of the first prompt: {beams[0]!r})", "",
             "| expansion − SFT beam | Table-1 avg | " + " | ".join(REWARDS) + " |", "|---|---|" + "---|" * len(REWARDS)]  # fmt: skip
    for row, d in sorted(deltas.items(), key=lambda item: -item[1]["table1"][0]):
        mean, se = d["table1"]
        lines.append(f"| {row} | {mean:+.3f} ± {se:.3f} | " + " | ".join(f"{v:+.3f}" for v in d["rewards"]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", default="", help="a built shapes world ('' = the committed shapes/world)")
    parser.add_argument("--held_out_images", type=int, default=16, help="images per held-out prompt (default: %(default)s)")
    parser.add_argument("--train_images", type=int, default=8, help="images per training prompt (default: %(default)s; 0: skip)")
    parser.add_argument("--grid", choices=tuple(GRIDS), default="scene", help="expansions: 'scene' (24), 'words' (12) or 'light' (3)")
    parser.add_argument("--json", default="", help="also write the figures here")
    args = parser.parse_args(argv)
    world = built_world(args.world, ("sd", "expander"))
    if args.held_out_images < 2 or args.train_images < 0:
        raise UsageError("--held_out_images must be >= 2 and --train_images >= 0")
    settings = CardSettings()
    splits = [("held-out prompts", HELD_OUT_PAIRS, args.held_out_images)]
    if args.train_images:
        splits.append(("training prompts", training_pairs(), args.train_images))
    policy, rewards = StableDiffusionPolicy.from_pretrained(world / "sd"), load_world_rewards(world)
    expander = PromptExpander.from_pretrained(world / "expander")
    record = {}
    for title, pairs, n in splits:
        beams, deltas = measure_split(policy, rewards, expander, list(pairs), n, settings, args.grid)
        print(format_split(f"{title}, {n} images each", beams, deltas) + "\n")
        record[title] = {"grid": args.grid, "images_per_prompt": n, "beams": beams, "deltas": deltas}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    run_cli(main)
