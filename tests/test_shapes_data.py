"""The shapes generator: determinism, caption grammar, splits and the default skew."""

import numpy as np
import pytest

from shapes.data import (
    DEFAULTS,
    HELD_OUT_PAIRS,
    Attributes,
    PromptAttributes,
    ShapesDataConfig,
    detailed_caption,
    generate_examples,
    parse_caption,
    render,
    short_caption,
    to_dataset,
)


def test_same_seed_same_examples_and_other_seed_differs():
    first, again, other = (generate_examples(40, seed) for seed in (3, 3, 4))
    assert all(np.array_equal(a.image, b.image) and a.detailed_caption == b.detailed_caption for a, b in zip(first, again))
    assert [e.detailed_caption for e in first] != [e.detailed_caption for e in other]


def test_detailed_caption_round_trips_to_the_full_record():
    for example in generate_examples(300, 0, "all"):
        parsed = parse_caption(example.detailed_caption)
        record = example.attributes
        assert parsed == PromptAttributes(record.colour, record.shape, record.size, record.position, record.background, record.style)
        assert parse_caption(example.short_caption).stated() == {"colour": record.colour, "shape": record.shape}


def test_caption_text_and_partial_parse():
    attributes = Attributes("red", "circle", "large", "left", "black", ("sharp", "high contrast"))
    assert short_caption(attributes) == "a red circle"
    assert detailed_caption(attributes) == "a large red circle at the left on a black background, sharp, high contrast"
    assert parse_caption("  A Small blue square on a gray background ").stated() == {
        "colour": "blue", "shape": "square", "size": "small", "background": "gray"
    }


@pytest.mark.parametrize("bad", ["", "a purple circle", "a red circle at the moon", "red circle"])
def test_unparseable_caption_is_refused_with_the_text(bad):
    with pytest.raises(ValueError, match="cannot parse caption"):
        parse_caption(bad)


def test_attribute_validation_names_the_bad_value():
    with pytest.raises(ValueError, match="unknown shape 'hexagon'"):
        Attributes("red", "hexagon", "large", "center", "white")
    with pytest.raises(ValueError, match="background 'red' equals the shape colour"):
        Attributes("red", "circle", "large", "center", "red")
    with pytest.raises(ValueError, match="supersample=0"):
        ShapesDataConfig(supersample=0)


def test_held_out_pairs_never_in_train_and_only_in_held_out():
    train = {(e.attributes.colour, e.attributes.shape) for e in generate_examples(400, 1, "train")}
    held = {(e.attributes.colour, e.attributes.shape) for e in generate_examples(100, 1, "held_out")}
    assert not train & set(HELD_OUT_PAIRS)
    assert held == set(HELD_OUT_PAIRS)
    assert len(train) == 12 - len(HELD_OUT_PAIRS)


def test_short_mode_skews_to_defaults_and_detailed_mode_does_not():
    examples = generate_examples(2000, 2)
    for name, value in DEFAULTS.items():
        short = np.mean([getattr(e.attributes, name) == value for e in examples if e.mode == "short"])
        detailed = np.mean([getattr(e.attributes, name) == value for e in examples if e.mode == "detailed"])
        assert short > 0.75 and detailed < 0.55, (name, short, detailed)


def test_render_is_anti_aliased_and_centred():
    image = render(Attributes("blue", "circle", "large", "center", "white"))
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    blue, white = np.array([40, 80, 220]), np.array([255, 255, 255])
    exact = np.all(image == blue, -1) | np.all(image == white, -1)
    assert 0 < (~exact).sum() < 0.2 * image[..., 0].size  # some edge pixels are blends
    assert np.array_equal(image, image[:, ::-1])  # a centred circle is mirror-symmetric


def test_dataset_view_columns():
    dataset = to_dataset(generate_examples(5, 0))
    assert len(dataset) == 5
    assert dataset[0]["caption"] in (dataset[0]["short_caption"], dataset[0]["detailed_caption"])
    assert dataset[0]["image"].size == (32, 32)
