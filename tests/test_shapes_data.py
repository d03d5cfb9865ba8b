"""The shapes generator (world v4): determinism, caption grammar and prefixes, modes and their shared
prior, modifier words, splits, validation, and what each record field does to the pixels."""

import numpy as np
import pytest

from shapes.data import (
    BACKGROUNDS,
    COLOURS,
    CORNERS,
    HELD_OUT_PAIRS,
    MODIFIER_WORDS,
    Attributes,
    Companion,
    PromptAttributes,
    ShapesDataConfig,
    detailed_caption,
    generate_examples,
    modifier_words,
    parse_caption,
    qualifies,
    render,
    short_caption,
    strip_prefix,
    to_dataset,
    with_prefix,
)

BLUE, WHITE, GRAY = np.array(COLOURS["blue"]), np.array(BACKGROUNDS["white"]), np.array(BACKGROUNDS["gray"])


@pytest.fixture(scope="module")
def examples():
    """One shared draw of the default generator (train split) for the statistical tests."""
    return generate_examples(1500, 2)


def test_same_seed_same_examples_and_other_seed_differs():
    first, again, other = (generate_examples(40, seed) for seed in (3, 3, 4))
    for a, b in zip(first, again):
        assert np.array_equal(a.image, b.image)
        assert (a.caption, a.mode, a.prefix, a.attributes) == (b.caption, b.mode, b.prefix, b.attributes)
    assert [e.detailed_caption for e in first] != [e.detailed_caption for e in other]


def test_detailed_caption_round_trips_to_the_full_record():
    for example in generate_examples(300, 0, "all"):
        record = example.attributes
        companion = None if record.companion is None else (record.companion.colour, record.companion.shape)
        expected = PromptAttributes(record.colour, record.shape, record.size, record.background, companion, record.words)
        assert parse_caption(example.detailed_caption) == expected
        assert parse_caption(example.short_caption).stated() == {"colour": record.colour, "shape": record.shape}
        # the training caption behind its identifier/filler prefix reads back as its mode's caption
        parsed = parse_caption(example.caption)
        if example.mode == "detailed":
            assert parsed == expected
        else:
            words = record.words if example.mode == "tagged" else ()
            assert parsed == PromptAttributes(record.colour, record.shape, words=words)
        assert strip_prefix(example.caption) == (example.caption[len(example.prefix) + 2 :] if example.prefix else example.caption)


def test_caption_text_prefix_and_partial_parse():
    attributes = Attributes(
        "red", "circle", "large", "black", companion=Companion("blue", "square", "top left"),
        words=("sharp", "high contrast"), sharpness=0.9,
    )  # fmt: skip
    assert short_caption(attributes) == "a red circle"
    assert detailed_caption(attributes) == "a large red circle on a black background with a small blue square, sharp, high contrast"
    prefixed = with_prefix(detailed_caption(attributes), "<preference> photo")
    assert prefixed == "<preference> photo, a large red circle on a black background with a small blue square, sharp, high contrast"
    assert strip_prefix(prefixed) == detailed_caption(attributes)
    assert with_prefix("a red circle", "") == "a red circle"
    assert strip_prefix("a red circle, sharp, vivid") == "a red circle, sharp, vivid"  # words are not a prefix
    assert parse_caption("  A Small blue square on a gray background ").stated() == {
        "colour": "blue", "shape": "square", "size": "small", "background": "gray"
    }  # fmt: skip
    assert parse_caption("l c digital, a yellow triangle, warm light, well-formed") == PromptAttributes(
        "yellow", "triangle", words=("warm light", "well-formed")
    )


