"""The rule-side and statistics helpers of the world card (shapes.card) against direct computations."""

import itertools

import numpy as np
import pytest

from shapes.card import best_expansion, expected_rating, sign_flip_null, t_statistics
from shapes.data import BACKGROUNDS, HELD_OUT_PAIRS, ShapesDataConfig, contrast, parse_caption, qualifies, sample_attributes
from shapes.heads import aesthetic_rating

POSITIVE = {"sharp", "clean", "vivid", "well-formed", "masterpiece"}


def monte_carlo(colour, shape, samples, seed, keep=lambda record: True):
    rng = np.random.default_rng(seed)
    records = [sample_attributes(rng, [(colour, shape)], ShapesDataConfig()) for _ in range(samples)]
    return float(np.mean([aesthetic_rating(r) for r in records if keep(r)]))


def test_plain_caption_rating_is_the_prior_mean():
    assert expected_rating("red", "triangle", samples=400, seed=3) == pytest.approx(monte_carlo("red", "triangle", 400, 3), rel=1e-12)
    # a(x) ≈ 1 + 5.5·E[factor] + 2.5·E[contrast] + E[centred] + 1.5·P[companion] − 2·P[large]: E[factor] ≈ 0.5 (clipped
    # noise around U(0, 1)), E[contrast] = 0.259 for red over its 6 backgrounds, E[centred] ≈ π/12, P = 0.3 and 0.5: ≈ 4.11
    assert 3.6 < expected_rating("red", "triangle", samples=400, seed=3) < 4.6


def test_fixed_background_changes_exactly_the_contrast_term():
    # the same prior draws with only the background replaced: the difference is 2.5·Δcontrast
    white = expected_rating("red", "circle", background="white", samples=300, seed=1)
    black = expected_rating("red", "circle", background="black", samples=300, seed=1)
    # luma(red) = 0.299·220 + 0.587·40 + 0.114·40 = 93.82: contrast 161.18/255 on white, 93.82/255 on black
    assert white - black == pytest.approx(2.5 * (161.18 - 93.82) / 255, abs=1e-9)
    assert contrast("red", "white") == pytest.approx(161.18 / 255)
    # a large subject costs exactly 2 of a(x) on the same draws
    assert expected_rating("red", "circle", size="small", samples=300, seed=1) - expected_rating(
        "red", "circle", size="large", samples=300, seed=1
    ) == pytest.approx(2.0, abs=1e-9)


def test_words_condition_the_prior_draws():
    rated = expected_rating("blue", "circle", words=("sharp", "clean"), samples=600, seed=2)
    direct = monte_carlo("blue", "circle", 600, 2, lambda r: qualifies(r, "sharp") and qualifies(r, "clean"))
    assert rated == pytest.approx(direct, rel=1e-12)
    assert rated > expected_rating("blue", "circle", samples=600, seed=2) + 1.0
    assert expected_rating("blue", "circle", words=("blurry",), samples=600, seed=2) < expected_rating(
        "blue", "circle", samples=600, seed=2
    )
    with_companion = expected_rating("blue", "circle", companion=True, samples=2000, seed=2)
    without = expected_rating("blue", "circle", companion=False, samples=2000, seed=2)
    assert with_companion - without == pytest.approx(1.5, abs=0.25)  # the companion's 1.5, up to sampling noise


def test_expected_rating_refuses_impossible_conditions():
    with pytest.raises(ValueError, match="background 'red' equals the colour"):
        expected_rating("red", "circle", background="red", samples=10)
    with pytest.raises(ValueError, match="no prior draw of a red circle fits words"):
        expected_rating("red", "circle", words=("sharp", "blurry"), samples=50)


