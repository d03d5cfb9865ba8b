"""The sampling CLI writes images, rows and trajectories that agree with each other."""

import json

import pytest
from PIL import Image
from safetensors.torch import load_file

from parrot.sample import main
from parrot_base.config import ConfigError


def test_cli_writes_consistent_outputs_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--model", "builtin:tiny", "--prompt", "a red circle, large", "a blue square", "--num_steps", "4", "--out", str(out)]
    main(args)
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["a red circle, large", "a blue square"]
    tensors = load_file(out / "trajectory.safetensors")
    assert tensors["latents"].shape == (2, 5, 4, 8, 8) and tensors["log_probs"].shape == (2, 4)
    totals = tensors["log_probs"].sum(1) * 4 * 8 * 8
    assert [r["log_prob_total"] for r in rows] == pytest.approx(totals.tolist(), rel=1e-5)
    assert Image.open(out / rows[1]["image"]).size == (16, 16)
    assert "wrote 2 image(s)" in capsys.readouterr().out
    with pytest.raises(FileExistsError, match="not empty; pass --overwrite"):
        main(args)
    main(args + ["--overwrite", "--original_prompt", "a circle", "a square", "--w1", "0", "--w2", "7.5"])
    row = json.loads((out / "samples.jsonl").read_text().splitlines()[0])
    assert row["original_prompt"] == "a circle" and row["guidance_weights"] == [0.0, 7.5]


def test_cli_names_the_toy_pipeline_builtin_tiny_like_every_command(tmp_path):
    main(["--prompt", "a red circle", "--num_steps", "2", "--out", str(tmp_path / "x")])  # the default model
    assert (tmp_path / "x" / "samples.jsonl").is_file()
    with pytest.raises(ConfigError, match="^unknown option --tiny"):
        main(["--tiny", "--prompt", "a red circle", "--out", str(tmp_path / "y")])
    with pytest.raises(
        ValueError,
        match=r"the built-in pipelines are 'builtin:tiny', 'builtin:tiny_sdxl', 'builtin:tiny_sd3', 'builtin:tiny_flux' and "
        r"'builtin:random:<arch>'",
    ):
        main(["--model", "builtin:toy", "--prompt", "a red circle", "--out", str(tmp_path / "z")])
