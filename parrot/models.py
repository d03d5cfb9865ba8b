"""Build the models a run names: the T2I policy, the rewards and the expander; and resolve its world.

Real names load from the hub or a local directory; ``builtin:`` names are built in code
(see :mod:`parrot.train_config`), so the default run needs no download; ``builtin:random:<arch>``
is a full-size architecture of :mod:`t2i.random_init` with random weights (a pipeline, the reward
backbone ``clip_vit_l14`` or the expander ``gpt2``), for dry runs at real size. Any model path, reward
setting or prompt file may contain ``{world}``, which stands for the shapes world directory of
the config's ``world`` field (default: the committed ``shapes/world`` next to the ``shapes``
package; build one with ``python -m shapes.build --out DIR``). "World" means that directory
and nothing else.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from parrot_base.cli import UsageError
from prompt_expander.expander import PromptExpander
from prompt_expander.scratch import TinyGPT2Config, build_gpt2, build_random_lm, train_bpe_tokenizer
from prompt_expander.template import render_input
from rewards import MultiRewardEvaluator, load_reward
from rewards.base import resolve_dtype
from rewards.registry import reward_config_class
from rewards.tiny import save_random_clip, save_tiny_clip
from t2i import (
    DiffusionPolicy,
    FluxPolicy,
    LoraSettings,
    StableDiffusion3Policy,
    StableDiffusionPolicy,
    StableDiffusionXLPolicy,
    load_policy,
)
from t2i.families import policy_of_pipeline
from t2i.random_init import build_random_pipeline
from t2i.tiny import build_tiny_pipeline
from t2i.tiny_flux import build_tiny_flux_pipeline
from t2i.tiny_sd3 import build_tiny_sd3_pipeline
from t2i.tiny_sdxl import build_tiny_sdxl_pipeline

__all__ = [
    "WORLD_PLACEHOLDER",
    "committed_shapes_world",
    "resolve_world",
    "built_world",
    "with_world",
    "build_policy",
    "resolve_reward_settings",
    "build_evaluator",
    "build_expander",
]

BUILTIN_TINY = "builtin:tiny"
BUILTIN_TINY_SDXL = "builtin:tiny_sdxl"
BUILTIN_TINY_SD3 = "builtin:tiny_sd3"
BUILTIN_TINY_FLUX = "builtin:tiny_flux"
BUILTIN_TINY_CLIP = "builtin:tiny_clip"
BUILTIN_TINY_GPT2 = "builtin:tiny_gpt2"
BUILTIN_RANDOM = "builtin:random:"  # + an architecture name of t2i.random_init
WORLD_PLACEHOLDER = "{world}"
#: the toy pipelines built in code (random weights): SD 1.x, SDXL, SD3 and FLUX
BUILTIN_PIPELINES: dict[str, Callable[[], DiffusionPolicy]] = {
    BUILTIN_TINY: lambda: StableDiffusionPolicy(build_tiny_pipeline()),
    BUILTIN_TINY_SDXL: lambda: StableDiffusionXLPolicy(build_tiny_sdxl_pipeline()),
    BUILTIN_TINY_SD3: lambda: StableDiffusion3Policy(build_tiny_sd3_pipeline()),
    BUILTIN_TINY_FLUX: lambda: FluxPolicy(build_tiny_flux_pipeline()),
}


def committed_shapes_world() -> Path:
    """``shapes/world`` beside the ``shapes`` package: where the built world is committed (found without importing it)."""
    spec = importlib.util.find_spec("shapes")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the shapes package is not installed, so there is no committed world: set world=DIR")
    return Path(next(iter(spec.submodule_search_locations))).resolve() / "world"


def resolve_world(world: str) -> Path:
    """The shapes world directory a config names ('' = :func:`committed_shapes_world`)."""
    return Path(world).expanduser() if world else committed_shapes_world()


def built_world(world: str, parts: Sequence[str]) -> Path:
    """:func:`resolve_world` of ``world``, refused in one line (:class:`UsageError`) when it lacks one of ``parts``
    (folders of a built world, e.g. ``sd``, ``expander``)."""
    path = resolve_world(world)
    missing = [part for part in parts if not (path / part).is_dir()]
    if missing:
        folders = " or ".join(f"{part}/" for part in missing)
        raise UsageError(f"{path}: not a built shapes world (no {folders}); build one with python -m shapes.build")
    return path


def with_world(value: Any, world: Path) -> Any:
    """``value`` (a string, or dicts/lists of them) with ``{world}`` replaced by ``world``.

    Refuses with a clear message when a value uses ``{world}`` but ``world`` holds no built world.
    """
    if isinstance(value, dict):
        return {k: with_world(v, world) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(with_world(v, world) for v in value)
    if isinstance(value, str) and WORLD_PLACEHOLDER in value:
        if not (world / "world.json").is_file():
            raise FileNotFoundError(
                f"{value!r} names the shapes world, but {str(world)!r} holds no built world (no world.json): "
                f"build it with `python -m shapes.build --out {world}` or set world=DIR"
            )
        return value.replace(WORLD_PLACEHOLDER, str(world))
    return value


def build_policy(
    pipeline: str, dtype: str, device: torch.device | str, gradient_checkpointing: bool = False, distilled_guidance: float | None = None
) -> DiffusionPolicy:
    """The T2I policy π_θ from a hub id, a local pipeline directory, a ``builtin:`` toy or ``builtin:random:<arch>``.

    The family (SD 1.x/2.x, SDXL, SD3, FLUX) is read from the pipeline's ``model_index.json``
    (:func:`t2i.load_policy`), or from the class of a ``builtin:random:`` pipeline. ``gradient_checkpointing``
    turns on diffusers' UNet activation checkpointing (used only where gradients flow, i.e. in the T2I
    update's log-prob recomputation). ``distilled_guidance`` (when given) is a FLUX policy's guidance value g;
    other families have none.
    """
    if pipeline in BUILTIN_PIPELINES:
        policy = BUILTIN_PIPELINES[pipeline]().to(device)
    elif pipeline.startswith(BUILTIN_RANDOM):
        built = build_random_pipeline(pipeline.removeprefix(BUILTIN_RANDOM), dtype=resolve_dtype(dtype), device=device)
        policy = policy_of_pipeline(built)
    elif pipeline.startswith("builtin:"):
        names = ", ".join(repr(name) for name in BUILTIN_PIPELINES)
        raise ValueError(
            f"model.pipeline={pipeline!r}: the built-in pipelines are {names} and '{BUILTIN_RANDOM}<arch>' "
            "(full size, random weights; <arch> one of t2i.random_init.architecture_names())"
        )
    else:
        policy = load_policy(pipeline, torch_dtype=resolve_dtype(dtype), device=device)
    if gradient_checkpointing:
        policy.unet.enable_gradient_checkpointing()
    if distilled_guidance is not None and isinstance(policy, FluxPolicy):
        policy.distilled_guidance = float(distilled_guidance)
    return policy


def resolve_reward_settings(
    names: Sequence[str], settings: dict[str, dict[str, Any]], builtin_dir: Path, device: str, build: bool
) -> dict[str, dict[str, Any]]:
    """Per-reward settings with ``builtin:tiny_clip`` (or ``builtin:random:clip_vit_l14``) replaced by a saved CLIP's directory.

    The toy (or full-size random) CLIP is saved under ``builtin_dir``; ``build`` says whether this process writes it
    (the main one; the others wait and then read it). Rewards whose config has a ``device`` get
    this process's device unless the settings name one.
    """
    resolved = {}
    for name in names:
        values = dict(settings.get(name, {}))
        for key, value in values.items():
            if value == BUILTIN_TINY_CLIP or (isinstance(value, str) and value.startswith(BUILTIN_RANDOM)):
                target = builtin_dir / re.sub(r"[^A-Za-z0-9_.-]", "_", value.removeprefix("builtin:"))
                if build and not (target / "config.json").is_file():
                    save_tiny_clip(target) if value == BUILTIN_TINY_CLIP else save_random_clip(target, value.removeprefix(BUILTIN_RANDOM))
                values[key] = str(target)
        if "device" in {f for f in reward_config_class(name).__dataclass_fields__} and "device" not in values:
            values["device"] = device
        resolved[name] = values
    return resolved


def build_evaluator(resolved_settings: dict[str, dict[str, Any]]) -> MultiRewardEvaluator:
    return MultiRewardEvaluator([load_reward(name, **values) for name, values in resolved_settings.items()])


def build_expander(
    model: str,
    sampling_config,
    lora_rank: int,
    lora_target_modules: tuple[str, ...],
    corpus: Sequence[str],
    device: torch.device | str,
) -> PromptExpander | None:
    """The prompt expander p_φ(ĉ|c), or None when ``model`` is empty (then ĉ = c)."""
    if not model:
        return None
    lora = LoraSettings(rank=lora_rank, target_modules=lora_target_modules) if lora_rank > 0 else None
    if model == BUILTIN_TINY_GPT2:
        texts = list(corpus) + [render_input(sampling_config.template, p) for p in corpus]
        tokenizer = train_bpe_tokenizer(texts, vocab_size=400, model_max_length=256)
        network = build_gpt2(tokenizer, TinyGPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=256, vocab_size=400))
        return PromptExpander(network, tokenizer, sampling_config, lora).to(device)
    if model.startswith(BUILTIN_RANDOM):
        texts = list(corpus) + [render_input(sampling_config.template, p) for p in corpus]
        network = build_random_lm(model.removeprefix(BUILTIN_RANDOM))
        tokenizer = train_bpe_tokenizer(texts, vocab_size=400, model_max_length=network.config.n_positions)
        return PromptExpander(network, tokenizer, sampling_config, lora).to(device)
    if model.startswith("builtin:"):
        raise ValueError(f"expander.model={model!r}: the built-in expanders are {BUILTIN_TINY_GPT2!r} and '{BUILTIN_RANDOM}gpt2'")
    return PromptExpander.from_pretrained(model, sampling_config, lora).to(device)
