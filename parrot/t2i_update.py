"""Stage 6 of Algorithm 1: the T2I update on this process's images of the batch.

−(1/|P|) Σ_{i∈P} A_i Σ_t log p_θ(x_{t−1}|x_t, "<k_i>, ĉ_i"), A_i = Σ_k A[i, k] (= A[i, k_i] with
identifiers on), over the trained steps, under the condition each image was sampled with; SF or
PPO-clipped IS, + β·KL to the LoRA-off base as DPOK; or ``rwr``: DPOK's supervised baseline.
Gradients are summed over processes (:mod:`parrot.gradients`; under FSDP by the reduce-scatter, and a process
without a trained image in a minibatch backpropagates a zero-weighted one: :func:`collective_rows`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import torch

from parrot.gradients import clip_and_step, synchronise_gradients
from parrot.losses import gaussian_kl, reward_weighted_denoising_loss, rwr_weights, t2i_policy_loss
from parrot.parts import TrainingParts
from parrot.rollout import Rollout
from parrot.seeding import NOISE, STEPS, derived_seed
from parrot.selection import Advantages
from parrot.sharding import rows_for_collectives
from t2i import Guidance, Trajectory
from t2i.objective import noised_sample

__all__ = [
    "update_t2i", "trained_steps", "old_log_probs", "recomputed_log_probs", "minibatch_steps", "collective_rows", "noised_samples",
    "live_conditioning",
]  # fmt: skip


def trained_steps(parts: TrainingParts, rollout: Rollout, iteration: int) -> torch.Tensor:
    """(N_local, S) step indices per image: all T, or a random subset (DDPO's timestep_fraction); with an
    SDE window, its steps as the trajectory recorded them (or a random subset of them)."""
    window = rollout.trajectory.stochastic
    candidates = torch.arange(rollout.trajectory.timesteps.numel()) if window is None else window.cpu().nonzero().flatten()
    count = parts.derived.trained_steps_per_image
    rows = []
    for i in range(rollout.trajectory.batch_size):
        if count == candidates.numel():
            rows.append(candidates)
            continue
        g = torch.Generator().manual_seed(derived_seed(parts.config.seed, iteration, STEPS, rollout.global_offset + i))
        rows.append(candidates[torch.randperm(candidates.numel(), generator=g)[:count]].sort().values)
    return torch.stack(rows).to(rollout.trajectory.latents.device)


def collective_rows(parts: TrainingParts, trainable: torch.Tensor) -> torch.Tensor:
    """The rows the update runs the denoiser on: ``trainable`` (N_local,) bool; under FSDP plus one zero-weighted
    row in each minibatch without a trainable image, so that every process runs the sharded model forward and
    backward in every minibatch (:func:`parrot.sharding.rows_for_collectives`); data parallel, ``trainable``."""
    return rows_for_collectives(trainable, parts.derived.images_per_minibatch) if parts.sharded else trainable


def minibatch_steps(parts: TrainingParts, trainable: torch.Tensor, stats: dict[str, float]) -> Iterator[torch.Tensor]:
    """The T2I update's optimiser steps: for each inner epoch and minibatch of this process's images,
    zero the gradients and yield the indices of the minibatch's ``trainable`` images (the caller
    backpropagates their loss), then sum the gradients over processes, clip and step
    (``stats["grad_norm"]``, the last step's norm; trained identifier tokens then rescaled with ``token_norm`` 'start')."""
    cfg = parts.config.t2i
    per_mb = parts.derived.images_per_minibatch
    for _epoch in range(cfg.inner_epochs):
        for mb in range(cfg.minibatches):
            rows = torch.zeros_like(trainable)
            rows[mb * per_mb : (mb + 1) * per_mb] = True
            parts.t2i_optimizer.zero_grad(set_to_none=True)
            yield (trainable & rows).nonzero().flatten()
            synchronise_gradients(parts.t2i_params, "sum", parts.num_processes, parts.device)
            stats["grad_norm"] = clip_and_step(parts.t2i_params, parts.t2i_optimizer, cfg.max_grad_norm)
            if parts.identifier_tokens is not None and parts.config.identifiers.token_norm == "start":
                parts.identifier_tokens.rescale_to_start_norms()


def update_t2i(
    parts: TrainingParts, rollout: Rollout, advantages: Advantages, iteration: int, recompute_old_log_probs: bool = False
) -> dict[str, float]:
    """Step 6 on this process's images (its rows of ``advantages``); returns loss, kl, clip_fraction, grad_norm.

    Every image is trained under the condition it was sampled with (the rollout's own
    trajectory, so DDPO-IS's θ_old log-probs are the recorded ones; ``recompute_old_log_probs``
    recomputes them with an extra no-grad pass instead, same values, for benchmarks/throughput.py),
    in one backward per minibatch; identifier credit has already zeroed every column but k_i
    (:mod:`parrot.selection`).
    """
    cfg = parts.config.t2i
    if cfg.estimator == "rwr":
        return update_t2i_rwr(parts, rollout, advantages, iteration)
    trajectory = rollout.trajectory
    steps = trained_steps(parts, rollout, iteration)
    per_image = advantages.values[rollout.rows].to(parts.device).sum(1)  # A_i
    normaliser = advantages.normaliser / cfg.minibatches
    use_kl = cfg.kl_weight > 0
    need = collective_rows(parts, (per_image != 0) | use_kl)
    with torch.no_grad():
        old = None
        if cfg.estimator == "is":
            old = (recomputed_log_probs if recompute_old_log_probs else old_log_probs)(parts, trajectory, steps, need)
        base_means = _base_means(parts, trajectory, steps) if use_kl else None
    kl_normaliser = parts.derived.images_per_iteration / cfg.minibatches
    stats = {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0, "grad_norm": 0.0}
    for active in minibatch_steps(parts, need, stats):
        if not active.numel():
            continue
        step = parts.policy.recorded_steps(live_conditioning(parts, trajectory.select(active)), steps[active])
        policy = t2i_policy_loss(
            step.log_prob.view(active.numel(), -1),
            per_image[active],
            normaliser,
            old_log_probs=None if old is None else old[active],
            clip_range=cfg.clip_range if cfg.estimator == "is" else None,
        )
        loss = policy.loss
        if use_kl:
            kl = gaussian_kl(step.mean, base_means[active.repeat_interleave(steps.shape[1]), steps[active].flatten()], step.std)
            kl = kl.view(active.numel(), -1).sum(1).sum() / kl_normaliser
            loss = loss + cfg.kl_weight * kl
            stats["kl"] += float(kl.detach()) / cfg.inner_epochs
        loss.backward()
        stats["loss"] += float(loss.detach()) / cfg.inner_epochs
        stats["clip_fraction"] += float(policy.clip_fraction) / (cfg.inner_epochs * cfg.minibatches)
    return stats


def live_conditioning(parts: TrainingParts, trajectory: Trajectory) -> Trajectory:
    """The trajectory with its conditioning encoded again under the current weights, with gradients, when identifier
    tokens train (``identifiers.trainable_tokens``: the text towers then take part in the update); else as recorded
    (the same tensors: the towers are frozen)."""
    if parts.identifier_tokens is None:
        return trajectory
    guidance = parts.training_guidance
    conditions = guidance.conditions(trajectory.prompts, trajectory.original_prompts)
    negatives = parts.config.sampling.negative_prompt
    return replace(trajectory, conditioning=parts.policy.build_conditioning(conditions, guidance, negatives))


def update_t2i_rwr(parts: TrainingParts, rollout: Rollout, advantages: Advantages, iteration: int) -> dict[str, float]:
    """DPOK's supervised baseline (``t2i.estimator`` rwr) on base-model samples: the family's denoising loss
    (ε/v-prediction, or flow matching's velocity; :func:`noised_samples`) at the trained steps, weighted by
    w_i = max(Σ_k A[i, k], 0) (:func:`parrot.losses.rwr_weights`)."""
    cfg = parts.config.t2i
    trajectory = rollout.trajectory
    steps = trained_steps(parts, rollout, iteration)
    weights = rwr_weights(advantages.values[rollout.rows].to(parts.device).sum(1))
    noisy, target, t = noised_samples(parts, rollout, steps, iteration)
    conditioning = parts.policy.build_conditioning([trajectory.prompts], Guidance.cfg(1.0))  # ε(x_t, t, "<k>, ĉ")
    per_step = steps.shape[1]
    stats = {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0, "grad_norm": 0.0}
    for active in minibatch_steps(parts, collective_rows(parts, weights > 0), stats):
        if active.numel():
            samples = active.repeat_interleave(per_step)
            prediction = parts.policy.predict_noise(noisy[active].flatten(0, 1), t[active].flatten(), conditioning, index=samples)
            loss = reward_weighted_denoising_loss(
                prediction.view(active.numel(), per_step, *prediction.shape[1:]),
                target[active],
                weights[active],
                advantages.normaliser / cfg.minibatches,
            )
            loss.backward()
            stats["loss"] += float(loss.detach()) / cfg.inner_epochs
    return stats


def noised_samples(
    parts: TrainingParts, rollout: Rollout, steps: torch.Tensor, iteration: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each image's final latent x_0 noised at its trained steps' recorded timesteps, the regression target
    and t (:func:`t2i.objective.noised_sample`: √ᾱ_t x_0 + √(1−ᾱ_t) ε with target ε or v for the UNet
    families, (1−σ) x_0 + σ ε with target ε − x_0 for flow matching); (n, S, …), (n, S, …), (n, S).
    Image i's noise comes from its own generator (seed, iteration, global index)."""
    trajectory = rollout.trajectory
    x0 = trajectory.latents[:, -1]
    t = trajectory.timesteps.to(steps.device)[steps]
    noise = torch.stack([
        torch.randn((steps.shape[1], *x0.shape[1:]), device=x0.device, dtype=x0.dtype, generator=torch.Generator(
            x0.device).manual_seed(derived_seed(parts.config.seed, iteration, NOISE, rollout.global_offset + i)))
        for i in range(x0.shape[0])
    ])  # fmt: skip
    clean = x0[:, None].expand_as(noise)
    sample = noised_sample(parts.policy.scheduler, clean.flatten(0, 1), noise.flatten(0, 1), t.flatten().to(x0.device))
    return sample.noisy.view_as(noise), sample.target.view_as(noise), t


def old_log_probs(parts: TrainingParts, trajectory: Trajectory, steps: torch.Tensor, need: torch.Tensor) -> torch.Tensor:
    """log p_θold of the trained steps, (N_local, S), rows ``need`` (0 elsewhere), for DDPO-IS's ratio.

    Under the condition the images were sampled with, these are the log-probs recorded while
    sampling, with the same weights, as in DDPO and TRL: no extra UNet pass.
    """
    recorded = trajectory.log_probs.gather(1, steps.to(trajectory.log_probs.device))
    return torch.where(need.to(recorded.device).unsqueeze(1), recorded, torch.zeros_like(recorded))


def recomputed_log_probs(parts: TrainingParts, trajectory: Trajectory, steps: torch.Tensor, need: torch.Tensor) -> torch.Tensor:
    """(N_local, S) log-probs of the rows ``need`` under the current weights (0 elsewhere): a UNet pass."""
    out = torch.zeros(steps.shape, device=steps.device)
    active = need.nonzero().flatten()
    if active.numel():
        out[active] = parts.policy.log_probs(trajectory.select(active), steps[active])
    return out


def _base_means(parts: TrainingParts, trajectory: Trajectory, steps: torch.Tensor) -> torch.Tensor:
    """μ_θ₀ of each image's own condition at every trained step, (N_local, T, C, h, w) (zeros off-S)."""
    with parts.policy.adapters_disabled():
        step = parts.policy.recorded_steps(trajectory, steps)
    latents = trajectory.latents
    out = torch.zeros(latents.shape[0], latents.shape[1] - 1, *latents.shape[2:], device=latents.device)
    rows = torch.arange(latents.shape[0], device=steps.device).repeat_interleave(steps.shape[1])
    out[rows, steps.flatten()] = step.mean
    return out
