"""The --quick build end to end: every model reloads with its library's stock from_pretrained."""

import itertools
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel, CLIPTokenizer, GPT2LMHeadModel

from parrot.train import ParrotTrainer
from parrot.train_config import load_train_config
from parrot_base.config import ConfigError
from prompt_expander.expander import PromptExpander
from rewards import load_reward
from shapes.build import BuildState, build_world, main, quick_config, stage_clip, stage_data
from shapes.build_config import BuildConfig, build_config_with
from shapes.card import REWARDS, best_expansion, expected_rating
from shapes.data import HELD_OUT_PAIRS, short_prompt
from shapes.sd import WORD_READINGS
from shapes.world_card import _load_reading, world_card_text


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


def test_quick_build_writes_every_directory_and_figure(world):
    out, state = world
    assert {p.name for p in out.iterdir() if p.is_dir()} == {
        "aesthetic", "clip", "expander", "preference", "prompts", "sd", "sd3", "sdxl", "sentiment"
    }  # fmt: skip
    assert (out / "prompts" / "held_out.txt").read_text().splitlines() == [f"a {c} {s}" for c, s in HELD_OUT_PAIRS]
    assert (out / "aesthetic" / "head.safetensors").is_file() and (out / "sentiment" / "probe.safetensors").is_file()
    record = json.loads((out / "world.json").read_text())
    assert record["figures"] == pytest.approx(state.figures)
    for key in ("clip_top1_train_pairs", "clip_top1_held_out_pairs", "t2i_short_train_colour_shape", "t2i_detailed_all"):
        assert 0.0 <= record["figures"][key] <= 1.0
    assert list(record["seconds"]) == [
        "data", "clip", "vae", "unet", "identifiers", "t2i_eval", "sdxl", "sd3", "aesthetic", "preference", "sentiment",
        "alignment", "expander", "card",
    ]  # fmt: skip
    for key in ("sentiment_held_out_accuracy", "preference_held_out_accuracy", "expander_held_out_well_formed"):
        assert 0.0 <= record["figures"][key] <= 1.0
    assert record["figures"]["alignment_clip_score_matched"] <= 1.0 and "aesthetic_held_out_r2" in record["figures"]
    # the data stage's shares are those of the training set it generated
    train = state.train
    assert record["figures"]["train_short_fraction"] == sum(e.mode == "short" for e in train) / len(train)
    assert record["figures"]["train_tagged_fraction"] == sum(e.mode == "tagged" for e in train) / len(train)
    assert record["figures"]["train_prefixed_fraction"] == sum(bool(e.prefix) for e in train) / len(train)
    # the quality-word figures: one per word of shapes.sd.WORD_READINGS
    assert {k for k in record["figures"] if k.startswith("t2i_word_")} == {
        f"t2i_word_{w.replace(' ', '_')}_{r}" for w, r in WORD_READINGS.items()
    }


