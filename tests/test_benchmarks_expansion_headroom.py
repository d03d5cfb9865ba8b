"""benchmarks/expansion_headroom.py: the grid of written expansions and the paired Table-1 Δ, by hand."""

import json

import numpy as np
import pytest

from benchmarks.expansion_headroom import candidate_expansions, light_expansions, main, table1_deltas, word_expansions
from parrot.models import committed_shapes_world
from parrot_base.cli import UsageError
from shapes.captions import parse_caption, short_prompt
from shapes.data import HELD_OUT_PAIRS


def test_the_grid_spans_the_committed_sft_beams_and_every_caption_parses_back():
    world = json.loads((committed_shapes_world() / "world.json").read_text())
    beams = world["sft_expansions"]["beam"]

    def statement(caption):  # what a caption states, but the companion's colour and shape
        parsed = parse_caption(caption)
        return parsed.size, parsed.background, parsed.companion is not None, parsed.words

    for (colour, shape), beam in zip(HELD_OUT_PAIRS, beams):
        grid = candidate_expansions(colour, shape)
        assert len(grid) == 24 and len(set(grid.values())) == 24
        # the SFT beam states what one of the written expansions states (its companion may be another shape)
        assert statement(beam) in {statement(caption) for caption in grid.values()}
        for name, caption in grid.items():
            size, background, companion, light = name.split("/")
            parsed = parse_caption(caption)
            assert (parsed.colour, parsed.shape, parsed.size, parsed.background) == (colour, shape, size, background)
            assert ("with a small" in caption) == (companion == "companion")
            assert caption.endswith("warm light") == (light == "warm")
            assert caption.startswith(short_prompt(colour, shape).replace("a ", f"a {size} ", 1))


def test_the_words_grid_varies_only_the_quality_words():
    grid = word_expansions("red", "triangle")
    assert len(grid) == 12
    # the committed world's first held-out beam is the grid's "all" row
    assert grid["words: all"] == "a large red triangle on a white background, sharp, clean, vivid, well-formed, masterpiece, high contrast"
    assert grid["words: none"] == "a large red triangle on a white background, high contrast"
    assert grid["words: only masterpiece"] == "a large red triangle on a white background, masterpiece, high contrast"
    assert (
        grid["words: all but sharp"] == "a large red triangle on a white background, clean, vivid, well-formed, masterpiece, high contrast"
    )
    for caption in grid.values():
        parsed = parse_caption(caption)
        assert (parsed.size, parsed.background, parsed.companion) == ("large", "white", None)


def test_the_light_grid_varies_only_the_light_word():
    grid = light_expansions("red", "triangle")
    # the "none" row is the words grid's "all" row, the committed world's first held-out beam
    assert grid["light: none"] == word_expansions("red", "triangle")["words: all"]
    assert grid["light: cold"] == grid["light: none"] + ", cold light"  # the light word last, in the world's word order
    lights = {name: parse_caption(caption).words for name, caption in grid.items()}
    assert {name: {"warm light", "cold light"} & set(words) for name, words in lights.items()} == {
        "light: none": set(), "light: warm": {"warm light"}, "light: cold": {"cold light"}
    }  # fmt: skip
    assert len({tuple(w for w in words if "light" not in w) for words in lights.values()}) == 1  # the other words agree


def test_table1_deltas_by_hand():
    # 2 prompts × 2 images, 2 rewards; bounds over both rows: reward 0 in [0, 4], reward 1 in [0, 2]
    beam = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 2.0], [1.0, 0.0]])
    other = np.array([[2.0, 0.0], [4.0, 0.0], [0.0, 1.0], [2.0, 1.0]])
    d = table1_deltas({"beam": beam, "other": other}, "beam", prompts=2)
    # per-prompt means: beam (1, 0), (1, 1); other (3, 0), (1, 1) → Table-1 Δ per prompt (2/4 + 0)/2 = 0.25 and 0
    assert d["other"]["table1"] == pytest.approx((0.125, 0.125))
    assert d["other"]["rewards"] == pytest.approx([1.0, 0.0])
    assert d["beam"]["table1"] == pytest.approx((0.0, 0.0))


def test_a_directory_without_a_world_is_refused_in_one_line(tmp_path):
    with pytest.raises(UsageError, match="not a built shapes world"):
        main(["--world", str(tmp_path)])
