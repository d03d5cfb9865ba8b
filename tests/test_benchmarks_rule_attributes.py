"""rule_attributes.py: per-attribute rates and paired differences, on hand-made verdicts and rendered images."""

import json
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from benchmarks.rule_attributes import attribute_rates, main, paired_differences, read_verdicts
from parrot_base.cli import UsageError
from shapes.data import ShapesDataConfig, render, sample_attributes


def test_rates_are_shares_of_the_images_stating_each_attribute_and_the_rule_their_mean_fraction():
    verdicts = {
        ("p", 0): {"colour": True, "shape": False},
        ("p", 1): {"colour": True, "shape": True},
        ("q", 0): {"colour": False, "shape": False, "size": True},
    }
    rates = attribute_rates(verdicts)
    assert rates["colour"] == pytest.approx(2 / 3) and rates["shape"] == pytest.approx(1 / 3) and rates["size"] == 1.0
    assert rates["rule"] == pytest.approx((0.5 + 1.0 + 1 / 3) / 3)
    later = {("p", 0): {"colour": True, "shape": True}, ("p", 1): {"colour": False, "shape": True}, ("r", 5): {"colour": True}}
    diff = paired_differences(verdicts, later)  # only the two shared images count
    assert diff["colour"] == pytest.approx(0.5 - 1.0) and diff["shape"] == pytest.approx(1.0 - 0.5)
    with pytest.raises(UsageError, match="share no"):
        paired_differences(verdicts, {("z", 0): {"colour": True}})


def write_generate_dir(directory, images_and_prompts):
    (directory / "images").mkdir(parents=True)
    rows = []
    for i, (image, prompt) in enumerate(images_and_prompts):
        name = f"images/{i:05d}.png"
        Image.fromarray(image).save(directory / name)
        rows.append({"prompt": prompt, "seed": i, "image": name})
    (directory / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_rendered_scenes_are_read_back_honoured_and_a_wrong_colour_is_not(tmp_path):
    data = ShapesDataConfig()
    scene = replace(sample_attributes(np.random.default_rng(0), [("red", "circle")], data), size="large", background="white")
    scene = replace(scene, companion=None, sharpness=1.0, cleanliness=1.0, vividness=1.0, regularity=1.0, offset=(0.0, 0.0))
    wrong = replace(scene, colour="blue")
    prompt = "a large red circle on a white background"
    write_generate_dir(tmp_path / "a", [(render(scene, data), prompt), (render(wrong, data), prompt)])
    verdicts = read_verdicts(tmp_path / "a")
    assert verdicts[(prompt, 0)] == {"colour": True, "shape": True, "size": True, "background": True}
    assert verdicts[(prompt, 1)]["colour"] is False and verdicts[(prompt, 1)]["shape"] is True
    report = main([str(tmp_path / "a"), "--base", str(tmp_path / "a")])
    assert report["difference_mean"]["rule"] == 0.0
    with pytest.raises(UsageError, match="no results.jsonl"):
        read_verdicts(tmp_path)
