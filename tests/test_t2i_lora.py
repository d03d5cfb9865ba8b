"""LoRA in diffusers' format: stock pipelines load ours, we load it back, settings are checked."""

import json

import pytest
import torch
from conftest import make_generator
from safetensors import safe_open
from test_t2i_policy import perturb_lora

from t2i import LoraSettings, StableDiffusionPolicy
from t2i.tiny import build_tiny_pipeline


@pytest.fixture
def trained_policy(policy):
    policy.add_lora(LoraSettings(rank=4, alpha=8.0))
    perturb_lora(policy, scale=0.1)
    return policy


def test_saved_lora_loads_into_a_fresh_stock_pipeline_with_identical_images(trained_policy, tmp_path):
    trained_policy.save_lora(tmp_path)
    ours = trained_policy.sample("a red circle", num_inference_steps=5, generator=make_generator(11)).images
    stock = build_tiny_pipeline()
    before = stock("a red circle", num_inference_steps=5, eta=1.0, generator=make_generator(11), output_type="pt").images
    stock.load_lora_weights(tmp_path)
    after = stock("a red circle", num_inference_steps=5, eta=1.0, generator=make_generator(11), output_type="pt").images
    torch.testing.assert_close(after, ours, atol=1e-5, rtol=0)
    assert (before - ours).abs().max() > 1e-3  # the adapter matters


def test_file_is_diffusers_format_safetensors_with_adapter_metadata(trained_policy, tmp_path):
    path = trained_policy.save_lora(tmp_path)
    assert path.name == "pytorch_lora_weights.safetensors"
    with safe_open(path, "pt") as f:
        keys = list(f.keys())
        metadata = json.loads(f.metadata()["lora_adapter_metadata"])
    assert keys and all(k.startswith("unet.") and (".lora.down." in k or ".lora.up." in k) for k in keys)
    assert metadata["unet.r"] == 4 and metadata["unet.lora_alpha"] == 8.0


def test_policy_load_restores_the_same_trainable_weights(trained_policy, tmp_path):
    trained_policy.save_lora(tmp_path)
    fresh = StableDiffusionPolicy(build_tiny_pipeline())
    fresh.load_lora(tmp_path)
    original = {n: p for n, p in trained_policy.unet.named_parameters() if "lora_" in n}
    loaded = {n: p for n, p in fresh.unet.named_parameters() if "lora_" in n}
    assert original.keys() == loaded.keys()
    for name in original:
        torch.testing.assert_close(loaded[name], original[name], atol=0, rtol=0)
        assert loaded[name].requires_grad
    assert not any(p.requires_grad for n, p in fresh.unet.named_parameters() if "lora_" not in n)


def test_lora_errors_name_the_problem(policy, tmp_path):
    with pytest.raises(ValueError, match="LoRA rank=0"):
        LoraSettings(rank=0)
    with pytest.raises(ValueError, match="LoRA alpha=-1"):
        LoraSettings(alpha=-1)
    with pytest.raises(ValueError, match="no LoRA adapter named 'default'"):
        policy.save_lora(tmp_path)
    with pytest.raises(FileNotFoundError, match="no LoRA weights at"):
        policy.load_lora(tmp_path / "missing")
