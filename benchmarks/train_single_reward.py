"""Single-reward DDPO and DPOK's KL weight on a world preset (``tiny`` by default, or ``shapes``), CPU, offline.

1. DDPO-IS on one reward alone (``--reward``; default ``jpeg_compressibility``, DDPO's first task):
   held-out mean before/after. ``mean_brightness`` (registered here, benchmark only) is a dense
   signal that checks the RL machinery on a world whose other rewards barely vary.
2. DPOK's KL weight β: reward and drift from the base model after the same budget, for several β.
   Drift = mean squared distance between the trained and the base model's x_0 latents on the
   held-out prompts × seeds, sampled from the same initial noise and step noise.

    PYTHONPATH=. HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python benchmarks/train_single_reward.py --iterations 30
    PYTHONPATH=. HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python benchmarks/train_single_reward.py --preset shapes --iterations 30

On ``tiny`` the script fixes its own sampling and update sizes (below); on ``shapes`` it keeps the
preset's (DDIM 20 steps, 4 prompts × 4 images, DDPO-IS) and only switches to one reward, T2I only.

Prints a markdown table and writes ``runs/bench-train/results.json``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from parrot.seeding import derived_seed
from parrot.train import ParrotTrainer
from parrot.train_config import load_train_config
from rewards.base import Reward, RewardConfig
from rewards.registry import register_reward


class MeanBrightness(Reward):
    """Mean pixel value: a smooth, dense signal the random toy world can move (a check of the RL machinery)."""

    needs_prompts = False

    def score_batch(self, images, prompts, metadata):
        return images.mean(dim=(1, 2, 3))


@register_reward("mean_brightness")
def mean_brightness(config: RewardConfig) -> MeanBrightness:
    return MeanBrightness(config)


#: sizes the script sets per preset (the shapes preset's own are used as they are)
PRESET_ARGS = {
    "tiny": [
        "--sampling.prompts_per_process", "4", "--sampling.images_per_prompt", "4",
        "--sampling.num_steps", "10", "--t2i.estimator", "is", "--t2i.inner_epochs", "2", "--t2i.clip_range", "0.2",
        "--t2i.timestep_fraction", "0.5", "--t2i.lr", "3e-3", "--evaluation.seeds", "0", "1", "2",
    ],
    "shapes": [],
}  # fmt: skip


def base_args(out: Path, iterations: int, seed: int, reward: str, preset: str = "tiny") -> list[str]:
    return [
        "--preset", preset, "--output_dir", str(out), "--mode", "t2i", "--expander.model", "", "--iterations", str(iterations),
        "--seed", str(seed), "--rewards.names", reward, "--selection.mode", f"single:{reward}",
        # A = z_B(r), as the figures in BENCHMARKS.md were made (the default until issue 13); never raw, which with one
        # reward is A = r itself, uncentred
        "--selection.reward_weighting", "normalised", "--selection.gradient_normalisation", "batch",
        "--identifiers.enabled", "false", "--checkpoint_every", "0", "--logging.log_with", "none",
        "--evaluation.enabled", "false", *PRESET_ARGS[preset],
    ]  # fmt: skip


@torch.no_grad()
def final_latents(trainer: ParrotTrainer, base: bool) -> torch.Tensor:
    """x_0 of the held-out prompts × evaluation seeds, fixed noise, trained or base (LoRA off)."""
    outs = []
    parts = trainer.parts
    context = parts.policy.adapters_disabled() if base else torch.no_grad()
    with context:
        for seed in parts.config.evaluation.seeds:
            gens = [torch.Generator().manual_seed(derived_seed(seed, 99, i)) for i in range(len(parts.eval_prompts))]
            traj = parts.policy.sample(
                parts.eval_prompts, guidance=parts.guidance, num_inference_steps=parts.config.sampling.num_steps,
                eta=parts.config.sampling.eta, generator=gens,
            )  # fmt: skip
            outs.append(traj.latents[:, -1])
    return torch.cat(outs)


def run(out: Path, iterations: int, seed: int, kl_weight: float, reward: str, overrides: list[str], preset: str = "tiny") -> dict:
    config = load_train_config(base_args(out, iterations, seed, reward, preset) + ["--t2i.kl_weight", str(kl_weight), *overrides])
    trainer = ParrotTrainer(config)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    before, after = trainer.evaluation_samples("untrained").means(), trainer.evaluation_samples("trained").means()
    drift = float(((final_latents(trainer, False) - final_latents(trainer, True)) ** 2).mean())
    return {
        "seed": seed, "kl_weight": kl_weight, "train_seconds": seconds,
        "reward": reward, "before": before[reward], "after": after[reward], "drift": drift,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESET_ARGS), default="tiny", help="the world")
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--reward", default="jpeg_compressibility", help="the single reward trained (registry name)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--kl-weights", type=float, nargs="+", default=[0.0, 1.0, 10.0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-train"))
    parser.add_argument("--set", default="", metavar="FLAGS", help="extra parrot.train flags in one string, e.g. --set='--t2i.lr 1e-3'")
    args = parser.parse_args()
    rows = [
        run(args.out / f"seed{seed}-kl{beta}", args.iterations, seed, beta, args.reward, shlex.split(args.set), args.preset)
        for seed in args.seeds
        for beta in args.kl_weights
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    sys.stdout.write(f"| seed | β (DPOK KL) | {args.reward} before | after | Δ | drift ‖x0−x0_base‖² | train s |\n")
    sys.stdout.write("|---|---|---|---|---|---|---|\n")
    for r in rows:
        sys.stdout.write(
            f"| {r['seed']} | {r['kl_weight']:g} | {r['before']:.4f} | {r['after']:.4f} | {r['after'] - r['before']:+.4f} "
            f"| {r['drift']:.4f} | {r['train_seconds']:.0f} |\n"
        )


if __name__ == "__main__":
    main()
