"""The caption tokenizer, the caption/image match matrix and the multi-positive loss of the tiny CLIP."""

import math

import pytest
import torch
from transformers import CLIPTokenizer

from shapes.clip import (
    ShapesClipConfig,
    build_clip,
    caption_matches,
    images_to_tensor,
    multi_positive_clip_loss,
    normalise_pixels,
    train_clip,
    train_tokenizer,
)
from shapes.data import Attributes, Companion, detailed_caption, generate_examples, parse_caption, with_prefix

LONGEST_PREFIX = "<laion_aesthetic> <clip_score> <preference> <sentiment>"


@pytest.fixture(scope="module")
def examples():
    return generate_examples(300, 0, "all")


@pytest.fixture(scope="module")
def tokenizer(examples):
    return train_tokenizer([e.caption for e in examples] + [e.detailed_caption for e in examples], 400, 77)


def pre_tokens(tokenizer, text):
    backend = tokenizer.backend_tokenizer
    return [t for t, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(text))]


def test_every_scene_and_modifier_word_is_one_token_and_reload_is_identical(tokenizer, tmp_path):
    caption = "a large red circle on a black background with a small blue square, sharp, well-formed, high contrast, cold light"
    ids = tokenizer(caption).input_ids
    assert len(ids) == 2 + len(pre_tokens(tokenizer, caption))  # bos + one id per word / punctuation mark + eos
    assert len(pre_tokens(tokenizer, caption)) == len(caption.replace(",", " ,").replace("-", " - ").split())
    tokenizer.save_pretrained(tmp_path)
    reloaded = CLIPTokenizer.from_pretrained(tmp_path)
    assert reloaded(caption).input_ids == ids
    assert reloaded.model_max_length == 77 == ShapesClipConfig().max_length


def test_prefixed_caption_round_trips_through_the_tokenizer(tokenizer):
    caption = with_prefix("a small green triangle on a gray background, vivid, masterpiece", "<preference> photo l")
    ids = tokenizer(caption).input_ids
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.eos_token_id not in ids[1:-1]  # CLIP's unknown token is its end token: never inside
    decoded = tokenizer.decode(ids, skip_special_tokens=True)
    assert "".join(decoded.split()) == "".join(caption.split())  # every character back, only spacing differs
    # the prefix costs tokens in front, the caption's own ids follow unchanged
    plain = tokenizer("a small green triangle on a gray background, vivid, masterpiece").input_ids
    assert ids[-len(plain) + 1 :] == plain[1:]


def test_the_longest_training_caption_fits_max_length(tokenizer):
    """4 identifiers, a companion and the most words one record can qualify for (one per factor + 3 global)."""
    record = Attributes(
        "yellow", "triangle", "large", "black", quality=0.9, regularity=0.1, tint=0.9,
        companion=Companion("green", "square", "top left"),
        words=("sharp", "cluttered", "vivid", "distorted", "masterpiece", "high contrast", "warm light"),
    )  # fmt: skip
    caption = with_prefix(detailed_caption(record), LONGEST_PREFIX)
    assert len(tokenizer(caption).input_ids) <= ShapesClipConfig().max_length


def test_unseen_text_never_maps_to_the_unknown_token(tokenizer):
    ids = tokenizer("a purple hexagon! ÿ").input_ids
    assert ids[-1] == tokenizer.eos_token_id and tokenizer.eos_token_id not in ids[1:-1]


def test_caption_matches_states_only_what_is_true_of_the_image():
    images = [
        Attributes("red", "circle", "large", "white", sharpness=0.9),
        Attributes("red", "square", "small", "black", sharpness=0.2, companion=Companion("blue", "circle", "top left")),
        Attributes("red", "circle", "small", "black", sharpness=0.5, tint=0.8),
    ]
    captions = [
        "a red circle",  # colour and shape only
        "a red circle, sharp",  # a word matches only images that qualify for it
        "photo <clip_score>, a red circle, warm light",  # the prefix is ignored
        "a red square with a small blue circle",  # the companion must match
        "a red square with a small green circle",
        "a red circle with a small blue circle",  # no companion in the image
        "a small red square on a black background, blurry",
        "a small red square on a black background, sharp",
    ]
    assert caption_matches([parse_caption(c) for c in captions], images).tolist() == [
        [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0],
        [1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    ]


def test_every_generated_caption_matches_its_own_image(examples):
    captions = [parse_caption(e.caption) for e in examples[:40]] + [parse_caption(e.detailed_caption) for e in examples[:40]]
    matches = caption_matches(captions, [e.attributes for e in examples[:40]])
    assert torch.equal(torch.diagonal(matches[:, :40]), torch.ones(40))
    assert torch.equal(torch.diagonal(matches[:, 40:]), torch.ones(40))


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
    captions = [e.caption for e in generate_examples(100, 1)]
    assert train_tokenizer(captions).get_vocab() == train_tokenizer(captions).get_vocab()


def test_training_on_the_world_data_lowers_the_contrastive_loss(examples, tokenizer):
    config = ShapesClipConfig(hidden_size=32, heads=2, layers=1, patch_size=8, projection_dim=32, steps=30, batch_size=32)
    torch.manual_seed(0)
    model = build_clip(tokenizer, config)
    batch = examples[:64]
    captions = [e.caption for e in batch]
    tokens = tokenizer(captions, padding="max_length", truncation=True, max_length=config.max_length, return_tensors="pt")
    matches = caption_matches([parse_caption(c) for c in captions], [e.attributes for e in batch])
    pixels = normalise_pixels(images_to_tensor(batch))

    def loss() -> float:
        with torch.no_grad():
            logits = model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask, pixel_values=pixels).logits_per_image
        return multi_positive_clip_loss(logits, matches).item()

    before = loss()
    record = train_clip(model, tokenizer, examples, config, seed=0, progress=False)
    assert math.isfinite(record["final_loss"])
    assert loss() < before - 0.3  # 4.99 → 4.08 in 30 steps
