"""Pivotal tuning's trainable token: only its row learns, and the saved embeddings load into stock pipelines."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from parrot.generate import main as generate
from parrot.wrong_lora import main as wrong_lora
from t2i.textual_inversion import EMBEDDINGS_NAME, add_trainable_token, load_token_embeddings, save_token_embeddings
from t2i.tiny import build_tiny_pipeline
from t2i.tiny_sdxl import build_tiny_sdxl_pipeline


def _embedding(pipeline, encoder, tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False).input_ids
    return encoder.get_input_embeddings().weight[ids]


def _encode(pipeline, text):
    return pipeline.encode_prompt(text, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False)[0]


def test_only_the_new_tokens_row_learns(tmp_path):
    pipeline = build_tiny_pipeline()
    before = pipeline.text_encoder.get_input_embeddings().weight.detach().clone()
    (weight,) = add_trainable_token(pipeline, "<wrong>", "wrong")
    row = pipeline.tokenizer.convert_tokens_to_ids("<wrong>")
    assert row == before.shape[0] and weight.shape[0] == before.shape[0] + 1  # one new row
    torch.testing.assert_close(weight[row].detach(), before[pipeline.tokenizer("wrong", add_special_tokens=False).input_ids].mean(0))
    optimizer = torch.optim.AdamW([weight], lr=0.1, weight_decay=0.0)
    embeds = pipeline.encode_prompt(["<wrong>", "a red circle"], "cpu", 1, False)[0]
    embeds.square().mean().backward()
    assert weight.grad[:row].abs().max() == 0 and weight.grad[row].abs().max() > 0
    optimizer.step()
    assert torch.equal(weight[:row].detach(), before)  # every old row as it was
    assert not torch.equal(weight[row].detach(), before[pipeline.tokenizer("wrong", add_special_tokens=False).input_ids].mean(0))
    with pytest.raises(ValueError, match="already in the tokenizer's vocabulary"):
        add_trainable_token(pipeline, "<wrong>", "wrong")


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_saved_embeddings_load_into_a_stock_pipeline_with_diffusers_loader(tmp_path, family):
    build = build_tiny_pipeline if family == "sd" else build_tiny_sdxl_pipeline
    trained = build()
    for weight in add_trainable_token(trained, "<bad>", "blurry"):
        with torch.no_grad():
            weight[-1] += 0.5  # a "trained" row
    path = save_token_embeddings(trained, "<bad>", tmp_path / "emb")
    assert path.name == EMBEDDINGS_NAME
    stock = build()
    if family == "sd":
        stock.load_textual_inversion(str(tmp_path / "emb"))  # diffusers' own loader: the token is the file's only key
    else:  # the advanced Dreambooth script's layout, loaded as diffusers documents it
        from safetensors.torch import load_file

        state = load_file(str(path))
        stock.load_textual_inversion(state["clip_l"], token="<bad>", text_encoder=stock.text_encoder, tokenizer=stock.tokenizer)
        stock.load_textual_inversion(state["clip_g"], token="<bad>", text_encoder=stock.text_encoder_2, tokenizer=stock.tokenizer_2)
    ours = build()
    assert load_token_embeddings(ours, tmp_path / "emb") == "<bad>"
    with torch.no_grad():
        want = _encode(trained, "a <bad> circle")
        torch.testing.assert_close(_encode(stock, "a <bad> circle"), want)
        torch.testing.assert_close(_encode(ours, "a <bad> circle"), want)
        assert (want - _encode(build(), "a <bad> circle")).abs().max() > 1e-3  # the token's embedding shows in the encoding
    other = build_tiny_sdxl_pipeline() if family == "sd" else build_tiny_pipeline()
    with pytest.raises(ValueError, match="made for another model family"):
        load_token_embeddings(other, tmp_path / "emb")


def test_wrong_lora_pivotal_tuning_end_to_end(tmp_path):
    out = tmp_path / "wrong"
    summary = wrong_lora(["--source", "degraded", "--prompts", "a red circle", "--keep", "2", "--num_steps", "2", "--train_steps", "3",
                          "--train_batch_size", "2", "--lr", "1e-2", "--pivotal", "true", "--out", str(out)])  # fmt: skip
    assert summary["negative_prompt"] == "<wrong>" and json.loads((out / "wrong_lora.json").read_text())["negative_prompt"] == "<wrong>"
    # the token learned: its embedding is no longer the initialiser's ("wrong")
    stock = build_tiny_pipeline()
    init = _embedding(stock, stock.text_encoder, stock.tokenizer, "wrong").mean(0)
    stock.load_textual_inversion(str(out / "embeddings"))
    learned = _embedding(stock, stock.text_encoder, stock.tokenizer, "<wrong>")[0]
    assert (learned - init).abs().max() > 1e-4
    # generation with the token and the LoRA equals the stock pipeline with both loaded
    stock.load_lora_weights(str(out / "lora"))
    generate(["--prompt", "a red circle", "--negative_prompt", "<wrong>", "--num_steps", "2", "--lora", str(out / "lora"),
              "--textual_inversion", str(out / "embeddings"), "--prompt_weighting", "false", "--out", str(tmp_path / "gen")])  # fmt: skip
    ours = np.asarray(Image.open(tmp_path / "gen" / "images" / "00000.png")).astype(float)
    image = stock("a red circle", negative_prompt="<wrong>", num_inference_steps=2, eta=0.0, guidance_scale=7.5,
                  generator=torch.Generator().manual_seed(0), output_type="np").images[0]  # fmt: skip
    assert np.abs(ours - np.round(image * 255)).max() <= 1
