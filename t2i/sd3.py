"""Stable Diffusion 3 / 3.5 as a policy family: only what differs from SD 1.x (:mod:`t2i.policy`).

SD3 (Esser et al. 2024) is a rectified-flow model: its MMDiT ``pipeline.transformer`` predicts the
velocity v_θ(x_σ, t) with t = σ·1000, and the stock pipeline steps with
``FlowMatchEulerDiscreteScheduler`` (Euler on dx/dσ = v). As a policy it differs from SD in four places:

- ``encode_prompts``: the pipeline's own ``encode_prompt`` gives ``encoder_hidden_states`` (the two CLIP
  towers' penultimate states, zero-padded to T5's width, followed by T5's tokens, or zeros without T5)
  and ``pooled_projections`` (both towers' pooled projections);
- ``unet_forward``: the transformer call with a per-sample timestep, as the stock pipeline makes it;
- ``step``: Flow-GRPO's SDE step (:mod:`t2i.flow`), the sampler's η carrying the noise level a; with
  a = 0 and ``compute_log_probs=False`` the sampler takes the Euler step, so the images equal the stock
  pipeline's;
- the scheduler stays ``FlowMatchEulerDiscreteScheduler`` (it has no input scaling), and LoRA goes on
  ``pipeline.transformer``, saved as ``transformer_lora_layers`` that a stock
  ``StableDiffusion3Pipeline.load_lora_weights`` reads.

The last two are shared with FLUX (:class:`t2i.flow_policy.FlowMatchingPolicy`).

The sampler, recomputation of log-probs, guidance (CFG: ε̄ = v(∅) + w·(v(c) − v(∅)) as stock) and
decoding (latents / scaling_factor + shift_factor) are the shared ones. An empty negative prompt is
encoded like any prompt, as the stock pipeline does. The timestep schedule is the scheduler's
``set_timesteps(T)`` (the sampler's default ``set_timesteps`` hook): a scheduler with ``use_dynamic_shifting``
(resolution-dependent μ, as FLUX's family computes it in :mod:`t2i.flux`) is refused.
"""

from __future__ import annotations

import torch
from diffusers import StableDiffusion3Pipeline

from t2i.flow import NoiseSchedule
from t2i.flow_policy import FlowMatchingPolicy
from t2i.prompts import PromptOverflow, first_overflow
from t2i.trajectory import Embeds

__all__ = ["StableDiffusion3Policy"]


class StableDiffusion3Policy(FlowMatchingPolicy):
    """Stable Diffusion 3 / 3.5 (``StableDiffusion3Pipeline``) as a policy; see the module docstring."""

    pipeline_class = StableDiffusion3Pipeline

    def __init__(self, pipeline: StableDiffusion3Pipeline, noise_schedule: NoiseSchedule = "flow_grpo"):
        if pipeline.scheduler.config.get("use_dynamic_shifting", False):
            raise ValueError("the scheduler uses dynamic shifting (use_dynamic_shifting=True), which the SD3 policy does not support")
        super().__init__(pipeline, noise_schedule)

    def frozen_modules(self) -> list[torch.nn.Module]:
        parts = (self.pipeline.vae, self.pipeline.text_encoder, self.pipeline.text_encoder_2, self.pipeline.text_encoder_3)
        return [module for module in parts if module is not None]

    def encode_prompts(self, prompts: list[str]) -> Embeds:
        """Token states (B, 77 + L_T5, d_joint) and pooled projections (B, d1 + d2), by diffusers' ``encode_prompt``."""
        embeds, _, pooled, _ = self.pipeline.encode_prompt(
            prompts, None, None, device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        return {"encoder_hidden_states": embeds, "pooled_projections": pooled}

    def unet_forward(self, model_input: torch.Tensor, t: torch.Tensor, kwargs: Embeds) -> torch.Tensor:
        timestep = t.expand(model_input.shape[0]) if t.ndim == 0 else t
        return self.unet(hidden_states=model_input, timestep=timestep, **kwargs, return_dict=False)[0]

    def prompt_overflow(self, prompt: str) -> PromptOverflow | None:
        """The first overflow of ``prompt`` over the CLIP tokenizers (T5 reads longer prompts)."""
        return first_overflow((self.pipeline.tokenizer, self.pipeline.tokenizer_2), prompt)
