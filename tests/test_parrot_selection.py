"""Non-dominated selection, advantages per mode, normalisation, NaN masking, the T2I loss formula."""

import math

import pytest
import torch

from parrot.losses import gaussian_kl, t2i_policy_loss
from parrot.selection import (
    PerPromptStatTracker,
    SelectionConfig,
    compute_advantages,
    non_dominated_mask,
    parse_selection,
    zscore_columns,
)

NAMES = ["a", "b"]


def test_non_dominated_hand_matrix():
    rewards = torch.tensor([[1.0, 2.0], [2.0, 1.0], [0.5, 0.5], [2.0, 2.0], [0.0, 3.0]])
    # (2,2) dominates (1,2), (2,1), (0.5,0.5); (0,3) is better on b than anyone
    assert non_dominated_mask(rewards).tolist() == [False, False, False, True, True]


def test_ties_and_duplicates_are_kept_and_weak_domination_counts():
    rewards = torch.tensor([[1.0, 2.0], [1.0, 2.0], [2.0, 1.0], [1.0, 1.0], [2.0, 1.0]])
    # duplicates do not dominate each other: both copies stay; (1,1) is dominated by (1,2) (≥ both, > on one)
    assert non_dominated_mask(rewards).tolist() == [True, True, True, False, True]


def test_one_reward_keeps_every_maximum():
    rewards = torch.tensor([[1.0], [3.0], [3.0], [2.0]])
    assert non_dominated_mask(rewards).tolist() == [False, True, True, False]


def test_all_equal_rows_are_all_selected_and_bad_input_refused():
    assert non_dominated_mask(torch.ones(3, 2)).all()
    with pytest.raises(ValueError, match="NaN"):
        non_dominated_mask(torch.tensor([[float("nan"), 1.0]]))
    with pytest.raises(ValueError, match="non-empty"):
        non_dominated_mask(torch.zeros(0, 2))


def test_pareto_advantages_zero_outside_p_and_normaliser_is_size_of_p():
    rewards = torch.tensor([[1.0, 2.0], [2.0, 1.0], [0.0, 0.0], [0.5, 0.5]])
    config = SelectionConfig(gradient_normalisation="none", advantage_clip=100)
    adv = compute_advantages(rewards, torch.ones_like(rewards, dtype=torch.bool), ["p"] * 4, config, parse_selection(config, NAMES))
    assert adv.selected.tolist() == [True, True, False, False]
    assert adv.normaliser == 2
    assert torch.equal(adv.values, torch.tensor([[1.0, 2.0], [2.0, 1.0], [0.0, 0.0], [0.0, 0.0]]))


def test_the_default_is_the_group_zscore_on_each_group_front():
    """Default SelectionConfig: A[i, k] = z_g(r_k)_i·1[i ∈ P_g] (reward_weighting normalised, gradient_normalisation group)."""
    config = SelectionConfig()
    assert (config.mode, config.reward_weighting, config.gradient_normalisation) == ("pareto", "normalised", "group")
    # group 0: (2, 1) is dominated by (2, 2) and (4, 1), so P_0 = rows 0-2; a: mean 2, std √2; b: mean 2, std √1.5.
    # group 1, ten times the scale: (10, 10) and (20, 5) trade off, both in P_1, each column z-scores to ∓1
    rewards = torch.tensor([[4.0, 1.0], [0.0, 4.0], [2.0, 2.0], [2.0, 1.0], [10.0, 10.0], [20.0, 5.0]])
    groups = torch.tensor([0, 0, 0, 0, 1, 1])
    valid = torch.ones_like(rewards, dtype=torch.bool)
    adv = compute_advantages(rewards, valid, ["p"] * 6, config, parse_selection(config, NAMES), groups=groups)
    assert adv.selected.tolist() == [True, True, True, False, True, True] and adv.normaliser == 5
    a, b = math.sqrt(2.0), math.sqrt(1.5)
    expected = torch.tensor([[2 / a, -1 / b], [-2 / a, 2 / b], [0.0, 0.0], [0.0, 0.0], [-1.0, 1.0], [1.0, -1.0]])
    torch.testing.assert_close(adv.values, expected, atol=1e-5, rtol=0)  # (the z-score's eps 1e-6 in the std)
    raw = SelectionConfig(reward_weighting="raw")  # the paper's: r_k on P, in the rewards' own units
    adv = compute_advantages(rewards, valid, ["p"] * 6, raw, parse_selection(raw, NAMES), groups=groups)
    assert adv.values[[0, 3, 5]].tolist() == [[4.0, 1.0], [0.0, 0.0], [5.0, 5.0]]  # clipped at advantage_clip 5


