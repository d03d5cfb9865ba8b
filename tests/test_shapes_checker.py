"""The pixel-rule checker on hand-drawn images (drawn here with numpy, not with the generator)."""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from shapes.attributes import COLOURS, SHAPES, Attributes, ShapesDataConfig, sample_attributes
from shapes.checker import QualityReading, check_prompt, read_image, read_quality, shape_moments
from shapes.rendering import render

RED, BLUE, YELLOW, BLACK = (220, 40, 40), (40, 80, 220), (235, 200, 40), (0, 0, 0)


def canvas(background=(255, 255, 255)):
    return np.tile(np.array(background, dtype=np.uint8), (32, 32, 1))


def hand_rectangle(colour, x0, y0, width, height, background=(255, 255, 255)):
    image = canvas(background)
    image[y0 : y0 + height, x0 : x0 + width] = colour
    return image


def hand_square(colour, x0, y0, side, background=(255, 255, 255)):
    return hand_rectangle(colour, x0, y0, side, side, background)


def hand_circle(colour, cx, cy, r, background=(255, 255, 255)):
    image = canvas(background)
    ys, xs = np.mgrid[0:32, 0:32]
    image[(xs + 0.5 - cx) ** 2 + (ys + 0.5 - cy) ** 2 <= r * r] = colour
    return image


def hand_triangle(colour, cx, top, height, background=(255, 255, 255)):
    image = canvas(background)
    for row in range(height):
        half = (row + 1) / 2
        image[top + row, int(round(cx - half)) : int(round(cx + half))] = colour
    return image


def test_hand_drawn_correct_images_pass():
    square = hand_square(RED, 3, 9, 14, background=BLACK)  # large, off-centre, on black
    assert check_prompt(square, "a large red square on a black background").all_correct
    circle = hand_circle(BLUE, 16, 24, 4)  # small, low in the image, on white
    assert check_prompt(circle, "a small blue circle on a white background, sharp").all_correct
    triangle = hand_triangle(YELLOW, 16, 9, 14, background=(128, 128, 128))
    result = check_prompt(triangle, "<preference> photo, a large yellow triangle on a gray background, vivid")
    assert result.all_correct, result.reading


def test_hand_drawn_wrong_images_fail_on_exactly_the_wrong_attributes():
    circle = hand_circle(BLUE, 16, 16, 7)
    result = check_prompt(circle, "a large red square on a white background")
    assert result.correct == {"colour": False, "shape": False, "size": True, "background": True}
    assert result.score == pytest.approx(2 / 4)
    square = hand_square(RED, 12, 3, 8)  # small
    result = check_prompt(square, "a large red square on a black background with a small blue circle, sharp")
    # neither the companion nor the modifier words are checked: they are not stated attributes
    assert result.correct == {"colour": True, "shape": True, "size": False, "background": False}
    assert result.score == pytest.approx(2 / 4)


def test_short_prompt_checks_only_colour_and_shape_and_tensor_input():
    image = torch.from_numpy(hand_square(YELLOW, 2, 2, 6)).permute(2, 0, 1).float() / 255.0
    result = check_prompt(image, "a yellow square")
    assert result.correct == {"colour": True, "shape": True}
    assert (result.reading.shape, result.reading.size) == ("square", "small")
    # 6×6 square: no skew, corner ratio 1 (x and y independent), extent √(36/1024 / 1) = 6/32
    assert result.reading.skewness == pytest.approx(0.0, abs=1e-12)
    assert result.reading.corner_ratio == pytest.approx(1.0) and result.reading.extent == pytest.approx(6 / 32)


def test_blank_image_has_no_foreground_and_fails():
    result = check_prompt(canvas(), "a red circle")
    assert result.reading.colour is None and result.correct == {"colour": False, "shape": False}


def test_bad_images_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        read_image(np.full((32, 32, 3), np.nan))
    with pytest.raises(ValueError, match="3 channels"):
        read_image(np.zeros((32, 32, 4), dtype=np.uint8))


