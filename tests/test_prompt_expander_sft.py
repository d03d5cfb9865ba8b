"""Prompt expander SFT: TRL SFTTrainer on tiny pairs, completion-only boundary, pipeline reload, CLI config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset, is_progress_bar_enabled
from transformers import pipeline
from transformers.utils import logging as transformers_logging

from prompt_expander import PARROT_TEMPLATE, PromptExpander
from prompt_expander.data import to_sft_dataset
from prompt_expander.scratch import train_bpe_tokenizer
from prompt_expander.sft import SFTSettings, parse_settings, run_sft, uses_bf16

PAIRS = [
    {"prompt": "a red fox", "completion": "a red fox, oil painting, highly detailed, artstation"},
    {"prompt": "a castle on a hill", "completion": "a castle on a hill, matte painting, 8 k, concept art"},
    {"prompt": "portrait of a knight", "completion": "portrait of a knight, sharp focus, by greg rutkowski"},
    {"prompt": "a cat on a mat", "completion": "a cat on a mat, highly detailed, digital art"},
] * 4


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft")
    (root / "train.jsonl").write_text("\n".join(json.dumps(r) for r in PAIRS))
    (root / "eval.jsonl").write_text("\n".join(json.dumps(r) for r in PAIRS[:4]))
    settings = SFTSettings(
        output_dir=str(root / "model"),
        train_data=str(root / "train.jsonl"),
        eval_data=str(root / "eval.jsonl"),
        max_steps=8,
        batch_size=8,
        learning_rate=5e-3,
        warmup_steps=0,
        n_layer=1,
        n_embd=32,
        n_head=2,
        vocab_size=400,
        n_positions=160,
        sample_eval_prompts=2,
    )
    return settings, run_sft(settings)


def test_sft_lowers_held_out_loss_and_saves(sft_run):
    settings, result = sft_run
    assert result.train_rows == 16 and result.eval_rows == 4
    assert result.eval_loss_after < result.eval_loss_before - 0.1
    saved = json.loads((Path(settings.output_dir) / "sft_result.json").read_text())
    assert saved["eval_loss_after"] == pytest.approx(result.eval_loss_after)
    # TRL's SFTConfig turns bf16 on by default; without CUDA the run stays in float32 (and says so)
    assert not torch.cuda.is_available() and settings.bf16 is None and saved["bf16"] is False


@pytest.fixture
def transformers_bars_kept():
    """Restores transformers' progress-bar setting after a test that switches it."""
    was = transformers_logging.is_progress_bar_enabled()
    yield
    (transformers_logging.enable_progress_bar if was else transformers_logging.disable_progress_bar)()


def test_progress_off_prints_nothing_and_restores_the_libraries_bars(tmp_path, capfd, transformers_bars_kept):
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in PAIRS))
    (tmp_path / "eval.jsonl").write_text("\n".join(json.dumps(r) for r in PAIRS[:4]))
    common = dict(train_data=str(tmp_path / "train.jsonl"), eval_data=str(tmp_path / "eval.jsonl"), max_steps=4, batch_size=8,
                  warmup_steps=0, n_layer=1, n_embd=32, n_head=2, vocab_size=400, n_positions=160, sample_eval_prompts=2)  # fmt: skip
    transformers_logging.enable_progress_bar()  # as a fresh process has them (other tests may have turned them off)
    capfd.readouterr()
    run_sft(SFTSettings(output_dir=str(tmp_path / "quiet"), progress=False, **common))
    quiet = capfd.readouterr()
    assert quiet.out == "" and "it/s" not in quiet.err and "examples/s" not in quiet.err and "'loss'" not in quiet.err
    assert is_progress_bar_enabled() and transformers_logging.is_progress_bar_enabled()  # both libraries' bars on again
    transformers_logging.disable_progress_bar()  # a command quieted them: progress on leaves them off
    run_sft(SFTSettings(output_dir=str(tmp_path / "quiet2"), progress=True, **common))
    assert not transformers_logging.is_progress_bar_enabled() and "Writing model shards" not in capfd.readouterr().err
    transformers_logging.enable_progress_bar()
    run_sft(SFTSettings(output_dir=str(tmp_path / "loud"), progress=True, **common))
    loud = capfd.readouterr()
    assert "'train_loss'" in loud.out + loud.err  # the Trainer's log, as before


def test_bf16_is_what_the_settings_ask_and_else_where_cuda_supports_it():
    assert uses_bf16(SFTSettings(bf16=True)) is True and uses_bf16(SFTSettings(bf16=False)) is False
    expected = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    assert uses_bf16(SFTSettings()) == expected


def test_saved_model_reloads_through_stock_pipeline(sft_run):
    settings, _ = sft_run
    generator = pipeline("text-generation", model=settings.output_dir, device="cpu")
    expander = PromptExpander.from_pretrained(settings.output_dir)
    text = "Input: a red fox. This is a text input for image generation. Expand prompt for improving image quality. Output:"
    out = generator(text, max_new_tokens=6, do_sample=False, return_full_text=False)[0]["generated_text"]
    ids = expander.tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        greedy = expander.model.generate(**ids, max_new_tokens=6, do_sample=False, pad_token_id=expander.tokenizer.eos_token_id)
    assert out == expander.tokenizer.decode(greedy[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    for (name, a), (_, b) in zip(generator.model.named_parameters(), expander.model.named_parameters()):
        assert torch.equal(a, b), name


def test_completion_starts_on_a_token_boundary():
    # TRL's completion-only mask needs tokenize(prompt) to be a prefix of tokenize(prompt + completion)
    tokenizer = train_bpe_tokenizer([PARROT_TEMPLATE] * 5 + [r["completion"] for r in PAIRS], vocab_size=400)
    rows = to_sft_dataset(Dataset.from_list(PAIRS[:4]), PARROT_TEMPLATE)
    for row in rows:
        assert row["prompt"].endswith("Output:") and row["completion"].startswith(" ")
        prompt_ids = tokenizer(row["prompt"])["input_ids"]
        full_ids = tokenizer(row["prompt"] + row["completion"])["input_ids"]
        assert full_ids[: len(prompt_ids)] == prompt_ids


def test_settings_from_yaml_with_cli_override(tmp_path):
    (tmp_path / "sft.yaml").write_text("max_steps: 7\nlearning_rate: 0.01\n")
    settings = parse_settings(["--config", str(tmp_path / "sft.yaml"), "--max_steps", "3"])
    assert settings.max_steps == 3 and settings.learning_rate == 0.01
    (tmp_path / "bad.yaml").write_text("max_stepz: 7\n")
    with pytest.raises(ValueError, match="max_stepz"):
        parse_settings(["--config", str(tmp_path / "bad.yaml")])
    with pytest.raises(ValueError, match="lora_rank=-1"):
        SFTSettings(lora_rank=-1)
