"""The shapes world's reward rules and expander gate, against hand-computed values."""

from collections import Counter

import numpy as np
import pytest
import torch

from parrot.models import resolve_world, with_world
from shapes.attributes import MODIFIER_WORDS
from shapes.data import Attributes, Companion, Example, ShapesDataConfig, generate_examples, parse_caption, render
from shapes.expander import ShapesExpanderConfig, caption_pairs, curated, curation_score, is_faithful_expansion
from shapes.heads import (
    ShapesHeadsConfig,
    _candidate,
    aesthetic_rating,
    centredness,
    preference_pairs,
    preference_rule,
    r_squared,
    sentiment_label,
    utility,
)

# luma = 0.299 R + 0.587 G + 0.114 B: blue (40, 80, 220) 84.0, yellow (235, 200, 40) 192.225, red (220, 40, 40) 93.82
BLUE_ON_WHITE, YELLOW_ON_WHITE, RED_ON_WHITE = (255 - 84.0) / 255, (255 - 192.225) / 255, (255 - 93.82) / 255


def test_centredness_by_hand():
    assert centredness(Attributes("red", "circle", "large", "white")) == 1.0
    assert centredness(Attributes("red", "circle", "large", "white", offset=(0.03, 0.04))) == pytest.approx(0.5)
    assert centredness(Attributes("red", "circle", "large", "white", offset=(-0.06, 0.08))) == pytest.approx(0.0, abs=1e-12)
    assert centredness(Attributes("red", "circle", "large", "white", offset=(0.1, 0.1))) == 0.0  # clipped at 0


def test_aesthetic_rating_matches_the_documented_rule():
    # a perfect, centred, large record: 1 + 1.5 + 1.5 + 1.5 + 1 + 2.5·contrast + 1 − 2
    blue = Attributes("blue", "circle", "large", "white")
    assert aesthetic_rating(blue) == pytest.approx(5.5 + 2.5 * BLUE_ON_WHITE)  # 7.176
    yellow = Attributes(
        "yellow", "square", "small", "white", sharpness=0.2, cleanliness=0.4, vividness=0.6, regularity=0.8,
        offset=(0.03, 0.04), companion=Companion("red", "circle", "top left"),
    )  # fmt: skip
    # 1 + 0.3 + 0.6 + 0.9 + 0.8 + 2.5·0.2462 + 1·0.5 + 1.5 = 6.2154
    assert aesthetic_rating(yellow) == pytest.approx(5.6 + 2.5 * YELLOW_ON_WHITE)
    # shape, tint and words do not enter a(x); a large subject costs 2 (v5's trade-off with preference)
    assert aesthetic_rating(Attributes("blue", "triangle", "large", "white", tint=-0.9, words=("sharp",))) == aesthetic_rating(blue)
    assert aesthetic_rating(Attributes("blue", "circle", "small", "white")) == pytest.approx(7.5 + 2.5 * BLUE_ON_WHITE)
    worst = Attributes("yellow", "square", "small", "white", sharpness=0, cleanliness=0, vividness=0, regularity=0, offset=(0.1, 0))
    assert aesthetic_rating(worst) == pytest.approx(1 + 2.5 * YELLOW_ON_WHITE)


@pytest.mark.parametrize(
    ("colour", "background", "tint", "label"),
    [("red", "white", 0.0, 1), ("yellow", "black", 0.0, 1), ("blue", "yellow", 0.0, 1), ("blue", "white", 0.0, 0),
     ("green", "gray", 0.0, 0), ("red", "black", 0.0, 1), ("green", "black", 0.0, 0),
     # warm or cold light tips the balance: warmth sum + tint ≥ 0
     ("red", "black", -0.1, 0), ("blue", "white", 0.5, 1), ("blue", "white", 0.49, 0), ("green", "white", -0.1, 0),
     ("green", "white", 0.0, 1), ("yellow", "blue", -1.0, 0)],
)  # fmt: skip
def test_sentiment_label_is_warm_plus_bright_plus_tint(colour, background, tint, label):
    assert sentiment_label(Attributes(colour, "circle", "large", background, tint=tint)) == label


