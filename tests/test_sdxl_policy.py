"""The SDXL family against the stock StableDiffusionXLPipeline: images, log-probs, guidance, micro-conditioning."""

import json

import huggingface_hub.constants
import pytest
import torch
from conftest import make_generator
from test_t2i_policy import perturb_lora

from t2i import Guidance, LoraSettings, SizeConditioning, StableDiffusionPolicy, StableDiffusionXLPolicy, load_policy, policy_class_for
from t2i.tiny import build_tiny_pipeline
from t2i.tiny_sdxl import build_tiny_sdxl_pipeline

PROMPTS = ["a red circle", "a large blue square at the left on a white background"]


@pytest.fixture
def stock():
    return build_tiny_sdxl_pipeline()


@pytest.fixture
def xl_policy():
    return StableDiffusionXLPolicy(build_tiny_sdxl_pipeline())


def stock_images(pipe, prompts, seed, **kwargs):
    return pipe(prompts, generator=make_generator(seed), output_type="pt", **kwargs).images


def test_zero_lora_policy_equals_stock_sdxl_pipeline_with_and_without_negative_prompt(xl_policy, stock):
    xl_policy.add_lora(LoraSettings(rank=4))
    settings = dict(num_inference_steps=6, eta=1.0)
    ours = xl_policy.sample(PROMPTS, guidance=Guidance.cfg(6.0), negative_prompt="blurry", generator=make_generator(7), **settings)
    theirs = stock_images(stock, PROMPTS, 7, guidance_scale=6.0, negative_prompt=["blurry"] * 2, **settings)
    torch.testing.assert_close(ours.images, theirs, atol=1e-5, rtol=0)
    # no negative prompt: SDXL base's force_zeros_for_empty_prompt gives ∅ all-zero embeddings, as in stock
    plain = xl_policy.sample(PROMPTS, guidance=Guidance.cfg(6.0), generator=make_generator(8), **settings)
    torch.testing.assert_close(plain.images, stock_images(stock, PROMPTS, 8, guidance_scale=6.0, **settings), atol=1e-5, rtol=0)
    assert plain.conditioning.embeds["encoder_hidden_states"][0].abs().max() == 0
    assert plain.conditioning.embeds["text_embeds"].shape == (2, 2, 24)  # (∅, c) × B × projection dim
    assert plain.conditioning.embeds["encoder_hidden_states"].shape == (2, 2, 77, 32 + 48)  # both towers' widths
    assert (plain.images - theirs).abs().max() > 1e-3  # the negative prompt matters


def test_sampled_size_and_micro_conditioning_reach_the_time_ids_as_in_stock(stock):
    settings = dict(num_inference_steps=4, eta=1.0, height=24, width=16)
    policy = StableDiffusionXLPolicy(build_tiny_sdxl_pipeline())
    ours = policy.sample(PROMPTS[:1], guidance=Guidance.cfg(5.0), generator=make_generator(2), **settings)
    assert ours.images.shape == (1, 3, 24, 16)
    torch.testing.assert_close(ours.images, stock_images(stock, PROMPTS[:1], 2, guidance_scale=5.0, **settings), atol=1e-5, rtol=0)
    told = StableDiffusionXLPolicy(build_tiny_sdxl_pipeline(), SizeConditioning(original_size=(64, 48), crops_coords_top_left=(4, 2)))
    moved = told.sample(PROMPTS[:1], guidance=Guidance.cfg(5.0), generator=make_generator(2), **settings)
    expected = stock_images(stock, PROMPTS[:1], 2, guidance_scale=5.0, original_size=(64, 48), crops_coords_top_left=(4, 2), **settings)
    torch.testing.assert_close(moved.images, expected, atol=1e-5, rtol=0)
    assert (moved.images - ours.images).abs().max() > 1e-4
    assert told.time_ids(torch.zeros(3, 4, 12, 8)).tolist() == [[64, 48, 4, 2, 24, 16]] * 3


def test_recomputed_log_probs_reproduce_the_recording_and_move_with_the_lora(xl_policy):
    params = xl_policy.add_lora(LoraSettings(rank=2))
    traj = xl_policy.sample(
        PROMPTS,
        original_prompts=["a circle", "a square"],
        guidance=Guidance.prompt_centred(3.0, 4.0),
        num_inference_steps=5,
        generator=make_generator(3),
    )
    assert traj.conditioning.embeds["text_embeds"].shape[:2] == (3, 2)  # (∅, c, ĉ) × B
    torch.testing.assert_close(xl_policy.log_probs(traj, list(range(5))), traj.log_probs, atol=1e-5, rtol=0)
    per_sample = torch.tensor([[4, 0], [1, 3]])
    torch.testing.assert_close(xl_policy.log_probs(traj, per_sample), traj.log_probs.gather(1, per_sample), atol=1e-5, rtol=0)
    perturb_lora(xl_policy)
    changed = xl_policy.log_probs(traj, list(range(5)))
    assert (changed - traj.log_probs).abs().max() > 1e-3
    with xl_policy.adapters_disabled():
        torch.testing.assert_close(xl_policy.log_probs(traj, list(range(5))), traj.log_probs, atol=1e-5, rtol=0)
    changed.sum().backward()
    assert sum(p.grad.abs().sum() for p in params) > 0


