"""Stochastic DDIM step with the exact Gaussian log-density of the step taken.

Notation (DDIM, Song et al. 2021, eq. 12 and 16; DDPO, Black et al. 2023):
``sample`` is x_t, ``prev_sample`` is x_{t-1}, ``alpha_prod_t`` is ᾱ_t, ``std`` is σ_t(η),
and ``mean`` is μ_θ(x_t, t) so that x_{t-1} ~ N(μ_θ, σ_t² I). ``log_prob`` is
log p_θ(x_{t-1} | x_t) averaged over the latent dimensions, as DDPO does; the sum is
``log_prob_sum``.

Why not ``DDIMScheduler.step``: it returns neither μ nor σ, and it indexes ᾱ with one
scalar timestep, while recomputing a trajectory's log-probs for DDPO's random subset of
timesteps needs a different t per sample in one batch. The arithmetic below follows
``DDIMScheduler.step`` operation for operation (a test holds it to the scheduler's output),
always in float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler
from diffusers.utils.torch_utils import randn_tensor

__all__ = ["DDIMStep", "ddim_step_with_log_prob", "gaussian_log_prob", "previous_timestep"]

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


@dataclass
class DDIMStep:
    """Outputs of one stochastic DDIM step x_t → x_{t-1}.

    Attributes:
        prev_sample: x_{t-1}, float32, shape of the input sample.
        log_prob: log N(x_{t-1}; mean, std²) averaged over all non-batch dimensions, shape (B,).
        mean: μ_θ(x_t, t), the step's mean, float32.
        std: σ_t(η), broadcastable to ``mean`` (shape (B, 1, 1, 1) or (1, 1, 1, 1)).
    """

    prev_sample: torch.Tensor
    log_prob: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    @property
    def log_prob_sum(self) -> torch.Tensor:
        """log p(x_{t-1} | x_t) summed over the latent dimensions, shape (B,)."""
        return self.log_prob * self.prev_sample[0].numel()


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Per-sample mean over non-batch dimensions of the elementwise log N(x; mean, std²)."""
    elementwise = -((x - mean) ** 2) / (2 * std**2) - torch.log(std) - _LOG_SQRT_2PI
    return elementwise.mean(dim=tuple(range(1, x.ndim)))


def previous_timestep(scheduler: DDIMScheduler, timestep: torch.Tensor) -> torch.Tensor:
    """t - T_train / N_inference, the timestep DDIM steps to from ``timestep``."""
    if scheduler.num_inference_steps is None:
        raise ValueError("the scheduler has no timesteps: call scheduler.set_timesteps(num_steps) first")
    return timestep - scheduler.config.num_train_timesteps // scheduler.num_inference_steps


