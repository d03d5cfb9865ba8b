"""An SD3-architecture text-to-image model of the shapes world (``shapes/world/sd3``).

Same world, VAE, text tower and training data as the SD and SDXL models (:mod:`shapes.sd`,
:mod:`shapes.sdxl`); what differs is SD3's (Esser et al. 2024):

- the denoiser is an MMDiT ``SD3Transformer2DModel`` (joint text–image attention, the pooled text in the
  time embedding) on the world's 16×16×4 latents in 2×2 patches (an 8×8 token grid; patch 1 quadruples
  the image tokens and cost ~10× per step on 2 CPU cores);
- both CLIP towers are the world CLIP's text tower with its projection (``CLIPTextModelWithProjection``,
  :func:`shapes.sdxl.text_encoder_with_projection`), so the pooled projection is the CLIP text embedding
  the rewards read; there is no T5 (``text_encoder_3`` None: the stock pipeline puts 256 zero tokens in
  its place, as SD3 allows), so the joint attention width is the two towers' widths together;
- the objective is rectified flow (:mod:`t2i.objective`): x_σ = (1−σ)·z + σ·ε, the transformer regresses
  v = ε − z at t = σ·1000, σ drawn logit-normally and shifted as SD3 trains. No offset noise: at σ = 1
  x_σ is pure noise, so nothing of the latent's mean leaks (the reason the SD model needs it);
- the scheduler is ``FlowMatchEulerDiscreteScheduler`` with ``shift`` 3 (SD3's). The choice, not a
  measurement: the attributes the world's prompts state (background, colour, shape, size) are decided
  near σ = 1 — the background is the latent's mean over 256 positions and survives noise almost to the
  end — and shift 3 spends more training draws and sampling steps there (σ = 3u/(1 + 2u));
- the VAE is the world's, with ``shift_factor`` 0.0 (the SD VAE has none; the stock SD3 pipeline adds it back).

It is trained by the same loop as the others (:func:`shapes.sd.train_unet`, through
:class:`t2i.sd3.StableDiffusion3Policy`'s conditioning) and measured by the same
:func:`shapes.sd.evaluate_pipeline`. A stock ``StableDiffusion3Pipeline`` loads the directory.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
from transformers import CLIPModel, CLIPTokenizer

from shapes.data import Example
from shapes.sd import ShapesSDConfig, evaluate_pipeline, train_unet
from shapes.sdxl import text_encoder_with_projection
from t2i.objective import TimestepDensity

__all__ = ["ShapesSD3Config", "assemble_sd3_pipeline", "build_sd3_transformer", "train_world_sd3"]


@dataclass
class ShapesSD3Config:
    """Sizes and training settings of the SD3-architecture model (the rest are the SD model's: ``ShapesSDConfig``)."""

    patch_size: int = field(default=2, metadata={"help": "latent pixels per token side (2 in SD3)"})
    layers: int = field(default=4, metadata={"help": "MMDiT blocks (24 in SD3 Medium)"})
    heads: int = field(default=4, metadata={"help": "attention heads; width = heads × head_dim"})
    head_dim: int = field(default=16, metadata={"help": "attention head width (64 in SD3)"})
    shift: float = field(default=3.0, metadata={"help": "FlowMatchEulerDiscreteScheduler shift of σ (3 in SD3)"})
    weighting: str = field(default="logit_normal", metadata={"help": "training σ density: logit_normal (SD3) or uniform"})
    steps: int = field(default=1500, metadata={"help": "transformer optimiser steps"})
    batch_size: int = field(default=32, metadata={"help": "latents per step"})
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW peak learning rate"})

    def __post_init__(self) -> None:
        for name in ("patch_size", "layers", "heads", "head_dim", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.shift <= 0:
            raise ValueError(f"shift={self.shift} must be > 0")
        TimestepDensity(weighting=self.weighting)  # refuses an unknown density by name

    def training(self, sd: ShapesSDConfig) -> ShapesSDConfig:
        """The shared training loop's settings: these steps, batch and rate, no offset noise, the rest the SD model's."""
        return dataclasses.replace(
            sd, unet_steps=self.steps, unet_batch_size=self.batch_size, unet_learning_rate=self.learning_rate, offset_noise=0.0
        )


def build_sd3_transformer(config: ShapesSD3Config, latent_size: int, latent_channels: int, text_width: int, pooled_dim: int):
    """SD3's MMDiT at the world's size: ``text_width`` is the joint attention width, ``pooled_dim`` the pooled projections'."""
    if latent_size % config.patch_size:
        raise ValueError(f"patch_size={config.patch_size} does not divide the latent side {latent_size}")
    return SD3Transformer2DModel(
        sample_size=latent_size,
        patch_size=config.patch_size,
        in_channels=latent_channels,
        out_channels=latent_channels,
        num_layers=config.layers,
        attention_head_dim=config.head_dim,
        num_attention_heads=config.heads,
        joint_attention_dim=text_width,
        caption_projection_dim=config.heads * config.head_dim,
        pooled_projection_dim=pooled_dim,
        pos_embed_max_size=latent_size // config.patch_size,
    )


def assemble_sd3_pipeline(
    vae: AutoencoderKL, clip: CLIPModel, tokenizer: CLIPTokenizer, config: ShapesSD3Config, latent_size: int
) -> StableDiffusion3Pipeline:
    """A ``StableDiffusion3Pipeline`` on (a copy of) the world's VAE and its CLIP text tower twice, a fresh MMDiT, no T5."""
    vae = copy.deepcopy(vae)
    if getattr(vae.config, "shift_factor", None) is None:
        vae.register_to_config(shift_factor=0.0)
    text_encoder, text_encoder_2 = text_encoder_with_projection(clip), text_encoder_with_projection(clip)
    width = text_encoder.config.hidden_size + text_encoder_2.config.hidden_size
    pooled = text_encoder.config.projection_dim + text_encoder_2.config.projection_dim
    transformer = build_sd3_transformer(config, latent_size, vae.config.latent_channels, width, pooled)
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=config.shift),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer,
        text_encoder_3=None,
        tokenizer_3=None,
    )


def train_world_sd3(
    parts: tuple[AutoencoderKL, CLIPModel, CLIPTokenizer],
    train: list[Example],
    sd: ShapesSDConfig,
    config: ShapesSD3Config,
    out: Path,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, float]:
    """Assemble, train and save the model in ``out``; its figures: ``sd3_final_loss``, ``sd3_parameters`` and
    ``sd3_*`` of :func:`shapes.sd.evaluate_pipeline` (the SD and SDXL models' figures, sampled the same way)."""
    vae, clip, tokenizer = parts
    latent_size = vae.config.sample_size // 2 ** (len(vae.config.block_out_channels) - 1)
    pipeline = assemble_sd3_pipeline(vae, clip, tokenizer, config, latent_size)
    density = TimestepDensity(weighting=config.weighting)
    record = train_unet(pipeline, train, config.training(sd), seed=seed, progress=progress, density=density)
    pipeline.save_pretrained(out)
    figures = {"sd3_final_loss": record["final_loss"], "sd3_parameters": sum(p.numel() for p in pipeline.transformer.parameters())}
    return figures | {f"sd3_{k}": v for k, v in evaluate_pipeline(pipeline, sd, seed).items()}
