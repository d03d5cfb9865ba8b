"""The DDIM step with log-prob: against scipy's Gaussian density and diffusers' own step."""

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler
from scipy.stats import norm

from t2i.ddim import ddim_step_with_log_prob
from t2i.tiny import sd_ddim_scheduler


def sd_scheduler(prediction_type="epsilon", steps=10, **overrides):
    scheduler = sd_ddim_scheduler(prediction_type=prediction_type, **overrides)
    scheduler.set_timesteps(steps)
    return scheduler


def random_inputs(seed=0, shape=(3, 4, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


@pytest.mark.parametrize("step_index", [0, 4, 9])
def test_log_prob_equals_independent_gaussian_density(step_index):
    scheduler = sd_scheduler()
    model_output, sample = random_inputs()
    t = scheduler.timesteps[step_index]
    step = ddim_step_with_log_prob(scheduler, model_output, t, sample, eta=1.0, generator=torch.Generator().manual_seed(1))
    x = step.prev_sample.double().numpy()
    mean = step.mean.double().numpy()
    std = float(step.std.flatten()[0])
    expected = norm.logpdf(x, loc=mean, scale=std).reshape(3, -1).mean(axis=1)
    np.testing.assert_allclose(step.log_prob.numpy(), expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(step.log_prob_sum.numpy(), expected * x[0].size, rtol=1e-5)


def test_std_is_the_ddpm_posterior_std_at_eta_one():
    scheduler = sd_scheduler()
    model_output, sample = random_inputs()
    t = int(scheduler.timesteps[3])
    prev_t = t - 1000 // 10
    a_t, a_prev = scheduler.alphas_cumprod[t].item(), scheduler.alphas_cumprod[prev_t].item()
    expected = ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)) ** 0.5
    for eta in (1.0, 0.5):
        step = ddim_step_with_log_prob(scheduler, model_output, t, sample, eta=eta)
        assert step.std.flatten()[0].item() == pytest.approx(eta * expected, rel=1e-5)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_prev_sample_matches_diffusers_step(prediction_type):
    scheduler = sd_scheduler(prediction_type)
    model_output, sample = random_inputs()
    for t in scheduler.timesteps[[0, 5, 9]]:
        ours = ddim_step_with_log_prob(scheduler, model_output, t, sample, eta=0.7, generator=torch.Generator().manual_seed(3))
        theirs = scheduler.step(model_output, t, sample, eta=0.7, generator=torch.Generator().manual_seed(3)).prev_sample
        torch.testing.assert_close(ours.prev_sample, theirs, atol=1e-6, rtol=0)


def test_clip_sample_is_applied_like_diffusers():
    scheduler = sd_scheduler(clip_sample_range=0.5, clip_sample=True)
    model_output, sample = random_inputs()
    t = scheduler.timesteps[2]
    ours = ddim_step_with_log_prob(scheduler, 3 * model_output, t, sample, eta=1.0, generator=torch.Generator().manual_seed(0))
    theirs = scheduler.step(3 * model_output, t, sample, eta=1.0, generator=torch.Generator().manual_seed(0)).prev_sample
    torch.testing.assert_close(ours.prev_sample, theirs, atol=1e-6, rtol=0)


def test_per_sample_timesteps_equal_one_timestep_at_a_time():
    scheduler = sd_scheduler()
    model_output, sample = random_inputs()
    prev = torch.randn_like(sample)
    ts = scheduler.timesteps[[1, 6, 9]]
    batched = ddim_step_with_log_prob(scheduler, model_output, ts, sample, eta=1.0, prev_sample=prev)
    for i, t in enumerate(ts):
        single = ddim_step_with_log_prob(scheduler, model_output[i : i + 1], t, sample[i : i + 1], eta=1.0, prev_sample=prev[i : i + 1])
        torch.testing.assert_close(batched.log_prob[i : i + 1], single.log_prob, atol=1e-6, rtol=0)
        torch.testing.assert_close(batched.mean[i : i + 1], single.mean, atol=1e-6, rtol=0)


def test_log_prob_is_float32_for_half_precision_inputs():
    scheduler = sd_scheduler()
    model_output, sample = random_inputs()
    step = ddim_step_with_log_prob(scheduler, model_output.bfloat16(), scheduler.timesteps[0], sample.bfloat16(), eta=1.0)
    assert step.log_prob.dtype == torch.float32 and step.prev_sample.dtype == torch.float32


@pytest.mark.parametrize("eta", [0.0, -0.5])
def test_non_positive_eta_is_refused_with_its_value(eta):
    scheduler = sd_scheduler()
    model_output, sample = random_inputs()
    with pytest.raises(ValueError, match=f"eta={eta}"):
        ddim_step_with_log_prob(scheduler, model_output, scheduler.timesteps[0], sample, eta=eta)


def test_scheduler_without_timesteps_is_refused():
    scheduler = DDIMScheduler()
    model_output, sample = random_inputs()
    with pytest.raises(ValueError, match="set_timesteps"):
        ddim_step_with_log_prob(scheduler, model_output, 999, sample, eta=1.0)
