"""The T2I policy-gradient losses: DDPO-SF, DDPO-IS (PPO clipping) and DPOK's KL term.

Notation (Parrot eq. 2; DDPO, Black et al. 2023; DPOK, Fan et al. 2023): for image i with
recorded trajectory x_T … x_0, condition c_k and advantage A[i, k] (see
:mod:`parrot.selection`), the gradient of the T2I policy θ is

    ∇J = (1/|P|) Σ_k Σ_{i∈P} A[i, k] Σ_{t∈S_i} ∇ log p_θ(x_{t−1} | x_t, c_k)

with S_i the trained steps (all T, or DDPO's random ``timestep_fraction`` subset). The loss
is its negative. DDPO-SF is this score-function (REINFORCE) loss; DDPO-IS replaces
log p_θ by the clipped importance ratio ρ = p_θ / p_θ_old of PPO,
min(ρ·A, clip(ρ, 1−ε, 1+ε)·A), which has the same gradient at ρ = 1 and lets several inner
epochs reuse one batch. DPOK adds β·(1/N) Σ_i Σ_t KL(p_θ(·|x_t, c) ‖ p_θ₀(·|x_t, c)), in
closed form for two Gaussians with the same σ_t: ‖μ_θ − μ_θ₀‖² / (2σ_t²) (averaged over
latent dimensions, like the log-probs), where θ₀ is the base model (LoRA switched off).

DPOK's supervised baseline (``t2i.estimator`` ``rwr``, reward-weighted regression): images
sampled from the base model are fitted with the ordinary ε-prediction denoising loss, each
weighted by its advantage clipped at zero, w_i = max(Σ_k A[i, k], 0):

    L = (1/|P|) Σ_i w_i · E_t ‖ε_θ(√ᾱ_t x_0 + √(1−ᾱ_t) ε, t, c_i) − ε‖²

(the squared error averaged over latent dimensions and the trained steps t of the image). Images
outside P, or below the batch mean when rewards are z-scored, get weight 0: no image is pushed away.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["PolicyLoss", "t2i_policy_loss", "gaussian_kl", "rwr_weights", "reward_weighted_denoising_loss"]


@dataclass
class PolicyLoss:
    loss: torch.Tensor  # scalar, with grad
    clip_fraction: torch.Tensor  # share of (image, step) ratios outside [1−ε, 1+ε] (0 for SF)


def t2i_policy_loss(
    log_probs: torch.Tensor,
    advantages: torch.Tensor,
    normaliser: float,
    old_log_probs: torch.Tensor | None = None,
    clip_range: float | None = None,
) -> PolicyLoss:
    """−(1/normaliser) Σ_i A_i Σ_s log p (SF) or its PPO-clipped ratio form (IS, ``clip_range`` set).

    ``log_probs`` (n, S) under the current weights with grad, ``advantages`` (n,), and for IS
    ``old_log_probs`` (n, S) from the policy that sampled (or from the first inner epoch).
    """
    if log_probs.ndim != 2 or advantages.shape != log_probs.shape[:1]:
        raise ValueError(f"log_probs {tuple(log_probs.shape)} must be (n, S) and advantages {tuple(advantages.shape)} (n,)")
    if not normaliser > 0:
        raise ValueError(f"normaliser={normaliser!r} must be > 0 (the size of the selected set)")
    advantages = advantages.to(log_probs).detach()[:, None]
    if clip_range is None:
        return PolicyLoss(-(advantages * log_probs).sum() / normaliser, log_probs.new_zeros(()))
    if old_log_probs is None or old_log_probs.shape != log_probs.shape:
        raise ValueError("DDPO-IS needs old_log_probs with the shape of log_probs")
    ratio = torch.exp(log_probs - old_log_probs.detach())
    surrogate = torch.minimum(ratio * advantages, ratio.clamp(1 - clip_range, 1 + clip_range) * advantages)
    clipped = ((ratio - 1).abs() > clip_range).float().mean().detach()
    return PolicyLoss(-surrogate.sum() / normaliser, clipped)


def gaussian_kl(mean: torch.Tensor, base_mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, σ²) ‖ N(base_mean, σ²)) per step, averaged over latent dimensions: (M,)."""
    if mean.shape != base_mean.shape:
        raise ValueError(f"mean {tuple(mean.shape)} and base_mean {tuple(base_mean.shape)} differ in shape")
    elementwise = (mean - base_mean.detach()) ** 2 / (2 * std**2)
    return elementwise.mean(dim=tuple(range(1, mean.ndim)))


def rwr_weights(advantages: torch.Tensor) -> torch.Tensor:
    """Reward-weighted regression weights w_i = max(A_i, 0) of per-image advantages A_i = Σ_k A[i, k], (n,)."""
    return advantages.detach().clamp(min=0)


def reward_weighted_denoising_loss(
    prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, normaliser: float
) -> torch.Tensor:
    """(1/normaliser) Σ_i w_i · mean over steps and latent dimensions of (prediction − target)².

    ``prediction`` and ``target`` (n, S, …): the network's ε (or v) and the true one at S noised
    steps of each of n images; ``weights`` (n,) from :func:`rwr_weights`.
    """
    if prediction.shape != target.shape or prediction.ndim < 2 or weights.shape != prediction.shape[:1]:
        raise ValueError(
            f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} must be (n, S, ...) "
            f"and weights {tuple(weights.shape)} (n,)"
        )
    if not normaliser > 0:
        raise ValueError(f"normaliser={normaliser!r} must be > 0")
    squared = (prediction.float() - target.float()) ** 2
    per_image = squared.flatten(1).mean(1)
    return (weights.to(per_image).detach() * per_image).sum() / normaliser
