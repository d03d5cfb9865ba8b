"""Prompt weighting in the compel syntax: ``(oil on canvas)+++``, ``(blurry)--``, ``(word)1.3``, for SD and SDXL.

The `compel` library (Damian Stewart) parses the syntax and builds the weighted CLIP
conditioning; it works with the project's diffusers 0.42 / transformers 5 without torchvision,
so it is used as is rather than re-implemented. Each ``+`` multiplies a fragment's weight by
1.1 and each ``-`` by 0.9; compel scales up-weighted token embeddings away from the empty
prompt's, and realises down-weighting by blending with the prompt with those tokens masked out.
A prompt without any weighting syntax encodes exactly as the stock pipeline encodes it (it skips
compel's parser, which takes seconds on a prompt of thousands of characters); a prompt
compel cannot parse (unbalanced brackets or control characters, e.g. from an expander) is encoded
as plain text, with a warning.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import torch
from compel import Compel, ReturnedEmbeddingsType
from diffusers import DiffusionPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline
from pyparsing import ParseException

from t2i.policy import DiffusionPolicy, StableDiffusionPolicy
from t2i.prompts import PromptOverflow
from t2i.sdxl import StableDiffusionXLPolicy
from t2i.trajectory import Embeds

__all__ = [
    "WeightedPromptPolicy",
    "TwoTowerCompel",
    "WeightedPromptXLPolicy",
    "has_weighting",
    "supports_prompt_weighting",
    "reads_weighting",
    "plain_prompt",
    "weighted_prompt_encoder",
    "with_prompt_weighting",
]

logger = logging.getLogger(__name__)

# every compel construct — (text)+, word--, (text)1.3, [text], .and(), .blend() — uses one of these
_SYNTAX = re.compile(r"[()\[\]+\-]")


def has_weighting(prompt: str) -> bool:
    """Whether ``prompt`` may hold weighting syntax (False: it is plain text for certain)."""
    return _SYNTAX.search(prompt) is not None


def weighted_prompt_encoder(pipeline: StableDiffusionPipeline) -> Compel:
    """A compel encoder on the pipeline's tokenizer and text encoder (prompts cut at the tokenizer's length)."""
    return Compel(tokenizer=pipeline.tokenizer, text_encoder=pipeline.text_encoder, truncate_long_prompts=True)


def plain_prompt(prompt: str) -> str:
    """The prompt's text without weighting syntax ("(oil on canvas)+++, x" → "oil on canvas, x"), for rewards."""
    if not has_weighting(prompt):
        return prompt
    try:
        parts = Compel.parse_prompt_string(prompt).prompts
    except ParseException:
        return prompt
    fragments = [f.text for part in parts for f in getattr(part, "children", [])]
    if not fragments:
        return prompt
    return re.sub(r"\s+([,.;:!?])", r"\1", " ".join(fragments))


class WeightedPromptMixin:
    """Prompt weighting for a policy family; the family's class supplies ``weighted_prompt_encoder`` and ``weighted_embeds``."""

    def __init__(self, pipeline: DiffusionPipeline, *args, **kwargs):
        super().__init__(pipeline, *args, **kwargs)
        self.compel = self.weighted_prompt_encoder()

    def weighted_prompt_encoder(self) -> Callable[[list[str]], object]:
        """The family's compel encoder (prompts → what :meth:`weighted_embeds` reads)."""
        raise NotImplementedError

    def weighted_embeds(self, prompts: list[str], output) -> Embeds:
        """The family's UNet keyword tensors from compel's output for ``prompts``."""
        raise NotImplementedError

    def prompt_overflow(self, prompt: str) -> PromptOverflow | None:
        """The overflow of the prompt's text without weighting syntax (what the text encoder reads)."""
        return super().prompt_overflow(plain_prompt(prompt))

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Embeds:
        if not any(has_weighting(p) for p in prompts):
            return super().encode_prompts(prompts)
        try:
            return self.weighted_embeds(list(prompts), self.compel(list(prompts)))
        except ParseException:
            parts = [self._encode_one(p) for p in prompts]
            return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}

    def _encode_one(self, prompt: str) -> Embeds:
        try:
            return self.weighted_embeds([prompt], self.compel([prompt]))
        except ParseException as err:
            logger.warning("compel cannot parse %r (%s); encoding it without weighting", prompt, err)
            return super().encode_prompts([prompt])


