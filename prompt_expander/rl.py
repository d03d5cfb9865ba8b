"""The expander's policy-gradient loss (step 7 of Parrot's Algorithm 1).

Notation: the expander is the policy p_φ(ĉ | c) over expansions ĉ of an original prompt c;
``log_probs[i, t]`` is log p_φ(ĉ_{i,t} | c_i, ĉ_{i,<t}) and Σ_t of it is log p_φ(ĉ_i | c_i).
r_i is the reward of sample i, b a baseline, A_i = r_i − b its advantage, and β (``kl_weight``) the weight of
the KL to the reference p_ref (the SFT model).

REINFORCE:       L = −(1/N) Σ_i A_i · Σ_t log p_φ(ĉ_{i,t} | …) + β · (1/N) Σ_i KL_i
PPO-style clip:  L = −(1/N) Σ_i Σ_t min(ρ_{i,t} A_i, clip(ρ_{i,t}, 1−ε, 1+ε) A_i) + β · KL
with per-token ratios ρ_{i,t} = exp(log p_φ − log p_φ_old). At ρ = 1 both have the same
gradient, −A_i ∇ log p_φ(ĉ_i | c_i). Parrot's update is the REINFORCE one, ∇ = −r ∇ log p_φ(ĉ|c).

Baselines b: ``group_mean`` is the mean reward of the expansions of the same original prompt c
(several expansions per prompt, as GRPO; ``groups`` labels them; without labels the whole batch is
one group), ``mean`` the batch mean, ``none`` b = 0, ``original_prompt`` b = 0 on rewards that are
already relative, Promptist's r(ĉ) − r(c) (the Parrot trainer computes them).

This is written out rather than taken from TRL because TRL's RL trainers own the whole loop
(sampling, reward calls, optimiser); Parrot's joint loop needs the loss alone on a batch whose
rewards come from images.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["PolicyGradientConfig", "PolicyGradientLoss", "policy_gradient_loss", "advantages_from_rewards", "group_means"]


_BASELINES = ("group_mean", "mean", "none", "original_prompt")


@dataclass
class PolicyGradientConfig:
    """Settings of the expander's policy-gradient update."""

    baseline: str = field(
        default="group_mean",
        metadata={
            "help": "baseline b subtracted from rewards: 'group_mean' (mean over the expansions of the same "
            "prompt c, GRPO-style; the batch mean when no groups are given), 'mean' (batch mean), "
            "'none' (b = 0), 'original_prompt' (Promptist: the caller passes r(ĉ) − r(c); b = 0 here)"
        },
    )
    normalize_advantages: bool = field(default=False, metadata={"help": "divide advantages by the batch reward std (+1e-8)"})
    clip_range: float | None = field(default=None, metadata={"help": "PPO clip ε on per-token ratios; None is plain REINFORCE"})
    kl_weight: float = field(default=0.1, metadata={"help": "β, weight of the KL to the reference (SFT) model"})

    def __post_init__(self) -> None:
        if self.baseline not in _BASELINES:
            raise ValueError(f"baseline={self.baseline!r}: choose one of {_BASELINES}")
        if self.clip_range is not None and not 0 < self.clip_range < 1:
            raise ValueError(f"clip_range={self.clip_range!r} must be in (0, 1) or None")
        if not self.kl_weight >= 0:
            raise ValueError(f"kl_weight={self.kl_weight!r} must be >= 0")


@dataclass
class PolicyGradientLoss:
    """The loss to backpropagate and its parts (all scalars except ``advantages``)."""

    loss: torch.Tensor
    policy_loss: torch.Tensor
    kl: torch.Tensor  # mean per-sequence KL (0 when not given)
    advantages: torch.Tensor  # (N,)
    clip_fraction: torch.Tensor  # share of tokens whose ratio was clipped (0 for REINFORCE)


