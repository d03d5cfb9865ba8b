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
    config = WrongLoraConfig(prompts=("a red circle",), rank_by="jpeg_compressibility", candidates=3, keep=1, num_steps=2, out=tmp_path)
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
