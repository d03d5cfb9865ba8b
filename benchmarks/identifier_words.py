"""Could one word per reward show Parrot's Fig. 7 on a world? The untrained model, no training.

Each word (or phrase) w is added to the plain prompt c ("c, w", or "w, c" with ``--prefix``, where identifiers
stand) and every reward is scored against c on the same noise as c alone (paired; held-out and training colour ×
shape prompts × ``--seeds`` seeds, the card's sampling: DDIM, η = 1, CFG). Then, for every assignment of one word
w_k to each reward k (w_k among the ``--top`` words that raise r_k most), Fig. 7's comparison is made with the
words in place of the identifiers: does r_k under w_k beat r_k under every other reward's word by ≥ 2 paired SE?
The best assignment says whether the world allows Fig. 7 at all; trained identifier tokens are measured against it
(BENCHMARKS.md, "Fig. 7 … trained identifier tokens").

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/identifier_words.py --json runs/identifier_words.json
    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/identifier_words.py --prefix --json runs/identifier_words_prefix.json
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
from scipy import stats

from parrot.models import committed_shapes_world
from parrot_base.cli import run_cli
from shapes.attributes import HELD_OUT_PAIRS
from shapes.card import REWARDS, CardSettings, load_world_rewards, sample_scores
from shapes.data import short_prompt
from t2i import Guidance, StableDiffusionPolicy

__all__ = ["WORDS", "PROMPTS", "best_assignment", "main"]

#: the world's caption words and phrases (shapes.attributes: sizes, shapes, modifier words, backgrounds, a colour)
WORDS = (
    "small", "large", "triangle", "circle", "square", "sharp", "blurry", "clean", "cluttered", "vivid", "faded",
    "well-formed", "distorted", "masterpiece", "high contrast", "warm light", "cold light", "on a black background",
    "on a white background", "on a gray background", "yellow",
)  # fmt: skip
#: the held-out colour × shape prompts and three training ones
PROMPTS = tuple(short_prompt(c, s) for c, s in HELD_OUT_PAIRS) + ("a yellow triangle", "a red circle", "a green square")


def scores_with_word(policy, rewards, word: str, prefix: bool, settings: CardSettings, seeds: list[int]) -> dict[str, np.ndarray]:
    """Every reward (against c) of the images of each prompt with ``word`` added ("" for c alone), prompt-major."""
    per_prompt, cfg = [], Guidance.cfg(settings.guidance)
    for c in PROMPTS:
        text = (f"{word}, {c}" if prefix else f"{c}, {word}") if word else c
        per_prompt.append(sample_scores(policy, rewards, [text] * len(seeds), [c] * len(seeds), cfg, settings, seeds))
    return {k: np.concatenate([p[k] for p in per_prompt]) for k in rewards}


def best_assignment(scores: dict[str, dict[str, np.ndarray]], rewards: list[str], top: int) -> dict:
    """Over assignments of distinct words w_k (each among the ``top`` raising r_k most): the one with the most rewards
    whose r_k under w_k beats r_k under every other w_j by ≥ 2 paired SE (ties: the larger summed margin); its words,
    wins and each reward's smallest margin ± paired SE."""
    words = [w for w in scores if w]
    candidates = [sorted(words, key=lambda w: -scores[w][r].mean())[:top] for r in rewards]
    best = None
    for combo in itertools.product(*candidates):
        if len(set(combo)) < len(combo):
            continue
        margins = []
        for k, r in enumerate(rewards):
            worst = min((scores[combo[k]][r] - scores[combo[j]][r] for j in range(len(rewards)) if j != k), key=np.mean)
            margins.append((float(worst.mean()), float(stats.sem(worst))))
        key = (sum(m >= 2 * se for m, se in margins), sum(m for m, _ in margins))
        if best is None or key > best[0]:
            best = (key, combo, margins)
    if best is None:
        raise ValueError(f"fewer than {len(rewards)} distinct words among the top {top} of each reward")
    (wins, _), combo, margins = best
    return {"words": dict(zip(rewards, combo)), "wins": wins, "margins": dict(zip(rewards, margins))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", type=Path, default=None, help="a built world (default: the committed shapes/world)")
    parser.add_argument("--words", nargs="+", default=list(WORDS), help="the words and phrases to add")
    parser.add_argument("--prefix", action="store_true", help="prepend the word ('w, c', as identifiers stand); else append")
    parser.add_argument("--seeds", type=int, default=16, help="seeds per prompt (paired over words)")
    parser.add_argument("--top", type=int, default=6, help="each reward's word is chosen among its TOP best words")
    parser.add_argument("--json", type=Path, default=None, help="write every image's scores and the result here")
    args = parser.parse_args(argv)
    if args.seeds < 2 or len(set(args.words)) < len(REWARDS):
        parser.error(f"--seeds must be ≥ 2 (paired standard errors) and --words name at least {len(REWARDS)} distinct words")
    world = args.world or committed_shapes_world()
    policy, rewards = StableDiffusionPolicy.from_pretrained(world / "sd"), load_world_rewards(world)
    settings = CardSettings()
    seeds = [settings.seed * 1000 + j for j in range(args.seeds)]
    scores = {"": scores_with_word(policy, rewards, "", args.prefix, settings, seeds)}
    for word in dict.fromkeys(args.words):
        scores[word] = scores_with_word(policy, rewards, word, args.prefix, settings, seeds)
        change = " ".join(f"{r} {scores[word][r].mean() - scores[''][r].mean():+.3f}" for r in REWARDS)
        print(f"{word!r}: {change}", flush=True)
    result = best_assignment(scores, list(REWARDS), args.top)
    print(f"best assignment: {result['words']}; wins {result['wins']} of {len(REWARDS)}")
    for r, (margin, se) in result["margins"].items():
        print(f"  {r}: margin {margin:+.4f} ± {se:.4f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        records = {w: {r: v.tolist() for r, v in s.items()} for w, s in scores.items()}
        args.json.write_text(json.dumps({"prefix": args.prefix, "scores": records, "result": result}, indent=1), encoding="utf-8")


if __name__ == "__main__":
    run_cli(main)
