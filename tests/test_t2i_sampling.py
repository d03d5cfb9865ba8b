"""The sampler alone: a toy host that supplies only the seam (no pipeline, no UNet)."""

from types import SimpleNamespace

import torch

from t2i.ddim import ddim_step_with_log_prob
from t2i.sampling import SamplingMixin
from t2i.tiny import sd_ddim_scheduler
from t2i.trajectory import Conditioning


class ToyPolicy(SamplingMixin):
    """ε(x_t) = 0.1·x_t whatever the prompt; x_T drawn as (B, 2, 4, 4) standard normal."""

    device = torch.device("cpu")

    def __init__(self):
        self.scheduler = sd_ddim_scheduler()
        self.unet = SimpleNamespace(config=SimpleNamespace(sample_size=4, in_channels=2))
        self.pipeline = SimpleNamespace(vae_scale_factor=1, prepare_latents=self.prepare_latents)

    @staticmethod
    def prepare_latents(batch, channels, height, width, dtype, device, generator, latents):
        return torch.randn(batch, channels, height, width, generator=generator, dtype=dtype) if latents is None else latents

    def build_conditioning(self, conditions, guidance, negative_prompt):
        return Conditioning.from_groups([{"encoder_hidden_states": torch.zeros(len(conditions[0]), 1, 1)}], (1.0,), False)

    def predict_noise(self, latents, timesteps, conditioning, index=None):
        return 0.1 * latents

    def step(self, model_output, t, x, *, eta, generator=None, prev_sample=None):
        return ddim_step_with_log_prob(self.scheduler, model_output, t, x, eta=eta, generator=generator, prev_sample=prev_sample)

    def decode(self, latents):
        return latents[:, :1].expand(-1, 3, -1, -1).sigmoid()


def test_toy_host_samples_and_recomputes_its_own_log_probs():
    policy = ToyPolicy()
    trajectory = policy.sample(["a", "b"], num_inference_steps=3, generator=torch.Generator().manual_seed(0))
    assert trajectory.latents.shape == (2, 4, 2, 4, 4)
    assert trajectory.images.shape == (2, 3, 4, 4)
    assert torch.isfinite(trajectory.log_probs).all()
    torch.testing.assert_close(policy.log_probs(trajectory, [0, 1, 2]), trajectory.log_probs)
    torch.testing.assert_close(policy.log_probs(trajectory, torch.tensor([[2], [0]])), trajectory.log_probs[[0, 1], [2, 0]].view(2, 1))


def test_toy_host_without_log_probs_is_plain_ddim_with_nan_log_probs():
    trajectory = ToyPolicy().sample(
        ["a"], num_inference_steps=2, eta=0.0, compute_log_probs=False, generator=torch.Generator().manual_seed(0)
    )
    assert torch.isnan(trajectory.log_probs).all()
    assert torch.isfinite(trajectory.latents).all()
