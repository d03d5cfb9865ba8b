"""Text ↔ tokens for the expander: templated prompts checked against the context, given
expansions tokenized as sampled ones would be, token rows decoded.

Over-long prompts: the templated prompt plus ``max_new_tokens`` must fit the model's
context. By default a longer prompt is refused with an error naming it; with
``ExpanderSamplingConfig.truncate_prompts`` the *original prompt's* tokens are cut from the
right (the instruction around it is kept) until it fits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PretrainedConfig, PreTrainedTokenizerBase

from prompt_expander.config import ExpanderSamplingConfig
from prompt_expander.expansions import Expansions, pad_left, pad_right
from prompt_expander.template import check_prompts, completion_prefix, render_input

__all__ = ["context_length", "decode", "encode_expansions", "encode_prompts"]


def context_length(model_config: PretrainedConfig) -> int:
    """The model's context in tokens (``n_positions`` or ``max_position_embeddings``)."""
    length = getattr(model_config, "n_positions", None) or getattr(model_config, "max_position_embeddings", None)
    if length is None:
        raise ValueError("the model config names no context length (n_positions / max_position_embeddings)")
    return int(length)


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, config: ExpanderSamplingConfig, context: int, prompts: str | Sequence[str]
) -> list[list[int]]:
    """Token ids of the templated prompts, each checked against the ``context`` length."""
    prompts = check_prompts(prompts)
    budget = context - config.max_new_tokens
    rows = []
    for i, prompt in enumerate(prompts):
        ids = _encode_rendered(tokenizer, config.template, prompt)
        if len(ids) > budget:
            if not config.truncate_prompts:
                raise ValueError(
                    f"prompts[{i}] ({prompt[:60]!r}...) is {len(ids)} tokens with the template, but the model's "
                    f"context of {context} leaves {budget} after max_new_tokens="
                    f"{config.max_new_tokens}: shorten it, lower max_new_tokens, or set truncate_prompts=True"
                )
            ids = _truncated_prompt_ids(tokenizer, config, context, prompt, len(ids) - budget)
        rows.append(ids)
    return rows


def _encode_rendered(tokenizer: PreTrainedTokenizerBase, template: str, prompt: str) -> list[int]:
    # The tokenizer's own special tokens (e.g. a BOS) are added, exactly as TRL's SFTTrainer
    # tokenizes the prompt column, so sampling sees the context SFT trained on.
    return tokenizer(render_input(template, prompt))["input_ids"]


def _truncated_prompt_ids(
    tokenizer: PreTrainedTokenizerBase, config: ExpanderSamplingConfig, context: int, prompt: str, excess: int
) -> list[int]:
    """Drop ``excess`` tokens (plus any needed) from the end of the original prompt only."""
    prompt_ids = tokenizer(prompt.strip(), add_special_tokens=False)["input_ids"]
    keep = len(prompt_ids) - excess
    budget = context - config.max_new_tokens
    while keep > 0:
        short = tokenizer.decode(prompt_ids[:keep])
        ids = _encode_rendered(tokenizer, config.template, short)
        if len(ids) <= budget and short.strip().rstrip("."):
            return ids
        keep -= 1
    raise ValueError(
        f"the template alone does not fit the context of {context} with max_new_tokens="
        f"{config.max_new_tokens}: lower max_new_tokens or use a shorter template"
    )


def encode_expansions(
    tokenizer: PreTrainedTokenizerBase, config: ExpanderSamplingConfig, context: int, prompts: Sequence[str], texts: Sequence[str]
) -> Expansions:
    """Expansions for given (prompt, expansion text) pairs, without log-probs.

    Each text is tokenized after the template's boundary space, cut to ``max_new_tokens − 1``
    tokens and ended with EOS, as a sampled expansion that stopped would be.
    """
    prompts = check_prompts(prompts)
    if len(texts) != len(prompts):
        raise ValueError(f"got {len(prompts)} prompts but {len(texts)} expansions; give one expansion per prompt")
    prompt_ids, prompt_mask = pad_left(encode_prompts(tokenizer, config, context, prompts), tokenizer.pad_token_id)
    prefix = completion_prefix(config.template)
    rows = []
    for text in texts:
        ids = tokenizer(prefix + text.strip(), add_special_tokens=False)["input_ids"]
        rows.append(ids[: config.max_new_tokens - 1] + [tokenizer.eos_token_id])
    token_ids, attention_mask = pad_right(rows, tokenizer.pad_token_id)
    return Expansions(list(prompts), [t.strip() for t in texts], prompt_ids, prompt_mask, token_ids, attention_mask)


def decode(tokenizer: PreTrainedTokenizerBase, token_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[str]:
    """The text of each row's masked tokens, special tokens dropped."""
    return [tokenizer.decode(ids[mask.bool()], skip_special_tokens=True).strip() for ids, mask in zip(token_ids, attention_mask)]
