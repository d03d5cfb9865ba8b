"""Full-size architectures with random weights: parameter counts against the published ones, the stock
pipelines they build, their in-memory tokenizers, and a shrunken copy that samples like its stock pipeline."""

import json

import pytest
import torch
from conftest import make_generator
from diffusers import FluxPipeline, StableDiffusion3Pipeline, StableDiffusionPipeline, StableDiffusionXLPipeline

from parrot.models import build_policy
from t2i import Guidance
from t2i.families import policy_of_pipeline
from t2i.random_init import (
    ARCHITECTURES_DIR,
    architecture_names,
    build_random_pipeline,
    character_level_t5_tokenizer,
    parameter_counts,
    read_architecture,
)

# Published parameter counts (the models' safetensors on the hub; SD3.5 Medium: see the note below)
SD_VAE, FLOW_VAE = 83_653_863, 83_819_683  # 4- and 16-channel latents (SD3/FLUX drop quant_conv / post_quant_conv)
CLIP_L, CLIP_L_PROJ, CLIP_BIGG_PROJ, T5_XXL = 123_060_480, 123_650_304, 694_659_840, 4_762_310_656
PUBLISHED = {
    "sd15": {"unet": 859_520_964, "vae": SD_VAE, "text_encoder": CLIP_L},
    "sdxl_base": {"unet": 2_567_463_684, "vae": SD_VAE, "text_encoder": CLIP_L, "text_encoder_2": CLIP_BIGG_PROJ},
    # Stability's model card says "2.5 billion parameters" (rounded, about 11 % above); the public
    # transformer/config.json (24 MMDiT-X layers, 13 of them with a second attention, pos_embed_max_size 384) gives this
    "sd35_medium": {"transformer": 2_243_171_520, "vae": FLOW_VAE, "text_encoder": CLIP_L_PROJ, "text_encoder_2": CLIP_BIGG_PROJ,
                    "text_encoder_3": T5_XXL},
    "flux_dev": {"transformer": 11_901_408_320, "vae": FLOW_VAE, "text_encoder": CLIP_L, "text_encoder_2": T5_XXL},
    "clip_vit_l14": {"model": 427_616_513},
    "gpt2": {"model": 124_439_808},
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_counts_on_the_meta_device_match_the_published_ones(name):
    counts = parameter_counts(name)
    assert set(counts) == set(PUBLISHED[name])
    for component, published in PUBLISHED[name].items():
        assert abs(counts[component] / published - 1) < 0.01, (component, counts[component], published)


def test_every_shipped_architecture_is_tested_and_records_its_published_counts():
    assert architecture_names() == sorted(PUBLISHED)
    for name in architecture_names():
        assert read_architecture(name)["published_parameters"] == PUBLISHED[name]


@pytest.mark.parametrize(
    ("name", "pipeline_class", "skip"),
    [("sd15", StableDiffusionPipeline, ()), ("sdxl_base", StableDiffusionXLPipeline, ()),
     ("sd35_medium", StableDiffusion3Pipeline, ("text_encoder_3",)), ("flux_dev", FluxPipeline, ())],
)  # fmt: skip
def test_meta_builds_are_stock_pipelines_with_nothing_allocated(name, pipeline_class, skip):
    pipe = build_random_pipeline(name, device="meta", skip=skip)
    assert type(pipe) is pipeline_class
    model = pipe.unet if hasattr(pipe, "unet") else pipe.transformer
    assert all(p.device.type == "meta" for p in model.parameters())
    for component in skip:
        assert getattr(pipe, component) is None
    assert pipe.tokenizer.model_max_length == 77


def test_t5_tokenizer_pads_and_ends_like_t5_and_round_trips():
    tokenizer = character_level_t5_tokenizer(16)
    ids = tokenizer(["a red circle", "Zebra!"], padding="max_length", max_length=16, truncation=True)["input_ids"]
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id) == (0, 1)
    assert [row[row.index(1) :] for row in ids] == [[1] + [0] * (15 - row.index(1)) for row in ids]
    assert tokenizer.batch_decode(ids, skip_special_tokens=True) == ["a red circle", "Zebra!"]


def test_unknown_names_and_classes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown architecture 'sd9'"):
        read_architecture("sd9")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"components": {"model": {"class": "os.system", "config": {}}}}))
    with pytest.raises(ValueError, match="names class 'os.system'"):
        read_architecture(str(bad))
    bad.write_text(json.dumps({"pipeline_class": "DiffusionPipeline", "components": {}}))
    with pytest.raises(ValueError, match="pipeline_class 'DiffusionPipeline' is not one of"):
        read_architecture(str(bad))
    with pytest.raises(ValueError, match="the built-in pipelines are"):
        build_policy("builtin:sd15", "float32", "cpu")


