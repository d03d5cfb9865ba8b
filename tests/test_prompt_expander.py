"""Prompt expander: sampling log-probs, KL to the reference, the RL loss, prompt checks, data rules."""

from __future__ import annotations

import json

import pytest
import torch

from prompt_expander import (
    PARROT_TEMPLATE,
    ExpanderSamplingConfig,
    PolicyGradientConfig,
    PromptExpander,
    gpt2_lora_settings,
    policy_gradient_loss,
)
from prompt_expander.data import (
    DiffusionDBPairsConfig,
    build_diffusiondb_pairs,
    keeps_subject_and_adds_modifiers,
    load_pairs,
    subject_of,
)
from prompt_expander.expansions import first_eos_mask
from prompt_expander.scratch import TinyGPT2Config, build_gpt2, train_bpe_tokenizer

CORPUS = [
    "a cat on a mat, highly detailed, artstation, sharp focus",
    "a red fox in the snow, oil painting, trending on artstation",
    "portrait of a knight by greg rutkowski, 8 k, concept art",
    PARROT_TEMPLATE,
] * 10


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer(CORPUS, vocab_size=400, model_max_length=96)


def make_expander(tokenizer, lora=False, **config) -> PromptExpander:
    model = build_gpt2(tokenizer, TinyGPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=96, vocab_size=400))
    settings = dict(max_new_tokens=12)
    settings.update(config)
    return PromptExpander(model, tokenizer, ExpanderSamplingConfig(**settings), lora=gpt2_lora_settings(4) if lora else None)


@pytest.mark.parametrize("lora", [False, True])
def test_sampled_log_probs_equal_recomputation(tokenizer, lora):
    expander = make_expander(tokenizer, lora=lora, temperature=0.8, top_p=0.9)
    # 3 prompts × n=2 in chunks of 4: exercises left padding of different prompt lengths and chunk joins
    out = expander.sample(["a cat", "a red fox in the snow at night", "knight"], n=2, batch_size=4, generator_seed=0)
    assert len(out) == 6 and out.prompts == ["a cat"] * 2 + ["a red fox in the snow at night"] * 2 + ["knight"] * 2
    assert out.token_ids.shape == out.log_probs.shape == out.attention_mask.shape
    assert out.token_ids.shape[1] <= 12
    assert (out.log_probs[out.attention_mask == 1] < 0).all()
    assert (out.log_probs[out.attention_mask == 0] == 0).all()
    with torch.no_grad():
        recomputed = expander.log_probs(out)
    torch.testing.assert_close(recomputed, out.log_probs, atol=1e-5, rtol=0)


def test_expansion_mask_ends_at_first_eos(tokenizer):
    eos = 7
    ids = torch.tensor([[3, 4, 7, 7, 7], [3, 7, 5, 7, 2], [1, 2, 3, 4, 5]])
    expected = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    torch.testing.assert_close(first_eos_mask(ids, eos), expected)
    out = make_expander(tokenizer).sample(["a cat"], n=8, generator_seed=0)
    for row, length in zip(out.token_ids, out.lengths.tolist()):
        assert not (row[: length - 1] == tokenizer.eos_token_id).any()


@pytest.mark.parametrize("lora", [False, True])
def test_kl_zero_to_itself_and_positive_after_update(tokenizer, lora):
    expander = make_expander(tokenizer, lora=lora)
    out = expander.sample(["a cat", "a fox"], n=2, generator_seed=1)
    kl = expander.kl_to_reference(out)
    assert kl.shape == (4,)
    assert kl.abs().max().item() < 1e-6
    optimizer = torch.optim.SGD(expander.trainable_parameters(), lr=0.5)
    loss = expander.policy_gradient_loss(out, torch.tensor([1.0, 0.0, 0.0, 1.0]), PolicyGradientConfig(kl_weight=0.0))
    loss.loss.backward()
    optimizer.step()
    kl_after = expander.kl_to_reference(out)
    assert (kl_after > 1e-6).all()
    if lora:  # the reference is the base with adapters off: no second model copy
        assert expander.reference_model is None


