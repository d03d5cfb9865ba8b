"""Pieces of the tiny Stable Diffusion recipe that can be checked by hand."""

import pytest
import torch

from shapes.sd import ShapesSDConfig, build_unet, build_vae, foreground_weights


def test_foreground_weights_mark_exactly_the_shape_pixels():
    images = torch.ones(1, 3, 8, 8)  # white in [-1, 1]
    images[0, :, 3, 4] = torch.tensor([0.7, -0.7, -0.7])  # one red pixel
    weights = foreground_weights(images, 10.0)
    assert weights.shape == (1, 1, 8, 8)
    assert weights[0, 0, 3, 4] == 10.0 and weights.sum() == 63 + 10.0


def test_vae_posterior_starts_nearly_deterministic_and_latent_is_16x16():
    config = ShapesSDConfig(vae_channels=(8, 16), initial_logvar=-8.0)
    vae = build_vae(config)
    posterior = vae.encode(torch.zeros(2, 3, 32, 32)).latent_dist
    assert posterior.mean.shape == (2, 4, 16, 16)
    torch.testing.assert_close(posterior.logvar, torch.full_like(posterior.logvar, -8.0))


def test_unet_levels_follow_the_cross_attention_flags():
    config = ShapesSDConfig(unet_channels=(16, 32), unet_cross_attention=(False, True), unet_heads=2)
    unet = build_unet(config, latent_size=16, cross_attention_dim=32)
    assert unet.config.down_block_types == ("DownBlock2D", "CrossAttnDownBlock2D")
    assert unet.config.up_block_types == ("CrossAttnUpBlock2D", "UpBlock2D")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"unet_cross_attention": (True,)}, "one entry per level"),
        ({"unet_cross_attention": (False, False, False)}, "could not read the prompt"),
        ({"uncond_probability": 1.0}, "uncond_probability=1.0"),
        ({"unet_steps": 0}, "unet_steps=0"),
    ],
)
def test_bad_config_values_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ShapesSDConfig(**kwargs)