def group_means(values: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Each entry replaced by the mean of the entries with its ``groups`` label, (N,)."""
    groups = groups.to(values.device).long()
    _, inverse = torch.unique(groups, return_inverse=True)
    sums = torch.zeros(int(inverse.max()) + 1, dtype=values.dtype, device=values.device).index_add_(0, inverse, values)
    counts = torch.bincount(inverse).to(values.dtype)
    return (sums / counts)[inverse]


def advantages_from_rewards(rewards: torch.Tensor, config: PolicyGradientConfig, groups: torch.Tensor | None = None) -> torch.Tensor:
    """A_i = r_i − b, optionally divided by the reward std (``groups`` (N,) for the ``group_mean`` baseline)."""
    if rewards.ndim != 1:
        raise ValueError(f"rewards must have shape (N,), got {tuple(rewards.shape)}")
    if not torch.isfinite(rewards).all():
        raise ValueError(f"rewards contain NaN or inf: {rewards.tolist()}")
    if config.baseline == "group_mean" and groups is not None:
        if groups.shape != rewards.shape:
            raise ValueError(f"groups {tuple(groups.shape)} must give one prompt label per reward {tuple(rewards.shape)}")
        advantages = rewards - group_means(rewards, groups)
    else:
        advantages = rewards.clone() if config.baseline in ("none", "original_prompt") else rewards - rewards.mean()
    if config.normalize_advantages and rewards.numel() > 1:
        advantages = advantages / (rewards.std() + 1e-8)
    return advantages


def policy_gradient_loss(
    log_probs: torch.Tensor,
    mask: torch.Tensor,
    rewards: torch.Tensor,
    config: PolicyGradientConfig | None = None,
    old_log_probs: torch.Tensor | None = None,
    kl: torch.Tensor | None = None,
    groups: torch.Tensor | None = None,
) -> PolicyGradientLoss:
    """The loss of the module docstring for N expansions of up to L tokens.

    ``log_probs`` (N, L) under the current weights (with grad), ``mask`` (N, L) 1 on expansion
    tokens, ``rewards`` (N,), ``old_log_probs`` (N, L) at sampling time (needed for clipping),
    ``kl`` (N,) per-sequence KL to the reference (with grad) or None, ``groups`` (N,) the original
    prompt of each expansion (for the ``group_mean`` baseline).
    """
    config = config or PolicyGradientConfig()
    if log_probs.shape != mask.shape or log_probs.ndim != 2:
        raise ValueError(f"log_probs {tuple(log_probs.shape)} and mask {tuple(mask.shape)} must both be (N, L)")
    if rewards.shape != log_probs.shape[:1]:
        raise ValueError(f"rewards {tuple(rewards.shape)} must be ({log_probs.shape[0]},), one per expansion")
    mask = mask.to(log_probs.dtype)
    advantages = advantages_from_rewards(rewards.to(log_probs.dtype), config, groups).detach()
    zero = log_probs.new_zeros(())
    if config.clip_range is None:
        policy_loss = -(advantages * (log_probs * mask).sum(1)).mean()
        clip_fraction = zero
    else:
        if old_log_probs is None or old_log_probs.shape != log_probs.shape:
            raise ValueError("PPO clipping needs old_log_probs of the same shape as log_probs (from sampling)")
        ratio = torch.exp(log_probs - old_log_probs.detach())
        eps = config.clip_range
        unclipped = ratio * advantages[:, None]
        clipped = ratio.clamp(1 - eps, 1 + eps) * advantages[:, None]
        policy_loss = -(torch.minimum(unclipped, clipped) * mask).sum(1).mean()
        was_clipped = ((ratio - 1).abs() > eps).to(mask.dtype) * mask
        clip_fraction = (was_clipped.sum() / mask.sum().clamp(min=1)).detach()
    if kl is None:
        kl_mean = zero
    else:
        if kl.shape != rewards.shape:
            raise ValueError(f"kl {tuple(kl.shape)} must be ({rewards.shape[0]},), one per expansion")
        kl_mean = kl.mean()
    loss = policy_loss + config.kl_weight * kl_mean
    if not torch.isfinite(loss):
        raise FloatingPointError(f"policy-gradient loss is {loss.item()} (policy {policy_loss.item()}, kl {kl_mean.item()})")
    return PolicyGradientLoss(loss, policy_loss, kl_mean, advantages, clip_fraction)
