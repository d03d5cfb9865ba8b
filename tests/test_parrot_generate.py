"""python -m parrot.generate: outputs, guidance plumbing, identifiers, best-of-N, weighting, errors."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from parrot.checkpoint import write_json
from parrot.generate import main
from parrot.models import build_expander
from parrot.prompts import read_prompts
from parrot.run_dir import start_run
from parrot.train_config import load_train_config
from parrot_base.config import config_to_dict
from prompt_expander.config import ExpanderSamplingConfig
from rewards import load_reward
from t2i import Guidance, StableDiffusionPolicy
from t2i.prompt_weighting import WeightedPromptPolicy, plain_prompt
from t2i.tiny import build_tiny_pipeline

FAST = ["--num_steps", "2"]


def rows_of(out):
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def pixels(out, row):
    return np.asarray(Image.open(out / row["image"]))


def test_outputs_schema_grid_and_overwrite_refusal(tmp_path, capsys):
    prompts = tmp_path / "p.tsv"
    prompts.write_text("Prompt\tCategory\na red circle\tx\n\t\na blue square\ty\n")
    out = tmp_path / "run"
    args = [
        "--prompts_file",
        str(prompts),
        "--images_per_prompt",
        "2",
        "--seed",
        "7",
        "--rewards",
        "jpeg_compressibility,jpeg_incompressibility",
        "--out",
        str(out),
        *FAST,
    ]
    main(args)
    rows = rows_of(out)
    assert [r["prompt"] for r in rows] == ["a red circle"] * 2 + ["a blue square"] * 2
    assert [r["seed"] for r in rows] == [7, 8, 7, 8]
    assert [r["image"] for r in rows] == [f"images/{i:05d}.png" for i in range(4)]
    for r in rows:
        assert {"prompt", "expanded_prompt", "identifiers", "seed", "w1", "w2", "image", "rewards"} <= set(r)
        assert (r["w1"], r["w2"]) == (0.0, 7.5) and r["identifiers"] == [] and r["expanded_prompt"] == r["prompt"]
        assert set(r["rewards"]) == {"jpeg_compressibility", "jpeg_incompressibility"}
        assert r["rewards"]["jpeg_compressibility"] == pytest.approx(-r["rewards"]["jpeg_incompressibility"])
    # same seed, different prompt → different image; the grid is 2 prompts × 2 images of 16 px
    assert not np.array_equal(pixels(out, rows[0]), pixels(out, rows[2]))
    grid = np.asarray(Image.open(out / "grid.png"))
    assert grid.shape == (32, 32, 3)
    assert np.array_equal(grid[16:, :16], pixels(out, rows[2]))
    assert "wrote 4 image(s)" in capsys.readouterr().out
    with pytest.raises(FileExistsError, match="not empty; pass --overwrite"):
        main(args)
    main(args + ["--overwrite"])
    assert len(rows_of(out)) == 4


def test_w1_zero_equals_cfg_on_the_expansion(tmp_path):
    expander = build_expander(
        "builtin:tiny_gpt2", ExpanderSamplingConfig(max_new_tokens=8), 0, (), ["a red circle", "a blue square"], "cpu"
    )
    expander.save_pretrained(tmp_path / "expander")
    common = ["--prompt", "a red circle", "--expander", str(tmp_path / "expander"), "--images_per_prompt", "2", *FAST]
    main(common + ["--w1", "0", "--w2", "6", "--out", str(tmp_path / "centred")])
    main(common + ["--guidance", "cfg", "--guidance_scale", "6", "--out", str(tmp_path / "cfg")])
    main(common + ["--w1", "5", "--w2", "6", "--out", str(tmp_path / "both")])
    centred, cfg, both = rows_of(tmp_path / "centred"), rows_of(tmp_path / "cfg"), rows_of(tmp_path / "both")
    assert [r["expanded_prompt"] for r in centred] == [r["expanded_prompt"] for r in cfg]
    assert centred[0]["expanded_prompt"] != "a red circle"  # the expander did expand
    assert (centred[0]["w1"], centred[0]["w2"]) == (0.0, 6.0) and (both[0]["w1"], both[0]["w2"]) == (5.0, 6.0)
    for a, b, c in zip(centred, cfg, both):
        assert np.array_equal(pixels(tmp_path / "centred", a), pixels(tmp_path / "cfg", b))
        assert not np.array_equal(pixels(tmp_path / "centred", a), pixels(tmp_path / "both", c))


def fake_training_run(root):
    """RUN/run.json, RUN/final/lora and RUN/checkpoints/checkpoint-000002/state.json as parrot.train writes them."""
    start_run(root)
    policy = StableDiffusionPolicy(build_tiny_pipeline())
    policy.add_lora()
    policy.save_lora(root / "final" / "lora")
    config = load_train_config(  # groups of one image (2 identifiers × 1): the paper's raw weighting, nothing to z-score
        ["--preset", "tiny", "--rewards.names", "jpeg_compressibility", "clip_score", "--sampling.images_per_prompt", "2",
         "--selection.reward_weighting", "raw"]
    )  # fmt: skip
    state = root / "checkpoints" / "checkpoint-000002"
    state.mkdir(parents=True)
    write_json({"iteration": 2, "config": config_to_dict(config)}, state / "state.json")
    return root / "final" / "lora"


def test_identifiers_default_to_the_training_runs_and_can_be_chosen(tmp_path):
    lora = fake_training_run(tmp_path / "train")
    base = ["--prompt", "a red circle", "--lora", str(lora), *FAST]
    main(base + ["--out", str(tmp_path / "auto")])
    main(base + ["--identifiers", "clip_score", "--identifier_template", "[{name}]", "--out", str(tmp_path / "one")])
    main(base + ["--identifiers", "none", "--out", str(tmp_path / "none")])
    auto, one, none = rows_of(tmp_path / "auto")[0], rows_of(tmp_path / "one")[0], rows_of(tmp_path / "none")[0]
    assert auto["identifiers"] == ["jpeg_compressibility", "clip_score"]
    assert auto["conditioned_prompt"] == "<jpeg_compressibility> <clip_score>, a red circle"
    assert one["conditioned_prompt"] == "[clip_score], a red circle"
    assert none["conditioned_prompt"] == "a red circle" and none["identifiers"] == []
    assert not np.array_equal(pixels(tmp_path / "auto", auto), pixels(tmp_path / "none", none))
    with pytest.raises(ValueError, match=r"--identifiers \['pickscore'\]: the LoRA was trained with identifiers for"):
        main(base + ["--identifiers", "pickscore", "--out", str(tmp_path / "bad")])


def test_best_of_n_keeps_the_argmax_of_the_named_reward(tmp_path):
    out = tmp_path / "bon"
    main(
        [
            "--prompt",
            "a red circle",
            "--best_of",
            "4",
            "--rank_by",
            "jpeg_incompressibility",
            "--seed",
            "3",
            "--eta",
            "0",
            "--prompt_weighting",
            "false",
            "--out",
            str(out),
            *FAST,
        ]
    )
    (row,) = rows_of(out)
    # the same 4 candidates, drawn independently: one generator seeded 3, one batch, deterministic DDIM
    policy = StableDiffusionPolicy(build_tiny_pipeline())
    candidates = policy.sample(
        ["a red circle"] * 4,
        guidance=Guidance.cfg(7.5),
        num_inference_steps=2,
        eta=0.0,
        compute_log_probs=False,
        generator=torch.Generator().manual_seed(3),
    ).images
    scores = load_reward("jpeg_incompressibility")(candidates, ["a red circle"] * 4)
    assert int((scores == scores.max()).sum()) == 1 and int(scores.argmax()) != 0  # a unique best, not the first
    assert row["candidate"] == int(scores.argmax()) and row["best_of"] == 4
    assert row["rank_by"]["jpeg_incompressibility"] == pytest.approx(float(scores.max()))
    expected = (candidates[int(scores.argmax())].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    assert np.abs(pixels(out, row).astype(int) - expected.astype(int)).max() <= 1


def test_weighting_syntax_moves_the_weighted_tokens_only():
    policy = WeightedPromptPolicy(build_tiny_pipeline())
    stock = StableDiffusionPolicy(build_tiny_pipeline())

    def encode(prompt):
        return policy.encode_prompts([prompt])["encoder_hidden_states"][0]

    assert plain_prompt("(oil on canvas)+++, (blurry)-- sky") == "oil on canvas, blurry sky"
    plain, empty = encode("a red circle"), encode("")
    torch.testing.assert_close(plain, stock.encode_prompts(["a red circle"])["encoder_hidden_states"][0])
    red = slice(2, 5)  # byte-level tokens: <bos> a</w> r e d</w> c …
    distance_to_empty = {s: (encode(f"a (red){s} circle") - empty).norm(dim=-1)[red] for s in ["+", "+++", "-", "---"]}
    base = (plain - empty).norm(dim=-1)[red]
    # more weight → the tokens move further from the empty prompt's; less weight → closer to it
    assert torch.all(distance_to_empty["+++"] > distance_to_empty["+"]) and torch.all(distance_to_empty["+"] > base)
    assert torch.all(distance_to_empty["---"] < distance_to_empty["-"]) and torch.all(distance_to_empty["-"] < base)
    # unparsable text falls back to plain encoding, alone and within a batch
    broken = 'a red circle \x0c"'  # what a random expander wrote; compel cannot parse it
    batch = policy.encode_prompts(["a (red)+++ circle", broken])["encoder_hidden_states"]
    torch.testing.assert_close(batch[1], stock.encode_prompts([broken])["encoder_hidden_states"][0])
    assert plain_prompt(broken) == broken
    up = encode("a (red)+++ circle")
    torch.testing.assert_close(batch[0], up)
    torch.testing.assert_close(up[:2], plain[:2])
    torch.testing.assert_close(up[5:], plain[5:])


def test_clear_errors_for_unknown_reward_and_unreadable_prompt_files(tmp_path):
    with pytest.raises(ValueError, match=r"--rewards: unknown reward\(s\) \['no_such_reward'\]; known rewards: .*jpeg"):
        main(["--prompt", "a red circle", "--rewards", "jpeg_compressibility,no_such_reward", "--out", str(tmp_path / "a")])
    with pytest.raises(ValueError, match=r"--rank_by: unknown reward\(s\) \['nope'\]"):
        main(["--prompt", "a red circle", "--best_of", "2", "--rank_by", "nope", "--out", str(tmp_path / "b")])
    assert not (tmp_path / "a").exists()  # refused before anything is written
    with pytest.raises(FileNotFoundError, match="prompts file .*missing.txt' does not exist"):
        main(["--prompts_file", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "c")])
    binary = tmp_path / "bad.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ValueError, match="cannot read prompts file .* as UTF-8"):
        read_prompts(binary)
    tsv = tmp_path / "p.tsv"
    tsv.write_text("text\tother\na red circle\tx\n")
    with pytest.raises(ValueError, match=r"no 'Prompt' column \(columns: \['text', 'other'\]\)"):
        read_prompts(tsv)
    with pytest.raises(ValueError, match="unknown extension '.csv'"):
        (tmp_path / "p.csv").write_text("a")
        read_prompts(tmp_path / "p.csv")


def test_prompt_file_formats(tmp_path):
    (tmp_path / "p.txt").write_text("a red circle\n\n  a blue square  \n")
    (tmp_path / "p.jsonl").write_text('{"prompt": "a red circle", "id": 1}\n"a blue square"\n')
    assert read_prompts(tmp_path / "p.txt") == read_prompts(tmp_path / "p.jsonl") == ["a red circle", "a blue square"]
    assert read_prompts(tmp_path / "p.txt", limit=1) == ["a red circle"]


def test_flux_distilled_guidance_flag_reaches_the_model_as_in_the_stock_pipeline(tmp_path):
    from t2i.tiny_flux import build_tiny_flux_pipeline

    out = tmp_path / "flux"
    args = ["--model", "builtin:tiny_flux", "--prompt", "a red circle", "--guidance", "cfg", "--guidance_scale", "1"]
    main([*args, "--distilled_guidance", "2.0", "--seed", "3", "--out", str(out), *FAST])
    stock = build_tiny_flux_pipeline()
    stock.set_progress_bar_config(disable=True)
    expected = {
        g: stock(
            "a red circle", guidance_scale=g, num_inference_steps=2, generator=torch.Generator().manual_seed(3), output_type="np"
        ).images[0]
        for g in (2.0, 3.5)
    }
    ours = pixels(out, rows_of(out)[0]).astype(np.float64) / 255.0
    assert np.abs(ours - expected[2.0]).max() <= 1.0 / 255.0 + 1e-6  # PNG rounding only
    assert np.abs(ours - expected[3.5]).max() > 4.0 / 255.0  # and not the default g's image: the flag was not ignored
    with pytest.raises(ValueError, match="--distilled_guidance applies to FLUX.1 models only; builtin:tiny is a StableDiffusionPolicy"):
        main(["--prompt", "a red circle", "--distilled_guidance", "2.0", "--out", str(tmp_path / "sd"), *FAST])


def test_flow_models_generate_without_weighting_and_refuse_weighted_prompts(tmp_path):
    out = tmp_path / "sd3"
    main(["--model", "builtin:tiny_sd3", "--prompt", "a red circle", "--out", str(out), *FAST])
    assert rows_of(out)[0]["prompt"] == "a red circle"
    with pytest.raises(ValueError, match=r"compel's weighting syntax in '\(red\)\+\+ circle' is read for SD 1.x/2.x and SDXL"):
        main(["--model", "builtin:tiny_sd3", "--prompt", "(red)++ circle", "--out", str(tmp_path / "w"), *FAST])
    weighted = tmp_path / "sd"  # an SD model reads the syntax (a weighted policy is recognised as one)
    main(["--prompt", "(red)++ circle", "--out", str(weighted), *FAST])
    assert rows_of(weighted)[0]["conditioned_prompt"] == "(red)++ circle"
    literal = tmp_path / "literal"
    main(["--model", "builtin:tiny_sd3", "--prompt", "(red)++ circle", "--prompt_weighting", "false", "--out", str(literal), *FAST])
    assert rows_of(literal)[0]["conditioned_prompt"] == "(red)++ circle"  # read as written
