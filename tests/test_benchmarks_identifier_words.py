"""benchmarks/identifier_words.py: the best word assignment on hand-made scores."""

import numpy as np
import pytest

from benchmarks.identifier_words import best_assignment

REWARDS = ["a", "b"]


def scores(values):
    """word → reward → 4 images: a fixed value plus the same zero-mean wobble for every word (paired noise)."""
    wobble = np.array([0.1, -0.1, 0.05, -0.05])
    return {w: {r: v + wobble * (i + 1) for i, (r, v) in enumerate(zip(REWARDS, vs))} for w, vs in values.items()}


def test_the_assignment_that_wins_both_rewards_is_found():
    # x raises a most but b too; by hand: (x, z) wins a (1.0 − 0.2) but loses b (0.5 − 0.6), (y, z) wins both
    # (a: 0.9 − 0.2 = 0.7, b: 0.5 − 0.0 = 0.5); the differences are the same on every image (paired): SE 0
    s = scores({"": (0.0, 0.0), "x": (1.0, 0.6), "y": (0.9, 0.0), "z": (0.2, 0.5)})
    result = best_assignment(s, REWARDS, top=3)
    assert result["words"] == {"a": "y", "b": "z"} and result["wins"] == 2
    assert result["margins"]["a"] == pytest.approx((0.7, 0.0)) and result["margins"]["b"] == pytest.approx((0.5, 0.0))


def test_too_few_distinct_words_is_a_clear_error():
    s = scores({"": (0.0, 0.0), "x": (1.0, 1.0)})
    with pytest.raises(ValueError, match="fewer than 2 distinct words"):
        best_assignment(s, REWARDS, top=3)
