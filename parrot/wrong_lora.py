"""``python -m parrot.wrong_lora``: the "wrong" negative LoRA recipe.

1. Make deliberately bad images x⁻, by default as the article did (``--source prompted``): the base
   model asked for failures, each prompt followed by up-weighted negative-quality phrases in compel's
   syntax ("c, (blurry)1.3, (distorted)1.3, …"; ``--bad_phrases``, ``--bad_weight``), ``keep`` images
   per prompt; or the lowest-``rank_by`` samples of the base model (``--source lowest_reward``: N
   candidates per prompt, the ``keep`` worst kept); or base samples degraded on purpose
   (``--source degraded``: Gaussian blur, then additive noise).
2. Train a Dreambooth-style LoRA (Ruiz et al. 2023, without prior preservation) on them with the
   caption "wrong" (``--trigger``): the standard denoising loss
   L = E_{t,ε} ‖ε_θ(√ᾱ_t·z_0 + √(1−ᾱ_t)·ε, t, "wrong") − ε‖², z_0 = VAE(x⁻), on the UNet's LoRA only
   (``DiffusionPolicy.add_lora``), the target being v instead of ε for v-prediction models.
3. Save the LoRA in diffusers' format (``OUT/lora/pytorch_lora_weights.safetensors``), the bad
   images (``OUT/images``) and ``OUT/wrong_lora.json`` (settings and the loss curve).

With ``--pivotal true`` (pivotal tuning, the article's advanced variant) a new token "<wrong>" is
trained in every text tower alongside the LoRA and captions the images instead; its embeddings are
saved to ``OUT/embeddings`` (:mod:`t2i.textual_inversion`) and loaded with ``--textual_inversion``.

At generation, load it and name the trigger as the negative prompt, so ∅ = "wrong" is steered away from:

    python -m parrot.wrong_lora --out runs/wrong
    python -m parrot.generate --lora runs/wrong/lora --negative_prompt wrong --prompt "a red circle" --out runs/gen
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from parrot.best_of_n import best_of_n
from parrot.generate import parse_reward_list, read_prompts
from parrot.models import build_policy, resolve_reward_settings
from parrot.sample import prepare_output_dir
from parrot_base.cli import run_cli
from parrot_base.config import config_to_dict, parse_config
from rewards.base import as_pil_images
from t2i import DiffusionPolicy, Guidance, LoraSettings
from t2i.prompt_weighting import with_prompt_weighting
from t2i.textual_inversion import add_trainable_token, save_token_embeddings

__all__ = ["WrongLoraConfig", "BAD_PHRASES", "failure_prompt", "bad_images", "degrade", "denoising_loss", "train_wrong_lora", "main"]

DEFAULT_PROMPTS = ("a red circle", "a blue square", "a green triangle", "two yellow circles")
#: what the images are asked to be (prompted source); the first four are the shapes world's negative quality words
BAD_PHRASES = ("blurry", "distorted", "faded", "cluttered", "low quality", "badly drawn")


@dataclass
class WrongLoraConfig:
    """Train a negative "wrong" LoRA on deliberately bad images of the base model."""

    model: str = field(
        default="builtin:tiny",
        metadata={"help": "hub id or local SD 1.x/2.x or SDXL pipeline directory, or 'builtin:tiny' / 'builtin:tiny_sdxl'"},
    )
    dtype: str = field(default="float32", metadata={"help": "model dtype"})
    device: str = field(default="cpu", metadata={"help": "torch device"})
    prompts: tuple[str, ...] = field(default=DEFAULT_PROMPTS, metadata={"help": "prompts the bad images are drawn from"})
    prompts_file: str = field(default="", metadata={"help": "or a prompts file (.txt / .tsv / .jsonl), replacing --prompts"})
    max_prompts: int = field(default=0, metadata={"help": "use only the first N prompts of the file (0: all)"})
    source: Literal["prompted", "lowest_reward", "degraded"] = field(
        default="prompted",
        metadata={
            "help": "bad images: prompted (the prompts + up-weighted bad_phrases, as the article), the base model's "
            "lowest-reward samples, or degraded samples"
        },
    )
    bad_phrases: tuple[str, ...] = field(
        default=BAD_PHRASES, metadata={"help": "negative-quality phrases appended to each prompt (prompted)"}
    )
    bad_weight: float = field(default=1.3, metadata={"help": "compel weight of each bad phrase, '(phrase)1.3' (prompted)"})
    rank_by: str = field(default="laion_aesthetic", metadata={"help": "reward whose lowest samples are kept (lowest_reward)"})
    reward_settings: dict[str, dict[str, Any]] = field(
        default_factory=dict, metadata={"help": "per-reward settings {name: {key: value}} (YAML only)"}
    )
    candidates: int = field(default=8, metadata={"help": "base samples per prompt (lowest_reward) to choose the worst from"})
    keep: int = field(default=2, metadata={"help": "bad images kept per prompt"})
    blur_radius: float = field(default=2.0, metadata={"help": "Gaussian blur radius in pixels (degraded)"})
    noise_std: float = field(default=0.15, metadata={"help": "std of the added pixel noise, images in [0, 1] (degraded)"})
    num_steps: int = field(default=20, metadata={"help": "DDIM steps to draw the base samples", "formerly": "sample_steps"})
    guidance_scale: float = field(default=7.5, metadata={"help": "CFG scale of the base samples"})
    trigger: str = field(default="wrong", metadata={"help": "trigger word; the caption of every bad image"})
    pivotal: bool = field(
        default=False,
        metadata={
            "help": "pivotal tuning: also train a new token '<trigger>' in every text tower (initialised from the trigger word), "
            "used as the caption instead; saved to OUT/embeddings for parrot.generate --textual_inversion"
        },
    )
    lora: LoraSettings = field(default_factory=LoraSettings, metadata={"help": "LoRA settings"})
    train_steps: int = field(default=200, metadata={"help": "optimiser steps"})
    train_batch_size: int = field(default=4, metadata={"help": "images per step"})
    lr: float = field(default=1e-4, metadata={"help": "AdamW learning rate"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    out: Path = field(default=Path("runs/wrong_lora"), metadata={"help": "output directory"})
    overwrite: bool = field(default=False, metadata={"help": "replace a non-empty output directory"})

    def __post_init__(self) -> None:
        for name in ("candidates", "keep", "num_steps", "train_steps", "train_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.source == "lowest_reward" and self.keep > self.candidates:
            raise ValueError(f"keep={self.keep} must be <= candidates={self.candidates}")
        if not self.trigger.strip():
            raise ValueError("trigger is empty: give the trigger word, e.g. 'wrong'")
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr} must be > 0")
        if self.source == "prompted" and not any(p.strip() for p in self.bad_phrases):
            raise ValueError("bad_phrases is empty: the prompted source needs at least one phrase, e.g. blurry")
        if not self.bad_weight > 0:
            raise ValueError(f"bad_weight={self.bad_weight} must be > 0")


def degrade(images: torch.Tensor, blur_radius: float, noise_std: float, generator: torch.Generator) -> torch.Tensor:
    """Gaussian blur (σ = ``blur_radius`` px, separable kernel) then N(0, noise_std²) pixel noise, clamped to [0, 1]."""
    if blur_radius > 0:
        half = max(1, int(3 * blur_radius))
        x = torch.arange(-half, half + 1, dtype=images.dtype)
        kernel = torch.exp(-(x**2) / (2 * blur_radius**2))
        kernel = kernel / kernel.sum()
        channels = images.shape[1]
        padded = F.pad(images, (half, half, half, half), mode="replicate")
        images = F.conv2d(padded, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
        images = F.conv2d(images, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)
    noise = torch.randn(images.shape, generator=generator, dtype=images.dtype) * noise_std
    return (images + noise).clamp(0, 1)


def failure_prompt(prompt: str, phrases: tuple[str, ...], weight: float) -> str:
    """The prompt asking for a failure: "c, (blurry)1.3, (distorted)1.3" (compel's weighting syntax)."""
    return ", ".join([prompt] + [f"({phrase.strip()}){weight:g}" for phrase in phrases if phrase.strip()])


def bad_images(policy: DiffusionPolicy, config: WrongLoraConfig, prompts: list[str]) -> torch.Tensor:
    """(P·keep, 3, H, W) deliberately bad images in [0, 1]."""
    sampling = dict(guidance=Guidance.cfg(config.guidance_scale), num_inference_steps=config.num_steps)
    if config.source == "prompted":
        asked = [failure_prompt(p, config.bad_phrases, config.bad_weight) for p in prompts for _ in range(config.keep)]
        generators = [torch.Generator(device=policy.device).manual_seed(config.seed + i) for i in range(len(asked))]
        weighted = with_prompt_weighting(policy)  # compel on the policy's family (SD: one text tower, SDXL: both)
        return weighted.sample(asked, generator=generators, eta=0.0, compute_log_probs=False, **sampling).images.cpu()
    if config.source == "lowest_reward":
        settings = resolve_reward_settings([config.rank_by], config.reward_settings, config.out / ".builtin", config.device, True)
        ranked = best_of_n(
            policy,
            prompts,
            config.rank_by,
            config.candidates,
            config.candidates,
            seed=config.seed,
            reward_settings=settings[config.rank_by],
            **sampling,
        )
        worst = ranked.kept_indices[:, -config.keep :]  # kept_indices are best first: the tail is the worst
        return torch.cat([ranked.candidates[p, idx] for p, idx in enumerate(worst)])
    generator = torch.Generator(device=policy.device).manual_seed(config.seed)
    repeated = [p for p in prompts for _ in range(config.keep)]
    images = policy.sample(repeated, generator=generator, eta=0.0, compute_log_probs=False, **sampling).images.cpu()
    return degrade(images, config.blur_radius, config.noise_std, torch.Generator().manual_seed(config.seed))


def caption_of(config: WrongLoraConfig) -> str:
    """The caption of every bad image and the negative prompt at generation: the trigger, or with pivotal tuning its new token."""
    return f"<{config.trigger.strip()}>" if config.pivotal else config.trigger


def denoising_loss(policy: DiffusionPolicy, latents: torch.Tensor, captions: list[str], generator: torch.Generator) -> torch.Tensor:
    """The diffusion training loss ‖ε_θ(z_t, t, caption) − target‖² at uniformly drawn t (target ε, or v)."""
    scheduler = policy.scheduler
    noise = torch.randn(latents.shape, generator=generator, device=latents.device)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],), generator=generator, device=latents.device)
    noisy = scheduler.add_noise(latents, noise, t)
    target = scheduler.get_velocity(latents, noise, t) if scheduler.config.prediction_type == "v_prediction" else noise
    embeds = policy.encode_prompts(captions)
    prediction = policy.unet_forward(noisy.to(policy.dtype), t, embeds)
    return F.mse_loss(prediction.float(), target.float())


