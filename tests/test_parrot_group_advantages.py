"""GRPO-style group advantages for every selection mode, on hand-made groups with hand-computed numbers."""

import math
import statistics

import pytest
import torch

from parrot.selection import PerPromptStatTracker, SelectionConfig, compute_advantages, identifier_credit, parse_selection

NAMES = ["a", "b"]
# group 0: three images with distinct scores; group 1: a constant group (every image scores the same)
REWARDS = torch.tensor([[1.0, 0.0], [2.0, 2.0], [3.0, 1.0], [5.0, 5.0], [5.0, 5.0], [5.0, 5.0]])
GROUPS = torch.tensor([0, 0, 0, 1, 1, 1])
VALID = torch.ones_like(REWARDS, dtype=torch.bool)
C = math.sqrt(1.5)  # z-score of (1, 2, 3): (−C, 0, C)


def advantages(identifiers=None, **settings):
    config = SelectionConfig(**settings)
    return compute_advantages(REWARDS, VALID, ["p"] * 6, config, parse_selection(config, NAMES), PerPromptStatTracker(),
                              groups=GROUPS, identifiers=identifiers)  # fmt: skip


def z(values):
    mean, std = statistics.fmean(values), statistics.pstdev(values)
    return [(v - mean) / std for v in values]


def test_pareto_normalised_group_is_group_zscore_on_the_group_front():
    adv = advantages(reward_weighting="normalised", gradient_normalisation="group")
    # group 0: (1, 0) is dominated by (2, 2); P = {(2, 2), (3, 1)}; group 1: duplicates, all in P
    assert adv.selected.tolist() == [False, True, True, True, True, True] and adv.normaliser == 5
    expected = torch.tensor([[0.0, 0.0], [0.0, C], [C, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    torch.testing.assert_close(adv.values, expected, atol=1e-5, rtol=0)
    assert torch.equal(adv.values[3:], torch.zeros(3, 2))  # a constant group: exactly 0, not NaN


def test_pareto_push_down_keeps_only_the_below_mean_entries_of_dominated_images():
    adv = advantages(reward_weighting="normalised", gradient_normalisation="group", dominated="push_down")
    # the same front as above; the dominated (1, 0) scores z = (−C, −C) and keeps both (each below its mean): the
    # front's entries are unchanged and every image is weighed, so the loss divides by N, not |P|
    assert adv.selected.tolist() == [False, True, True, True, True, True] and adv.normaliser == 6
    expected = torch.tensor([[-C, -C], [0.0, C], [C, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    torch.testing.assert_close(adv.values, expected, atol=1e-5, rtol=0)
    # a dominated image above its mean on one reward is pushed down by the other alone: (2, 0) under (3, 1), (1, 2)
    config = SelectionConfig(dominated="push_down")
    rewards = torch.tensor([[2.0, 0.0], [3.0, 1.0], [1.0, 2.0]])
    adv = compute_advantages(rewards, torch.ones_like(rewards, dtype=torch.bool), ["p"] * 3, config, parse_selection(config, NAMES),
                             groups=torch.zeros(3, dtype=torch.long))  # fmt: skip
    torch.testing.assert_close(adv.values[0], torch.tensor([0.0, -C]), atol=1e-5, rtol=0)  # z_a = 0, z_b = −C


@pytest.mark.parametrize("settings", [{"reward_weighting": "raw"}, {"mode": "weighted"}, {"gradient_normalisation": "none"}])
def test_push_down_outside_normalised_pareto_is_a_config_error(settings):
    with pytest.raises(ValueError, match="dominated='push_down' needs mode 'pareto'"):
        SelectionConfig(dominated="push_down", **settings)


def test_single_reward_group_advantage_is_its_group_zscore():
    adv = advantages(mode="single:b", reward_weighting="normalised", gradient_normalisation="group")
    expected = torch.tensor([[0.0, -C], [0.0, C], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    torch.testing.assert_close(adv.values, expected, atol=1e-5, rtol=0)
    assert adv.selected.all() and adv.normaliser == 6


def test_weighted_grpo_sums_the_rewards_then_zscores_the_sum_within_the_group():
    settings = dict(mode="weighted", weights=(0.75, 0.25), reward_weighting="normalised", gradient_normalisation="group",
                    selection_normalisation="none")  # fmt: skip
    adv = advantages(**settings)
    s = [0.75 * 1 + 0.25 * 0, 0.75 * 2 + 0.25 * 2, 0.75 * 3 + 0.25 * 1]  # 0.75, 2.0, 2.5
    torch.testing.assert_close(adv.values.sum(1), torch.tensor([*z(s), 0.0, 0.0, 0.0]), atol=1e-5, rtol=0)
    # not the former Σ_k w_k z_g(r_k) = (−C, 0.25 C, 0.75 C)
    assert abs(adv.values[0].sum().item() + C) > 0.1
    # each reward's share: its centred term w_k (r_ik − mean_g) over std_g(s)
    sigma = statistics.pstdev(s)
    shares = torch.tensor([[-0.75, -0.25], [0.0, 0.25], [0.75, 0.0]]) / sigma
    torch.testing.assert_close(adv.values[:3], shares, atol=1e-5, rtol=0)
    assert torch.equal(adv.values[3:], torch.zeros(3, 2))
    # identifiers on (group 0 sampled for reward a, group 1 for b): each image keeps its own reward's share
    credited = advantages(identifiers=torch.tensor([0, 0, 0, 1, 1, 1]), **settings)
    torch.testing.assert_close(credited.values[:3], shares * torch.tensor([1.0, 0.0]), atol=1e-5, rtol=0)


def test_weighted_raw_is_the_ws_sum_normalised_batch_rescales_it_and_the_default_zscores_it_in_the_group():
    raw = advantages(mode="weighted", weights=(0.75, 0.25), reward_weighting="raw")  # with selection_normalisation batch: Σ_k w_k z_B(r_k)
    za, zb = z(REWARDS[:, 0].tolist()), z(REWARDS[:, 1].tolist())
    torch.testing.assert_close(raw.values, torch.tensor([za, zb]).T * torch.tensor([0.75, 0.25]), atol=1e-5, rtol=0)
    normalised = advantages(mode="weighted", weights=(0.75, 0.25), reward_weighting="normalised", gradient_normalisation="batch")
    s = raw.values.sum(1).tolist()
    torch.testing.assert_close(normalised.values.sum(1), torch.tensor(z(s)), atol=1e-5, rtol=0)
    ratio = normalised.values / raw.values.where(raw.values != 0, torch.ones(()))
    torch.testing.assert_close(ratio[raw.values != 0], torch.full(((raw.values != 0).sum(),), 1 / statistics.pstdev(s)), atol=1e-4, rtol=0)
    # the defaults (normalised + group, since issue 13): z_g of the same sum, Flow-GRPO's multi-reward advantage
    default = advantages(mode="weighted", weights=(0.75, 0.25))
    torch.testing.assert_close(default.values.sum(1), torch.tensor([*z(s[:3]), 0.0, 0.0, 0.0]), atol=1e-5, rtol=0)


def test_gdpo_zscores_each_reward_in_its_group_then_the_weighted_sum_over_the_batch():
    adv = advantages(mode="gdpo", weights=(0.75, 0.25))
    t = [-0.75 * C - 0.25 * C, 0.25 * C, 0.75 * C, 0.0, 0.0, 0.0]  # Σ_k w_k z_g(r_k)
    expected = z(t)  # ≈ (−1.9215, 0.4804, 1.4412, 0, 0, 0)
    assert expected[0] == pytest.approx(-1 / math.sqrt(1.625 / 6))
    torch.testing.assert_close(adv.values.sum(1), torch.tensor(expected), atol=1e-5, rtol=0)
    torch.testing.assert_close(adv.values[0], torch.tensor([0.75 * -C, 0.25 * -C]) / statistics.pstdev(t), atol=1e-5, rtol=0)
    assert adv.selected.all() and adv.normaliser == 6


def test_scalar_advantage_clip_scales_the_shares_of_an_image_together():
    adv = advantages(mode="gdpo", weights=(0.75, 0.25), advantage_clip=1.0)
    free = advantages(mode="gdpo", weights=(0.75, 0.25))
    torch.testing.assert_close(adv.values.sum(1)[:3], torch.tensor([-1.0, free.values[1].sum().item(), 1.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(adv.values[0], free.values[0] / free.values[0].sum().abs(), atol=1e-6, rtol=0)


def test_weighted_per_prompt_splits_the_tracked_advantage_by_the_weights():
    adv = advantages(mode="weighted", weights=(0.75, 0.25), reward_weighting="normalised", gradient_normalisation="per_prompt",
                     selection_normalisation="none")  # fmt: skip
    s = (REWARDS * torch.tensor([0.75, 0.25])).sum(1).tolist()  # 6 scores of one prompt: its own history (min_count 4)
    torch.testing.assert_close(adv.values.sum(1), torch.tensor(z(s)), atol=1e-5, rtol=0)
    torch.testing.assert_close(adv.values[:, 0], 3 * adv.values[:, 1], atol=1e-6, rtol=0)


def test_nan_reward_in_a_scalar_mode_gets_zero_share_and_finite_advantages():
    rewards = REWARDS.clone()
    rewards[0, 1] = float("nan")
    for mode in ("weighted", "gdpo"):
        config = SelectionConfig(mode=mode, reward_weighting="normalised", gradient_normalisation="group")
        adv = compute_advantages(rewards, torch.isfinite(rewards), ["p"] * 6, config, parse_selection(config, NAMES), groups=GROUPS)
        assert torch.isfinite(adv.values).all() and adv.values[0, 1] == 0


def test_identifier_contrast_pushes_each_image_against_the_other_rewards_by_lambda_over_k_minus_1():
    values = torch.tensor([[1.0, 0.0, 2.0], [3.0, 1.0, 0.0], [2.0, 2.0, 1.0]])  # A (N = 3, K = 3) before credit
    # image 0 sampled for reward 0, image 1 for reward 2, image 2 for reward 1; λ = 0.5, K − 1 = 2: others × −0.25
    credited = identifier_credit(values, torch.tensor([0, 2, 1]), contrast=0.5)
    expected = torch.tensor([[1.0, 0.0, -0.5], [-0.75, -0.25, 0.0], [-0.5, 2.0, -0.25]])
    torch.testing.assert_close(credited, expected)
    assert torch.equal(identifier_credit(values, torch.tensor([0, 2, 1])), values * torch.eye(3)[[0, 2, 1]])  # λ = 0: the paper


def test_full_contrast_cancels_the_common_update_when_identifiers_change_no_image():
    # the same 3 images (same noise, identifiers invisible) under each of K = 2 identifiers, one group per identifier:
    # with λ = 1 the advantages summed over identifiers are 0 for every image, so the update has no common part;
    # with λ = 0 (the paper) they are z(r_a) + z(r_b) per image, on the group front
    rewards = torch.tensor([[1.0, 0.0], [2.0, 2.0], [3.0, 1.0]]).repeat(2, 1)
    groups, identifiers = torch.tensor([0, 0, 0, 1, 1, 1]), torch.tensor([0, 0, 0, 1, 1, 1])
    config = SelectionConfig(reward_weighting="normalised", gradient_normalisation="group")

    def summed(contrast):
        adv = compute_advantages(rewards, torch.ones_like(rewards, dtype=torch.bool), ["p"] * 6, config,
                                 parse_selection(config, NAMES), groups=groups, identifiers=identifiers,
                                 identifier_contrast=contrast)  # fmt: skip
        return adv.values.sum(1).view(2, 3).sum(0)

    torch.testing.assert_close(summed(1.0), torch.zeros(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(summed(0.0), torch.tensor([0.0, C, C]), atol=1e-5, rtol=0)  # P = {(2,2), (3,1)}


def test_identifier_contrast_outside_0_1_is_a_config_error():
    from parrot.identifiers import IdentifierConfig

    with pytest.raises(ValueError, match=r"contrast=1.5 must lie in \[0, 1\]"):
        IdentifierConfig(contrast=1.5)
