"""A genuine Stable Diffusion pipeline at toy size, built in code with random weights.

Used by the tests, the demo and the benchmarks: it exercises exactly the code paths of
SD 1.5 (``UNet2DConditionModel``, ``AutoencoderKL``, CLIP text tower, ``CLIPTokenizer``,
``DDIMScheduler``) without any download. Its tokenizer is byte-level BPE with no merges:
every UTF-8 byte is a token, so it needs no vocabulary file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

__all__ = [
    "TinyPipelineConfig",
    "assemble_sd_pipeline",
    "build_tiny_pipeline",
    "byte_level_clip_tokenizer",
    "sd_ddim_scheduler",
    "tiny_clip_text_config",
]


@dataclass
class TinyPipelineConfig:
    """Sizes of the toy pipeline (defaults run a 10-step batch of 4 in well under a second on CPU)."""

    seed: int = 0
    block_out_channels: tuple[int, ...] = field(default=(32, 64), metadata={"help": "UNet channels per resolution level"})
    latent_size: int = field(default=8, metadata={"help": "latent side; the image side is 2× for the tiny VAE"})
    latent_channels: int = field(default=4, metadata={"help": "VAE latent channels (SD uses 4)"})
    text_hidden_size: int = field(default=32, metadata={"help": "CLIP text width = UNet cross-attention dim"})
    text_layers: int = field(default=2, metadata={"help": "CLIP text transformer layers"})
    max_prompt_tokens: int = field(default=77, metadata={"help": "tokenizer max length (SD uses 77)"})
    attention_head_dim: int = field(default=8, metadata={"help": "UNet attention head dim"})


def byte_level_clip_tokenizer(max_length: int = 77, pad_token: str = "<|endoftext|>") -> CLIPTokenizer:
    """A ``CLIPTokenizer`` whose vocabulary is the 256 byte symbols (with and without ``</w>``).

    ``pad_token``: SDXL's second tokenizer pads with ``"!"`` instead of the end token.
    """
    symbols = list(bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], pad_token=pad_token)
    tokenizer.model_max_length = max_length
    return tokenizer


def tiny_clip_text_config(tokenizer: CLIPTokenizer, hidden_size: int, layers: int, **extra) -> CLIPTextConfig:
    """A small CLIP text tower's config for ``tokenizer`` (context = its max length; ``extra``: e.g. ``projection_dim``)."""
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden_size // 16),
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )


def sd_ddim_scheduler(**overrides) -> DDIMScheduler:
    """A ``DDIMScheduler`` with Stable Diffusion 1.x's noise schedule (``overrides`` change any setting)."""
    settings = dict(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return DDIMScheduler(**{**settings, **overrides})


def build_tiny_pipeline(config: TinyPipelineConfig | None = None) -> StableDiffusionPipeline:
    """Build a randomly initialised tiny ``StableDiffusionPipeline`` with a DDIM scheduler."""
    config = config or TinyPipelineConfig()
    torch.manual_seed(config.seed)
    tokenizer = byte_level_clip_tokenizer(config.max_prompt_tokens)
    text_encoder = CLIPTextModel(tiny_clip_text_config(tokenizer, config.text_hidden_size, config.text_layers))
    levels = len(config.block_out_channels)
    unet = UNet2DConditionModel(
        sample_size=config.latent_size,
        in_channels=config.latent_channels,
        out_channels=config.latent_channels,
        block_out_channels=tuple(config.block_out_channels),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D",) * (levels - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (levels - 1),
        cross_attention_dim=config.text_hidden_size,
        attention_head_dim=config.attention_head_dim,
        norm_num_groups=8,
    )
    vae = tiny_vae(config.latent_channels, config.latent_size)
    return assemble_sd_pipeline(vae, unet, text_encoder, tokenizer)


def tiny_vae(latent_channels: int, latent_size: int, **extra) -> AutoencoderKL:
    """The toy pipelines' ``AutoencoderKL`` (two levels, 16/32 channels: images 2× the latent side);
    ``extra`` are a family's own VAE settings (SDXL's scaling factor, SD3's shift and no quant convs)."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(16, 32),
        latent_channels=latent_channels,
        norm_num_groups=8,
        sample_size=2 * latent_size,
        **extra,
    )


def assemble_sd_pipeline(
    vae: AutoencoderKL, unet: UNet2DConditionModel, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer
) -> StableDiffusionPipeline:
    """A ``StableDiffusionPipeline`` from its parts, with SD's DDIM scheduler and no safety checker."""
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=sd_ddim_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