def test_weighted_and_single_modes_reduce_to_expected_advantages():
    rewards = torch.tensor([[1.0, 4.0], [3.0, 0.0], [2.0, 2.0]])
    valid = torch.ones_like(rewards, dtype=torch.bool)
    z = zscore_columns(rewards.double()).float()
    weighted = SelectionConfig(mode="weighted", weights=(0.7, 0.3), reward_weighting="raw")  # the WS baselines' Σ_k w_k z_B(r_k)
    adv = compute_advantages(rewards, valid, ["p"] * 3, weighted, parse_selection(weighted, NAMES))
    assert torch.allclose(adv.values, z * torch.tensor([0.7, 0.3]), atol=1e-6)
    assert adv.normaliser == 3 and adv.selected.all()
    single = SelectionConfig(mode="single:b", gradient_normalisation="none")
    adv = compute_advantages(rewards, valid, ["p"] * 3, single, parse_selection(single, NAMES))
    assert torch.equal(adv.values, torch.tensor([[0.0, 4.0], [0.0, 0.0], [0.0, 2.0]]))
    equal = SelectionConfig(mode="weighted", gradient_normalisation="none", selection_normalisation="none")
    adv = compute_advantages(rewards, valid, ["p"] * 3, equal, parse_selection(equal, NAMES))
    assert torch.allclose(adv.values, rewards * 0.5)


def test_advantage_clip_and_selection_errors_name_the_setting():
    config = SelectionConfig(gradient_normalisation="none", advantage_clip=1.5)
    rewards = torch.tensor([[10.0, -10.0]])
    adv = compute_advantages(rewards, torch.ones(1, 2, dtype=torch.bool), ["p"], config, parse_selection(config, NAMES))
    assert adv.values.tolist() == [[1.5, -1.5]]
    with pytest.raises(ValueError, match="'single:c'.*not among"):
        parse_selection(SelectionConfig(mode="single:c"), NAMES)
    with pytest.raises(ValueError, match="weights has 3"):
        parse_selection(SelectionConfig(mode="weighted", weights=(1, 1, 1)), NAMES)
    with pytest.raises(ValueError, match="mode='best'"):
        SelectionConfig(mode="best")


def test_nan_reward_gets_zero_advantage_and_never_reaches_the_gradient():
    rewards = torch.tensor([[float("nan"), 5.0], [1.0, 2.0], [2.0, 1.0]])
    valid = torch.isfinite(rewards)
    for mode in ("pareto", "weighted", "single:a"):
        config = SelectionConfig(mode=mode)
        adv = compute_advantages(rewards, valid, ["p"] * 3, config, parse_selection(config, NAMES))
        assert torch.isfinite(adv.values).all() and adv.values[0, 0] == 0
        log_probs = torch.zeros(3, 4, requires_grad=True)
        t2i_policy_loss(log_probs, adv.values.sum(1), adv.normaliser).loss.backward()
        assert torch.isfinite(log_probs.grad).all()
    # the NaN image ranks as the worst on a (1.0) but is the best on b: in P, dominating (1, 2)
    config = SelectionConfig(gradient_normalisation="none")
    adv = compute_advantages(rewards, valid, ["p"] * 3, config, parse_selection(config, NAMES))
    assert adv.selected.tolist() == [True, False, True] and adv.values[0].tolist() == [0.0, 5.0]


def test_per_prompt_tracker_uses_prompt_history_after_min_count():
    tracker = PerPromptStatTracker(buffer_size=8, min_count=3)
    rewards = torch.tensor([[1.0], [2.0], [3.0], [10.0]]).double()
    valid = torch.ones_like(rewards, dtype=torch.bool)
    out = tracker.normalise(["x", "x", "x", "y"], rewards, valid)
    # "x" has 3 scores: its own mean 2, std sqrt(2/3); "y" falls back to the batch statistics
    assert math.isclose(float(out[0, 0]), (1 - 2) / (math.sqrt(2 / 3) + 1e-6), rel_tol=1e-6)
    assert math.isclose(float(out[3, 0]), float(zscore_columns(rewards)[3, 0]), rel_tol=1e-6)
    restored = PerPromptStatTracker(8, 3)
    restored.load_state_dict(tracker.state_dict())
    assert restored.state_dict() == tracker.state_dict() == {"x": [[1.0, 2.0, 3.0]], "y": [[10.0]]}


