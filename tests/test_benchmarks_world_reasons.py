"""world_reasons.py's pieces that need no trained world: variance shares, caption-true records, the identifiers'
sign-flip null."""

import itertools

import numpy as np
import pytest

from benchmarks.world_reasons import caption_records, seed_share, sentiment_label_from, sign_flip_null, t_statistics
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


def test_t_statistics_are_mean_over_standard_error_per_column():
    differences = np.array([[1.0, 0.0], [3.0, 2.0], [2.0, -2.0]])  # column 0: mean 2, sd 1; column 1: mean 0
    np.testing.assert_allclose(t_statistics(differences), [2.0 * np.sqrt(3.0), 0.0])


def test_sign_flip_null_matches_the_enumerated_flips():
    column = np.array([0.5, 1.0, 2.0, -0.3, 1.5, 0.8, -1.0, 2.5])
    exact = [t_statistics((np.array(s) * column)[:, None])[0] for s in itertools.product([-1.0, 1.0], repeat=len(column))]
    exact = np.abs(np.array(exact))
    observed = abs(t_statistics(column[:, None])[0])
    # two identical rewards: rows are flipped together, so both |t| agree in every flip and "all < 1" is one column's share
    null = sign_flip_null(np.stack([column, column], axis=1), flips=40000, seed=3)
    assert null["t"] == pytest.approx([observed, observed])
    assert null["p"][0] == pytest.approx(np.mean(exact >= observed), abs=0.006)
    assert null["all_within_1se"] == pytest.approx(np.mean(exact < 1), abs=0.008)
    # a second, independent column lowers the share that has every |t| < 1
    other = np.array([1.0, -2.0, 0.3, 0.7, -0.4, 1.1, -0.9, 0.2])
    assert sign_flip_null(np.stack([column, other], axis=1), flips=40000, seed=3)["all_within_1se"] < null["all_within_1se"] - 0.1
