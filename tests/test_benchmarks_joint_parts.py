"""benchmarks/joint_parts.py: the factorial effects of a run's trained parts on hand-made scores."""

import itertools

import numpy as np
import pytest

from benchmarks.joint_parts import part_effects, subset_label, summary
from parrot.evaluation import held_out_samples_of_parts

PARTS = ["t2i", "expander", "tokens"]


def additive_scores(effects, interaction, wobble):
    """subset label → (4 images, 1 reward): 1 + Σ_{p in S} effects[p] (+ interaction when t2i and expander are both
    in S), plus a per-image term of each part's own (``wobble[p]`` times the image's row) so that SEs are not 0."""
    rows = np.arange(4.0)[:, None]
    scores = {}
    for n in range(len(PARTS) + 1):
        for subset in itertools.combinations(PARTS, n):
            value = 1.0 + sum(effects[p] + wobble[p] * rows for p in subset)
            if {"t2i", "expander"} <= set(subset):
                value = value + interaction
            scores[subset_label(frozenset(subset), PARTS)] = value * np.ones((4, 1))
    return scores


def test_main_alone_and_last_effects_against_hand_computed_values():
    effects = {"t2i": 0.5, "expander": -0.2, "tokens": 0.1}
    wobble = {"t2i": 0.1, "expander": 0.0, "tokens": 0.0}
    result = part_effects(additive_scores(effects, interaction=0.4, wobble=wobble), PARTS)
    # t2i: alone 0.5 (+0.1·row: mean over rows 0..3 = 0.15); last 0.5 + 0.4; main: half the subsets hold the
    # expander, so 0.5 + 0.4/2; each difference carries 0.1·row, whose SE over rows 0..3 is 0.1·sem([0,1,2,3])
    row_se = 0.1 * np.std([0, 1, 2, 3], ddof=1) / 2
    assert result["t2i"]["alone"]["mean"][0] == pytest.approx(0.5 + 0.15)
    assert result["t2i"]["last"]["mean"][0] == pytest.approx(0.9 + 0.15)
    assert result["t2i"]["main"]["mean"][0] == pytest.approx(0.7 + 0.15)
    assert result["t2i"]["main"]["se"][0] == pytest.approx(row_se)
    # the expander: alone −0.2, last −0.2 + 0.4, main −0.2 + 0.2; no per-image term: SE 0
    assert result["expander"]["alone"]["mean"][0] == pytest.approx(-0.2)
    assert result["expander"]["last"]["mean"][0] == pytest.approx(0.2)
    assert result["expander"]["main"]["mean"][0] == pytest.approx(0.0)
    assert result["expander"]["main"]["se"][0] == pytest.approx(0.0)
    # tokens interact with nothing: every effect 0.1
    for effect in ("main", "alone", "last"):
        assert result["tokens"][effect]["mean"][0] == pytest.approx(0.1)
    # total = everything − nothing = 0.5 − 0.2 + 0.1 + 0.4 (+0.15 from t2i's rows) = sum of main effects here
    total = result["total"]["main"]["mean"][0]
    assert total == pytest.approx(0.95)
    assert total == pytest.approx(sum(result[p]["main"]["mean"][0] for p in PARTS))


def test_subset_labels_follow_the_parts_order():
    assert subset_label(frozenset({"tokens", "t2i"}), PARTS) == "t2i+tokens"
    assert subset_label(frozenset(), PARTS) == "none"


def test_summary_refuses_records_of_different_parts():
    scores = additive_scores({"t2i": 0.5, "expander": 0.0, "tokens": 0.0}, 0.0, {p: 0.0 for p in PARTS})
    record = {"parts": PARTS, "reward_names": ["r"], "scores": {k: v.tolist() for k, v in scores.items()}}
    other = dict(record, parts=["t2i", "expander"])
    with pytest.raises(ValueError, match="trained different parts or rewards"):
        summary([record, other])
    assert "| t2i | alone | +0.5000 ± 0.0000 |" in summary([record, record])


def test_an_unknown_part_is_refused_before_anything_is_sampled():
    with pytest.raises(ValueError, match=r"trained parts \['lora'\]: use some of t2i, expander, tokens"):
        held_out_samples_of_parts(None, ["lora"], "x")
