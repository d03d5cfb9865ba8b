"""Parrot's Algorithm 1 as the loop runs it: groups, per-group P, raw/normalised weighting, identifier
credit, the expander's group-mean baseline, DPOK's reward-weighted baseline, config errors. Numbers by hand."""

import math
from types import SimpleNamespace

import pytest
import torch
from test_parrot_train import quick_args

from parrot.credit import batch_advantages, gather_scores, reward_metrics
from parrot.expander_update import credited_group_rewards, expansion_rewards, relative_rewards
from parrot.layout import BatchLayout
from parrot.losses import reward_weighted_denoising_loss, rwr_weights
from parrot.rollout import draw_prompts, expand, expanded_texts, local_prompts, sample_and_score, sample_images, score
from parrot.selection import SelectionConfig, compute_advantages, parse_selection
from parrot.train import ParrotTrainer
from parrot.train_config import batch_layout, derived_quantities, load_train_config
from parrot_base.config import ConfigError
from prompt_expander.rl import PolicyGradientConfig, advantages_from_rewards, policy_gradient_loss
from rewards import RewardScores

NAMES = ["a", "b"]
# two groups of two images: in group 0, (2, 2) dominates (1, 1); in group 1, (0, .5) and (.5, 0) trade off.
# Over the mixed batch (2, 2) dominates everything.
REWARDS = torch.tensor([[1.0, 1.0], [2.0, 2.0], [0.0, 0.5], [0.5, 0.0]])
GROUPS = torch.tensor([0, 0, 1, 1])
VALID = torch.ones_like(REWARDS, dtype=torch.bool)


def advantages(groups=GROUPS, identifiers=None, **settings):
    config = SelectionConfig(advantage_clip=100, **settings)
    return compute_advantages(REWARDS, VALID, ["c"] * 4, config, parse_selection(config, NAMES), groups=groups, identifiers=identifiers)


def test_layout_indices_are_prompt_expansion_identifier_image_nested():
    layout = BatchLayout(prompts=2, expansions=2, identifiers=2, images=2)
    assert (layout.groups_per_prompt, layout.num_groups, layout.num_images) == (4, 8, 16)
    assert layout.image_group().tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7]
    assert layout.image_prompt().tolist() == [0] * 8 + [1] * 8
    assert layout.image_expansion().tolist() == [0, 0, 0, 0, 1, 1, 1, 1] * 2
    assert layout.image_identifier().tolist() == [0, 0, 1, 1] * 4
    assert layout.group_prompt().tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert layout.group_identifier().tolist() == [0, 1] * 4
    with pytest.raises(ValueError, match="BatchLayout.images=0 must be >= 1"):
        BatchLayout(prompts=1, images=0)


def test_group_scope_takes_p_per_group_and_batch_scope_over_the_mixed_batch():
    grouped = advantages(reward_weighting="raw")
    assert grouped.selected.tolist() == [False, True, True, True]
    assert grouped.normaliser == 3
    # raw weighting (the paper): A[i, k] = r_k on P, 0 elsewhere
    assert grouped.values.tolist() == [[0.0, 0.0], [2.0, 2.0], [0.0, 0.5], [0.5, 0.0]]
    mixed = advantages(reward_weighting="raw", scope="batch")
    assert mixed.selected.tolist() == [False, True, False, False] and mixed.normaliser == 1
    assert mixed.values.tolist() == [[0.0, 0.0], [2.0, 2.0], [0.0, 0.0], [0.0, 0.0]]


def test_normalised_weighting_z_scores_per_batch_or_per_group():
    batch = advantages(reward_weighting="normalised", gradient_normalisation="batch")
    # column a over the batch: mean 0.875, std sqrt(2.1875 / 4); column b: mean 0.875, the same std
    std = math.sqrt(2.1875 / 4)
    assert batch.values[1].tolist() == pytest.approx([1.125 / std, 1.125 / std], rel=1e-5)
    # (0, .5) is in P but below the batch mean on both rewards: normalised weighting pushes it down
    assert batch.values[2].tolist() == pytest.approx([-0.875 / std, -0.375 / std], rel=1e-5)
    assert batch.values[0].tolist() == [0.0, 0.0]  # outside P
    group = advantages(reward_weighting="normalised", gradient_normalisation="group")
    # each group's two values z-score to ∓1 (std 0.5 and 0.25 of two-point groups)
    expected = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-1.0, 1.0], [1.0, -1.0]])
    torch.testing.assert_close(group.values, expected, rtol=0, atol=1e-4)
    assert advantages(reward_weighting="raw", gradient_normalisation="group").values[1].tolist() == [2.0, 2.0]  # raw ignores it


