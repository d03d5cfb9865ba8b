"""The FLUX family against the stock FluxPipeline: Euler images (distilled guidance, true CFG), Flow-GRPO log-probs, LoRA files."""

import json

import pytest
import torch
from conftest import make_generator
from test_parrot_train import quick_args
from test_t2i_policy import perturb_lora

from parrot.losses import t2i_policy_loss
from parrot.train import ParrotTrainer
from parrot.train_config import load_train_config
from t2i import FluxPolicy, Guidance, LoraSettings, load_policy, policy_class_for
from t2i.families import policy_of_pipeline
from t2i.flux import flux_shift_mu
from t2i.tiny_flux import TinyFluxConfig, build_tiny_flux_pipeline

PROMPTS = ["a red circle", "a large blue square at the left on a white background"]
FLOW_GRPO_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")


@pytest.fixture
def stock():
    pipe = build_tiny_flux_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def flux_policy():
    return FluxPolicy(build_tiny_flux_pipeline())


def stock_images(pipe, prompts, seed, **kwargs):
    return pipe(prompts, generator=make_generator(seed), output_type="pt", **kwargs).images


def euler(policy, prompts, seed, **kwargs):
    """The policy's images with noise level a = 0: the deterministic Euler sampler."""
    return policy.sample(prompts, eta=0.0, compute_log_probs=False, generator=make_generator(seed), **kwargs).images


def test_zero_noise_zero_lora_policy_equals_stock_flux_with_its_distilled_guidance(flux_policy, stock):
    flux_policy.add_lora(LoraSettings(rank=4))
    traj = flux_policy.sample(PROMPTS, eta=0.0, compute_log_probs=False, generator=make_generator(7), num_inference_steps=5)
    theirs = stock_images(stock, PROMPTS, 7, num_inference_steps=5)  # guidance_scale 3.5: the distilled guidance, no CFG
    torch.testing.assert_close(traj.images, theirs, atol=1e-5, rtol=0)
    torch.testing.assert_close(traj.timesteps, stock.scheduler.timesteps, atol=0, rtol=0)  # FluxPipeline's shifted schedule
    packed, _ = stock.prepare_latents(2, 4, 16, 16, torch.float32, "cpu", make_generator(7))
    assert torch.equal(stock._pack_latents(traj.latents[:, 0], 2, 4, 8, 8), packed)  # x_T is the stock draw, kept unpacked
    embeds = traj.conditioning.embeds  # one group (guidance scale 1: no ∅): T5's 512 tokens, CLIP's pooled output, g
    assert embeds["encoder_hidden_states"].shape == (1, 2, 512, 32) and embeds["pooled_projections"].shape == (1, 2, 16)
    assert torch.equal(embeds["guidance"], torch.full((1, 2), 3.5))
    flux_policy.distilled_guidance = 5.0
    other = euler(flux_policy, PROMPTS, 7, num_inference_steps=5)
    torch.testing.assert_close(other, stock_images(stock, PROMPTS, 7, num_inference_steps=5, guidance_scale=5.0), atol=1e-5, rtol=0)
    assert (other - theirs).abs().max() > 1e-4


@pytest.mark.parametrize("guidance_embeds", [True, False])
def test_true_cfg_with_a_negative_prompt_at_a_non_square_size_equals_stock(guidance_embeds):
    config = TinyFluxConfig(guidance_embeds=guidance_embeds)
    policy, stock = FluxPolicy(build_tiny_flux_pipeline(config)), build_tiny_flux_pipeline(config)
    stock.set_progress_bar_config(disable=True)
    settings = dict(num_inference_steps=4, height=24, width=16)
    ours = euler(policy, PROMPTS, 3, guidance=Guidance.cfg(4.0), negative_prompt="blurry", **settings)
    assert ours.shape == (2, 3, 24, 16)
    theirs = stock_images(stock, PROMPTS, 3, true_cfg_scale=4.0, negative_prompt=["blurry"] * 2, **settings)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    assert (ours - stock_images(stock, PROMPTS, 3, **settings)).abs().max() > 1e-4  # true CFG changed the images


