"""``python -m parrot.train``: Parrot's joint multi-reward RL loop (Lee et al. 2024, Alg. 1) and its baselines.

One iteration (each stage is a method you can call alone); the batch is prompts × expansions ×
identifiers × images (:class:`parrot.layout.BatchLayout`), a *group* being the N images of one
(c, ĉ, k), N = ``sampling.images_per_prompt`` / (E·K) (K = 1 with identifiers off):

1. ``draw_prompts``     a global batch of original prompts c (the same on every process)
2. ``expand``           the expander samples E expansions ĉ ~ p_φ(·|c) per prompt, E per identifier k
                        when identifiers are on (log-probs kept); ĉ = c without one
3. ``sample_images``    N images per group from "<k>, ĉ" (ĉ alone with identifiers off), with CFG on
                        that text (``sampling.training_guidance``), keeping trajectories
4. ``score``            every reward scores every image against the ORIGINAL prompt c → R (N_local, K)
   (``sample_and_score`` runs 3–4, scoring part j of the images while part j+1 samples when
   ``sampling.chunks`` > 1; same images and scores either way)
5. ``gather_scores``    R of all processes → the global batch; ``advantages``: the non-dominated set
                        P of each group over all K rewards, A[i, k] = r_k (raw or normalised) on P,
                        and with identifiers only the image's own reward k (:mod:`parrot.selection`)
6. ``update_t2i``       −(1/|P|) Σ_{i∈P} A_i Σ_t log p_θ(x_{t−1}|x_t, "<k_i>, ĉ_i"), A_i = Σ_k A[i, k]
                        (= A[i, k_i] with identifiers on), over all trained steps, under the
                        condition the image was sampled with, one backward
                        on this process's slice (SF or PPO-clipped IS, + β·KL to the LoRA-off base as
                        DPOK; or ``rwr``: DPOK's supervised baseline); gradients summed over processes
7. ``update_expander``  −(r(ĉ) − b) log p_φ(ĉ|c) + β_φ·KL(p_φ‖p_SFT), r(ĉ) = mean over ĉ's images of
                        Σ_k A[i,k], b the mean r over the expansions of the same c (``group_mean``),
                        or Promptist's r(ĉ) − r(c) on the same noise (``original_prompt``)
8. log, checkpoint

At inference (held-out evaluation) all identifiers are prepended and, with an expander, Parrot's
prompt-centred guidance with weights ``sampling.w1``, ``sampling.w2`` is used (§4.3).

Baselines are settings of the same loop: ``selection.mode`` weighted / single:<reward>,
``mode`` t2i / expander, ``t2i.estimator`` sf / is / rwr, ``t2i.kl_weight`` (DPOK).

Determinism: every random draw of iteration n comes from a generator seeded by
(seed, n, global image or process index, purpose), so a resumed run repeats exactly the
draws of an uninterrupted one, and a 1-process run with batch 2B draws the same images as
2 processes with batch B each.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import reduce
from diffusers.utils import make_image_grid
from tqdm.auto import tqdm

from parrot.checkpoint import (
    atomic_checkpoint_dir,
    latest_valid_checkpoint,
    load_tensors,
    optimizer_state_from_files,
    optimizer_state_to_files,
    prune_checkpoints,
    read_json,
    save_tensors,
    write_json,
)
from parrot_base.cli import run_cli
from parrot_base.config import config_to_dict
from parrot.evaluation import CURVES_FILE, EvaluationSamples, append_curve, evaluation_record, format_table, held_out_samples
from parrot.identifiers import evaluation_identifiers, with_identifiers
from parrot.layout import BatchLayout
from parrot.prompts import read_prompt_list
from parrot.losses import gaussian_kl, reward_weighted_denoising_loss, rwr_weights, t2i_policy_loss
from parrot.selection import Advantages, PerPromptStatTracker, compute_advantages, parse_selection
from parrot.train_config import TrainConfig, batch_layout, derived_quantities, load_train_config
from parrot.models import (
    build_evaluator,
    build_expander,
    build_policy,
    resolve_reward_settings,
    resolve_world,
    with_world,
)
from prompt_expander.expander import Expansions
from rewards import RewardScores
from rewards.base import as_pil_images, expansion_metadata
from t2i import Guidance, Trajectory

__all__ = [
    "ParrotTrainer", "Rollout", "EvaluationSamples", "chunk_bounds", "credited_group_rewards", "derived_seed", "expansion_rewards", "read_prompt_list", "main",
]  # fmt: skip

logger = logging.getLogger(__name__)

# purposes of derived seeds
_PROMPTS, _IMAGES, _STEPS, _EXPANDER, _EVAL, _NOISE = range(6)


def derived_seed(*parts: int) -> int:
    """A 63-bit seed from integers (numpy's SeedSequence hashing: independent streams per tuple)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


@dataclass
class Rollout:
    """This process's samples of one iteration, images in :class:`parrot.layout.BatchLayout` order."""

    trajectory: Trajectory
    original_prompts: list[str]  # c per image
    expanded_prompts: list[str]  # ĉ per image
    own_reward: torch.Tensor  # (N_local,) index k of the identifier the image was sampled with (0 when off)
    global_offset: int  # global index of this process's first image


class ParrotTrainer:
    """Holds the models, optimisers and state of a run; :meth:`train` runs the loop."""

    def __init__(self, config: TrainConfig, accelerator: Accelerator | None = None):
        self.config = config
        log_with = None if config.logging.log_with == "none" else config.logging.log_with
        # accelerate treats torchrun's processes as one multi-process run only with cpu=True
        # when there is no GPU; without it each CPU process would train alone.
        on_cpu = config.device == "cpu" or (not config.device and not torch.cuda.is_available())
        self.accelerator = accelerator or Accelerator(cpu=on_cpu, log_with=log_with, project_dir=str(config.output_dir))
        acc = self.accelerator
        self.rank, self.world = acc.process_index, acc.num_processes
        self.derived = derived_quantities(config, self.world)
        self.layout = batch_layout(config, self.world)
        if config.selection.mode == "pareto" and config.selection.scope == "group" and self.layout.images == 1:
            logger.warning("selection.scope 'group' with 1 image per \"<k>, ĉ\": every image is in P (raise "
                           "sampling.images_per_prompt or use selection.scope 'batch')")
        self.device = acc.device if not config.device else torch.device(config.device)
        self.reward_names = list(config.rewards.names)
        self.selection = parse_selection(config.selection, self.reward_names)
        self.eval_identifiers = evaluation_identifiers(config.identifiers, self.reward_names)
        self.train_prompts = read_prompt_list(config.prompts.train, config.prompts.train_file, "prompts.train")
        self.eval_prompts = read_prompt_list(config.prompts.evaluation, config.prompts.evaluation_file, "prompts.evaluation")
        self.trains_t2i = config.mode in ("joint", "t2i")
        self.trains_expander = config.mode in ("joint", "expander")

        torch.manual_seed(config.seed)
        shapes_world = resolve_world(config.world)
        self.policy = build_policy(
            with_world(config.model.pipeline, shapes_world), config.model.dtype, self.device, config.model.gradient_checkpointing
        )
        self.t2i_params = self.policy.add_lora(config.model.lora)
        if not self.trains_t2i:
            for p in self.t2i_params:
                p.requires_grad_(False)
        self.policy.unet.eval()
        world_dir = config.output_dir / "world"
        with acc.main_process_first():
            settings = resolve_reward_settings(
                self.reward_names, with_world(config.rewards.settings, shapes_world), world_dir, str(self.device), acc.is_main_process
            )
        self.evaluator = build_evaluator(settings)
        self.expander = build_expander(
            with_world(config.expander.model, shapes_world),
            config.expander.sampling,
            config.expander.lora_rank,
            config.expander.lora_target_modules,
            self.train_prompts,
            self.device,
        )
        sampling = config.sampling
        #: inference (held-out) guidance: prompt-centred on (c, "<ids>, ĉ") with an expander, else CFG
        self.guidance = (
            Guidance.prompt_centred(sampling.w1, sampling.w2) if self.expander is not None else Guidance.cfg(sampling.guidance_scale)
        )
        self.training_guidance = (
            Guidance.prompt_centred(sampling.w1, sampling.w2)
            if sampling.training_guidance == "prompt_centred"
            else Guidance.cfg(sampling.guidance_scale)
        )
        self.t2i_optimizer = (
            torch.optim.AdamW(self.t2i_params, lr=config.t2i.lr, weight_decay=config.t2i.weight_decay)
            if self.trains_t2i
            else None
        )
        self.expander_optimizer = (
            torch.optim.AdamW(self.expander.trainable_parameters(), lr=config.expander.lr)
            if self.trains_expander
            else None
        )
        self.tracker = PerPromptStatTracker(config.selection.stat_buffer_size, config.selection.stat_min_count)
        self.iteration = 0

    # ----- 1. prompts ------------------------------------------------------------------------
    def draw_prompts(self, iteration: int) -> list[str]:
        """The global batch of original prompts (uniform with replacement), identical on every process."""
        generator = torch.Generator().manual_seed(derived_seed(self.config.seed, iteration, _PROMPTS))
        total = self.config.sampling.prompts_per_process * self.world
        picks = torch.randint(len(self.train_prompts), (total,), generator=generator).tolist()
        return [self.train_prompts[i] for i in picks]

    def local_prompts(self, global_prompts: list[str]) -> list[str]:
        per = self.config.sampling.prompts_per_process
        return global_prompts[self.rank * per : (self.rank + 1) * per]

    # ----- 2. expansion ----------------------------------------------------------------------
    def expand(self, prompts: list[str], iteration: int) -> Expansions | None:
        """E·K_id expansions per prompt (one per group, prompt-major), or None without an expander."""
        if self.expander is None:
            return None
        return self.expander.sample(
            prompts, self.layout.groups_per_prompt, generator_seed=derived_seed(self.config.seed, iteration, _EXPANDER, self.rank)
        )

    @staticmethod
    def expanded_texts(prompts: list[str], expansions: Expansions | None) -> list[str]:
        """ĉ per expansion row (``prompts`` itself without an expander); an empty expansion falls back
        to its c (the T2I model refuses empty prompts)."""
        if expansions is None:
            return list(prompts)
        return [text if text.strip() else prompt for prompt, text in zip(expansions.prompts, expansions.texts)]

    def group_texts(self, prompts: list[str], expanded: list[str]) -> list[str]:
        """ĉ per group of ``prompts``: ``expanded`` has one text per group, or one per prompt (ĉ = c) to repeat."""
        groups = self.layout.groups_per_prompt
        if len(expanded) == len(prompts) * groups:
            return list(expanded)
        if len(expanded) == len(prompts):
            return [text for text in expanded for _ in range(groups)]
        raise ValueError(f"{len(expanded)} expanded prompts for {len(prompts)} prompts × {groups} groups")

    # ----- 3. images -------------------------------------------------------------------------
    def conditioning_prompts(self, expanded: list[str], reward_index: torch.Tensor | None) -> list[str]:
        """"<k>, ĉ" per image (ĉ alone when identifiers are off or ``reward_index`` is None)."""
        if not self.config.identifiers.enabled or reward_index is None:
            return list(expanded)
        template = self.config.identifiers.template
        return [with_identifiers(text, [self.reward_names[int(k)]], template) for text, k in zip(expanded, reward_index)]

    def sample_images(
        self, prompts: list[str], expanded: list[str], iteration: int, offset: int, part: slice = slice(None)
    ) -> Rollout:
        """The N images of every group of ``prompts`` (``part``: only those images of the layout-ordered
        list), with trajectories; ``expanded`` gives ĉ per group (or per prompt, see :meth:`group_texts`).

        Image i is drawn from its own generator seeded by its global index ``offset + i``, so any
        split of the images into parts samples exactly the images of one call. With ``t2i.estimator``
        ``rwr`` the images come from the base model (LoRA off), as DPOK's supervised baseline.
        """
        layout = self.layout.for_prompts(len(prompts))
        texts = self.group_texts(prompts, expanded)
        indices = range(layout.num_images)[part]
        originals = [prompts[p] for p in layout.image_prompt()[part].tolist()]
        expanded_per_image = [texts[g] for g in layout.image_group()[part].tolist()]
        own = layout.image_identifier()[part]
        generators = [
            torch.Generator(self.device).manual_seed(derived_seed(self.config.seed, iteration, _IMAGES, offset + i))
            for i in indices
        ]
        model = self.policy.adapters_disabled() if self.config.t2i.estimator == "rwr" else contextlib.nullcontext()
        with model:
            trajectory = self.sample_policy(
                self.conditioning_prompts(expanded_per_image, own), originals, generators, self.training_guidance
            )
        return Rollout(trajectory, originals, expanded_per_image, own, offset + (indices[0] if indices else 0))

    def sample_policy(
        self, conditioning: list[str], originals: list[str] | None, generators: list[torch.Generator], guidance: Guidance | None = None
    ) -> Trajectory:
        """One image per conditioning prompt with the run's sampler settings and ``guidance`` (default:
        the inference guidance ``self.guidance``; c feeds it when it is prompt-centred)."""
        sampling = self.config.sampling
        guidance = self.guidance if guidance is None else guidance
        return self.policy.sample(
            conditioning,
            original_prompts=originals if len(guidance.weights) == 2 else None,
            guidance=guidance,
            negative_prompt=sampling.negative_prompt,
            num_inference_steps=sampling.num_steps,
            eta=sampling.eta,
            generator=generators,
            height=sampling.resolution or None,
            width=sampling.resolution or None,
        )

    # ----- 4–5. rewards, gathered; advantages --------------------------------------------------
    def score(self, rollout: Rollout) -> RewardScores:
        return self.evaluator(rollout.trajectory.images, rollout.original_prompts, expansion_metadata(rollout.expanded_prompts))

    def sample_and_score(self, prompts: list[str], expanded: list[str], iteration: int, offset: int) -> tuple[Rollout, RewardScores]:
        """Stages 3–4, pipelined: the images are sampled in ``sampling.chunks`` parts and part j is
        scored on the evaluator's worker thread while part j+1 samples. Same images, trajectories
        and scores as sampling everything and then scoring it (``chunks`` = 1 does exactly that)."""
        total = self.layout.for_prompts(len(prompts)).num_images
        bounds = chunk_bounds(total, self.config.sampling.chunks)
        if len(bounds) == 1:
            rollout = self.sample_images(prompts, expanded, iteration, offset)
            return rollout, self.score(rollout)
        parts, pending = [], []
        for start, stop in bounds:
            part = self.sample_images(prompts, expanded, iteration, offset, slice(start, stop))
            pending.append(
                self.evaluator.submit(part.trajectory.images, part.original_prompts, expansion_metadata(part.expanded_prompts))
            )
            parts.append(part)
        rollout = Rollout(
            Trajectory.concatenate([p.trajectory for p in parts]),
            [c for p in parts for c in p.original_prompts],
            [e for p in parts for e in p.expanded_prompts],
            torch.cat([p.own_reward for p in parts]),
            offset,
        )
        return rollout, RewardScores.concatenate([future.result() for future in pending])

    def gather_scores(self, scores: RewardScores) -> tuple[torch.Tensor, torch.Tensor]:
        """R and its valid mask of the global batch (process-major order), (N, K) each."""
        packed = torch.cat([scores.scores.float(), scores.valid.float()], dim=1).to(self.device)
        gathered = self.accelerator.gather(packed).cpu() if self.world > 1 else packed.cpu()
        k = len(self.reward_names)
        return gathered[:, :k], gathered[:, k:] > 0.5

    def advantages(self, rewards: torch.Tensor, valid: torch.Tensor, global_prompts: list[str]) -> Advantages:
        """A (N, K) of the global batch: P per group (c, ĉ, k), identifier k's images credited by r_k only."""
        layout = self.layout.for_prompts(len(global_prompts))
        image_prompts = [global_prompts[p] for p in layout.image_prompt().tolist()]
        identifiers = layout.image_identifier() if self.config.identifiers.enabled else None
        return compute_advantages(
            rewards, valid, image_prompts, self.config.selection, self.selection, self.tracker,
            groups=layout.image_group(), identifiers=identifiers,
        )  # fmt: skip

    # ----- 6. T2I update -----------------------------------------------------------------------
    def trained_steps(self, rollout: Rollout, iteration: int) -> torch.Tensor:
        """(N_local, S) step indices per image: all T, or a random subset (DDPO's timestep_fraction)."""
        steps = rollout.trajectory.timesteps.numel()
        count = self.derived.trained_steps_per_image
        rows = []
        for i in range(rollout.trajectory.batch_size):
            if count == steps:
                rows.append(torch.arange(steps))
                continue
            g = torch.Generator().manual_seed(derived_seed(self.config.seed, iteration, _STEPS, rollout.global_offset + i))
            rows.append(torch.randperm(steps, generator=g)[:count].sort().values)
        return torch.stack(rows).to(rollout.trajectory.latents.device)

    def synchronise_gradients(self, parameters: list[torch.nn.Parameter], reduction: str) -> None:
        """All-reduce the gradients of ``parameters`` (one flat tensor; zeros for unused ones)."""
        if self.world == 1:
            return
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in parameters])
        flat = reduce(flat.to(self.device), reduction=reduction)
        offset = 0
        for p in parameters:
            size = p.numel()
            p.grad = flat[offset : offset + size].view_as(p).to(p.dtype)
            offset += size

    def minibatch_steps(self, trainable: torch.Tensor, stats: dict[str, float]) -> Iterator[torch.Tensor]:
        """The T2I update's optimiser steps: for each inner epoch and minibatch of this process's images,
        zero the gradients and yield the indices of the minibatch's ``trainable`` images (the caller
        backpropagates their loss), then sum the gradients over processes, clip and step
        (``stats["grad_norm"]``, the last step's norm)."""
        cfg = self.config.t2i
        per_mb = self.derived.images_per_minibatch
        for _epoch in range(cfg.inner_epochs):
            for mb in range(cfg.minibatches):
                rows = torch.zeros_like(trainable)
                rows[mb * per_mb : (mb + 1) * per_mb] = True
                self.t2i_optimizer.zero_grad(set_to_none=True)
                yield (trainable & rows).nonzero().flatten()
                self.synchronise_gradients(self.t2i_params, "sum")
                stats["grad_norm"] = self._clip_and_step(self.t2i_params, self.t2i_optimizer, cfg.max_grad_norm)

    def update_t2i(self, rollout: Rollout, advantages: torch.Tensor, normaliser: float, iteration: int) -> dict[str, float]:
        """Step 6 on this process's images: −(1/|P|) Σ_i A_i Σ_t log p_θ(x_{t−1}|x_t, "<k_i>, ĉ_i"), A_i = Σ_k A[i, k].

        Every image is trained under the condition it was sampled with (the rollout's own
        trajectory, so DDPO-IS's θ_old log-probs are the recorded ones), in one backward per
        minibatch; identifier credit has already zeroed every column but k_i (:mod:`parrot.selection`).
        """
        cfg = self.config.t2i
        if cfg.estimator == "rwr":
            return self.update_t2i_rwr(rollout, advantages, normaliser, iteration)
        trajectory = rollout.trajectory
        steps = self.trained_steps(rollout, iteration)
        per_image = advantages.to(self.device).sum(1)
        use_kl = cfg.kl_weight > 0
        need = (per_image != 0) | use_kl
        with torch.no_grad():
            old = self.old_log_probs(rollout, trajectory, steps, need) if cfg.estimator == "is" else None
            base_means = self._base_means(rollout, steps) if use_kl else None
        total_images = self.derived.images_per_iteration
        stats = {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0, "grad_norm": 0.0}
        for active in self.minibatch_steps(need, stats):
            if active.numel():
                step = self.policy.recorded_steps(trajectory.select(active), steps[active])
                log_probs = step.log_prob.view(active.numel(), -1)
                policy = t2i_policy_loss(
                    log_probs,
                    per_image[active],
                    normaliser / cfg.minibatches,
                    old_log_probs=None if old is None else old[active],
                    clip_range=cfg.clip_range if cfg.estimator == "is" else None,
                )
                loss = policy.loss
                if use_kl:
                    kl = gaussian_kl(step.mean, base_means[active.repeat_interleave(steps.shape[1]), steps[active].flatten()], step.std)
                    kl = kl.view(active.numel(), -1).sum(1).sum() / (total_images / cfg.minibatches)
                    loss = loss + cfg.kl_weight * kl
                    stats["kl"] += float(kl.detach()) / cfg.inner_epochs
                loss.backward()
                stats["loss"] += float(loss.detach()) / cfg.inner_epochs
                stats["clip_fraction"] += float(policy.clip_fraction) / (cfg.inner_epochs * cfg.minibatches)
        return stats

    def update_t2i_rwr(self, rollout: Rollout, advantages: torch.Tensor, normaliser: float, iteration: int) -> dict[str, float]:
        """DPOK's supervised baseline (``t2i.estimator`` rwr) on base-model samples: the ε-prediction
        denoising loss at the trained steps, weighted by w_i = max(Σ_k A[i, k], 0) (:func:`parrot.losses.rwr_weights`)."""
        cfg = self.config.t2i
        trajectory = rollout.trajectory
        steps = self.trained_steps(rollout, iteration)
        weights = rwr_weights(advantages.to(self.device).sum(1))
        noisy, target, t = self.noised_samples(rollout, steps, iteration)
        conditioning = self.policy.build_conditioning([trajectory.prompts], Guidance.cfg(1.0))  # ε(x_t, t, "<k>, ĉ")
        per_step = steps.shape[1]
        stats = {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0, "grad_norm": 0.0}
        for active in self.minibatch_steps(weights > 0, stats):
            if active.numel():
                samples = active.repeat_interleave(per_step)
                prediction = self.policy.predict_noise(
                    noisy[active].flatten(0, 1), t[active].flatten(), conditioning, index=samples
                )
                loss = reward_weighted_denoising_loss(
                    prediction.view(active.numel(), per_step, *prediction.shape[1:]),
                    target[active],
                    weights[active],
                    normaliser / cfg.minibatches,
                )
                loss.backward()
                stats["loss"] += float(loss.detach()) / cfg.inner_epochs
        return stats

    def noised_samples(self, rollout: Rollout, steps: torch.Tensor, iteration: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε of each image's final latent x_0 at its trained steps' timesteps,
        the regression target (ε, or v for v-prediction models) and t; (n, S, …), (n, S, …), (n, S).
        Image i's noise comes from its own generator (seed, iteration, global index)."""
        trajectory = rollout.trajectory
        scheduler = self.policy.scheduler
        x0 = trajectory.latents[:, -1]
        t = trajectory.timesteps.to(steps.device)[steps]
        noise = torch.stack([
            torch.randn((steps.shape[1], *x0.shape[1:]), device=x0.device, dtype=x0.dtype, generator=torch.Generator(
                x0.device).manual_seed(derived_seed(self.config.seed, iteration, _NOISE, rollout.global_offset + i)))
            for i in range(x0.shape[0])
        ])  # fmt: skip
        clean = x0[:, None].expand_as(noise)
        flat_t = t.flatten().to(x0.device)
        noisy = scheduler.add_noise(clean.flatten(0, 1), noise.flatten(0, 1), flat_t).view_as(noise)
        if scheduler.config.prediction_type == "v_prediction":
            target = scheduler.get_velocity(clean.flatten(0, 1), noise.flatten(0, 1), flat_t).view_as(noise)
        else:
            target = noise
        return noisy, target, t

    def old_log_probs(self, rollout: Rollout, trajectory: Trajectory, steps: torch.Tensor, need: torch.Tensor) -> torch.Tensor:
        """log p_θold of the trained steps, (N_local, S), rows ``need`` (0 elsewhere), for DDPO-IS's ratio.

        Under the condition the images were sampled with (the rollout's own trajectory), these are
        the log-probs recorded while sampling, with the same weights, as in DDPO and TRL: no extra
        UNet pass. Under another trajectory they are recomputed.
        """
        if trajectory is rollout.trajectory:
            recorded = trajectory.log_probs.gather(1, steps.to(trajectory.log_probs.device))
            return torch.where(need.to(recorded.device).unsqueeze(1), recorded, torch.zeros_like(recorded))
        return self._group_log_probs(trajectory, steps, need)

    def _group_log_probs(self, trajectory: Trajectory, steps: torch.Tensor, need: torch.Tensor) -> torch.Tensor:
        """(N_local, S) log-probs of the rows ``need`` under the current weights (0 elsewhere)."""
        out = torch.zeros(steps.shape, device=steps.device)
        active = need.nonzero().flatten()
        if active.numel():
            out[active] = self.policy.log_probs(trajectory.select(active), steps[active])
        return out

    def _base_means(self, rollout: Rollout, steps: torch.Tensor) -> torch.Tensor:
        """μ_θ₀ of each image's own condition at every trained step, (N_local, T, C, h, w) (zeros off-S)."""
        trajectory = rollout.trajectory
        with self.policy.adapters_disabled():
            step = self.policy.recorded_steps(trajectory, steps)
        latents = trajectory.latents
        out = torch.zeros(latents.shape[0], latents.shape[1] - 1, *latents.shape[2:], device=latents.device)
        rows = torch.arange(latents.shape[0], device=steps.device).repeat_interleave(steps.shape[1])
        out[rows, steps.flatten()] = step.mean
        return out

    def _clip_and_step(self, params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer, max_norm: float) -> float:
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
        optimizer.step()
        return float(norm)

    # ----- 7. expander update ------------------------------------------------------------------
    def update_expander(
        self, expansions: Expansions, advantages: torch.Tensor, relative: torch.Tensor | None = None
    ) -> dict[str, float]:
        """REINFORCE on ĉ with r(ĉ) = mean over its group's images of Σ_k A[i, k], less the baseline of
        ``expander.update.baseline`` (``group_mean``: the mean r over the expansions of the same c);
        gradients averaged over processes. ``advantages`` are this process's rows (whole prompts).
        ``relative`` (groups,) replaces r(ĉ) by Promptist's r(ĉ) − r(c) (:meth:`relative_rewards`)."""
        layout = self.layout.for_prompts(len(expansions) // self.layout.groups_per_prompt)
        rewards = expansion_rewards(advantages, layout) if relative is None else relative
        self.expander_optimizer.zero_grad(set_to_none=True)
        result = self.expander.policy_gradient_loss(
            expansions, rewards, self.config.expander.update, groups=layout.group_prompt()
        )
        result.loss.backward()
        params = self.expander.trainable_parameters()
        self.synchronise_gradients(params, "mean")
        norm = self._clip_and_step(params, self.expander_optimizer, self.config.expander.max_grad_norm)
        return {"loss": float(result.loss.detach()), "kl": float(result.kl.detach()), "grad_norm": norm}

    def relative_rewards(self, prompts: list[str], scores: RewardScores, iteration: int, offset: int) -> torch.Tensor:
        """Promptist's r(ĉ) − r(c) per group (``expander.update.baseline`` original_prompt): images of
        "<k>, c" drawn with the generators of the group's images (the same noise), both sides scored
        raw and credited as the T2I update is (:func:`credited_group_rewards`)."""
        with torch.no_grad():
            originals = self.sample_images(prompts, prompts, iteration, offset)
        plain = self.score(originals)
        layout = self.layout.for_prompts(len(prompts))
        own = layout.image_identifier() if self.config.identifiers.enabled else None
        expanded_r = credited_group_rewards(scores.scores, scores.valid & plain.valid, layout, own)
        original_r = credited_group_rewards(plain.scores, scores.valid & plain.valid, layout, own)
        return expanded_r - original_r

    # ----- one iteration -------------------------------------------------------------------------
    def run_iteration(self, iteration: int) -> dict[str, float]:
        global_prompts = self.draw_prompts(iteration)
        prompts = self.local_prompts(global_prompts)
        expansions = self.expand(prompts, iteration)
        expanded = self.expanded_texts(prompts, expansions)
        offset = self.rank * self.derived.images_per_process
        rollout, scores = self.sample_and_score(prompts, expanded, iteration, offset)
        rewards, valid = self.gather_scores(scores)
        advantages = self.advantages(rewards, valid, global_prompts)
        local = advantages.values[offset : offset + self.derived.images_per_process]
        metrics = {f"reward/{name}/mean": float(rewards[:, k].mean()) for k, name in enumerate(self.reward_names)}
        metrics |= {f"reward/{name}/std": float(rewards[:, k].std()) for k, name in enumerate(self.reward_names)}
        metrics["pareto/selected_fraction"] = float(advantages.selected.float().mean())
        metrics["reward/nonfinite"] = float((~valid).sum())
        if self.trains_t2i:
            metrics |= {f"t2i/{k}": v for k, v in self.update_t2i(rollout, local, advantages.normaliser, iteration).items()}
        if self.trains_expander:
            relative = (
                self.relative_rewards(prompts, scores, iteration, offset)
                if self.config.expander.update.baseline == "original_prompt"
                else None
            )
            metrics |= {f"expander/{k}": v for k, v in self.update_expander(expansions, local, relative).items()}
        self.last_rollout, self.last_scores, self.last_advantages = rollout, scores, advantages
        self.last_rewards = rewards
        return metrics

    # ----- checkpoints -------------------------------------------------------------------------
    def trainable_state(self) -> dict[str, dict[str, torch.Tensor]]:
        state = {"t2i": {n: p for n, p in self.policy.unet.named_parameters() if "lora_" in n}}
        if self.expander is not None:
            state["expander"] = {n: p for n, p in self.expander.model.named_parameters() if p.requires_grad}
        return state

    def save_checkpoint(self, iteration: int) -> Path | None:
        root = self.config.output_dir / "checkpoints"
        path = None
        if self.accelerator.is_main_process:
            with atomic_checkpoint_dir(root, iteration) as tmp:
                for name, tensors in self.trainable_state().items():
                    save_tensors(tensors, tmp / f"{name}_trainable.safetensors")
                self.policy.save_lora(tmp / "lora")
                for name, opt in (("optimizer_t2i", self.t2i_optimizer), ("optimizer_expander", self.expander_optimizer)):
                    if opt is not None:
                        optimizer_state_to_files(opt, tmp, name)
                save_tensors({"torch": torch.get_rng_state()}, tmp / "rng.safetensors")
                write_json(
                    {"iteration": iteration, "stat_tracker": self.tracker.state_dict(), "config": config_to_dict(self.config)},
                    tmp / "state.json",
                )
            prune_checkpoints(root, self.config.keep_checkpoints)
            path = root / f"checkpoint-{iteration:06d}"
        self.accelerator.wait_for_everyone()
        return path

    def load_checkpoint(self, path: Path) -> None:
        for name, params in self.trainable_state().items():
            saved = load_tensors(path / f"{name}_trainable.safetensors")
            missing = sorted(set(params) - set(saved))
            if missing:
                raise ValueError(f"checkpoint {path} lacks {len(missing)} {name} parameter(s), e.g. {missing[0]!r}: other model?")
            with torch.no_grad():
                for key, param in params.items():
                    param.copy_(saved[key])
        for name, opt in (("optimizer_t2i", self.t2i_optimizer), ("optimizer_expander", self.expander_optimizer)):
            if opt is not None:
                optimizer_state_from_files(opt, path, name)
        torch.set_rng_state(load_tensors(path / "rng.safetensors")["torch"])
        state = read_json(path / "state.json")
        self.tracker.load_state_dict(state["stat_tracker"])
        self.iteration = int(state["iteration"])

    # ----- evaluation (parrot.evaluation) ------------------------------------------------------------
    def evaluation_samples(self, setting: str) -> EvaluationSamples:
        """Every held-out image of ``setting`` ('plain_base', 'untrained', 'trained') with its rewards."""
        return held_out_samples(self, setting)

    def evaluate(self) -> dict:
        """The held-out record of the run (``evaluation.json``): plain base, untrained start and trained; {} without held-out prompts."""
        if not self.eval_prompts:
            return {}
        return evaluation_record({s: self.evaluation_samples(s) for s in ("plain_base", "untrained", "trained")})

    # ----- logging -------------------------------------------------------------------------------
    def log_images(self, iteration: int) -> None:
        rollout, scores = self.last_rollout, self.last_scores
        images = np.stack([np.asarray(image) for image in as_pil_images(rollout.trajectory.images.cpu())])
        captions = [
            f"{i}: c={c!r} | prompt={p!r} | " + ", ".join(f"{k}={v:.3f}" for k, v in s.items())
            for i, (c, p, s) in enumerate(zip(rollout.original_prompts, rollout.trajectory.prompts, scores.as_dicts()))
        ]
        scatter = reward_scatter(self.last_rewards, self.last_advantages.selected)
        for tracker in self.accelerator.trackers:
            if tracker.name == "tensorboard":
                tracker.log_images({"samples": images, "pareto_scatter": scatter[None]}, step=iteration, dataformats="NHWC")
                tracker.writer.add_text("samples/captions", "\n\n".join(captions), iteration)

    def save_samples(self, iteration: int) -> Path:
        """The last training batch as ``samples/iteration-NNNNNN.png`` (a grid) and ``.json`` (c, prompt, R, P)."""
        rollout = self.last_rollout
        folder = self.config.output_dir / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        stem = folder / f"iteration-{iteration:06d}"
        images = as_pil_images(rollout.trajectory.images.cpu())
        columns = self.layout.images  # a row per group "<k>, ĉ" (N images; the batch is in layout order)
        make_image_grid(images, rows=len(images) // columns, cols=columns).save(stem.with_suffix(".png"))
        offset = rollout.global_offset
        local = slice(offset, offset + len(images))
        write_json(
            {
                "iteration": iteration,
                "columns": columns,
                "reward_names": self.reward_names,
                "original_prompts": rollout.original_prompts,
                "expanded_prompts": rollout.expanded_prompts,
                "conditioning_prompts": list(rollout.trajectory.prompts),
                "rewards": self.last_rewards[local].tolist(),
                "selected": self.last_advantages.selected[local].tolist(),
            },
            stem.with_suffix(".json"),
        )
        return stem.with_suffix(".png")

    # ----- the loop ------------------------------------------------------------------------------
    def train(self) -> dict[str, dict[str, float]]:
        cfg, acc = self.config, self.accelerator
        cfg.output_dir.mkdir(parents=True, exist_ok=True)
        if acc.is_main_process:
            sys.stdout.write(f"parrot.train: {self.derived.describe()}; selection {cfg.selection.mode}, mode {cfg.mode}\n")
        if cfg.resume:
            path = latest_valid_checkpoint(cfg.output_dir / "checkpoints")  # damaged ones skipped, with a warning
            if path is None:
                logger.warning("resume: no checkpoint in %s; starting from scratch", cfg.output_dir / "checkpoints")
            else:
                self.load_checkpoint(path)
                logger.info("resumed from %s at iteration %d", path, self.iteration)
        if acc.is_main_process and self.iteration == 0:  # a fresh start: no curve of an earlier run in this directory
            (cfg.output_dir / CURVES_FILE).unlink(missing_ok=True)
        if acc.log_with:
            acc.init_trackers(cfg.logging.project, config=_flat_scalars(config_to_dict(cfg)))
        bar = tqdm(range(self.iteration, cfg.iterations), desc="parrot", disable=not acc.is_main_process,
                   initial=self.iteration, total=cfg.iterations)
        for iteration in bar:
            started = time.perf_counter()
            metrics = self.run_iteration(iteration)
            metrics["time/iteration_s"] = time.perf_counter() - started
            self.iteration = iteration + 1
            acc.log(metrics, step=self.iteration)
            if acc.is_main_process:
                append_curve(cfg.output_dir, self.iteration, metrics)
            bar.set_postfix({k.split("/")[1]: f"{v:.3g}" for k, v in metrics.items() if k.endswith("/mean")})
            if acc.is_main_process and cfg.logging.images_every and self.iteration % cfg.logging.images_every == 0:
                self.log_images(self.iteration)
            if (cfg.checkpoint_every and self.iteration % cfg.checkpoint_every == 0) or self.iteration == cfg.iterations:
                self.save_checkpoint(self.iteration)
                if acc.is_main_process:
                    self.save_samples(self.iteration)
        results: dict[str, dict[str, float]] = {}
        if acc.is_main_process:
            self.save_final()
            if cfg.evaluation.enabled and self.eval_prompts:  # no held-out prompts: no table
                record = self.evaluate()
                write_json(record, cfg.output_dir / "evaluation.json")
                results = {key: record[key] for key in ("plain_base", "before", "after")}
                sys.stdout.write(format_table(record) + "\n")
        acc.wait_for_everyone()
        acc.end_training()
        return results

    def save_final(self) -> None:
        final = self.config.output_dir / "final"
        self.policy.save_lora(final / "lora")
        if self.expander is not None:
            self.expander.save_pretrained(final / "expander")


def _flat_scalars(tree: dict, prefix: str = "") -> dict[str, float | int | str | bool]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= _flat_scalars(value, f"{prefix}{key}.")
        else:
            flat[prefix + key] = value if isinstance(value, (int, float, str, bool)) else json.dumps(value)
    return flat


def expansion_rewards(advantages: torch.Tensor, layout: BatchLayout) -> torch.Tensor:
    """r(ĉ) of every group (= sampled expansion): the mean over its N images of Σ_k A[i, k], (groups,)."""
    if advantages.shape[0] != layout.num_images:
        raise ValueError(f"{advantages.shape[0]} advantage rows for a layout of {layout.num_images} images")
    return advantages.sum(1).view(layout.num_groups, layout.images).mean(1)


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


def chunk_bounds(total: int, chunks: int) -> list[tuple[int, int]]:
    """``total`` items split into at most ``chunks`` contiguous (start, stop) parts of near-equal size."""
    chunks = max(1, min(chunks, total))
    edges = [round(j * total / chunks) for j in range(chunks + 1)]
    return [(a, b) for a, b in zip(edges, edges[1:]) if b > a]


def reward_scatter(rewards: torch.Tensor, selected: torch.Tensor, size: int = 256) -> np.ndarray:
    """The batch's rewards 1 vs 2 (or reward 1 vs image index when K = 1), P in red, as an (H, W, 3) uint8 image."""
    from PIL import Image, ImageDraw

    x = rewards[:, 0].double()
    y = rewards[:, 1].double() if rewards.shape[1] > 1 else torch.arange(len(x), dtype=torch.double)

    def scaled(v: torch.Tensor) -> torch.Tensor:
        span = (v.max() - v.min()).clamp(min=1e-12)
        return 16 + (v - v.min()) / span * (size - 32)

    canvas = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(canvas)
    for xi, yi, chosen in zip(scaled(x).tolist(), scaled(y).tolist(), selected.tolist()):
        draw.ellipse([xi - 3, size - yi - 3, xi + 3, size - yi + 3], fill="red" if chosen else "gray")
    return np.asarray(canvas)


def main(argv: list[str] | None = None) -> None:
    config = load_train_config(argv)
    ParrotTrainer(config).train()


if __name__ == "__main__":
    run_cli(main)
