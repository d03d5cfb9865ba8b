"""benchmarks/rollout_overhead.py: every family's stock call and policy rollout draw the same kind of images, and the figures add up."""

import pytest
import torch

from benchmarks.rollout_overhead import POLICIES, call_settings, main, measure, tiny_pipeline

PROMPTS = ["a red circle", "a blue square"]


@pytest.mark.parametrize("family", sorted(POLICIES))
def test_the_stock_call_and_the_rollout_are_the_same_model_calls(family):
    """With the flow families' noise level set to 0 (their stock call is Euler), the benchmark's two calls give the same images."""
    pipeline = tiny_pipeline(family, "small")
    pipeline.set_progress_bar_config(disable=True)
    policy = POLICIES[family](pipeline)
    stock_settings, policy_settings = call_settings(policy, policy.default_guidance_scale)
    flow = family in ("sd3", "flux")
    if flow:
        policy_settings |= {"eta": 0.0, "compute_log_probs": False}
    theirs = pipeline(PROMPTS, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="pt", **stock_settings)
    ours = policy.sample(PROMPTS, num_inference_steps=3, generator=torch.Generator().manual_seed(0), **policy_settings)
    torch.testing.assert_close(ours.images, theirs.images, atol=1e-5, rtol=0)
    assert policy_settings["guidance"].weights == ((1.0,) if family == "flux" else (7.5,))  # FLUX: CFG-free, one pass


def test_flux_true_cfg_settings_match_the_stock_true_cfg_call():
    policy = POLICIES["flux"](tiny_pipeline("flux", "small"))
    stock_settings, policy_settings = call_settings(policy, 4.0)
    assert stock_settings == {"guidance_scale": 3.5, "true_cfg_scale": 4.0, "negative_prompt": ""}
    assert policy_settings["guidance"].weights == (4.0,) and policy_settings["eta"] == 0.7


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_one_repeat_of_a_flow_family_reports_its_ratio(family, tmp_path, capsys):
    record = measure("small", batch=2, steps=2, repeats=1, family=family)
    assert record["ratio"] == pytest.approx(record["policy_s"] / record["plain_s"]) and record["ratio"] > 0
    assert record["guidance_scale"] == (1.0 if family == "flux" else 7.5) and record["family"] == family
    main(["--family", family, "--sizes", "small", "--batch", "2", "--num_steps", "2", "--repeats", "1", "--json", str(tmp_path / "r.json")])
    assert f"{family}  small: stock" in capsys.readouterr().out and (tmp_path / "r.json").is_file()
