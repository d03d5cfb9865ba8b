"""The expander's job modules on their own, without a PromptExpander: padding and joining,
encoding, sampling, scoring."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import PretrainedConfig

from prompt_expander.config import ExpanderSamplingConfig
from prompt_expander.decoding import beam_batch, sample_batch
from prompt_expander.encoding import context_length, decode, encode_expansions, encode_prompts
from prompt_expander.expansions import concat_expansions, pad_left, pad_right
from prompt_expander.scoring import expansion_logits, kl_divergence, token_log_probs
from prompt_expander.scratch import TinyGPT2Config, build_gpt2, train_bpe_tokenizer
from prompt_expander.template import PARROT_TEMPLATE

CORPUS = ["a cat on a mat, highly detailed, artstation", "a red fox in the snow, oil painting", PARROT_TEMPLATE] * 10


@pytest.fixture(scope="module")
def tokenizer():
    tokenizer = train_bpe_tokenizer(CORPUS, vocab_size=400, model_max_length=128)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    return build_gpt2(tokenizer, TinyGPT2Config(n_layer=1, n_embd=16, n_head=2, n_positions=128, vocab_size=400)).eval()


def test_padding_and_joining_chunks_of_different_widths():
    ids, mask = pad_left([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    ids, mask = pad_right([[5], [6, 7]], pad_id=0)
    assert ids.tolist() == [[5, 0], [6, 7]] and mask.tolist() == [[1, 0], [1, 1]]


def test_context_length_is_read_from_either_name_or_refused():
    assert context_length(PretrainedConfig(n_positions=96)) == 96
    assert context_length(PretrainedConfig(max_position_embeddings=128)) == 128
    with pytest.raises(ValueError, match="names no context length"):
        context_length(PretrainedConfig())


def test_given_expansions_decode_back_and_end_with_eos(tokenizer):
    config = ExpanderSamplingConfig(max_new_tokens=8)
    given = encode_expansions(tokenizer, config, 128, ["a cat", "a fox"], ["a cat on a mat", "a red fox"])
    assert decode(tokenizer, given.token_ids, given.attention_mask) == ["a cat on a mat", "a red fox"]
    for row, length in zip(given.token_ids, given.lengths.tolist()):
        assert row[length - 1].item() == tokenizer.eos_token_id
    with pytest.raises(ValueError, match="set truncate_prompts=True"):
        encode_prompts(tokenizer, ExpanderSamplingConfig(max_new_tokens=120), 128, ["a cat on a mat"])


def test_sampled_log_probs_equal_scoring_and_chunks_join(tokenizer, model):
    config = ExpanderSamplingConfig(max_new_tokens=6, temperature=0.7)
    torch.manual_seed(0)
    chunks = [sample_batch(model, tokenizer, config, ["a cat"]), sample_batch(model, tokenizer, config, ["a red fox in the snow", "a cat"])]
    joined = concat_expansions(chunks, tokenizer.pad_token_id)
    assert joined.prompts == ["a cat", "a red fox in the snow", "a cat"] and joined.log_probs.shape == joined.token_ids.shape
    with torch.no_grad():
        scored = token_log_probs(expansion_logits(model, joined, config.temperature), joined)
    torch.testing.assert_close(scored, joined.log_probs, atol=1e-5, rtol=0)
    beams = beam_batch(model, tokenizer, config, ["a cat", "a fox"], num_beams=2)
    assert beams.log_probs is None and beams.texts == beam_batch(model, tokenizer, config, ["a cat", "a fox"], num_beams=2).texts


def test_kl_divergence_on_a_two_token_vocabulary():
    logits = torch.log(torch.tensor([[[0.5, 0.5], [0.9, 0.1]]]))
    reference = torch.log(torch.tensor([[[0.5, 0.5], [0.5, 0.5]]]))
    second = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    kl = kl_divergence(logits, reference, torch.tensor([[1, 1]]))
    torch.testing.assert_close(kl, torch.tensor([second]))
    assert kl_divergence(logits, reference, torch.tensor([[1, 0]])).item() == pytest.approx(0.0, abs=1e-7)