def test_identifier_k_images_are_credited_by_reward_k_only_after_selection_over_all_rewards():
    credited = advantages(reward_weighting="raw", identifiers=torch.tensor([0, 0, 1, 1]))
    assert credited.selected.tolist() == [False, True, True, True]  # P still over both rewards
    assert credited.values.tolist() == [[0.0, 0.0], [2.0, 0.0], [0.0, 0.5], [0.0, 0.0]]
    nonzero_columns = {i: (row != 0).nonzero().flatten().tolist() for i, row in enumerate(credited.values)}
    assert nonzero_columns == {0: [], 1: [0], 2: [1], 3: []}


def test_expansion_rewards_compare_the_expansions_of_one_prompt_by_level():
    # 1 prompt × 2 expansions × 2 images, 2 rewards of different scales
    layout = BatchLayout(prompts=1, expansions=2, images=2)
    rewards = torch.tensor([[1.0, 0.0], [3.0, 20.0], [5.0, 40.0], [7.0, 60.0]])
    valid = torch.ones_like(rewards, dtype=torch.bool)
    # each column z-scored over the prompt's 4 images: (−3, −1, 1, 3)/√5 in both, so r(ĉ) = ∓(3 + 1)·2/(2√5)
    torch.testing.assert_close(expansion_rewards(rewards, valid, layout, None), torch.tensor([-4.0, 4.0]) / 5**0.5)
    # the level counts: expansion 0's images all get better → its r rises, the other's falls (the T2I update's
    # within-group z-scores, the former r(ĉ), stay the same under such a shift)
    better = rewards.clone()
    better[:2] += torch.tensor([10.0, 100.0])
    r = expansion_rewards(better, valid, layout, None)
    assert r[0] > 0 > r[1]
    # prompts are normalised apart: a second prompt's scale does not move the first's r(ĉ)
    two = BatchLayout(prompts=2, expansions=2, images=2)
    both = expansion_rewards(torch.cat([rewards, 1000 * rewards]), torch.ones(8, 2, dtype=torch.bool), two, None)
    torch.testing.assert_close(both, torch.tensor([-4.0, 4.0, -4.0, 4.0]) / 5**0.5)
    # identifiers: each image counts its own reward's z only; an invalid score counts 0 and leaves the statistics
    ids = BatchLayout(prompts=1, identifiers=2, images=2)
    valid[3, 1] = False
    z0 = (torch.tensor([1.0, 3.0]) - 4.0) / 5**0.5  # images 0, 1 (identifier 0): reward 0 over all four images
    z1 = (torch.tensor([40.0]) - 20.0) / (800.0 / 3) ** 0.5  # image 2 (identifier 1): reward 1 over the three valid
    expected = torch.stack([z0.mean(), z1[0] / 2])
    torch.testing.assert_close(expansion_rewards(rewards, valid, ids, ids.image_identifier()), expected, rtol=1e-5, atol=1e-5)


def test_expander_group_mean_baseline():
    config = PolicyGradientConfig(baseline="group_mean")
    rewards, groups = torch.tensor([1.0, 3.0, 2.0, 6.0]), torch.tensor([0, 0, 1, 1])
    assert advantages_from_rewards(rewards, config, groups).tolist() == [-1.0, 1.0, -2.0, 2.0]
    assert advantages_from_rewards(rewards, PolicyGradientConfig(baseline="mean")).tolist() == [-2.0, 0.0, -1.0, 3.0]
    log_probs = torch.tensor([[-1.0, -2.0], [-1.0, 0.0], [-0.5, 0.0], [-2.0, -1.0]], requires_grad=True)
    loss = policy_gradient_loss(log_probs, torch.ones(4, 2), rewards, PolicyGradientConfig(baseline="group_mean", kl_weight=0),
                                groups=groups)  # fmt: skip
    assert loss.loss.item() == pytest.approx(-(-1 * -3 + 1 * -1 + -2 * -0.5 + 2 * -3) / 4)
    assert advantages_from_rewards(rewards, config).tolist() == [-2.0, 0.0, -1.0, 3.0]  # no groups: one group
    with pytest.raises(ValueError, match="baseline='best': choose one of"):
        PolicyGradientConfig(baseline="best")