@pytest.mark.parametrize(
    "bad",
    ["", "a purple circle", "a red circle at the left", "red circle", "a red circle, shiny", "photo, a red circle with a blue square"],
)
def test_unparseable_caption_is_refused_with_the_text(bad):
    with pytest.raises(ValueError, match="cannot parse caption"):
        parse_caption(bad)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Attributes("red", "hexagon", "large", "white"), "unknown shape 'hexagon'"),
        (lambda: Attributes("red", "circle", "large", "red"), "background 'red' equals the shape colour"),
        (lambda: Attributes("red", "circle", "large", "white", sharpness=1.5), r"sharpness=1.5 must lie in \[0, 1\]"),
        (lambda: Attributes("red", "circle", "large", "white", cleanliness=-0.1), r"cleanliness=-0.1 must lie in \[0, 1\]"),
        (lambda: Attributes("red", "circle", "large", "white", tint=1.2), r"tint=1.2 must lie in \[-1, 1\]"),
        (lambda: Attributes("red", "circle", "large", "white", words=("shiny",)), r"unknown modifier words \['shiny'\]"),
        (lambda: ShapesDataConfig(short_fraction=0.6, tagged_fraction=0.5), "short_fraction=0.6 \\+ tagged_fraction=0.5 must not exceed 1"),
        (lambda: ShapesDataConfig(supersample=0), "supersample=0"),
        (lambda: ShapesDataConfig(max_offset=0.2), r"max_offset=0.2 must lie in \[0, 0.15\]"),
        (lambda: ShapesDataConfig(light_strength=1.5), r"light_strength=1.5 must lie in \[0, 1\]"),
        (lambda: ShapesDataConfig(light_target="shape"), "light_target='shape'; choose one of scene, background"),
        (lambda: qualifies(Attributes("red", "circle", "large", "white"), "shiny"), "unknown modifier word 'shiny'"),
    ],
)
def test_validation_names_the_bad_value(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_held_out_pairs_never_in_train_and_only_in_held_out():
    train = {(e.attributes.colour, e.attributes.shape) for e in generate_examples(400, 1, "train")}
    held = {(e.attributes.colour, e.attributes.shape) for e in generate_examples(100, 1, "held_out")}
    assert not train & set(HELD_OUT_PAIRS)
    assert held == set(HELD_OUT_PAIRS)
    assert len(train) == 12 - len(HELD_OUT_PAIRS)


def test_mode_and_prefix_fractions_follow_the_config(examples):
    config = ShapesDataConfig()
    n = len(examples)
    for mode, expected in (("short", config.short_fraction), ("tagged", config.tagged_fraction),
                           ("detailed", 1 - config.short_fraction - config.tagged_fraction)):  # fmt: skip
        share = sum(e.mode == mode for e in examples) / n
        assert share == pytest.approx(expected, abs=4 * np.sqrt(expected * (1 - expected) / n)), mode
    share = sum(bool(e.prefix) for e in examples) / n
    assert share == pytest.approx(config.prefix_probability, abs=0.05)
    assert all(1 <= len(e.prefix.split()) <= 4 for e in examples if e.prefix)
    # a config without short/tagged captions and prefixes yields only plain detailed captions
    plain = generate_examples(30, 0, config=ShapesDataConfig(short_fraction=0.0, tagged_fraction=0.0, prefix_probability=0.0))
    assert all(e.mode == "detailed" and e.caption == e.detailed_caption for e in plain)


def test_short_and_detailed_captions_share_one_prior(examples):
    """v3 skewed short captions to a default scene; v4 draws every mode from the same prior."""
    short = [e.attributes for e in examples if e.mode == "short"]
    detailed = [e.attributes for e in examples if e.mode == "detailed"]
    for background in BACKGROUNDS:
        s = np.mean([a.background == background for a in short])
        d = np.mean([a.background == background for a in detailed])
        assert abs(s - d) < 0.08, (background, s, d)
    assert abs(np.mean([a.size == "large" for a in short]) - np.mean([a.size == "large" for a in detailed])) < 0.1
    assert abs(np.mean([a.quality for a in short]) - np.mean([a.quality for a in detailed])) < 0.06
    assert abs(np.mean([a.companion is not None for a in short]) - np.mean([a.companion is not None for a in detailed])) < 0.1
    # q ~ U(0, 1): mean 1/2 and variance 1/12 over all examples
    q = np.array([e.attributes.quality for e in examples])
    assert q.mean() == pytest.approx(0.5, abs=0.03) and q.var() == pytest.approx(1 / 12, abs=0.01)


def test_every_modifier_word_qualifies_for_its_record(examples):
    named = 0
    for example in examples:
        record = example.attributes
        assert all(qualifies(record, w) for w in record.words), record
        assert len(set(record.words)) == len(record.words)
        named += len(record.words)
    assert named > len(examples)  # words are common, not a corner case
    # with probability 1 a caption names exactly the words its image qualifies for
    record = Attributes("yellow", "circle", "large", "black", quality=0.9, sharpness=0.9, cleanliness=0.2,
                        vividness=0.5, regularity=0.7, tint=-0.6)  # fmt: skip
    words = modifier_words(record, np.random.default_rng(0), 1.0)
    # yellow luma 192.225 vs black 0: contrast 0.754 > 0.5
    assert sorted(words) == sorted(["sharp", "cluttered", "well-formed", "masterpiece", "high contrast", "cold light"])
    assert modifier_words(record, np.random.default_rng(0), 0.0) == ()
    assert set(MODIFIER_WORDS) >= set(words)


@pytest.mark.parametrize(
    "field, value, word, expected",
    [("sharpness", 0.66, "sharp", True), ("sharpness", 0.65, "sharp", False), ("sharpness", 0.34, "blurry", True),
     ("vividness", 0.35, "faded", False), ("quality", 0.81, "masterpiece", True), ("quality", 0.8, "masterpiece", False),
     ("tint", 0.51, "warm light", True), ("tint", -0.5, "cold light", False), ("regularity", 0.1, "distorted", True)],
)  # fmt: skip
def test_qualifies_thresholds(field, value, word, expected):
    assert qualifies(Attributes("red", "circle", "large", "white", **{field: value}), word) is expected


def test_perfect_record_draws_only_palette_colours_and_a_symmetric_circle():
    image = render(Attributes("blue", "circle", "large", "white"))
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    exact = np.all(image == BLUE, -1) | np.all(image == WHITE, -1)
    assert 0 < (~exact).sum() < 0.2 * exact.size  # the anti-aliased rim only
    alpha = (255.0 - image[..., 0]) / (255.0 - 40.0)  # coverage from the red channel
    rim = ~exact
    # every rim pixel is a blend of exactly the two palette colours (per channel, same α)
    for channel, (fg, bg) in enumerate(zip(BLUE, WHITE)):
        assert np.abs(image[rim][:, channel] - (alpha[rim] * fg + (1 - alpha[rim]) * bg)).max() <= 1.0
    assert np.array_equal(image, image[:, ::-1]) and np.array_equal(image, image[::-1])
    # a large circle: radius 0.22·32 px, area π·7.04² ≈ 155.7 px²
    assert alpha.sum() == pytest.approx(np.pi * (0.22 * 32) ** 2, rel=0.02)


def max_step(image):
    pixels = image.astype(float)
    return max(np.abs(np.diff(pixels, axis=0)).sum(-1).max(), np.abs(np.diff(pixels, axis=1)).sum(-1).max())


def test_lower_sharpness_blurs_the_edge():
    steps = [max_step(render(Attributes("blue", "square", "large", "white", sharpness=s))) for s in (1.0, 0.6, 0.0)]
    assert steps[0] == (255 - 40) + (255 - 80) + (255 - 220)  # a crisp square edge: the full colour step
    assert steps[0] > steps[1] > steps[2]


def test_lower_cleanliness_adds_the_seeded_specks():
    config = ShapesDataConfig()
    record = Attributes("blue", "circle", "small", "white", cleanliness=0.0, detail_seed=7)
    image, clean = render(record), render(Attributes("blue", "circle", "small", "white", detail_seed=7))
    # the specks of render(): max_specks·(1 − cleanliness) = 6 blocks of 2×2 at seeded places and palette colours
    rng = np.random.default_rng(7)
    palette = list(BACKGROUNDS.values())
    expected = clean.copy()
    for _ in range(config.max_specks):
        x, y = rng.integers(1, config.image_size - 3, size=2)
        expected[y : y + 2, x : x + 2] = palette[rng.integers(len(palette))]
    assert np.array_equal(image, expected)
    changed = np.any(image != clean, -1)
    assert changed.sum() >= 4  # at least one speck of another colour than the background
    # one speck's worth of cleanliness: round(6·(1 − 0.9)) = 1 block
    one = render(Attributes("blue", "circle", "small", "white", cleanliness=0.9, detail_seed=7))
    assert np.any(one != clean, -1).sum() <= 4


def test_lower_vividness_fades_the_subject_toward_its_luma_grey():
    centre = render(Attributes("blue", "circle", "large", "white", vividness=0.0))[16, 16]
    # luma(blue) = 0.299·40 + 0.587·80 + 0.114·220 = 84.0; kept chroma min_chroma = 0.3:
    # 84 + 0.3·((40, 80, 220) − 84) = (70.8, 82.8, 124.8)
    assert centre.tolist() == [71, 83, 125]
    half = render(Attributes("blue", "circle", "large", "white", vividness=0.5))[16, 16].astype(int)
    assert half.max() - half.min() == pytest.approx((0.3 + 0.7 * 0.5) * 180, abs=1)


def test_tint_shifts_red_up_and_blue_down():
    config = ShapesDataConfig()
    for tint in (0.5, -0.75):
        corner = render(Attributes("blue", "circle", "small", "gray", tint=tint))[0, 0].astype(int)
        # gray 128 + tint_strength·tint·(1, 0.25, −1): R − B = 2·18·tint
        assert corner[0] - corner[2] == pytest.approx(2 * config.tint_strength * tint, abs=1)
        assert corner[1] == round(128 + 0.25 * config.tint_strength * tint)


def test_coloured_light_scales_the_channels_before_the_shift():
    config = ShapesDataConfig(light_strength=0.2)
    warm = render(Attributes("blue", "circle", "small", "white", tint=1.0), config)
    # white · (1, 1 − 0.2·0.5, 1 − 0.2) = (255, 229.5, 204), then + 18·(1, 0.25, −1) = (273 → 255, 234, 186)
    assert warm[0, 0].tolist() == [255, 234, 186]
    # the subject too: blue (40, 80, 220) · (1, 0.9, 0.8) + (18, 4.5, −18) = (58, 76.5 → 76, 158)
    assert warm[16, 16].tolist() == [58, 76, 158]
    cold = render(Attributes("red", "circle", "small", "gray", tint=-0.5), config)
    # gray 128 · (1 − 0.2·0.5, 1 − 0.2·0.5·0.5, 1) = (115.2, 121.6, 128), then + 18·(−0.5)·(1, 0.25, −1)
    assert cold[0, 0].tolist() == [106, 119, 137]
    # light_strength 0 is the shift alone
    assert render(Attributes("blue", "circle", "small", "white", tint=1.0))[0, 0].tolist() == [255, 255, 237]


def test_light_on_the_background_leaves_the_shapes_their_colours():
    config = ShapesDataConfig(light_strength=0.2, light_target="background")
    warm = render(Attributes("blue", "circle", "small", "white", tint=1.0), config)
    # the backdrop as under scene light: white · (1, 0.9, 0.8) + 18·(1, 0.25, −1) = (255, 234, 186)
    assert warm[0, 0].tolist() == [255, 234, 186]
    # the subject only shifted: blue (40, 80, 220) + (18, 4.5, −18) = (58, 84.5 → 84, 202)
    assert warm[16, 16].tolist() == [58, 84, 202]


def test_lower_regularity_stretches_the_subject_by_max_stretch():
    image = render(Attributes("blue", "square", "large", "white", regularity=0.0)).astype(float)
    alpha = (255.0 - image[..., 0]) / (255.0 - 40.0)
    stretch = 1 + ShapesDataConfig().max_stretch  # 1.35 at regularity 0
    width, height = alpha.max(axis=0).sum(), alpha.max(axis=1).sum()
    assert width == pytest.approx(2 * 0.22 * stretch * 32, abs=0.5)  # 19.0 px
    assert height == pytest.approx(2 * 0.22 / stretch * 32, abs=0.5)  # 10.4 px
    assert width / height == pytest.approx(stretch**2, rel=0.06)
    square = (255.0 - render(Attributes("blue", "square", "large", "white")).astype(float)[..., 0]) / 215.0
    assert square.max(axis=0).sum() == pytest.approx(square.max(axis=1).sum())


def test_offset_moves_the_subject():
    image = render(Attributes("blue", "square", "small", "white", offset=(0.1, -0.05))).astype(float)
    alpha = (255.0 - image[..., 0]) / 215.0
    ys, xs = np.mgrid[0:32, 0:32] + 0.5
    assert (alpha * xs).sum() / alpha.sum() == pytest.approx(32 * 0.6, abs=0.1)
    assert (alpha * ys).sum() / alpha.sum() == pytest.approx(32 * 0.45, abs=0.1)


@pytest.mark.parametrize("corner", list(CORNERS))
def test_companion_appears_in_its_corner(corner):
    image = render(Attributes("blue", "circle", "small", "white", companion=Companion("red", "square", corner)))
    red = np.all(image == COLOURS["red"], -1)
    ys, xs = np.nonzero(red)
    kx, ky = CORNERS[corner]
    assert red.sum() == 16  # the companion's fully covered 4×4 pixels (half-extent 0.07·32 = 2.24 px)
    assert xs.mean() + 0.5 == pytest.approx(32 * kx, abs=0.5) and ys.mean() + 0.5 == pytest.approx(32 * ky, abs=0.5)


def test_dataset_view_columns():
    examples = generate_examples(5, 0)
    dataset = to_dataset(examples)
    assert len(dataset) == 5
    assert dataset["caption"] == [e.caption for e in examples]
    assert dataset["mode"] == [e.mode for e in examples] and dataset["prefix"] == [e.prefix for e in examples]
    assert dataset["words"] == [list(e.attributes.words) for e in examples]
    assert dataset[0]["sharpness"] == pytest.approx(examples[0].attributes.sharpness, abs=1e-6)
    assert dataset[0]["image"].size == (32, 32)
