"""benchmarks/dry_run.py at toy size: one Parrot iteration through the loop with per-stage time and memory,
the builtin:random path end to end (shrunken architecture files), and the 24 GiB table by hand."""

import json
from unittest import mock

import pytest
from test_t2i_random_init import shrunken_sd15

from benchmarks.dry_run import STAGES, fit_table, main
from parrot_base.cli import UsageError
from t2i import POLICY_FAMILIES
from t2i.random_init import ARCHITECTURES_DIR

GIB = 2**30
REWARD_AND_EXPANDER = 427_616_513 + 124_439_808  # CLIP ViT-L/14 + GPT-2


def check_stages(record):
    assert list(record["stages"]) == ["build", "iteration", *STAGES]
    stages = record["stages"]
    assert all(s["seconds"] > 0 and s["peak_rss_mib"] > 0 for s in stages.values())
    assert sum(stages[s]["seconds"] for s in STAGES) <= stages["iteration"]["seconds"]
    assert stages["iteration"]["peak_rss_mib"] >= max(stages[s]["peak_rss_mib"] for s in STAGES)  # nested peaks count
    assert record["peak_rss_mib"] >= max(s["peak_rss_mib"] for s in stages.values()) * 0.99  # VmHWM vs sampled RSS
    for stage in ("sample_and_score", "update_t2i", "update_expander"):  # the loop's own timers run around the monitor's
        assert 0 < stages[stage]["seconds"] <= record["metrics"][f"time/{stage}_s"]


def test_tiny_dry_run_reports_every_stage_and_writes_json(tmp_path, capsys):
    record = main(["--arch", "tiny", "--max_new_tokens", "4", "--json", str(tmp_path / "dry.json")])
    check_stages(record)
    assert json.loads((tmp_path / "dry.json").read_text())["stages"].keys() == record["stages"].keys()
    assert "update_t2i" in capsys.readouterr().out


def shrunken(tmp_path, name, **changes):
    architecture = json.loads((ARCHITECTURES_DIR / f"{name}.json").read_text())
    for key, value in changes.items():
        architecture["components"]["model"]["config"][key] = value
    path = tmp_path / f"{name}_toy.json"
    path.write_text(json.dumps(architecture))
    return str(path)


def test_random_architectures_go_through_the_loop(tmp_path):
    """builtin:random:<file> for the pipeline, the reward CLIP and the expander, exactly as at full size."""
    tower = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    clip = shrunken(tmp_path, "clip_vit_l14", projection_dim=16, text_config=tower | {"max_position_embeddings": 77},
                    vision_config=tower | {"image_size": 32, "patch_size": 8})  # fmt: skip
    gpt2 = shrunken(tmp_path, "gpt2", n_layer=1, n_embd=32, n_head=2, n_positions=256)
    record = main(["--arch", str(shrunken_sd15(tmp_path)), "--reward_arch", clip, "--expander_arch", gpt2, "--resolution", "16",
                   "--steps", "2", "--max_new_tokens", "4"])  # fmt: skip
    check_stages(record)
    assert record["metrics"]["t2i/loss"] == record["metrics"]["t2i/loss"]  # a number, not NaN


def test_architectures_without_a_family_get_the_table_only(capsys):
    with mock.patch.dict(POLICY_FAMILIES):  # every shipped architecture has a family now: take FLUX's away for the test
        del POLICY_FAMILIES["FluxPipeline"]
        record = main(["--arch", "flux_dev"])
    assert "stages" not in record
    assert record["skipped"] == "flux_dev: no policy family yet for FluxPipeline (weights counted on the meta device only)"
    assert "no policy family yet" in capsys.readouterr().out


def test_fit_table_by_hand():
    rows = {row["arch"]: row for row in fit_table(REWARD_AND_EXPANDER)}
    sd15 = 859_520_964 + 83_653_863 + 123_060_480 + REWARD_AND_EXPANDER
    assert rows["sd15"]["weights_gib_float32"] == pytest.approx(sd15 * 4 / GIB) and rows["sd15"]["fits_float32"]
    flux = 11_901_408_320 + 83_819_683 + 123_060_480 + 4_762_310_656 + REWARD_AND_EXPANDER
    assert rows["flux_dev"]["weights_gib_bfloat16"] == pytest.approx(flux * 2 / GIB)  # 32.5 GiB
    assert not rows["flux_dev"]["fits_bfloat16"] and rows["flux_dev"]["has_policy_family"]
    assert rows["flux_dev"]["weights_gib_bfloat16_without_t5"] == pytest.approx((flux - 4_762_310_656) * 2 / GIB)
    assert not rows["sd35_medium"]["fits_float32"] and rows["sd35_medium"]["fits_bfloat16"]


def test_unknown_architecture_is_one_line():
    with pytest.raises(UsageError, match="unknown architecture 'sd9': choose one of clip_vit_l14, flux_dev"):
        main(["--arch", "sd9"])