@torch.no_grad()
def encode_images(policy: DiffusionPolicy, images: torch.Tensor) -> torch.Tensor:
    """z_0 = scaling_factor · mean of the VAE posterior, images in [0, 1]."""
    vae = policy.pipeline.vae
    posterior = vae.encode((images * 2 - 1).to(policy.device, vae.dtype)).latent_dist
    return posterior.mean.float() * vae.config.scaling_factor


def train_wrong_lora(config: WrongLoraConfig) -> dict[str, Any]:
    """Run the recipe; returns the summary written to ``OUT/wrong_lora.json``."""
    prompts = read_prompts(config.prompts_file, config.max_prompts) if config.prompts_file else list(config.prompts)
    if not prompts:
        raise ValueError("no prompts: pass --prompts or --prompts_file")
    if config.source == "lowest_reward":
        parse_reward_list([config.rank_by], "--rank_by")
    prepare_output_dir(config.out, config.overwrite)
    torch.manual_seed(config.seed)
    policy = build_policy(config.model, config.dtype, config.device)

    images = bad_images(policy, config, prompts)
    for i, picture in enumerate(as_pil_images(images)):
        picture.save(config.out / "images" / f"{i:05d}.png")
    latents = encode_images(policy, images)

    parameters = policy.add_lora(config.lora)
    groups = [{"params": parameters}]
    caption = caption_of(config)
    if config.pivotal:  # the new token's rows only, without weight decay (decoupled decay would shrink every row)
        groups.append({"params": add_trainable_token(policy.pipeline, caption, config.trigger), "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups, lr=config.lr)
    generator = torch.Generator(device=policy.device).manual_seed(config.seed)
    losses = []
    for _ in tqdm(range(config.train_steps), desc="wrong LoRA"):
        batch = torch.randint(0, len(latents), (config.train_batch_size,), generator=generator, device=latents.device)
        loss = denoising_loss(policy, latents[batch], [caption] * len(batch), generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())

    policy.save_lora(config.out / "lora", adapter_name=config.lora.adapter_name)
    if config.pivotal:
        save_token_embeddings(policy.pipeline, caption, config.out / "embeddings")
    window = max(1, len(losses) // 10)
    summary = {
        "config": config_to_dict(config),
        "bad_images": len(images),
        "negative_prompt": caption,
        "loss_first": sum(losses[:window]) / window,
        "loss_last": sum(losses[-window:]) / window,
        "losses": losses,
    }
    (config.out / "wrong_lora.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    config = parse_config(WrongLoraConfig, argv)
    summary = train_wrong_lora(config)
    embeddings = f", token embeddings in {config.out / 'embeddings'} (--textual_inversion)" if config.pivotal else ""
    sys.stdout.write(
        f"trained on {summary['bad_images']} bad image(s); loss {summary['loss_first']:.4f} → {summary['loss_last']:.4f}; "
        f"LoRA in {config.out / 'lora'}{embeddings} (use --negative_prompt {summary['negative_prompt']!r} at generation)\n"
    )
    return summary


if __name__ == "__main__":
    run_cli(main)