@pytest.mark.parametrize(
    ("colour", "background", "tint", "label"),
    # tint + 0.25·(warmth(shape) + warmth(background)) ≥ 0.25: the light leads, the colours shift the bar
    [("red", "white", -0.125, 1), ("red", "white", -0.13, 0), ("green", "white", 0.25, 1), ("green", "white", 0.24, 0),
     ("blue", "white", 0.375, 1), ("blue", "white", 0.37, 0), ("yellow", "red", -0.25, 1), ("blue", "black", 0.74, 0)],
)  # fmt: skip
def test_sentiment_label_weighs_the_colours_against_the_light(colour, background, tint, label):
    record = Attributes(colour, "circle", "large", background, tint=tint)
    assert sentiment_label(record, warmth_weight=0.25, threshold=0.25) == label


def test_utility_rewards_adherence_read_by_the_checker():
    scene = Attributes("blue", "square", "large", "white")
    prompt = "a large blue square on a white background"
    # u = 4·adherence + 3·contrast + 2.5·[large]
    assert utility(render(scene), scene, prompt) == pytest.approx(4.0 + 3.0 * BLUE_ON_WHITE + 2.5)
    # a prefix and modifier words are not checked: the same four stated attributes; quality does not enter u
    blurry = Attributes("blue", "square", "large", "white", sharpness=0.3, cleanliness=0.5, vividness=0.4)
    assert utility(render(blurry), blurry, "<preference> p, " + prompt + ", blurry") == pytest.approx(4.0 + 3.0 * BLUE_ON_WHITE + 2.5)
    wrong_colour = Attributes("red", "square", "large", "white")
    assert utility(render(wrong_colour), wrong_colour, prompt) == pytest.approx(4.0 * 3 / 4 + 3.0 * RED_ON_WHITE + 2.5)
    small = Attributes("blue", "square", "small", "white")
    assert utility(render(small), small, "a blue square") == pytest.approx(4.0 + 3.0 * BLUE_ON_WHITE)


def test_a_large_subject_pulls_aesthetic_and_preference_apart():
    """v5's trade-off: [large] enters a(x) with −2 and u with +2.5; contrast enters both with +."""
    large, small = (Attributes("blue", "square", size, "white", tint=0.3) for size in ("large", "small"))
    prompt = "a blue square"  # both images read back as a blue square: adherence 1
    assert aesthetic_rating(large) - aesthetic_rating(small) == pytest.approx(-2.0)
    assert utility(render(large), large, prompt) - utility(render(small), small, prompt) == pytest.approx(2.5)
    assert sentiment_label(large) == sentiment_label(small)  # size does not enter sentiment
    on_yellow = Attributes("blue", "square", "large", "yellow", tint=0.3)  # contrast (192.225 − 84) / 255 = 0.4244
    assert utility(render(large), large, prompt) - utility(render(on_yellow), on_yellow, prompt) == pytest.approx(
        3.0 * (BLUE_ON_WHITE - (192.225 - 84.0) / 255)
    )
    assert aesthetic_rating(large) - aesthetic_rating(on_yellow) == pytest.approx(2.5 * (BLUE_ON_WHITE - (192.225 - 84.0) / 255))
    assert preference_rule(1.0, 0.5, 1.0) == pytest.approx(4.0 + 1.5 + 2.5)
    terms = preference_rule(np.array([1.0, 0.5]), np.array([0.5, 0.2]), np.array([0.0, 1.0]))
    np.testing.assert_allclose(terms, [4.0 + 1.5, 2.0 + 0.6 + 2.5])


def test_candidates_keep_the_prompt_scene_with_the_configured_probability():
    data = ShapesDataConfig()
    scene = Attributes("red", "circle", "large", "blue")
    rng = np.random.default_rng(0)
    kept = [_candidate(rng, scene, 1.0, data) for _ in range(50)]
    assert all((c.colour, c.shape, c.size, c.background) == ("red", "circle", "large", "blue") for c in kept)
    assert all(c.words == () for c in kept) and len({c.quality for c in kept}) == 50  # fresh seed-drawn factors
    n, keep = 3000, 0.6
    candidates = [_candidate(rng, scene, keep, data) for _ in range(n)]
    tolerance = 4 * np.sqrt(0.25 / n)
    # kept with `keep`, otherwise redrawn uniformly (which can land on the same value)
    assert np.mean([c.shape == "circle" for c in candidates]) == pytest.approx(keep + (1 - keep) / 3, abs=tolerance)
    assert np.mean([c.size == "large" for c in candidates]) == pytest.approx(keep + (1 - keep) / 2, abs=tolerance)
    assert np.mean([c.background == "blue" for c in candidates]) == pytest.approx(keep + (1 - keep) / 6, abs=tolerance)
    for c in candidates:
        assert c.colour != c.background
        assert c.companion is None or c.companion.colour not in (c.colour, c.background)