def test_prompt_centred_guidance_with_w1_zero_is_cfg_on_the_expansion(xl_policy):
    settings = dict(num_inference_steps=4, eta=1.0, negative_prompt="blurry")
    centred = xl_policy.sample(
        PROMPTS, original_prompts=["x", "y"], guidance=Guidance.prompt_centred(0.0, 5.0), generator=make_generator(5), **settings
    )
    cfg = xl_policy.sample(PROMPTS, guidance=Guidance.cfg(5.0), generator=make_generator(5), **settings)
    torch.testing.assert_close(centred.images, cfg.images, atol=1e-6, rtol=0)
    both = xl_policy.sample(
        PROMPTS, original_prompts=["x", "y"], guidance=Guidance.prompt_centred(2.0, 5.0), generator=make_generator(5), **settings
    )
    assert (both.images - cfg.images).abs().max() > 1e-4  # w1 ≠ 0 brings c in


def test_family_is_read_from_model_index_and_unknown_classes_are_refused(tmp_path, stock):
    stock.save_pretrained(tmp_path / "xl")
    build_tiny_pipeline().save_pretrained(tmp_path / "sd")
    assert policy_class_for(tmp_path / "xl") is StableDiffusionXLPolicy
    assert policy_class_for(tmp_path / "sd") is StableDiffusionPolicy
    loaded = load_policy(tmp_path / "xl")
    assert type(loaded) is StableDiffusionXLPolicy
    reference = StableDiffusionXLPolicy(stock).sample(PROMPTS[:1], num_inference_steps=3, generator=make_generator(9)).images
    torch.testing.assert_close(
        loaded.sample(PROMPTS[:1], num_inference_steps=3, generator=make_generator(9)).images, reference, atol=1e-6, rtol=0
    )
    (tmp_path / "pixart").mkdir()
    (tmp_path / "pixart" / "model_index.json").write_text(json.dumps({"_class_name": "PixArtAlphaPipeline"}))
    with pytest.raises(
        ValueError,
        match=r"is a PixArtAlphaPipeline; the policy families drive StableDiffusionPipeline, StableDiffusionXLPipeline, "
        r"StableDiffusion3Pipeline, FluxPipeline$",
    ):
        load_policy(tmp_path / "pixart")
    with pytest.raises(OSError, match="could not read the model_index.json of 'nobody/no-such-model'"):
        policy_class_for("nobody/no-such-model")


def test_prompt_overflow_is_read_over_both_tokenizers(xl_policy):
    xl_policy.pipeline.tokenizer_2.model_max_length = 10  # the second tower reads less than the first
    overflow = xl_policy.prompt_overflow("a red circle")  # 10 letters (spaces split, not tokens) + 2 special tokens
    assert overflow is not None and (overflow.tokens, overflow.context, overflow.dropped) == (12, 10, "le")
    assert xl_policy.prompt_overflow("a red") is None


def test_a_hub_id_is_read_from_the_local_cache_offline(tmp_path, monkeypatch):
    snapshot = tmp_path / "models--someone--tiny-xl" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline"}))
    (tmp_path / "models--someone--tiny-xl" / "refs").mkdir()
    (tmp_path / "models--someone--tiny-xl" / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert policy_class_for("someone/tiny-xl") is StableDiffusionXLPolicy


def test_a_float16_vae_decodes_in_float32_like_stock_and_stays_float16(stock):
    policy = StableDiffusionXLPolicy(build_tiny_sdxl_pipeline())
    for pipe in (policy.pipeline, stock):
        pipe.vae.to(torch.float16)
    ours = policy.sample(PROMPTS[:1], guidance=Guidance.cfg(5.0), num_inference_steps=3, generator=make_generator(4)).images
    theirs = stock_images(stock, PROMPTS[:1], 4, guidance_scale=5.0, num_inference_steps=3, eta=1.0)
    torch.testing.assert_close(ours, theirs.float(), atol=1e-5, rtol=0)
    assert policy.pipeline.vae.dtype == torch.float16
