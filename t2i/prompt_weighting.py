"""Prompt weighting in the compel syntax: ``(oil on canvas)+++``, ``(blurry)--``, ``(word)1.3``.

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

import torch
from compel import Compel
from diffusers import StableDiffusionPipeline
from pyparsing import ParseException

from t2i.policy import StableDiffusionPolicy
from t2i.prompts import PromptOverflow

__all__ = ["WeightedPromptPolicy", "weighted_prompt_encoder", "plain_prompt", "has_weighting"]

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


class WeightedPromptPolicy(StableDiffusionPolicy):
    """A Stable Diffusion policy whose prompts (and negative prompts) may use compel's weighting syntax."""

    def __init__(self, pipeline: StableDiffusionPipeline):
        super().__init__(pipeline)
        self.compel = weighted_prompt_encoder(pipeline)

    def prompt_overflow(self, prompt: str) -> PromptOverflow | None:
        """The overflow of the prompt's text without weighting syntax (what the text encoder reads)."""
        return super().prompt_overflow(plain_prompt(prompt))

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> dict:
        if not any(has_weighting(p) for p in prompts):
            return super().encode_prompts(prompts)
        try:
            embeds = self.compel(list(prompts))
        except ParseException:
            embeds = torch.cat([self._encode_one(p) for p in prompts])
        return {"encoder_hidden_states": embeds.to(self.device)}

    def _encode_one(self, prompt: str) -> torch.Tensor:
        try:
            return self.compel([prompt])
        except ParseException as err:
            logger.warning("compel cannot parse %r (%s); encoding it without weighting", prompt, err)
            return super().encode_prompts([prompt])["encoder_hidden_states"]
