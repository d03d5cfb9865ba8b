"""The denoising training objective of every family: (noisy x_t, regression target, model timestep t).

One owner for what a denoiser is trained to predict, read from its scheduler:

- **DDPM** (Ho et al. 2020; SD 1.x/2.x, SDXL: any scheduler with ``alphas_cumprod``, DDPM or DDIM):
  x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε (``scheduler.add_noise``); the target is ε (``prediction_type``
  ``epsilon``), v = √ᾱ_t·ε − √(1−ᾱ_t)·x₀ (``v_prediction``, ``scheduler.get_velocity``) or x₀
  (``sample``); t is the integer step. Training draws t ~ U{0, …, N−1}, N = ``num_train_timesteps``.
- **Rectified flow** (Esser et al. 2024; SD3 / SD3.5, ``FlowMatchEulerDiscreteScheduler``):
  x_σ = (1−σ)·x₀ + σ·ε, the target is the velocity v = ε − x₀ (dx/dσ, what the transformer predicts),
  and the model timestep is t = σ·N. Training draws u ∈ (0, 1) from SD3's density
  (:class:`TimestepDensity`: logit-normal u = sigmoid(n), n ~ 𝒩(m, s²), SD3's default m = 0, s = 1; or
  uniform), by diffusers' ``compute_density_for_timestep_sampling``, and takes the scheduler's training
  table at index ⌊u·N⌋ — i.e. σ = shift·u′ / (1 + (shift − 1)·u′) with u′ = 1 − ⌊u·N⌋/N, SD3's shifted
  σ — as diffusers' ``train_dreambooth_sd3.py`` does. The loss weight is 1 (SD3's default with
  logit-normal sampling).

:func:`training_timesteps` draws t for a batch; :func:`noised_sample` gives x_t and the target for
given t (a training draw, or the recorded timesteps of a trajectory as DPOK's rwr baseline uses).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.training_utils import compute_density_for_timestep_sampling

__all__ = ["NoisedSample", "TimestepDensity", "is_flow_matching", "noised_sample", "training_timesteps"]


@dataclass(frozen=True)
class TimestepDensity:
    """How a rectified-flow model's training σ is drawn (SD3's settings by default)."""

    weighting: Literal["logit_normal", "uniform"] = field(
        default="logit_normal", metadata={"help": "u ~ sigmoid(N(logit_mean, logit_std²)) (SD3) or u ~ U(0, 1)"}
    )
    logit_mean: float = field(default=0.0, metadata={"help": "m of the logit-normal density"})
    logit_std: float = field(default=1.0, metadata={"help": "s of the logit-normal density"})

    def __post_init__(self) -> None:
        if self.weighting not in ("logit_normal", "uniform"):
            raise ValueError(f"weighting={self.weighting!r}: choose 'logit_normal' or 'uniform'")
        if self.logit_std <= 0:
            raise ValueError(f"logit_std={self.logit_std} must be > 0")


@dataclass(frozen=True)
class NoisedSample:
    """x_t, the regression target of the model's output, and the model timestep t (shapes as given)."""

    noisy: torch.Tensor
    target: torch.Tensor
    timesteps: torch.Tensor


def is_flow_matching(scheduler) -> bool:
    """Whether ``scheduler`` is a rectified-flow one (velocity target, t = σ·N)."""
    return isinstance(scheduler, FlowMatchEulerDiscreteScheduler)


def training_timesteps(
    scheduler, batch_size: int, generator: torch.Generator | None = None, density: TimestepDensity | None = None
) -> torch.Tensor:
    """t of a training batch (the module docstring): U{0, …, N−1} (long) for DDPM, σ·N (float) for flow."""
    steps = scheduler.config.num_train_timesteps
    if not is_flow_matching(scheduler):
        return torch.randint(steps, (batch_size,), generator=generator)
    density = density or TimestepDensity()
    u = compute_density_for_timestep_sampling(
        density.weighting, batch_size, logit_mean=density.logit_mean, logit_std=density.logit_std, generator=generator
    )
    table = type(scheduler).from_config(scheduler.config).timesteps  # the training table (no set_timesteps call)
    return table[(u * steps).long().clamp(max=steps - 1)]


def _broadcast(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.to(like.device, like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def noised_sample(scheduler, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> NoisedSample:
    """x_t and the target of clean latents ``x0`` (B, …) with ``noise`` ε at model timesteps ``timesteps`` (B,)."""
    if is_flow_matching(scheduler):
        sigma = _broadcast(timesteps / scheduler.config.num_train_timesteps, x0)
        return NoisedSample((1.0 - sigma) * x0 + sigma * noise, noise - x0, timesteps)
    if not hasattr(scheduler, "alphas_cumprod"):
        raise ValueError(f"{type(scheduler).__name__} is neither a DDPM-type (alphas_cumprod) nor a flow-matching scheduler")
    prediction = scheduler.config.prediction_type
    noisy = scheduler.add_noise(x0, noise, timesteps)
    if prediction == "epsilon":
        target = noise
    elif prediction == "v_prediction":
        target = scheduler.get_velocity(x0, noise, timesteps)
    elif prediction == "sample":
        target = x0
    else:
        raise ValueError(f"prediction_type={prediction!r} of {type(scheduler).__name__} has no training target here")
    return NoisedSample(noisy, target, timesteps)
