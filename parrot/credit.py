"""Stage 5 of Algorithm 1: R of every process gathered, then the non-dominated set P and advantages A.

:func:`gather_scores` turns this process's :class:`rewards.RewardScores` into the global batch's
:class:`GatheredRewards`; :func:`batch_advantages` computes the :class:`parrot.selection.Advantages`
record of that batch (P per group (c, ĉ, k); A[i, k] = r_k, raw or normalised, on P, and with
identifiers only the image's own reward k). The update stages read this process's rows of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from parrot.parts import TrainingParts
from parrot.selection import Advantages, compute_advantages
from rewards import RewardScores

__all__ = ["GatheredRewards", "gather_scores", "batch_identifiers", "batch_advantages", "reward_metrics"]


@dataclass
class GatheredRewards:
    """R (N, K) of the global batch (process-major order) and its mask of finite scores."""

    rewards: torch.Tensor
    valid: torch.Tensor


def gather_scores(parts: TrainingParts, scores: RewardScores) -> GatheredRewards:
    """R and its valid mask of all processes, (N, K) each, on the CPU."""
    packed = torch.cat([scores.scores.float(), scores.valid.float()], dim=1).to(parts.device)
    gathered = parts.accelerator.gather(packed).cpu() if parts.num_processes > 1 else packed.cpu()
    k = len(parts.reward_names)
    return GatheredRewards(gathered[:, :k], gathered[:, k:] > 0.5)


def batch_identifiers(parts: TrainingParts, global_prompts: list[str]) -> torch.Tensor | None:
    """k(i), the identifier (reward index) each image of the global batch was sampled with; None when identifiers are off."""
    return parts.layout.for_prompts(len(global_prompts)).image_identifier() if parts.config.identifiers.enabled else None


def batch_advantages(parts: TrainingParts, gathered: GatheredRewards, global_prompts: list[str]) -> Advantages:
    """A (N, K) of the global batch: P per group (c, ĉ, k), identifier k's images credited by r_k only."""
    layout = parts.layout.for_prompts(len(global_prompts))
    image_prompts = [global_prompts[p] for p in layout.image_prompt().tolist()]
    return compute_advantages(
        gathered.rewards, gathered.valid, image_prompts, parts.config.selection, parts.selection, parts.tracker,
        groups=layout.image_group(), identifiers=batch_identifiers(parts, global_prompts),
        identifier_contrast=parts.config.identifiers.contrast,
    )  # fmt: skip


def reward_metrics(
    reward_names: list[str], gathered: GatheredRewards, advantages: Advantages, identifiers: torch.Tensor | None = None
) -> dict[str, float]:
    """The batch's scalars: per reward mean and std of R, |P|/N and the count of non-finite scores; with
    ``identifiers`` (k(i) per image) also ``identifier/<name>/own_minus_others``: mean r_k of the images sampled
    under <k> minus mean r_k of the others (finite scores only), the training batch's view of Parrot's Fig. 7."""
    rewards = gathered.rewards
    metrics = {f"reward/{name}/mean": float(rewards[:, k].mean()) for k, name in enumerate(reward_names)}
    metrics |= {f"reward/{name}/std": float(rewards[:, k].std()) for k, name in enumerate(reward_names)}
    metrics["pareto/selected_fraction"] = float(advantages.selected.float().mean())
    metrics["reward/nonfinite"] = float((~gathered.valid).sum())
    if identifiers is not None:
        metrics |= own_identifier_margins(reward_names, gathered, identifiers)
    return metrics


def own_identifier_margins(reward_names: list[str], gathered: GatheredRewards, identifiers: torch.Tensor) -> dict[str, float]:
    """``identifier/<name>/own_minus_others`` of :func:`reward_metrics` for every reward with images on both sides."""
    margins = {}
    for k, name in enumerate(reward_names):
        valid = gathered.valid[:, k]
        own, others = valid & (identifiers == k), valid & (identifiers != k)
        if own.any() and others.any():
            margins[f"identifier/{name}/own_minus_others"] = float(gathered.rewards[own, k].mean() - gathered.rewards[others, k].mean())
    return margins
