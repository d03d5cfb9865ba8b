"""The caption tokenizer and the multi-positive contrastive loss of the tiny CLIP."""

import math

import pytest
import torch
from transformers import CLIPTokenizer

from shapes.clip import caption_matches, multi_positive_clip_loss, train_tokenizer
from shapes.data import Attributes, generate_examples, parse_caption


@pytest.fixture(scope="module")
def tokenizer():
    examples = generate_examples(200, 0, "all")
    return train_tokenizer([e.short_caption for e in examples] + [e.detailed_caption for e in examples])


def test_every_caption_word_is_one_token_and_reload_is_identical(tokenizer, tmp_path):
    caption = "a large red circle at the left on a black background, sharp, high contrast"
    ids = tokenizer(caption).input_ids
    assert len(ids) == 2 + len(caption.replace(",", " ,").split())  # bos + words + eos
    tokenizer.save_pretrained(tmp_path)
    reloaded = CLIPTokenizer.from_pretrained(tmp_path)
    assert reloaded(caption).input_ids == ids
    assert reloaded.model_max_length == 32


def test_unseen_text_never_maps_to_the_unknown_token(tokenizer):
    ids = tokenizer("a purple hexagon! ÿ").input_ids
    assert ids[-1] == tokenizer.eos_token_id and tokenizer.eos_token_id not in ids[1:-1]


def test_caption_matches_uses_stated_attributes_only():
    images = [Attributes("red", "circle", "large", "left", "white"), Attributes("red", "square", "small", "top", "black")]
    prompts = [parse_caption(p) for p in ("a red circle", "a red square", "a small red square at the top")]
    assert caption_matches(prompts, images).tolist() == [[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]


def test_multi_positive_loss_against_hand_computation():
    logits = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    matches = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    log_softmax = lambda row, i: row[i] - math.log(sum(math.exp(v) for v in row))  # noqa: E731
    image_loss = (-log_softmax([2.0, 0.0], 0) - 0.5 * (log_softmax([1.0, 1.0], 0) + log_softmax([1.0, 1.0], 1))) / 2
    text_loss = (-0.5 * (log_softmax([2.0, 1.0], 0) + log_softmax([2.0, 1.0], 1)) - log_softmax([0.0, 1.0], 1)) / 2
    expected = 0.5 * (image_loss + text_loss)
    assert multi_positive_clip_loss(logits, matches).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="at least one positive"):
        multi_positive_clip_loss(logits, torch.tensor([[1.0, 0.0], [1.0, 0.0]]))


def test_tokenizer_ids_are_the_same_every_run():
    captions = [e.detailed_caption for e in generate_examples(100, 1)]
    assert train_tokenizer(captions).get_vocab() == train_tokenizer(captions).get_vocab()
