"""Generating expansions from a causal LM: sampling with per-token log-probs, and beam search.

``sample_batch``'s log-probs are log p_φ(ĉ_t | template(c), ĉ_<t) under the *sampling*
distribution: the model's raw logits divided by the temperature, without top-p/top-k
truncation (truncation is a sampling device, not part of the policy whose gradient we take).
Beam search is deterministic and carries no log-probs (beam scores are not the policy's
sampling distribution).
"""

from __future__ import annotations

import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from prompt_expander.config import ExpanderSamplingConfig
from prompt_expander.encoding import context_length, decode, encode_prompts
from prompt_expander.expansions import Expansions, first_eos_mask, pad_left

__all__ = ["beam_batch", "beam_generation_config", "sample_batch", "sampling_generation_config"]


def sampling_generation_config(tokenizer: PreTrainedTokenizerBase, config: ExpanderSamplingConfig) -> GenerationConfig:
    """The ``generate`` settings of :func:`sample_batch`: temperature and top-p, no top-k, raw logits returned."""
    return GenerationConfig(
        do_sample=True,
        temperature=config.temperature,
        top_p=config.top_p,
        top_k=0,
        max_new_tokens=config.max_new_tokens,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        return_dict_in_generate=True,
        output_logits=True,
    )


def beam_generation_config(tokenizer: PreTrainedTokenizerBase, max_new_tokens: int, num_beams: int) -> GenerationConfig:
    """The ``generate`` settings of :func:`beam_batch` (one returned sequence per prompt)."""
    return GenerationConfig(
        do_sample=False,
        num_beams=num_beams,
        num_return_sequences=1,
        max_new_tokens=max_new_tokens,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )


def _prompt_batch(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, config: ExpanderSamplingConfig, prompts: list[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded templated prompts on the model's device."""
    rows = encode_prompts(tokenizer, config, context_length(model.config), prompts)
    prompt_ids, prompt_mask = pad_left(rows, tokenizer.pad_token_id)
    device = next(model.parameters()).device
    return prompt_ids.to(device), prompt_mask.to(device)


def sample_batch(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, config: ExpanderSamplingConfig, prompts: list[str]
) -> Expansions:
    """One sampled expansion per prompt, with its per-token log-probs (0 on padding)."""
    prompt_ids, prompt_mask = _prompt_batch(model, tokenizer, config, prompts)
    generation = sampling_generation_config(tokenizer, config)
    out = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, generation_config=generation)
    token_ids = out.sequences[:, prompt_ids.shape[1] :]
    logits = torch.stack(out.logits, dim=1).float() / config.temperature  # raw, unprocessed scores
    log_probs = torch.log_softmax(logits, -1).gather(-1, token_ids[..., None]).squeeze(-1)
    mask = first_eos_mask(token_ids, tokenizer.eos_token_id)
    token_ids = token_ids.masked_fill(mask == 0, tokenizer.pad_token_id)
    return Expansions(
        prompts=list(prompts),
        texts=decode(tokenizer, token_ids, mask),
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        token_ids=token_ids,
        attention_mask=mask,
        log_probs=log_probs * mask,
    )


def beam_batch(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, config: ExpanderSamplingConfig, prompts: list[str], num_beams: int
) -> Expansions:
    """The best of ``num_beams`` beams for each prompt (``num_beams`` 1 is greedy), without log-probs."""
    prompt_ids, prompt_mask = _prompt_batch(model, tokenizer, config, prompts)
    generation = beam_generation_config(tokenizer, config.max_new_tokens, num_beams)
    sequences = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, generation_config=generation)
    token_ids = sequences[:, prompt_ids.shape[1] :]
    mask = first_eos_mask(token_ids, tokenizer.eos_token_id)
    token_ids = token_ids.masked_fill(mask == 0, tokenizer.pad_token_id)
    return Expansions(list(prompts), decode(tokenizer, token_ids, mask), prompt_ids, prompt_mask, token_ids, mask)
