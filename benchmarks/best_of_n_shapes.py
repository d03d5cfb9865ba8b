"""Best-of-N on the shapes world: the top-1 of N by the preference model vs a random pick of the same N.

For each held-out prompt and seed, N candidates are drawn once (`parrot.best_of_n`); "best" is
the candidate the preference reward ranks first, "random" a uniformly drawn candidate of the
same N (seeded). Both are then scored by the preference reward (the ranking reward itself) and
by CLIPScore alignment against the prompt (a judge the ranking never saw).

    python benchmarks/best_of_n_shapes.py --seeds 0 1 2 --n 8 --json runs/best_of_n_shapes.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from parrot.best_of_n import best_of_n
from parrot.models import resolve_world
from parrot.prompts import read_prompts
from rewards import load_reward
from t2i import Guidance, StableDiffusionPolicy


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--world", default="", help="world directory (default: the committed shapes/world)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n", type=int, default=8, help="candidates per prompt")
    parser.add_argument("--num_steps", type=int, default=20, help="DDIM steps")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    world = Path(resolve_world(args.world))
    policy = StableDiffusionPolicy.from_pretrained(world / "sd")
    preference = load_reward("preference", path=str(world / "preference"))
    alignment = load_reward("clip_score", model=str(world / "clip"))
    prompts = read_prompts(world / "prompts" / "held_out.txt")  # the held-out colour × shape pairs
    rows = []
    for seed in args.seeds:
        result = best_of_n(
            policy, prompts, preference, n=args.n, k=1, seed=seed, num_inference_steps=args.num_steps, guidance=Guidance.cfg(4.0)
        )
        pick = torch.randint(args.n, (len(prompts),), generator=torch.Generator().manual_seed(10_000 + seed))
        best = result.kept_images[:, 0]
        random = result.candidates[torch.arange(len(prompts)), pick]
        rows.append(
            {
                "seed": seed,
                "preference_best": preference(best, prompts).mean().item(),
                "preference_random": preference(random, prompts).mean().item(),
                "alignment_best": alignment(best, prompts).mean().item(),
                "alignment_random": alignment(random, prompts).mean().item(),
            }
        )
    summary = {key: (statistics.mean(r[key] for r in rows), statistics.pstdev(r[key] for r in rows)) for key in rows[0] if key != "seed"}
    print(f"held-out prompts {prompts}, best-of-{args.n} by preference vs a random pick of the same {args.n}, seeds {args.seeds}")
    print("| judge | best-of-N | random of N |\n|---|---|---|")
    for judge in ("preference", "alignment"):
        b, r = summary[f"{judge}_best"], summary[f"{judge}_random"]
        print(f"| {judge} | {b[0]:.4f} ± {b[1]:.4f} | {r[0]:.4f} ± {r[1]:.4f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "summary": summary, "n": args.n, "prompts": prompts}, indent=2))


if __name__ == "__main__":
    main()