def shrunken_sd15(tmp_path):
    """sd15.json with toy sizes: the same classes and code paths, written as a user's architecture file."""
    architecture = json.loads((ARCHITECTURES_DIR / "sd15.json").read_text())
    parts = architecture["components"]
    parts["unet"]["config"] |= {"sample_size": 8, "block_out_channels": [32, 64], "layers_per_block": 1, "norm_num_groups": 8,
                                "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "cross_attention_dim": 32,
                                "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"]}  # fmt: skip
    parts["vae"]["config"] |= {"block_out_channels": [16, 32], "norm_num_groups": 8, "layers_per_block": 1, "sample_size": 16,
                               "down_block_types": ["DownEncoderBlock2D"] * 2, "up_block_types": ["UpDecoderBlock2D"] * 2}  # fmt: skip
    parts["text_encoder"]["config"] |= {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    path = tmp_path / "sd15_toy.json"
    path.write_text(json.dumps(architecture))
    return path


def test_a_built_pipeline_samples_through_the_policy_exactly_as_its_stock_call(tmp_path):
    pipe = build_random_pipeline(str(shrunken_sd15(tmp_path)))
    pipe.set_progress_bar_config(disable=True)
    policy = policy_of_pipeline(pipe)  # converts the PNDM scheduler to DDIM, as for a hub SD 1.5
    stock = pipe(["a red circle"], num_inference_steps=3, eta=1.0, guidance_scale=5.0, generator=make_generator(1), output_type="pt")
    ours = policy.sample(["a red circle"], num_inference_steps=3, eta=1.0, guidance=Guidance.cfg(5.0), generator=make_generator(1))
    torch.testing.assert_close(ours.images, stock.images, atol=1e-5, rtol=0)


def test_bf16_build_casts_weights_and_seed_fixes_them(tmp_path):
    path = str(shrunken_sd15(tmp_path))
    a, b = build_random_pipeline(path, dtype=torch.bfloat16), build_random_pipeline(path, dtype=torch.bfloat16)
    assert {p.dtype for p in a.unet.parameters()} == {torch.bfloat16}
    assert all(torch.equal(p, q) for p, q in zip(a.unet.parameters(), b.unet.parameters()))
    c = build_random_pipeline(path, dtype=torch.bfloat16, seed=1)
    assert not torch.equal(next(a.unet.parameters()), next(c.unet.parameters()))


TOY_TOWER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "projection_dim": 32}
TOY_T5 = {"d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 1, "num_heads": 4}
TOY_VAE = {"block_out_channels": [16, 32], "norm_num_groups": 8, "layers_per_block": 1, "sample_size": 32,
           "down_block_types": ["DownEncoderBlock2D"] * 2, "up_block_types": ["UpDecoderBlock2D"] * 2}  # fmt: skip
TOY_TRANSFORMERS = {
    "sd35_medium": {"num_layers": 2, "attention_head_dim": 8, "num_attention_heads": 2, "joint_attention_dim": 32, "sample_size": 16,
                    "caption_projection_dim": 16, "pooled_projection_dim": 64, "pos_embed_max_size": 16, "dual_attention_layers": [0]},
    "flux_dev": {"num_layers": 1, "num_single_layers": 1, "attention_head_dim": 16, "num_attention_heads": 2, "joint_attention_dim": 32,
                 "pooled_projection_dim": 32, "axes_dims_rope": [4, 6, 6]},
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(TOY_TRANSFORMERS))
def test_flow_pipelines_run_their_stock_call_with_the_in_memory_tokenizers(tmp_path, name):
    """SD3 (CLIP-L, CLIP-G, T5) and FLUX (CLIP-L, T5) shrunken: the stock pipelines encode, denoise and decode."""
    pipe = build_random_pipeline(str(shrunken_flow(tmp_path, name)))
    pipe.set_progress_bar_config(disable=True)
    images = pipe(["a red circle"], num_inference_steps=2, height=32, width=32, output_type="pt", generator=make_generator(0)).images
    assert images.shape == (1, 3, 32, 32) and torch.isfinite(images).all()


def test_a_built_sd35_pipeline_samples_through_its_family_as_its_stock_euler_call(tmp_path):
    """SD3.5 Medium's MMDiT-X (second attention, RMS qk-norm) with CLIP-L, CLIP-G and T5, shrunken: a = 0 is stock."""
    pipe = build_random_pipeline(str(shrunken_flow(tmp_path, "sd35_medium")))
    pipe.set_progress_bar_config(disable=True)
    policy = policy_of_pipeline(pipe)
    assert type(policy).__name__ == "StableDiffusion3Policy"
    stock = pipe(["a red circle"], num_inference_steps=3, guidance_scale=5.0, generator=make_generator(1), output_type="pt")
    ours = policy.sample(
        ["a red circle"], num_inference_steps=3, eta=0.0, compute_log_probs=False, guidance=Guidance.cfg(5.0), generator=make_generator(1)
    )
    torch.testing.assert_close(ours.images, stock.images, atol=1e-5, rtol=0)


def test_a_built_flux_dev_pipeline_samples_through_its_family_as_its_stock_euler_call(tmp_path):
    """FLUX.1-dev's layout (guidance embedding, dynamic shift, CLIP-L pooled + T5 tokens), shrunken: a = 0 is stock."""
    pipe = build_random_pipeline(str(shrunken_flow(tmp_path, "flux_dev")))
    pipe.set_progress_bar_config(disable=True)
    policy = policy_of_pipeline(pipe)
    assert type(policy).__name__ == "FluxPolicy" and policy.unet.config.guidance_embeds
    stock = pipe(["a red circle"], num_inference_steps=3, height=32, width=32, generator=make_generator(1), output_type="pt")
    ours = policy.sample(["a red circle"], num_inference_steps=3, height=32, width=32, eta=0.0, compute_log_probs=False,
                         generator=make_generator(1))  # fmt: skip
    torch.testing.assert_close(ours.images, stock.images, atol=1e-5, rtol=0)


def shrunken_flow(tmp_path, name):
    """The flow architecture ``name`` with toy text towers, T5, VAE and transformer."""
    architecture = json.loads((ARCHITECTURES_DIR / f"{name}.json").read_text())
    for spec in architecture["components"].values():
        changes = {"CLIPTextModel": TOY_TOWER, "CLIPTextModelWithProjection": TOY_TOWER, "T5EncoderModel": TOY_T5, "AutoencoderKL": TOY_VAE}
        spec.setdefault("config", {}).update(changes.get(spec["class"], {}))
    architecture["components"]["transformer"]["config"] |= TOY_TRANSFORMERS[name]
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(architecture))
    return path


