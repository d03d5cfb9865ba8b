"""Checks on the prompts a policy is given: non-empty strings, one list per guidance weight, and
whether the text encoder reads a prompt whole (:class:`PromptOverflow`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from t2i.guidance import Guidance

__all__ = ["PromptOverflow", "check_conditions", "check_prompts", "first_overflow", "token_overflow"]


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


def token_overflow(tokenizer: PreTrainedTokenizerBase, prompt: str) -> PromptOverflow | None:
    """How ``prompt`` overflows ``tokenizer``'s context (diffusers truncates it), or None when it fits."""
    context = int(tokenizer.model_max_length)
    ids = tokenizer(prompt, add_special_tokens=False, truncation=False, verbose=False).input_ids
    kept = context - 2  # the start and end tokens take two places
    if len(ids) <= kept:
        return None
    return PromptOverflow(tokens=len(ids) + 2, context=context, dropped=tokenizer.decode(ids[kept:]).strip())


def check_prompts(name: str, prompts: str | Sequence[str]) -> list[str]:
    """``prompts`` as a list of non-empty strings (one string is a batch of one); refused by ``name`` and index."""
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


def check_conditions(conditions: Sequence[Sequence[str]], guidance: Guidance, negative_prompt: str | Sequence[str]) -> list[str]:
    """Check one list of B prompts per guidance weight; returns the B negative prompts of the ∅
    branch (none when ``guidance`` has no unconditional branch)."""
    if len(conditions) != len(guidance.weights):
        raise ValueError(
            f"guidance has {len(guidance.weights)} weight(s) {guidance.weights} but {len(conditions)} prompt list(s) were given"
        )
    batch = len(conditions[0])
    for j, prompts in enumerate(conditions):
        if len(prompts) != batch:
            raise ValueError(f"prompt list {j} has {len(prompts)} prompts but the batch has {batch}")
    if not guidance.needs_unconditional:
        return []
    negatives = [negative_prompt] * batch if isinstance(negative_prompt, str) else list(negative_prompt)
    if len(negatives) != batch:
        raise ValueError(f"negative_prompt has {len(negatives)} entries but the batch has {batch}")
    return negatives


def first_overflow(tokenizers, prompt: str) -> PromptOverflow | None:
    """The first overflow of ``prompt`` over several text towers' tokenizers (None ones skipped), or None."""
    for tokenizer in tokenizers:
        overflow = None if tokenizer is None else token_overflow(tokenizer, prompt)
        if overflow is not None:
            return overflow
    return None
