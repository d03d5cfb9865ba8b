"""Stable Diffusion XL as a policy family: only what differs from SD 1.x (:mod:`t2i.policy`).

SDXL conditions its UNet on three things (Podell et al. 2023, "SDXL"):

- ``encoder_hidden_states``: the penultimate hidden states of both CLIP text encoders,
  concatenated along the feature axis (768 + 1280 = 2048 for the real model);
- ``text_embeds``: the pooled, projected output of the second text encoder;
- ``time_ids``: the size and crop micro-conditioning (original size, top-left crop, target size),
  six numbers per sample.

The first two come from the pipeline's own ``encode_prompt`` and travel in the recorded
:class:`~t2i.trajectory.Conditioning` like SD's embeddings. The time ids depend only on the
sampled image size, so :meth:`StableDiffusionXLPolicy.unet_forward` builds them from the latents'
size on every call (with :class:`SizeConditioning`'s defaults, exactly what the stock pipeline
passes). The sampler, log-prob recomputation, guidance and LoRA are the shared ones.

An empty negative prompt ∅ is what the stock pipeline does without one: with the pipeline's
``force_zeros_for_empty_prompt`` (SDXL base's setting), all-zero embeddings and pooled embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers import StableDiffusionXLPipeline

from t2i.policy import DiffusionPolicy
from t2i.prompts import PromptOverflow, first_overflow
from t2i.trajectory import Embeds

__all__ = ["SizeConditioning", "StableDiffusionXLPolicy", "add_time_ids"]


@dataclass
class SizeConditioning:
    """SDXL's micro-conditioning; a size left at None is the sampled image's (height, width), as in diffusers."""

    original_size: tuple[int, int] | None = field(default=None, metadata={"help": "(height, width) the model is told the source had"})
    crops_coords_top_left: tuple[int, int] = field(default=(0, 0), metadata={"help": "top-left crop (y, x) the model is told of"})
    target_size: tuple[int, int] | None = field(default=None, metadata={"help": "(height, width) of the target image"})


def add_time_ids(size: SizeConditioning, height: int, width: int) -> list[int]:
    """The six time ids (original size, crop top-left, target size) for an image of ``height`` × ``width``."""
    original = size.original_size or (height, width)
    target = size.target_size or (height, width)
    return [*original, *size.crops_coords_top_left, *target]


class StableDiffusionXLPolicy(DiffusionPolicy):
    """Stable Diffusion XL (``StableDiffusionXLPipeline``) as a policy; see the module docstring."""

    pipeline_class = StableDiffusionXLPipeline
    upcasts_vae = True

    def __init__(self, pipeline: StableDiffusionXLPipeline, size_conditioning: SizeConditioning | None = None):
        super().__init__(pipeline)
        self.size_conditioning = size_conditioning or SizeConditioning()

    def frozen_modules(self) -> list[torch.nn.Module]:
        parts = (self.pipeline.vae, self.pipeline.text_encoder, self.pipeline.text_encoder_2)
        return [module for module in parts if module is not None]

    def encode_prompts(self, prompts: list[str]) -> Embeds:
        """Both encoders' penultimate states (B, 77, d1 + d2) and the pooled embedding (B, d_proj), by diffusers."""
        embeds, _, pooled, _ = self.pipeline.encode_prompt(
            prompts, device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        return self.zero_empty_prompts(prompts, {"encoder_hidden_states": embeds, "text_embeds": pooled})

    def zero_empty_prompts(self, prompts: list[str], embeds: Embeds) -> Embeds:
        """Zero every tensor of the empty prompts when the pipeline has ``force_zeros_for_empty_prompt``."""
        empty = [p == "" for p in prompts]
        if not any(empty) or not self.pipeline.config.get("force_zeros_for_empty_prompt", False):
            return embeds
        keep = torch.tensor([not e for e in empty], device=self.device)
        return {k: v * keep.view(-1, *[1] * (v.ndim - 1)).to(v.dtype) for k, v in embeds.items()}

    def time_ids(self, model_input: torch.Tensor) -> torch.Tensor:
        """(N, 6) time ids for latents ``model_input`` (N, C, h, w): the image is h·s × w·s, s the VAE's scale."""
        scale = self.pipeline.vae_scale_factor
        ids = add_time_ids(self.size_conditioning, model_input.shape[-2] * scale, model_input.shape[-1] * scale)
        return torch.tensor([ids], dtype=self.dtype, device=model_input.device).expand(model_input.shape[0], -1)

    def unet_forward(self, model_input: torch.Tensor, t: torch.Tensor, kwargs: Embeds) -> torch.Tensor:
        added = {"text_embeds": kwargs["text_embeds"], "time_ids": self.time_ids(model_input)}
        return self.unet(model_input, t, encoder_hidden_states=kwargs["encoder_hidden_states"], added_cond_kwargs=added, return_dict=False)[
            0
        ]

    def prompt_overflow(self, prompt: str) -> PromptOverflow | None:
        """The first overflow of ``prompt`` over the two tokenizers (both have CLIP's 77 tokens in SDXL)."""
        return first_overflow((self.pipeline.tokenizer, self.pipeline.tokenizer_2), prompt)
