"""The GenEval-style rule reward (rewards.attribute_rules) on the shapes world's renderings of known attributes."""

import json

import pytest
import torch

from parrot.models import build_evaluator, resolve_reward_settings
from parrot.presets import PRESETS
from parrot.train_config import load_train_config
from parrot_base.cli import error_line
from rewards import load_reward
from rewards.attribute_rules import rule_score
from shapes.data import Attributes, render

SETTINGS = PRESETS["shapes"]["rewards"]["settings"]["attribute_rules"]
#: crisp, clean, vivid, centred renderings whose every attribute the checker reads right
RECORDS = [
    Attributes("red", "circle", "large", "black"),
    Attributes("blue", "square", "small", "white"),
    Attributes("yellow", "triangle", "large", "gray"),
]


def rendered(records=RECORDS) -> torch.Tensor:
    return torch.stack([torch.from_numpy(render(r)).permute(2, 0, 1).float() / 255.0 for r in records])


def test_matching_prompts_score_one_and_each_wrong_attribute_costs_exactly_its_share():
    reward = load_reward("attribute_rules", **SETTINGS)
    images = rendered()
    prompts = [
        "a large red circle on a black background",  # 4 stated, 4 honoured: 1
        "a small green square on a white background",  # colour wrong: 3/4
        "a small yellow triangle on a blue background",  # size and background wrong: 2/4
    ]
    assert reward(images, prompts).tolist() == pytest.approx([1.0, 0.75, 0.5])
    short = ["a red square", "<preference> photo, a blue square", "a red circle, sharp"]  # 2 stated each
    assert reward(images, short).tolist() == pytest.approx([0.5, 1.0, 0.0])
    strict = load_reward("attribute_rules", all_or_nothing=True, **SETTINGS)
    assert strict(images, prompts).tolist() == [1.0, 0.0, 0.0]
    assert strict(images, short).tolist() == [0.0, 1.0, 0.0]


def test_the_score_is_the_fraction_or_the_product_of_the_verdicts():
    verdicts = {"colour": True, "shape": False, "size": True}
    assert rule_score(verdicts) == pytest.approx(2 / 3)
    assert rule_score(verdicts, all_or_nothing=True) == 0.0
    assert rule_score({"colour": True}, all_or_nothing=True) == 1.0


def test_the_original_prompt_is_scored_and_the_expansion_ignored():
    reward = load_reward("attribute_rules", **SETTINGS)
    metadata = [{"expanded_prompt": "a small green square on a red background"}] * 3
    prompts = ["a large red circle", "a small blue square", "a large yellow triangle"]
    assert reward(rendered(), prompts, metadata).tolist() == [1.0, 1.0, 1.0]


def test_unreadable_prompts_and_bad_checkers_are_one_line_errors():
    reward = load_reward("attribute_rules", **SETTINGS)
    with pytest.raises(ValueError) as caught:
        reward(rendered()[:1], ["a dog playing chess"])
    assert error_line(caught.value).startswith(
        "error: reward 'attribute_rules': the checker cannot read prompt 'a dog playing chess': cannot parse caption"
    )
    cases = {
        "": "needs the setting checker='module:function'",
        "shapes.checker": "must name a function as 'module:function'",
        "shapes.nowhere:check": "cannot import 'shapes.nowhere'",
        "shapes.checker:nope": "'shapes.checker' has no function 'nope'",
    }
    for checker, message in cases.items():
        with pytest.raises(ValueError, match=message):
            load_reward("attribute_rules", checker=checker)


def test_a_checker_that_reads_nothing_of_the_prompt_is_refused(monkeypatch):
    import shapes.checker

    monkeypatch.setattr(shapes.checker, "prompt_verdicts", lambda image, prompt: {})
    reward = load_reward("attribute_rules", **SETTINGS)
    with pytest.raises(ValueError, match="prompt 'a red circle' names no attribute the checker reads"):
        reward(rendered()[:1], ["a red circle"])


def test_the_shapes_preset_adds_it_by_name(tmp_path):
    config = load_train_config(["--rewards.names", "clip_score", "attribute_rules"])
    assert list(config.rewards.names) == ["clip_score", "attribute_rules"]
    resolved = resolve_reward_settings(["attribute_rules"], config.rewards.settings, tmp_path, "cpu", build=False)
    evaluator = build_evaluator(resolved)
    result = evaluator(rendered(), ["a large red circle", "a large blue square", "a small yellow triangle"])
    assert result.names == ["attribute_rules"] and result.scores[:, 0].tolist() == pytest.approx([1.0, 2 / 3, 2 / 3])  # size wrong: 2 of 3


def test_one_shapes_training_iteration_and_its_evaluation_score_it(tmp_path):
    from parrot import evaluate, train

    run = tmp_path / "run"
    train.main(["--rewards.names", "clip_score", "attribute_rules", "--iterations", "1", "--checkpoint_every", "1",
                "--sampling.num_steps", "2", "--sampling.images_per_prompt", "4", "--t2i.inner_epochs", "1",
                "--expander.sampling.max_new_tokens", "8", "--evaluation.enabled", "false", "--output_dir", str(run)])  # fmt: skip
    curve = json.loads((run / "curves.jsonl").read_text().splitlines()[0])
    # 4 images of one short prompt, 2 stated attributes each: every score is 0, 1/2 or 1, the mean a multiple of 1/8
    assert (8 * curve["reward/attribute_rules/mean"]).is_integer() and 0 <= curve["reward/attribute_rules/mean"] <= 1
    out = tmp_path / "eval"
    record = evaluate.main(["--methods", f"run={run}", "--prompts", "{world}/prompts/held_out.txt", "--max_prompts", "2",
                            "--images_per_prompt", "2", "--num_steps", "2", "--num_beams", "1", "--out", str(out)])  # fmt: skip
    assert record["rewards"] == ["clip_score", "attribute_rules"]  # the run's training rewards, with its settings
    scores = [v for line in (out / "results.jsonl").read_text().splitlines() for v in json.loads(line)["rewards"]["attribute_rules"]]
    assert len(scores) == 4 and set(scores) <= {0.0, 0.5, 1.0}