def test_card_figures_and_expansions_are_recorded(world):
    out, state = world
    record = json.loads((out / "world.json").read_text())
    figures = record["figures"]
    expected = {"card_headroom_rule_min", "card_headroom_sampled_delta_laion_aesthetic", "card_headroom_sampled_se_laion_aesthetic",
                "card_pcg_delta_clip_score", "card_pcg_se_clip_score", "card_identifier_text_cosine"}  # fmt: skip
    for name in REWARDS:
        expected |= {f"card_seed_share_{name}", f"card_seed_spread_beam_{name}", f"card_sft_delta_{name}", f"card_sft_se_{name}",
                     f"card_sft_sampled_delta_{name}", f"card_sft_sampled_se_{name}", f"card_identifiers_delta_{name}",
                     f"card_identifiers_se_{name}", f"card_identifiers_p_{name}"}  # fmt: skip
    expected |= {f"card_corr_{a}_{b}" for a, b in itertools.combinations(REWARDS, 2)}
    expected |= {f"card_headroom_rule_a_{c}_{s}" for c, s in HELD_OUT_PAIRS}
    assert {k for k in figures if k.startswith("card_")} == expected
    headrooms = [figures[f"card_headroom_rule_a_{c}_{s}"] for c, s in HELD_OUT_PAIRS]
    assert figures["card_headroom_rule_min"] == min(headrooms)
    # the rule headroom is the rule's own computation with the quick card settings
    settings, (colour, shape) = state.config.card, HELD_OUT_PAIRS[0]
    best = best_expansion(colour, shape, settings.rule_samples, settings.seed)[1]
    plain = expected_rating(colour, shape, samples=settings.rule_samples, seed=settings.seed)
    assert figures[f"card_headroom_rule_a_{colour}_{shape}"] == pytest.approx(best - plain, rel=1e-12)
    assert all(-1.0 - 1e-9 <= figures[k] <= 1.0 + 1e-9 for k in expected if k.startswith("card_corr_"))
    assert all(figures[k] >= 0.0 for k in expected if "_se_" in k)
    # per decoding one expansion per held-out prompt, kept out of the numeric figures: the beam one is the expander's own
    # beam search (deterministic), the sampled one its sample at the card's temperature and seed
    assert record["sft_expansions"] == state.expansions and "card_sft_expansions" not in figures
    expander, held_out = PromptExpander.from_pretrained(out / "expander"), [short_prompt(c, s) for c, s in HELD_OUT_PAIRS]
    assert state.expansions["beam"] == expander.beam_search(held_out, num_beams=settings.num_beams).texts
    draws = settings.sampled_draws
    sampled = expander.sample(held_out, n=draws, temperature=settings.expander_temperature, generator_seed=settings.seed).texts
    assert state.expansions["sampled"] == sampled and len(sampled) == draws * len(held_out) and draws == 2