def test_promptist_relative_reward_credits_own_rewards_on_paired_noise(tmp_path):
    layout = BatchLayout(prompts=1, identifiers=2, images=2)
    rewards = torch.tensor([[1.0, 10.0], [3.0, 20.0], [5.0, 2.0], [float("nan"), 4.0]])
    valid = torch.isfinite(rewards)
    # identifier 0's images count r_0 (1, 3), identifier 1's r_1 (2, 4); without identifiers every finite score
    assert credited_group_rewards(rewards, valid, layout, layout.image_identifier()).tolist() == [2.0, 3.0]
    assert credited_group_rewards(rewards, valid, layout, None).tolist() == [17.0, 5.5]
    args = quick_args(tmp_path, "--mode", "joint", "--expander.model", "builtin:tiny_gpt2", "--expander.sampling.max_new_tokens", "4",
                      "--expander.update.baseline", "original_prompt", "--iterations", "1")  # fmt: skip
    trainer = ParrotTrainer(load_train_config(args))
    parts = trainer.parts
    prompts = local_prompts(parts, draw_prompts(parts, 0))
    expanded = expanded_texts(prompts, expand(parts, prompts, 0))
    rollout, scores = sample_and_score(parts, prompts, expanded, 0, 0)
    plain = sample_images(parts, prompts, prompts, 0, 0)
    assert torch.equal(plain.trajectory.latents[:, 0], rollout.trajectory.latents[:, 0])  # the same x_T per image
    assert plain.trajectory.prompts == ["<jpeg_compressibility>, " + prompts[0]] * 2 + ["<clip_score>, " + prompts[0]] * 2
    relative = relative_rewards(parts, prompts, scores, 0, 0)
    own = parts.layout.for_prompts(1).image_identifier()
    plain_scores = score(parts, plain).scores
    expected = [(scores.scores[2 * g : 2 * g + 2, g] - plain_scores[2 * g : 2 * g + 2, g]).mean() for g in range(2)]
    torch.testing.assert_close(relative, torch.stack(expected).float(), rtol=1e-5, atol=1e-5)
    assert own.tolist() == [0, 0, 1, 1]
    metrics = trainer.run_iteration(0).metrics
    assert math.isfinite(metrics["expander/loss"])


def test_rwr_weights_clip_advantages_at_zero_and_weight_the_denoising_loss():
    assert rwr_weights(torch.tensor([-1.0, 0.5, 2.0])).tolist() == [0.0, 0.5, 2.0]
    prediction = torch.tensor([[[1.0, 1.0]], [[2.0, 0.0]], [[5.0, 5.0]]], requires_grad=True)  # (n=3, S=1, 2)
    weights = rwr_weights(torch.tensor([0.5, 2.0, -3.0]))
    loss = reward_weighted_denoising_loss(prediction, torch.zeros(3, 1, 2), weights, normaliser=2)
    assert loss.item() == pytest.approx((0.5 * 1.0 + 2.0 * 2.0 + 0.0 * 25.0) / 2)  # per-image mean squares 1, 2, 25
    loss.backward()
    assert prediction.grad[2].abs().sum() == 0  # a negative advantage pushes nothing away
    with pytest.raises(ValueError, match="must be \\(n, S, ...\\)"):
        reward_weighted_denoising_loss(prediction, torch.zeros(3, 2), weights, 1)