@pytest.mark.parametrize(("colour", "shape"), [*HELD_OUT_PAIRS, ("yellow", "circle")])
def test_best_expansion_states_every_positive_word_and_the_highest_contrast_background(colour, shape):
    text, value = best_expansion(colour, shape, samples=2000, seed=0)
    parsed = parse_caption(text)
    assert (parsed.colour, parsed.shape, parsed.size) == (colour, shape, "small")  # a(x) charges 2 for a large subject
    # hand: red, green, blue contrast most with white (0.632, 0.535, 0.671); yellow (luma 192.2) with black (0.754)
    best = max((b for b in BACKGROUNDS if b != colour), key=lambda b: contrast(colour, b))
    assert parsed.background == best == ("black" if colour == "yellow" else "white")
    assert set(parsed.words) == POSITIVE | {"high contrast"}
    assert parsed.companion is not None and parsed.companion[0] not in (colour, best) and parsed.companion[1] != shape
    # every positive word forces its factor above 0.65: a(x) > 1 + 1.5·3·0.65 + 0.65 + 2.5·contrast + 1.5
    assert value > 1 + 4.5 * 0.65 + 0.65 + 2.5 * contrast(colour, best) + 1.5
    assert value - expected_rating(colour, shape, samples=2000, seed=0) >= 1.5  # the plain prompt is mediocre


def test_paired_se_is_over_images_or_over_the_sampled_units():
    from shapes.card import CardSettings, _paired

    before = np.zeros(8)
    after = np.array([1.0, 3.0, 1.0, 3.0, 0.0, 0.0, 4.0, 4.0])  # 4 units of 2 images: means 2, 2, 0, 4
    figures: dict[str, float] = {}
    _paired(figures, "x_delta_r", after, before)
    assert figures["x_delta_r"] == pytest.approx(2.0) and figures["x_se_r"] == pytest.approx(np.std(after, ddof=1) / np.sqrt(8))
    _paired(figures, "y_delta_r", after, before, units=4)
    assert figures["y_delta_r"] == pytest.approx(2.0) and figures["y_se_r"] == pytest.approx(np.std([2, 2, 0, 4], ddof=1) / 2)
    with pytest.raises(ValueError, match="sampled_draws=3 must be >= 1 and divide images_per_prompt=16"):
        CardSettings(sampled_draws=3)


def test_image_seeds_are_prompt_major_and_pair_across_rows():
    from shapes.card import CardSettings

    assert CardSettings(seed=2, images_per_prompt=4, sampled_draws=2).image_seeds(2) == [2000, 2001, 2002, 2003] * 2
    assert CardSettings(seed=0).image_seeds(3, n=2) == [0, 1, 0, 1, 0, 1]


def test_seed_spread_ratio_is_the_root_mean_within_prompt_variance_ratio():
    from shapes.card import seed_spread_ratio

    # 2 prompts × 2 seeds: within-prompt variances (ddof 0) 1 and 0 → √0.5 for after; 4 and 4 → 2 for before
    after = np.array([1.0, 3.0, 5.0, 5.0])
    before = np.array([0.0, 4.0, 10.0, 14.0])
    assert seed_spread_ratio(after, before, prompts=2) == pytest.approx(np.sqrt(0.5) / 2.0)
    # the prompts' means do not enter: shifting one prompt's images changes nothing
    assert seed_spread_ratio(after + np.array([0.0, 0.0, 9.0, 9.0]), before, prompts=2) == pytest.approx(np.sqrt(0.5) / 2.0)


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


def test_sign_flip_null_of_identical_images_is_no_effect():
    # the prefix changed nothing: every difference 0, so t = 0 in every flip, p = 1 and "all < 1 SE" always holds
    null = sign_flip_null(np.zeros((16, 4)), flips=200)
    assert null["t"] == [0.0] * 4 and null["p"] == [1.0] * 4 and null["all_within_1se"] == 1.0
    # a constant shift is as strong as it gets: only the two one-sign flips reach |t| = ∞
    shifted = sign_flip_null(np.full((16, 1), 0.5), flips=2000, seed=1)
    assert shifted["t"] == [np.inf] and shifted["p"][0] < 0.01
