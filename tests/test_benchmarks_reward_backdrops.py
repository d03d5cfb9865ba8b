"""reward_backdrops.py's pieces that need no trained world: matched records, the rules' change, paired changes."""

import numpy as np
import pytest

from benchmarks.reward_backdrops import backdrop_changes, main, matched_records, rule_scores
from parrot_base.cli import UsageError
from shapes.attributes import SHAPES


def test_matched_records_differ_only_in_the_backdrop():
    records = matched_records("blue", ["white", "black"], per_shape=3, seed=0)
    white, black = records["white"], records["black"]
    assert len(white) == len(black) == 3 * len(SHAPES)
    assert [a.shape for a in white] == [s for s in SHAPES for _ in range(3)]
    for w, b in zip(white, black):
        assert (w.background, b.background) == ("white", "black")
        assert (w.colour, w.size, w.companion, w.offset) == ("blue", "large", None, (0.0, 0.0))
        assert (w.quality, w.sharpness, w.tint, w.detail_seed) == (b.quality, b.sharpness, b.tint, b.detail_seed)
        assert 0.3 <= w.quality <= 0.9 and w.sharpness == w.cleanliness == w.vividness == w.regularity == w.quality
    assert matched_records("blue", ["white"], 3, seed=0)["white"] == white  # the same draws for a seed
    assert matched_records("blue", ["white"], 3, seed=1)["white"] != white


def test_the_rules_change_with_the_backdrop_by_their_contrast_terms():
    # blue: luma 84.0; contrast on white (255 − 84)/255 = 0.67059, on black 84/255 = 0.32941; a(x) weighs it 2.5, u 3
    records = matched_records("blue", ["white", "black"], per_shape=2, seed=0)
    white, black = rule_scores(records["white"]), rule_scores(records["black"])
    assert black["laion_aesthetic"] - white["laion_aesthetic"] == pytest.approx(np.full(6, 2.5 * (0.32941 - 0.67059)), abs=1e-4)
    assert black["preference"] - white["preference"] == pytest.approx(np.full(6, 3.0 * (0.32941 - 0.67059)), abs=1e-4)
    assert white["preference"] == pytest.approx(np.full(6, 4.0 + 3.0 * 0.67059 + 2.5), abs=1e-4)  # adherence 1, large


def test_backdrop_changes_are_the_paired_mean_and_standard_error():
    before = {"r": np.array([1.0, 2.0, 3.0])}
    after = {"r": np.array([2.0, 2.0, 6.0])}  # differences 1, 0, 3: mean 4/3, sd sqrt(7/3), SE sqrt(7/9)
    mean, se = backdrop_changes(before, after)["r"]
    assert mean == pytest.approx(4 / 3) and se == pytest.approx(np.sqrt(7 / 9))


@pytest.mark.parametrize(
    "argv, message",
    [(["--to", "pink"], r"unknown backdrop\(s\) \['pink'\]; choose from white"), (["--per_shape", "1"], "at least 2 records")],
)
def test_mistakes_are_one_line_errors(argv, message):
    with pytest.raises(UsageError, match=message):
        main(argv)