def test_world_card_has_the_goals_table(world):
    out, state = world
    card = (out / "WORLD.md").read_text()
    figures = state.figures
    assert "| clip_top1_train_pairs |" in card and "| sd/ |" in card and "| card/ |" not in card
    # the header reads the load average at start: from one core's worth of other work the times are upper bounds
    assert _load_reading(1.0) == " (other jobs shared the CPU, so times are upper bounds)"
    assert _load_reading(0.99) == " (no other job held a core at start)"
    header = card.splitlines()[2]
    assert header.endswith((f"{_load_reading(1.0)}.", f"{_load_reading(0.0)}.")) and "1-minute load average at start " in header
    assert "## Is it a faithful miniature? (the world-v4 goals)" in card
    assert "| headroom_rule_min | " in card  # the sampled figures section lists card_* without the prefix
    # the sentiment rule as this build's settings state it (the defaults: v8's, with no coloured light)
    heads, data = state.config.heads, state.config.data
    assert (heads.sentiment_warmth_weight, heads.sentiment_threshold, data.light_strength) == (1.0, 0.0, 0.0)
    assert "tint + 1·(warmth(shape) + warmth(background)) ≥ 0 (red, yellow +1;" in card
    assert "an RGB shift of 18·tint·(1, 0.25, −1))." in card
    # a build with other settings states them: the candidate files' coloured light and sentiment rule
    lit_data = replace(data, light_strength=0.2, light_target="background")
    lit_heads = replace(heads, sentiment_warmth_weight=0.0, sentiment_threshold=0.25)
    lit = replace(state, config=replace(state.config, data=lit_data, heads=lit_heads))
    text = world_card_text(lit, (0.0, 0.0, 0.0), ["card"])
    assert "tint + 0·(warmth(shape) + warmth(background)) ≥ 0.25 (red, yellow +1;" in text
    assert "by 1 − 0.2·|tint|·(1, 0.5) on the backdrop only)." in text
    # the curation: the raters alone by default; a habit's backdrop and bonus when one is set
    assert "by a(x) + u under\n  the image's own caption (`shapes.expander.curation_score`)" in card
    habit = replace(state, config=replace(state.config, expander=replace(state.config.expander, habit_background="black", habit_bonus=3.0)))
    text = world_card_text(habit, (0.0, 0.0, 0.0), ["card"])
    assert "the image's own caption + 3 on a black background (the prompt writers' habit, which no reward shares)" in text
    goals = card.split("## Is it a faithful miniature?")[1].split("\n\n")[1].splitlines()
    assert goals[:2] == ["| goal | figure | value | met |", "|---|---|---:|---|"]
    rows = goals[2:]
    assert (
        len(rows) == 29
    )  # 8 single goals, SFT (beam, sampled) on 2 rewards + CLIPScore, PCG, cosine, 4 identifier, 4 SDXL and 4 SD3 rows, trade-off
    headroom = figures["card_headroom_rule_min"]
    assert (
        f"| plain prompt mediocre: rule headroom ≥ 1.5 on every held-out prompt | `card_headroom_rule_min` | "
        f"{headroom:.3f} | {'yes' if headroom >= 1.5 else 'NO'} |"
    ) in rows
    sharp, blurry = figures["t2i_word_sharp_edge"], figures["t2i_word_blurry_edge"]
    assert (
        f'| "sharp" gives crisper edges than "blurry" | `t2i_word_sharp_edge` | {sharp:.3f} | {"yes" if sharp > blurry else "NO"} |'
    ) in rows
    cosine = figures["card_identifier_text_cosine"]
    assert (
        f"| text features with all identifiers: cosine ≥ 0.95 | `card_identifier_text_cosine` | {cosine:.3f} | "
        f"{'yes' if cosine >= 0.95 else 'NO'} |"
    ) in rows
    delta, se, p = (figures[f"card_identifiers_{k}_preference"] for k in ("delta", "se", "p"))
    assert 0 < p <= 1  # the sign-flip p-value beside the "< 1 SE"
    assert (
        f"| identifiers move preference by < 1 SE (SE {round(se, 3)}, sign-flip p {p:.2f}) | `card_identifiers_delta_preference` | "
        f"{delta:.3f} | {'yes' if abs(delta) < se else 'NO'} |"
    ) in rows
    short = figures["sdxl_short_train_colour_shape"]
    assert (
        f"| SDXL model: short prompt colour + shape right on training pairs ≥ 0.70 | `sdxl_short_train_colour_shape` | {short:.3f} | "
        f"{'yes' if short >= 0.7 else 'NO'} |"
    ) in rows
    worst = min((k for k in figures if k.startswith("card_corr_")), key=figures.get)
    assert rows[-1].startswith(f"| the rewards trade off: some pairwise correlation clearly negative (< −0.2) | `{worst}` |")
    assert all(row.endswith(("| yes |", "| NO |")) for row in rows)
    # each expansion as a JSON string (control characters of an untrained expander escaped)
    expansions = card.split("SFT expansions of the held-out prompts:\n\n")[1].split("\n\n")[0].splitlines()
    lines = {line.split(":")[0]: line for line in expansions}
    settings = state.config.card
    beam = f"- best of {settings.num_beams} beams"
    sampled = f"- sampled at temperature {settings.expander_temperature} ({settings.sampled_draws} a prompt)"
    assert list(lines) == [beam, sampled]
    assert all(json.dumps(e, ensure_ascii=True) in lines[beam] for e in state.expansions["beam"])
    assert all(json.dumps(e, ensure_ascii=True) in lines[sampled] for e in state.expansions["sampled"])


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
        ["a red circle", "<preference> photo, a small blue square on a black background with a small red circle, sharp"],
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    assert images.shape == (2, 32, 32, 3) and np.isfinite(images).all()
    # the world CLIP's text tower, moved only by the identifiers stage's 3 steps (lr 3e-4) of the quick build
    torch.testing.assert_close(
        pipeline.text_encoder.embeddings.token_embedding.weight, state.clip.text_model.embeddings.token_embedding.weight, atol=3e-3, rtol=0
    )