class WeightedPromptPolicy(WeightedPromptMixin, StableDiffusionPolicy):
    """A Stable Diffusion policy whose prompts (and negative prompts) may use compel's weighting syntax."""

    def weighted_prompt_encoder(self) -> Compel:
        return weighted_prompt_encoder(self.pipeline)

    def weighted_embeds(self, prompts: list[str], output: torch.Tensor) -> Embeds:
        return {"encoder_hidden_states": output.to(self.device)}


class TwoTowerCompel:
    """compel on SDXL's two text towers: the weighted penultimate states of each, concatenated, (B, 77, d1 + d2).

    Each tower is cut at its 77 tokens like diffusers' ``encode_prompt`` (compel's ``CompelForSDXL``
    instead chunks long prompts into longer sequences). :meth:`pooled` is the second tower's pooled
    projection of the given texts.
    """

    def __init__(self, pipeline: StableDiffusionXLPipeline):
        penultimate = ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED
        self.towers = [
            Compel(tokenizer=tokenizer, text_encoder=encoder, returned_embeddings_type=penultimate, truncate_long_prompts=True)
            for tokenizer, encoder in ((pipeline.tokenizer, pipeline.text_encoder), (pipeline.tokenizer_2, pipeline.text_encoder_2))
        ]

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        return torch.cat([tower(prompts) for tower in self.towers], dim=-1)

    def pooled(self, texts: list[str], device: torch.device) -> torch.Tensor:
        return self.towers[1].conditioning_provider.get_pooled_embeddings(texts, device=device)


class WeightedPromptXLPolicy(WeightedPromptMixin, StableDiffusionXLPolicy):
    """An SDXL policy whose prompts may use compel's weighting syntax, on both text encoders.

    The weights act on the concatenated penultimate hidden states of both encoders; the pooled
    embedding (which compel would take of the raw text, syntax included) is that of the prompt's
    text without the syntax, as the text encoders read it.
    """

    def weighted_prompt_encoder(self) -> TwoTowerCompel:
        return TwoTowerCompel(self.pipeline)

    def weighted_embeds(self, prompts: list[str], output: torch.Tensor) -> Embeds:
        pooled = self.compel.pooled([plain_prompt(p) for p in prompts], self.device)
        embeds = {"encoder_hidden_states": output.to(self.device), "text_embeds": pooled}
        return self.zero_empty_prompts(prompts, embeds)


#: a family's policy class → its prompt-weighting subclass
WEIGHTED_FAMILIES: dict[type[DiffusionPolicy], type[DiffusionPolicy]] = {
    StableDiffusionPolicy: WeightedPromptPolicy,
    StableDiffusionXLPolicy: WeightedPromptXLPolicy,
}


def supports_prompt_weighting(policy: DiffusionPolicy) -> bool:
    """Whether :func:`with_prompt_weighting` has a weighted form of ``policy``'s family (SD 1.x/2.x, SDXL)."""
    return type(policy) in WEIGHTED_FAMILIES


def reads_weighting(policy: DiffusionPolicy) -> bool:
    """Whether ``policy`` is a weighted policy (:func:`with_prompt_weighting`'s result): it reads compel's syntax."""
    return type(policy) in WEIGHTED_FAMILIES.values()


def with_prompt_weighting(policy: DiffusionPolicy) -> DiffusionPolicy:
    """The same pipeline (and SDXL's size conditioning) as a policy of its family that reads compel's weighting syntax."""
    if type(policy) not in WEIGHTED_FAMILIES:
        raise ValueError(f"prompt weighting is not available for {type(policy).__name__}")
    extra = {"size_conditioning": policy.size_conditioning} if isinstance(policy, StableDiffusionXLPolicy) else {}
    return WEIGHTED_FAMILIES[type(policy)](policy.pipeline, **extra)