def test_gradient_sign_on_two_sequence_hand_example():
    # two sequences, 2 and 1 tokens; rewards 1 and 0 → mean baseline 0.5 → advantages +0.5, −0.5
    log_probs = torch.tensor([[-1.0, -2.0], [-0.5, 0.0]], requires_grad=True)
    mask = torch.tensor([[1, 1], [1, 0]])
    out = policy_gradient_loss(log_probs, mask, torch.tensor([1.0, 0.0]), PolicyGradientConfig(kl_weight=0.0))
    # L = −(1/2)[0.5·(−1 − 2) + (−0.5)·(−0.5)] = −(1/2)(−1.5 + 0.25) = 0.625
    assert out.loss.item() == pytest.approx(0.625)
    out.loss.backward()
    # ∂L/∂log p = −A_i / N on real tokens: descending raises the rewarded sequence, lowers the other
    torch.testing.assert_close(log_probs.grad, torch.tensor([[-0.25, -0.25], [0.25, 0.0]]))
    torch.testing.assert_close(out.advantages, torch.tensor([0.5, -0.5]))


def test_clipped_loss_matches_reinforce_at_ratio_one_and_stops_outside_range():
    log_probs = torch.tensor([[-1.0, -2.0], [-0.5, -0.1]], requires_grad=True)
    mask = torch.ones(2, 2)
    rewards = torch.tensor([2.0, 0.0])
    clip = PolicyGradientConfig(clip_range=0.2, kl_weight=0.0)
    out = policy_gradient_loss(log_probs, mask, rewards, clip, old_log_probs=log_probs.detach().clone())
    out.loss.backward()
    torch.testing.assert_close(log_probs.grad, torch.tensor([[-0.5, -0.5], [0.5, 0.5]]))
    # first token's ratio e^{0.5} > 1.2 with A > 0: clipped, no gradient; second token inside the range
    log_probs.grad = None
    old = log_probs.detach() - torch.tensor([[0.5, 0.0], [0.0, 0.0]])
    out = policy_gradient_loss(log_probs, mask, rewards, clip, old_log_probs=old)
    out.loss.backward()
    assert log_probs.grad[0, 0].item() == 0.0 and log_probs.grad[0, 1].item() == pytest.approx(-0.5)
    assert out.clip_fraction.item() == pytest.approx(0.25)


def test_kl_weight_adds_beta_times_mean_kl_and_bad_inputs_are_refused():
    log_probs = torch.zeros(2, 3)
    kl = torch.tensor([0.2, 0.4])
    out = policy_gradient_loss(log_probs, torch.ones(2, 3), torch.tensor([1.0, 3.0]), PolicyGradientConfig(kl_weight=0.5), kl=kl)
    assert out.loss.item() == pytest.approx(0.5 * 0.3)
    with pytest.raises(ValueError, match="NaN"):
        policy_gradient_loss(log_probs, torch.ones(2, 3), torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match=r"rewards \(3,\)"):
        policy_gradient_loss(log_probs, torch.ones(2, 3), torch.ones(3))
    with pytest.raises(ValueError, match="old_log_probs"):
        policy_gradient_loss(log_probs, torch.ones(2, 3), torch.ones(2), PolicyGradientConfig(clip_range=0.2))
    with pytest.raises(ValueError, match="baseline"):
        PolicyGradientConfig(baseline="median")


def test_policy_gradient_step_raises_rewarded_expansion(tokenizer):
    expander = make_expander(tokenizer)
    out = expander.sample(["a cat"], n=2, generator_seed=3)
    before = out.sequence_log_probs()
    optimizer = torch.optim.SGD(expander.trainable_parameters(), lr=0.05)
    expander.policy_gradient_loss(out, torch.tensor([1.0, -1.0]), PolicyGradientConfig(kl_weight=0.0)).loss.backward()
    optimizer.step()
    with torch.no_grad():
        after = (expander.log_probs(out) * out.attention_mask).sum(1)
    assert after[0] > before[0] and after[1] < before[1]


