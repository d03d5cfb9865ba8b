"""Stage 7 of Algorithm 1: the expander's policy-gradient update.

−(r(ĉ) − b) log p_φ(ĉ|c) + β_φ·KL(p_φ‖p_SFT), r(ĉ) = mean over ĉ's images of Σ_k z_c(r_k) over the rewards
credited to each image (:func:`expansion_rewards`; z_c: each reward z-scored over all images of the same original
prompt c), b the mean r over the expansions of the same c (``group_mean``), or Promptist's r(ĉ) − r(c) on the same
noise (``original_prompt``, :func:`relative_rewards`). Gradients are averaged over processes.

Why not the T2I update's advantages A[i, k]: by default they are z-scored within each (c, ĉ, k) group, so their mean
over ĉ's images does not change when every image of ĉ gets better — an expander trained on it cannot tell a better
expansion from a worse one (BENCHMARKS.md, "The expander's reward could not see an expansion's level").
"""

from __future__ import annotations

import torch

from parrot.credit import GatheredRewards
from parrot.gradients import clip_and_step, synchronise_gradients
from parrot.layout import BatchLayout
from parrot.parts import TrainingParts
from parrot.rollout import Rollout, sample_images, score
from parrot.selection import zscore_per_group
from prompt_expander.expansions import Expansions
from rewards import RewardScores

__all__ = ["update_expander", "relative_rewards", "expansion_rewards", "credited_group_rewards"]


def update_expander(
    parts: TrainingParts, expansions: Expansions, rollout: Rollout, gathered: GatheredRewards, relative: torch.Tensor | None = None
) -> dict[str, float]:
    """REINFORCE on ĉ with r(ĉ) of :func:`expansion_rewards` from the rollout's rows of the global batch's R (``gathered``)
    (whole prompts), less the baseline of ``expander.update.baseline``; ``relative`` (groups,) replaces r(ĉ) by
    Promptist's r(ĉ) − r(c) (:func:`relative_rewards`). Returns loss, kl, grad_norm."""
    layout = parts.layout.for_prompts(len(expansions) // parts.layout.groups_per_prompt)
    if relative is None:
        own = layout.image_identifier() if parts.config.identifiers.enabled else None
        rewards = expansion_rewards(gathered.rewards[rollout.rows], gathered.valid[rollout.rows], layout, own)
    else:
        rewards = relative
    parts.expander_optimizer.zero_grad(set_to_none=True)
    result = parts.expander.policy_gradient_loss(expansions, rewards, parts.config.expander.update, groups=layout.group_prompt())
    result.loss.backward()
    params = parts.expander.trainable_parameters()
    synchronise_gradients(params, "mean", parts.num_processes, parts.device)
    norm = clip_and_step(params, parts.expander_optimizer, parts.config.expander.max_grad_norm)
    return {"loss": float(result.loss.detach()), "kl": float(result.kl.detach()), "grad_norm": norm}


def relative_rewards(parts: TrainingParts, prompts: list[str], scores: RewardScores, iteration: int, offset: int) -> torch.Tensor:
    """Promptist's r(ĉ) − r(c) per group (``expander.update.baseline`` original_prompt): images of
    "<k>, c" drawn with the generators of the group's images (the same noise), both sides scored
    raw and credited as the T2I update is (:func:`credited_group_rewards`)."""
    with torch.no_grad():
        originals = sample_images(parts, prompts, prompts, iteration, offset)
    plain = score(parts, originals)
    layout = parts.layout.for_prompts(len(prompts))
    own = layout.image_identifier() if parts.config.identifiers.enabled else None
    expanded_r = credited_group_rewards(scores.scores, scores.valid & plain.valid, layout, own)
    original_r = credited_group_rewards(plain.scores, scores.valid & plain.valid, layout, own)
    return expanded_r - original_r


def expansion_rewards(rewards: torch.Tensor, valid: torch.Tensor, layout: BatchLayout, identifiers: torch.Tensor | None) -> torch.Tensor:
    """r(ĉ) of every group (= sampled expansion): the mean over its N images of Σ_k z_c(R)[i, k] over the rewards
    credited to image i (:func:`credited_group_rewards`), z_c each reward column z-scored over the valid scores of all
    images of the same original prompt c (every expansion and identifier of c), (groups,).

    z_c puts rewards of different scales on one footing and keeps what the group-mean baseline compares: how much
    better ĉ's images are than those of c's other expansions. All of ĉ's images count, not only the T2I update's
    non-dominated set: REINFORCE needs an estimate of ĉ's expected reward, which the best images of a group are not."""
    if rewards.shape[0] != layout.num_images:
        raise ValueError(f"{rewards.shape[0]} reward rows for a layout of {layout.num_images} images")
    valid = valid.bool() & torch.isfinite(rewards)
    normalised = zscore_per_group(rewards.double(), valid, layout.image_prompt())
    return credited_group_rewards(normalised, valid, layout, identifiers)


def credited_group_rewards(
    rewards: torch.Tensor, valid: torch.Tensor, layout: BatchLayout, identifiers: torch.Tensor | None
) -> torch.Tensor:
    """Mean over each group's images of Σ_k R[i, k] over the rewards credited to image i (its own k_i
    with ``identifiers``, every reward without); non-finite scores count 0. (groups,)."""
    credit = valid.to(torch.float64)
    if identifiers is not None:
        credit = credit * torch.nn.functional.one_hot(identifiers.long(), rewards.shape[1]).to(credit)
    per_image = (torch.nan_to_num(rewards.double()) * credit).sum(1)
    return per_image.view(layout.num_groups, layout.images).mean(1).float()