def test_t2i_loss_equals_formula_on_hand_example():
    # two images in P with advantages per reward; grad wrt log p(x_{t-1}|x_t, c_k) is -A[i,k]/|P|
    advantages = torch.tensor([[0.5, -1.0], [2.0, 0.25]])
    log_probs = torch.tensor([[[-1.0, -2.0], [-0.5, -0.1]], [[-3.0, -1.0], [-2.0, -2.0]]], requires_grad=True)  # (i, k, s)
    loss = sum(t2i_policy_loss(log_probs[:, k], advantages[:, k], normaliser=2).loss for k in range(2))
    expected = -(advantages[:, :, None] * log_probs).sum() / 2
    assert torch.allclose(loss, expected)
    loss.backward()
    assert torch.allclose(log_probs.grad, (-advantages / 2)[:, :, None].expand(-1, -1, 2))


def test_is_loss_matches_sf_gradient_at_ratio_one_and_clips_outside():
    adv = torch.tensor([1.0, -2.0])
    lp = torch.tensor([[-1.0, -2.0], [-0.5, -0.3]], requires_grad=True)
    t2i_policy_loss(lp, adv, 2, old_log_probs=lp.detach(), clip_range=0.2).loss.backward()
    is_grad = lp.grad.clone()
    lp.grad = None
    t2i_policy_loss(lp, adv, 2).loss.backward()
    assert torch.allclose(is_grad, lp.grad)
    lp.grad = None
    result = t2i_policy_loss(lp, adv, 2, old_log_probs=lp.detach() - 1.0, clip_range=0.2)  # ratio e > 1.2
    result.loss.backward()
    assert result.clip_fraction == 1.0
    assert lp.grad[0].abs().sum() == 0 and lp.grad[1].abs().sum() > 0  # positive A clipped; negative A not


def test_gaussian_kl_closed_form():
    mean, base, std = torch.ones(2, 3), torch.zeros(2, 3), torch.full((2, 1), 2.0)
    assert torch.allclose(gaussian_kl(mean, base, std), torch.full((2,), 1 / 8))


def test_policy_gradient_step_raises_log_prob_of_positive_advantage_trajectory(policy):
    from t2i import Guidance, LoraSettings

    params = policy.add_lora(LoraSettings(rank=4))
    trajectory = policy.sample(["a red circle", "a blue square"], guidance=Guidance.cfg(3.0), num_inference_steps=3,
                               generator=torch.Generator().manual_seed(0))  # fmt: skip
    steps = torch.arange(3)
    with torch.no_grad():
        before = policy.log_probs(trajectory, steps).sum(1)
    optimizer = torch.optim.SGD(params, lr=1e-2)
    for _ in range(3):
        optimizer.zero_grad()
        t2i_policy_loss(policy.log_probs(trajectory, steps), torch.tensor([1.0, -1.0]), 2).loss.backward()
        optimizer.step()
    with torch.no_grad():
        change = policy.log_probs(trajectory, steps).sum(1) - before
    assert change[0] > 0 > change[1]


def test_identifier_templates_are_formats_and_must_tell_rewards_apart():
    from parrot.identifiers import IdentifierConfig, with_identifiers

    short = IdentifierConfig(template="{name:.1}")
    assert with_identifiers("a red circle", ["laion_aesthetic", "sentiment"], short.template) == "l s, a red circle"
    short.check_distinct(["laion_aesthetic", "preference", "clip_score", "sentiment"])
    with pytest.raises(ValueError, match=r"several rewards the identifier\(s\) \['s'\]"):
        short.check_distinct(["sentiment", "sharpness"])
    with pytest.raises(ValueError, match="must contain '{name}'"):
        IdentifierConfig(template="<reward>")
    with pytest.raises(ValueError, match="not a format string"):
        IdentifierConfig(template="<{name}{other}>")
