"""The policy's stochastic process: sampling x_T → x_0 with log-probs, and the log-probs of recorded steps again.

:class:`SamplingMixin` is the family-independent half of :class:`t2i.policy.DiffusionPolicy`: it
calls only the policy's ``build_conditioning``, ``predict_noise`` (the guided model call),
``step`` (one transition of p_θ and its log-density; a family whose scheduler step takes no η also
overrides ``step_without_log_prob``), ``decode``, ``scheduler``, ``pipeline``,
``unet`` and ``device``, so a new model family changes none of it. A family may override the defaults kept
here: ``default_guidance_scale`` (CFG 7.5 when ``sample`` is given no guidance; FLUX: 1), and the hooks
``initial_latents`` (x_T as the stock pipeline draws it) and ``set_timesteps`` (the schedule; FLUX's depends
on the image size). Notation: :mod:`t2i.trajectory`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from tqdm.auto import tqdm

from t2i.ddim import DDIMStep
from t2i.guidance import Guidance
from t2i.prompts import check_prompts
from t2i.trajectory import Conditioning, Trajectory

__all__ = ["SamplingMixin", "check_sampling_settings", "step_index", "stochastic_mask", "check_stochastic"]


def check_sampling_settings(eta: float, num_inference_steps: int, compute_log_probs: bool) -> None:
    """Refuse an η or a step count sampling cannot use, naming the setting."""
    if not isinstance(eta, (int, float)) or not eta >= 0:
        raise ValueError(f"eta={eta!r} must be a number >= 0")
    if compute_log_probs and eta == 0:
        raise ValueError("eta=0 makes the step deterministic (DDIM, or Euler for flow matching), so it has no log-probs: use eta > 0")
    if num_inference_steps < 1:
        raise ValueError(f"num_inference_steps={num_inference_steps} must be >= 1")


def stochastic_mask(sde_steps: Sequence[int], num_inference_steps: int) -> torch.Tensor:
    """(T,) bool: True at the SDE window's steps ``sde_steps`` (indices in [0, T)), refused when empty or outside."""
    index = torch.as_tensor(list(sde_steps), dtype=torch.long)
    if not index.numel() or index.min() < 0 or index.max() >= num_inference_steps:
        raise ValueError(f"sde_steps={list(sde_steps)} must be a non-empty set of step indices in [0, {num_inference_steps})")
    return torch.zeros(num_inference_steps, dtype=torch.bool).index_fill_(0, index, True)


def check_stochastic(trajectory: Trajectory, flat_steps: torch.Tensor) -> None:
    """Refuse recomputing a step outside the trajectory's SDE window: it was deterministic and has no log-prob."""
    if trajectory.stochastic is None or not flat_steps.numel():
        return
    outside = ~trajectory.stochastic.to(flat_steps.device)[flat_steps]
    if outside.any():
        steps = sorted(set(flat_steps[outside].tolist()))
        window = trajectory.stochastic.nonzero().flatten().tolist()
        raise ValueError(f"steps {steps} lie outside the SDE window {window}: deterministic steps have no log-prob")


