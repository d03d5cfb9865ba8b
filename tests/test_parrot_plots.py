"""parrot.plots: the 2-D front on hand-made points, and both plots written as PNGs of the expected size."""

import numpy as np
import pytest
from PIL import Image

from parrot.plots import front_2d, pairwise_front_plot, seed_bar_plot


def test_front_2d_keeps_the_non_dominated_staircase():
    points = np.array([[1, 5], [2, 4], [2, 2], [3, 1], [0, 0], [3, 1]], dtype=float)
    # (2,2) is dominated by (2,4); (0,0) by all; both copies of (3,1) stay
    assert front_2d(points).tolist() == [[1, 5], [2, 4], [3, 1], [3, 1]]
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        front_2d(np.zeros((3, 3)))


def test_plots_write_pngs(tmp_path):
    rng = np.random.default_rng(0)
    methods = {"base": rng.normal(size=(12, 3)), "parrot": rng.normal(1, 1, size=(12, 3))}
    scatter = pairwise_front_plot(methods, ["a", "b", "c"], tmp_path / "scatter.png", title="t")
    bars = seed_bar_plot({"base": [0.1, 0.2, 0.15], "parrot": [0.3, 0.35, 0.4]}, tmp_path / "bars.png", "hypervolume")
    with Image.open(scatter) as image:
        assert image.size == (int(4.2 * 3 * 110), int(3.8 * 110))  # 3 pairs in one row at 110 dpi
    with Image.open(bars) as image:
        assert image.format == "PNG" and image.size[1] == 4 * 110
    with pytest.raises(ValueError, match=r"method 'x': rewards must be \(N, 3\)"):
        pairwise_front_plot({"x": np.zeros((4, 2))}, ["a", "b", "c"], tmp_path / "bad.png")
