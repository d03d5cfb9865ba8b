"""The one denoising objective (t2i.objective): DDPM ε/v/x₀ and rectified flow against their formulas, SD3's
σ density by hand, the flow target against the stock Euler step, and DPOK's rwr baseline on SD3."""

import math

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, FlowMatchEulerDiscreteScheduler
from test_parrot_train import quick_args

from parrot.t2i_update import noised_samples, trained_steps
from parrot.train import ParrotTrainer
from parrot.train_config import load_train_config
from t2i.objective import TimestepDensity, is_flow_matching, noised_sample, training_timesteps
from t2i.tiny import sd_ddim_scheduler

X0, NOISE = (
    torch.randn(3, 4, 2, 2, generator=torch.Generator().manual_seed(0)),
    torch.randn(3, 4, 2, 2, generator=torch.Generator().manual_seed(1)),
)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_ddpm_family_noise_and_targets_are_the_closed_forms(prediction):
    scheduler = DDIMScheduler.from_config(sd_ddim_scheduler().config, prediction_type=prediction)
    t = torch.tensor([0, 500, 999])
    abar = scheduler.alphas_cumprod[t].view(3, 1, 1, 1)
    sample = noised_sample(scheduler, X0, NOISE, t)
    torch.testing.assert_close(sample.noisy, abar.sqrt() * X0 + (1 - abar).sqrt() * NOISE)
    expected = {"epsilon": NOISE, "v_prediction": abar.sqrt() * NOISE - (1 - abar).sqrt() * X0, "sample": X0}[prediction]
    torch.testing.assert_close(sample.target, expected)
    assert sample.timesteps is t and not is_flow_matching(scheduler)


def test_rectified_flow_noise_target_and_timestep():
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    t = torch.tensor([1000.0, 250.0, 30.0])
    sample = noised_sample(scheduler, X0, NOISE, t)
    sigma = torch.tensor([1.0, 0.25, 0.03]).view(3, 1, 1, 1)
    torch.testing.assert_close(sample.noisy, (1 - sigma) * X0 + sigma * NOISE)
    torch.testing.assert_close(sample.target, NOISE - X0)
    assert is_flow_matching(scheduler)


def test_a_perfect_velocity_takes_the_stock_euler_step_to_the_clean_latent():
    """The target's sign and scale are the sampler's: Euler from σ with v = target lands on x0 at σ = 0."""
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(1)  # one step: σ = 1 → 0
    t = scheduler.timesteps[:1].expand(3)
    sample = noised_sample(scheduler, X0, NOISE, t)
    torch.testing.assert_close(scheduler.step(sample.target, t[0], sample.noisy).prev_sample, X0, atol=1e-6, rtol=0)


def test_training_timesteps_follow_sd3_density_and_ddpm_uniform():
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    assert scheduler.set_timesteps(4) is None  # a used (inference) scheduler still trains on its training table
    got = training_timesteps(scheduler, 64, torch.Generator().manual_seed(3))
    u = torch.sigmoid(torch.randn(64, generator=torch.Generator().manual_seed(3)))
    s = 1 - torch.floor(u * 1000) / 1000
    torch.testing.assert_close(got, 1000 * 3 * s / (1 + 2 * s), atol=1e-3, rtol=0)  # SD3's shifted σ, ×1000
    uniform = training_timesteps(scheduler, 64, torch.Generator().manual_seed(3), TimestepDensity(weighting="uniform"))
    s = 1 - torch.floor(torch.rand(64, generator=torch.Generator().manual_seed(3)) * 1000) / 1000
    torch.testing.assert_close(uniform, 1000 * 3 * s / (1 + 2 * s), atol=1e-3, rtol=0)
    ddpm = training_timesteps(DDPMScheduler(), 64, torch.Generator().manual_seed(3))
    assert torch.equal(ddpm, torch.randint(1000, (64,), generator=torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="weighting='mode': choose 'logit_normal' or 'uniform'"):
        TimestepDensity(weighting="mode")


def test_rwr_trains_the_sd3_lora_on_flow_matching_targets(tmp_path):
    args = quick_args(tmp_path, "--model.pipeline", "builtin:tiny_sd3", "--sampling.eta", "0.7", "--t2i.estimator", "rwr",
                      "--t2i.inner_epochs", "1", "--selection.mode", "weighted", "--iterations", "1")  # fmt: skip
    trainer = ParrotTrainer(load_train_config(args))
    before = {k: v.detach().clone() for k, v in trainer.parts.trainable_state()["t2i"].items()}
    result = trainer.run_iteration(0)
    assert math.isfinite(result.metrics["t2i/loss"]) and result.metrics["t2i/loss"] > 0
    assert any(not torch.equal(before[k], v) for k, v in trainer.parts.trainable_state()["t2i"].items())
    # the regression pairs are the flow's: x = (1 − σ) x0 + σ ε and target ε − x0 at the recorded σ·1000
    rollout = result.rollout
    steps = trained_steps(trainer.parts, rollout, 0)
    noisy, target, t = noised_samples(trainer.parts, rollout, steps, 0)
    x0 = rollout.trajectory.latents[:, -1, None]
    sigma = (t / 1000).view(*t.shape, 1, 1, 1)
    torch.testing.assert_close(noisy, (1 - sigma) * x0 + sigma * (target + x0), atol=1e-5, rtol=0)
    assert torch.all(t > 1) and not torch.equal(t, t.round())  # σ·1000 of the shifted schedule, not DDPM step indices
