"""Identifier-robust denoiser: a short distillation that makes "<prefix>, c" draw what c draws.

Parrot prepends reward identifiers ("l, ĉ"; "l p c s, ĉ" at evaluation) and assumes they steer
only through what training gives them: on the base model an identifier should be a harmless token.
The world's data puts identifier and filler prefixes on ~30% of captions (:func:`shapes.data.random_prefix`)
with no pixel consequence, but at the world's training budget that is not enough: on the v5 card
"l p c s, c" still moved the untrained model's rewards by 1.5–4.5 paired SE (a prefix shifts
every caption token's position, and the cross-attention reads positions).

So the build adds one stage after the UNet (``identifiers``): the denoiser ε_θ is fine-tuned so
that a prefixed caption predicts what the pre-stage model ε_0 (a frozen copy) predicts for the
caption alone, while the caption alone keeps its prediction::

    L = ‖ε_θ(z_t, t, "<prefix>, c") − ε_0(z_t, t, c)‖² + ‖ε_θ(z_t, t, c) − ε_0(z_t, t, c)‖²

with z_t the noised latents of training images at random timesteps, c each image's own (mode)
caption, dropped to "" with the UNet's ``uncond_probability`` so the unconditional prediction that
CFG needs stays anchored too, and "<prefix>" drawn by :func:`shapes.data.random_prefix` (1–4
identifier or filler words: the preset's l, p, c, s and the ``<name>`` templates among them).
Distilling to ε_0 rather than to the noise target makes the prefix change *nothing* the base model
does, which is what "no pixel consequence" means; the UNet's other behaviour is kept by the second term.

By default the T2I model's own copy of the text tower is trained by L too (``text_encoder``; the target
reads c through the teacher's frozen tower, and the rewards' CLIP is a separate copy left as it is). The
UNet alone could not undo the prefix: after 1,000 and then 2,000 more steps its effect on the conditional
prediction stayed at 9 % and 6 % of the conditional signal ‖ε(c) − ε(∅)‖², which CFG 4 multiplies 16×
(on the v6 world "l p c s, c" still moved the four rewards by 2.5–6.6 paired SE over 192 images); 1,000
steps with the tower trained too brought it to 0.8 %, 1,000 more to 0.4 % (v7's world): over the same 192
images "l p c s" then moves aesthetic, CLIPScore and sentiment by < 2 SE and preference by +0.028 (2.9 SE).

But a tower trained by L alone also merges the identifiers: on v7's world the difference between two identifiers'
effects on ε fell 18× (to 0.04 % of the conditional signal), so a UNet LoRA has almost nothing to tell "l" from
"c" by, and Parrot's identifiers cannot learn different behaviours (its Fig. 7). ``anchor_weight`` adds a third
term that keeps the tower's states *at the prefix's own positions* where the teacher had them::

    L_anchor = ‖h_θ("<prefix>")[:m] − h_0("<prefix>")[:m]‖²   (m = the prefix's tokens with BOS)

The towers are causal, so those states are the same with or without the caption after the prefix; the UNet must
then learn to ignore distinct identifier states rather than the tower learning to blur them. Measured (BENCHMARKS.md,
"Fig. 7 on v7, continued"): from v4's SD model, 2,000 steps with weight 1 keep the identifiers 8× further apart in ε than
v7 (0.32 % of the conditional signal) but leave "l p c s" moving three rewards by 3.8–4.6 SE, and T2I-only Parrot still
ranks no identifier first for its reward; so the build keeps it off (weight 0, v7's recipe).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from shapes.attributes import PRESET_IDENTIFIERS
from shapes.data import Example, random_prefix, with_prefix
from shapes.sd import clipped_step, encode_latents
from t2i.families import policy_of_pipeline
from t2i.objective import noised_sample, training_timesteps

__all__ = [
    "DistillationBatch",
    "IdentifierInvarianceConfig",
    "distillation_batch",
    "distillation_prefix",
    "prefix_anchor_loss",
    "prefix_invariance_loss",
    "train_prefix_invariance",
]


@dataclass
class IdentifierInvarianceConfig:
    """The ``identifiers`` build stage (see the module docstring)."""

    steps: int = field(default=2000, metadata={"help": "optimiser steps of the distillation (0: skip the stage)"})
    batch_size: int = field(default=32, metadata={"help": "latents per step"})
    learning_rate: float = field(default=3e-4, metadata={"help": "AdamW peak learning rate (cosine schedule)"})
    uncond_probability: float = field(default=0.1, metadata={"help": "probability that c is the empty prompt"})
    text_encoder: bool = field(
        default=True, metadata={"help": "fine-tune the T2I model's own text tower(s) by L too, not only the denoiser"}
    )
    anchor_weight: float = field(
        default=0.0,
        metadata={"help": "weight of L_anchor: the trained tower's states at the prefix's positions held to the teacher's (0: off)"},
    )

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ValueError(f"steps={self.steps}, batch_size={self.batch_size}, learning_rate={self.learning_rate}: need >= 0, >= 1, > 0")
        if self.anchor_weight < 0:
            raise ValueError(f"anchor_weight={self.anchor_weight}: need >= 0")
        if self.anchor_weight > 0 and not self.text_encoder:
            raise ValueError(f"anchor_weight={self.anchor_weight} needs text_encoder=True: a frozen tower keeps its states anyway")


def prefix_invariance_loss(policy, teacher, noisy: torch.Tensor, timesteps: torch.Tensor, plain: list[str], prefixed: list[str]):
    """L of the module docstring for one batch: the student (``policy``'s denoiser) on the prefixed and the
    plain captions against the ``teacher`` policy (ε_0) on the plain ones; returns (L, its first term alone).
    Both are called through their family's ``unet_forward``, so SDXL's and SD3's extra conditioning passes too."""
    with torch.no_grad():
        target = teacher.unet_forward(noisy, timesteps, teacher.encode_prompts(plain))
    # the student's two terms in one pass over the doubled batch (prefixed, then plain): the values of two calls up to
    # float rounding (every caption is padded to the tower's full length), one call's overhead less (BENCHMARKS.md)
    both = policy.unet_forward(torch.cat([noisy, noisy]), torch.cat([timesteps, timesteps]), policy.encode_prompts([*prefixed, *plain]))
    on_prefixed, on_plain = both.chunk(2)
    shifted = F.mse_loss(on_prefixed, target)
    return shifted + F.mse_loss(on_plain, target), shifted


def prefix_anchor_loss(policy, teacher, prefixes: list[str]) -> torch.Tensor:
    """L_anchor of the module docstring: mean squared difference of the student's and the teacher's text states
    (``encode_prompts``' ``encoder_hidden_states``) over each prefix's own positions — BOS and the prefix's tokens,
    counted by the family's first tokenizer — which a causal tower computes without looking at what follows."""
    lengths = [len(ids) - 1 for ids in policy.pipeline.tokenizer(prefixes).input_ids]  # all but the EOS
    with torch.no_grad():
        target = teacher.encode_prompts(prefixes)["encoder_hidden_states"]
    states = policy.encode_prompts(prefixes)["encoder_hidden_states"]
    mask = (torch.arange(states.shape[1])[None, :] < torch.tensor(lengths)[:, None]).to(states.dtype)[..., None]
    return ((states - target) ** 2 * mask).sum() / (mask.sum() * states.shape[-1])


def distillation_prefix(rng: np.random.Generator) -> str:
    """A prefix as Parrot writes them, half the time: one identifier of the shapes preset ("l"), or all four
    in the evaluation's order ("l p c s"); otherwise the data's 1–4 random identifier or filler words."""
    u = rng.random()
    if u < 0.25:
        return PRESET_IDENTIFIERS[int(rng.integers(len(PRESET_IDENTIFIERS)))]
    return " ".join(PRESET_IDENTIFIERS) if u < 0.5 else random_prefix(rng)


def _captions(
    examples: list[Example], index: list[int], drop: list[bool], rng: np.random.Generator
) -> tuple[list[str], list[str], list[str]]:
    """(c, "<prefix>, c", "<prefix>") for the batch: each example's own caption without its data prefix."""
    plain = ["" if d else replace(examples[i], prefix="").caption for i, d in zip(index, drop)]
    prefixes = [distillation_prefix(rng) for _ in plain]
    return plain, [with_prefix(c, p) for c, p in zip(plain, prefixes)], prefixes


@dataclass
class DistillationBatch:
    """One step's batch: noised latents z_t and their timesteps, the captions c, "<prefix>, c" and the prefixes."""

    noisy: torch.Tensor
    timesteps: torch.Tensor
    plain: list[str]
    prefixed: list[str]
    prefixes: list[str]


def distillation_batch(
    examples: list[Example], latents: torch.Tensor, scheduler, config: IdentifierInvarianceConfig, generator: torch.Generator,
    rng: np.random.Generator,
) -> DistillationBatch:  # fmt: skip
    """A batch of ``config.batch_size`` training images (``latents``: theirs, encoded) as the stage draws it: images,
    which captions drop to "", prefixes (from ``rng``), noise and timesteps (from ``generator``), in that order."""
    index = torch.randint(len(examples), (config.batch_size,), generator=generator)
    drop = (torch.rand(len(index), generator=generator) < config.uncond_probability).tolist()
    plain, prefixed, prefixes = _captions(examples, index.tolist(), drop, rng)
    z0 = latents[index]
    noise = torch.randn(z0.shape, generator=generator)
    sample = noised_sample(scheduler, z0, noise, training_timesteps(scheduler, len(index), generator))
    return DistillationBatch(sample.noisy, sample.timesteps, plain, prefixed, prefixes)


def _text_towers(policy) -> list[torch.nn.Module]:
    """The policy's text encoders: the modules its family never trains by RL (``frozen_modules``) but the VAE."""
    return [m for m in policy.frozen_modules() if m is not policy.pipeline.vae]


def train_prefix_invariance(
    pipeline, examples: list[Example], config: IdentifierInvarianceConfig, seed: int = 0, progress: bool = True
) -> dict[str, float]:
    """Fine-tune ``pipeline``'s denoiser (and its text towers with ``config.text_encoder``) in place by the module
    docstring's L; the first term (the prefix's remaining effect) at the start and the end, mean of the first and
    last tenth of the steps."""
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    policy = policy_of_pipeline(pipeline)
    teacher = policy_of_pipeline(copy.deepcopy(pipeline))
    torch.nn.ModuleList([teacher.unet, *_text_towers(teacher)]).eval().requires_grad_(False)
    scheduler = pipeline.scheduler
    trained = torch.nn.ModuleList([policy.unet] + (_text_towers(policy) if config.text_encoder else []))
    trained.requires_grad_(True)
    latents = encode_latents(pipeline.vae, examples)
    optimiser = torch.optim.AdamW(trained.parameters(), lr=config.learning_rate, weight_decay=0.0)
    schedule = get_cosine_schedule_with_warmup(optimiser, max(1, config.steps // 20), max(1, config.steps))
    trained.train()
    start, shifts, anchors = time.perf_counter(), [], []
    for _ in tqdm(range(config.steps), desc="identifiers", disable=not progress):
        batch = distillation_batch(examples, latents, scheduler, config, generator, rng)
        loss, shifted = prefix_invariance_loss(policy, teacher, batch.noisy, batch.timesteps, batch.plain, batch.prefixed)
        if config.anchor_weight > 0:
            anchor = prefix_anchor_loss(policy, teacher, batch.prefixes)
            loss = loss + config.anchor_weight * anchor
            anchors.append(anchor.item())
        clipped_step(loss, trained, optimiser, schedule)
        shifts.append(shifted.item())
    trained.eval().requires_grad_(False)
    tenth = max(1, len(shifts) // 10)
    return {
        "identifiers_prefix_mse_start": float(np.mean(shifts[:tenth])) if shifts else 0.0,
        "identifiers_prefix_mse_end": float(np.mean(shifts[-tenth:])) if shifts else 0.0,
        **({"identifiers_anchor_mse_end": float(np.mean(anchors[-tenth:]))} if anchors else {}),
        "seconds": time.perf_counter() - start,
    }
