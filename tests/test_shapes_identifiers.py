"""The identifier-prefix distillation of the world's UNet (shapes.identifiers)."""

import copy

import pytest
import torch
import torch.nn.functional as F

from shapes.data import ShapesDataConfig, generate_examples
from shapes.identifiers import IdentifierInvarianceConfig, prefix_anchor_loss, prefix_invariance_loss, train_prefix_invariance
from shapes.sd import encode_latents
from t2i.families import policy_of_pipeline

PLAIN = ["a red circle", "a large blue square on a white background, sharp", ""]
PREFIXED = ["l p c s, a red circle", "<preference> photo, a large blue square on a white background, sharp", "l, "]


def _batch(pipeline, seed=0):
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(len(PLAIN), 4, 8, 8, generator=generator)
    return z, torch.tensor([50, 400, 900])


def test_loss_is_the_two_mses_against_the_teacher_on_the_plain_captions(tiny_pipeline):
    policy = policy_of_pipeline(tiny_pipeline)
    teacher = policy_of_pipeline(copy.deepcopy(tiny_pipeline))
    noisy, t = _batch(tiny_pipeline)
    with torch.no_grad():
        loss, shifted = prefix_invariance_loss(policy, teacher, noisy, t, PLAIN, PLAIN)
        # an unchanged student, no prefix: nothing to learn (up to rounding: the student runs both terms as one batch)
        assert loss.item() == pytest.approx(0.0, abs=1e-10) and shifted.item() == pytest.approx(0.0, abs=1e-10)
        tiny_pipeline.unet.conv_out.bias.add_(0.5)  # the student drifts by a constant 0.5 on every output
        loss, shifted = prefix_invariance_loss(policy, teacher, noisy, t, PLAIN, PREFIXED)
        target = teacher.unet(noisy, t, encoder_hidden_states=policy.encode_prompts(PLAIN)["encoder_hidden_states"]).sample
        by_hand = F.mse_loss(
            policy.unet(noisy, t, encoder_hidden_states=policy.encode_prompts(PREFIXED)["encoder_hidden_states"]).sample, target
        )
    assert shifted.item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert loss.item() - shifted.item() == pytest.approx(0.25, rel=1e-5)  # the plain term: the drift 0.5 squared


def test_the_target_reads_c_through_the_teachers_text_tower(tiny_pipeline):
    policy = policy_of_pipeline(tiny_pipeline)
    teacher = policy_of_pipeline(copy.deepcopy(tiny_pipeline))
    noisy, t = _batch(tiny_pipeline)
    with torch.no_grad():
        tiny_pipeline.text_encoder.final_layer_norm.bias.add_(0.5)  # only the student's tower moves
        loss, shifted = prefix_invariance_loss(policy, teacher, noisy, t, PLAIN, PLAIN)
        target = teacher.unet(noisy, t, encoder_hidden_states=teacher.encode_prompts(PLAIN)["encoder_hidden_states"]).sample
        by_hand = F.mse_loss(
            policy.unet(noisy, t, encoder_hidden_states=policy.encode_prompts(PLAIN)["encoder_hidden_states"]).sample, target
        )
    assert shifted.item() > 0.0 and shifted.item() == pytest.approx(by_hand.item(), rel=1e-6)


def test_distillation_removes_the_prefix_effect_and_keeps_the_plain_prediction(tiny_pipeline):
    torch.manual_seed(0)
    with torch.no_grad():  # a student whose prefix effect is large: the text tower's output reaches the UNet strongly
        for p in tiny_pipeline.unet.parameters():
            p.mul_(1.5)
    policy = policy_of_pipeline(tiny_pipeline)
    teacher = policy_of_pipeline(copy.deepcopy(tiny_pipeline))
    examples = generate_examples(
        16, 3, "train", ShapesDataConfig(image_size=16, supersample=2, short_fraction=1.0, tagged_fraction=0.0)
    )  # short: the byte tokenizer reads them whole
    latents = encode_latents(tiny_pipeline.vae, examples)
    noisy = torch.randn(latents.shape, generator=torch.Generator().manual_seed(1))
    t = torch.full((len(examples),), 500)
    plain = [e.short_caption for e in examples]
    prefixed = [f"l p c s, {c}" for c in plain]

    def effects():
        with torch.no_grad():
            _, shifted = prefix_invariance_loss(policy, teacher, noisy, t, plain, prefixed)
            _, kept = prefix_invariance_loss(policy, teacher, noisy, t, plain, plain)
        return shifted.item(), kept.item() / 2  # with prefixed = plain both terms are the plain one

    before, drift_before = effects()
    record = train_prefix_invariance(tiny_pipeline, examples, IdentifierInvarianceConfig(steps=100, batch_size=8, learning_rate=1e-4))
    after, drift_after = effects()
    assert drift_before == pytest.approx(0.0, abs=1e-10) and before > 1e-3
    # on this held-aside batch (seen: 0.053 → 0.033; a random text tower makes the prefix hard to undo in 100 steps)
    assert after < 0.75 * before  # the prefix's effect on ε shrinks
    assert drift_after < 0.25 * before  # while the plain captions still predict what they did (seen: 0.007)
    assert record["identifiers_prefix_mse_end"] < record["identifiers_prefix_mse_start"]
    assert not any(p.requires_grad for p in tiny_pipeline.unet.parameters())  # left frozen, as the policy expects


