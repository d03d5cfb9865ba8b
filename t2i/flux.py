"""FLUX.1 as a policy family: only what differs from the other flow-matching family, SD3 (:mod:`t2i.sd3`).

FLUX.1 (Black Forest Labs 2024) is a rectified-flow transformer like SD3, so the transition is the
shared Flow-GRPO SDE step (:class:`t2i.flow_policy.FlowMatchingPolicy`; a = 0 is the stock Euler step).
What differs, all read from diffusers' ``FluxPipeline``:

- ``encode_prompts``: the pipeline's own ``encode_prompt``: T5's token states (``encoder_hidden_states``,
  (B, L, d_T5), L = ``max_sequence_length``; FLUX needs T5) and CLIP-L's pooled output
  (``pooled_projections``); with a guidance-distilled transformer (``guidance_embeds``, FLUX.1-dev) also
  ``guidance`` (B,): the distilled guidance value g (``distilled_guidance``, 3.5 as FluxPipeline's
  default), recorded with the conditioning so that log-probs recompute with the g the images were sampled with;
- ``unet_forward``: the trajectory keeps latents in the (B, C, h, w) layout of every family; the model call
  packs them into 2×2-patch tokens (B, h/2·w/2, 4C) (``FluxPipeline._pack_latents``), passes the patches'
  (row, column) ids ``img_ids`` and zero ``txt_ids``, t/1000 as the timestep, and unpacks the velocity;
- ``initial_latents``: x_T is the pipeline's ``prepare_latents`` draw (Gaussian in (B, C, h, w), then packed),
  unpacked again, so it equals the stock pipeline's; the default size is the pipeline's
  ``default_sample_size`` × ``vae_scale_factor`` (1024 px for FLUX.1);
- ``set_timesteps``: FluxPipeline's schedule: σ from 1 to 1/T (``np.linspace``), shifted by the scheduler with the
  resolution-dependent μ = ``calculate_shift`` of the image token count h/2·w/2 (the scheduler config's
  ``base_image_seq_len``, ``max_image_seq_len``, ``base_shift``, ``max_shift``).

Guidance: FluxPipeline's true CFG (``true_cfg_scale`` s > 1 with a negative prompt) is
v(∅) + s·(v(c) − v(∅)), the shared guided sum, so ``Guidance.cfg(s)`` with s > 1 equals it and Parrot's
prompt-centred guidance works on top of it. The default is ``Guidance.cfg(1)``: one pass and no ∅, as
FLUX.1-dev is sampled (its CFG is distilled into g). As in every family here, 0 < s < 1 interpolates
between v(∅) and v(c), where diffusers ignores a ``true_cfg_scale`` ≤ 1. Decoding (latents / scaling_factor
+ shift_factor) and LoRA on the transformer (``transformer_lora_layers``, which a stock
``FluxPipeline.load_lora_weights`` reads) are the shared ones.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
from diffusers import FluxPipeline
from diffusers.pipelines.flux.pipeline_flux import calculate_shift

from t2i.flow import NoiseSchedule
from t2i.flow_policy import FlowMatchingPolicy
from t2i.prompts import PromptOverflow, first_overflow
from t2i.trajectory import Embeds

__all__ = ["FluxPolicy", "flux_shift_mu"]

DISTILLED_GUIDANCE = 3.5  # FluxPipeline's default guidance_scale, the value FLUX.1-dev is usually sampled at
MAX_SEQUENCE_LENGTH = 512  # FluxPipeline's default T5 length (its maximum)


def flux_shift_mu(scheduler_config: Any, latent_height: int, latent_width: int) -> float:
    """μ of the dynamic shift for a (latent_height × latent_width) latent: FluxPipeline's ``calculate_shift`` of its token count."""
    return calculate_shift(
        (latent_height // 2) * (latent_width // 2),
        scheduler_config.get("base_image_seq_len", 256),
        scheduler_config.get("max_image_seq_len", 4096),
        scheduler_config.get("base_shift", 0.5),
        scheduler_config.get("max_shift", 1.15),
    )


class FluxPolicy(FlowMatchingPolicy):
    """FLUX.1 (``FluxPipeline``) as a policy; see the module docstring."""

    pipeline_class = FluxPipeline
    default_guidance_scale: ClassVar[float] = 1.0

    def __init__(
        self,
        pipeline: FluxPipeline,
        noise_schedule: NoiseSchedule = "flow_grpo",
        distilled_guidance: float = DISTILLED_GUIDANCE,
        max_sequence_length: int = MAX_SEQUENCE_LENGTH,
    ):
        if pipeline.text_encoder_2 is None or pipeline.tokenizer_2 is None:
            raise ValueError("FLUX needs its T5 encoder: the pipeline has no text_encoder_2 / tokenizer_2")
        if (
            isinstance(distilled_guidance, bool)
            or not isinstance(distilled_guidance, (int, float))
            or not math.isfinite(distilled_guidance)
        ):
            raise ValueError(f"distilled_guidance={distilled_guidance!r} must be a finite number")
        if not 1 <= max_sequence_length <= MAX_SEQUENCE_LENGTH:
            raise ValueError(f"max_sequence_length={max_sequence_length} must be in [1, {MAX_SEQUENCE_LENGTH}] (FluxPipeline's limit)")
        super().__init__(pipeline, noise_schedule)
        self.distilled_guidance = float(distilled_guidance)
        self.max_sequence_length = max_sequence_length

    def frozen_modules(self) -> list[torch.nn.Module]:
        parts = (self.pipeline.vae, self.pipeline.text_encoder, self.pipeline.text_encoder_2)
        return [module for module in parts if module is not None]

    def encode_prompts(self, prompts: list[str]) -> Embeds:
        """T5 token states (B, L, d_T5), CLIP pooled output (B, d_CLIP) and, when distilled, g (B,): ``encode_prompt``."""
        embeds, pooled, _ = self.pipeline.encode_prompt(
            prompts, None, device=self.device, num_images_per_prompt=1, max_sequence_length=self.max_sequence_length
        )
        encoded = {"encoder_hidden_states": embeds, "pooled_projections": pooled}
        if self.unet.config.guidance_embeds:
            encoded["guidance"] = torch.full((len(prompts),), self.distilled_guidance, device=self.device, dtype=torch.float32)
        return encoded

    def unet_forward(self, model_input: torch.Tensor, t: torch.Tensor, kwargs: Embeds) -> torch.Tensor:
        """The transformer on 2×2-patch tokens of ``model_input`` (N, C, h, w); the velocity unpacked to (N, C, h, w)."""
        pipe, (n, c, h, w) = self.pipeline, model_input.shape
        packed = pipe._pack_latents(model_input, n, c, h, w)
        timestep = (t.expand(n) if t.ndim == 0 else t).to(packed.dtype) / 1000  # as FluxPipeline: the model multiplies by 1000
        text = kwargs["encoder_hidden_states"]
        txt_ids = torch.zeros(text.shape[1], 3, device=text.device, dtype=text.dtype)
        img_ids = pipe._prepare_latent_image_ids(n, h // 2, w // 2, text.device, text.dtype)
        velocity = self.unet(hidden_states=packed, timestep=timestep, txt_ids=txt_ids, img_ids=img_ids, **kwargs, return_dict=False)[0]
        scale = pipe.vae_scale_factor
        return pipe._unpack_latents(velocity, h * scale, w * scale, scale)

    def initial_latents(
        self,
        batch: int,
        height: int | None,
        width: int | None,
        generator: torch.Generator | list[torch.Generator] | None,
        latents: torch.Tensor | None,
    ) -> torch.Tensor:
        """x_T (B, C, h, w) in float32: FluxPipeline's ``prepare_latents`` draw, unpacked (a given x_T is used as is)."""
        if latents is not None:
            return latents.to(device=self.device, dtype=torch.float32)
        pipe = self.pipeline
        default = pipe.default_sample_size * pipe.vae_scale_factor
        height, width = height or default, width or default
        channels = self.unet.config.in_channels // 4
        packed, _ = pipe.prepare_latents(batch, channels, height, width, torch.float32, self.device, generator)
        return pipe._unpack_latents(packed, height, width, pipe.vae_scale_factor)

    def set_timesteps(self, num_inference_steps: int, x_T: torch.Tensor) -> None:
        """FluxPipeline's schedule for x_T's size: σ = linspace(1, 1/T, T) shifted with μ (:func:`flux_shift_mu`)."""
        config = self.scheduler.config
        steps = num_inference_steps
        sigmas = None if config.get("use_flow_sigmas", False) else np.linspace(1.0, 1 / steps, steps)
        mu = flux_shift_mu(config, x_T.shape[-2], x_T.shape[-1])
        self.scheduler.set_timesteps(steps, device=self.device, sigmas=sigmas, mu=mu)

    def prompt_overflow(self, prompt: str) -> PromptOverflow | None:
        """The first overflow of ``prompt`` over CLIP's 77 tokens (its pooled output) and T5's context."""
        return first_overflow((self.pipeline.tokenizer, self.pipeline.tokenizer_2), prompt)
