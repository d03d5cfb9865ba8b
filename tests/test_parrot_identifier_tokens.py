"""Trained identifier tokens (identifiers.trainable_tokens, pivotal tuning): they start as the template's text, reward
k's images move token k's rows only, they survive checkpoints and load beside the LoRA, and the untrained evaluation
uses them as they started."""

import pytest
import torch
from test_parrot_train import quick_args

from parrot.evaluation import held_out_samples, held_out_samples_of_parts
from parrot.generate import GenerateConfig, load_generation_policy, resolve_identifiers
from parrot.identifiers import TOKEN_TEMPLATE, IdentifierTokens
from parrot.rollout import draw_prompts, local_prompts, sample_images
from parrot.run_dir import read_curves
from parrot.selection import Advantages
from parrot.t2i_update import update_t2i
from parrot.train import ParrotTrainer
from parrot.train_config import load_train_config
from parrot_base.config import ConfigError
from t2i.textual_inversion import text_towers

NAMES = ["jpeg_compressibility", "clip_score"]
TOKENS = ["<jpeg_compressibility>", "<clip_score>"]


def token_args(out, *extra):
    return quick_args(out, "--identifiers.template", "{name:.1}", "--identifiers.trainable_tokens", "true",
                      "--identifiers.token_lr", "0.05", *extra)  # fmt: skip


def encode(policy, text):
    with torch.no_grad():
        return policy.encode_prompts([text])


def embedding_matrices(policy):
    return [encoder.get_input_embeddings().weight.detach().clone() for _, encoder in text_towers(policy.pipeline)]


@pytest.mark.parametrize("pipeline", ["builtin:tiny", "builtin:tiny_sdxl"])
def test_tokens_start_as_the_template_and_only_the_credited_token_learns(tmp_path, pipeline):
    trainer = ParrotTrainer(load_train_config(token_args(tmp_path, "--model.pipeline", pipeline)))
    parts, policy = trainer.parts, trainer.parts.policy
    # token k's row is the embedding of the template's one-token text: "<jpeg_compressibility>, c" encodes as "j, c"
    for key, value in encode(policy, "<jpeg_compressibility>, a red circle").items():
        assert torch.equal(value, encode(policy, "j, a red circle")[key]), key
    assert all(torch.equal(v, encode(policy, "c, a red circle")[k]) for k, v in encode(policy, "<clip_score>, a red circle").items())
    prompts = local_prompts(parts, draw_prompts(parts, 0))
    rollout = sample_images(parts, prompts, prompts, 0, 0)
    assert rollout.trajectory.prompts[0].startswith("<jpeg_compressibility>, ") and rollout.trajectory.prompts[2].startswith(
        "<clip_score>, "
    )
    # hand-made credit: only the two images of "<jpeg_compressibility>, c" (rows 0, 1), by their own reward's column
    values = torch.zeros(4, 2)
    values[:2, 0] = torch.tensor([1.0, -1.0])
    before, lora = embedding_matrices(policy), {k: v.detach().clone() for k, v in parts.trainable_state()["t2i"].items()}
    update_t2i(parts, rollout, Advantages(values, torch.ones(4, dtype=torch.bool), 2.0), 0)
    for (tokenizer, _), old, new in zip(text_towers(policy.pipeline), before, embedding_matrices(policy), strict=True):
        # in every tower token 0's row only: not token 1's, not one word of the vocabulary
        assert (new != old).any(1).nonzero().flatten().tolist() == [tokenizer.convert_tokens_to_ids(TOKENS[0])]
    assert any(not torch.equal(lora[k], v) for k, v in parts.trainable_state()["t2i"].items())  # the LoRA trains with it
    # the optimiser's group of the towers' matrices: the tokens' own rate and no weight decay
    group = parts.t2i_optimizer.param_groups[1]
    assert group["lr"] == 0.05 and group["weight_decay"] == 0.0


def test_tokens_kept_at_their_start_norm_turn_only(tmp_path):
    trainer = ParrotTrainer(load_train_config(token_args(tmp_path, "--identifiers.token_norm", "start")))
    parts = trainer.parts
    prompts = local_prompts(parts, draw_prompts(parts, 0))
    rollout = sample_images(parts, prompts, prompts, 0, 0)
    values = torch.zeros(4, 2)
    values[:2, 0] = torch.tensor([1.0, -1.0])
    start = parts.identifier_tokens.start["jpeg_compressibility"][0].clone()
    update_t2i(parts, rollout, Advantages(values, torch.ones(4, dtype=torch.bool), 2.0), 0)
    row = parts.identifier_tokens.rows["jpeg_compressibility"][0].detach()
    # by hand: the stored row's norm is the start's (AdamW's step at lr 0.05 alone would change it) ...
    assert float(row.norm()) == pytest.approx(float(start.norm()), rel=1e-6)
    # ... and it has turned away from the start
    assert float(torch.nn.functional.cosine_similarity(row, start)) < 1 - 1e-4
    assert torch.equal(parts.identifier_tokens.rows["clip_score"][0], parts.identifier_tokens.start["clip_score"][0])


def test_turn_degrees_against_hand_computed_angles():
    start = {"a": [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 3.0]])], "b": [torch.tensor([[2.0, 0.0]])]}
    # token a: 45° in its first tower, 90° in its second (mean 67.5); token b turned to the opposite direction (180°)
    rows = {"a": [torch.tensor([[1.0, 1.0]]), torch.tensor([[-2.0, 0.0]])], "b": [torch.tensor([[-0.5, 0.0]])]}
    tokens = IdentifierTokens({"a": "<a>", "b": "<b>"}, rows, start)
    assert tokens.turn_degrees() == pytest.approx({"a": 67.5, "b": 180.0})
    with tokens.at_start():
        assert tokens.turn_degrees() == pytest.approx({"a": 0.0, "b": 0.0}, abs=1e-5)


