"""Tiny reward backbones built in code (random weights), for tests, smoke runs and small worlds.

``build_tiny_clip`` gives a genuine transformers ``CLIPModel`` with the byte-level tokenizer
of :mod:`t2i.tiny`; ``save_tiny_clip`` writes it as a local model directory (safetensors +
tokenizer + preprocessor_config.json) that every CLIP-based reward loads by path.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel

from rewards.clip import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ClipBackbone, ImagePreprocessor
from t2i.random_init import build_random_model
from t2i.tiny import byte_level_clip_tokenizer

__all__ = ["TinyClipConfig", "build_tiny_clip", "save_tiny_clip", "save_random_clip", "save_tiny_captioner"]


@dataclass
class TinyClipConfig:
    seed: int = field(default=0, metadata={"help": "initialisation seed"})
    image_size: int = field(default=32, metadata={"help": "input side of the vision tower"})
    patch_size: int = field(default=8, metadata={"help": "ViT patch side"})
    hidden_size: int = field(default=32, metadata={"help": "width of both towers"})
    layers: int = field(default=2, metadata={"help": "transformer layers per tower"})
    projection_dim: int = field(default=16, metadata={"help": "embedding dimension D of e_x and e_c"})
    max_prompt_tokens: int = field(default=77, metadata={"help": "text context length"})


def build_tiny_clip(config: TinyClipConfig | None = None) -> ClipBackbone:
    config = config or TinyClipConfig()
    torch.manual_seed(config.seed)
    tokenizer = byte_level_clip_tokenizer(config.max_prompt_tokens)
    tower = dict(
        hidden_size=config.hidden_size,
        intermediate_size=4 * config.hidden_size,
        num_hidden_layers=config.layers,
        num_attention_heads=max(1, config.hidden_size // 16),
    )
    clip_config = CLIPConfig(
        text_config=dict(
            tower,
            vocab_size=len(tokenizer),
            max_position_embeddings=config.max_prompt_tokens,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(tower, image_size=config.image_size, patch_size=config.patch_size),
        projection_dim=config.projection_dim,
    )
    preprocess = ImagePreprocessor(resize=config.image_size, crop=(config.image_size, config.image_size))
    return ClipBackbone(CLIPModel(clip_config).eval(), tokenizer, preprocess)


def save_tiny_clip(directory: str | os.PathLike, config: TinyClipConfig | None = None) -> Path:
    """Build a tiny CLIP and save it (with a preprocessor_config.json) so it loads by path."""
    return _save_clip(build_tiny_clip(config), directory)


def save_random_clip(directory: str | os.PathLike, architecture: str = "clip_vit_l14", seed: int = 0) -> Path:
    """A full-size CLIP of a shipped architecture (:mod:`t2i.random_init`) with random weights, saved so it loads by path.

    Its tokenizer is the byte-level one of :mod:`t2i.tiny` (ids a subset of CLIP's vocabulary).
    """
    model = build_random_model(architecture, seed=seed)
    config = model.config
    side = config.vision_config.image_size
    tokenizer = byte_level_clip_tokenizer(config.text_config.max_position_embeddings)
    return _save_clip(ClipBackbone(model, tokenizer, ImagePreprocessor(resize=side, crop=(side, side))), directory)


def _save_clip(backbone: ClipBackbone, directory: str | os.PathLike) -> Path:
    directory = Path(directory)
    backbone.save_pretrained(directory)
    side = backbone.preprocess.crop[0]
    (directory / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "CLIPImageProcessor",
                "size": {"shortest_edge": side},
                "crop_size": {"height": side, "width": side},
                "image_mean": list(OPENAI_CLIP_MEAN),
                "image_std": list(OPENAI_CLIP_STD),
                "do_resize": True,
                "do_center_crop": True,
            }
        )
    )
    return directory


def save_tiny_captioner(directory: str | os.PathLike, image_size: int = 32, seed: int = 0) -> Path:
    """A random ViT→GPT-2 ``VisionEncoderDecoderModel`` captioner with a byte-level tokenizer, saved by path."""
    from transformers import GPT2Config, GPT2LMHeadModel, VisionEncoderDecoderModel, ViTConfig, ViTModel

    torch.manual_seed(seed)
    tokenizer = byte_level_clip_tokenizer()
    vision = ViTConfig(
        image_size=image_size, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    encoder = ViTModel(vision)
    decoder = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tokenizer),
            n_embd=32,
            n_layer=1,
            n_head=2,
            n_positions=64,
            add_cross_attention=True,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    model = VisionEncoderDecoderModel(encoder=encoder, decoder=decoder)
    model.config.decoder_start_token_id = tokenizer.bos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.decoder_start_token_id = tokenizer.bos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    directory = Path(directory)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "size": {"height": image_size, "width": image_size},
                "do_center_crop": False,
                "image_mean": [0.5, 0.5, 0.5],
                "image_std": [0.5, 0.5, 0.5],
            }
        )
    )
    return directory