def test_empty_and_overlong_prompts(tokenizer):
    expander = make_expander(tokenizer, max_new_tokens=40)
    with pytest.raises(ValueError, match=r"prompts\[1\] = '  ' is empty"):
        expander.sample(["a cat", "  "])
    with pytest.raises(ValueError, match="no prompts"):
        expander.sample([])
    long_prompt = " ".join(["a red fox in the snow"] * 30)
    with pytest.raises(ValueError, match=r"prompts\[0\].*context of 96.*truncate_prompts=True"):
        expander.sample([long_prompt])
    truncating = make_expander(tokenizer, max_new_tokens=40, truncate_prompts=True)
    out = truncating.sample([long_prompt, "a cat"], generator_seed=0)
    assert out.prompt_mask.sum(1)[0].item() <= 96 - 40
    assert out.prompt_ids.shape[1] + out.token_ids.shape[1] <= 96
    with torch.no_grad():
        torch.testing.assert_close(truncating.log_probs(out), out.log_probs, atol=1e-5, rtol=0)


def test_config_and_template_checks():
    with pytest.raises(ValueError, match="placeholder"):
        ExpanderSamplingConfig(template="Input: no slot. Output: ")
    with pytest.raises(ValueError, match="top_p"):
        ExpanderSamplingConfig(top_p=0.0)
    assert ExpanderSamplingConfig().max_new_tokens == 77


def test_encode_given_expansions_scores_them(tokenizer):
    expander = make_expander(tokenizer)
    given = expander.encode(["a cat", "a fox"], ["a cat on a mat, artstation", "a fox"])
    assert given.texts == ["a cat on a mat, artstation", "a fox"]
    rows = given.token_ids.gather(1, (given.lengths - 1)[:, None]).squeeze(1)
    assert (rows == tokenizer.eos_token_id).all()
    assert expander.log_probs(given).shape == given.token_ids.shape
    with pytest.raises(ValueError, match="2 prompts but 1 expansions"):
        expander.encode(["a cat", "a fox"], ["x"])


# ----- data -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "prompt, subject",
    [
        ("a red fox in the snow, oil painting, artstation", "a red fox in the snow"),
        ("portrait of a knight by greg rutkowski, 8 k", "portrait of a knight"),
        ("a castle in the style of studio ghibli", "a castle"),
        ("a hybrid animal of a cat and a human", "a hybrid animal of a cat and a human"),
        ("a ship. dramatic lighting", "a ship"),
        ("young girl | black uniform", "young girl"),
    ],
)
def test_subject_of(prompt, subject):
    assert subject_of(prompt) == subject


def test_diffusiondb_builder_keeps_modified_prompts_and_holds_out_by_subject(tmp_path):
    lines = [f"a red fox number {i}, oil painting, artstation" for i in range(200)]
    lines += ["a hybrid animal of a cat and a human", "castle, fog", "a cat, a", ""]
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(lines))
    pairs = build_diffusiondb_pairs(DiffusionDBPairsConfig(path=str(path), test_fraction=0.2))
    total = len(pairs["train"]) + len(pairs["test"])
    assert total == 200  # no-modifier, one-word-subject, too-little-added and empty lines dropped
    assert 10 < len(pairs["test"]) < 70
    assert not set(pairs["train"]["prompt"]) & set(pairs["test"]["prompt"])
    row = pairs["train"][0]
    assert row["completion"].startswith(row["prompt"] + ", oil painting")
    with pytest.raises(FileNotFoundError, match="DiffusionDBPairsConfig"):
        build_diffusiondb_pairs(DiffusionDBPairsConfig(path=str(tmp_path / "missing.txt")))


def test_real_diffusiondb_file_gives_pairs():
    pairs = build_diffusiondb_pairs(DiffusionDBPairsConfig(max_rows=300))
    assert len(pairs["train"]) + len(pairs["test"]) == 300
    assert all(keeps_subject_and_adds_modifiers(r["prompt"], r["completion"]) for r in pairs["train"])


def test_load_pairs_from_files(tmp_path):
    rows = [{"prompt": "a cat", "completion": "a cat, artstation"}, {"prompt": "a fox", "completion": "a fox, 8 k"}]
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "p.csv").write_text('prompt,completion,extra\na cat,"a cat, artstation",1\na fox,"a fox, 8 k",2\n')
    (tmp_path / "p.tsv").write_text("prompt\tcompletion\na cat\ta cat, artstation\na fox\ta fox, 8 k\n")
    for name in ("p.jsonl", "p.csv", "p.tsv"):
        loaded = load_pairs(tmp_path / name)
        assert loaded.column_names == ["prompt", "completion"]
        assert loaded[1] == rows[1]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"text": "x"}))
    with pytest.raises(ValueError, match="missing \\['completion', 'prompt'\\]"):
        load_pairs(tmp_path / "bad.jsonl")
    with pytest.raises(FileNotFoundError, match="no pairs file"):
        load_pairs(tmp_path / "absent.jsonl")


