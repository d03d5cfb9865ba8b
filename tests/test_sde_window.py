"""The SDE window (Flow-GRPO-Fast, MixGRPO): the sampler's deterministic steps outside it, log-probs inside it,
the sliding start, and the training loop's trained steps and on-policy ratio."""

import dataclasses

import pytest
import torch
from conftest import make_generator
from test_parrot_train import quick_args
from test_t2i_sampling import ToyPolicy

from parrot.rollout import draw_prompts, local_prompts, sample_images
from parrot.sde_window import SDEWindowConfig, window_steps
from parrot.t2i_update import old_log_probs, trained_steps
from parrot.train import ParrotTrainer
from parrot.train_config import load_train_config
from parrot_base.config import ConfigError
from t2i import Guidance, StableDiffusion3Policy
from t2i.tiny_sd3 import build_tiny_sd3_pipeline


@pytest.mark.parametrize("family", ["ddim", "flow"])
def test_steps_outside_the_window_are_the_deterministic_sampler_and_inside_log_probs_are_recomputed(family):
    policy = ToyPolicy() if family == "ddim" else StableDiffusion3Policy(build_tiny_sd3_pipeline())
    settings = dict(num_inference_steps=5, guidance=Guidance.cfg(1.0))  # CFG-free: the unconditional branch skipped
    windowed = policy.sample(["a red circle", "a blue square"], eta=0.7, generator=make_generator(4), sde_steps=[1, 2], **settings)
    ode = policy.sample(["a red circle", "a blue square"], eta=0.0, compute_log_probs=False, generator=make_generator(4), **settings)
    assert windowed.stochastic.tolist() == [False, True, True, False, False]
    torch.testing.assert_close(windowed.latents[:, :2], ode.latents[:, :2], atol=1e-6, rtol=0)  # x_T and the ODE step before
    assert (windowed.latents[:, 3] - ode.latents[:, 3]).abs().max() > 1e-3  # the window's noise moves the chain
    for i in (3, 4):  # after the window: deterministic steps from where the window left the chain
        x, t = windowed.latents[:, i], windowed.timesteps[i]
        following = policy.step_without_log_prob(policy.predict_noise(x, t, windowed.conditioning), t, x, eta=0.0, generator=None)
        torch.testing.assert_close(windowed.latents[:, i + 1], following, atol=1e-5, rtol=0)
    assert torch.isnan(windowed.log_probs[:, [0, 3, 4]]).all() and torch.isfinite(windowed.log_probs[:, [1, 2]]).all()
    torch.testing.assert_close(policy.log_probs(windowed, [1, 2]), windowed.log_probs[:, [1, 2]], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"steps \[0\] lie outside the SDE window \[1, 2\]"):
        policy.log_probs(windowed, [0, 1])
    with pytest.raises(ValueError, match=r"sde_steps=\[5\] must be a non-empty set of step indices in \[0, 5\)"):
        policy.sample(["a"], eta=0.7, sde_steps=[5], **settings)


def test_window_start_slides_with_the_iteration_and_wraps():
    sliding = SDEWindowConfig(size=2, start=1, stride=1, every=2)  # s_n = (1 + ⌊n/2⌋) mod (5 − 2 + 1)
    assert [window_steps(sliding, 5, n) for n in range(8)] == [[1, 2], [1, 2], [2, 3], [2, 3], [3, 4], [3, 4], [0, 1], [0, 1]]
    assert [window_steps(SDEWindowConfig(size=3, start=2), 5, n) for n in (0, 7)] == [[2, 3, 4], [2, 3, 4]]
    assert window_steps(SDEWindowConfig(), 5, 3) is None


def test_window_settings_are_refused_with_the_field_name(tmp_path):
    with pytest.raises(ConfigError, match="sampling: sde_window.size=5 must be <= num_steps=4"):
        load_train_config(quick_args(tmp_path, "--sampling.sde_window.size", "5"))
    with pytest.raises(ConfigError, match="sampling: sde_window.start=3 must be <= num_steps − size = 2"):
        load_train_config(quick_args(tmp_path, "--sampling.sde_window.size", "2", "--sampling.sde_window.start", "3"))
    with pytest.raises(ConfigError, match="sampling.sde_window: every=0 must be >= 1"):
        load_train_config(quick_args(tmp_path, "--sampling.sde_window.every", "0"))


def test_training_trains_the_window_steps_on_policy(tmp_path):
    args = quick_args(tmp_path, "--model.pipeline", "builtin:tiny_sd3", "--sampling.eta", "0.7", "--sampling.guidance_scale", "1",
                      "--sampling.sde_window.size", "2", "--sampling.sde_window.start", "1", "--sampling.sde_window.stride", "1",
                      "--t2i.timestep_fraction", "1", "--t2i.estimator", "is", "--t2i.kl_weight", "0.01", "--iterations", "2")  # fmt: skip
    trainer = ParrotTrainer(load_train_config(args))
    parts = trainer.parts
    assert "2 trained denoising step(s) per image (SDE window: 2 of 4 steps from step 1, sliding by 1 every 1" in parts.derived.describe()
    prompts = local_prompts(parts, draw_prompts(parts, 1))
    rollout = sample_images(parts, prompts, prompts, 1, 0)
    assert rollout.trajectory.stochastic.nonzero().flatten().tolist() == [2, 3]  # iteration 1: s_1 = (1 + 1) mod 3
    steps = trained_steps(parts, rollout, 1)
    assert (steps == torch.tensor([2, 3])).all()
    with torch.no_grad():
        new = parts.policy.log_probs(rollout.trajectory, steps)
    old = old_log_probs(parts, rollout.trajectory, steps, torch.ones(steps.shape[0], dtype=torch.bool))
    torch.testing.assert_close(torch.exp(new - old), torch.ones_like(new), atol=1e-6, rtol=0)  # on-policy ratio 1
    half = dataclasses.replace(parts, derived=dataclasses.replace(parts.derived, trained_steps_per_image=1))
    subset = trained_steps(half, rollout, 1)
    assert subset.shape == (4, 1) and set(subset.flatten().tolist()) <= {2, 3}
    metrics = trainer.run_iteration(1).metrics
    assert metrics["t2i/clip_fraction"] == 0 and metrics["t2i/kl"] >= 0 and torch.isfinite(torch.tensor(metrics["t2i/loss"]))
