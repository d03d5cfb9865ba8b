"""Flow-GRPO's SDE step for flow-matching models (SD3, FLUX) with the exact Gaussian log-density of the step taken.

Notation (Flow-GRPO, Liu et al. 2025, eq. 9–10; rectified flow x_σ = (1 − σ)·x_0 + σ·ε):
``sample`` is x_t at noise level σ = σ_t, ``prev_sample`` is x_{t-1} at σ' = σ_{t-1} < σ, ``model_output``
is the velocity v_θ(x_t, t) ≈ ε − x_0, and dt = σ' − σ < 0. The ODE's Euler step x + v·dt becomes an
SDE with the same marginals by adding the score term (score = −(x + (1 − σ)·v)/σ):

    mean = x + (v + σ_t² / (2σ) · (x + (1 − σ)·v)) · dt,      x_{t-1} = mean + σ_t·√(−dt)·ε,

where σ_t (``noise_std``) is the diffusion coefficient: Flow-GRPO's σ_t = a·√(σ / (1 − σ)) with a the
noise level (``noise_schedule="flow_grpo"``; as in Flow-GRPO's code, σ = 1 in the denominator is
replaced by the schedule's second sigma so the first step stays finite), or DanceGRPO's constant
σ_t = η (Xue et al. 2025, ``noise_schedule="constant"``), which gives the same mean formula.
``std`` = σ_t·√(−dt) is the Gaussian's standard deviation, so x_{t-1} ~ N(mean, std² I); ``log_prob``
is log p_θ(x_{t-1} | x_t) averaged over the latent dimensions as DDPO and Flow-GRPO do (the sum:
``log_prob_sum``). With a = 0 the step is the deterministic Euler step x + v·dt, equal to
``FlowMatchEulerDiscreteScheduler.step`` (a test holds it to it); its log-prob is then NaN.

Sigmas are read from a ``FlowMatchEulerDiscreteScheduler`` after ``set_timesteps``; a timestep t = σ·T_train
is mapped to its index in the schedule, per sample when t is a (B,) tensor (recomputing a random subset
of recorded steps). Everything is computed in float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.utils.torch_utils import randn_tensor

from t2i.ddim import DDIMStep, gaussian_log_prob

__all__ = ["FlowStep", "NOISE_SCHEDULES", "flow_sde_step_with_log_prob", "sigma_indices", "sde_noise_std"]

NoiseSchedule = Literal["flow_grpo", "constant"]
NOISE_SCHEDULES: tuple[str, ...] = ("flow_grpo", "constant")


@dataclass
class FlowStep(DDIMStep):
    """Outputs of one flow-matching SDE step x_t → x_{t-1}.

    Attributes:
        prev_sample: x_{t-1}, float32, shape of the input sample.
        log_prob: log N(x_{t-1}; mean, std²) averaged over all non-batch dimensions, shape (B,)
            (NaN for a deterministic step, a = 0).
        mean: the step's mean (module docstring), float32.
        std: σ_t·√(−dt), the Gaussian's standard deviation, broadcastable to ``mean`` ((B, 1, 1, 1) or (1, 1, 1, 1)).

    The fields and ``log_prob_sum`` are those of :class:`~t2i.ddim.DDIMStep`: every family's step has the same outputs.
    """


def sigma_indices(scheduler: FlowMatchEulerDiscreteScheduler, timestep: torch.Tensor) -> torch.Tensor:
    """Index in ``scheduler.sigmas`` of each timestep (0-d or (B,)), the schedule entry nearest to it."""
    if scheduler.num_inference_steps is None:
        raise ValueError("the scheduler has no timesteps: call scheduler.set_timesteps(num_steps) first")
    schedule = scheduler.timesteps.to(device=timestep.device, dtype=torch.float32)
    return (schedule.view(1, -1) - timestep.float().reshape(-1, 1)).abs().argmin(dim=1).reshape(timestep.shape)


def sde_noise_std(sigma: torch.Tensor, noise_level: float, noise_schedule: NoiseSchedule, sigma_max: float) -> torch.Tensor:
    """σ_t: a·√(σ / (1 − σ)) (Flow-GRPO; σ = 1 uses ``sigma_max`` in the denominator) or the constant a (DanceGRPO)."""
    if noise_schedule == "constant":
        return torch.full_like(sigma, float(noise_level))
    if noise_schedule != "flow_grpo":
        raise ValueError(f"noise_schedule={noise_schedule!r} must be one of {', '.join(NOISE_SCHEDULES)}")
    return noise_level * torch.sqrt(sigma / (1 - torch.where(sigma == 1, torch.full_like(sigma, sigma_max), sigma)))


def _sigmas(scheduler: FlowMatchEulerDiscreteScheduler, timestep: torch.Tensor, view: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    """(σ, σ', σ_max) in float32: 0-d for one timestep, shaped ``view`` for per-sample timesteps."""
    sigmas = scheduler.sigmas.to(device=timestep.device, dtype=torch.float32)
    index = sigma_indices(scheduler, timestep)
    sigma, sigma_prev = sigmas[index], sigmas[index + 1]
    if timestep.ndim:
        sigma, sigma_prev = sigma.view(view), sigma_prev.view(view)
    return sigma, sigma_prev, float(sigmas[1]) if len(sigmas) > 1 else 1.0


def flow_sde_step_with_log_prob(
    scheduler: FlowMatchEulerDiscreteScheduler,
    model_output: torch.Tensor,
    timestep: float | torch.Tensor,
    sample: torch.Tensor,
    *,
    noise_level: float,
    noise_schedule: NoiseSchedule = "flow_grpo",
    prev_sample: torch.Tensor | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
) -> FlowStep:
    """One SDE step of Flow-GRPO, returning x_{t-1} and log p_θ(x_{t-1} | x_t) (notation: module docstring).

    Args:
        scheduler: a ``FlowMatchEulerDiscreteScheduler`` on which ``set_timesteps`` has been called.
        model_output: the (guided) velocity v at (x_t, t).
        timestep: t = σ·T_train as in ``scheduler.timesteps``: a number, a 0-d tensor or (B,) per-sample timesteps.
        sample: x_t.
        noise_level: a ≥ 0 (Flow-GRPO uses 0.7); a = 0 is the deterministic Euler step.
        noise_schedule: ``"flow_grpo"`` (σ_t = a·√(σ/(1−σ))) or ``"constant"`` (DanceGRPO's σ_t = a).
        prev_sample: a recorded x_{t-1} to score; if None one is drawn with ``generator``.
        generator: torch generator(s) for the noise ε (drawn as diffusers' ``randn_tensor``).
    """
    if not noise_level >= 0:
        raise ValueError(f"noise_level={noise_level!r} must be >= 0 (0 is the deterministic Euler step)")
    model_output, sample = model_output.float(), sample.float()
    view = (-1,) + (1,) * (sample.ndim - 1)
    t = torch.as_tensor(timestep, device=sample.device)
    sigma, sigma_prev, sigma_max = _sigmas(scheduler, t, view)
    dt = sigma_prev - sigma
    noise_std = sde_noise_std(sigma, noise_level, noise_schedule, sigma_max)
    mean = sample + (model_output + noise_std**2 / (2 * sigma) * (sample + (1 - sigma) * model_output)) * dt
    std = noise_std * torch.sqrt(-dt)
    if prev_sample is None:
        if noise_level == 0:
            prev_sample = mean
        else:
            prev_sample = mean + std * randn_tensor(mean.shape, generator=generator, device=mean.device, dtype=torch.float32)
    prev_sample = prev_sample.float()
    if prev_sample.shape[0] != sample.shape[0]:
        raise ValueError(f"prev_sample has batch {prev_sample.shape[0]} but sample has batch {sample.shape[0]}")
    std = std.reshape(view) if std.ndim else std.reshape((1,) * sample.ndim)
    if noise_level == 0:
        log_prob = torch.full((sample.shape[0],), math.nan, device=sample.device)
    else:
        log_prob = gaussian_log_prob(prev_sample, mean, std)
    return FlowStep(prev_sample=prev_sample, log_prob=log_prob, mean=mean, std=std)
