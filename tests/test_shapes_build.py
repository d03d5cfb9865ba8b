"""The --quick build end to end: every model reloads with its library's stock from_pretrained."""

import json

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

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
    assert set(record["seconds"]) == {"data", "clip", "vae", "unet", "t2i_eval"}
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
