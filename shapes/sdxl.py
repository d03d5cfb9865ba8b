"""An SDXL-architecture text-to-image model of the shapes world (``shapes/world/sdxl``).

Same world, same VAE and same training data as the SD model (:mod:`shapes.sd`); what differs is
SDXL's conditioning (Podell et al. 2023): two text towers — here the world CLIP's text tower twice,
as ``CLIPTextModel`` (tower 1) and as ``CLIPTextModelWithProjection`` (tower 2, whose pooled,
projected output is the CLIP text embedding the rewards also read) — whose penultimate hidden
states are concatenated for cross-attention, and a UNet with SDXL's text-time added embedding
(the pooled projection plus six size/crop ids). The UNet is trained with the same ε-prediction
loop as the SD one, through :class:`t2i.sdxl.StableDiffusionXLPolicy`'s conditioning, so the
prompts are encoded exactly as at sampling (an empty prompt as all zeros, SDXL base's
``force_zeros_for_empty_prompt``). A stock ``StableDiffusionXLPipeline`` loads the directory.
"""

from __future__ import annotations

import copy
from pathlib import Path

from diffusers import AutoencoderKL, StableDiffusionXLPipeline, UNet2DConditionModel
from transformers import CLIPModel, CLIPTextModelWithProjection, CLIPTokenizer

from shapes.data import Example
from shapes.sd import ShapesSDConfig, build_unet, evaluate_pipeline, text_encoder_from_clip, train_unet
from t2i.tiny import sd_ddim_scheduler

__all__ = ["TIME_EMBED_DIM", "assemble_sdxl_pipeline", "build_sdxl_unet", "text_encoder_with_projection", "train_world_sdxl"]

#: width of each of the six time ids' sinusoidal embedding (256 in SDXL base)
TIME_EMBED_DIM = 8


def text_encoder_with_projection(clip: CLIPModel) -> CLIPTextModelWithProjection:
    """The CLIP text tower with its projection (SDXL's second text encoder), same weights."""
    text_config = copy.deepcopy(clip.config.text_config)
    text_config.projection_dim = clip.config.projection_dim  # CLIPModel keeps it at the top level
    encoder = CLIPTextModelWithProjection(text_config)
    encoder.text_model.load_state_dict(clip.text_model.state_dict())
    encoder.text_projection.load_state_dict(clip.text_projection.state_dict())
    return encoder.eval().requires_grad_(False)


def build_sdxl_unet(config: ShapesSDConfig, latent_size: int, cross_attention_dim: int, pooled_dim: int) -> UNet2DConditionModel:
    """The SD model's UNet layout with SDXL's conditioning: text-time added embedding, linear projections."""
    return build_unet(
        config,
        latent_size,
        cross_attention_dim,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED_DIM,
        projection_class_embeddings_input_dim=6 * TIME_EMBED_DIM + pooled_dim,
    )


def assemble_sdxl_pipeline(
    vae: AutoencoderKL, clip: CLIPModel, tokenizer: CLIPTokenizer, config: ShapesSDConfig, latent_size: int
) -> StableDiffusionXLPipeline:
    """A ``StableDiffusionXLPipeline`` on the world's VAE and CLIP, with a fresh SDXL-layout UNet and SD's DDIM schedule."""
    text_encoder = text_encoder_from_clip(clip)
    text_encoder_2 = text_encoder_with_projection(clip)
    width = text_encoder.config.hidden_size + text_encoder_2.config.hidden_size
    unet = build_sdxl_unet(config, latent_size, width, text_encoder_2.config.projection_dim)
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=sd_ddim_scheduler(),
        force_zeros_for_empty_prompt=True,
    )


def train_world_sdxl(
    parts: tuple[AutoencoderKL, CLIPModel, CLIPTokenizer],
    train: list[Example],
    sd: ShapesSDConfig,
    out: Path,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, float]:
    """Assemble, train (:func:`shapes.sd.train_unet`) and save the model in ``out``; its figures: ``sdxl_unet_final_loss``,
    ``sdxl_parameters`` and ``sdxl_*`` of :func:`shapes.sd.evaluate_pipeline`."""
    vae, clip, tokenizer = parts
    latent_size = vae.config.sample_size // 2 ** (len(vae.config.block_out_channels) - 1)
    pipeline = assemble_sdxl_pipeline(vae, clip, tokenizer, sd, latent_size)
    record = train_unet(pipeline, train, sd, seed=seed, progress=progress)
    pipeline.save_pretrained(out)
    figures = {"sdxl_unet_final_loss": record["final_loss"], "sdxl_parameters": sum(p.numel() for p in pipeline.unet.parameters())}
    return figures | {f"sdxl_{k}": v for k, v in evaluate_pipeline(pipeline, sd, seed).items()}
