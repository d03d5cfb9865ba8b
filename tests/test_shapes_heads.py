"""The shapes world's reward rules and expander gate, against hand-computed values."""

import pytest
import torch

from parrot.world import resolve_world, with_world
from shapes.data import Attributes, ShapesDataConfig, render
from shapes.expander import caption_pairs, is_faithful_expansion
from shapes.heads import ShapesHeadsConfig, aesthetic_rating, preference_pairs, r_squared, sentiment_label, utility
from shapes.data import generate_examples


def test_aesthetic_rating_matches_the_documented_rule():
    # blue (40, 80, 220) on white: luma 0.299·40 + 0.587·80 + 0.114·220 = 84.0 vs 255
    blue = Attributes("blue", "circle", "large", "center", "white")
    assert aesthetic_rating(blue) == pytest.approx(1 + 6 * (255 - 84.0) / 255 + 1 + 2)
    # yellow (235, 200, 40) on white, small, at the left: luma 192.225
    yellow = Attributes("yellow", "square", "small", "left", "white")
    assert aesthetic_rating(yellow) == pytest.approx(1 + 6 * (255 - 192.225) / 255)
    assert aesthetic_rating(blue) > aesthetic_rating(yellow)


@pytest.mark.parametrize(
    ("colour", "background", "label"),
    [("red", "white", 1), ("yellow", "black", 1), ("blue", "yellow", 1), ("blue", "white", 0), ("green", "gray", 0),
     ("red", "black", 1), ("green", "black", 0)],
)  # fmt: skip
def test_sentiment_label_is_warm_plus_bright(colour, background, label):
    assert sentiment_label(Attributes(colour, "circle", "large", "center", background)) == label


def test_utility_rewards_adherence_read_by_the_checker():
    scene = Attributes("red", "square", "large", "center", "white")
    prompt = "a large red square at the center on a white background"
    right = utility(render(scene), scene, prompt)
    assert right == pytest.approx(4.0 + 0.3 * aesthetic_rating(scene))
    wrong_colour = Attributes("blue", "square", "large", "center", "white")
    assert utility(render(wrong_colour), wrong_colour, prompt) == pytest.approx(4.0 * 4 / 5 + 0.3 * aesthetic_rating(wrong_colour))


def test_preference_pairs_have_the_trainer_columns_and_a_bayes_ceiling():
    pairs, bayes = preference_pairs(12, 0, ShapesHeadsConfig(), ShapesDataConfig())
    assert pairs.column_names == ["prompt", "image_a", "image_b", "preferred"]
    assert set(pairs["preferred"]) <= {"a", "b"} and pairs[0]["image_a"].size == (32, 32)
    assert 0.5 <= bayes <= 1.0
    again, _ = preference_pairs(12, 0, ShapesHeadsConfig(), ShapesDataConfig())
    assert again["preferred"] == pairs["preferred"]


def test_r_squared_by_hand():
    target = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert r_squared(target, target) == pytest.approx(1.0)
    assert r_squared(torch.full((4,), 2.5), target) == pytest.approx(0.0)
    # SSE = 4·0.25 = 1, SST = 5
    assert r_squared(target + 0.5, target) == pytest.approx(0.8)


def test_faithful_expansion_gate():
    short = "a red triangle"
    assert is_faithful_expansion(short, "a small red triangle at the left on a black background, sharp")
    assert not is_faithful_expansion(short, "a small blue triangle at the left on a black background")  # colour lost
    assert not is_faithful_expansion(short, "a red triangle on a black background")  # not detailed
    assert not is_faithful_expansion(short, "a red triangle at the at the")  # malformed
    pairs = caption_pairs(generate_examples(3, 0))
    assert all(is_faithful_expansion(p["prompt"], p["completion"]) for p in pairs)


def test_world_placeholder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no built world"):
        with_world("{world}/sd", tmp_path)
    (tmp_path / "world.json").write_text("{}")
    resolved = with_world({"a": {"path": "{world}/preference"}, "b": ["x", "{world}/clip"]}, tmp_path)
    assert resolved == {"a": {"path": f"{tmp_path}/preference"}, "b": ["x", f"{tmp_path}/clip"]}
    assert resolve_world("").parts[-2:] == ("shapes", "world")