def test_keeps_subject_and_adds_modifiers():
    assert keeps_subject_and_adds_modifiers("a red fox", "a red fox, oil painting")
    assert not keeps_subject_and_adds_modifiers("a red fox", "a red fox")
    assert not keeps_subject_and_adds_modifiers("a red fox", "a blue fox, oil painting")


def test_lora_expander_saves_merged_and_reloads_with_same_log_probs(tokenizer, tmp_path):
    expander = make_expander(tokenizer, lora=True)
    out = expander.sample(["a cat", "a fox"], n=2, generator_seed=2)
    optimizer = torch.optim.SGD(expander.trainable_parameters(), lr=0.5)
    expander.policy_gradient_loss(out, torch.tensor([1.0, 0.0, 0.0, 1.0])).loss.backward()
    optimizer.step()
    expander.save_pretrained(tmp_path / "merged")
    reloaded = PromptExpander.from_pretrained(tmp_path / "merged", ExpanderSamplingConfig(max_new_tokens=12))
    assert not any("lora" in name for name, _ in reloaded.model.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(reloaded.log_probs(out), expander.log_probs(out), atol=1e-5, rtol=0)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        PromptExpander.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="no model directory"):
        PromptExpander.from_pretrained(tmp_path / "absent")


def test_beam_search_is_deterministic_and_equals_transformers_generate(tokenizer):
    expander = make_expander(tokenizer)
    prompts = ["a cat", "a red fox in the snow at night", "knight"]
    first = expander.beam_search(prompts, num_beams=3, batch_size=2)  # 2 chunks: left padding and the join
    assert first.texts == expander.beam_search(prompts, num_beams=3).texts and first.log_probs is None
    for i, prompt in enumerate(prompts):  # one prompt at a time, no padding: stock generate with num_beams
        ids = torch.tensor([expander.encode_prompts([prompt])[0]])
        out = expander.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=3,
                                      max_new_tokens=12, pad_token_id=tokenizer.pad_token_id,
                                      eos_token_id=tokenizer.eos_token_id)  # fmt: skip
        new = out[0, ids.shape[1] :].tolist()
        if tokenizer.eos_token_id in new:
            new = new[: new.index(tokenizer.eos_token_id) + 1]
        assert first.texts[i] == tokenizer.decode(new, skip_special_tokens=True).strip()
    greedy = expander.beam_search(prompts[:1], num_beams=1)
    assert greedy.texts == expander.beam_search(prompts[:1], num_beams=1).texts
    with pytest.raises(ValueError, match="num_beams=0 must be a positive integer"):
        expander.beam_search(prompts, num_beams=0)


@pytest.mark.parametrize("lora", [False, True])
def test_using_reference_samples_from_the_reference_weights_and_restores(tokenizer, lora):
    expander = make_expander(tokenizer, lora=lora)
    prompts = ["a cat", "a fox"]
    before = expander.sample(prompts, n=2, generator_seed=3)
    with torch.no_grad():  # move p_φ away from p_ref
        for p in expander.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(0)) * 2.0)
    trained = expander.model
    changed = expander.sample(prompts, n=2, generator_seed=3)
    assert changed.texts != before.texts
    with expander.using_reference():
        reference = expander.sample(prompts, n=2, generator_seed=3)
        with torch.no_grad():
            torch.testing.assert_close(expander.log_probs(before), before.log_probs, atol=1e-5, rtol=0)
    assert reference.texts == before.texts
    assert expander.model is trained and expander.sample(prompts, n=2, generator_seed=3).texts == changed.texts
    with pytest.raises(RuntimeError, match="inside"), expander.using_reference():
        raise RuntimeError("inside")
    assert expander.model is trained  # restored after an error too