def step_index(trajectory: Trajectory, step_indices: torch.Tensor | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(sample, step) index pairs, flat and sample-major, of (S,) shared or (B, S) per-sample step indices."""
    batch = trajectory.batch_size
    steps = len(trajectory.timesteps)
    index = torch.as_tensor(step_indices, dtype=torch.long, device=trajectory.latents.device)
    if index.ndim == 1:
        index = index.unsqueeze(0).expand(batch, -1)
    if index.ndim != 2 or index.shape[0] != batch:
        raise ValueError(f"step_indices must be (S,) or ({batch}, S); got shape {tuple(index.shape)}")
    if index.numel() and (index.min() < 0 or index.max() >= steps):
        raise ValueError(f"step indices must lie in [0, {steps}); got {index.min().item()}..{index.max().item()}")
    samples = torch.arange(batch, device=index.device).unsqueeze(1).expand_as(index).reshape(-1)
    return samples, index.reshape(-1)


class SamplingMixin:
    """Sampling and log-prob recomputation for a policy (see the module docstring for what it needs)."""

    default_guidance_scale: ClassVar[float] = 7.5  # CFG scale of ``sample`` when no guidance is given

    @torch.no_grad()
    def sample(
        self,
        prompts: str | Sequence[str],
        *,
        original_prompts: Sequence[str] | None = None,
        guidance: Guidance | None = None,
        negative_prompt: str | Sequence[str] = "",
        num_inference_steps: int = 50,
        eta: float = 1.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        height: int | None = None,
        width: int | None = None,
        latents: torch.Tensor | None = None,
        compute_log_probs: bool = True,
        progress: bool = False,
        sde_steps: Sequence[int] | None = None,
    ) -> Trajectory:
        """Sample images with the family's stochastic step (DDIM, or Flow-GRPO's SDE), recording the trajectory and its log-probs.

        Args:
            prompts: the prompts the images are generated from (ĉ in Parrot, c otherwise).
            original_prompts: the original prompts c, one per prompt; prompt-centred guidance
                (``Guidance.prompt_centred(w1, w2)``) needs them, CFG does not use them.
            guidance: weights of the conditions; default CFG at the family's ``default_guidance_scale`` (7.5 as in
                SD; 1, no guidance, for guidance-distilled FLUX).
            negative_prompt: the ∅ branch's prompt(s).
            num_inference_steps: T, the number of DDIM steps.
            eta: η; must be > 0 when ``compute_log_probs`` (η = 1 is DDPM-like); a flow family's noise level a.
            generator: as in diffusers; one generator for the batch or one per sample.
            latents: optional x_T, (B, C, h, w); drawn from ``generator`` like the stock pipeline otherwise.
            compute_log_probs: with False and η = 0, plain deterministic DDIM or Euler (log_probs are NaN).
            sde_steps: the SDE window (Flow-GRPO-Fast, MixGRPO): indices of the only steps taken with noise
                η and a log-prob; every other step is deterministic (η = 0: DDIM or Euler) with a NaN
                log-prob and draws nothing from ``generator``. None: every step at η. Recorded on the
                trajectory (``Trajectory.stochastic``).
        """
        prompts = check_prompts("prompts", prompts)
        guidance = guidance if guidance is not None else Guidance.cfg(self.default_guidance_scale)
        check_sampling_settings(eta, num_inference_steps, compute_log_probs)
        if original_prompts is not None:
            original_prompts = check_prompts("original_prompts", original_prompts)
        conditions = guidance.conditions(prompts, original_prompts)  # [c, ĉ] or [prompts]: decided by the guidance
        conditioning = self.build_conditioning(conditions, guidance, negative_prompt)
        x_T = self.initial_latents(len(prompts), height, width, generator, latents)
        self.set_timesteps(num_inference_steps, x_T)
        stochastic = None if sde_steps is None else stochastic_mask(sde_steps, num_inference_steps)
        all_latents, log_probs = self.denoise(x_T, conditioning, eta, generator, compute_log_probs, progress, stochastic)
        return Trajectory(
            latents=all_latents,
            timesteps=self.scheduler.timesteps.clone(),
            log_probs=log_probs,
            images=self.decode(all_latents[:, -1]),
            conditioning=conditioning,
            prompts=prompts,
            original_prompts=list(conditions[0]) if guidance.is_prompt_centred else None,
            eta=float(eta),
            num_inference_steps=num_inference_steps,
            stochastic=stochastic,
        )

    def denoise(
        self,
        x_T: torch.Tensor,
        conditioning: Conditioning,
        eta: float,
        generator: torch.Generator | list[torch.Generator] | None,
        compute_log_probs: bool,
        progress: bool = False,
        stochastic: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The reverse chain from x_T over the scheduler's timesteps: latents (B, T+1, …) and log-probs (B, T).

        Without ``compute_log_probs`` each step is the policy's ``step_without_log_prob`` (plain DDIM,
        or the Euler step of a flow family, when η = 0) and the log-probs are NaN. ``stochastic`` (T,)
        bool, the SDE window: steps outside it are ``step_without_log_prob`` at η = 0 (log-prob NaN).
        """
        x, all_latents, log_probs = x_T, [x_T], []
        for i, t in enumerate(tqdm(self.scheduler.timesteps, desc="sampling", disable=not progress, leave=False)):
            eps = self.predict_noise(x, t, conditioning)
            in_window = stochastic is None or bool(stochastic[i])
            if compute_log_probs and in_window:
                step = self.step(eps, t, x, eta=eta, generator=generator)
                x, log_prob = step.prev_sample, step.log_prob
            else:
                x = self.step_without_log_prob(eps, t, x, eta=eta if in_window else 0.0, generator=generator)
                log_prob = torch.full((x.shape[0],), float("nan"), device=self.device)
            all_latents.append(x)
            log_probs.append(log_prob)
        return torch.stack(all_latents, dim=1), torch.stack(log_probs, dim=1)

    def step_without_log_prob(
        self,
        model_output: torch.Tensor,
        t: torch.Tensor,
        x: torch.Tensor,
        *,
        eta: float,
        generator: torch.Generator | list[torch.Generator] | None,
    ) -> torch.Tensor:
        """x_{t-1} without a log-prob (``compute_log_probs=False``): the stock scheduler's DDIM step (η = 0: plain DDIM).

        A family whose scheduler takes no η (flow matching) overrides it.
        """
        return self.scheduler.step(model_output, t, x, eta=eta, generator=generator, return_dict=False)[0]

    def set_timesteps(self, num_inference_steps: int, x_T: torch.Tensor) -> None:
        """The scheduler's schedule of T steps for latents shaped like ``x_T``: its plain ``set_timesteps(T)``.

        A family whose schedule depends on the image size overrides it (FLUX's resolution-dependent shift μ).
        """
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)

    def initial_latents(
        self,
        batch: int,
        height: int | None,
        width: int | None,
        generator: torch.Generator | list[torch.Generator] | None,
        latents: torch.Tensor | None,
    ) -> torch.Tensor:
        """x_T in float32, drawn with the pipeline's own ``prepare_latents`` (same RNG use as stock)."""
        if isinstance(generator, list) and len(generator) != batch:
            raise ValueError(f"{len(generator)} generators given for a batch of {batch} prompts")
        pipe = self.pipeline
        default = self.unet.config.sample_size * pipe.vae_scale_factor
        height, width = height or default, width or default
        return pipe.prepare_latents(batch, self.unet.config.in_channels, height, width, torch.float32, self.device, generator, latents)

    def log_probs(self, trajectory: Trajectory, step_indices: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """log p_θ(x_{t-1} | x_t, c) of recorded steps under the *current* weights.

        ``step_indices`` is either a list of S step indices shared by every sample, or a
        (B, S) tensor of per-sample indices (DDPO's random ``timestep_fraction`` subset).
        All B·S steps go through the UNet in one batch; gradients flow when enabled.
        Returns (B, S), float32.
        """
        step = self.recorded_steps(trajectory, step_indices)
        return step.log_prob.view(trajectory.batch_size, -1)

    def recorded_steps(self, trajectory: Trajectory, step_indices: torch.Tensor | Sequence[int]) -> DDIMStep:
        """The step distributions N(μ_θ, σ_t²) of recorded steps under the current weights.

        Same ``step_indices`` as :meth:`log_probs`; the returned :class:`DDIMStep` is flat over
        the B·S steps (sample-major), e.g. for DPOK's closed-form KL between two policies'
        means. ``prev_sample`` is the recorded x_{t-1}.
        """
        samples, flat = step_index(trajectory, step_indices)
        check_stochastic(trajectory, flat)
        self.match_timesteps(trajectory)
        x_t = trajectory.latents[samples, flat]
        x_prev = trajectory.latents[samples, flat + 1]
        t = trajectory.timesteps.to(flat.device)[flat]
        eps = self.predict_noise(x_t, t, trajectory.conditioning, index=samples)
        return self.step(eps, t, x_t, eta=trajectory.eta, prev_sample=x_prev)

    def match_timesteps(self, trajectory: Trajectory) -> None:
        """Set the scheduler to the trajectory's schedule unless it holds it (same T, same timesteps)."""
        current = self.scheduler.timesteps
        n = trajectory.num_inference_steps
        same = self.scheduler.num_inference_steps == n and current is not None and len(current) == len(trajectory.timesteps)
        if not (same and torch.equal(current.to(trajectory.timesteps.device), trajectory.timesteps)):
            self.set_timesteps(n, trajectory.latents[:, 0])