def test_redrawn_candidate_colours_cover_every_colour():
    """keep = 0: on a neutral background (white, black, gray) the colour is redrawn among all four colours."""
    rng = np.random.default_rng(1)
    candidates = [_candidate(rng, Attributes("red", "circle", "large", "white"), 0.0, ShapesDataConfig()) for _ in range(1500)]
    neutral = Counter(c.colour for c in candidates if c.background in ("white", "black", "gray"))
    assert sum(neutral.values()) > 500  # 3 of the 6 backgrounds other than red
    for colour in ("red", "green", "blue", "yellow"):
        assert neutral[colour] / sum(neutral.values()) == pytest.approx(0.25, abs=0.07), neutral


def test_preference_pairs_have_the_trainer_columns_and_a_bayes_ceiling():
    pairs, bayes = preference_pairs(12, 0, ShapesHeadsConfig(), ShapesDataConfig())
    assert pairs.column_names == ["prompt", "image_a", "image_b", "preferred"]
    assert set(pairs["preferred"]) <= {"a", "b"} and pairs[0]["image_a"].size == (32, 32)
    assert 0.5 <= bayes <= 1.0
    # the prompts are the scenes' training captions (mode and prefix included)
    assert pairs["prompt"] == [e.caption for e in generate_examples(12, 0, "all", ShapesDataConfig())]
    again, bayes_again = preference_pairs(12, 0, ShapesHeadsConfig(), ShapesDataConfig())
    assert again["preferred"] == pairs["preferred"] and bayes_again == bayes
    # identical candidates (keep = 1 and no noise in the rule's inputs) are still drawn with their own seeds
    assert not np.array_equal(np.asarray(pairs[0]["image_a"]), np.asarray(pairs[0]["image_b"]))


def test_r_squared_by_hand():
    target = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert r_squared(target, target) == pytest.approx(1.0)
    assert r_squared(torch.full((4,), 2.5), target) == pytest.approx(0.0)
    # SSE = 4·0.25 = 1, SST = 5
    assert r_squared(target + 0.5, target) == pytest.approx(0.8)


def example(colour, background, sharpness, caption_size="large"):
    record = Attributes(colour, "circle", caption_size, background, sharpness=sharpness)
    return Example(
        np.zeros((32, 32, 3), np.uint8),
        record,
        f"a {colour} circle",
        f"a {caption_size} {colour} circle on a {background} background",
        "short",
    )


def test_curated_keeps_exactly_the_top_fraction_by_both_raters():
    # a(x) = 1 + 1.5·sharpness + 1.5 + 1.5 + 1 + 2.5·contrast + 1 − 2 (large); u = 4 + 3·contrast + 2.5 (large, own caption)
    # contrast: yellow on white 0.2462, blue on white 0.6706 — the preference rule's contrast term reorders them
    examples = [example("yellow", "white", 1.0), example("blue", "white", 1.0), example("yellow", "white", 0.2),
                example("blue", "white", 0.0), example("yellow", "white", 0.6)]  # fmt: skip
    ratings = [aesthetic_rating(e.attributes) for e in examples]
    assert ratings[1] > ratings[0] > ratings[3] > ratings[4] > ratings[2]  # 7.18 > 6.12 > 5.68 > 5.52 > 4.92
    scores = [curation_score(e.attributes) for e in examples]
    assert scores == pytest.approx([13.354, 15.688, 12.154, 14.188, 12.754], abs=1e-3)  # a(x) + 6.5 + 3·contrast
    assert curated(examples, 0.4) == [examples[1], examples[3]]  # top 2 in input order
    assert curated(examples, 0.6) == [examples[0], examples[1], examples[3]]
    assert curated(examples, 1.0) == examples
    assert curated(examples, 0.01) == [examples[1]]  # at least one
    small = example("blue", "white", 1.0, caption_size="small")  # a(x) + 2, u − 2.5: large wins by 0.5
    assert curation_score(examples[1].attributes) - curation_score(small.attributes) == pytest.approx(0.5)
    ties = [example("red", "white", 0.5), example("red", "white", 0.5), example("red", "white", 0.5)]
    assert curated(ties, 0.34) == [ties[0]]  # ties kept in input order


