"""The SD3 family against the stock StableDiffusion3Pipeline: Euler images, Flow-GRPO log-probs, LoRA files, family."""

import json

import pytest
import torch
from conftest import make_generator
from test_t2i_policy import perturb_lora

from t2i import Guidance, LoraSettings, StableDiffusion3Policy, load_policy, policy_class_for
from t2i.families import policy_of_pipeline
from t2i.tiny_sd3 import TinySD3Config, build_tiny_sd3_pipeline

PROMPTS = ["a red circle", "a large blue square at the left on a white background"]


@pytest.fixture
def stock():
    return build_tiny_sd3_pipeline()


@pytest.fixture
def sd3_policy():
    return StableDiffusion3Policy(build_tiny_sd3_pipeline())


def stock_images(pipe, prompts, seed, **kwargs):
    return pipe(prompts, generator=make_generator(seed), output_type="pt", **kwargs).images


def euler(policy, prompts, seed, **kwargs):
    """The policy's images with noise level a = 0: the deterministic Euler sampler."""
    return policy.sample(prompts, eta=0.0, compute_log_probs=False, generator=make_generator(seed), **kwargs).images


def test_zero_noise_zero_lora_policy_equals_stock_sd3_pipeline_with_cfg_and_negative_prompt(sd3_policy, stock):
    sd3_policy.add_lora(LoraSettings(rank=4))
    ours = euler(sd3_policy, PROMPTS, 7, guidance=Guidance.cfg(6.0), negative_prompt="blurry", num_inference_steps=5)
    theirs = stock_images(stock, PROMPTS, 7, guidance_scale=6.0, negative_prompt=["blurry"] * 2, num_inference_steps=5)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    plain = euler(sd3_policy, PROMPTS, 8, guidance=Guidance.cfg(6.0), num_inference_steps=5)
    torch.testing.assert_close(plain, stock_images(stock, PROMPTS, 8, guidance_scale=6.0, num_inference_steps=5), atol=1e-5, rtol=0)
    assert (plain - stock_images(stock, PROMPTS, 8, guidance_scale=6.0, num_inference_steps=5, negative_prompt="blurry")).abs().max() > 1e-4
    traj = sd3_policy.sample(PROMPTS, guidance=Guidance.cfg(6.0), num_inference_steps=5, eta=0.7, generator=make_generator(8))
    assert traj.conditioning.embeds["encoder_hidden_states"].shape == (2, 2, 77 + 256, 48)  # CLIP tokens + 256 T5 tokens (zeros without T5)
    assert traj.conditioning.embeds["pooled_projections"].shape == (2, 2, 16 + 24)
    assert (traj.images - plain).abs().max() > 1e-3  # the SDE noise moves the images


def test_euler_sampling_at_another_size_and_with_t5_equals_stock():
    config = TinySD3Config(with_t5=True)
    policy, stock = StableDiffusion3Policy(build_tiny_sd3_pipeline(config)), build_tiny_sd3_pipeline(config)
    settings = dict(num_inference_steps=3, height=24, width=16)
    ours = euler(policy, PROMPTS[:1], 2, guidance=Guidance.cfg(4.0), **settings)
    assert ours.shape == (1, 3, 24, 16)
    theirs = stock_images(stock, PROMPTS[:1], 2, guidance_scale=4.0, **settings)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_recomputed_log_probs_reproduce_the_recording_and_move_with_the_lora(sd3_policy):
    params = sd3_policy.add_lora(LoraSettings(rank=2))
    traj = sd3_policy.sample(PROMPTS, guidance=Guidance.cfg(4.5), num_inference_steps=5, eta=0.7, generator=make_generator(3))
    assert torch.isfinite(traj.log_probs).all() and traj.log_probs.shape == (2, 5)
    torch.testing.assert_close(sd3_policy.log_probs(traj, list(range(5))), traj.log_probs, atol=1e-5, rtol=0)
    per_sample = torch.tensor([[4, 0], [1, 3]])
    torch.testing.assert_close(sd3_policy.log_probs(traj, per_sample), traj.log_probs.gather(1, per_sample), atol=1e-5, rtol=0)
    perturb_lora(sd3_policy, scale=0.5)
    changed = sd3_policy.log_probs(traj, list(range(5)))
    assert (changed - traj.log_probs).abs().max() > 1e-3
    with sd3_policy.adapters_disabled():
        torch.testing.assert_close(sd3_policy.log_probs(traj, list(range(5))), traj.log_probs, atol=1e-5, rtol=0)
    changed.sum().backward()
    assert sum(p.grad.abs().sum() for p in params) > 0
    with pytest.raises(ValueError, match=r"eta=0 makes the step deterministic \(DDIM, or Euler for flow matching\)"):
        sd3_policy.sample(PROMPTS, eta=0.0, num_inference_steps=2)


def test_lora_saved_in_diffusers_format_loads_into_a_stock_pipeline_and_back(tmp_path, sd3_policy, stock):
    sd3_policy.add_lora(LoraSettings(rank=4))
    perturb_lora(sd3_policy, scale=0.5)
    path = sd3_policy.save_lora(tmp_path)
    assert path.name == "pytorch_lora_weights.safetensors"
    stock.load_lora_weights(str(tmp_path))
    settings = dict(guidance=Guidance.cfg(5.0), num_inference_steps=4)
    ours = euler(sd3_policy, PROMPTS, 1, **settings)
    torch.testing.assert_close(ours, stock_images(stock, PROMPTS, 1, guidance_scale=5.0, num_inference_steps=4), atol=1e-5, rtol=0)
    assert (ours - euler(StableDiffusion3Policy(build_tiny_sd3_pipeline()), PROMPTS, 1, **settings)).abs().max() > 1e-3
    fresh = StableDiffusion3Policy(build_tiny_sd3_pipeline())
    fresh.load_lora(tmp_path)
    assert fresh.trainable_parameters() and all("lora_" in n for n, p in fresh.unet.named_parameters() if p.requires_grad)
    torch.testing.assert_close(euler(fresh, PROMPTS, 1, **settings), ours, atol=1e-6, rtol=0)


def test_family_is_read_from_model_index(tmp_path, stock):
    stock.save_pretrained(tmp_path / "sd3")
    assert json.loads((tmp_path / "sd3" / "model_index.json").read_text())["_class_name"] == "StableDiffusion3Pipeline"
    assert policy_class_for(tmp_path / "sd3") is StableDiffusion3Policy
    loaded = load_policy(tmp_path / "sd3", text_encoder_3=None, tokenizer_3=None)  # saved without T5: say so, as in diffusers
    assert type(loaded) is StableDiffusion3Policy and type(policy_of_pipeline(stock)) is StableDiffusion3Policy
    settings = dict(guidance=Guidance.cfg(3.0), num_inference_steps=3)
    torch.testing.assert_close(
        euler(loaded, PROMPTS[:1], 9, **settings), euler(policy_of_pipeline(stock), PROMPTS[:1], 9, **settings), atol=1e-6, rtol=0
    )
