"""The diffusion policy: a Stable-Diffusion-family pipeline seen as an RL policy π_θ.

A policy is put together from rooms with one job each:

- :mod:`t2i.prompts`: prompt checks and the text encoder's context (:class:`~t2i.prompts.PromptOverflow`);
- :mod:`t2i.trajectory`: what a rollout records (:class:`~t2i.trajectory.Conditioning`, :class:`~t2i.trajectory.Trajectory`);
- :mod:`t2i.sampling`: the sampling loop and log-prob recomputation (:class:`~t2i.sampling.SamplingMixin`);
- :mod:`t2i.conditioning`: prompts → the batch's encoded conditioning (:class:`~t2i.conditioning.ConditioningMixin`);
- :mod:`t2i.lora`: LoRA adapters (:class:`~t2i.lora.LoraMixin`);
- this module: the guided model call, and the family seam.

``DiffusionPolicy`` holds everything that does not depend on the pipeline family. A family
subclass supplies only what differs: its ``pipeline_class`` (and ``load_defaults``; loading itself
is shared), ``encode_prompts`` (prompts → UNet keyword tensors), ``frozen_modules``, and where
needed ``unet_forward`` (the model call), ``step`` (one transition of p_θ with its log-density:
stochastic DDIM here) and ``decode``. ``StableDiffusionPolicy`` is SD 1.x/2.x; SDXL
(:mod:`t2i.sdxl`) adds pooled embeddings and time ids in its own ``encode_prompts``/``unet_forward``;
the flow-matching families SD3 (:mod:`t2i.sd3`) and FLUX (:mod:`t2i.flux`) share their ``step`` (Flow-GRPO's SDE,
:mod:`t2i.flow`) through :class:`t2i.flow_policy.FlowMatchingPolicy`; FLUX also packs latents around its model call
and overrides the sampler's ``initial_latents`` and ``set_timesteps`` hooks. :mod:`t2i.families` picks the family
from a pipeline's ``model_index.json``.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import torch
from diffusers import DDIMScheduler, DiffusionPipeline, StableDiffusionPipeline

from t2i.conditioning import ConditioningMixin
from t2i.ddim import DDIMStep, ddim_step_with_log_prob
from t2i.guidance import combine_noise_predictions
from t2i.lora import LoraMixin
from t2i.prompts import PromptOverflow, token_overflow
from t2i.sampling import SamplingMixin
from t2i.sources import components_saved_as_none, resolve_model_source
from t2i.trajectory import Conditioning, Embeds

__all__ = ["DiffusionPolicy", "StableDiffusionPolicy"]


class DiffusionPolicy(SamplingMixin, ConditioningMixin, LoraMixin, ABC):
    """A diffusers pipeline used as a stochastic policy; family-specific parts are abstract."""

    pipeline_class: type[DiffusionPipeline] = DiffusionPipeline
    load_defaults: ClassVar[dict[str, Any]] = {}  # keyword arguments of ``pipeline_class.from_pretrained`` unless given
    upcasts_vae: ClassVar[bool] = False  # decode a float16 VAE in float32 when its config says force_upcast (SDXL)
    denoiser_name: ClassVar[str] = "unet"  # the pipeline's denoiser attribute, also its LoRA keyword (``unet_lora_layers``)
    scheduler_class: ClassVar[type] = DDIMScheduler  # the scheduler ``step`` reads; another one is converted from its config

    def __init__(self, pipeline: DiffusionPipeline):
        if not isinstance(pipeline.scheduler, self.scheduler_class):
            pipeline.scheduler = self.scheduler_class.from_config(pipeline.scheduler.config)
        self.pipeline = pipeline
        # diffusers' ModelMixin.dtype walks every submodule; read it once, refresh it in to()
        self._dtype = self.unet.dtype
        self._warned_long_prompts: set[str] = set()
        for module in self.frozen_modules():
            module.requires_grad_(False)
        self.unet.requires_grad_(False)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        torch_dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        **kwargs,
    ) -> DiffusionPolicy:
        """Load the family's pipeline from a hub id (e.g. ``runwayml/stable-diffusion-v1-5``) or a local directory.

        ``load_defaults`` fill in keyword arguments not given (SD: no safety checker, RL never runs it), and so
        does None for each component a local directory saved as None (SD3 without T5).
        """
        source = resolve_model_source(name_or_path, "model_index.json", kind="diffusers pipeline")
        kwargs = {**cls.load_defaults, **components_saved_as_none(source), **kwargs}
        try:
            pipeline = cls.pipeline_class.from_pretrained(source, torch_dtype=torch_dtype, **kwargs)
        except (OSError, ValueError) as err:
            where = "the local directory" if Path(source).is_dir() else "it is not a local directory, and the hub id"
            raise OSError(
                f"could not load a {cls.pipeline_class.__name__} from {source!r}: {where} failed to load ({type(err).__name__}: {err})"
            ) from err
        return cls(pipeline).to(device)

    # ----- family-specific: what a new family supplies (defaults: an SD-style UNet pipeline) -----
    @abstractmethod
    def encode_prompts(self, prompts: list[str]) -> Embeds:
        """Per-sample UNet conditioning tensors for ``prompts``, each shaped (B, …)."""

    @abstractmethod
    def frozen_modules(self) -> list[torch.nn.Module]:
        """Modules never trained by RL (text encoders, VAE)."""

    def unet_forward(self, model_input: torch.Tensor, t: torch.Tensor, kwargs: Embeds) -> torch.Tensor:
        """The raw UNet call; SDXL overrides this to pass ``added_cond_kwargs``."""
        return self.unet(model_input, t, **kwargs, return_dict=False)[0]

    def step(
        self,
        model_output: torch.Tensor,
        t: torch.Tensor,
        x: torch.Tensor,
        *,
        eta: float,
        generator: torch.Generator | list[torch.Generator] | None = None,
        prev_sample: torch.Tensor | None = None,
    ) -> DDIMStep:
        """One transition x_t → x_{t-1} of p_θ and its log-density: stochastic DDIM (:mod:`t2i.ddim`).

        Draws x_{t-1} with ``generator``, or scores the recorded ``prev_sample``.
        """
        return ddim_step_with_log_prob(self.scheduler, model_output, t, x, eta=eta, prev_sample=prev_sample, generator=generator)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """VAE-decode x_0 to float32 images in [0, 1], (B, 3, H, W), as the family's stock pipeline does.

        A family with ``upcasts_vae`` (SDXL) decodes with a float32 VAE when the VAE is float16 and its
        config says ``force_upcast``; the latents' ``latents_mean``/``latents_std`` are undone when the
        VAE's config has them, and its ``shift_factor`` (SD3, FLUX) is added back when set.
        """
        vae = self.pipeline.vae
        upcast = self.upcasts_vae and vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
        mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
        if mean is not None and std is not None:
            shape = (1, -1, 1, 1)
            latents = latents * torch.tensor(std, device=latents.device).view(shape) / vae.config.scaling_factor
            latents = latents + torch.tensor(mean, device=latents.device).view(shape)
        else:
            latents = latents / vae.config.scaling_factor
        if getattr(vae.config, "shift_factor", None) is not None:
            latents = latents + vae.config.shift_factor
        if upcast:
            vae.to(dtype=torch.float32)
        try:
            images = vae.decode(latents.to(vae.dtype), return_dict=False)[0]
        finally:
            if upcast:
                vae.to(dtype=torch.float16)
        return (images.float() / 2 + 0.5).clamp(0, 1)

    def prompt_overflow(self, prompt: str) -> PromptOverflow | None:
        """How ``prompt`` overflows the text encoder's context (diffusers truncates it), or None when it fits."""
        tokenizer = getattr(self.pipeline, "tokenizer", None)
        return None if tokenizer is None else token_overflow(tokenizer, prompt)

    # ----- shared ----------------------------------------------------------------------
    @property
    def unet(self) -> torch.nn.Module:
        """The denoiser ε_θ / v_θ: ``pipeline.unet``, or the family's ``denoiser_name`` (SD3's ``transformer``)."""
        return getattr(self.pipeline, self.denoiser_name)

    @property
    def scheduler(self) -> DDIMScheduler:
        return self.pipeline.scheduler

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the UNet's weights (change it with ``policy.to(dtype=...)``)."""
        return self._dtype

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> DiffusionPolicy:
        self.pipeline.to(device, dtype)
        self._dtype = self.unet.dtype
        return self

    def predict_noise(
        self, latents: torch.Tensor, timesteps: torch.Tensor, conditioning: Conditioning, index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Guided network output ε̄(x_t, t) for N latents, in one UNet call over all groups; float32.

        ``timesteps`` is a 0-d tensor or (N,); ``index`` (N,) picks which samples of the
        conditioning batch the latents belong to (default: all, in order).
        """
        groups = conditioning.num_groups
        model_input = torch.cat([latents] * groups) if groups > 1 else latents
        dtype = self.dtype
        scale = getattr(self.scheduler, "scale_model_input", None)  # flow-matching schedulers feed x_σ unscaled
        model_input = (model_input if scale is None else scale(model_input, timesteps)).to(dtype)
        t = timesteps.repeat(groups) if timesteps.ndim == 1 else timesteps
        kwargs = {k: v.to(dtype) if v.is_floating_point() else v for k, v in conditioning.flat(index).items()}
        output = self.unet_forward(model_input, t, kwargs).float()  # guidance and the step in float32 whatever the model dtype
        chunks = list(output.chunk(groups)) if groups > 1 else [output]
        eps_uncond = chunks.pop(0) if conditioning.has_unconditional else None
        return combine_noise_predictions(eps_uncond, chunks, conditioning.weights)


class StableDiffusionPolicy(DiffusionPolicy):
    """Stable Diffusion 1.x / 2.x (``StableDiffusionPipeline``) as a policy."""

    pipeline_class = StableDiffusionPipeline
    load_defaults: ClassVar[dict[str, Any]] = {"safety_checker": None, "requires_safety_checker": False}

    def frozen_modules(self) -> list[torch.nn.Module]:
        return [self.pipeline.vae, self.pipeline.text_encoder]

    def encode_prompts(self, prompts: list[str]) -> Embeds:
        embeds, _ = self.pipeline.encode_prompt(prompts, self.device, 1, False)
        return {"encoder_hidden_states": embeds}
