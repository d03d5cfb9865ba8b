"""Conditioning and Trajectory alone, on hand-made tensors."""

from dataclasses import replace

import pytest
import torch

from t2i import Conditioning, Trajectory


def make_conditioning(batch: int) -> Conditioning:
    uncond = {"encoder_hidden_states": torch.zeros(batch, 3, 2)}
    cond = {"encoder_hidden_states": torch.arange(batch, dtype=torch.float32).view(batch, 1, 1).expand(batch, 3, 2) + 1}
    return Conditioning.from_groups([uncond, cond], (7.5,), has_unconditional=True)


def make_trajectory(batch: int, eta: float = 1.0) -> Trajectory:
    return Trajectory(
        latents=torch.randn(batch, 3, 4, 2, 2),
        timesteps=torch.tensor([501, 1]),
        log_probs=torch.randn(batch, 2),
        images=torch.rand(batch, 3, 4, 4),
        conditioning=make_conditioning(batch),
        prompts=[f"p{i}" for i in range(batch)],
        original_prompts=[f"c{i}" for i in range(batch)],
        eta=eta,
        num_inference_steps=2,
    )


def test_conditioning_groups_stack_and_flatten_group_major():
    conditioning = make_conditioning(3)
    assert (conditioning.num_groups, conditioning.batch_size) == (2, 3)
    flat = conditioning.flat(torch.tensor([2, 0]))["encoder_hidden_states"]
    assert flat.shape == (4, 3, 2)
    assert flat[:, 0, 0].tolist() == [0.0, 0.0, 3.0, 1.0]  # ∅ for samples 2 and 0, then their c


def test_select_then_concatenate_gives_the_batch_back():
    trajectory = make_trajectory(4)
    joined = Trajectory.concatenate([trajectory.select([0, 1]), trajectory.select([2, 3])])
    torch.testing.assert_close(joined.latents, trajectory.latents)
    torch.testing.assert_close(joined.log_probs, trajectory.log_probs)
    torch.testing.assert_close(joined.conditioning.embeds["encoder_hidden_states"], trajectory.conditioning.embeds["encoder_hidden_states"])
    assert (joined.prompts, joined.original_prompts) == (trajectory.prompts, trajectory.original_prompts)
    assert trajectory.log_probs_sum.shape == (4, 2)


def test_concatenate_refuses_trajectories_of_different_eta_or_sde_window():
    with pytest.raises(ValueError, match="different timesteps, eta or SDE window"):
        Trajectory.concatenate([make_trajectory(1, eta=1.0), make_trajectory(1, eta=0.5)])
    windowed = [replace(make_trajectory(1), stochastic=torch.tensor(mask)) for mask in ([True, False], [True, False], [False, True])]
    assert Trajectory.concatenate(windowed[:2]).stochastic.tolist() == [True, False]  # one window: kept, and selected rows keep it
    assert windowed[0].select([0]).stochastic.tolist() == [True, False]
    for pair in ([windowed[0], windowed[2]], [windowed[0], make_trajectory(1)]):
        with pytest.raises(ValueError, match="different timesteps, eta or SDE window"):
            Trajectory.concatenate(pair)