def _alpha_prods(scheduler: DDIMScheduler, timestep: torch.Tensor, view: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """(ᾱ_t, ᾱ_{t-1}) in float32: 0-d for one timestep, shaped ``view`` for per-sample timesteps."""
    alphas_cumprod = scheduler.alphas_cumprod.to(device=timestep.device, dtype=torch.float32)
    final = scheduler.final_alpha_cumprod.to(device=timestep.device, dtype=torch.float32)
    prev = previous_timestep(scheduler, timestep)
    if timestep.ndim == 0:  # the sampling loop: plain indexing, as DDIMScheduler.step does
        t, p = int(timestep), int(prev)
        return alphas_cumprod[t], alphas_cumprod[p] if p >= 0 else final
    alpha_prev = torch.where(prev >= 0, alphas_cumprod[prev.clamp(min=0)], final)
    return alphas_cumprod[timestep].view(view), alpha_prev.view(view)


def _x0_and_epsilon(
    prediction_type: str, model_output: torch.Tensor, sample: torch.Tensor, alpha_prod_t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x̂_0, ε̂) from the network output, whichever of ε, x_0 or v the model predicts."""
    beta_prod_t = 1 - alpha_prod_t
    if prediction_type == "epsilon":
        pred_original_sample = (sample - beta_prod_t ** (0.5) * model_output) / alpha_prod_t ** (0.5)
        return pred_original_sample, model_output
    if prediction_type == "sample":
        return model_output, (sample - alpha_prod_t ** (0.5) * model_output) / beta_prod_t ** (0.5)
    if prediction_type == "v_prediction":
        pred_original_sample = (alpha_prod_t**0.5) * sample - (beta_prod_t**0.5) * model_output
        return pred_original_sample, (alpha_prod_t**0.5) * model_output + (beta_prod_t**0.5) * sample
    raise ValueError(f"prediction_type={prediction_type!r} must be 'epsilon', 'sample' or 'v_prediction'")


def ddim_step_with_log_prob(
    scheduler: DDIMScheduler,
    model_output: torch.Tensor,
    timestep: int | torch.Tensor,
    sample: torch.Tensor,
    *,
    eta: float,
    prev_sample: torch.Tensor | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
) -> DDIMStep:
    """One DDIM step with η > 0, returning x_{t-1} and log p_θ(x_{t-1} | x_t).

    Args:
        scheduler: a ``DDIMScheduler`` on which ``set_timesteps`` has been called.
        model_output: the (guided) network output at (x_t, t): ε, x_0 or v per the
            scheduler's ``prediction_type``.
        timestep: t, an int, a 0-d tensor, or a (B,) tensor of per-sample timesteps.
        sample: x_t.
        eta: η in (0, 1]; η = 1 gives DDPM's posterior variance.
        prev_sample: a recorded x_{t-1} to score; if None a new one is drawn with ``generator``
            exactly as ``DDIMScheduler.step`` draws it.
        generator: torch generator(s) for the noise.
    """
    if not eta > 0:
        raise ValueError(f"eta={eta!r}: log-probabilities need a stochastic step, use eta > 0 (eta=1 is DDPM-like)")
    if scheduler.config.thresholding:
        raise ValueError("dynamic thresholding is not supported for log-prob sampling; set thresholding=False")
    out_dtype = torch.float32
    model_output = model_output.to(out_dtype)
    sample = sample.to(out_dtype)
    batch = sample.shape[0]
    view = (-1,) + (1,) * (sample.ndim - 1)

    t = torch.as_tensor(timestep, device=sample.device)
    alpha_prod_t, alpha_prod_t_prev = _alpha_prods(scheduler, t, view)

    pred_original_sample, pred_epsilon = _x0_and_epsilon(scheduler.config.prediction_type, model_output, sample, alpha_prod_t)
    if scheduler.config.clip_sample:
        limit = scheduler.config.clip_sample_range
        pred_original_sample = pred_original_sample.clamp(-limit, limit)

    beta_prod_t, beta_prod_t_prev = 1 - alpha_prod_t, 1 - alpha_prod_t_prev
    variance = (beta_prod_t_prev / beta_prod_t) * (1 - alpha_prod_t / alpha_prod_t_prev)
    std = eta * variance ** (0.5)

    pred_sample_direction = (1 - alpha_prod_t_prev - std**2) ** (0.5) * pred_epsilon
    mean = alpha_prod_t_prev ** (0.5) * pred_original_sample + pred_sample_direction

    if prev_sample is None:
        noise = randn_tensor(model_output.shape, generator=generator, device=model_output.device, dtype=out_dtype)
        prev_sample = mean + std * noise
    prev_sample = prev_sample.to(out_dtype)

    std = std.reshape(view) if std.ndim else std.reshape((1,) * sample.ndim)
    if prev_sample.shape[0] != batch:
        raise ValueError(f"prev_sample has batch {prev_sample.shape[0]} but sample has batch {batch}")
    log_prob = gaussian_log_prob(prev_sample, mean, std)
    return DDIMStep(prev_sample=prev_sample, log_prob=log_prob, mean=mean, std=std)
