"""``python -m parrot.train``: Parrot's joint multi-reward RL loop (Lee et al. 2024, Alg. 1) and its baselines.

Notation (the paper's, used throughout the stage modules): c an original prompt, ĉ its expansion
sampled by the prompt expander p_φ, <k> the identifier of reward k (K rewards), x an image sampled
by the T2I model p_θ from "<k>, ĉ", R the (N, K) rewards of the batch's N images, P the
non-dominated set of a group, A the (N, K) advantages (:class:`parrot.selection.Advantages`).

One iteration (:meth:`ParrotTrainer.run_iteration`; each stage is a function over the run's
:class:`~parrot.parts.TrainingParts` that you can call alone); the batch is prompts × expansions ×
identifiers × images (:class:`parrot.layout.BatchLayout`), a *group* being the N images of one
(c, ĉ, k), N = ``sampling.images_per_prompt`` / (E·K) (K = 1 with identifiers off):

1. ``rollout.draw_prompts``     a global batch of original prompts c (the same on every process)
2. ``rollout.expand``           the expander samples E expansions ĉ ~ p_φ(·|c) per prompt, E per identifier k
                                when identifiers are on (log-probs kept); ĉ = c without one
3. ``rollout.sample_images``    N images per group from "<k>, ĉ" (ĉ alone with identifiers off), with CFG on
                                that text (``sampling.training_guidance``), keeping trajectories
4. ``rollout.score``            every reward scores every image against the ORIGINAL prompt c → R (N_local, K)
   (``rollout.sample_and_score`` runs 3–4, scoring part j of the images while part j+1 samples when
   ``sampling.chunks`` > 1; same images and scores either way)
5. ``credit.gather_scores``     R of all processes → the global batch; ``credit.batch_advantages``: the
                                non-dominated set P of each group over all K rewards, A[i, k] = r_k (raw or
                                normalised) on P, and with identifiers only the image's own reward k
                                (:mod:`parrot.selection`)
6. ``t2i_update.update_t2i``    −(1/|P|) Σ_{i∈P} A_i Σ_t log p_θ(x_{t−1}|x_t, "<k_i>, ĉ_i"), A_i = Σ_k A[i, k]
                                (= A[i, k_i] with identifiers on), over all trained steps, under the
                                condition the image was sampled with, one backward
                                on this process's slice (SF or PPO-clipped IS, + β·KL to the LoRA-off base as
                                DPOK; or ``rwr``: DPOK's supervised baseline); gradients summed over processes
7. ``expander_update.update_expander``  −(r(ĉ) − b) log p_φ(ĉ|c) + β_φ·KL(p_φ‖p_SFT), r(ĉ) = mean over ĉ's
                                images of Σ_k z_c(r_k) (credited; z_c over c's images), b the mean r over the expansions of the same c
                                (``group_mean``), or Promptist's r(ĉ) − r(c) on the same noise (``original_prompt``)
8. log (:mod:`parrot.training_log`), checkpoint and run files (:mod:`parrot.run_dir`)

At inference (held-out evaluation, :mod:`parrot.evaluation`) all identifiers are prepended and, with
an expander, Parrot's prompt-centred guidance with weights ``sampling.w1``, ``sampling.w2`` is used (§4.3).

Baselines are settings of the same loop: ``selection.mode`` weighted / gdpo / single:<reward>,
``mode`` t2i / expander, ``t2i.estimator`` sf / is / rwr, ``t2i.kl_weight`` (DPOK). GRPO (Flow-GRPO,
DanceGRPO) is four of them: a group of G images of one prompt (``sampling.images_per_prompt`` = G with one
expansion and identifiers off), advantages relative to the group (``selection.reward_weighting``
normalised + ``gradient_normalisation`` group, the defaults: (r − mean_g) / std_g, a group of one refused; with several
rewards ``weighted`` sums them and z-scores the sum in the group, ``gdpo`` z-scores each reward in its group
and the weighted sum over the batch, ``pareto`` keeps the group's non-dominated set), PPO's clipped ratio
(``t2i.estimator`` is, ``t2i.clip_range``) and the KL to the LoRA-off reference between the two Gaussian
means (``t2i.kl_weight``); ``sampling.guidance_scale`` 1 samples CFG-free and ``sampling.sde_window`` makes
only a window of steps stochastic, and trained (Flow-GRPO-Fast, MixGRPO: :mod:`parrot.sde_window`).
``configs/grpo_tiny_sd3.yaml`` puts them together.

Determinism: every random draw of iteration n comes from a generator seeded by
(seed, n, global image or process index, purpose) (:mod:`parrot.seeding`), so a resumed run repeats
exactly the draws of an uninterrupted one, and a 1-process run with batch 2B draws the same images as
2 processes with batch B each.
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from parrot.checkpoint import latest_valid_checkpoint
from parrot.credit import GatheredRewards, batch_advantages, batch_identifiers, gather_scores, reward_metrics
from parrot.evaluation import EvaluationSamples, evaluation_record, format_table, held_out_samples
from parrot.expander_update import relative_rewards, update_expander
from parrot.parts import TrainingParts, build_parts, make_accelerator
from parrot.prompts import read_prompt_list
from parrot.rollout import Rollout, draw_prompts, expand, expanded_texts, local_prompts, sample_and_score
from parrot.run_dir import (
    CheckpointState,
    RunDir,
    append_curve,
    clear_curves,
    read_checkpoint,
    start_run,
    write_checkpoint,
    write_evaluation,
    write_samples,
)
from parrot.selection import Advantages
from parrot.sharding import full_optimizer_state, full_tensors
from parrot.t2i_update import update_t2i
from parrot.train_config import TrainConfig, load_train_config
from parrot.training_log import flat_scalars, log_images, prefixed, progress_postfix, sample_grid, stopwatch
from parrot_base.cli import run_cli
from parrot_base.config import config_to_dict
from rewards import RewardScores

__all__ = ["ParrotTrainer", "IterationResult", "read_prompt_list", "main"]

logger = logging.getLogger(__name__)


@dataclass
class IterationResult:
    """What one iteration produced: its metrics and the batch the logs and sample dumps show."""

    metrics: dict[str, float]
    rollout: Rollout  # this process's images and trajectories
    scores: RewardScores  # R of this process's images
    gathered: GatheredRewards  # R of the global batch
    advantages: Advantages  # P and A of the global batch


class ParrotTrainer:
    """A run: its parts (:attr:`parts`), its directory (:attr:`run`) and the loop (:meth:`train`)."""

    def __init__(self, config: TrainConfig, accelerator: Accelerator | None = None):
        self.config = config
        sources = config.prompts
        train_prompts = read_prompt_list(sources.train, sources.train_file, "prompts.train", sources.column, sources.split)
        eval_prompts = read_prompt_list(sources.evaluation, sources.evaluation_file, "prompts.evaluation", sources.column, sources.split,
                                        sources.max_evaluation)  # fmt: skip
        self.parts: TrainingParts = build_parts(config, accelerator or make_accelerator(config), train_prompts, eval_prompts)
        self.run = RunDir(config.output_dir)
        self.iteration = 0  # iterations done
        self._held_out: tuple[int, EvaluationSamples] | None = None  # the latest held-out samples and their iteration

    # ----- one iteration: Algorithm 1 -------------------------------------------------------------
    def run_iteration(self, iteration: int, recompute_old_log_probs: bool = False) -> IterationResult:
        """Stages 1–7 of iteration ``iteration`` (module docstring); ``metrics`` holds the batch's rewards,
        |P|/N, the updates' statistics and the seconds of stages 3–4, 6 and 7 (``time/*_s``).
        ``recompute_old_log_probs``: see :func:`parrot.t2i_update.update_t2i` (a benchmark's variant)."""
        parts, seconds = self.parts, {}
        global_prompts = draw_prompts(parts, iteration)  # c, the same on every process
        prompts = local_prompts(parts, global_prompts)
        expansions = expand(parts, prompts, iteration)  # ĉ ~ p_φ(·|c)
        offset = parts.rank * parts.derived.images_per_process
        with stopwatch(seconds, "time/sample_and_score_s"):
            rollout, scores = sample_and_score(parts, prompts, expanded_texts(prompts, expansions), iteration, offset)  # x, R
        gathered = gather_scores(parts, scores)  # R of the global batch
        advantages = batch_advantages(parts, gathered, global_prompts)  # P and A
        metrics = reward_metrics(parts.reward_names, gathered, advantages, batch_identifiers(parts, global_prompts))
        if parts.trains_t2i:
            with stopwatch(seconds, "time/update_t2i_s"):
                metrics |= prefixed("t2i", update_t2i(parts, rollout, advantages, iteration, recompute_old_log_probs))
            if parts.identifier_tokens is not None:
                metrics |= {f"identifier/{name}/turn_deg": deg for name, deg in parts.identifier_tokens.turn_degrees().items()}
        if parts.trains_expander:
            with stopwatch(seconds, "time/update_expander_s"):
                relative = None
                if parts.config.expander.update.baseline == "original_prompt":
                    relative = relative_rewards(parts, prompts, scores, iteration, offset)
                metrics |= prefixed("expander", update_expander(parts, expansions, rollout, gathered, relative))
        return IterationResult(metrics | seconds, rollout, scores, gathered, advantages)

    # ----- the loop -------------------------------------------------------------------------------
    def train(self) -> dict[str, dict[str, float]]:
        """Iterations from the last checkpoint (``resume``) or 0 to ``iterations``, then the final
        weights and the held-out evaluation; returns its plain_base / before / after means."""
        cfg = self.config
        self._start()
        main_process = self.parts.accelerator.is_main_process
        bar = tqdm(range(self.iteration, cfg.iterations), desc="parrot", disable=not main_process,
                   initial=self.iteration, total=cfg.iterations)  # fmt: skip
        for iteration in bar:
            started = time.perf_counter()
            result = self.run_iteration(iteration)
            result.metrics["time/iteration_s"] = time.perf_counter() - started
            self.iteration = iteration + 1
            self._record(result)
            bar.set_postfix(progress_postfix(result.metrics))
        return self._finish()

    def _start(self) -> None:
        cfg, acc = self.config, self.parts.accelerator
        self.run.root.mkdir(parents=True, exist_ok=True)
        if acc.is_main_process:
            start_run(self.run.root)  # refuses a directory of another layout version before reading it
            sys.stdout.write(f"parrot.train: {self.parts.derived.describe()}; selection {cfg.selection.mode}, mode {cfg.mode}\n")
        if cfg.resume:
            self.resume()
        if acc.is_main_process and self.iteration == 0:
            clear_curves(self.run)
        if acc.log_with:
            acc.init_trackers(cfg.logging.project, config=flat_scalars(config_to_dict(cfg)))
        if self.iteration == 0 and (start := self.held_out_metrics()):  # the held-out curve's first point
            acc.log(start, step=0)
            if acc.is_main_process:
                append_curve(self.run, 0, start)

    def _record(self, result: IterationResult) -> None:
        """Log iteration ``self.iteration``'s result; checkpoint (and dump its batch) when due."""
        cfg, acc, parts = self.config, self.parts.accelerator, self.parts
        result.metrics |= self.held_out_metrics()
        acc.log(result.metrics, step=self.iteration)
        if acc.is_main_process:
            append_curve(self.run, self.iteration, result.metrics)
        if acc.is_main_process and cfg.logging.images_every and self.iteration % cfg.logging.images_every == 0:
            log_images(acc, self.iteration, result.rollout, result.scores, result.gathered, result.advantages)
        if (cfg.checkpoint_every and self.iteration % cfg.checkpoint_every == 0) or self.iteration == cfg.iterations:
            self.save_checkpoint(self.iteration)
            if acc.is_main_process:
                grid, record = sample_grid(self.iteration, parts.layout.images, parts.reward_names, result.rollout,
                                           result.gathered, result.advantages)  # fmt: skip
                write_samples(self.run, grid, record)

    def _finish(self) -> dict[str, dict[str, float]]:
        cfg, acc, parts = self.config, self.parts.accelerator, self.parts
        results: dict[str, dict[str, float]] = {}
        lora = full_tensors(parts.trainable_state()["t2i"])  # under FSDP an all-gather of the LoRA: every process
        if acc.is_main_process:
            self.save_final(lora)
        # no held-out prompts: no table; under FSDP every process samples (the sharded model's collectives), one writes
        if cfg.evaluation.enabled and parts.eval_prompts and (acc.is_main_process or parts.sharded):
            record = self.evaluate()
            if acc.is_main_process:
                write_evaluation(self.run, record)
                results = {key: record[key] for key in ("plain_base", "before", "after")}
                sys.stdout.write(format_table(record) + "\n")
        acc.wait_for_everyone()
        acc.end_training()
        return results

    # ----- checkpoints and final weights ------------------------------------------------------------
    def _optimizers(self) -> dict[str, torch.optim.Optimizer | None]:
        return {"t2i": self.parts.t2i_optimizer, "expander": self.parts.expander_optimizer}

    def save_checkpoint(self, iteration: int) -> Path | None:
        """Checkpoint ``iteration`` (the main process writes, every process waits; under FSDP every process first
        all-gathers the LoRA and its optimiser state, :mod:`parrot.sharding`); its path on the main process."""
        parts, path = self.parts, None
        trainable = {part: full_tensors(tensors) for part, tensors in parts.trainable_state().items()}
        optimizers = {name: None if opt is None else full_optimizer_state(opt) for name, opt in self._optimizers().items()}
        if parts.accelerator.is_main_process:
            state = CheckpointState(iteration, parts.tracker.state_dict(), config_to_dict(self.config))
            save_weights = functools.partial(self.save_weights, lora=trainable["t2i"])
            path = write_checkpoint(self.run, state, trainable, save_weights, optimizers, self.config.keep_checkpoints)
        parts.accelerator.wait_for_everyone()
        return path

    def load_checkpoint(self, path: Path) -> None:
        state = read_checkpoint(path, self.parts.trainable_state(), self._optimizers())
        torch.set_rng_state(state.rng)
        self.parts.tracker.load_state_dict(state.stat_tracker)
        self.iteration = state.iteration

    def resume(self) -> None:
        """Load the newest valid checkpoint (damaged ones skipped, with a warning), or warn and start at 0."""
        path = latest_valid_checkpoint(self.run.checkpoints)
        if path is None:
            logger.warning("resume: no checkpoint in %s; starting from scratch", self.run.checkpoints)
        else:
            self.load_checkpoint(path)
            logger.info("resumed from %s at iteration %d", path, self.iteration)

    def save_final(self, lora: Mapping[str, torch.Tensor] | None = None) -> None:
        """The final LoRA (``lora``: its full tensors, gathered by every process under FSDP; default the policy's
        own) and expander (the main process)."""
        self.save_weights(self.run.final_lora, lora)
        if self.parts.expander is not None:
            self.parts.expander.save_pretrained(self.run.final_expander)

    def save_weights(self, lora_dir: Path, lora: Mapping[str, torch.Tensor] | None = None) -> None:
        """The LoRA in ``lora_dir`` and, when they train, the identifier tokens beside it (``identifiers/<reward>/``)."""
        self.parts.policy.save_lora(lora_dir, state_dict=lora)
        if self.parts.identifier_tokens is not None:
            self.parts.identifier_tokens.save(self.parts.policy.pipeline, lora_dir)

    # ----- evaluation (parrot.evaluation) -----------------------------------------------------------
    def evaluation_samples(self, setting: str) -> EvaluationSamples:
        """Every held-out image of ``setting`` ('plain_base', 'untrained', 'trained') with its rewards; 'trained'
        reuses the held-out curve's samples when they were taken at the current iteration (the same weights)."""
        if setting == "trained" and self._held_out is not None and self._held_out[0] == self.iteration:
            return self._held_out[1]
        return held_out_samples(self.parts, setting)

    def held_out_metrics(self) -> dict[str, float]:
        """``heldout/<reward>/mean`` of the held-out images sampled with the weights as they are now, when
        ``evaluation.every`` makes iteration ``self.iteration`` a point of the held-out curve; {} otherwise, and on
        the processes that do not sample (all sample under FSDP, only the main process otherwise)."""
        every, parts = self.config.evaluation.every, self.parts
        if not (every and self.iteration % every == 0 and parts.eval_prompts):
            return {}
        if not (parts.accelerator.is_main_process or parts.sharded):
            return {}
        samples = held_out_samples(parts, "trained")
        self._held_out = (self.iteration, samples)
        return {f"heldout/{name}/mean": value for name, value in samples.means().items()}

    def evaluate(self) -> dict:
        """The held-out record of the run (``evaluation.json``): plain base, untrained start and trained; {} without held-out prompts."""
        if not self.parts.eval_prompts:
            return {}
        return evaluation_record({s: self.evaluation_samples(s) for s in ("plain_base", "untrained", "trained")})


def main(argv: list[str] | None = None) -> None:
    config = load_train_config(argv)
    ParrotTrainer(config).train()


if __name__ == "__main__":
    run_cli(main)
