"""The typed config of ``python -m parrot.train``, its derived quantities and its loading.

Values come, lowest precedence first, from the dataclass defaults, a *preset* (a nested
mapping in :data:`parrot.presets.PRESETS`, chosen by ``--preset`` or a ``preset:`` key in the YAML file;
:data:`parrot.presets.DEFAULT_PRESET` when neither names one), ``--config FILE.yaml`` and ``--dotted.field``
overrides. The ``tiny`` preset is a random toy world built in code (runs anywhere, offline);
``configs/sd15.yaml`` is SD 1.5 with real rewards (``preset: none``). The ``shapes`` preset (the default) runs
on a built shapes world (``world=DIR``, default the committed ``shapes/world``): its SD
pipeline, its expander, its four rewards (aesthetic, preference, CLIPScore alignment against
the original prompt, sentiment) and its prompt files, named through ``{world}`` paths that
:mod:`parrot.models` resolves (prompt files when the config is loaded, models when they are built);
no preset imports the world's code.

``builtin:`` model names are built in code instead of loaded: ``builtin:tiny`` (the toy SD
pipeline of :mod:`t2i.tiny`), ``builtin:tiny_sdxl`` (the toy SDXL pipeline of :mod:`t2i.tiny_sdxl`),
``builtin:tiny_sd3`` (the toy SD3 pipeline of :mod:`t2i.tiny_sd3`; its ``eta`` is Flow-GRPO's noise level a),
``builtin:tiny_flux`` (the toy FLUX.1 pipeline of :mod:`t2i.tiny_flux`, guidance-distilled, the same noise level),
``builtin:tiny_clip`` (a reward setting: the toy CLIP of :mod:`rewards.tiny`, saved under the run
directory) and ``builtin:tiny_gpt2`` (a random GPT-2 expander with a BPE tokenizer trained on the
training prompts); ``builtin:random:<arch>`` is a full-size architecture of :mod:`t2i.random_init`
with random weights, as a pipeline (``sd15``, ``sdxl_base``, …), a reward CLIP setting
(``clip_vit_l14``) or an expander (``gpt2``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parrot.identifiers import IdentifierConfig
from parrot.layout import BatchLayout
from parrot.models import resolve_world, with_world
from parrot.presets import PRESETS, preset_name
from parrot.prompts import PromptsConfig
from parrot.sampling_config import SamplingConfig
from parrot.sde_window import describe_window
from parrot.selection import SelectionConfig
from parrot_base.config import ConfigError, parse_config
from prompt_expander.config import ExpanderSamplingConfig
from prompt_expander.rl import PolicyGradientConfig
from t2i.compile import CompileSettings
from t2i.lora import LoraSettings

__all__ = [
    "TrainConfig", "ModelConfig", "RewardsConfig", "PromptsConfig", "SamplingConfig", "T2IUpdateConfig", "ExpanderTrainingConfig",
    "EvaluationConfig", "LoggingConfig", "DerivedQuantities", "derived_quantities", "batch_layout", "identifier_count",
    "check_groups_of_one", "check_trainable_tokens", "load_train_config",
]  # fmt: skip

_MODES = ("joint", "t2i", "expander")
_ESTIMATORS = ("sf", "is", "rwr")


@dataclass
class ModelConfig:
    pipeline: str = field(
        default="runwayml/stable-diffusion-v1-5",
        metadata={
            "help": "hub id or local diffusers pipeline directory (SD 1.x/2.x, SDXL, SD3 or FLUX.1: read from its model_index.json), "
            "'builtin:tiny' / 'builtin:tiny_sdxl' / 'builtin:tiny_sd3' / 'builtin:tiny_flux', "
            "or 'builtin:random:<arch>' (full size, random weights: sd15, sdxl_base, sd35_medium, flux_dev)"
        },
    )
    dtype: str = field(default="float32", metadata={"help": "UNet/VAE/text-encoder dtype: float32, float16, bfloat16"})
    lora: LoraSettings = field(default_factory=LoraSettings, metadata={"help": "T2I LoRA settings"})
    compile: CompileSettings = field(default_factory=CompileSettings, metadata={"help": "torch.compile of the UNet (off by default)"})
    distilled_guidance: float = field(
        default=3.5,
        metadata={"help": "FLUX.1-dev: the value g of its guidance embedding (FluxPipeline's guidance_scale); others have none"},
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata={
            "help": "recompute UNet activations in the backward pass (UNet.enable_gradient_checkpointing): "
            "less memory per trained step, ~1 extra forward pass of time; same gradients"
        },
    )


@dataclass
class RewardsConfig:
    names: tuple[str, ...] = field(
        default=("laion_aesthetic", "pickscore", "clip_score", "sentiment"),
        metadata={"help": "rewards r_1..r_K by registry name (rewards.reward_names())"},
    )
    settings: dict[str, dict[str, Any]] = field(
        default_factory=dict,
        metadata={
            "help": "per-reward settings {name: {key: value}} (YAML only; entries for rewards not in names are unused); "
            "'builtin:tiny_clip' builds a toy CLIP"
        },
    )

    def __post_init__(self) -> None:
        # "a,b" as parrot.evaluate and parrot.generate take it, or space-separated "a b"
        self.names = tuple(part.strip() for name in self.names for part in str(name).split(",") if part.strip())
        if not self.names:
            raise ValueError("names is empty: give at least one reward")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"names={self.names} repeats a reward")
        if not isinstance(self.settings, dict) or not all(isinstance(v, dict) for v in self.settings.values()):
            raise ValueError(f"settings must be a mapping of reward name to a mapping of settings; got {self.settings!r}")


@dataclass
class T2IUpdateConfig:
    estimator: str = field(
        default="is",
        metadata={
            "help": "'sf' (DDPO-SF, REINFORCE), 'is' (DDPO-IS, PPO clipping) or 'rwr' (DPOK's supervised baseline: "
            "images from the base model, denoising loss weighted by the advantage clipped at 0)"
        },
    )
    clip_range: float = field(default=1e-4, metadata={"help": "PPO ε of DDPO-IS (DDPO: 1e-4)"})
    inner_epochs: int = field(default=1, metadata={"help": "passes over each batch (DDPO-IS may reuse a batch)"})
    minibatches: int = field(default=1, metadata={"help": "optimiser steps per inner epoch (splits each process's images)"})
    timestep_fraction: float = field(default=1.0, metadata={"help": "share of the T steps trained per image (random subset)"})
    lr: float = field(default=3e-4, metadata={"help": "AdamW learning rate of the LoRA"})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient norm clip; 0 = off"})
    kl_weight: float = field(default=0.0, metadata={"help": "β of DPOK's KL to the base model (LoRA off); 0 = off"})

    def __post_init__(self) -> None:
        if self.estimator not in _ESTIMATORS:
            raise ValueError(f"estimator={self.estimator!r}: use one of {_ESTIMATORS}")
        if not 0 < self.clip_range < 1:
            raise ValueError(f"clip_range={self.clip_range} must be in (0, 1)")
        if self.inner_epochs < 1 or self.minibatches < 1:
            raise ValueError(f"inner_epochs={self.inner_epochs} and minibatches={self.minibatches} must be >= 1")
        if self.estimator == "sf" and self.inner_epochs > 1:
            raise ValueError("inner_epochs > 1 reuses samples off-policy: use estimator 'is' (importance sampling)")
        if not 0 < self.timestep_fraction <= 1:
            raise ValueError(f"timestep_fraction={self.timestep_fraction} must be in (0, 1]")
        if not self.lr > 0 or self.kl_weight < 0 or self.max_grad_norm < 0:
            raise ValueError(f"need lr > 0 (got {self.lr}), kl_weight >= 0 ({self.kl_weight}), max_grad_norm >= 0")
        if self.estimator == "rwr" and self.kl_weight > 0:
            raise ValueError(f"kl_weight={self.kl_weight} is the policy-gradient estimators' KL; estimator 'rwr' takes 0")


@dataclass
class ExpanderTrainingConfig:
    """The ``expander.*`` section: the expander p_φ, its LoRA and optimiser, how it samples ĉ, how it is updated."""

    model: str = field(default="", metadata={"help": "causal LM hub id / directory, 'builtin:tiny_gpt2', or '' for no expander (ĉ = c)"})
    lora_rank: int = field(default=8, metadata={"help": "LoRA rank on the expander (0 = train all weights)"})
    lora_target_modules: tuple[str, ...] = field(default=("c_attn", "c_proj"), metadata={"help": "expander LoRA modules"})
    lr: float = field(default=1e-5, metadata={"help": "AdamW learning rate of the expander"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient norm clip; 0 = off"})
    sampling: ExpanderSamplingConfig = field(default_factory=ExpanderSamplingConfig, metadata={"help": "expansion sampling"})
    update: PolicyGradientConfig = field(
        default_factory=PolicyGradientConfig,
        metadata={"help": "policy gradient (baseline 'group_mean': r(ĉ) − the mean over the expansions of the same c)"},
    )


@dataclass
class EvaluationConfig:
    """The held-out table: fixed prompts × fixed seeds, scored against the original prompt, for the plain base
    model, the untrained Parrot start and the trained run (:mod:`parrot.evaluation`)."""

    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata={"help": "sampling seeds of the held-out table"})
    expansion_decoding: str = field(
        default="beam",
        metadata={
            "help": "held-out expansions: 'beam' (near-greedy, the best of evaluation.num_beams beams, as Promptist "
            "evaluates; one ĉ per prompt) or 'sample' (one draw per seed at evaluation.expander_temperature)"
        },
    )
    num_beams: int = field(default=4, metadata={"help": "beams of 'beam' decoding (1 = greedy)"})
    expander_temperature: float = field(
        default=0.0,
        metadata={"help": "expander temperature of 'sample' decoding; 0 = expander.sampling.temperature (the one trained with)"},
    )
    enabled: bool = field(default=True, metadata={"help": "write evaluation.json and print the held-out table at the end"})
    every: int = field(
        default=0,
        metadata={
            "help": "also sample the held-out images with the weights as they are every N iterations, and at the start "
            "(0 = never): their mean rewards go to the tracker and curves.jsonl as heldout/<reward>/mean, whatever "
            "'enabled' says"
        },
    )
    eta: float = field(
        default=-1.0,
        metadata={"help": "η of held-out sampling: < 0 = sampling.eta (as trained); 0 = deterministic DDIM or flow ODE (as Flow-GRPO)"},
    )

    def __post_init__(self) -> None:
        if self.expansion_decoding not in ("beam", "sample"):
            raise ValueError(f"expansion_decoding={self.expansion_decoding!r}: use 'beam' or 'sample'")
        if not isinstance(self.num_beams, int) or self.num_beams < 1:
            raise ValueError(f"num_beams={self.num_beams!r} must be an integer >= 1")
        if not isinstance(self.every, int) or self.every < 0:
            raise ValueError(f"every={self.every!r} must be an integer >= 0 (0: no held-out curve)")
        if not self.expander_temperature >= 0:
            raise ValueError(f"expander_temperature={self.expander_temperature!r} must be > 0 (or 0: the training temperature)")


@dataclass
class LoggingConfig:
    log_with: str = field(default="tensorboard", metadata={"help": "accelerate tracker: tensorboard, wandb, ... or 'none'"})
    images_every: int = field(default=5, metadata={"help": "log an image grid every N iterations (0 = never)"})
    project: str = field(default="parrot", metadata={"help": "tracker project name"})


@dataclass
class TrainConfig:
    """Parrot multi-reward RL of a text-to-image model (and its baselines) in one loop."""

    preset: str = field(default="", metadata={"help": "preset applied under the config file: a name in parrot.presets.PRESETS, or 'none'"})
    mode: str = field(default="joint", metadata={"help": "what trains: 'joint' (T2I + expander), 't2i' or 'expander'"})
    iterations: int = field(default=100, metadata={"help": "training iterations (Alg. 1 loop)"})
    seed: int = field(default=0, metadata={"help": "seed of every random draw (derived per iteration/image)"})
    output_dir: Path = field(default=Path("runs/train"), metadata={"help": "checkpoints, logs and the final LoRA"})
    checkpoint_every: int = field(default=10, metadata={"help": "save a checkpoint every N iterations (0 = only at the end)"})
    keep_checkpoints: int = field(default=2, metadata={"help": "checkpoints kept on disk (oldest deleted)"})
    resume: bool = field(default=False, metadata={"help": "continue from the newest checkpoint in output_dir"})
    device: str = field(default="", metadata={"help": "'' = the accelerator's device; e.g. 'cpu'"})
    world: str = field(
        default="",
        metadata={
            "help": "shapes world directory that '{world}' in model paths, reward settings and prompt files stands for; "
            "'' = the committed shapes/world"
        },
    )
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "T2I model"})
    rewards: RewardsConfig = field(default_factory=RewardsConfig, metadata={"help": "rewards"})
    prompts: PromptsConfig = field(default_factory=PromptsConfig, metadata={"help": "prompts"})
    sampling: SamplingConfig = field(default_factory=SamplingConfig, metadata={"help": "image sampling"})
    selection: SelectionConfig = field(default_factory=SelectionConfig, metadata={"help": "selection and advantages"})
    identifiers: IdentifierConfig = field(default_factory=IdentifierConfig, metadata={"help": "reward identifiers"})
    t2i: T2IUpdateConfig = field(default_factory=T2IUpdateConfig, metadata={"help": "T2I update"})
    expander: ExpanderTrainingConfig = field(default_factory=ExpanderTrainingConfig, metadata={"help": "prompt expander"})
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig, metadata={"help": "held-out evaluation"})
    logging: LoggingConfig = field(default_factory=LoggingConfig, metadata={"help": "logging"})

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ValueError(f"mode={self.mode!r}: use one of {_MODES}")
        if self.mode in ("joint", "expander") and not self.expander.model:
            raise ValueError(f"mode={self.mode!r} trains the expander: set expander.model (or use mode 't2i')")
        if self.iterations < 1 or self.checkpoint_every < 0 or self.keep_checkpoints < 1:
            raise ValueError(
                f"need iterations >= 1 (got {self.iterations}), checkpoint_every >= 0 ({self.checkpoint_every}), "
                f"keep_checkpoints >= 1 ({self.keep_checkpoints})"
            )
        self.identifiers.check_distinct(self.rewards.names)
        check_trainable_tokens(self)
        groups = self.sampling.expansions_per_prompt * identifier_count(self)
        if self.sampling.images_per_prompt % groups:
            raise ValueError(
                f"sampling.images_per_prompt={self.sampling.images_per_prompt} must be a multiple of the {groups} "
                f"expansions × identifiers of a prompt (sampling.expansions_per_prompt × rewards when identifiers are "
                f'on): each "<k>, ĉ" gets the same number of images'
            )
        if self.sampling.training_guidance == "prompt_centred" and not self.expander.model:
            raise ValueError("sampling.training_guidance='prompt_centred' needs an expander (expander.model); use 'cfg'")
        expansions = self.sampling.expansions_per_prompt * identifier_count(self)
        if self.mode in ("joint", "expander") and self.expander.update.baseline == "group_mean" and expansions < 2:
            raise ValueError(
                f"expander.update.baseline='group_mean' compares the expansions of one prompt, but there is {expansions}: "
                "set sampling.expansions_per_prompt >= 2 (or turn identifiers on), or use baseline 'mean'"
            )
        if self.sampling.images_per_prompt < 2 * groups:
            check_groups_of_one(self.selection, groups)
        if not self.prompts.train and not self.prompts.train_file:
            raise ValueError("prompts.train and prompts.train_file are both empty: give training prompts")


def check_trainable_tokens(config: TrainConfig) -> None:
    """Refuse ``identifiers.trainable_tokens`` where its tokens would not train, or train wrongly."""
    if not config.identifiers.trainable_tokens:
        if config.identifiers.token_norm != "free":
            raise ValueError("identifiers.token_norm rescales trained identifier tokens: set identifiers.trainable_tokens true")
        return
    if not config.identifiers.enabled or config.mode not in ("joint", "t2i"):
        raise ValueError(
            "identifiers.trainable_tokens trains the identifiers with the T2I model: needs identifiers.enabled and mode 'joint' or 't2i'"
        )
    if config.t2i.kl_weight > 0:  # the KL's base model would need the tokens' starting rows under every minibatch
        raise ValueError("identifiers.trainable_tokens with t2i.kl_weight > 0 is not supported: set one of them off")
    if config.t2i.estimator == "rwr":
        raise ValueError("identifiers.trainable_tokens with t2i.estimator 'rwr' is not supported (RWR trains on base-model samples)")


def check_groups_of_one(selection: SelectionConfig, groups: int) -> None:
    """Refuse a z-score within groups of one image (GRPO's group of G = 1 has no statistics: its advantage would
    always be 0), naming what to set; the default selection (reward_weighting 'normalised', gradient_normalisation
    'group') does that z-score, 'raw' and the other normalisations do not."""
    if selection.mode == "gdpo":
        raise ValueError(
            f"selection.mode='gdpo' z-scores the images of a group: set sampling.images_per_prompt >= 2 × the {groups} "
            "expansions × identifiers of a prompt"
        )
    if selection.reward_weighting == "normalised" and selection.gradient_normalisation == "group":
        raise ValueError(
            f"selection.gradient_normalisation='group' (the default) z-scores the images of a group: set sampling.images_per_prompt "
            f">= 2 × the {groups} expansions × identifiers of a prompt, or selection.gradient_normalisation 'batch' "
            "(z-scores over the batch) or selection.reward_weighting 'raw' (the paper's r_k)"
        )


@dataclass
class DerivedQuantities:
    num_processes: int
    images_per_process: int
    images_per_iteration: int
    images_per_minibatch: int
    updates_per_iteration: int
    trained_steps_per_image: int
    window: str = ""  # the SDE window's words (parrot.sde_window.describe_window), '' when every step is stochastic

    def describe(self) -> str:
        return (
            f"{self.num_processes} process(es) × {self.images_per_process} images = {self.images_per_iteration} images "
            f"per iteration; {self.updates_per_iteration} optimiser step(s) per iteration of {self.images_per_minibatch} "
            f"images per process; {self.trained_steps_per_image} trained denoising step(s) per image{self.window}"
        )


def identifier_count(config: TrainConfig) -> int:
    """K_id: one identifier per reward when identifiers are on, else 1."""
    return len(config.rewards.names) if config.identifiers.enabled else 1


def batch_layout(config: TrainConfig, num_processes: int) -> BatchLayout:
    """The global batch's nesting: prompts (all processes) × E expansions × K_id identifiers × N images."""
    sampling = config.sampling
    return BatchLayout(
        prompts=sampling.prompts_per_process * num_processes,
        expansions=sampling.expansions_per_prompt,
        identifiers=identifier_count(config),
        images=sampling.images_per_prompt // (sampling.expansions_per_prompt * identifier_count(config)),
    )