def test_the_shift_follows_the_image_size_as_in_flux_pipeline(flux_policy):
    """μ = 0.5 + (1.15 − 0.5)·(n − 256)/(4096 − 256) for n = h/2·w/2 image tokens; σ shifted by e^μ/(e^μ + 1/s − 1)."""
    assert flux_shift_mu(flux_policy.scheduler.config, 128, 128) == pytest.approx(1.15)  # 1024 px: 4096 tokens
    assert flux_shift_mu(flux_policy.scheduler.config, 8, 8) == pytest.approx(0.5 + 0.65 * (16 - 256) / 3840)
    flux_policy.set_timesteps(4, torch.zeros(1, 4, 8, 12))
    mu = torch.tensor(0.5 + 0.65 * (24 - 256) / 3840, dtype=torch.float64)
    s = torch.tensor([1.0, 0.75, 0.5, 0.25], dtype=torch.float64)
    sigmas = mu.exp() / (mu.exp() + (1 / s - 1))
    torch.testing.assert_close(flux_policy.scheduler.timesteps, (1000 * sigmas).float(), atol=1e-3, rtol=0)


def test_prompt_centred_guidance_is_the_weighted_sum_of_three_model_calls(flux_policy):
    x, t = torch.randn(2, 4, 8, 8, generator=make_generator(0)), torch.tensor(700.0)
    flux_policy.set_timesteps(3, x)

    def velocity(prompts):
        conditioning = flux_policy.build_conditioning([prompts], Guidance.cfg(1.0))
        return flux_policy.predict_noise(x, t, conditioning)

    expanded = ["a red circle, sharp, vivid", "a blue square, masterpiece"]
    conditioning = flux_policy.build_conditioning([["a red circle", "a blue square"], expanded], Guidance.prompt_centred(2.0, 3.0), "ugly")
    guided = flux_policy.predict_noise(x, t, conditioning)
    expected = 2.0 * velocity(["a red circle", "a blue square"]) + (1 - 5.0) * velocity(["ugly", "ugly"]) + 3.0 * velocity(expanded)
    torch.testing.assert_close(guided, expected, atol=1e-5, rtol=0)


def test_recomputed_log_probs_equal_the_recording_and_move_with_the_lora(flux_policy):
    params = flux_policy.add_lora(LoraSettings(rank=2))
    traj = flux_policy.sample(PROMPTS, guidance=Guidance.cfg(1.0), num_inference_steps=5, eta=0.7, generator=make_generator(3))
    assert torch.isfinite(traj.log_probs).all() and traj.log_probs.shape == (2, 5)
    torch.testing.assert_close(flux_policy.log_probs(traj, list(range(5))), traj.log_probs, atol=1e-5, rtol=0)
    per_sample = torch.tensor([[4, 0], [1, 3]])
    recomputed = flux_policy.log_probs(traj, per_sample)
    old = traj.log_probs.gather(1, per_sample)
    torch.testing.assert_close(recomputed, old, atol=1e-5, rtol=0)
    # on-policy the importance ratio ρ = exp(log p_θ − log p_θold) is 1 up to float rounding (the recomputation batches
    # B·S steps in one call, the sampler B): nothing is clipped even at DDPO's ε = 1e-4
    torch.testing.assert_close(torch.exp(recomputed - old), torch.ones(2, 2), atol=1e-6, rtol=0)
    assert t2i_policy_loss(recomputed, torch.tensor([1.0, -1.0]), 2.0, old, clip_range=1e-4).clip_fraction == 0
    flux_policy.sample(PROMPTS[:1], num_inference_steps=3, eta=0.7, height=32, width=32, generator=make_generator(0))
    torch.testing.assert_close(flux_policy.log_probs(traj, [0, 4]), traj.log_probs[:, [0, 4]], atol=1e-5, rtol=0)  # schedule restored
    perturb_lora(flux_policy, scale=0.5)
    changed = flux_policy.log_probs(traj, list(range(5)))
    assert (changed - traj.log_probs).abs().max() > 1e-3
    with flux_policy.adapters_disabled():
        torch.testing.assert_close(flux_policy.log_probs(traj, list(range(5))), traj.log_probs, atol=1e-5, rtol=0)
    changed.sum().backward()
    assert sum(p.grad.abs().sum() for p in params) > 0
    window = flux_policy.sample(PROMPTS, num_inference_steps=4, eta=0.7, sde_steps=[1, 2], generator=make_generator(5))  # Flow-GRPO-Fast
    assert window.log_probs[:, [0, 3]].isnan().all() and torch.isfinite(window.log_probs[:, [1, 2]]).all()
    with torch.no_grad():
        torch.testing.assert_close(flux_policy.log_probs(window, [1, 2]), window.log_probs[:, [1, 2]], atol=1e-5, rtol=0)


