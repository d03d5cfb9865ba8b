"""A genuine Stable Diffusion XL pipeline at toy size, built in code with random weights (``builtin:tiny_sdxl``).

The same classes and wiring as SDXL base: two CLIP text towers (``CLIPTextModel`` and
``CLIPTextModelWithProjection``, the second's tokenizer padding with ``"!"``), a UNet with
``addition_embed_type="text_time"`` whose cross-attention width is the two towers' widths added
(768 + 1280 in SDXL) and whose added embedding reads 6 time ids plus the pooled projection
(6·256 + 1280 = 2816 in SDXL), no attention at the first resolution level, linear projections in the
transformers, the SDXL VAE's scaling factor, and DDIM with SDXL's noise schedule. The two towers
have different widths so that a mix-up of the encoders fails loudly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTextModelWithProjection

from t2i.tiny import byte_level_clip_tokenizer, sd_ddim_scheduler, tiny_clip_text_config, tiny_vae

__all__ = ["SDXL_VAE_SCALING_FACTOR", "TinySDXLConfig", "build_tiny_sdxl_pipeline"]

SDXL_VAE_SCALING_FACTOR = 0.13025


@dataclass
class TinySDXLConfig:
    """Sizes of the toy SDXL pipeline."""

    seed: int = 0
    block_out_channels: tuple[int, ...] = field(default=(32, 64), metadata={"help": "UNet channels per resolution level"})
    latent_size: int = field(default=8, metadata={"help": "latent side; the image side is 2× for the tiny VAE"})
    text_hidden_size: int = field(default=32, metadata={"help": "width of text tower 1 (768 in SDXL)"})
    text_hidden_size_2: int = field(default=48, metadata={"help": "width of text tower 2 (1280 in SDXL)"})
    projection_dim: int = field(default=24, metadata={"help": "pooled projection of text tower 2 (1280 in SDXL)"})
    text_layers: int = field(default=2, metadata={"help": "transformer layers of each text tower"})
    addition_time_embed_dim: int = field(default=8, metadata={"help": "embedding width of each time id (256 in SDXL)"})
    attention_head_dim: int = field(default=8, metadata={"help": "UNet attention head dim"})
    max_prompt_tokens: int = field(default=77, metadata={"help": "tokenizer max length (77 in SDXL)"})


def tiny_sdxl_unet(config: TinySDXLConfig) -> UNet2DConditionModel:
    """SDXL's UNet layout at toy size (attention from the second level down, text-time added embedding)."""
    levels = len(config.block_out_channels)
    return UNet2DConditionModel(
        sample_size=config.latent_size,
        in_channels=4,
        out_channels=4,
        block_out_channels=tuple(config.block_out_channels),
        layers_per_block=1,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (levels - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (levels - 1) + ("UpBlock2D",),
        cross_attention_dim=config.text_hidden_size + config.text_hidden_size_2,
        attention_head_dim=config.attention_head_dim,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=config.addition_time_embed_dim,
        projection_class_embeddings_input_dim=6 * config.addition_time_embed_dim + config.projection_dim,
        norm_num_groups=8,
    )


def build_tiny_sdxl_pipeline(config: TinySDXLConfig | None = None) -> StableDiffusionXLPipeline:
    """Build a randomly initialised tiny ``StableDiffusionXLPipeline`` with a DDIM scheduler (no watermarker)."""
    config = config or TinySDXLConfig()
    torch.manual_seed(config.seed)
    tokenizer = byte_level_clip_tokenizer(config.max_prompt_tokens)
    tokenizer_2 = byte_level_clip_tokenizer(config.max_prompt_tokens, pad_token="!")
    text_encoder = CLIPTextModel(tiny_clip_text_config(tokenizer, config.text_hidden_size, config.text_layers))
    text_encoder_2 = CLIPTextModelWithProjection(
        tiny_clip_text_config(tokenizer_2, config.text_hidden_size_2, config.text_layers, projection_dim=config.projection_dim)
    )
    vae = tiny_vae(4, config.latent_size, scaling_factor=SDXL_VAE_SCALING_FACTOR)
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=tiny_sdxl_unet(config),
        scheduler=sd_ddim_scheduler(),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
