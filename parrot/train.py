"""``python -m parrot.train``: Parrot's joint multi-reward RL loop (Lee et al. 2024, Alg. 1) and its baselines.

One iteration (each stage is a method you can call alone):

1. ``draw_prompts``     a global batch of original prompts c (the same on every process)
2. ``expand``           the expander samples ĉ ~ p_φ(·|c) (log-probs kept); ĉ = c without one
3. ``sample_images``    for each reward k, images from "<k>, ĉ" (identifiers on) with trajectories
4. ``score``            every reward scores every image against the ORIGINAL prompt c → R (N_local, K)
   (``sample_and_score`` runs 3–4, scoring part j of the images while part j+1 samples when
   ``sampling.chunks`` > 1; same images and scores either way)
5. ``gather_scores``    R of all processes → the global batch; advantages A (N, K) with the
                        non-dominated set P (:mod:`parrot.selection`)
6. ``update_t2i``       −(1/|P|) Σ_k Σ_{i∈P} A[i,k] Σ_t log p_θ(x_{t−1}|x_t, c_k) on this process's
                        slice (SF or PPO-clipped IS, + β·KL to the LoRA-off base as DPOK);
                        gradients summed over processes (:mod:`parrot.losses`)
7. ``update_expander``  −r(ĉ) log p_φ(ĉ|c) + β_φ·KL(p_φ‖p_SFT), r(ĉ) = mean over ĉ's images of Σ_k A[i,k]
8. log, checkpoint

Baselines are settings of the same loop: ``selection.mode`` weighted / single:<reward>,
``mode`` t2i / expander, ``t2i.estimator`` sf / is, ``t2i.kl_weight`` (DPOK).

Determinism: every random draw of iteration n comes from a generator seeded by
(seed, n, global image or process index, purpose), so a resumed run repeats exactly the
draws of an uninterrupted one, and a 1-process run with batch 2B draws the same images as
2 processes with batch B each.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import sys
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
from parrot.identifiers import evaluation_identifiers, with_identifiers
from parrot.losses import gaussian_kl, t2i_policy_loss
from parrot.selection import Advantages, PerPromptStatTracker, compute_advantages, parse_selection
from parrot.train_config import TrainConfig, derived_quantities, load_train_config
from parrot.world import (
    build_evaluator,
    build_expander,
    build_policy,
    expander_base,
    resolve_reward_settings,
    resolve_world,
    with_world,
)
from prompt_expander.expander import Expansions
from rewards import RewardScores
from rewards.base import as_pil_images, expansion_metadata
from t2i import Guidance, Trajectory

__all__ = ["ParrotTrainer", "Rollout", "EvaluationSamples", "chunk_bounds", "derived_seed", "read_prompt_list", "main"]

logger = logging.getLogger(__name__)

# purposes of derived seeds
_PROMPTS, _IMAGES, _STEPS, _EXPANDER, _EVAL = range(5)


def derived_seed(*parts: int) -> int:
    """A 63-bit seed from integers (numpy's SeedSequence hashing: independent streams per tuple)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def read_prompt_list(inline: tuple[str, ...], path: str, what: str) -> list[str]:
    prompts = list(inline)
    if path:
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"{what}: no prompt file at {path!r}")
        prompts += [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    for i, p in enumerate(prompts):
        if not p.strip():
            raise ValueError(f"{what}[{i}] is an empty prompt")
    return prompts


@dataclass
class Rollout:
    """This process's samples of one iteration (images prompt-major: prompt p's j-th image is p·n + j)."""

    trajectory: Trajectory
    original_prompts: list[str]  # c per image
    expanded_prompts: list[str]  # ĉ per image
    own_reward: torch.Tensor  # (N_local,) index k of the identifier the image was sampled with (0 when off)
    global_offset: int  # global index of this process's first image


@dataclass
class EvaluationSamples:
    """The held-out images of one evaluation: row j is prompt ``prompts[j]`` sampled with seed ``seeds[j]``."""

    reward_names: list[str]
    prompts: list[str]  # original prompts c
    expanded_prompts: list[str]  # ĉ (= c without an expander)
    seeds: list[int]
    scores: torch.Tensor  # R (N, K), float64
    images: torch.Tensor  # (N, 3, H, W) in [0, 1]

    def means(self) -> dict[str, float]:
        return {name: float(self.scores[:, k].mean()) for k, name in enumerate(self.reward_names)}

    def to_json(self) -> dict:
        """Everything but the images, as JSON-ready lists."""
        return {
            "reward_names": self.reward_names,
            "prompts": self.prompts,
            "expanded_prompts": self.expanded_prompts,
            "seeds": self.seeds,
            "scores": self.scores.tolist(),
        }


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
        self.guidance = (
            Guidance.prompt_centred(config.sampling.w1, config.sampling.w2)
            if self.expander is not None
            else Guidance.cfg(config.sampling.guidance_scale)
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
        if self.expander is None:
            return None
        return self.expander.sample(prompts, generator_seed=derived_seed(self.config.seed, iteration, _EXPANDER, self.rank))

    @staticmethod
    def expanded_texts(prompts: list[str], expansions: Expansions | None) -> list[str]:
        """ĉ per prompt; an empty expansion falls back to c (the T2I model refuses empty prompts)."""
        if expansions is None:
            return list(prompts)
        return [text if text.strip() else prompt for prompt, text in zip(prompts, expansions.texts)]

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
        """The images of ``prompts`` (``part``: only those images of the prompt-major list), with trajectories.

        Image i is drawn from its own generator seeded by its global index ``offset + i``, so any
        split of the images into parts samples exactly the images of one call.
        """
        n = self.config.sampling.images_per_prompt
        originals = [p for p in prompts for _ in range(n)]
        expanded_per_image = [e for e in expanded for _ in range(n)]
        own = torch.arange(len(originals)) % len(self.reward_names) if self.config.identifiers.enabled else torch.zeros(
            len(originals), dtype=torch.long
        )
        indices = range(len(originals))[part]
        originals, expanded_per_image, own = [originals[i] for i in indices], [expanded_per_image[i] for i in indices], own[part]
        generators = [
            torch.Generator(self.device).manual_seed(derived_seed(self.config.seed, iteration, _IMAGES, offset + i))
            for i in indices
        ]
        trajectory = self.sample_policy(self.conditioning_prompts(expanded_per_image, own), originals, generators)
        return Rollout(trajectory, originals, expanded_per_image, own, offset + (indices[0] if indices else 0))

    def sample_policy(self, conditioning: list[str], originals: list[str], generators: list[torch.Generator]) -> Trajectory:
        """One image per conditioning prompt with the run's guidance and sampler settings (c feeds
        prompt-centred guidance when there is an expander)."""
        sampling = self.config.sampling
        return self.policy.sample(
            conditioning,
            original_prompts=originals if self.expander is not None else None,
            guidance=self.guidance,
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
        total = len(prompts) * self.config.sampling.images_per_prompt
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
        n = self.config.sampling.images_per_prompt
        image_prompts = [p for p in global_prompts for _ in range(n)]
        return compute_advantages(rewards, valid, image_prompts, self.config.selection, self.selection, self.tracker)

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

    def condition_groups(self, rollout: Rollout, advantages: torch.Tensor) -> list[tuple[Trajectory, torch.Tensor, torch.Tensor]]:
        """(trajectory under c_k, A[:, k], own mask) per condition c_k; one group with Σ_k A when identifiers are off."""
        trajectory = rollout.trajectory
        if not self.config.identifiers.enabled:
            return [(trajectory, advantages.sum(1), torch.ones(trajectory.batch_size, dtype=torch.bool))]
        groups = []
        for k in range(len(self.reward_names)):
            prompts = self.conditioning_prompts(rollout.expanded_prompts, torch.full((trajectory.batch_size,), k))
            conditions = [rollout.original_prompts, prompts] if self.expander is not None else [prompts]
            conditioning = self.policy.build_conditioning(conditions, self.guidance, self.config.sampling.negative_prompt)
            groups.append((dataclasses.replace(trajectory, conditioning=conditioning), advantages[:, k], rollout.own_reward == k))
        return groups

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

    def update_t2i(self, rollout: Rollout, advantages: torch.Tensor, normaliser: float, iteration: int) -> dict[str, float]:
        cfg = self.config.t2i
        steps = self.trained_steps(rollout, iteration)
        groups = self.condition_groups(rollout, advantages.to(self.device))
        use_kl = cfg.kl_weight > 0
        count = rollout.trajectory.batch_size
        needs = [(adv != 0) | (own if use_kl else torch.zeros_like(own)) for _, adv, own in groups]
        old = []
        with torch.no_grad():
            for (trajectory, _, _), need in zip(groups, needs):
                old.append(self.old_log_probs(rollout, trajectory, steps, need) if cfg.estimator == "is" else None)
            base_means = self._base_means(rollout, steps) if use_kl else None
        per_mb = self.derived.images_per_minibatch
        total_images = self.derived.images_per_iteration
        stats = {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0, "grad_norm": 0.0}
        for _epoch in range(cfg.inner_epochs):
            for mb in range(cfg.minibatches):
                rows = torch.zeros(count, dtype=torch.bool)
                rows[mb * per_mb : (mb + 1) * per_mb] = True
                self.t2i_optimizer.zero_grad(set_to_none=True)
                for j, ((trajectory, adv, own), need) in enumerate(zip(groups, needs)):
                    active = (need & rows.to(need.device)).nonzero().flatten()
                    if active.numel() == 0:
                        continue
                    step = self.policy.recorded_steps(trajectory.select(active), steps[active])
                    log_probs = step.log_prob.view(active.numel(), -1)
                    policy = t2i_policy_loss(
                        log_probs,
                        adv[active],
                        normaliser / cfg.minibatches,
                        old_log_probs=None if old[j] is None else old[j][active],
                        clip_range=cfg.clip_range if cfg.estimator == "is" else None,
                    )
                    loss = policy.loss
                    if use_kl:
                        own_rows = own[active].to(log_probs.device)
                        kl = gaussian_kl(step.mean, base_means[active.repeat_interleave(steps.shape[1]), steps[active].flatten()], step.std)
                        kl = (kl.view(active.numel(), -1).sum(1) * own_rows).sum() / (total_images / cfg.minibatches)
                        loss = loss + cfg.kl_weight * kl
                        stats["kl"] += float(kl.detach()) / cfg.inner_epochs
                    loss.backward()
                    stats["loss"] += float(loss.detach()) / cfg.inner_epochs
                    stats["clip_fraction"] += float(policy.clip_fraction) / (cfg.inner_epochs * cfg.minibatches * len(groups))
                self.synchronise_gradients(self.t2i_params, "sum")
                stats["grad_norm"] = self._clip_and_step(self.t2i_params, self.t2i_optimizer, cfg.max_grad_norm)
        return stats

    def old_log_probs(self, rollout: Rollout, trajectory: Trajectory, steps: torch.Tensor, need: torch.Tensor) -> torch.Tensor:
        """log p_θold of the trained steps, (N_local, S), rows ``need`` (0 elsewhere), for DDPO-IS's ratio.

        Under the condition the images were sampled with (identifiers off: the rollout's own
        trajectory), these are the log-probs recorded while sampling, with the same weights, as in
        DDPO and TRL: no extra UNet pass. Under another condition c_k they are recomputed.
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
    def update_expander(self, expansions: Expansions, advantages: torch.Tensor) -> dict[str, float]:
        """REINFORCE on ĉ with r(ĉ) = mean over its images of Σ_k A[i, k]; gradients averaged over processes."""
        n = self.config.sampling.images_per_prompt
        rewards = advantages.sum(1).view(-1, n).mean(1)
        self.expander_optimizer.zero_grad(set_to_none=True)
        result = self.expander.policy_gradient_loss(expansions, rewards, self.config.expander.update)
        result.loss.backward()
        params = self.expander.trainable_parameters()
        self.synchronise_gradients(params, "mean")
        norm = self._clip_and_step(params, self.expander_optimizer, self.config.expander.max_grad_norm)
        return {"loss": float(result.loss.detach()), "kl": float(result.kl.detach()), "grad_norm": norm}

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
            metrics |= {f"expander/{k}": v for k, v in self.update_expander(expansions, local).items()}
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

    # ----- evaluation ----------------------------------------------------------------------------
    @torch.no_grad()
    def evaluation_samples(self, base: bool) -> EvaluationSamples:
        """Every held-out image (prompt × seed, fixed noise), trained or base (adapters off), with its rewards."""
        context = self.policy.adapters_disabled() if base else contextlib.nullcontext()
        expander_context = expander_base(self.expander) if base and self.expander is not None else contextlib.nullcontext()
        template = self.config.identifiers.template
        columns, prompts, expanded_all, seeds, images = [], [], [], [], []
        with context, expander_context:
            for seed in self.config.evaluation.seeds:
                expansions = (
                    self.expander.sample(
                        self.eval_prompts,
                        temperature=self.config.evaluation.expander_temperature or None,
                        generator_seed=derived_seed(seed, _EVAL),
                    )
                    if self.expander is not None
                    else None
                )
                expanded = self.expanded_texts(self.eval_prompts, expansions)
                generators = [
                    torch.Generator(self.device).manual_seed(derived_seed(seed, _EVAL, i)) for i in range(len(expanded))
                ]
                conditioning = [with_identifiers(e, self.eval_identifiers, template) for e in expanded]
                trajectory = self.sample_policy(conditioning, self.eval_prompts, generators)
                columns.append(self.evaluator(trajectory.images, self.eval_prompts, expansion_metadata(expanded)).scores)
                prompts += self.eval_prompts
                expanded_all += expanded
                seeds += [seed] * len(expanded)
                images.append(trajectory.images.cpu())
        return EvaluationSamples(
            reward_names=list(self.reward_names),
            prompts=prompts,
            expanded_prompts=expanded_all,
            seeds=seeds,
            scores=torch.cat(columns).cpu().double(),
            images=torch.cat(images),
        )

    def evaluate(self, base: bool) -> dict[str, float]:
        """Mean of each reward on the held-out prompts × seeds (see :meth:`evaluation_samples`)."""
        if not self.eval_prompts:
            return {}
        return self.evaluation_samples(base).means()

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
        columns = self.config.sampling.images_per_prompt  # a row per prompt (images are prompt-major)
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
        if acc.log_with:
            acc.init_trackers(cfg.logging.project, config=_flat_scalars(config_to_dict(cfg)))
        bar = tqdm(range(self.iteration, cfg.iterations), desc="parrot", disable=not acc.is_main_process,
                   initial=self.iteration, total=cfg.iterations)
        for iteration in bar:
            metrics = self.run_iteration(iteration)
            self.iteration = iteration + 1
            acc.log(metrics, step=self.iteration)
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
                before, after = self.evaluation_samples(base=True), self.evaluation_samples(base=False)
                results = {"before": before.means(), "after": after.means()}
                write_json(results | {"images": {"before": before.to_json(), "after": after.to_json()}},
                           cfg.output_dir / "evaluation.json")
                sys.stdout.write(format_table(results) + "\n")
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


def format_table(results: dict[str, dict[str, float]]) -> str:
    """The held-out before/after table (markdown)."""
    before, after = results["before"], results["after"]
    lines = ["| reward | before | after | Δ |", "|---|---|---|---|"]
    lines += [f"| {k} | {before[k]:.4f} | {after[k]:.4f} | {after[k] - before[k]:+.4f} |" for k in before]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    config = load_train_config(argv)
    ParrotTrainer(config).train()


if __name__ == "__main__":
    run_cli(main)