def test_lora_saved_in_diffusers_format_loads_into_a_fresh_stock_flux_pipeline(tmp_path, flux_policy, stock):
    flux_policy.add_lora(LoraSettings(rank=4, alpha=8, target_modules=FLOW_GRPO_TARGETS))  # configs/flux_dev.yaml's modules
    perturb_lora(flux_policy, scale=0.5)
    path = flux_policy.save_lora(tmp_path)
    assert path.name == "pytorch_lora_weights.safetensors"
    stock.load_lora_weights(str(tmp_path))
    settings = dict(guidance=Guidance.cfg(3.0), negative_prompt="blurry", num_inference_steps=4)
    ours = euler(flux_policy, PROMPTS, 1, **settings)
    theirs = stock_images(stock, PROMPTS, 1, true_cfg_scale=3.0, negative_prompt="blurry", num_inference_steps=4)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    assert (ours - euler(FluxPolicy(build_tiny_flux_pipeline()), PROMPTS, 1, **settings)).abs().max() > 1e-3
    fresh = FluxPolicy(build_tiny_flux_pipeline())
    fresh.load_lora(tmp_path)
    assert fresh.trainable_parameters() and all("lora_" in n for n, p in fresh.unet.named_parameters() if p.requires_grad)
    torch.testing.assert_close(euler(fresh, PROMPTS, 1, **settings), ours, atol=1e-6, rtol=0)


def test_family_is_read_from_model_index_and_t5_is_required(tmp_path, stock):
    stock.save_pretrained(tmp_path / "flux")
    assert json.loads((tmp_path / "flux" / "model_index.json").read_text())["_class_name"] == "FluxPipeline"
    assert policy_class_for(tmp_path / "flux") is FluxPolicy
    loaded = load_policy(tmp_path / "flux")
    assert type(loaded) is FluxPolicy and type(policy_of_pipeline(stock)) is FluxPolicy
    settings = dict(num_inference_steps=3, height=16, width=16)  # a saved pipeline has FLUX's default size again (1024 px)
    torch.testing.assert_close(
        euler(loaded, PROMPTS[:1], 9, **settings), euler(policy_of_pipeline(stock), PROMPTS[:1], 9, **settings), atol=1e-6, rtol=0
    )
    stock.text_encoder_2 = None
    with pytest.raises(ValueError, match="FLUX needs its T5 encoder"):
        FluxPolicy(stock)
    with pytest.raises(ValueError, match="distilled_guidance=nan must be a finite number"):
        FluxPolicy(build_tiny_flux_pipeline(), distilled_guidance=float("nan"))


def test_one_training_iteration_on_tiny_flux_writes_a_lora_stock_flux_loads(tmp_path):
    out = tmp_path / "run"
    args = quick_args(out, "--model.pipeline", "builtin:tiny_flux", "--model.distilled_guidance", "4.0", "--sampling.eta", "0.7",
                      "--sampling.guidance_scale", "1.0", "--iterations", "1", "--checkpoint_every", "1")  # fmt: skip
    trainer = ParrotTrainer(load_train_config(args))
    assert type(trainer.parts.policy) is FluxPolicy and trainer.parts.policy.distilled_guidance == 4.0
    trainer.train()
    lora = out / "checkpoints" / "checkpoint-000001" / "lora"
    stock = build_tiny_flux_pipeline()
    stock.set_progress_bar_config(disable=True)
    before = stock_images(stock, "a red circle", 3, num_inference_steps=3, guidance_scale=4.0)
    stock.load_lora_weights(lora)
    after = stock_images(stock, "a red circle", 3, num_inference_steps=3, guidance_scale=4.0)
    assert torch.isfinite(after).all() and (after - before).abs().max() > 0  # the update moved the transformer
    policy = FluxPolicy(build_tiny_flux_pipeline(), distilled_guidance=4.0)
    policy.load_lora(lora, trainable=False)
    torch.testing.assert_close(euler(policy, ["a red circle"], 3, num_inference_steps=3), after, atol=1e-5, rtol=0)
