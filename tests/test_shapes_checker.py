"""The pixel-rule checker on hand-drawn images (drawn here with numpy, not with the generator)."""

import numpy as np
import pytest
import torch

from shapes.checker import check_prompt, read_image

RED, BLUE, YELLOW = (220, 40, 40), (40, 80, 220), (235, 200, 40)


def canvas(background=(255, 255, 255)):
    return np.tile(np.array(background, dtype=np.uint8), (32, 32, 1))


def hand_square(colour, x0, y0, side, background=(255, 255, 255)):
    image = canvas(background)
    image[y0 : y0 + side, x0 : x0 + side] = colour
    return image


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
    square = hand_square(RED, 3, 9, 14, background=(0, 0, 0))  # large, left, on black
    assert check_prompt(square, "a large red square at the left on a black background").all_correct
    circle = hand_circle(BLUE, 16, 24, 4)  # small, bottom, on white
    assert check_prompt(circle, "a small blue circle at the bottom on a white background, sharp").all_correct
    triangle = hand_triangle(YELLOW, 16, 9, 14, background=(128, 128, 128))
    result = check_prompt(triangle, "a large yellow triangle at the center on a gray background")
    assert result.all_correct, result.reading


def test_hand_drawn_wrong_images_fail_on_exactly_the_wrong_attributes():
    circle = hand_circle(BLUE, 16, 16, 7)
    result = check_prompt(circle, "a large red square at the center on a white background")
    assert result.correct == {"colour": False, "shape": False, "size": True, "position": True, "background": True}
    assert result.score == pytest.approx(3 / 5)
    square = hand_square(RED, 12, 3, 8)  # small, top
    result = check_prompt(square, "a large red square at the bottom on a black background")
    assert result.correct == {"colour": True, "shape": True, "size": False, "position": False, "background": False}


def test_short_prompt_checks_only_colour_and_shape_and_tensor_input():
    image = torch.from_numpy(hand_square(YELLOW, 2, 2, 6)).permute(2, 0, 1).float() / 255.0
    result = check_prompt(image, "a yellow square")
    assert result.correct == {"colour": True, "shape": True}
    assert result.reading.position == "left" or result.reading.position == "top"


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
    result = check_prompt(np.clip(noisy, 0, 255).astype(np.uint8), "a large blue circle at the right on a white background")
    assert result.all_correct, result.reading