def test_sdxl_model_loads_in_a_stock_sdxl_pipeline_and_shares_the_world_towers(world):
    from diffusers import StableDiffusionXLPipeline

    from shapes.world_card import CARD_FILE
    from t2i.families import policy_class_for
    from t2i.sdxl import StableDiffusionXLPolicy

    out, state = world
    pipeline = StableDiffusionXLPipeline.from_pretrained(out / "sdxl")
    assert pipeline.unet.config.addition_embed_type == "text_time" and policy_class_for(out / "sdxl") is StableDiffusionXLPolicy
    # both towers are the world CLIP's text tower; tower 2's pooled projection is the CLIP text embedding the rewards read
    tokens = state.tokenizer(["a red circle"], padding="max_length", max_length=pipeline.tokenizer.model_max_length, return_tensors="pt")
    with torch.no_grad():
        pooled = pipeline.text_encoder_2(tokens.input_ids).text_embeds
        features = state.clip.get_text_features(input_ids=tokens.input_ids).pooler_output
        torch.testing.assert_close(pooled, features, atol=1e-5, rtol=1e-5)
    images = pipeline(["a red circle"], num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert images.shape == (1, 32, 32, 3) and np.isfinite(images).all()
    assert {k for k in state.figures if k.startswith("sdxl_word_")} == {
        f"sdxl_word_{w.replace(' ', '_')}_{r}" for w, r in WORD_READINGS.items()
    }
    assert "SDXL model: short prompt colour + shape right on training pairs ≥ 0.70" in (out / CARD_FILE).read_text()


def test_sd3_model_loads_in_a_stock_sd3_pipeline_and_samples_as_the_policy(world):
    from diffusers import StableDiffusion3Pipeline

    from shapes.world_card import CARD_FILE
    from t2i import Guidance, StableDiffusion3Policy, load_policy, policy_class_for

    out, state = world
    stock = StableDiffusion3Pipeline.from_pretrained(out / "sd3", text_encoder_3=None, tokenizer_3=None)  # saved without T5
    assert policy_class_for(out / "sd3") is StableDiffusion3Policy and stock.vae.config.shift_factor == 0.0
    assert state.parameters["sd3"] == sum(p.numel() for p in stock.transformer.parameters()) and state.steps["sd3"] == 10
    # both CLIP towers are the world CLIP's text tower: each pooled projection is the CLIP text embedding the rewards read
    tokens = state.tokenizer(["a red circle"], padding="max_length", max_length=stock.tokenizer.model_max_length, return_tensors="pt")
    with torch.no_grad():
        features = state.clip.get_text_features(input_ids=tokens.input_ids).pooler_output
        for tower in (stock.text_encoder, stock.text_encoder_2):
            torch.testing.assert_close(tower(tokens.input_ids).text_embeds, features, atol=1e-5, rtol=1e-5)
    prompts = ["a red circle", "<preference> photo, a small blue square on a black background"]
    theirs = stock(prompts, num_inference_steps=3, guidance_scale=4.0, generator=torch.Generator().manual_seed(0), output_type="pt").images
    policy = load_policy(out / "sd3")  # the components saved as None are passed as None
    ours = policy.sample(prompts, eta=0.0, compute_log_probs=False, guidance=Guidance.cfg(4.0), num_inference_steps=3,
                         generator=torch.Generator().manual_seed(0)).images  # fmt: skip
    assert theirs.shape == (2, 3, 32, 32)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    assert {k for k in state.figures if k.startswith("sd3_word_")} == {
        f"sd3_word_{w.replace(' ', '_')}_{r}" for w, r in WORD_READINGS.items()
    }
    assert "SD3 model: short prompt colour + shape right on training pairs ≥ 0.70" in (out / CARD_FILE).read_text()


def test_build_refuses_a_non_empty_directory(tmp_path):
    (tmp_path / "something").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        main(["--out", str(tmp_path), "--quick"])


def test_same_seed_reruns_the_data_and_clip_stages_identically(world, tmp_path):
    """The first stages again from the same seed (a whole second build would double the test time)."""
    out, state = world
    again = BuildState(config=quick_config(seed=0), out=tmp_path, progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        stage_data(again)
        stage_clip(again)
    finally:
        torch.set_num_threads(threads)
    assert [e.caption for e in again.train] == [e.caption for e in state.train]
    assert {k: v for k, v in again.figures.items()} == {k: state.figures[k] for k in again.figures}
    assert again.tokenizer.get_vocab() == CLIPTokenizer.from_pretrained(out / "clip").get_vocab()


def test_every_reward_reloads_through_the_registry_and_scores(world):
    out, _ = world
    images = torch.rand(3, 3, 32, 32)
    prompts = ["a red circle", "a blue square", "l p, a small green triangle on a black background, vivid"]
    rewards = {
        "laion_aesthetic": load_reward(
            "laion_aesthetic", clip_model=str(out / "clip"), head_path=str(out / "aesthetic" / "head.safetensors")
        ),
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
    assert [r.name for r in trainer.parts.evaluator.rewards] == ["laion_aesthetic", "preference", "clip_score", "sentiment"]
    trainer.train()
    assert (tmp_path / "run" / "final" / "expander" / "config.json").is_file()


def test_shapes_preset_trains_the_sdxl_model_and_its_lora_loads_in_stock_sdxl(world, tmp_path):
    from diffusers import StableDiffusionXLPipeline

    from t2i.sdxl import StableDiffusionXLPolicy

    out, _ = world
    config = load_train_config(
        ["--preset", "shapes", "--world", str(out), "--model.pipeline", "{world}/sdxl", "--output_dir", str(tmp_path / "run"),
         "--iterations", "1", "--sampling.prompts_per_process", "1", "--sampling.num_steps", "2", "--t2i.inner_epochs", "1",
         "--expander.sampling.max_new_tokens", "6", "--logging.log_with", "none", "--evaluation.enabled", "false"]
    )  # fmt: skip
    trainer = ParrotTrainer(config)
    assert isinstance(trainer.parts.policy, StableDiffusionXLPolicy)
    trainer.train()
    stock = StableDiffusionXLPipeline.from_pretrained(out / "sdxl")
    before = {k: v.clone() for k, v in stock.unet.state_dict().items() if k.endswith("attn2.to_k.weight")}
    assert before
    stock.load_lora_weights(str(tmp_path / "run" / "final" / "lora"))
    stock.fuse_lora()
    after = {k.replace(".base_layer", ""): v for k, v in stock.unet.state_dict().items() if k.endswith("attn2.to_k.base_layer.weight")}
    assert after.keys() == before.keys()
    assert max(float((after[k] - before[k]).abs().max()) for k in before) > 0  # the trained LoRA moved the stock UNet's weights


def test_shapes_preset_trains_the_sd3_model_and_its_lora_loads_in_stock_sd3(world, tmp_path):
    from diffusers import StableDiffusion3Pipeline

    from t2i.sd3 import StableDiffusion3Policy

    out, _ = world
    config = load_train_config(
        ["--preset", "shapes", "--world", str(out), "--model.pipeline", "{world}/sd3", "--sampling.eta", "0.7",
         "--output_dir", str(tmp_path / "run"), "--iterations", "1", "--sampling.prompts_per_process", "1",
         "--sampling.num_steps", "2", "--t2i.inner_epochs", "1", "--expander.sampling.max_new_tokens", "6",
         "--logging.log_with", "none", "--evaluation.enabled", "false"]
    )  # fmt: skip
    trainer = ParrotTrainer(config)
    assert isinstance(trainer.parts.policy, StableDiffusion3Policy)
    trainer.train()
    stock = StableDiffusion3Pipeline.from_pretrained(out / "sd3", text_encoder_3=None, tokenizer_3=None)
    before = {k: v.clone() for k, v in stock.transformer.state_dict().items() if k.endswith("attn.to_k.weight")}
    assert before
    stock.load_lora_weights(str(tmp_path / "run" / "final" / "lora"))
    stock.fuse_lora()
    after = {
        k.replace(".base_layer", ""): v for k, v in stock.transformer.state_dict().items() if k.endswith("attn.to_k.base_layer.weight")
    }
    assert after.keys() == before.keys()
    assert max(float((after[k] - before[k]).abs().max()) for k in before) > 0  # the trained LoRA moved the stock transformer


def test_skipping_the_sdxl_and_sd3_stages_builds_the_same_sd_world(world, tmp_path):
    out, state = world
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the full build of the fixture: the figures are compared exactly
    try:
        main(["--out", str(tmp_path / "sd-only"), "--quick", "--no-progress", "--skip", "sdxl", "sd3"])
    finally:
        torch.set_num_threads(threads)
    built = tmp_path / "sd-only"
    assert not (built / "sdxl").exists() and not (built / "sd3").exists() and (built / "sd" / "model_index.json").is_file()
    record = json.loads((built / "world.json").read_text())
    assert record["commands"] == ["python -m shapes.build --out DIR --quick --seed 0 --skip sdxl sd3"]
    assert "sdxl" not in record["seconds"] and "sd3" not in record["seconds"] and "card" in record["seconds"]
    # every other stage seeds itself: the figures are the full build's less the SDXL and SD3 models' own
    assert record["figures"] == pytest.approx({k: v for k, v in state.figures.items() if not k.startswith(("sdxl_", "sd3_"))})
    card = (built / "WORLD.md").read_text()
    assert "SD3 model" not in card and "SD3 model" in (out / "WORLD.md").read_text()


def test_skip_refuses_stages_that_later_ones_read(tmp_path):
    with pytest.raises(ValueError, match=r"--skip unet: only sdxl, sd3 can be left out"):
        main(["--out", str(tmp_path / "w"), "--quick", "--skip", "sdxl", "unet"])
    with pytest.raises(ValueError, match="--skip is for a whole build"):
        main(["--out", str(tmp_path / "w"), "--skip", "sdxl", "--redo", "card"])
    assert not (tmp_path / "w").exists()


def test_redo_reruns_only_the_named_stages_and_keeps_the_history(world, tmp_path):
    import shutil

    from shapes.build import redo_stages

    out, _ = world
    copy = tmp_path / "world"
    shutil.copytree(out, copy)
    before = json.loads((copy / "world.json").read_text())
    assert before["commands"] == ["python -m shapes.build --out " + str(out)]
    # a world recorded before the card decoded by beam search kept its sampled expansions as a list
    (copy / "world.json").write_text(json.dumps({**before, "sft_expansions": before["sft_expansions"]["sampled"]}))
    redo_stages(copy, quick_config(seed=0), ["alignment"], progress=False, command="redo alignment")
    after = json.loads((copy / "world.json").read_text())
    assert after["commands"] == [*before["commands"], "redo alignment"]
    assert after["sft_expansions"] == {"sampled": before["sft_expansions"]["sampled"]}
    assert after["figures"] == pytest.approx(before["figures"])  # the same seed recomputes the same figures
    assert {k for k in after["seconds"] if after["seconds"][k] != before["seconds"][k]} <= {"data", "alignment"}
    assert "`redo alignment`" in (copy / "WORLD.md").read_text().split("\n")[2]
    with pytest.raises(ValueError, match=r"unknown stage\(s\) \['nope'\]"):
        redo_stages(copy, quick_config(seed=0), ["nope"], progress=False)


def test_config_file_lays_build_settings_over_the_defaults(tmp_path):
    settings = tmp_path / "v9.yaml"
    settings.write_text("data: {light_strength: 0.2}\nheads: {sentiment_warmth_weight: 0.25, sentiment_threshold: 0.25}\n")
    config = build_config_with(settings, seed=3)
    assert (config.seed, config.data.light_strength, config.heads.sentiment_warmth_weight, config.heads.sentiment_threshold) == (
        3,
        0.2,
        0.25,
        0.25,
    )
    # every other setting keeps its default, tuples included
    assert config.clip == BuildConfig().clip and config.sd == BuildConfig().sd
    assert config.heads.aesthetic_hidden_dims == BuildConfig().heads.aesthetic_hidden_dims
    quick = build_config_with(settings, seed=0, quick=True)
    assert quick.clip == quick_config(0).clip and quick.data.light_strength == 0.2
    assert build_config_with(None, seed=5) == BuildConfig(seed=5)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("data: {light: 0.2}\n", r"unknown config key\(s\) data\.light; known: .*light_strength"),
        ("data: {light_strength: 2}\n", r"data: light_strength=2.0 must lie in \[0, 1\]"),
        ("seed: 1\n", "set the seed with --seed, not in the file"),
        ("- 1\n", "expected a YAML mapping of the build's settings"),
    ],
)
def test_config_file_mistakes_are_one_line_errors(tmp_path, text, message):
    settings = tmp_path / "bad.yaml"
    settings.write_text(text)
    with pytest.raises(ConfigError, match=message):
        build_config_with(settings, seed=0)
    with pytest.raises(ConfigError, match="no such file"):
        build_config_with(tmp_path / "missing.yaml", seed=0)


@pytest.mark.parametrize("name", ["control", "mood", "light", "light_weak", "light_mood", "light_backdrop"])
def test_shipped_world_config_files_load_and_name_their_own_command(name):
    # each candidate file in benchmarks/world_configs loads (no stale key) and differs from v8 as BENCHMARKS.md says
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "world_configs" / f"{name}.yaml"
    config = build_config_with(path, seed=0)
    assert config.identifiers.steps == 0  # every candidate is read without identifiers
    expected = {
        "control": (0.0, 1.0, 0.0),
        "mood": (0.0, 0.25, 0.25),
        "light": (0.2, 0.25, 0.25),
        "light_weak": (0.1, 0.25, 0.25),
        "light_mood": (0.1, 0.0, 0.25),
        "light_backdrop": (0.2, 0.0, 0.25),
    }[name]
    assert (config.data.light_strength, config.heads.sentiment_warmth_weight, config.heads.sentiment_threshold) == expected
    assert config.data.light_target == ("background" if name == "light_backdrop" else "scene")
    assert f"--config benchmarks/world_configs/{name}.yaml" in path.read_text()


@pytest.mark.parametrize("name, backdrop, bonus", [("habit_gray", "gray", 4.0), ("habit_black", "black", 3.0)])
def test_shipped_habit_files_change_only_the_curation(name, backdrop, bonus):
    # the habit candidates are redos of the committed world's expander and card: every other setting stays v8's
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "world_configs" / f"{name}.yaml"
    config = build_config_with(path, seed=0)
    assert (config.expander.habit_background, config.expander.habit_bonus) == (backdrop, bonus)
    assert replace(config, expander=replace(config.expander, habit_background="", habit_bonus=0.0)) == BuildConfig(seed=0)
    assert f"--redo expander card --config benchmarks/world_configs/{name}.yaml" in path.read_text()


def test_every_shipped_world_config_file_is_checked():
    shipped = {p.stem for p in (Path(__file__).resolve().parents[1] / "benchmarks" / "world_configs").glob("*.yaml")}
    checked = {"control", "mood", "light", "light_weak", "light_mood", "light_backdrop", "habit_gray", "habit_black"}
    assert shipped == checked