def test_new_config_fields_are_validated_with_the_field_name(tmp_path):
    with pytest.raises(ConfigError, match="selection: scope='prompt': use one of"):
        load_train_config(quick_args(tmp_path, "--selection.scope", "prompt"))
    with pytest.raises(ConfigError, match="selection: reward_weighting='scaled': use one of"):
        load_train_config(quick_args(tmp_path, "--selection.reward_weighting", "scaled"))
    with pytest.raises(ConfigError, match="sampling: training_guidance='parrot': use one of"):
        load_train_config(quick_args(tmp_path, "--sampling.training_guidance", "parrot"))
    with pytest.raises(ConfigError, match="sampling: expansions_per_prompt=0 must be >= 1"):
        load_train_config(quick_args(tmp_path, "--sampling.expansions_per_prompt", "0"))
    with pytest.raises(ConfigError, match="sampling.training_guidance='prompt_centred' needs an expander"):
        load_train_config(quick_args(tmp_path, "--sampling.training_guidance", "prompt_centred"))
    joint = ["--mode", "joint", "--expander.model", "builtin:tiny_gpt2", "--identifiers.enabled", "false"]
    with pytest.raises(ConfigError, match="baseline='group_mean' compares the expansions of one prompt, but there is 1"):
        load_train_config(quick_args(tmp_path, *joint))
    load_train_config(quick_args(tmp_path, *joint, "--expander.update.baseline", "mean"))
    load_train_config(quick_args(tmp_path, *joint, "--sampling.expansions_per_prompt", "2"))  # 2 groups of 2 images
    # groups of one image (2 identifiers × 1): the default z-score within the group is refused, naming both ways out
    with pytest.raises(
        ConfigError,
        match=r"gradient_normalisation='group' \(the default\) z-scores the images of a group: .*, "
        r"or selection.gradient_normalisation 'batch' .* or selection.reward_weighting 'raw'",
    ):
        load_train_config(quick_args(tmp_path, "--sampling.images_per_prompt", "2"))
    for way_out in (["--selection.gradient_normalisation", "batch"], ["--selection.reward_weighting", "raw"]):
        load_train_config(quick_args(tmp_path, "--sampling.images_per_prompt", "2", *way_out))
    with pytest.raises(ConfigError, match="images_per_prompt=4 must be a multiple of the 6 expansions × identifiers"):
        load_train_config(quick_args(tmp_path, "--sampling.expansions_per_prompt", "3"))
    with pytest.raises(ConfigError, match="t2i: kl_weight=0.1 is the policy-gradient estimators' KL"):
        load_train_config(quick_args(tmp_path, "--t2i.estimator", "rwr", "--t2i.kl_weight", "0.1"))
    # 1 prompt × 2 expansions × 2 identifiers × 2 images per process
    config = load_train_config(quick_args(tmp_path, "--sampling.expansions_per_prompt", "2", "--sampling.images_per_prompt", "8"))
    assert derived_quantities(config, 1).images_per_process == 8
    assert batch_layout(config, 2) == BatchLayout(prompts=2, expansions=2, identifiers=2, images=2)


@pytest.mark.parametrize("pipeline", ["builtin:tiny", "builtin:tiny_sd3", "builtin:tiny_flux"])
def test_an_iteration_samples_groups_with_cfg_and_credits_each_identifier(tmp_path, pipeline):
    # the joint loop with identifiers is the same on the UNet and the flow-matching families
    args = quick_args(tmp_path, "--mode", "joint", "--expander.model", "builtin:tiny_gpt2", "--expander.sampling.max_new_tokens", "4",
                      "--sampling.expansions_per_prompt", "2", "--sampling.images_per_prompt", "8", "--iterations", "1",
                      "--model.pipeline", pipeline)  # fmt: skip
    trainer = ParrotTrainer(load_train_config(args))
    before = {part: {k: v.detach().clone() for k, v in state.items()} for part, state in trainer.parts.trainable_state().items()}
    result = trainer.run_iteration(0)
    for part, state in trainer.parts.trainable_state().items():  # both the T2I LoRA and the expander's moved
        assert any(not torch.equal(before[part][k], v) for k, v in state.items()), part
    rollout = result.rollout
    # 1 prompt × 2 expansions × 2 identifiers × 2 images; one expansion per group, CFG on "<k>, ĉ"
    assert rollout.trajectory.batch_size == 8
    identifiers = ["<jpeg_compressibility>", "<clip_score>"]
    for i, (text, expanded) in enumerate(zip(rollout.trajectory.prompts, rollout.expanded_prompts)):
        assert text == f"{identifiers[(i // 2) % 2]}, {expanded}"
        assert expanded == rollout.expanded_prompts[i - i % 2]  # the N images of a group share ĉ
    assert rollout.trajectory.conditioning.weights == (3.0,) and rollout.trajectory.original_prompts is None
    assert trainer.parts.guidance.weights == (2.0, 2.0)  # prompt-centred guidance is for inference only
    values, selected = result.advantages.values, result.advantages.selected
    own = rollout.own_reward
    assert own.tolist() == [0, 0, 1, 1, 0, 0, 1, 1]
    assert torch.all(values[torch.arange(8), 1 - own] == 0)  # the other reward's column is always 0
    assert torch.all(values[~selected] == 0)
    for group in range(4):  # P is taken per group: every group keeps at least one image
        assert selected[2 * group : 2 * group + 2].any()


