"""A genuine Stable Diffusion 3 pipeline at toy size, built in code with random weights (``builtin:tiny_sd3``).

The same classes and wiring as SD3 / SD3.5: an MMDiT ``SD3Transformer2DModel`` (velocity prediction),
two CLIP text towers with projections (``CLIPTextModelWithProjection``, the second's tokenizer padding
with ``"!"``) whose penultimate states are concatenated and zero-padded to the joint attention width,
their pooled projections concatenated as ``pooled_projections``, an optional T5 encoder (left out by
default: the pipeline then uses zeros for its tokens, as SD3 allows), a VAE with SD3's scaling and shift
factors, and ``FlowMatchEulerDiscreteScheduler`` with SD3's shift of 3. Tokenizers are built in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
from transformers import CLIPTextModelWithProjection, T5Config, T5EncoderModel

from t2i.random_init import character_level_t5_tokenizer
from t2i.tiny import byte_level_clip_tokenizer, tiny_clip_text_config, tiny_vae

__all__ = ["SD3_VAE_SCALING_FACTOR", "SD3_VAE_SHIFT_FACTOR", "TinySD3Config", "build_tiny_sd3_pipeline"]

SD3_VAE_SCALING_FACTOR = 1.5305
SD3_VAE_SHIFT_FACTOR = 0.0609


@dataclass
class TinySD3Config:
    """Sizes of the toy SD3 pipeline."""

    seed: int = 0
    latent_size: int = field(default=8, metadata={"help": "latent side; the image side is 2× for the tiny VAE"})
    latent_channels: int = field(default=4, metadata={"help": "VAE latent channels (16 in SD3)"})
    num_layers: int = field(default=2, metadata={"help": "MMDiT blocks (24 in SD3.5 Medium)"})
    num_attention_heads: int = field(default=2, metadata={"help": "attention heads; width = heads × head dim"})
    attention_head_dim: int = field(default=8, metadata={"help": "attention head dim (64 in SD3)"})
    text_hidden_size: int = field(default=16, metadata={"help": "width of CLIP tower 1 (768 in SD3)"})
    text_hidden_size_2: int = field(default=24, metadata={"help": "width of CLIP tower 2 (1280 in SD3)"})
    projection_dims: tuple[int, int] = field(default=(16, 24), metadata={"help": "pooled projections of the CLIP towers"})
    joint_attention_dim: int = field(default=48, metadata={"help": "text token width (T5's; 4096 in SD3), ≥ the CLIP widths' sum"})
    text_layers: int = field(default=2, metadata={"help": "transformer layers of each text tower"})
    with_t5: bool = field(default=False, metadata={"help": "build the T5 encoder (text_encoder_3); SD3 runs without it"})
    max_prompt_tokens: int = field(default=77, metadata={"help": "CLIP tokenizer max length (77 in SD3)"})


def tiny_sd3_transformer(config: TinySD3Config) -> SD3Transformer2DModel:
    """SD3's MMDiT at toy size (patch 2, joint text-image attention, pooled text in the time embedding)."""
    return SD3Transformer2DModel(
        sample_size=config.latent_size,
        patch_size=2,
        in_channels=config.latent_channels,
        out_channels=config.latent_channels,
        num_layers=config.num_layers,
        attention_head_dim=config.attention_head_dim,
        num_attention_heads=config.num_attention_heads,
        joint_attention_dim=config.joint_attention_dim,
        caption_projection_dim=config.num_attention_heads * config.attention_head_dim,
        pooled_projection_dim=sum(config.projection_dims),
        pos_embed_max_size=config.latent_size,
    )


def tiny_sd3_vae(config: TinySD3Config) -> AutoencoderKL:
    """SD3's VAE layout at toy size: no quant convs, SD3's scaling and shift factors, spatial factor 2."""
    return tiny_vae(
        config.latent_channels,
        config.latent_size,
        scaling_factor=SD3_VAE_SCALING_FACTOR,
        shift_factor=SD3_VAE_SHIFT_FACTOR,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def build_tiny_sd3_pipeline(config: TinySD3Config | None = None) -> StableDiffusion3Pipeline:
    """Build a randomly initialised tiny ``StableDiffusion3Pipeline`` (T5 only with ``config.with_t5``)."""
    config = config or TinySD3Config()
    if config.joint_attention_dim < config.text_hidden_size + config.text_hidden_size_2:
        raise ValueError("joint_attention_dim must be at least text_hidden_size + text_hidden_size_2 (the CLIP states are padded to it)")
    torch.manual_seed(config.seed)
    tokenizer = byte_level_clip_tokenizer(config.max_prompt_tokens)
    tokenizer_2 = byte_level_clip_tokenizer(config.max_prompt_tokens, pad_token="!")
    text_encoder = CLIPTextModelWithProjection(
        tiny_clip_text_config(tokenizer, config.text_hidden_size, config.text_layers, projection_dim=config.projection_dims[0])
    )
    text_encoder_2 = CLIPTextModelWithProjection(
        tiny_clip_text_config(tokenizer_2, config.text_hidden_size_2, config.text_layers, projection_dim=config.projection_dims[1])
    )
    tokenizer_3 = text_encoder_3 = None
    if config.with_t5:
        tokenizer_3 = character_level_t5_tokenizer(config.max_prompt_tokens)
        t5 = T5Config(vocab_size=len(tokenizer_3), d_model=config.joint_attention_dim, d_kv=8, d_ff=64, num_layers=2, num_heads=2)
        text_encoder_3 = T5EncoderModel(t5)
    return StableDiffusion3Pipeline(
        transformer=tiny_sd3_transformer(config),
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        vae=tiny_sd3_vae(config),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2.eval(),
        tokenizer_2=tokenizer_2,
        text_encoder_3=None if text_encoder_3 is None else text_encoder_3.eval(),
        tokenizer_3=tokenizer_3,
    )
