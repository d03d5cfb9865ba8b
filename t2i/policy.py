"""The diffusion policy: a Stable-Diffusion-family pipeline seen as an RL policy π_θ.

Notation (DDPO, Black et al. 2023; Parrot, Lee et al. 2024): a trajectory is
x_T → x_{T-1} → … → x_0 with each step x_{t-1} ~ p_θ(· | x_t, c) = N(μ_θ, σ_t² I) under
stochastic DDIM (η > 0). ``Trajectory.latents[:, i]`` is the latent *before* step i
(``latents[:, 0]`` is x_T, ``latents[:, -1]`` is x_0), ``timesteps[i]`` its t, and
``log_probs[:, i]`` is log p_θ(latents[:, i+1] | latents[:, i]) averaged over latent
dimensions. c is the conditioning: for CFG one prompt, for Parrot's original-prompt-centred
guidance the original prompt c and the expansion ĉ (see :mod:`t2i.guidance`).

``DiffusionPolicy`` holds everything that does not depend on the pipeline family (sampling,
log-prob recomputation, LoRA); a family subclass says how to load a pipeline and how to turn
prompts into UNet keyword arguments. ``StableDiffusionPolicy`` is SD 1.x/2.x; SDXL adds
pooled embeddings and time ids in its own ``encode_prompts``/``unet_kwargs``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from diffusers import DDIMScheduler, DiffusionPipeline, StableDiffusionPipeline
from tqdm.auto import tqdm

from t2i.ddim import DDIMStep, ddim_step_with_log_prob
from t2i.guidance import Guidance, combine_noise_predictions
from t2i.lora import LoraSettings, add_lora, load_lora, save_lora
from t2i.sources import resolve_model_source

__all__ = ["Conditioning", "Trajectory", "DiffusionPolicy", "StableDiffusionPolicy", "PromptOverflow"]

Embeds = dict[str, torch.Tensor]

logger = logging.getLogger(__name__)


@dataclass
class Conditioning:
    """Text conditioning of a batch, ready for one batched UNet call per step.

    ``embeds`` maps UNet keyword names to tensors shaped (G, B, …): group 0 is the
    unconditional/negative prompt ∅ when ``has_unconditional``, then one group per active
    condition c_j; ``weights`` are the w_j of those conditions.
    """

    embeds: Embeds
    weights: tuple[float, ...]
    has_unconditional: bool

    @property
    def num_groups(self) -> int:
        return next(iter(self.embeds.values())).shape[0]

    @property
    def batch_size(self) -> int:
        return next(iter(self.embeds.values())).shape[1]

    def flat(self, index: torch.Tensor | None = None) -> Embeds:
        """Groups concatenated along the batch, (G·N, …), optionally taking samples ``index`` (N,)."""
        out = {}
        for key, value in self.embeds.items():
            if index is not None:
                value = value[:, index]
            out[key] = value.reshape(-1, *value.shape[2:])
        return out

    def select(self, index: torch.Tensor) -> Conditioning:
        return replace(self, embeds={k: v[:, index] for k, v in self.embeds.items()})

    @classmethod
    def concatenate(cls, parts: Sequence[Conditioning]) -> Conditioning:
        """The batches of ``parts`` one after another (same groups and weights in every part)."""
        first = parts[0]
        for part in parts[1:]:
            if part.weights != first.weights or part.has_unconditional != first.has_unconditional:
                raise ValueError(f"cannot concatenate conditionings with weights {first.weights} and {part.weights}")
        return replace(first, embeds={k: torch.cat([p.embeds[k] for p in parts], dim=1) for k in first.embeds})


@dataclass
class Trajectory:
    """A batch of recorded sampling trajectories (see the module docstring for notation)."""

    latents: torch.Tensor  # (B, T+1, C, h, w) float32, x_T … x_0
    timesteps: torch.Tensor  # (T,) int64
    log_probs: torch.Tensor  # (B, T) float32, mean over latent dims
    images: torch.Tensor  # (B, 3, H, W) float32 in [0, 1]
    conditioning: Conditioning
    prompts: list[str]
    eta: float
    num_inference_steps: int
    original_prompts: list[str] | None = None  # c of prompt-centred guidance; None under CFG

    @property
    def batch_size(self) -> int:
        return self.latents.shape[0]

    @property
    def log_probs_sum(self) -> torch.Tensor:
        """log p summed (not averaged) over the latent dimensions, (B, T)."""
        return self.log_probs * self.latents[0, 0].numel()

    def select(self, index: torch.Tensor | Sequence[int]) -> Trajectory:
        """The sub-batch of samples ``index`` (e.g. one process's slice, or the selected set P)."""
        index = torch.as_tensor(index, dtype=torch.long, device=self.latents.device)
        picked = index.tolist()
        return replace(
            self,
            latents=self.latents[index],
            log_probs=self.log_probs[index],
            images=self.images[index],
            conditioning=self.conditioning.select(index),
            prompts=[self.prompts[i] for i in picked],
            original_prompts=None if self.original_prompts is None else [self.original_prompts[i] for i in picked],
        )

    @classmethod
    def concatenate(cls, parts: Sequence[Trajectory]) -> Trajectory:
        """The samples of ``parts`` one after another (the inverse of :meth:`select` on a split batch)."""
        if not parts:
            raise ValueError("concatenate needs at least one trajectory")
        first = parts[0]
        for part in parts[1:]:
            if not torch.equal(part.timesteps, first.timesteps) or part.eta != first.eta:
                raise ValueError("cannot concatenate trajectories sampled with different timesteps or eta")
        originals = [p.original_prompts for p in parts]
        return replace(
            first,
            latents=torch.cat([p.latents for p in parts]),
            log_probs=torch.cat([p.log_probs for p in parts]),
            images=torch.cat([p.images for p in parts]),
            conditioning=Conditioning.concatenate([p.conditioning for p in parts]),
            prompts=[text for p in parts for text in p.prompts],
            original_prompts=None if any(o is None for o in originals) else [text for o in originals for text in o],
        )


@dataclass(frozen=True)
class PromptOverflow:
    """A prompt longer than the text encoder's context: its token count and the text that is dropped."""

    tokens: int  # with the start and end tokens
    context: int  # the text encoder's context length (77 for CLIP)
    dropped: str  # the words past the context, decoded

    def describe(self, prompt: str, max_words: int = 20) -> str:
        words = self.dropped.split()
        shown = " ".join(words[:max_words]) + (f" … (+{len(words) - max_words} more words)" if len(words) > max_words else "")
        head = prompt if len(prompt) <= 60 else prompt[:57] + "..."
        return f"prompt {head!r} has {self.tokens} tokens but the text encoder reads {self.context}; dropped: {shown!r}"


def _check_prompts(name: str, prompts: str | Sequence[str]) -> list[str]:
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts:
        raise ValueError(f"{name} is empty: give at least one prompt")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise TypeError(f"{name}[{i}] is {type(p).__name__}, expected str")
        if not p.strip():
            raise ValueError(f"{name}[{i}] is an empty prompt; use negative_prompt for the unconditional branch")
    return prompts


class DiffusionPolicy(ABC):
    """A diffusers pipeline used as a stochastic policy; family-specific parts are abstract."""

    pipeline_class: type[DiffusionPipeline] = DiffusionPipeline

    def __init__(self, pipeline: DiffusionPipeline):
        if not isinstance(pipeline.scheduler, DDIMScheduler):
            pipeline.scheduler = DDIMScheduler.from_config(pipeline.scheduler.config)
        self.pipeline = pipeline
        # diffusers' ModelMixin.dtype walks every submodule; read it once, refresh it in to()
        self._dtype = pipeline.unet.dtype
        self._warned_long_prompts: set[str] = set()
        for module in self.frozen_modules():
            module.requires_grad_(False)
        self.unet.requires_grad_(False)

    # ----- family-specific -------------------------------------------------------------
    @abstractmethod
    def encode_prompts(self, prompts: list[str]) -> Embeds:
        """Per-sample UNet conditioning tensors for ``prompts``, each shaped (B, …)."""

    @abstractmethod
    def frozen_modules(self) -> list[torch.nn.Module]:
        """Modules never trained by RL (text encoders, VAE)."""

    # ----- shared ----------------------------------------------------------------------
    @property
    def unet(self) -> torch.nn.Module:
        return self.pipeline.unet

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

    def prompt_overflow(self, prompt: str) -> PromptOverflow | None:
        """How ``prompt`` overflows the text encoder's context (diffusers truncates it), or None when it fits."""
        tokenizer = getattr(self.pipeline, "tokenizer", None)
        if tokenizer is None:
            return None
        context = int(tokenizer.model_max_length)
        ids = tokenizer(prompt, add_special_tokens=False, truncation=False, verbose=False).input_ids
        kept = context - 2  # the start and end tokens take two places
        if len(ids) <= kept:
            return None
        return PromptOverflow(tokens=len(ids) + 2, context=context, dropped=tokenizer.decode(ids[kept:]).strip())

    def warn_long_prompts(self, prompts: Sequence[str]) -> int:
        """Warn once per distinct prompt the text encoder cannot read whole (token count, words dropped).

        Called on every prompt the policy encodes (:meth:`build_conditioning`), so generation and
        training share it; a prompt already warned about in this policy's lifetime stays silent.
        Returns how many new warnings were logged.
        """
        warned = 0
        for prompt in dict.fromkeys(prompts):
            if prompt in self._warned_long_prompts:
                continue
            overflow = self.prompt_overflow(prompt)
            if overflow is not None:
                self._warned_long_prompts.add(prompt)
                logger.warning("%s", overflow.describe(prompt))
                warned += 1
        return warned

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> DiffusionPolicy:
        self.pipeline.to(device, dtype)
        self._dtype = self.unet.dtype
        return self

    def build_conditioning(
        self,
        conditions: Sequence[Sequence[str]],
        guidance: Guidance,
        negative_prompt: str | Sequence[str] = "",
    ) -> Conditioning:
        """Encode the prompts of each condition c_j (and ∅) for ``guidance``'s weights.

        ``conditions[j]`` is the list of B prompts for weight ``guidance.weights[j]``. Only
        conditions with a non-zero weight are encoded and evaluated.
        """
        if len(conditions) != len(guidance.weights):
            raise ValueError(
                f"guidance has {len(guidance.weights)} weight(s) {guidance.weights} but {len(conditions)} prompt list(s) were given"
            )
        batch = len(conditions[0])
        for j, prompts in enumerate(conditions):
            if len(prompts) != batch:
                raise ValueError(f"prompt list {j} has {len(prompts)} prompts but the batch has {batch}")
        has_unconditional = guidance.needs_unconditional
        negatives: list[str] = []
        if has_unconditional:
            negatives = [negative_prompt] * batch if isinstance(negative_prompt, str) else list(negative_prompt)
            if len(negatives) != batch:
                raise ValueError(f"negative_prompt has {len(negatives)} entries but the batch has {batch}")
        self.warn_long_prompts([p for j in guidance.active for p in conditions[j]] + negatives)
        groups = [self.encode_prompts(list(conditions[j])) for j in guidance.active]
        if has_unconditional:
            groups.insert(0, self.encode_prompts(negatives))
        embeds = {key: torch.stack([g[key] for g in groups]) for key in groups[0]}
        weights = tuple(guidance.weights[j] for j in guidance.active)
        return Conditioning(embeds=embeds, weights=weights, has_unconditional=has_unconditional)

    def predict_noise(
        self, latents: torch.Tensor, timesteps: torch.Tensor, conditioning: Conditioning, index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Guided network output ε̄(x_t, t) for N latents, in one UNet call over all groups.

        ``timesteps`` is a 0-d tensor or (N,); ``index`` (N,) picks which samples of the
        conditioning batch the latents belong to (default: all, in order).
        """
        groups = conditioning.num_groups
        model_input = torch.cat([latents] * groups) if groups > 1 else latents
        dtype = self.dtype
        model_input = self.scheduler.scale_model_input(model_input, timesteps).to(dtype)
        t = timesteps.repeat(groups) if timesteps.ndim == 1 else timesteps
        kwargs = {k: v.to(dtype) if v.is_floating_point() else v for k, v in conditioning.flat(index).items()}
        output = self.unet_forward(model_input, t, kwargs)
        chunks = list(output.chunk(groups)) if groups > 1 else [output]
        eps_uncond = chunks.pop(0) if conditioning.has_unconditional else None
        return combine_noise_predictions(eps_uncond, chunks, conditioning.weights)

    def unet_forward(self, model_input: torch.Tensor, t: torch.Tensor, kwargs: Embeds) -> torch.Tensor:
        """The raw UNet call; SDXL overrides this to pass ``added_cond_kwargs``."""
        return self.unet(model_input, t, **kwargs, return_dict=False)[0]

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """VAE-decode x_0 to float32 images in [0, 1], (B, 3, H, W)."""
        vae = self.pipeline.vae
        images = vae.decode((latents / vae.config.scaling_factor).to(vae.dtype), return_dict=False)[0]
        return (images.float() / 2 + 0.5).clamp(0, 1)

    @torch.no_grad()
    def sample(
        self,
        prompts: str | Sequence[str],
        *,
        original_prompts: Sequence[str] | None = None,
        guidance: Guidance | None = None,
        negative_prompt: str | Sequence[str] = "",
        num_inference_steps: int = 50,
        eta: float = 1.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        height: int | None = None,
        width: int | None = None,
        latents: torch.Tensor | None = None,
        compute_log_probs: bool = True,
        progress: bool = False,
    ) -> Trajectory:
        """Sample images with stochastic DDIM, recording the trajectory and its log-probs.

        Args:
            prompts: the prompts the images are generated from (ĉ in Parrot, c otherwise).
            original_prompts: the original prompts c, one per prompt; prompt-centred guidance
                (``Guidance.prompt_centred(w1, w2)``) needs them, CFG does not use them.
            guidance: weights of the conditions; default ``Guidance.cfg(7.5)`` as in SD.
            negative_prompt: the ∅ branch's prompt(s).
            num_inference_steps: T, the number of DDIM steps.
            eta: η; must be > 0 when ``compute_log_probs`` (η = 1 is DDPM-like).
            generator: as in diffusers; one generator for the batch or one per sample.
            latents: optional x_T; drawn from ``generator`` like the stock pipeline otherwise.
            compute_log_probs: with False and η = 0, plain deterministic DDIM (log_probs are NaN).
        """
        prompts = _check_prompts("prompts", prompts)
        guidance = guidance if guidance is not None else Guidance.cfg(7.5)
        if not isinstance(eta, (int, float)) or not eta >= 0:
            raise ValueError(f"eta={eta!r} must be a number >= 0")
        if compute_log_probs and eta == 0:
            raise ValueError("eta=0 makes DDIM deterministic, so it has no log-probs: use eta > 0 for training")
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps={num_inference_steps} must be >= 1")
        if original_prompts is not None:
            original_prompts = _check_prompts("original_prompts", original_prompts)
        conditions = guidance.conditions(prompts, original_prompts)  # [c, ĉ] or [prompts]: decided by the guidance

        batch = len(prompts)
        conditioning = self.build_conditioning(conditions, guidance, negative_prompt)
        device = self.device
        x = self.initial_latents(batch, height, width, generator, latents)

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        all_latents = [x]
        log_probs = []
        for t in tqdm(timesteps, desc="sampling", disable=not progress, leave=False):
            eps = self.predict_noise(x, t, conditioning)
            if compute_log_probs:
                step = ddim_step_with_log_prob(self.scheduler, eps, t, x, eta=eta, generator=generator)
                x = step.prev_sample
                log_probs.append(step.log_prob)
            else:
                x = self.scheduler.step(eps, t, x, eta=eta, generator=generator, return_dict=False)[0]
                log_probs.append(torch.full((batch,), float("nan"), device=device))
            all_latents.append(x)

        return Trajectory(
            latents=torch.stack(all_latents, dim=1),
            timesteps=timesteps.clone(),
            log_probs=torch.stack(log_probs, dim=1),
            images=self.decode(x),
            conditioning=conditioning,
            prompts=prompts,
            original_prompts=list(conditions[0]) if guidance.is_prompt_centred else None,
            eta=float(eta),
            num_inference_steps=num_inference_steps,
        )

    def initial_latents(
        self,
        batch: int,
        height: int | None,
        width: int | None,
        generator: torch.Generator | list[torch.Generator] | None,
        latents: torch.Tensor | None,
    ) -> torch.Tensor:
        """x_T in float32, drawn with the pipeline's own ``prepare_latents`` (same RNG use as stock)."""
        if isinstance(generator, list) and len(generator) != batch:
            raise ValueError(f"{len(generator)} generators given for a batch of {batch} prompts")
        pipe = self.pipeline
        default = self.unet.config.sample_size * pipe.vae_scale_factor
        height, width = height or default, width or default
        return pipe.prepare_latents(batch, self.unet.config.in_channels, height, width, torch.float32, self.device, generator, latents)

    def log_probs(self, trajectory: Trajectory, step_indices: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """log p_θ(x_{t-1} | x_t, c) of recorded steps under the *current* weights.

        ``step_indices`` is either a list of S step indices shared by every sample, or a
        (B, S) tensor of per-sample indices (DDPO's random ``timestep_fraction`` subset).
        All B·S steps go through the UNet in one batch; gradients flow when enabled.
        Returns (B, S), float32.
        """
        step = self.recorded_steps(trajectory, step_indices)
        return step.log_prob.view(trajectory.batch_size, -1)

    def recorded_steps(self, trajectory: Trajectory, step_indices: torch.Tensor | Sequence[int]) -> DDIMStep:
        """The step distributions N(μ_θ, σ_t²) of recorded steps under the current weights.

        Same ``step_indices`` as :meth:`log_probs`; the returned :class:`DDIMStep` is flat over
        the B·S steps (sample-major), e.g. for DPOK's closed-form KL between two policies'
        means. ``prev_sample`` is the recorded x_{t-1}.
        """
        batch = trajectory.batch_size
        steps = len(trajectory.timesteps)
        index = torch.as_tensor(step_indices, dtype=torch.long, device=trajectory.latents.device)
        if index.ndim == 1:
            index = index.unsqueeze(0).expand(batch, -1)
        if index.ndim != 2 or index.shape[0] != batch:
            raise ValueError(f"step_indices must be (S,) or ({batch}, S); got shape {tuple(index.shape)}")
        if index.numel() and (index.min() < 0 or index.max() >= steps):
            raise ValueError(f"step indices must lie in [0, {steps}); got {index.min().item()}..{index.max().item()}")
        if self.scheduler.num_inference_steps != trajectory.num_inference_steps:
            self.scheduler.set_timesteps(trajectory.num_inference_steps, device=self.device)
        samples = torch.arange(batch, device=index.device).unsqueeze(1).expand_as(index).reshape(-1)
        flat = index.reshape(-1)
        x_t = trajectory.latents[samples, flat]
        x_prev = trajectory.latents[samples, flat + 1]
        t = trajectory.timesteps.to(index.device)[flat]
        eps = self.predict_noise(x_t, t, trajectory.conditioning, index=samples)
        return ddim_step_with_log_prob(self.scheduler, eps, t, x_t, eta=trajectory.eta, prev_sample=x_prev)

    # ----- LoRA ------------------------------------------------------------------------
    def add_lora(self, settings: LoraSettings | None = None) -> list[torch.nn.Parameter]:
        """Add trainable LoRA adapters to the UNet's attention projections; returns their parameters."""
        return add_lora(self.unet, settings or LoraSettings())

    def save_lora(self, directory: str | os.PathLike, adapter_name: str = "default") -> Path:
        """Save the UNet LoRA in diffusers' format (``pytorch_lora_weights.safetensors``)."""
        return save_lora(type(self.pipeline), self.unet, directory, adapter_name)

    def load_lora(self, directory: str | os.PathLike, adapter_name: str = "default", trainable: bool = True) -> None:
        """Load a diffusers-format LoRA (ours or any SD LoRA) as adapter ``adapter_name``."""
        load_lora(self.pipeline, directory, adapter_name, trainable)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.unet.parameters() if p.requires_grad]

    @contextlib.contextmanager
    def adapters_disabled(self) -> Iterator[None]:
        """The base model θ_0 (adapters off), e.g. for DPOK's KL term; no second UNet copy."""
        if not getattr(self.unet, "_hf_peft_config_loaded", False):
            yield
            return
        self.unet.disable_adapters()
        try:
            yield
        finally:
            self.unet.enable_adapters()


class StableDiffusionPolicy(DiffusionPolicy):
    """Stable Diffusion 1.x / 2.x (``StableDiffusionPipeline``) as a policy."""

    pipeline_class = StableDiffusionPipeline

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        torch_dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        **kwargs,
    ) -> StableDiffusionPolicy:
        """Load from a hub id (e.g. ``runwayml/stable-diffusion-v1-5``) or a local pipeline directory.

        The safety checker is not loaded (RL never runs it; pass ``safety_checker=`` to override).
        """
        source = resolve_model_source(name_or_path, "model_index.json", kind="diffusers pipeline")
        kwargs.setdefault("safety_checker", None)
        kwargs.setdefault("requires_safety_checker", False)
        try:
            pipeline = cls.pipeline_class.from_pretrained(source, torch_dtype=torch_dtype, **kwargs)
        except (OSError, ValueError) as err:
            raise OSError(
                f"could not load a {cls.pipeline_class.__name__} from {source!r}: it is not a local directory, "
                f"and loading it as a hub id failed ({type(err).__name__}: {err})"
            ) from err
        return cls(pipeline).to(device)

    def frozen_modules(self) -> list[torch.nn.Module]:
        return [self.pipeline.vae, self.pipeline.text_encoder]

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Embeds:
        embeds, _ = self.pipeline.encode_prompt(prompts, self.device, 1, False)
        return {"encoder_hidden_states": embeds}