def test_faint_noise_of_a_generated_image_does_not_move_the_reading():
    rng = np.random.default_rng(0)
    noisy = hand_circle(BLUE, 24, 16, 7).astype(np.int16) + rng.integers(-12, 13, size=(32, 32, 3))
    result = check_prompt(np.clip(noisy, 0, 255).astype(np.uint8), "a large blue circle on a white background")
    assert result.all_correct, result.reading


def test_specks_and_a_companion_do_not_change_the_subject_reading():
    """The largest-region rule: only the subject's region is read."""
    square = hand_square(BLUE, 9, 9, 14)
    cluttered = square.copy()
    cluttered[2:4, 2:4] = RED
    cluttered[27:29, 28:30] = BLACK
    cluttered[2:4, 27:29] = YELLOW
    assert read_image(cluttered) == read_image(square)
    with_companion = square.copy()
    with_companion[1:5, 26:30] = RED  # a small red square in the top right corner
    assert read_image(with_companion) == read_image(square)
    triangle = hand_triangle(YELLOW, 16, 9, 14, background=(128, 128, 128))
    companion = hand_circle(RED, 4, 4, 2.5, background=(128, 128, 128))
    both = np.where(np.all(companion == RED, -1)[..., None], companion, triangle)
    assert read_image(both) == read_image(triangle)
    assert check_prompt(both, "a large yellow triangle on a gray background with a small red circle").all_correct


def test_read_quality_of_a_crisp_subject():
    # a crisp edge steps by the full colour difference: edge = 1; no specks; palette chroma; square: aspect 0
    assert read_quality(hand_square(BLUE, 9, 9, 14)) == QualityReading(edge=1.0, specks=0, chroma=1.0, aspect=0.0, tint=0.0)


def test_blur_lowers_edge_crispness():
    crisp = hand_square(BLUE, 9, 9, 14)
    edges = [read_quality(crisp).edge]
    for sigma in (0.6, 1.2):
        blurred = np.round(gaussian_filter(crisp.astype(float), sigma=(sigma, sigma, 0), mode="nearest")).astype(np.uint8)
        edges.append(read_quality(blurred).edge)
    assert edges[0] == 1.0 and edges[0] > edges[1] > edges[2]
    assert edges[2] < 0.6


@pytest.mark.parametrize("count", [0, 1, 2, 3])
def test_specks_are_counted_exactly(count):
    image = hand_square(BLUE, 9, 9, 14)
    for (y, x), colour in list(zip([(2, 2), (27, 28), (2, 27)], [RED, BLACK, YELLOW]))[:count]:
        image[y : y + 2, x : x + 2] = colour
    assert read_quality(image).specks == count


def test_a_speck_touching_the_subject_is_not_counted():
    image = hand_square(BLUE, 9, 9, 14)
    image[7:9, 12:14] = RED  # right above the square's top edge
    assert read_quality(image).specks == 0


def test_desaturated_subject_has_lower_chroma():
    # blue (40, 80, 220), luma 84, pulled to 30% of its chroma: (70.8, 82.8, 124.8) → (71, 83, 125)
    faded = hand_square((71, 83, 125), 9, 9, 14)
    assert read_quality(faded).chroma == pytest.approx((125 - 71) / (220 - 40))  # 0.3
    assert read_quality(hand_square(BLUE, 9, 9, 14)).chroma == 1.0


def test_tint_is_read_from_the_border():
    image = hand_square(BLUE, 9, 9, 14, background=(128, 128, 128)).astype(float)
    image += 9.0 * np.array([1.0, 0.25, -1.0])  # the renderer's tint at tint_strength 18, tint 0.5
    reading = read_quality(np.round(image).astype(np.uint8))
    # border R − B = 137 − 119 = 18 above gray's 0, over 36 (render shifts R − B by 2·tint_strength·tint):
    # the record's tint 0.5
    assert reading.tint == pytest.approx(18 / 36)
    # the subject was tinted too: (49, 82, 211) → chroma (211 − 49) / 180
    assert reading.chroma == pytest.approx(162 / 180)
    cold = canvas((128, 128, 128)).astype(float) - 6.0 * np.array([1.0, 0.25, -1.0])
    cold[9:23, 9:23] = BLUE
    assert read_quality(np.round(cold).astype(np.uint8)).tint == pytest.approx((122 - 134) / 36)


