"""Best-of-N reranking on the tiny Stable Diffusion pipeline with a reward whose argmax is known."""

from __future__ import annotations

import json

import pytest
import torch

from parrot.best_of_n import best_of_n, main
from rewards import Reward
from rewards.registry import register_reward, unregister_reward
from t2i import StableDiffusionPolicy
from t2i.tiny import build_tiny_pipeline


class MeanBrightness(Reward):
    name = "mean_brightness"
    needs_prompts = False

    def score_batch(self, images, prompts, metadata):
        return images.mean(dim=(1, 2, 3))


@pytest.fixture(scope="module")
def policy():
    return StableDiffusionPolicy(build_tiny_pipeline())


def test_best_of_n_keeps_the_top_k_by_the_reward(policy):
    prompts = ["a red circle", "a blue square"]
    result = best_of_n(policy, prompts, MeanBrightness(), n=4, k=2, num_inference_steps=3, batch_size=3, seed=7)
    assert result.candidates.shape == (2, 4, 3, 16, 16) and result.scores.shape == (2, 4)
    brightness = result.candidates.mean(dim=(2, 3, 4))
    torch.testing.assert_close(result.scores, brightness)
    assert len({round(v, 6) for v in brightness.flatten().tolist()}) == 8, "candidates must differ"
    expected = brightness.argsort(dim=1, descending=True)[:, :2]
    assert result.kept_indices.tolist() == expected.tolist()
    assert (result.kept_scores[:, 0] >= result.kept_scores[:, 1]).all()
    torch.testing.assert_close(result.kept_images[1, 0], result.candidates[1, expected[1, 0]])
    assert result.reward_name == "mean_brightness"


def test_best_of_n_by_name_is_reproducible_with_the_seed(policy):
    register_reward("mean_brightness")(lambda config: MeanBrightness(config))
    try:
        by_name = best_of_n(policy, ["a cat"], "mean_brightness", n=3, k=1, num_inference_steps=2, seed=3)
    finally:
        unregister_reward("mean_brightness")
    by_object = best_of_n(policy, ["a cat"], MeanBrightness(), n=3, k=1, num_inference_steps=2, seed=3)
    torch.testing.assert_close(by_name.candidates, by_object.candidates)
    assert by_name.kept_indices.tolist() == [[int(by_object.scores[0].argmax())]]


def test_best_of_n_refuses_bad_sizes(policy):
    with pytest.raises(ValueError, match="1 <= k <= n; got n=2, k=3"):
        best_of_n(policy, ["a"], MeanBrightness(), n=2, k=3)
    with pytest.raises(ValueError, match="prompts is empty"):
        best_of_n(policy, [], MeanBrightness())


def test_best_of_n_cli_writes_kept_images_and_scores(tmp_path):
    out = tmp_path / "bon"
    result = main(
        [
            "--model",
            "builtin:tiny",
            "--reward",
            "jpeg_incompressibility",
            "--prompt",
            "a red circle",
            "--n",
            "3",
            "--k",
            "2",
            "--num_steps",
            "2",
            "--out",
            str(out),
        ]
    )
    record = json.loads((out / "scores.json").read_text())
    assert record["reward"] == "jpeg_incompressibility"
    scores = record["results"][0]["scores"]
    kept = record["results"][0]["kept"]
    assert kept == sorted(range(3), key=lambda i: -scores[i])[:2] == result.kept_indices[0].tolist()
    assert sorted(p.name for p in out.glob("*.png")) == sorted(f"prompt000_rank{r}_cand{i}.png" for r, i in enumerate(kept))


def test_best_of_n_scores_against_the_original_prompts(policy):
    from t2i import Guidance

    seen = []

    class Recording(MeanBrightness):
        needs_prompts = True

        def score_batch(self, images, prompts, metadata):
            seen.append((list(prompts), [m["expanded_prompt"] for m in metadata]))
            return super().score_batch(images, prompts, metadata)

    expansions, originals = ["a red circle, highly detailed"], ["a red circle"]
    best_of_n(
        policy, expansions, Recording(), n=2, original_prompts=originals, guidance=Guidance.prompt_centred(5.0, 2.0), num_inference_steps=2
    )
    assert seen == [(originals * 2, expansions * 2)]


def test_best_of_n_cli_answers_its_old_option_names_with_the_new_ones(tmp_path):
    from parrot_base.config import ConfigError

    common = ["--reward", "jpeg_compressibility", "--prompt", "a red circle", "--out", str(tmp_path / "bon")]
    for old, new in (
        ("--tiny", "--model builtin:tiny"),
        ("--steps=2", "--num_steps"),
        ("--pipeline=x", "--model"),
        ("--guidance-scale=3", "--guidance_scale"),
    ):
        with pytest.raises(ConfigError) as refused:
            main([*common, old])
        assert str(refused.value) == f"unknown option {old.split('=')[0]}: it was renamed {new} (--help lists every option)"
    with pytest.raises(ConfigError, match=r"^unknown option --num_step; did you mean --num_steps\?"):
        main([*common, "--num_step", "2"])
    assert not (tmp_path / "bon").exists()  # refused before anything ran
