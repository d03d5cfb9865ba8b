"""A tiny Stable Diffusion trained from scratch on the shapes world, saved as a diffusers pipeline.

Components are SD 1.x's: ``AutoencoderKL`` (here 32×32×3 → 16×16×4 by default:
at 8×8×4 a short CPU training blurs small circles, squares and triangles into one another), a
``UNet2DConditionModel`` with cross-attention, the tiny CLIP's text tower (frozen, as in SD) and
its tokenizer, and a ``DDIMScheduler`` with SD's ``scaled_linear`` β schedule.

Notation (DDPM, Ho et al. 2020; LDM, Rombach et al. 2022): z = s·E(x) is the scaled VAE latent
(s = ``vae.config.scaling_factor``, chosen so that z has unit standard deviation), ᾱ_t the
cumulative signal rate, z_t = √ᾱ_t·z + √(1−ᾱ_t)·ε, and the UNet ε_θ(z_t, t, c) is trained with
‖ε − ε_θ‖², where ε carries offset noise (a per-channel constant, Guttenberg 2023) so that the model can
set the image's mean colour, i.e. the background, from the prompt. Captions are dropped to "" with probability
``uncond_probability`` so that classifier-free guidance works.

Each training image is captioned with its mode's caption (see :mod:`shapes.data`): short,
tagged (short + modifier words) or detailed, ~30% of them behind an identifier/filler prefix.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from tqdm.auto import tqdm
from transformers import CLIPModel, CLIPTextModel, get_cosine_schedule_with_warmup

from shapes.checker import check_prompt, read_quality
from shapes.clip import images_to_tensor
from shapes.data import (
    HELD_OUT_PAIRS,
    POSITIVE_WORDS,
    QUALITY_WORDS,
    Example,
    ShapesDataConfig,
    detailed_caption,
    sample_attributes,
    short_prompt,
    training_pairs,
)
from t2i.families import policy_of_pipeline
from t2i.objective import TimestepDensity, noised_sample, training_timesteps

__all__ = [
    "ShapesSDConfig",
    "build_unet",
    "build_vae",
    "clipped_step",
    "encode_latents",
    "evaluate_pipeline",
    "quality_vocabulary",
    "text_encoder_from_clip",
    "train_unet",
    "train_vae",
    "vae_checker_agreement",
]


@dataclass
class ShapesSDConfig:
    """Sizes and training settings of the tiny Stable Diffusion."""

    vae_channels: tuple[int, ...] = field(
        default=(16, 32), metadata={"help": "VAE channels per level; the latent side is image_side / 2^(levels-1)"}
    )
    latent_channels: int = field(default=4, metadata={"help": "VAE latent channels (SD uses 4)"})
    vae_steps: int = field(default=1000, metadata={"help": "VAE optimiser steps"})
    vae_batch_size: int = field(default=16, metadata={"help": "VAE images per step"})
    vae_learning_rate: float = field(default=2e-3, metadata={"help": "VAE AdamW peak learning rate"})
    initial_logvar: float = field(default=-8.0, metadata={"help": "starting log-variance of the VAE posterior"})
    foreground_weight: float = field(default=10.0, metadata={"help": "VAE loss weight of shape pixels against background pixels (1)"})
    kl_weight: float = field(default=1e-4, metadata={"help": "weight of the mean KL term against the mean squared error"})
    unet_channels: tuple[int, ...] = field(default=(32, 64, 64), metadata={"help": "UNet channels per level"})
    unet_cross_attention: tuple[bool, ...] = field(
        default=(False, True, True),
        metadata={"help": "per UNet level: cross-attention block (True) or plain ResNet block (False)"},
    )
    unet_heads: int = field(default=4, metadata={"help": "UNet attention heads"})
    unet_steps: int = field(default=2000, metadata={"help": "UNet optimiser steps"})
    unet_batch_size: int = field(default=32, metadata={"help": "UNet latents per step"})
    unet_learning_rate: float = field(default=2e-3, metadata={"help": "UNet AdamW peak learning rate"})
    offset_noise: float = field(
        default=0.1,
        metadata={
            "help": "std of a per-channel constant added to the training noise (offset noise): without it SD's "
            "schedule leaks the latent mean at t=T, so sampled backgrounds follow the seed, not the prompt"
        },
    )
    uncond_probability: float = field(default=0.1, metadata={"help": "probability of training with the empty prompt"})
    eval_steps: int = field(default=20, metadata={"help": "DDIM steps when measuring"})
    eval_guidance: float = field(default=4.0, metadata={"help": "classifier-free guidance scale when measuring"})
    eval_images_per_prompt: int = field(default=8, metadata={"help": "samples per prompt when measuring"})

    def __post_init__(self) -> None:
        for name in ("latent_channels", "vae_steps", "vae_batch_size", "unet_steps", "unet_batch_size", "eval_steps", "unet_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if len(self.vae_channels) < 1 or len(self.unet_channels) < 2:
            raise ValueError(
                f"need >= 1 VAE level and >= 2 UNet levels, got vae_channels={self.vae_channels}, unet_channels={self.unet_channels}"
            )
        if len(self.unet_cross_attention) != len(self.unet_channels):
            raise ValueError(
                f"unet_cross_attention={self.unet_cross_attention} needs one entry per level of unet_channels={self.unet_channels}"
            )
        if not any(self.unet_cross_attention):
            raise ValueError("unet_cross_attention has no True level: the UNet could not read the prompt")
        if not 0.0 <= self.offset_noise <= 1.0:
            raise ValueError(f"offset_noise={self.offset_noise} must lie in [0, 1]")
        if not 0.0 <= self.uncond_probability < 1.0:
            raise ValueError(f"uncond_probability={self.uncond_probability} must lie in [0, 1)")


def build_vae(config: ShapesSDConfig, image_size: int = 32) -> AutoencoderKL:
    """SD's ``AutoencoderKL`` at toy size, its posterior started nearly deterministic.

    The log-variance rows of ``quant_conv`` start at zero weight and bias ``initial_logvar``: with
    the default start (σ ≈ 1 against latents of σ ≈ 3) the decoder spends most of a short CPU
    training learning to ignore sampling noise instead of learning to reconstruct.
    """
    levels = len(config.vae_channels)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(config.vae_channels),
        layers_per_block=1,
        latent_channels=config.latent_channels,
        norm_num_groups=8,
        sample_size=image_size,
        mid_block_add_attention=False,  # self-attention on the latent grid costs CPU time and buys nothing here
    )
    with torch.no_grad():
        vae.quant_conv.weight[config.latent_channels :] = 0.0
        vae.quant_conv.bias[config.latent_channels :] = config.initial_logvar
    return vae


def build_unet(config: ShapesSDConfig, latent_size: int, cross_attention_dim: int, **extra) -> UNet2DConditionModel:
    """The world's UNet layout; ``extra`` are further ``UNet2DConditionModel`` settings (SDXL's conditioning, :mod:`shapes.sdxl`)."""
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in config.unet_cross_attention)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(config.unet_cross_attention))
    return UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=config.latent_channels,
        out_channels=config.latent_channels,
        block_out_channels=tuple(config.unet_channels),
        layers_per_block=1,
        down_block_types=down,
        up_block_types=up,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=config.unet_heads,
        norm_num_groups=16,
        **extra,
    )


def text_encoder_from_clip(clip: CLIPModel) -> CLIPTextModel:
    """The CLIP text tower as a standalone ``CLIPTextModel`` (SD's text encoder), same weights."""
    encoder = CLIPTextModel(clip.config.text_config)
    encoder.load_state_dict(clip.text_model.state_dict())
    return encoder.eval().requires_grad_(False)


def _vae_inputs(examples: list[Example]) -> torch.Tensor:
    return images_to_tensor(examples) * 2.0 - 1.0  # SD's VAE works on [-1, 1]


def foreground_weights(images: torch.Tensor, foreground_weight: float) -> torch.Tensor:
    """Per-pixel loss weights B×1×H×W: ``foreground_weight`` where a pixel differs from its image's
    border colour (the shape), 1 elsewhere (the background, most of the image)."""
    border = torch.cat([images[:, :, 0], images[:, :, -1], images[:, :, :, 0], images[:, :, :, -1]], dim=2)
    background = border.median(dim=2).values[:, :, None, None]
    foreground = (images - background).abs().sum(1, keepdim=True) > 0.1
    return torch.where(foreground, foreground_weight, 1.0)


def train_vae(
    vae: AutoencoderKL, examples: list[Example], config: ShapesSDConfig, seed: int = 0, progress: bool = True
) -> dict[str, float]:
    """Train the VAE (foreground-weighted MSE + kl_weight·KL), then set ``scaling_factor`` = 1 / std of the latents."""
    generator = torch.Generator().manual_seed(seed)
    images = _vae_inputs(examples)
    optimiser = torch.optim.AdamW(vae.parameters(), lr=config.vae_learning_rate, weight_decay=0.0)
    schedule = get_cosine_schedule_with_warmup(optimiser, max(1, config.vae_steps // 20), config.vae_steps)
    vae.train()
    start = time.perf_counter()
    for _ in tqdm(range(config.vae_steps), desc="vae", disable=not progress):
        batch = images[torch.randint(len(images), (config.vae_batch_size,), generator=generator)]
        posterior = vae.encode(batch).latent_dist
        reconstruction = vae.decode(posterior.sample(generator)).sample
        weights = foreground_weights(batch, config.foreground_weight)
        loss = (weights * (reconstruction - batch) ** 2).mean() + config.kl_weight * posterior.kl().mean() / posterior.mean[0].numel()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
    vae.eval()
    with torch.no_grad():
        probe = images[:512]
        latents = vae.encode(probe).latent_dist.mean
        mse = F.mse_loss(vae.decode(latents).sample.clamp(-1, 1), probe).item()
    scaling = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scaling)
    return {"reconstruction_mse": mse, "scaling_factor": scaling, "seconds": time.perf_counter() - start}


@torch.no_grad()
def vae_checker_agreement(vae: AutoencoderKL, examples: list[Example]) -> float:
    """Fraction of reconstructions E→D of ``examples`` on which the checker reads every attribute right.

    The ceiling of what the T2I model can reach through this VAE.
    """
    images = _vae_inputs(examples)
    reconstructions = torch.cat([vae.decode(vae.encode(images[i : i + 256]).latent_dist.mean).sample for i in range(0, len(images), 256)])
    reconstructions = (reconstructions.clamp(-1, 1) + 1) / 2
    return float(np.mean([check_prompt(r, e.detailed_caption).all_correct for r, e in zip(reconstructions, examples)]))


def encode_latents(vae: AutoencoderKL, examples: list[Example]) -> torch.Tensor:
    """z = s·(E(x) − shift): the examples' posterior means, scaled as the pipelines decode them
    (``shift_factor`` is SD3's; absent or None it is 0)."""
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    with torch.no_grad():
        means = torch.cat([vae.encode(_vae_inputs(examples[i : i + 256])).latent_dist.mean for i in range(0, len(examples), 256)])
    return (means - shift) * vae.config.scaling_factor


def clipped_step(loss: torch.Tensor, model: torch.nn.Module, optimiser, schedule) -> None:
    """One optimiser step on ``loss`` with the gradient norm clipped to 1, then one schedule step."""
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimiser.step()
    schedule.step()


def train_unet(
    pipeline, examples: list[Example], config: ShapesSDConfig, seed: int = 0, progress: bool = True, density: TimestepDensity | None = None
) -> dict[str, float]:
    """Train the pipeline's denoiser (``unet``, or SD3's ``transformer``) on the examples' latents and captions
    with its family's objective (:mod:`t2i.objective`): ε-prediction on the DDPM schedule for SD and SDXL,
    rectified flow's velocity for SD3 (σ drawn from ``density``, SD3's logit-normal by default).

    The prompts are encoded and the denoiser called through the pipeline family's policy
    (:func:`t2i.families.policy_of_pipeline`: SD's one text tower, SDXL's two with the pooled
    projection and size ids, SD3's two CLIP towers), exactly as sampling will condition it.
    """
    generator = torch.Generator().manual_seed(seed)
    policy = policy_of_pipeline(pipeline)
    denoiser, scheduler = policy.unet, pipeline.scheduler
    denoiser.requires_grad_(True)  # the policy freezes the denoiser for RL (which trains LoRA adapters); here it is the model trained
    latents = encode_latents(pipeline.vae, examples)
    captions = [e.caption for e in examples]
    optimiser = torch.optim.AdamW(denoiser.parameters(), lr=config.unet_learning_rate, weight_decay=0.01)
    schedule = get_cosine_schedule_with_warmup(optimiser, max(1, config.unet_steps // 20), config.unet_steps)
    denoiser.train()
    start, losses = time.perf_counter(), []
    for _ in tqdm(range(config.unet_steps), desc=policy.denoiser_name, disable=not progress):
        index = torch.randint(len(examples), (config.unet_batch_size,), generator=generator)
        drop = torch.rand(len(index), generator=generator) < config.uncond_probability
        prompts = ["" if d else captions[i] for i, d in zip(index.tolist(), drop.tolist())]
        with torch.no_grad():
            text = policy.encode_prompts(prompts)
        z0 = latents[index]
        noise = torch.randn(z0.shape, generator=generator)
        if config.offset_noise:
            noise = noise + config.offset_noise * torch.randn((*z0.shape[:2], 1, 1), generator=generator)
        sample = noised_sample(scheduler, z0, noise, training_timesteps(scheduler, len(index), generator, density))
        loss = F.mse_loss(policy.unet_forward(sample.noisy, sample.timesteps, text), sample.target)
        clipped_step(loss, denoiser, optimiser, schedule)
        losses.append(loss.item())
    denoiser.eval()
    return {"final_loss": float(np.mean(losses[-100:])), "seconds": time.perf_counter() - start}


def _sample(pipeline: StableDiffusionPipeline, prompts: list[str], config: ShapesSDConfig, seed: int) -> np.ndarray:
    generator = torch.Generator().manual_seed(seed)
    images = []
    for i in range(0, len(prompts), 64):
        output = pipeline(
            prompts[i : i + 64],
            num_inference_steps=config.eval_steps,
            guidance_scale=config.eval_guidance,
            generator=generator,
            output_type="np",
        )
        images.append(output.images)
    return np.concatenate(images)


def _colour_shape_rate(pipeline, pairs, config, seed) -> tuple[float, np.ndarray, list[str]]:
    prompts = [short_prompt(c, s) for c, s in pairs for _ in range(config.eval_images_per_prompt)]
    images = _sample(pipeline, prompts, config, seed)
    correct = [check_prompt(im, p).all_correct for im, p in zip(images, prompts)]
    return float(np.mean(correct)), images, prompts


def _readings_mean(pipeline, prompts: list[str], config: ShapesSDConfig, seed: int) -> dict[str, float]:
    readings = [read_quality(im) for im in _sample(pipeline, prompts, config, seed)]
    return {name: float(np.mean([getattr(r, name) for r in readings])) for name in ("edge", "specks", "chroma", "aspect", "tint")}


#: word → (pixel reading it claims, the reading's direction): "sharp" raises edge crispness, ...
WORD_READINGS = {
    "sharp": "edge",
    "blurry": "edge",
    "clean": "specks",
    "cluttered": "specks",
    "vivid": "chroma",
    "faded": "chroma",
    "well-formed": "aspect",
    "distorted": "aspect",
    "warm light": "tint",
    "cold light": "tint",
}


def quality_vocabulary(pipeline, config: ShapesSDConfig, seed: int, images_per_prompt: int = 4) -> dict[str, float]:
    """Pixel readings (:func:`shapes.checker.read_quality`) of "c", "c, <word>" for each modifier word,
    and "c, <all positive words>" / "c, <all negative words>", over the training colour × shape pairs."""
    pairs = training_pairs()

    def prompts(suffix: str) -> list[str]:
        return [short_prompt(c, s) + suffix for c, s in pairs for _ in range(images_per_prompt)]

    figures = {f"plain_{k}": v for k, v in _readings_mean(pipeline, prompts(""), config, seed).items()}
    for word, reading in WORD_READINGS.items():
        figures[f"word_{word.replace(' ', '_')}_{reading}"] = _readings_mean(pipeline, prompts(", " + word), config, seed)[reading]
    positive = ", " + ", ".join(POSITIVE_WORDS)
    negative = ", " + ", ".join(low for _, low in QUALITY_WORDS.values())
    for name, suffix in (("positive", positive), ("negative", negative)):
        figures |= {f"{name}_{k}": v for k, v in _readings_mean(pipeline, prompts(suffix), config, seed).items() if k != "tint"}
    return figures


@torch.no_grad()
def evaluate_pipeline(pipeline: StableDiffusionPipeline, config: ShapesSDConfig, seed: int = 0) -> dict[str, float]:
    """The T2I quality figures, measured with the pixel-rule checker on fresh samples.

    - ``short_train_colour_shape``: short prompts of training colour × shape pairs, colour and shape both right;
    - ``short_held_out_colour_shape``: the same for the held-out pairs;
    - ``detailed_{attribute}``: for detailed captions of records from the world's prior (training
      pairs), how often each stated attribute is honoured, and ``detailed_all`` for all at once;
    - the quality vocabulary (:func:`quality_vocabulary`): ``plain_*``, ``word_<word>_<reading>``,
      ``positive_*`` and ``negative_*`` pixel readings.
    """
    pipeline.set_progress_bar_config(disable=True)
    figures: dict[str, float] = {}
    figures["short_train_colour_shape"] = _colour_shape_rate(pipeline, training_pairs(), config, seed)[0]
    figures["short_held_out_colour_shape"] = _colour_shape_rate(pipeline, list(HELD_OUT_PAIRS), config, seed + 1)[0]
    rng = np.random.default_rng(seed + 2)
    data = ShapesDataConfig()
    records = [sample_attributes(rng, training_pairs(), data) for _ in range(len(training_pairs()) * config.eval_images_per_prompt)]
    detailed = [detailed_caption(r) for r in records]
    results = [check_prompt(im, p) for im, p in zip(_sample(pipeline, detailed, config, seed + 3), detailed)]
    for name in ("colour", "shape", "size", "background"):
        figures[f"detailed_{name}"] = float(np.mean([r.correct[name] for r in results]))
    figures["detailed_all"] = float(np.mean([r.all_correct for r in results]))
    figures |= quality_vocabulary(pipeline, config, seed + 4)
    return figures
