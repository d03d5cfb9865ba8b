"""Is the identifiers' left-over effect a weaker prompt? (world goal 6 on the shapes world)

The ``identifiers`` build stage distils "<prefix>, c" onto c, but on its training captions only. This script asks
what is left of the prefix's effect on the denoiser where sampling actually goes: on the model's own CFG trajectories
(DDIM, η = 1, as the card samples) of the short prompts "a <colour> <shape>", training and held-out pairs apart. At
every other step it splits the prefix's residual r = ε(z_t, "<prefix>, c") − ε(z_t, c) along the conditional signal
s = ε(z_t, c) − ε(z_t, ∅):

- ``beta`` = ⟨r, s⟩ / ⟨s, s⟩ (summed over the batch): the prefix acting as a change of guidance; β < 0 is a weaker
  prompt (CFG w on "<prefix>, c" ≈ CFG w·(1 + β) on c at that step);
- ``residual`` = ‖r‖² / ‖s‖² and ``across`` = ‖r − β·s‖² / ‖s‖²: all of the prefix's effect, and what is left of it
  beside the signal's direction.

A systematic β on held-out prompts alone, with β ≈ 0 on training prompts, says the distillation's invariance does
not carry over to compositions it never saw.

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/identifier_projection.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from parrot.models import committed_shapes_world
from parrot_base.cli import run_cli
from shapes.attributes import HELD_OUT_PAIRS, training_pairs
from shapes.captions import short_prompt
from shapes.card import ALL_IDENTIFIERS
from shapes.data import with_prefix
from t2i import Guidance, StableDiffusionPolicy

__all__ = ["along_signal", "main"]


def along_signal(residual: torch.Tensor, signal: torch.Tensor) -> dict[str, float]:
    """β, ‖r‖²/‖s‖² and ‖r − β·s‖²/‖s‖² of the module docstring for a batch of residuals r and signals s (B, …)."""
    r, s = residual.flatten(1).double(), signal.flatten(1).double()
    norm = (s * s).sum()
    beta = (r * s).sum() / norm
    return {"beta": float(beta), "residual": float((r * r).sum() / norm), "across": float(((r - beta * s) ** 2).sum() / norm)}


@torch.no_grad()
def projections(policy, prompts: list[str], prefix: str, guidance: float, num_steps: int, every: int) -> list[dict[str, float]]:
    """:func:`along_signal` at every ``every``-th step of the policy's own CFG trajectories of ``prompts`` (seed i for
    prompt i), with the step's timestep."""
    trajectory = policy.sample(
        prompts,
        guidance=Guidance.cfg(guidance),
        num_inference_steps=num_steps,
        eta=1.0,
        generator=[torch.Generator().manual_seed(i) for i in range(len(prompts))],
        compute_log_probs=False,
    )
    conditions = {
        name: policy.encode_prompts(texts)
        for name, texts in (("c", prompts), ("prefixed", [with_prefix(c, prefix) for c in prompts]), ("none", [""] * len(prompts)))
    }
    rows = []
    for k in range(0, len(trajectory.timesteps), every):
        z, t = trajectory.latents[:, k], trajectory.timesteps[k].repeat(len(prompts))
        eps = {name: policy.unet_forward(z, t, condition) for name, condition in conditions.items()}
        rows.append({"t": int(trajectory.timesteps[k])} | along_signal(eps["prefixed"] - eps["c"], eps["c"] - eps["none"]))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, default=None, help="a built world (default: the committed shapes/world)")
    parser.add_argument("--prefix", default=ALL_IDENTIFIERS, help="the prefix prepended to c")
    parser.add_argument("--seeds", type=int, default=8, help="trajectories per prompt")
    parser.add_argument("--num_steps", type=int, default=20)
    parser.add_argument("--every", type=int, default=2, help="measure every this many steps")
    parser.add_argument("--guidance", type=float, default=4.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if min(args.seeds, args.num_steps, args.every) < 1:
        parser.error("--seeds, --num_steps and --every must be ≥ 1")
    world = args.world or committed_shapes_world()
    policy = StableDiffusionPolicy.from_pretrained(world / "sd")
    figures = {}
    for split, pairs in (("training", training_pairs()), ("held_out", list(HELD_OUT_PAIRS))):
        prompts = [short_prompt(*pair) for pair in pairs for _ in range(args.seeds)]
        figures[split] = projections(policy, prompts, args.prefix, args.guidance, args.num_steps, args.every)
    print(f"world {world}; prefix {args.prefix!r}; {args.seeds} trajectories a prompt, CFG {args.guidance}")
    print("| t | β training | β held-out | ‖r‖²/‖s‖² training | held-out | ‖r − βs‖²/‖s‖² training | held-out |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for a, b in zip(figures["training"], figures["held_out"]):
        print(
            f"| {a['t']} | {a['beta']:+.4f} | {b['beta']:+.4f} | {a['residual']:.4f} | {b['residual']:.4f} | "
            f"{a['across']:.4f} | {b['across']:.4f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    run_cli(main)
