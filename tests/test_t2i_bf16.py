"""A bfloat16 policy: the guided model output, the DDIM step and its log-probs stay float32.

Stated tolerance: with the UNet in bf16, recorded and recomputed log-probs (mean over latent
dimensions, values around -1.3 here) agree within 1e-3 absolute. On CPU they agree exactly (the same
bf16 kernels see the same rows); on a GPU, batch-size-dependent kernel choices may move them by a few
bf16 roundings of ε, which the tolerance allows.
"""

import math

import torch
from conftest import make_generator

from t2i import Guidance, LoraSettings, StableDiffusionPolicy
from t2i.ddim import previous_timestep
from t2i.tiny import build_tiny_pipeline

BF16_LOG_PROB_ATOL = 1e-3
PROMPTS = ["a red circle", "a large blue square at the left on a white background"]


def bf16_policy():
    policy = StableDiffusionPolicy(build_tiny_pipeline()).to(dtype=torch.bfloat16)
    policy.add_lora(LoraSettings(rank=2))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in policy.unet.named_parameters():
            if "lora_B" in name:
                param.add_((0.05 * torch.randn(param.shape, generator=g)).to(param.dtype))
    return policy


def sample(policy, steps=6):
    return policy.sample(PROMPTS, original_prompts=["a circle", "a square"], guidance=Guidance.prompt_centred(3.0, 4.0),
                         num_inference_steps=steps, generator=make_generator(3))  # fmt: skip


def test_bf16_recorded_and_recomputed_log_probs_agree_and_are_float32():
    policy = bf16_policy()
    assert {p.dtype for p in policy.unet.parameters()} == {torch.bfloat16}
    traj = sample(policy)
    assert traj.log_probs.dtype == traj.latents.dtype == torch.float32
    recomputed = policy.log_probs(traj, list(range(6)))
    assert recomputed.dtype == torch.float32 and recomputed.requires_grad  # gradients reach the bf16 LoRA through float32 math
    torch.testing.assert_close(recomputed, traj.log_probs, atol=BF16_LOG_PROB_ATOL, rtol=0)
    per_sample = torch.tensor([[5, 0, 2], [1, 4, 3]])
    torch.testing.assert_close(policy.log_probs(traj, per_sample), traj.log_probs.gather(1, per_sample), atol=BF16_LOG_PROB_ATOL, rtol=0)
    recomputed.sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.bfloat16 for p in policy.unet.parameters() if p.requires_grad)


def test_bf16_step_is_computed_in_float32():
    """The step's log-prob equals a float64 evaluation of DDIM's Gaussian from the same guided ε to 1e-5:
    computed in bf16 it would be off by ~1e-2 (bf16 keeps 8 bits of mantissa)."""
    policy = bf16_policy()
    traj = sample(policy, steps=4)
    j = 2
    x_t, x_prev, t = traj.latents[:, j], traj.latents[:, j + 1], traj.timesteps[j]
    with torch.no_grad():
        eps = policy.predict_noise(x_t, t, traj.conditioning)
        step = policy.step(eps, t, x_t, eta=1.0, prev_sample=x_prev)
    assert eps.dtype == step.mean.dtype == step.log_prob.dtype == torch.float32
    alphas = policy.scheduler.alphas_cumprod.double()
    a_t, a_prev = alphas[int(t)], alphas[int(previous_timestep(policy.scheduler, t))]
    x_t, x_prev, eps = x_t.double(), x_prev.double(), eps.double()
    x0 = (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    var = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
    mean = a_prev.sqrt() * x0 + (1 - a_prev - var).sqrt() * eps
    log_prob = (-((x_prev - mean) ** 2) / (2 * var) - 0.5 * var.log() - 0.5 * math.log(2 * math.pi)).mean(dim=(1, 2, 3))
    torch.testing.assert_close(step.log_prob.double(), log_prob, atol=1e-5, rtol=0)
    torch.testing.assert_close(traj.log_probs[:, j].double(), log_prob, atol=1e-5, rtol=0)  # the recording is that step
