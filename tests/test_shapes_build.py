"""The --quick build end to end: every model reloads with its library's stock from_pretrained."""

import json

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel, CLIPTokenizer, GPT2LMHeadModel

from parrot.train import ParrotTrainer
from parrot.train_config import load_train_config
from prompt_expander.expander import PromptExpander
from rewards import load_reward
from shapes.build import build_world, main, quick_config


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # toy-sized ops: extra threads only add contention on a shared CPU
    try:
        state = build_world(out, quick_config(seed=0), progress=False)
    finally:
        torch.set_num_threads(threads)
    return out, state


def test_quick_build_writes_card_and_figures(world):
    out, state = world
    record = json.loads((out / "world.json").read_text())
    for key in ("clip_top1_train_pairs", "clip_top1_held_out_pairs", "t2i_short_train_colour_shape", "t2i_detailed_all"):
        assert 0.0 <= record["figures"][key] <= 1.0
    assert set(record["seconds"]) == {
        "data", "clip", "vae", "unet", "t2i_eval", "aesthetic", "preference", "sentiment", "alignment", "expander"
    }  # fmt: skip
    for key in ("sentiment_held_out_accuracy", "preference_held_out_accuracy", "expander_held_out_well_formed"):
        assert 0.0 <= record["figures"][key] <= 1.0
    assert record["figures"]["alignment_clip_score_matched"] <= 1.0 and "aesthetic_held_out_r2" in record["figures"]
    card = (out / "WORLD.md").read_text()
    assert "| clip_top1_train_pairs |" in card and "| sd/ |" in card


def test_saved_clip_reloads_and_matches(world):
    out, state = world
    clip = CLIPModel.from_pretrained(out / "clip")
    tokenizer = CLIPTokenizer.from_pretrained(out / "clip")
    processor = CLIPImageProcessor.from_pretrained(out / "clip")
    tokens = tokenizer(["a red circle"], padding="max_length", return_tensors="pt")
    pixels = processor(images=[np.zeros((32, 32, 3), dtype=np.uint8)], return_tensors="pt").pixel_values
    assert pixels.shape == (1, 3, 32, 32)
    with torch.no_grad():
        reloaded = clip(input_ids=tokens.input_ids, pixel_values=pixels).logits_per_image
        original = state.clip(input_ids=tokens.input_ids, pixel_values=pixels).logits_per_image
    torch.testing.assert_close(reloaded, original)


def test_stock_pipeline_samples_from_the_saved_directory(world):
    out, state = world
    pipeline = StableDiffusionPipeline.from_pretrained(out / "sd", safety_checker=None, requires_safety_checker=False)
    assert type(pipeline.scheduler).__name__ == "DDIMScheduler"
    images = pipeline(
        ["a red circle", "a small blue square at the top on a black background"],
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    assert images.shape == (2, 32, 32, 3) and np.isfinite(images).all()
    torch.testing.assert_close(pipeline.text_encoder.embeddings.token_embedding.weight, state.clip.text_model.embeddings.token_embedding.weight)


def test_build_refuses_a_non_empty_directory(tmp_path):
    (tmp_path / "something").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        main(["--out", str(tmp_path), "--quick"])


def test_same_seed_rebuilds_the_same_figures(world, tmp_path):
    out, state = world
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        again = build_world(tmp_path / "again", quick_config(seed=0), progress=False)
    finally:
        torch.set_num_threads(threads)
    assert again.figures == state.figures


def test_every_reward_reloads_through_the_registry_and_scores(world):
    out, _ = world
    images = torch.rand(3, 3, 32, 32)
    prompts = ["a red circle", "a blue square", "a small green triangle at the top on a black background"]
    rewards = {
        "laion_aesthetic": load_reward("laion_aesthetic", clip_model=str(out / "clip"), head_path=str(out / "aesthetic" / "head.safetensors")),
        "preference": load_reward("preference", path=str(out / "preference")),
        "clip_score": load_reward("clip_score", model=str(out / "clip")),
        "sentiment": load_reward("sentiment", model=str(out / "clip"), probe_path=str(out / "sentiment" / "probe.safetensors")),
    }  # fmt: skip
    scores = {name: reward(images, prompts) for name, reward in rewards.items()}
    for name, value in scores.items():
        assert value.shape == (3,) and torch.isfinite(value).all(), name
    assert ((scores["sentiment"] >= 0) & (scores["sentiment"] <= 1)).all()
    assert (scores["clip_score"].abs() <= 1 + 1e-5).all()
    # the preference scorer reads the prompt: another prompt, another score
    assert not torch.equal(rewards["preference"](images, ["a yellow circle"] * 3), scores["preference"])


def test_expander_reloads_with_stock_transformers(world):
    out, _ = world
    model = GPT2LMHeadModel.from_pretrained(out / "expander")
    tokenizer = AutoTokenizer.from_pretrained(out / "expander")
    ids = tokenizer(["Input: a red circle."], return_tensors="pt").input_ids
    assert model(ids).logits.shape == (1, ids.shape[1], len(tokenizer))
    expansions = PromptExpander.from_pretrained(out / "expander").sample(["a red circle"], n=2, max_new_tokens=8, generator_seed=0)
    assert len(expansions.texts) == 2 and all(isinstance(t, str) for t in expansions.texts)


def test_shapes_preset_trains_one_iteration_on_the_built_world(world, tmp_path):
    out, _ = world
    config = load_train_config(
        ["--preset", "shapes", "--world", str(out), "--output_dir", str(tmp_path / "run"), "--iterations", "1",
         "--sampling.prompts_per_process", "1", "--sampling.num_steps", "2", "--t2i.inner_epochs", "1",
         "--expander.sampling.max_new_tokens", "6", "--logging.log_with", "none", "--evaluation.enabled", "false"]
    )  # fmt: skip
    assert config.model.pipeline == "{world}/sd"
    trainer = ParrotTrainer(config)
    assert [r.name for r in trainer.evaluator.rewards] == ["laion_aesthetic", "preference", "clip_score", "sentiment"]
    trainer.train()
    assert (tmp_path / "run" / "final" / "expander" / "config.json").is_file()
