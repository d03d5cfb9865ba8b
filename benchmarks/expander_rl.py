"""Benchmark: the expander's RL update on its own, with a toy text reward.

r(ĉ) = (occurrences of the target word in ĉ) − length_penalty · (tokens of ĉ). For each KL
weight β the policy starts from the same SFT model (the reference), takes ``--steps``
REINFORCE steps on DiffusionDB held-out subjects, and is evaluated before and after on a fixed
set of prompts: mean reward and mean KL(p_φ ‖ p_ref) per expansion. Run after the SFT
benchmark (which writes the model directory)::

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 PYTHONPATH=. python benchmarks/expander_rl.py \\
        --model runs/bench_expander_sft --kl_weights 0.0 1.0
"""

from __future__ import annotations

import argparse
import json
import re
import time

import torch
from tqdm.auto import tqdm

from prompt_expander import ExpanderSamplingConfig, Expansions, PolicyGradientConfig, PromptExpander
from prompt_expander.data import DiffusionDBPairsConfig, build_diffusiondb_pairs


def toy_reward(expansions: Expansions, target: str, length_penalty: float) -> torch.Tensor:
    """+1 per whole-word occurrence of ``target``, minus ``length_penalty`` per expansion token."""
    pattern = re.compile(rf"\b{re.escape(target)}\b", re.IGNORECASE)
    counts = torch.tensor([float(len(pattern.findall(t))) for t in expansions.texts])
    return counts - length_penalty * expansions.lengths.float()


@torch.no_grad()
def evaluate(expander: PromptExpander, prompts: list[str], args: argparse.Namespace) -> dict[str, float]:
    expansions = expander.sample(prompts, n=args.n, generator_seed=args.seed + 1000)
    reward = toy_reward(expansions, args.target, args.length_penalty)
    kl = expander.kl_to_reference(expansions)
    return {
        "reward": reward.mean().item(),
        "kl": kl.mean().item(),
        "tokens": expansions.lengths.float().mean().item(),
        "example": expansions.texts[0],
    }


def train_one(args: argparse.Namespace, kl_weight: float, train_prompts: list[str], eval_prompts: list[str]) -> dict:
    torch.manual_seed(args.seed)
    expander = PromptExpander.from_pretrained(args.model, ExpanderSamplingConfig(max_new_tokens=args.max_new_tokens))
    optimizer = torch.optim.Adam(expander.trainable_parameters(), lr=args.lr)
    config = PolicyGradientConfig(kl_weight=kl_weight, clip_range=args.clip_range)
    before = evaluate(expander, eval_prompts, args)
    curve = []
    for step in tqdm(range(args.steps), desc=f"RL β={kl_weight}"):
        start = (step * args.prompts_per_step) % len(train_prompts)
        prompts = (train_prompts * 2)[start : start + args.prompts_per_step]
        expansions = expander.sample(prompts, n=args.n, generator_seed=args.seed + step)
        rewards = toy_reward(expansions, args.target, args.length_penalty)
        for _ in range(args.inner_epochs):
            loss = expander.policy_gradient_loss(expansions, rewards, config)
            optimizer.zero_grad()
            loss.loss.backward()
            optimizer.step()
        curve.append(round(rewards.mean().item(), 3))
    after = evaluate(expander, eval_prompts, args)
    return {"kl_weight": kl_weight, "before": before, "after": after, "train_reward_curve": curve}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="SFT expander directory (the reference)")
    parser.add_argument("--kl_weights", type=float, nargs="+", default=[0.0, 1.0], help="β values to compare")
    parser.add_argument("--steps", type=int, default=40, help="policy-gradient steps per β")
    parser.add_argument("--prompts_per_step", type=int, default=8, help="original prompts per step")
    parser.add_argument("--n", type=int, default=4, help="expansions per prompt")
    parser.add_argument("--inner_epochs", type=int, default=1, help="updates per sampled batch (PPO-style reuse)")
    parser.add_argument("--clip_range", type=float, default=None, help="PPO clip ε (None = REINFORCE)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--target", default="detailed", help="word whose occurrences are rewarded")
    parser.add_argument("--length_penalty", type=float, default=0.01, help="reward cost per expansion token")
    parser.add_argument("--max_new_tokens", type=int, default=77, help="expansion cap")
    parser.add_argument("--eval_prompts", type=int, default=32, help="held-out prompts for before/after figures")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    held_out = build_diffusiondb_pairs(DiffusionDBPairsConfig())["test"]["prompt"]
    eval_prompts, train_prompts = list(held_out[: args.eval_prompts]), list(held_out[args.eval_prompts :])
    start = time.perf_counter()
    runs = [train_one(args, beta, train_prompts, eval_prompts) for beta in args.kl_weights]
    report = {"runs": runs, "wall_seconds": round(time.perf_counter() - start, 1), "args": vars(args)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
