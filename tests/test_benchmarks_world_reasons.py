"""world_reasons.py's pieces that need no trained world: variance shares and caption-true records."""

import numpy as np
import pytest

from benchmarks.world_reasons import caption_records, seed_share, sentiment_label_from
from shapes.data import ShapesDataConfig, qualifies, sample_attributes
from shapes.heads import WARMTH, sentiment_label


def test_seed_share_is_the_within_group_share_of_the_variance():
    values = np.array([0.0, 2.0, 10.0, 12.0])  # groups [0, 2] and [10, 12]: within variance 1, total 26
    assert seed_share(values, 2) == pytest.approx(1.0 / 26.0)
    assert seed_share(np.array([1.0, 2.0, 1.0, 2.0]), 2) == pytest.approx(1.0)  # all of it within groups
    assert np.isnan(seed_share(np.ones(4), 2))


def test_caption_records_are_records_the_caption_truly_describes():
    text = "a large green circle on a white background with a small red square, sharp, vivid, high contrast"
    records = caption_records(np.random.default_rng(0), text, 20)
    assert len(records) == 20
    for r in records:
        assert (r.colour, r.shape, r.size, r.background) == ("green", "circle", "large", "white")
        assert (r.companion.colour, r.companion.shape) == ("red", "square")
        assert all(qualifies(r, w) for w in ("sharp", "vivid", "high contrast"))
    with pytest.raises(ValueError, match="prior draws fit"):
        caption_records(np.random.default_rng(0), "a red circle, sharp, blurry", 1, tries=50)  # no record is both


def test_the_sentiment_rule_read_from_its_parts_equals_the_world_label():
    rng, data = np.random.default_rng(1), ShapesDataConfig()
    for _ in range(200):
        r = sample_attributes(rng, [("red", "circle"), ("blue", "square")], data)
        assert sentiment_label_from(WARMTH[r.colour] + WARMTH[r.background] + r.tint) == sentiment_label(r)