def shrunken_sdxl(tmp_path):
    """sdxl_base.json at toy sizes: two text towers (widths 32 + 32 = the UNet's cross-attention), pooled 32 + 6 time ids."""
    architecture = json.loads((ARCHITECTURES_DIR / "sdxl_base.json").read_text())
    parts = architecture["components"]
    parts["unet"]["config"] |= {"sample_size": 8, "block_out_channels": [32, 64], "layers_per_block": 1, "norm_num_groups": 8,
                                "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"], "transformer_layers_per_block": [1, 1],
                                "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"], "attention_head_dim": [2, 4],
                                "cross_attention_dim": 64, "addition_time_embed_dim": 8,
                                "projection_class_embeddings_input_dim": 32 + 6 * 8}  # fmt: skip
    parts["vae"]["config"] |= TOY_VAE | {"sample_size": 16}
    for tower in ("text_encoder", "text_encoder_2"):
        parts[tower]["config"] |= TOY_TOWER
    path = tmp_path / "sdxl_toy.json"
    path.write_text(json.dumps(architecture))
    return path


def test_a_built_sdxl_pipeline_samples_through_its_family_exactly_as_its_stock_call(tmp_path):
    pipe = build_random_pipeline(str(shrunken_sdxl(tmp_path)))
    pipe.set_progress_bar_config(disable=True)
    policy = policy_of_pipeline(pipe)
    assert type(policy).__name__ == "StableDiffusionXLPolicy"
    stock = pipe(["a red circle"], num_inference_steps=3, eta=1.0, guidance_scale=5.0, generator=make_generator(1), output_type="pt")
    ours = policy.sample(["a red circle"], num_inference_steps=3, eta=1.0, guidance=Guidance.cfg(5.0), generator=make_generator(1))
    torch.testing.assert_close(ours.images, stock.images, atol=1e-5, rtol=0)


def test_an_architecture_file_can_leave_a_component_out(tmp_path):
    from t2i.random_init import ARCHITECTURES_DIR, build_random_pipeline, parameter_counts

    architecture = json.loads((ARCHITECTURES_DIR / "sd35_medium.json").read_text())
    architecture["components"]["text_encoder_3"] = architecture["components"]["tokenizer_3"] = None  # SD3.5 without T5
    path = tmp_path / "sd35_medium_no_t5.json"
    path.write_text(json.dumps(architecture))
    pipeline = build_random_pipeline(str(path), device="meta")
    assert type(pipeline).__name__ == "StableDiffusion3Pipeline" and pipeline.text_encoder_3 is None and pipeline.tokenizer_3 is None
    counts = parameter_counts(str(path))
    assert "text_encoder_3" not in counts and counts["transformer"] == parameter_counts("sd35_medium")["transformer"]
