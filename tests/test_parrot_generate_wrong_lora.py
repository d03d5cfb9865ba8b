"""The "wrong" negative LoRA recipe: bad images, Dreambooth-style training, diffusers-format output."""

import json

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from parrot.generate import main as generate
from parrot.models import build_policy
from parrot.wrong_lora import WrongLoraConfig, bad_images, degrade, main
from rewards import load_reward
from t2i import Guidance
from t2i.tiny import build_tiny_pipeline


def test_recipe_trains_a_lora_that_a_stock_pipeline_loads_and_generation_uses(tmp_path):
    out = tmp_path / "wrong"
    summary = main(
        [
            "--source",
            "degraded",
            "--prompts",
            "a red circle",
            "a blue square",
            "--keep",
            "2",
            "--num_steps",
            "2",
            "--train_steps",
            "3",
            "--train_batch_size",
            "2",
            "--lr",
            "1e-2",
            "--out",
            str(out),
        ]
    )
    assert summary["bad_images"] == 4 and len(list((out / "images").glob("*.png"))) == 4
    assert json.loads((out / "wrong_lora.json").read_text())["config"]["trigger"] == "wrong"
    weights = load_file(out / "lora" / "pytorch_lora_weights.safetensors")
    ups = [v for k, v in weights.items() if "lora_B" in k or "lora.up" in k]
    assert ups and any(v.abs().max() > 0 for v in ups)  # B starts at 0: training moved it

    stock = build_tiny_pipeline()
    latents, t = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor(500)
    embeds = stock.encode_prompt(["wrong"], "cpu", 1, False)[0]
    before = stock.unet(latents, t, encoder_hidden_states=embeds).sample
    stock.load_lora_weights(str(out / "lora"))
    after = stock.unet(latents, t, encoder_hidden_states=embeds).sample
    assert not torch.allclose(before, after)

    common = ["--prompt", "a red circle", "--negative_prompt", "wrong", "--num_steps", "2"]
    generate(common + ["--out", str(tmp_path / "base")])
    generate(common + ["--lora", str(out / "lora"), "--out", str(tmp_path / "with")])
    base = np.asarray(Image.open(tmp_path / "base" / "images" / "00000.png"))
    with_lora = np.asarray(Image.open(tmp_path / "with" / "images" / "00000.png"))
    assert not np.array_equal(base, with_lora)


def test_lowest_reward_source_keeps_the_worst_candidates(tmp_path):
    config = WrongLoraConfig(
        prompts=("a red circle",), source="lowest_reward", rank_by="jpeg_compressibility", candidates=3, keep=1, num_steps=2, out=tmp_path
    )
    policy = build_policy("builtin:tiny", "float32", "cpu")
    (worst,) = bad_images(policy, config, list(config.prompts))
    candidates = policy.sample(
        ["a red circle"] * 3,
        guidance=Guidance.cfg(7.5),
        num_inference_steps=2,
        eta=0.0,
        compute_log_probs=False,
        generator=torch.Generator().manual_seed(0),
    ).images
    scores = load_reward("jpeg_compressibility")(candidates, ["a red circle"] * 3)
    torch.testing.assert_close(worst, candidates[int(scores.argmin())])


def test_degrade_blurs_and_adds_noise():
    image = torch.zeros(1, 3, 16, 16)
    image[..., 8:, :] = 1.0  # a sharp horizontal edge
    blurred = degrade(image, blur_radius=2.0, noise_std=0.0, generator=torch.Generator().manual_seed(0))
    assert blurred[0, 0, 7, 5] > 0.1 and blurred[0, 0, 8, 5] < 0.9  # the edge is smeared
    torch.testing.assert_close(blurred.mean(dim=(2, 3)), image.mean(dim=(2, 3)), atol=1e-6, rtol=0)
    noisy = degrade(image, blur_radius=0.0, noise_std=0.2, generator=torch.Generator().manual_seed(0))
    assert 0.05 < (noisy - image).abs().mean() < 0.2


def test_prompted_source_asks_the_base_model_for_failures_with_compel_weights(tmp_path):
    from compel import Compel

    from parrot.wrong_lora import failure_prompt

    assert failure_prompt("a red circle", ("blurry", " faded ", ""), 1.3) == "a red circle, (blurry)1.3, (faded)1.3"
    config = WrongLoraConfig(prompts=("a red circle", "a blue square"), bad_phrases=("blurry", "distorted"), bad_weight=1.5,
                             keep=2, num_steps=3, guidance_scale=5.0, seed=4, out=tmp_path)  # fmt: skip
    policy = build_policy("builtin:tiny", "float32", "cpu")
    images = bad_images(policy, config, list(config.prompts))
    assert images.shape[0] == 4  # keep images per prompt
    # the same images from a stock pipeline given compel's embeddings of "c, (blurry)1.5, (distorted)1.5", DDIM η = 0
    pipeline = build_tiny_pipeline()
    compel = Compel(tokenizer=pipeline.tokenizer, text_encoder=pipeline.text_encoder, truncate_long_prompts=True)
    asked = [f"{p}, (blurry)1.5, (distorted)1.5" for p in config.prompts for _ in range(2)]
    with torch.no_grad():
        embeds, negative = compel(asked), compel([""] * 4)
    stock = pipeline(prompt_embeds=embeds, negative_prompt_embeds=negative, guidance_scale=5.0, num_inference_steps=3, eta=0.0,
                     generator=[torch.Generator().manual_seed(4 + i) for i in range(4)], output_type="pt").images  # fmt: skip
    torch.testing.assert_close(images, stock, atol=1e-5, rtol=1e-5)
    plain = policy.sample(list(asked[::2]), num_inference_steps=3, eta=0.0, compute_log_probs=False, guidance=Guidance.cfg(5.0),
                          generator=[torch.Generator().manual_seed(4 + i) for i in (0, 2)]).images  # fmt: skip
    assert (plain - images[::2]).abs().max() > 1e-3  # the weights matter: the unweighted text gives other images


def test_prompted_source_refuses_an_empty_phrase_list(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="bad_phrases is empty"):
        WrongLoraConfig(bad_phrases=(" ",), out=tmp_path)
