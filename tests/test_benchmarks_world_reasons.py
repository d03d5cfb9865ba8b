"""world_reasons.py's pieces that need no trained world: variance shares, caption-true records, paired shifts by split."""

import numpy as np
import pytest

from benchmarks.world_reasons import caption_records, main, seed_share, sentiment_label_from, split_shifts
from parrot_base.cli import UsageError
from shapes.card import REWARDS
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


def test_split_shifts_are_paired_means_and_ses_per_split_with_sign_flip_p():
    # 4 images: the first two held out; reward 0 rises by (1, 3) held out and (2, 2) on training; the rest unchanged
    before = {r: np.arange(4.0) for r in REWARDS}
    after = {r: v.copy() for r, v in before.items()}
    after[REWARDS[0]] += np.array([1.0, 3.0, 2.0, 2.0])
    held = np.array([True, True, False, False])
    f = split_shifts(after, before, held, "m")
    assert len(f) == 3 * (len(REWARDS) + 1)
    mean, se, p = f[f"m_all_{REWARDS[0]}"]
    assert (mean, se) == pytest.approx((2.0, np.std([1, 3, 2, 2], ddof=1) / 2))
    assert p == pytest.approx(2 / 16, abs=0.02)  # of 16 sign patterns only the two all-same-sign ones reach |t| ≥ 2/0.41
    assert f[f"m_held_out_{REWARDS[0]}"][:2] == pytest.approx([2.0, 1.0])  # (1, 3): mean 2, SE √2/√2
    mean, se, p = f[f"m_training_{REWARDS[0]}"]
    assert (mean, se) == (2.0, 0.0)  # a constant shift: t = ∞
    assert p == pytest.approx(0.5, abs=0.03)  # the two same-sign patterns of four reach |t| = ∞, the mixed ones t = 0
    for split in ("all", "held_out", "training"):
        assert f[f"m_{split}_{REWARDS[1]}"] == [0.0, 0.0, 1.0]  # no change: p 1


def test_other_world_without_a_model_is_refused_before_any_sampling(tmp_path):
    with pytest.raises(UsageError, match="not a built shapes world"):
        main(["--other_world", str(tmp_path)])
    with pytest.raises(SystemExit):
        main(["--other_world", str(tmp_path), "--only_rendered"])
