"""guidance_draws.py's summary: SE over (prompt, draw) units and over draws, and the draws that meet 2 SE alone."""

import numpy as np
import pytest

from benchmarks.guidance_draws import WRITTEN_KINDS, main, unit_summary, written_draws
from parrot_base.cli import UsageError
from shapes.captions import parse_caption


def test_unit_summary_by_hand():
    # 2 draws × 2 prompts × 2 images; unit means 1, 3 (draw 0) and 0, 0 (draw 1)
    differences = np.array([[[1.0, 1.0], [3.0, 3.0]], [[-1.0, 1.0], [0.0, 0.0]]])
    summary = unit_summary(differences)
    assert summary["mean"] == pytest.approx(1.0)
    assert summary["se_units"] == pytest.approx(np.std([1.0, 3.0, 0.0, 0.0], ddof=1) / 2)  # 4 units
    assert summary["se_draws"] == pytest.approx(np.std([2.0, 0.0], ddof=1) / np.sqrt(2))  # draw means 2 and 0
    # draw 0: mean 2, SE over its 4 images sqrt(4/3)/2 = 0.577 → meets 2 SE; draw 1: mean 0 → does not
    assert (summary["draws_meeting_2se"], summary["draws"]) == (1, 2)


def test_mistakes_are_one_line_errors():
    with pytest.raises(UsageError, match="at least 2 draws"):
        main(["--draws", "1"])
    with pytest.raises(UsageError, match="--temperature 0.0: must be > 0"):
        main(["--temperature", "0"])


def test_written_draws_ask_for_each_kind_of_dilution():
    pairs = [("red", "triangle"), ("blue", "square")]
    draws = written_draws(pairs)
    assert list(draws) == list(WRITTEN_KINDS)
    for kind, (size, companion) in WRITTEN_KINDS.items():
        for (colour, shape), text in zip(pairs, draws[kind]):
            parsed = parse_caption(text)
            assert (parsed.colour, parsed.shape, parsed.size, parsed.background) == (colour, shape, size, "white")
            assert (parsed.companion is not None) == companion, text
    assert draws["small, companion"][0].startswith("a small red triangle on a white background with a small ")
