"""Pieces of the tiny Stable Diffusion recipe that can be checked by hand, and its quality-word figures."""

import pytest
import torch

from shapes.sd import ShapesSDConfig, build_unet, build_vae, foreground_weights


def test_foreground_weights_mark_exactly_the_shape_pixels():
    images = torch.ones(1, 3, 8, 8)  # white in [-1, 1]
    images[0, :, 3, 4] = torch.tensor([0.7, -0.7, -0.7])  # one red pixel
    weights = foreground_weights(images, 10.0)
    assert weights.shape == (1, 1, 8, 8)
    assert weights[0, 0, 3, 4] == 10.0 and weights.sum() == 63 + 10.0


def test_vae_posterior_starts_nearly_deterministic_and_latent_is_16x16():
    config = ShapesSDConfig(vae_channels=(8, 16), initial_logvar=-8.0)
    vae = build_vae(config)
    posterior = vae.encode(torch.zeros(2, 3, 32, 32)).latent_dist
    assert posterior.mean.shape == (2, 4, 16, 16)
    torch.testing.assert_close(posterior.logvar, torch.full_like(posterior.logvar, -8.0))


def test_unet_levels_follow_the_cross_attention_flags():
    config = ShapesSDConfig(unet_channels=(16, 32), unet_cross_attention=(False, True), unet_heads=2)
    unet = build_unet(config, latent_size=16, cross_attention_dim=32)
    assert unet.config.down_block_types == ("DownBlock2D", "CrossAttnDownBlock2D")
    assert unet.config.up_block_types == ("CrossAttnUpBlock2D", "UpBlock2D")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"unet_cross_attention": (True,)}, "one entry per level"),
        ({"unet_cross_attention": (False, False, False)}, "could not read the prompt"),
        ({"uncond_probability": 1.0}, "uncond_probability=1.0"),
        ({"unet_steps": 0}, "unet_steps=0"),
    ],
)
def test_bad_config_values_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ShapesSDConfig(**kwargs)


def test_word_readings_cover_every_quality_and_light_word():
    from shapes.checker import QualityReading
    from shapes.data import GLOBAL_WORDS, QUALITY_WORDS
    from shapes.sd import WORD_READINGS

    expected = {w for pair in QUALITY_WORDS.values() for w in pair} | {"warm light", "cold light"}
    assert set(WORD_READINGS) == expected
    assert set(GLOBAL_WORDS) - set(WORD_READINGS) == {"masterpiece", "high contrast"}
    # each word claims the reading of its own factor, and both words of a pair claim the same reading
    fields = set(QualityReading.__dataclass_fields__)
    factor_reading = {"sharpness": "edge", "cleanliness": "specks", "vividness": "chroma", "regularity": "aspect"}
    for factor, (high, low) in QUALITY_WORDS.items():
        assert WORD_READINGS[high] == WORD_READINGS[low] == factor_reading[factor]
    assert WORD_READINGS["warm light"] == WORD_READINGS["cold light"] == "tint"
    assert set(WORD_READINGS.values()) <= fields


@pytest.fixture(scope="module")
def tiny_pipeline():
    """An untrained, stub-free pipeline of the world's architecture at toy width."""
    from shapes.clip import ShapesClipConfig, build_clip, train_tokenizer
    from shapes.data import generate_examples
    from shapes.sd import text_encoder_from_clip
    from t2i.tiny import assemble_sd_pipeline

    torch.manual_seed(0)
    examples = generate_examples(60, 0, "all")
    tokenizer = train_tokenizer([e.caption for e in examples] + [e.detailed_caption for e in examples], 300, 77)
    clip = build_clip(tokenizer, ShapesClipConfig(hidden_size=32, heads=2, layers=1, patch_size=8, projection_dim=32))
    config = ShapesSDConfig(vae_channels=(8, 16), unet_channels=(16, 32), unet_cross_attention=(False, True), unet_heads=2, eval_steps=1)
    text_encoder = text_encoder_from_clip(clip)
    pipeline = assemble_sd_pipeline(build_vae(config), build_unet(config, 16, text_encoder.config.hidden_size), text_encoder, tokenizer)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline, config


def test_quality_vocabulary_is_deterministic_for_a_seed_and_has_every_figure(tiny_pipeline):
    from shapes.sd import WORD_READINGS, quality_vocabulary

    pipeline, config = tiny_pipeline
    first = quality_vocabulary(pipeline, config, seed=3, images_per_prompt=1)
    assert quality_vocabulary(pipeline, config, seed=3, images_per_prompt=1) == first
    readings = ("edge", "specks", "chroma", "aspect", "tint")
    assert set(first) == (
        {f"plain_{r}" for r in readings}
        | {f"word_{w.replace(' ', '_')}_{r}" for w, r in WORD_READINGS.items()}
        | {f"{kind}_{r}" for kind in ("positive", "negative") for r in readings if r != "tint"}
    )
    # specks are counts (their mean over 9 prompts × 1 image is a multiple of 1/9); aspect = |log| ≥ 0
    assert all(abs(first[k] * 9 - round(first[k] * 9)) < 1e-9 for k in first if k.endswith("specks"))
    assert all(first[k] >= 0 for k in first if k.endswith("aspect"))
