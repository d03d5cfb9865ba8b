"""benchmarks/guidance_backgrounds.py: the three settings it compares and the checker's counts."""

import pytest

from benchmarks.guidance_backgrounds import main, read_counts, settings_of
from parrot_base.cli import UsageError
from shapes.data import Attributes, render


def test_the_three_settings_have_the_same_total_weight():
    settings = settings_of("a red circle", "a large red circle on a white background", 1.5, 2.5)
    assert list(settings) == ["c, CFG 4", "beam ĉ, CFG 4", "beam ĉ, prompt-centred (1.5, 2.5)"]
    assert [text for text, _ in settings.values()] == ["a red circle"] + ["a large red circle on a white background"] * 2
    assert [g.weights for _, g in settings.values()] == [(4.0,), (4.0,), (1.5, 2.5)]
    assert settings["beam ĉ, prompt-centred (1.5, 2.5)"][1].is_prompt_centred


def test_counts_of_what_the_checker_reads_back():
    images = [
        render(Attributes("green", "circle", "large", "white")),
        render(Attributes("green", "circle", "large", "yellow")),
        render(Attributes("green", "square", "small", "white")),
    ]
    counts = read_counts(images)
    assert counts["background"] == {"white": 2, "yellow": 1}
    assert counts["colour"] == {"green": 3}
    assert counts["size"] == {"large": 2, "small": 1}


def test_a_directory_without_a_world_is_refused_in_one_line(tmp_path):
    with pytest.raises(UsageError, match="not a built shapes world"):
        main(["--world", str(tmp_path)])