def test_rwr_iteration_trains_the_lora_on_base_samples(tmp_path):
    trainer = ParrotTrainer(load_train_config(quick_args(tmp_path, "--t2i.estimator", "rwr", "--t2i.inner_epochs", "1",
                                                         "--selection.mode", "weighted", "--iterations", "1")))  # fmt: skip
    before = {k: v.detach().clone() for k, v in trainer.parts.trainable_state()["t2i"].items()}
    metrics = trainer.run_iteration(0).metrics
    assert math.isfinite(metrics["t2i/loss"]) and metrics["t2i/loss"] > 0
    assert any(not torch.equal(before[k], v) for k, v in trainer.parts.trainable_state()["t2i"].items())


def test_the_selection_stage_on_a_hand_made_batch():
    """Stage 5 alone: R of 1 prompt × 2 identifiers × 2 images → P per group, each identifier's images credited by r_k."""
    names = ["r1", "r2"]
    selection = SelectionConfig(reward_weighting="raw")  # pareto over each group, raw rewards
    parts = SimpleNamespace(
        layout=BatchLayout(prompts=1, identifiers=2, images=2), reward_names=names, num_processes=1, device=torch.device("cpu"),
        config=SimpleNamespace(identifiers=SimpleNamespace(enabled=True, contrast=0.0), selection=selection),
        selection=parse_selection(selection, names), tracker=None,
    )  # fmt: skip
    scores = torch.tensor([[1.0, 4.0], [2.0, 3.0], [1.0, 1.0], [2.0, float("nan")]])
    gathered = gather_scores(parts, RewardScores(torch.nan_to_num(scores, nan=0.0), names, torch.isfinite(scores)))
    assert gathered.valid.tolist() == [[True, True], [True, True], [True, True], [True, False]]
    advantages = batch_advantages(parts, gathered, ["a circle"])
    # group 0 (identifier r1): both images non-dominated, credited r1; group 1 (r2): image 3 dominates image 2,
    # but its r2 is not finite, so its advantage is 0
    assert advantages.selected.tolist() == [True, True, False, True]
    assert advantages.values.tolist() == [[1.0, 0.0], [2.0, 0.0], [0.0, 0.0], [0.0, 0.0]]
    assert advantages.normaliser == 3.0
    metrics = reward_metrics(names, gathered, advantages)
    assert metrics["reward/r1/mean"] == 1.5 and metrics["pareto/selected_fraction"] == 0.75 and metrics["reward/nonfinite"] == 1.0
    assert set(metrics) == {"reward/r1/mean", "reward/r2/mean", "reward/r1/std", "reward/r2/std", "pareto/selected_fraction",
                            "reward/nonfinite"}  # fmt: skip
    # the training batch's Fig. 7: r1 under <r1> (rows 0, 1) 1.5 − under <r2> (rows 2, 3) 1.5; r2 under <r2> only
    # row 2 is finite (1.0) − under <r1> (4 + 3) / 2
    with_identifiers = reward_metrics(names, gathered, advantages, torch.tensor([0, 0, 1, 1]))
    assert with_identifiers["identifier/r1/own_minus_others"] == 0.0 and with_identifiers["identifier/r2/own_minus_others"] == -2.5
    assert set(with_identifiers) - set(metrics) == {"identifier/r1/own_minus_others", "identifier/r2/own_minus_others"}


def test_paired_noise_gives_each_image_its_namesakes_x_t_under_every_identifier(tmp_path):
    def first_latents(*flags):
        parts = ParrotTrainer(load_train_config(quick_args(tmp_path, *flags))).parts
        prompts = local_prompts(parts, draw_prompts(parts, 0))
        return sample_images(parts, prompts, prompts, 0, 0).trajectory.latents[:, 0]  # x_T of the 4 images (k, j)

    own, paired = first_latents(), first_latents("--identifiers.paired_noise", "true")
    # layout (k, j): 0 (0, 0), 1 (0, 1), 2 (1, 0), 3 (1, 1); identifier 0 keeps its images' own seeds
    assert torch.equal(paired[:2], own[:2]) and torch.equal(paired[2:], paired[:2])
    assert not torch.equal(own[2], own[0]) and not torch.equal(paired[1], paired[0])
