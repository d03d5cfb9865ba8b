"""Flow-GRPO's SDE step against scipy's Gaussian, the stock FlowMatchEulerDiscreteScheduler and a hand-written Euler step."""

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from scipy.stats import norm

from t2i.flow import flow_sde_step_with_log_prob, sde_noise_std


@pytest.fixture
def scheduler():
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    scheduler.set_timesteps(6)
    return scheduler


def tensors(seed, batch=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 4, 3, 3, generator=g), torch.randn(batch, 4, 3, 3, generator=g)


def test_log_prob_is_scipys_gaussian_logpdf_of_the_flow_grpo_mean_and_std(scheduler):
    v, x = tensors(0)
    i = 2
    t = scheduler.timesteps[i]
    step = flow_sde_step_with_log_prob(scheduler, v, t, x, noise_level=0.7, generator=torch.Generator().manual_seed(1))
    sigma, sigma_prev = float(scheduler.sigmas[i]), float(scheduler.sigmas[i + 1])
    dt = sigma_prev - sigma
    noise_std = 0.7 * np.sqrt(sigma / (1 - sigma))
    xn, vn = x.double().numpy(), v.double().numpy()
    mean = xn + (vn + noise_std**2 / (2 * sigma) * (xn + (1 - sigma) * vn)) * dt
    std = noise_std * np.sqrt(-dt)
    np.testing.assert_allclose(step.mean.numpy(), mean, atol=1e-5)
    np.testing.assert_allclose(float(step.std.flatten()[0]), std, rtol=1e-6)
    expected = norm.logpdf(step.prev_sample.double().numpy(), loc=mean, scale=std)
    np.testing.assert_allclose(step.log_prob.numpy(), expected.mean(axis=(1, 2, 3)), atol=1e-5)
    np.testing.assert_allclose(step.log_prob_sum.numpy(), expected.sum(axis=(1, 2, 3)), rtol=1e-5)
    # a recorded x_{t-1} is scored, not redrawn
    again = flow_sde_step_with_log_prob(scheduler, v, t, x, noise_level=0.7, prev_sample=step.prev_sample)
    torch.testing.assert_close(again.log_prob, step.log_prob, atol=1e-6, rtol=0)


def test_first_step_at_sigma_one_uses_the_second_sigma_and_constant_schedule_is_danceGRPOs(scheduler):
    assert float(scheduler.sigmas[0]) == 1.0
    s1 = float(scheduler.sigmas[1])
    assert float(sde_noise_std(torch.tensor(1.0), 0.5, "flow_grpo", s1)) == pytest.approx(0.5 * np.sqrt(1 / (1 - s1)))
    v, x = tensors(1)
    step = flow_sde_step_with_log_prob(scheduler, v, scheduler.timesteps[0], x, noise_level=0.5, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(step.log_prob).all()
    const = flow_sde_step_with_log_prob(scheduler, v, scheduler.timesteps[3], x, noise_level=0.3, noise_schedule="constant")
    dt = float(scheduler.sigmas[4] - scheduler.sigmas[3])
    assert float(const.std.flatten()[0]) == pytest.approx(0.3 * np.sqrt(-dt), rel=1e-6)
    with pytest.raises(ValueError, match="noise_schedule"):
        flow_sde_step_with_log_prob(scheduler, v, scheduler.timesteps[3], x, noise_level=0.3, noise_schedule="ddim")


def hand_sigmas(steps, shift=3.0, train=1000):
    """SD3's schedule written out: s linear from 1 to the shifted σ_min = shift·(1/T)/(1 + (shift − 1)/T), shifted again, then 0."""
    shifted = lambda s: shift * s / (1 + (shift - 1) * s)  # noqa: E731
    return np.append(shifted(np.linspace(1.0, shifted(1 / train), steps)), 0.0)


def test_zero_noise_is_the_stock_scheduler_step_and_an_independent_euler_step(scheduler):
    v0, x = tensors(2)
    x_stock, x_hand = x.clone(), x.double().numpy()
    sigmas = hand_sigmas(6)
    np.testing.assert_allclose(scheduler.sigmas.numpy(), sigmas, atol=1e-6)
    for i, t in enumerate(scheduler.timesteps):
        ours = flow_sde_step_with_log_prob(scheduler, 0.3 * x + v0, t, x, noise_level=0.0)
        stock = scheduler.step(0.3 * x_stock + v0, t, x_stock, return_dict=False)[0]
        torch.testing.assert_close(ours.prev_sample, stock, atol=1e-6, rtol=0)
        assert torch.isnan(ours.log_prob).all()
        x_hand = x_hand + (sigmas[i + 1] - sigmas[i]) * (0.3 * x_hand + v0.double().numpy())  # Euler on dx/dσ = v(x)
        x, x_stock = ours.prev_sample, stock
    np.testing.assert_allclose(x.numpy(), x_hand, atol=1e-5)


def test_per_sample_timesteps_equal_per_step_calls(scheduler):
    v, x = tensors(3, batch=3)
    prev = torch.randn_like(x)
    index = [4, 0, 2]
    t = scheduler.timesteps[index]
    joint = flow_sde_step_with_log_prob(scheduler, v, t, x, noise_level=0.7, prev_sample=prev)
    for b, i in enumerate(index):
        one = flow_sde_step_with_log_prob(
            scheduler, v[b : b + 1], scheduler.timesteps[i], x[b : b + 1], noise_level=0.7, prev_sample=prev[b : b + 1]
        )
        torch.testing.assert_close(joint.log_prob[b : b + 1], one.log_prob, atol=1e-6, rtol=0)
        torch.testing.assert_close(joint.mean[b : b + 1], one.mean, atol=1e-6, rtol=0)
        torch.testing.assert_close(joint.std[b].flatten(), one.std.flatten(), atol=1e-7, rtol=0)
    with pytest.raises(ValueError, match="noise_level"):
        flow_sde_step_with_log_prob(scheduler, v, t, x, noise_level=-0.1)