def _prefix_effect(pipeline, teacher, examples, latents):
    """The loss's first term on a held-aside batch at t = 500, and the student's drift on the plain captions."""
    policy = policy_of_pipeline(pipeline)
    noisy = torch.randn(latents.shape, generator=torch.Generator().manual_seed(1))
    t = torch.full((len(examples),), 500)
    plain = [e.short_caption for e in examples]
    with torch.no_grad():
        _, shifted = prefix_invariance_loss(policy, teacher, noisy, t, plain, [f"l p c s, {c}" for c in plain])
        _, kept = prefix_invariance_loss(policy, teacher, noisy, t, plain, plain)
    return shifted.item(), kept.item()


def test_training_the_text_tower_too_undoes_more_of_the_prefix_against_the_untouched_teacher(tiny_pipeline):
    with torch.no_grad():
        for p in tiny_pipeline.unet.parameters():
            p.mul_(1.5)
    examples = generate_examples(16, 3, "train", ShapesDataConfig(image_size=16, supersample=2, short_fraction=1.0, tagged_fraction=0.0))
    latents = encode_latents(tiny_pipeline.vae, examples)
    teacher = policy_of_pipeline(copy.deepcopy(tiny_pipeline))
    tower = copy.deepcopy(tiny_pipeline.text_encoder.state_dict())
    effects = {}
    for text_encoder in (False, True):
        pipeline = copy.deepcopy(tiny_pipeline)
        torch.manual_seed(0)
        config = IdentifierInvarianceConfig(steps=60, batch_size=8, learning_rate=1e-4, text_encoder=text_encoder)
        train_prefix_invariance(pipeline, examples, config, progress=False)
        moved = max((pipeline.text_encoder.state_dict()[k] - v).abs().max().item() for k, v in tower.items())
        assert (moved > 0.0) == text_encoder  # the tower is trained only when asked
        assert not any(p.requires_grad for p in pipeline.text_encoder.parameters())  # and left frozen either way
        effects[text_encoder] = _prefix_effect(pipeline, teacher, examples, latents)
    assert effects[True][0] < effects[False][0]  # the world's build: 10x less prefix effect than the UNet alone


def test_anchor_is_the_tower_drift_over_the_prefixes_own_positions_only(tiny_pipeline):
    policy = policy_of_pipeline(tiny_pipeline)
    teacher = policy_of_pipeline(copy.deepcopy(tiny_pipeline))
    prefixes = ["l", "l p c s", "lovely photo"]
    longest = max(len(ids) - 1 for ids in tiny_pipeline.tokenizer(prefixes).input_ids)  # BOS and the prefix's tokens
    positions = tiny_pipeline.text_encoder.embeddings.position_embedding.weight
    with torch.no_grad():
        assert prefix_anchor_loss(policy, teacher, prefixes).item() == 0.0
        positions[longest:].add_(torch.randn(positions[longest:].shape, generator=torch.Generator().manual_seed(0)))
        # a causal tower: positions after every prefix change what a caption after it reads, not the prefix's states
        assert prefix_anchor_loss(policy, teacher, prefixes).item() == 0.0
        caption = ["lovely photo, a red circle"]
        moved = policy.encode_prompts(caption)["encoder_hidden_states"] - teacher.encode_prompts(caption)["encoder_hidden_states"]
        assert moved[0, :longest].abs().max() < 1e-5 < 0.1 < moved[0, longest:].abs().max()
        tiny_pipeline.text_encoder.final_layer_norm.bias.add_(0.5)  # every state moves by 0.5
        anchor = prefix_anchor_loss(policy, teacher, prefixes).item()
    assert anchor == pytest.approx(0.25, rel=1e-5)  # 0.5² on every anchored position


def test_anchor_weight_keeps_the_identifier_states_the_plain_distillation_moves(tiny_pipeline):
    with torch.no_grad():
        for p in tiny_pipeline.unet.parameters():
            p.mul_(1.5)
    examples = generate_examples(16, 3, "train", ShapesDataConfig(image_size=16, supersample=2, short_fraction=1.0, tagged_fraction=0.0))
    teacher = policy_of_pipeline(copy.deepcopy(tiny_pipeline))
    drift = {}
    for weight in (0.0, 10.0):
        pipeline = copy.deepcopy(tiny_pipeline)
        torch.manual_seed(0)
        record = train_prefix_invariance(
            pipeline, examples, IdentifierInvarianceConfig(steps=40, batch_size=8, learning_rate=1e-3, anchor_weight=weight), progress=False
        )
        assert ("identifiers_anchor_mse_end" in record) == (weight > 0)
        with torch.no_grad():
            drift[weight] = prefix_anchor_loss(policy_of_pipeline(pipeline), teacher, ["l", "p", "c", "s", "l p c s"]).item()
    assert drift[10.0] < 0.1 * drift[0.0]  # the plain distillation moves the identifiers' states (seen: 0.43 against 0.003)


def test_config_refuses_impossible_settings():
    with pytest.raises(ValueError, match="batch_size=0"):
        IdentifierInvarianceConfig(batch_size=0)
    with pytest.raises(ValueError, match="anchor_weight=-1"):
        IdentifierInvarianceConfig(anchor_weight=-1)
    with pytest.raises(ValueError, match="needs text_encoder=True"):
        IdentifierInvarianceConfig(anchor_weight=1.0, text_encoder=False)