def test_tokens_round_trip_through_checkpoints_final_weights_and_generation(tmp_path):
    out = tmp_path / "run"
    trainer = ParrotTrainer(load_train_config(token_args(out, "--iterations", "1", "--checkpoint_every", "1")))
    trainer.train()
    trained = trainer.parts.identifier_tokens.state()
    # the training log keeps each token's turn from its start, as it stood after the (one) iteration
    curves = read_curves(trainer.run)
    for name, degrees in trainer.parts.identifier_tokens.turn_degrees().items():
        assert curves[f"identifier/{name}/turn_deg"][1].tolist() == pytest.approx([degrees])
    assert any(not torch.equal(trained[f"{t}/0"], start) for t, (start,) in zip(TOKENS, trainer.parts.identifier_tokens.start.values()))
    want = encode(trainer.parts.policy, "<clip_score> <jpeg_compressibility>, a red circle")
    # a new trainer resumes the trained rows from the checkpoint
    fresh = ParrotTrainer(load_train_config(token_args(out, "--iterations", "1", "--checkpoint_every", "1")))
    fresh.load_checkpoint(out / "checkpoints" / "checkpoint-000001")
    assert all(torch.equal(fresh.parts.identifier_tokens.state()[k], v) for k, v in trained.items())
    # generation from the final LoRA loads the tokens beside it and prepends them (diffusers' textual-inversion files)
    for name in NAMES:
        assert (out / "final" / "identifiers" / name / "learned_embeds.safetensors").is_file()
    generation = GenerateConfig(prompt="a red circle", model="builtin:tiny", lora=(str(out / "final" / "lora"),))
    assert resolve_identifiers(generation) == (NAMES, TOKEN_TEMPLATE)
    policy = load_generation_policy(generation)
    torch.testing.assert_close(encode(policy, "<clip_score> <jpeg_compressibility>, a red circle"), want, rtol=0, atol=1e-6)
    (out / "final" / "identifiers" / "clip_score" / "learned_embeds.safetensors").unlink()
    (out / "final" / "identifiers" / "clip_score").rmdir()
    with pytest.raises(FileNotFoundError, match="was trained with identifier tokens, but .*clip_score' is missing"):
        load_generation_policy(generation)


def test_the_untrained_evaluation_uses_the_tokens_as_they_started(tmp_path):
    args = token_args(tmp_path, "--evaluation.enabled", "true", "--evaluation.seeds", "0")
    parts = ParrotTrainer(load_train_config(args)).parts
    untrained = held_out_samples(parts, "untrained")
    with torch.no_grad():
        for rows in parts.identifier_tokens.rows.values():
            for row in rows:
                row.add_(torch.randn(row.shape, generator=torch.Generator().manual_seed(0)))  # "trained" tokens
    moved = {k: v.clone() for k, v in parts.identifier_tokens.state().items()}
    again = held_out_samples(parts, "untrained")
    assert torch.equal(again.images, untrained.images)  # the start's tokens, not the moved ones
    assert all(torch.equal(parts.identifier_tokens.state()[k], v) for k, v in moved.items())  # restored afterwards
    assert not torch.equal(held_out_samples(parts, "trained").images, untrained.images)


def test_held_out_samples_of_parts_trains_exactly_the_parts_named(tmp_path):
    args = token_args(tmp_path, "--evaluation.enabled", "true", "--evaluation.seeds", "0")
    parts = ParrotTrainer(load_train_config(args)).parts
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for rows in parts.identifier_tokens.rows.values():
            for row in rows:
                row.add_(torch.randn(row.shape, generator=generator))  # "trained" tokens
        for name, weight in parts.trainable_state()["t2i"].items():
            if "lora_B" in name:
                weight.add_(0.5 * torch.randn(weight.shape, generator=generator))  # a "trained" LoRA (B starts at 0)
    trained, untrained = held_out_samples(parts, "trained"), held_out_samples(parts, "untrained")
    both = held_out_samples_of_parts(parts, ["t2i", "tokens"], "both")
    neither = held_out_samples_of_parts(parts, [], "neither")
    lora_only = held_out_samples_of_parts(parts, ["t2i"], "lora")
    tokens_only = held_out_samples_of_parts(parts, ["tokens"], "tokens")
    assert torch.equal(both.images, trained.images) and torch.equal(neither.images, untrained.images)
    assert both.setting == "both" and trained.setting == "trained"
    # each single part differs from both ends and from the other part: each context changes what it names only
    singles = [lora_only.images, tokens_only.images]
    for single in singles:
        assert not torch.equal(single, trained.images) and not torch.equal(single, untrained.images)
    assert not torch.equal(*singles)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--t2i.kl_weight", "0.1"), "trainable_tokens with t2i.kl_weight > 0 is not supported"),
        (("--t2i.estimator", "rwr"), "trainable_tokens with t2i.estimator 'rwr' is not supported"),
        (("--identifiers.enabled", "false"), "needs identifiers.enabled and mode 'joint' or 't2i'"),
        (("--identifiers.token_lr", "0"), "token_lr=0.0 must be > 0"),
        (("--identifiers.token_norm", "unit"), "token_norm='unit' must be one of free, start"),
        (("--identifiers.trainable_tokens", "false", "--identifiers.token_norm", "start"), "token_norm rescales trained identifier tokens"),
    ],
)
def test_settings_the_tokens_cannot_train_under_are_refused(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config(token_args(tmp_path, *extra))