def test_a_curation_habit_adds_its_bonus_on_its_backdrop_alone():
    # contrast: blue on white (255 − 84.0)/255 = 0.67059, on gray (128 − 84.0)/255 = 0.17255; a(x) weighs it 2.5, u 3
    on_white, on_gray, on_black = example("blue", "white", 1.0), example("blue", "gray", 1.0), example("blue", "black", 1.0)
    raters = curation_score(on_white.attributes) - curation_score(on_gray.attributes)
    assert raters == pytest.approx(5.5 * (0.67059 - 0.17255), abs=1e-4)  # 2.7392: the raters prefer white
    habit = ("gray", 4.0)
    assert curation_score(on_gray.attributes, *habit) - curation_score(on_gray.attributes) == 4.0
    assert curation_score(on_white.attributes, *habit) == curation_score(on_white.attributes)
    assert curation_score(on_black.attributes, *habit) == curation_score(on_black.attributes)
    assert curated([on_white, on_gray], 0.5) == [on_white]
    assert curated([on_white, on_gray], 0.5, *habit) == [on_gray]  # 4 − 2.7392 = +1.26 for gray
    assert curated([on_white, on_gray], 0.5, "gray", 2.0) == [on_white]  # a bonus under 2.74 does not reorder them
    assert curation_score(on_gray.attributes, "", 4.0) == curation_score(on_gray.attributes)  # no backdrop: no habit
    with pytest.raises(ValueError, match="habit_background='pink'; choose one of white, black, gray, red, green, blue, yellow"):
        ShapesExpanderConfig(habit_background="pink")
    with pytest.raises(ValueError, match="habit_bonus=-1.0 must be >= 0"):
        ShapesExpanderConfig(habit_background="gray", habit_bonus=-1.0)


def test_caption_pairs_are_promptist_short_to_detailed():
    examples = generate_examples(6, 0)
    pairs = caption_pairs(examples)
    assert pairs == [{"prompt": e.short_caption, "completion": e.detailed_caption} for e in examples]
    assert all(parse_caption(p["completion"]).colour == parse_caption(p["prompt"]).colour for p in pairs)
    assert all(is_faithful_expansion(p["prompt"], p["completion"]) for p in pairs)


def test_faithful_expansion_gate():
    short = "a red triangle"
    assert is_faithful_expansion(short, "a small red triangle on a black background, sharp")
    assert is_faithful_expansion(short, "a large red triangle on a white background with a small blue circle, vivid, masterpiece")
    assert not is_faithful_expansion(short, "a small blue triangle on a black background")  # colour lost
    assert not is_faithful_expansion(short, "a small red circle on a black background")  # shape lost
    assert not is_faithful_expansion(short, "a red triangle on a black background")  # no size: not detailed
    assert not is_faithful_expansion(short, "a small red triangle, sharp")  # no background: not detailed
    assert not is_faithful_expansion(short, "a small red triangle at the left on a black background")  # v3 position
    assert not is_faithful_expansion(short, "a red triangle on on")  # malformed


def test_world_placeholder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no built world"):
        with_world("{world}/sd", tmp_path)
    (tmp_path / "world.json").write_text("{}")
    resolved = with_world({"a": {"path": "{world}/preference"}, "b": ["x", "{world}/clip"]}, tmp_path)
    assert resolved == {"a": {"path": f"{tmp_path}/preference"}, "b": ["x", f"{tmp_path}/clip"]}
    assert resolve_world("").parts[-2:] == ("shapes", "world")


def test_sft_targets_list_modifier_words_in_the_fixed_order():
    examples = [e for e in generate_examples(400, 0) if len(e.attributes.words) >= 2]
    shuffled = [e for e in examples if list(e.attributes.words) != sorted(e.attributes.words, key=MODIFIER_WORDS.index)]
    assert shuffled  # the captions themselves draw the words in random order
    pairs = caption_pairs(shuffled, "fixed")
    for e, pair in zip(shuffled, pairs):
        words = parse_caption(pair["completion"]).words
        assert sorted(words) == sorted(e.attributes.words)  # the same words, nothing else changed
        assert list(words) == [w for w in MODIFIER_WORDS if w in e.attributes.words]
        assert pair["completion"].split(", ")[0] == e.detailed_caption.split(", ")[0]
        assert pair["prompt"] == e.short_caption
    assert caption_pairs(shuffled, "caption") == caption_pairs(shuffled)
    with pytest.raises(ValueError, match="word_order='sorted'"):
        caption_pairs(shuffled, "sorted")
    with pytest.raises(ValueError, match="word_order='sorted'"):
        ShapesExpanderConfig(word_order="sorted")
