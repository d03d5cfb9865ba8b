"""The policy against the stock diffusers pipeline, log-prob recomputation, and input errors."""

import pytest
import torch
from conftest import make_generator

from t2i import Guidance, LoraSettings, StableDiffusionPolicy

PROMPTS = ["a red circle", "a large blue square at the left on a white background"]


def perturb_lora(policy, scale=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in policy.unet.named_parameters():
            if "lora_B" in name:
                param.add_(scale * torch.randn(param.shape, generator=g))


def test_zero_lora_policy_equals_stock_pipeline(policy, tiny_pipeline):
    policy.add_lora(LoraSettings(rank=4))
    settings = dict(num_inference_steps=8, eta=1.0)
    ours = policy.sample(PROMPTS, guidance=Guidance.cfg(6.0), negative_prompt="blurry", generator=make_generator(7), **settings)
    stock = tiny_pipeline(
        PROMPTS, guidance_scale=6.0, negative_prompt=["blurry"] * 2, generator=make_generator(7), output_type="pt", **settings
    ).images
    torch.testing.assert_close(ours.images, stock, atol=1e-5, rtol=0)


def test_deterministic_ddim_without_log_probs_equals_stock(policy, tiny_pipeline):
    ours = policy.sample(PROMPTS, num_inference_steps=6, eta=0.0, compute_log_probs=False, generator=make_generator(1))
    stock = tiny_pipeline(PROMPTS, num_inference_steps=6, eta=0.0, generator=make_generator(1), output_type="pt").images
    torch.testing.assert_close(ours.images, stock, atol=1e-5, rtol=0)
    assert torch.isnan(ours.log_probs).all()


def test_trajectory_shapes_and_contents(policy):
    traj = policy.sample(PROMPTS, num_inference_steps=5, generator=make_generator())
    assert traj.latents.shape == (2, 6, 4, 8, 8)
    assert traj.timesteps.tolist() == [801, 601, 401, 201, 1]
    assert traj.log_probs.shape == (2, 5) and torch.isfinite(traj.log_probs).all()
    assert traj.images.shape == (2, 3, 16, 16)
    assert 0.0 <= traj.images.min() and traj.images.max() <= 1.0
    torch.testing.assert_close(policy.decode(traj.latents[:, -1]), traj.images)
    torch.testing.assert_close(traj.log_probs_sum, traj.log_probs * 4 * 8 * 8)
    assert traj.conditioning.embeds["encoder_hidden_states"].shape[:2] == (2, 2)  # (∅, c) × B


def test_recomputed_log_probs_reproduce_the_recording(policy):
    policy.add_lora(LoraSettings(rank=2))
    traj = policy.sample(
        PROMPTS,
        original_prompts=["a circle", "a square"],
        guidance=Guidance.prompt_centred(3.0, 4.0),
        num_inference_steps=6,
        generator=make_generator(3),
    )
    recomputed = policy.log_probs(traj, list(range(6)))
    torch.testing.assert_close(recomputed, traj.log_probs, atol=1e-5, rtol=0)
    per_sample = torch.tensor([[5, 0, 2], [1, 4, 3]])  # DDPO's random timestep subset, one per sample
    subset = policy.log_probs(traj, per_sample)
    torch.testing.assert_close(subset, traj.log_probs.gather(1, per_sample), atol=1e-5, rtol=0)


def test_log_probs_change_with_lora_and_base_is_recovered_with_adapters_off(policy):
    params = policy.add_lora(LoraSettings(rank=4))
    traj = policy.sample(PROMPTS, num_inference_steps=4, generator=make_generator(4))
    perturb_lora(policy)
    changed = policy.log_probs(traj, [0, 1, 2, 3])
    assert (changed - traj.log_probs).abs().max() > 1e-3
    with policy.adapters_disabled():
        base = policy.log_probs(traj, [0, 1, 2, 3])
    torch.testing.assert_close(base, traj.log_probs, atol=1e-5, rtol=0)
    changed.sum().backward()
    assert all(p.grad is not None for p in params) and sum(p.grad.abs().sum() for p in params) > 0
    assert all(p.grad is None for n, p in policy.unet.named_parameters() if "lora_" not in n)


def test_select_keeps_samples_consistent(policy):
    traj = policy.sample(PROMPTS + ["a green triangle"], num_inference_steps=3, generator=make_generator(5))
    sub = traj.select([2, 0])
    assert sub.prompts == ["a green triangle", "a red circle"]
    torch.testing.assert_close(policy.log_probs(sub, [0, 1, 2]), traj.log_probs[[2, 0]], atol=1e-5, rtol=0)


def test_bad_inputs_are_refused_with_the_bad_value(policy):
    with pytest.raises(ValueError, match="eta=0"):
        policy.sample(PROMPTS, eta=0.0, num_inference_steps=2)
    with pytest.raises(ValueError, match="original_prompts has 1 prompts but prompts has 2"):
        policy.sample(PROMPTS, original_prompts=["x"], guidance=Guidance.prompt_centred(5, 5), num_inference_steps=2)
    with pytest.raises(ValueError, match="needs original_prompts"):
        policy.sample(PROMPTS, guidance=Guidance.prompt_centred(5, 5), num_inference_steps=2)
    with pytest.raises(ValueError, match="negative_prompt has 3 entries but the batch has 2"):
        policy.sample(PROMPTS, negative_prompt=["a", "b", "c"], num_inference_steps=2)
    with pytest.raises(ValueError, match="3 generators given for a batch of 2"):
        policy.sample(PROMPTS, generator=[make_generator(i) for i in range(3)], num_inference_steps=2)
    with pytest.raises(ValueError, match=r"prompts\[1\] is an empty prompt"):
        policy.sample(["a red circle", "  "], num_inference_steps=2)
    with pytest.raises(ValueError, match="prompts is empty"):
        policy.sample([], num_inference_steps=2)
    with pytest.raises(ValueError, match="guidance weight nan"):
        policy.sample(PROMPTS, guidance=Guidance.cfg(float("nan")), num_inference_steps=2)
    traj = policy.sample(PROMPTS, num_inference_steps=2, generator=make_generator())
    with pytest.raises(ValueError, match=r"step indices must lie in \[0, 2\); got 0..2"):
        policy.log_probs(traj, [0, 2])
    with pytest.raises(ValueError, match=r"step_indices must be \(S,\) or \(2, S\)"):
        policy.log_probs(traj, torch.zeros(3, 1, dtype=torch.long))


def test_unknown_model_paths_are_refused_by_name(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no diffusers pipeline directory at .*no-such-model"):
        StableDiffusionPolicy.from_pretrained(str(missing))
    with pytest.raises(FileNotFoundError, match=r"not a diffusers pipeline directory \(no model_index.json in it\)"):
        StableDiffusionPolicy.from_pretrained(tmp_path)
    with pytest.raises(OSError, match="could not load a StableDiffusionPipeline from 'nobody/no-such-model': it is not a local"):
        StableDiffusionPolicy.from_pretrained("nobody/no-such-model")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}')
    with pytest.raises(OSError, match="from '.*broken': the local directory failed to load"):
        StableDiffusionPolicy.from_pretrained(broken)


def test_local_directory_round_trip(tmp_path, tiny_pipeline, policy):
    tiny_pipeline.save_pretrained(tmp_path / "pipe")
    loaded = StableDiffusionPolicy.from_pretrained(tmp_path / "pipe")
    a = policy.sample(PROMPTS, num_inference_steps=3, generator=make_generator(9))
    b = loaded.sample(PROMPTS, num_inference_steps=3, generator=make_generator(9))
    torch.testing.assert_close(a.images, b.images, atol=1e-6, rtol=0)


def test_conditioning_encodes_each_distinct_prompt_once_and_equals_per_group_encoding(policy):
    calls = []
    encode = policy.encode_prompts

    def counting(prompts):
        calls.append(list(prompts))
        return encode(prompts)

    policy.encode_prompts = counting
    expansions = ["a red circle, sharp", "a red circle, sharp", "a blue square", "a blue square"]
    originals = ["a red circle", "a red circle", "a blue square", "a blue square"]
    conditioning = policy.build_conditioning([originals, expansions], Guidance.prompt_centred(3.0, 2.0))
    assert calls == [["", "a red circle", "a blue square", "a red circle, sharp"]]  # ∅, then c, then ĉ: one call, no repeats
    del policy.encode_prompts
    for group, prompts in enumerate([[""] * 4, originals, expansions]):
        torch.testing.assert_close(conditioning.embeds["encoder_hidden_states"][group], encode(prompts)["encoder_hidden_states"],
                                   atol=1e-6, rtol=1e-6)  # fmt: skip
    assert conditioning.weights == (3.0, 2.0) and conditioning.has_unconditional