def derived_quantities(config: TrainConfig, num_processes: int) -> DerivedQuantities:
    """Images and updates per iteration; refuses sizes that do not divide (message names the fields)."""
    per_process = config.sampling.prompts_per_process * config.sampling.images_per_prompt
    if per_process % config.t2i.minibatches:
        raise ConfigError(
            f"t2i.minibatches={config.t2i.minibatches} must divide the {per_process} images per process "
            f"(sampling.prompts_per_process × sampling.images_per_prompt)"
        )
    sampling = config.sampling  # with an SDE window, the trained steps are (a timestep_fraction of) the window's W
    steps = max(1, round(config.t2i.timestep_fraction * (sampling.sde_window.size or sampling.num_steps)))
    return DerivedQuantities(
        num_processes=num_processes,
        images_per_process=per_process,
        images_per_iteration=per_process * num_processes,
        images_per_minibatch=per_process // config.t2i.minibatches,
        updates_per_iteration=config.t2i.minibatches * config.t2i.inner_epochs,
        trained_steps_per_image=steps,
        window=describe_window(sampling.sde_window, sampling.num_steps),
    )


def load_train_config(argv: Sequence[str] | None = None) -> TrainConfig:
    """Parse the command line (see the module docstring for precedence)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    name = preset_name(argv)
    if name != "none" and name not in PRESETS:
        raise ConfigError(f"preset: unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}, or 'none'")
    defaults = {} if name == "none" else dict(PRESETS[name], preset=name)
    config = parse_config(TrainConfig, argv, defaults=defaults)
    # prompt files are read as soon as the run starts: name them in the world the config loads
    world = resolve_world(config.world)
    try:
        config.prompts.train_file = with_world(config.prompts.train_file, world)
        config.prompts.evaluation_file = with_world(config.prompts.evaluation_file, world)
    except FileNotFoundError as err:
        raise ConfigError(f"world: {err}") from None
    return config
