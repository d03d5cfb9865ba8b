"""A genuine FLUX.1 pipeline at toy size, built in code with random weights (``builtin:tiny_flux``).

The same classes and wiring as FLUX.1-dev: a ``FluxTransformer2DModel`` (double- and single-stream blocks,
rotary position ids over (text, row, column), velocity prediction on 2×2-patch tokens, a guidance embedding
when ``guidance_embeds``), a CLIP text tower (``CLIPTextModel``, its pooled output is the pooled projection),
a T5 encoder (FLUX needs it: its token states are the text tokens), a VAE with FLUX's scaling and shift
factors and no quant convs, and ``FlowMatchEulerDiscreteScheduler`` with FLUX.1-dev's dynamic shifting.
Tokenizers are built in memory (byte-level CLIP, character-level T5). The pipeline's ``default_sample_size``
is set to the toy latent side, so its default image (and the policy's) is 2 × ``latent_size`` pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from transformers import CLIPTextModel, T5Config, T5EncoderModel

from t2i.random_init import character_level_t5_tokenizer
from t2i.tiny import byte_level_clip_tokenizer, tiny_clip_text_config, tiny_vae

__all__ = ["FLUX_SCHEDULER", "FLUX_VAE_SCALING_FACTOR", "FLUX_VAE_SHIFT_FACTOR", "TinyFluxConfig", "build_tiny_flux_pipeline"]

FLUX_VAE_SCALING_FACTOR = 0.3611
FLUX_VAE_SHIFT_FACTOR = 0.1159
#: FLUX.1-dev's scheduler settings (resolution-dependent shift μ between 0.5 at 256 and 1.15 at 4096 image tokens)
FLUX_SCHEDULER = dict(
    num_train_timesteps=1000,
    shift=3.0,
    use_dynamic_shifting=True,
    base_shift=0.5,
    max_shift=1.15,
    base_image_seq_len=256,
    max_image_seq_len=4096,
)


@dataclass
class TinyFluxConfig:
    """Sizes of the toy FLUX pipeline."""

    seed: int = 0
    latent_size: int = field(default=8, metadata={"help": "latent side (even: 2×2 patches); the image side is 2× for the tiny VAE"})
    latent_channels: int = field(default=4, metadata={"help": "VAE latent channels (16 in FLUX.1); the transformer reads 4× as many"})
    num_layers: int = field(default=1, metadata={"help": "double-stream blocks (19 in FLUX.1)"})
    num_single_layers: int = field(default=1, metadata={"help": "single-stream blocks (38 in FLUX.1)"})
    num_attention_heads: int = field(default=2, metadata={"help": "attention heads (24 in FLUX.1)"})
    attention_head_dim: int = field(default=16, metadata={"help": "attention head dim (128 in FLUX.1) = sum of axes_dims_rope"})
    axes_dims_rope: tuple[int, int, int] = field(default=(4, 6, 6), metadata={"help": "rotary dims of (text, row, column) ids"})
    text_hidden_size: int = field(default=16, metadata={"help": "CLIP width = pooled projection dim (768 in FLUX.1)"})
    joint_attention_dim: int = field(default=32, metadata={"help": "T5 width = text token width (4096 in FLUX.1)"})
    text_layers: int = field(default=2, metadata={"help": "transformer layers of each text encoder"})
    guidance_embeds: bool = field(default=True, metadata={"help": "a guidance-distilled transformer (FLUX.1-dev); False: FLUX.1-schnell"})
    max_prompt_tokens: int = field(default=77, metadata={"help": "CLIP tokenizer max length (77 in FLUX.1)"})
    t5_tokens: int = field(default=512, metadata={"help": "T5 tokenizer max length (512 in FLUX.1-dev)"})

    def __post_init__(self) -> None:
        if self.latent_size < 2 or self.latent_size % 2:
            raise ValueError(f"latent_size={self.latent_size} must be even (FLUX packs 2×2 latent patches)")
        if sum(self.axes_dims_rope) != self.attention_head_dim:
            raise ValueError(f"axes_dims_rope={self.axes_dims_rope} must add up to attention_head_dim={self.attention_head_dim}")


def tiny_flux_transformer(config: TinyFluxConfig) -> FluxTransformer2DModel:
    """FLUX's transformer at toy size (packed 2×2 patches in, patch size 1 on the tokens)."""
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=4 * config.latent_channels,
        num_layers=config.num_layers,
        num_single_layers=config.num_single_layers,
        attention_head_dim=config.attention_head_dim,
        num_attention_heads=config.num_attention_heads,
        joint_attention_dim=config.joint_attention_dim,
        pooled_projection_dim=config.text_hidden_size,
        guidance_embeds=config.guidance_embeds,
        axes_dims_rope=tuple(config.axes_dims_rope),
    )


def build_tiny_flux_pipeline(config: TinyFluxConfig | None = None) -> FluxPipeline:
    """Build a randomly initialised tiny ``FluxPipeline`` (CLIP, T5, FLUX transformer, FLUX-style VAE)."""
    config = config or TinyFluxConfig()
    torch.manual_seed(config.seed)
    tokenizer = byte_level_clip_tokenizer(config.max_prompt_tokens)
    text_encoder = CLIPTextModel(tiny_clip_text_config(tokenizer, config.text_hidden_size, config.text_layers))
    tokenizer_2 = character_level_t5_tokenizer(config.t5_tokens)
    t5 = T5Config(
        vocab_size=len(tokenizer_2), d_model=config.joint_attention_dim, d_kv=8, d_ff=64, num_layers=config.text_layers, num_heads=2
    )
    vae = tiny_vae(
        config.latent_channels,
        config.latent_size,
        scaling_factor=FLUX_VAE_SCALING_FACTOR,
        shift_factor=FLUX_VAE_SHIFT_FACTOR,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )
    pipeline = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER),
        vae=vae,
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        text_encoder_2=T5EncoderModel(t5).eval(),
        tokenizer_2=tokenizer_2,
        transformer=tiny_flux_transformer(config),
    )
    pipeline.default_sample_size = config.latent_size
    return pipeline