def test_stretched_rectangle_has_the_log_aspect():
    assert read_quality(hand_rectangle(BLUE, 7, 11, 18, 10)).aspect == pytest.approx(np.log(18 / 10))
    assert read_quality(hand_rectangle(BLUE, 11, 7, 10, 18)).aspect == pytest.approx(np.log(18 / 10))
    assert read_quality(hand_square(BLUE, 9, 9, 14)).aspect == 0.0


def test_blank_image_quality():
    reading = read_quality(canvas((128, 128, 128)))
    assert (reading.edge, reading.specks, reading.chroma, reading.aspect, reading.tint) == (0.0, 0, 0.0, 0.0, 0.0)


def test_shape_moments_analytically():
    """A rectangle's corner ratio is 1 and its skewness 0, blurred or not (separable); an upward
    triangle's skewness is −2√2/5 and a disc's corner ratio 2/3 (fine grids, so sampling error is small)."""
    rectangle = np.zeros((64, 64))
    rectangle[20:30, 10:50] = 1.0
    for image in (rectangle, gaussian_filter(rectangle, 3.0)):
        skewness, corner_ratio = shape_moments(image)
        assert skewness == pytest.approx(0.0, abs=1e-9) and corner_ratio == pytest.approx(1.0, abs=1e-9)
    ys, xs = (np.mgrid[0:400, 0:400] + 0.5) / 200.0 - 1.0
    triangle = ((ys >= -1) & (ys <= 1) & (np.abs(xs) <= (ys + 1) / 2)).astype(float)
    assert shape_moments(triangle)[0] == pytest.approx(-2 * np.sqrt(2) / 5, abs=0.01)
    disc = (xs**2 + ys**2 <= 1).astype(float)
    assert shape_moments(disc) == pytest.approx((0.0, 2 / 3), abs=0.01)
    line = np.zeros((8, 8))
    line[3, 1:7] = 1.0
    assert shape_moments(line) == (0.0, 1.0) and shape_moments(np.zeros((8, 8))) == (0.0, 1.0)  # no shape to read


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("size", ["small", "large"])
def test_blurred_and_stretched_renders_keep_their_shape_and_size(shape, size):
    """The world's own renders at blur σ up to 1.2 px and full stretch: the bounding-box fill ratio read a
    small triangle at half sharpness as a circle; the moments do not."""
    for sharpness in (1.0, 0.5, 0.25):
        for regularity in (1.0, 0.0):
            reading = read_image(render(Attributes("red", shape, size, "white", sharpness=sharpness, regularity=regularity)))
            assert (reading.shape, reading.size) == (shape, size), (sharpness, regularity, reading)


def test_the_world_priors_renders_are_read_back():
    """400 records of the world prior (blur, clutter, fading, stretch, tint, companions), read against the
    record: shape ≥ 0.9 and size ≥ 0.97 right (the fill-ratio rule before: 0.79 and 0.95 on these)."""
    config, rng = ShapesDataConfig(), np.random.default_rng(7)
    records = [sample_attributes(rng, [(c, s) for c in COLOURS for s in SHAPES], config) for _ in range(400)]
    readings = [read_image(render(record, config)) for record in records]
    assert np.mean([r.shape == a.shape for r, a in zip(readings, records)]) >= 0.9
    assert np.mean([r.size == a.size for r, a in zip(readings, records)]) >= 0.97
    assert np.mean([r.background == a.background for r, a in zip(readings, records)]) == 1.0
