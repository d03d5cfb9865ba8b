"""The parts of a training run: models, rewards, optimisers and the batch's sizes, built once.

:class:`TrainingParts` is the record every stage of :mod:`parrot.train`'s loop reads
(:mod:`parrot.rollout`, :mod:`parrot.credit`, :mod:`parrot.t2i_update`, :mod:`parrot.expander_update`,
:mod:`parrot.evaluation`); :func:`build_parts` makes it from a :class:`~parrot.train_config.TrainConfig`.
It holds state, not steps: the stages are functions over it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from accelerate.utils import FullyShardedDataParallelPlugin

from parrot.identifiers import IdentifierTokens, add_identifier_tokens, evaluation_identifiers
from parrot.layout import BatchLayout
from parrot.models import build_evaluator, build_expander, build_policy, resolve_reward_settings, resolve_world, with_world
from parrot.run_dir import RunDir
from parrot.selection import PerPromptStatTracker, Selection, parse_selection
from parrot.sharding import check_fsdp_settings, fsdp_plugin_of, is_sharded, reshard, shard_denoiser
from parrot.train_config import DerivedQuantities, TrainConfig, batch_layout, derived_quantities
from prompt_expander.expander import PromptExpander
from rewards import MultiRewardEvaluator
from t2i import DiffusionPolicy, Guidance, Trajectory
from t2i.compile import compile_denoiser

__all__ = ["TrainingParts", "build_parts", "make_accelerator"]

logger = logging.getLogger(__name__)


@dataclass
class TrainingParts:
    """Everything a stage needs; built by :func:`build_parts`."""

    config: TrainConfig
    accelerator: Accelerator
    derived: DerivedQuantities
    layout: BatchLayout  # the layout of one process's prompts (``for_prompts`` for other counts)
    device: torch.device
    reward_names: list[str]
    selection: Selection
    eval_identifiers: list[str]
    train_prompts: list[str]
    eval_prompts: list[str]
    policy: DiffusionPolicy
    t2i_params: list[torch.nn.Parameter]
    evaluator: MultiRewardEvaluator  # images, ORIGINAL prompts, metadata → R (N, K)
    expander: PromptExpander | None  # None without an expander
    guidance: Guidance  # inference (held-out) guidance: prompt-centred with an expander, else CFG
    training_guidance: Guidance  # the guidance rollouts are sampled with
    t2i_optimizer: torch.optim.Optimizer | None  # None unless the T2I model trains
    expander_optimizer: torch.optim.Optimizer | None  # None unless the expander trains
    tracker: PerPromptStatTracker
    identifier_tokens: IdentifierTokens | None = None  # trained identifier tokens (identifiers.trainable_tokens)

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def num_processes(self) -> int:
        return self.accelerator.num_processes

    @property
    def sharded(self) -> bool:
        """Whether the denoiser is sharded over the processes (FSDP, :mod:`parrot.sharding`)."""
        return is_sharded(self.policy.unet)

    @property
    def trains_t2i(self) -> bool:
        return self.config.mode in ("joint", "t2i")

    @property
    def trains_expander(self) -> bool:
        return self.config.mode in ("joint", "expander")

    def sample_policy(
        self,
        conditioning: list[str],
        originals: list[str] | None,
        generators: list[torch.Generator],
        guidance: Guidance | None = None,
        sde_steps: list[int] | None = None,
        eta: float | None = None,
    ) -> Trajectory:
        """One image per conditioning prompt with the run's sampler settings and ``guidance`` (default:
        the inference guidance; c feeds it when it is prompt-centred); ``sde_steps``: the SDE window
        (:func:`parrot.sde_window.window_steps`; None: every step stochastic); ``eta``: another η than
        ``sampling.eta`` (0: the deterministic DDIM / Euler sampler, no log-probs)."""
        sampling = self.config.sampling
        guidance = self.guidance if guidance is None else guidance
        eta = sampling.eta if eta is None else eta
        return self.policy.sample(
            conditioning,
            original_prompts=originals,  # the guidance decides whether c is used
            guidance=guidance,
            negative_prompt=sampling.negative_prompt,
            num_inference_steps=sampling.num_steps,
            eta=eta,
            generator=generators,
            height=sampling.resolution or None,
            width=sampling.resolution or None,
            sde_steps=sde_steps,
            compute_log_probs=eta > 0,
        )

    def trainable_state(self) -> dict[str, dict[str, torch.Tensor]]:
        """The trained tensors by part: ``t2i`` (the LoRA; this process's shards under FSDP) and, with an
        expander, ``expander``."""
        reshard(self.policy.unet)  # FSDP: a unit left gathered after a forward registers its shards again
        state = {"t2i": {n: p for n, p in self.policy.unet.named_parameters() if "lora_" in n}}
        if self.expander is not None:
            state["expander"] = {n: p for n, p in self.expander.model.named_parameters() if p.requires_grad}
        if self.identifier_tokens is not None:
            state["identifier_tokens"] = self.identifier_tokens.state()
        return state


def make_accelerator(config: TrainConfig) -> Accelerator:
    log_with = None if config.logging.log_with == "none" else config.logging.log_with
    # accelerate treats torchrun's processes as one multi-process run only with cpu=True
    # when there is no GPU; without it each CPU process would train alone.
    on_cpu = config.device == "cpu" or (not config.device and not torch.cuda.is_available())
    return Accelerator(cpu=on_cpu, log_with=log_with, project_dir=str(config.output_dir))


def _guidances(config: TrainConfig, has_expander: bool) -> tuple[Guidance, Guidance]:
    """(inference guidance, training guidance)."""
    sampling = config.sampling
    inference = Guidance.choose(has_expander, sampling.w1, sampling.w2, sampling.guidance_scale)
    training = Guidance.choose(sampling.training_guidance == "prompt_centred", sampling.w1, sampling.w2, sampling.guidance_scale)
    return inference, training


def trained_denoiser(
    config: TrainConfig, plugin: FullyShardedDataParallelPlugin | None, policy: DiffusionPolicy, device: torch.device
) -> list[torch.nn.Parameter]:
    """Add the LoRA to the denoiser; then shard it over the processes onto ``device`` with ``plugin`` (an FSDP
    launch, :mod:`parrot.sharding`; the frozen modules follow to ``device`` whole), or compile it
    (``model.compile``; after the adapters, so the graph includes them). Returns the LoRA's parameters (the
    sharded ones under FSDP), frozen unless the T2I model trains."""
    t2i_params = policy.add_lora(config.model.lora)
    if plugin is not None:
        t2i_params = shard_denoiser(policy.unet, plugin, device, t2i_params)
        for module in policy.frozen_modules():  # loaded on the CPU (build_parts); replicated on every process
            module.to(device)
    else:
        compile_denoiser(policy.unet, config.model.compile)
    if config.mode not in ("joint", "t2i"):
        for p in t2i_params:
            p.requires_grad_(False)
    policy.unet.eval()
    return t2i_params


def build_parts(config: TrainConfig, accelerator: Accelerator, train_prompts: list[str], eval_prompts: list[str]) -> TrainingParts:
    """Load the models of ``config`` on this process (reward models: the main process first)."""
    num_processes = accelerator.num_processes
    derived = derived_quantities(config, num_processes)  # config mistakes are refused before any model loads
    reward_names = list(config.rewards.names)
    selection = parse_selection(config.selection, reward_names)
    eval_identifiers = evaluation_identifiers(config.identifiers, reward_names)
    layout = batch_layout(config, num_processes)
    if config.selection.mode == "pareto" and config.selection.scope == "group" and layout.images == 1:
        logger.warning(
            "selection.scope 'group' with 1 image per \"<k>, ĉ\": every image is in P (raise "
            "sampling.images_per_prompt or use selection.scope 'batch')"
        )
    device = accelerator.device if not config.device else torch.device(config.device)
    trains_t2i = config.mode in ("joint", "t2i")
    plugin = fsdp_plugin_of(accelerator)
    if plugin is not None:
        check_fsdp_settings(plugin, config.model.compile.enabled)
        if config.identifiers.trainable_tokens:
            raise ValueError("identifiers.trainable_tokens is not supported under FSDP (the text towers are not sharded)")
    torch.manual_seed(config.seed)
    shapes_world = resolve_world(config.world)
    # FSDP loads on the CPU: fully_shard moves only this process's shards of the denoiser to the device
    policy = build_policy(
        with_world(config.model.pipeline, shapes_world), config.model.dtype, device if plugin is None else "cpu",
        config.model.gradient_checkpointing,
        config.model.distilled_guidance,
    )  # fmt: skip
    t2i_params = trained_denoiser(config, plugin, policy, device)
    with accelerator.main_process_first():
        settings = resolve_reward_settings(
            reward_names, with_world(config.rewards.settings, shapes_world), RunDir(config.output_dir).builtin_models, str(device),
            accelerator.is_main_process,
        )  # fmt: skip
    evaluator = build_evaluator(settings)
    expander = build_expander(
        with_world(config.expander.model, shapes_world), config.expander.sampling, config.expander.lora_rank,
        config.expander.lora_target_modules, train_prompts, device,
    )  # fmt: skip
    guidance, training_guidance = _guidances(config, expander is not None)
    param_groups = [{"params": t2i_params}]
    tokens = None
    if config.identifiers.trainable_tokens:
        tokens, matrices = add_identifier_tokens(policy.pipeline, config.identifiers, reward_names)
        # the towers' whole embedding matrices, their gradients masked to the tokens' rows; no weight decay, which would
        # shrink every row (t2i.textual_inversion)
        param_groups.append({"params": matrices, "lr": config.identifiers.token_lr, "weight_decay": 0.0})
        t2i_params = [*t2i_params, *matrices]  # summed over processes and clipped with the LoRA
    t2i_optimizer = torch.optim.AdamW(param_groups, lr=config.t2i.lr, weight_decay=config.t2i.weight_decay) if trains_t2i else None
    expander_optimizer = (
        torch.optim.AdamW(expander.trainable_parameters(), lr=config.expander.lr) if config.mode in ("joint", "expander") else None
    )
    return TrainingParts(
        config, accelerator, derived, layout, device, reward_names, selection, eval_identifiers,
        train_prompts, eval_prompts, policy, t2i_params, evaluator, expander, guidance, training_guidance,
        t2i_optimizer, expander_optimizer,
        PerPromptStatTracker(config.selection.stat_buffer_size, config.selection.stat_min_count), tokens,
    )  # fmt: skip
