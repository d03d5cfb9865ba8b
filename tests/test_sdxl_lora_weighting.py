"""SDXL LoRA in diffusers' SDXL format (stock pipelines load it), compel weighting on both encoders, one training iteration."""

import torch
from conftest import make_generator
from safetensors import safe_open
from test_parrot_train import REPO, quick_args
from test_t2i_policy import perturb_lora

from parrot.train import ParrotTrainer
from parrot.train_config import derived_quantities, load_train_config
from t2i import Guidance, LoraSettings, SizeConditioning, StableDiffusionXLPolicy
from t2i.prompt_weighting import WeightedPromptXLPolicy, with_prompt_weighting
from t2i.tiny_sdxl import build_tiny_sdxl_pipeline


def stock_images(pipe, prompt, seed, steps):
    return pipe(prompt, num_inference_steps=steps, eta=1.0, guidance_scale=5.0, generator=make_generator(seed), output_type="pt").images


def test_saved_lora_loads_into_a_fresh_stock_sdxl_pipeline_with_identical_images(tmp_path):
    policy = StableDiffusionXLPolicy(build_tiny_sdxl_pipeline())
    policy.add_lora(LoraSettings(rank=4, alpha=8.0))
    perturb_lora(policy, scale=0.1)
    path = policy.save_lora(tmp_path)
    with safe_open(path, "pt") as f:
        assert all(k.startswith("unet.") and (".lora.down." in k or ".lora.up." in k) for k in f.keys())
    ours = policy.sample("a red circle", guidance=Guidance.cfg(5.0), num_inference_steps=4, generator=make_generator(11)).images
    stock = build_tiny_sdxl_pipeline()
    before = stock_images(stock, "a red circle", 11, 4)
    stock.load_lora_weights(tmp_path)
    torch.testing.assert_close(stock_images(stock, "a red circle", 11, 4), ours, atol=1e-5, rtol=0)
    assert (before - ours).abs().max() > 1e-3  # the adapter matters


def test_weighting_acts_on_both_encoders_as_compel_defines_and_keeps_the_plain_pooled_embedding():
    sizes = SizeConditioning(original_size=(64, 64))
    policy = with_prompt_weighting(StableDiffusionXLPolicy(build_tiny_sdxl_pipeline(), sizes))
    assert type(policy) is WeightedPromptXLPolicy and policy.size_conditioning is sizes
    pipe = policy.pipeline
    plain = StableDiffusionXLPolicy.encode_prompts(policy, ["a red circle"])  # diffusers' own encoding
    through_compel = policy.compel(["a red circle"])  # a prompt without syntax, forced through compel
    torch.testing.assert_close(through_compel, plain["encoder_hidden_states"], atol=1e-6, rtol=0)
    empty = pipe.encode_prompt([""], device="cpu", do_classifier_free_guidance=False)[0]  # compel's reference point
    weighted = policy.encode_prompts(["a (red)1.5 circle"])
    red = slice(2, 5)  # byte-level tokens: <bos> a</w> r e d</w> c …
    states, base = weighted["encoder_hidden_states"][0], plain["encoder_hidden_states"][0]
    torch.testing.assert_close(states[red], empty[0, red] + 1.5 * (base[red] - empty[0, red]), atol=1e-5, rtol=0)
    torch.testing.assert_close(states[:2], base[:2], atol=1e-6, rtol=0)
    torch.testing.assert_close(states[5:], base[5:], atol=1e-6, rtol=0)
    assert (states[red, :32] - base[red, :32]).abs().max() > 1e-3 and (states[red, 32:] - base[red, 32:]).abs().max() > 1e-3
    torch.testing.assert_close(weighted["text_embeds"], plain["text_embeds"], atol=1e-6, rtol=0)  # pooled of "a red circle"
    mixed = policy.encode_prompts(["a (red)1.5 circle", ""])  # an empty negative stays all zeros, as in stock
    assert mixed["encoder_hidden_states"][1].abs().max() == 0 and mixed["text_embeds"][1].abs().max() == 0
    torch.testing.assert_close(mixed["encoder_hidden_states"][0], states, atol=1e-6, rtol=0)


def test_one_training_iteration_on_tiny_sdxl_writes_a_lora_stock_sdxl_loads(tmp_path):
    out = tmp_path / "run"
    config = load_train_config(quick_args(out, "--model.pipeline", "builtin:tiny_sdxl", "--iterations", "1", "--checkpoint_every", "1"))
    trainer = ParrotTrainer(config)
    assert type(trainer.parts.policy) is StableDiffusionXLPolicy
    trainer.train()
    lora = out / "checkpoints" / "checkpoint-000001" / "lora"
    stock = build_tiny_sdxl_pipeline()
    before = stock_images(stock, "a red circle", 3, 3)
    stock.load_lora_weights(lora)
    after = stock_images(stock, "a red circle", 3, 3)
    assert torch.isfinite(after).all() and (after - before).abs().max() > 0  # the update moved the UNet
    policy = StableDiffusionXLPolicy(build_tiny_sdxl_pipeline())
    policy.load_lora(lora, trainable=False)
    ours = policy.sample("a red circle", guidance=Guidance.cfg(5.0), num_inference_steps=3, generator=make_generator(3)).images
    torch.testing.assert_close(ours, after, atol=1e-5, rtol=0)


def test_sdxl_config_file_parses_and_fits_its_minibatches():
    config = load_train_config(["--config", str(REPO / "configs" / "sdxl.yaml")])
    assert config.model.pipeline == "stabilityai/stable-diffusion-xl-base-1.0" and config.model.gradient_checkpointing
    assert derived_quantities(config, 1).images_per_minibatch == 2
