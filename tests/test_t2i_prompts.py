"""Prompt checks alone: a tokenizer and a guidance, no pipeline."""

import pytest

from t2i import Guidance
from t2i.prompts import check_conditions, check_prompts, token_overflow
from t2i.tiny import byte_level_clip_tokenizer


def test_check_prompts_makes_a_list_and_names_the_bad_entry():
    assert check_prompts("prompts", "a red circle") == ["a red circle"]
    assert check_prompts("prompts", ("a", "b")) == ["a", "b"]
    with pytest.raises(TypeError, match=r"original_prompts\[1\] is int, expected str"):
        check_prompts("original_prompts", ["a", 3])
    with pytest.raises(ValueError, match="prompts is empty"):
        check_prompts("prompts", [])


def test_check_conditions_gives_the_negatives_only_when_guidance_has_an_unconditional_branch():
    assert check_conditions([["a", "b"]], Guidance.cfg(7.5), "blurry") == ["blurry", "blurry"]
    assert check_conditions([["a", "b"]], Guidance.cfg(1.0), "blurry") == []
    assert check_conditions([["c1", "c2"], ["e1", "e2"]], Guidance.prompt_centred(5, 5), ["n1", "n2"]) == ["n1", "n2"]
    with pytest.raises(ValueError, match=r"guidance has 2 weight\(s\) \(5.0, 5.0\) but 1 prompt list\(s\)"):
        check_conditions([["a"]], Guidance.prompt_centred(5, 5), "")
    with pytest.raises(ValueError, match="prompt list 1 has 1 prompts but the batch has 2"):
        check_conditions([["a", "b"], ["c"]], Guidance.prompt_centred(5, 5), "")


def test_token_overflow_counts_the_start_and_end_tokens_and_decodes_what_is_dropped():
    tokenizer = byte_level_clip_tokenizer(max_length=10)  # one token per byte: 8 of the prompt's fit
    assert token_overflow(tokenizer, "abcdefgh") is None
    overflow = token_overflow(tokenizer, "a red circle")
    assert (overflow.tokens, overflow.context, overflow.dropped) == (12, 10, "le")
    assert overflow.describe("a red circle") == "prompt 'a red circle' has 12 tokens but the text encoder reads 10; dropped: 'le'"
