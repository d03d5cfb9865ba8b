"""Plots of reward sets: pairwise scatter with each method's Pareto front, and bars of a per-seed figure.

Shared by ``benchmarks/pareto.py`` and ``python -m parrot.report``. Matplotlib runs on its
non-interactive Agg backend; every function writes a PNG and returns its path.

Notation: a method's evaluation images give a reward matrix R (N, K); its front is the set of
non-dominated rows (:func:`parrot.selection.non_dominated_mask`). In a panel (reward a vs
reward b) the staircase joins the rows that are non-dominated in those two rewards alone.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from parrot.selection import non_dominated_mask  # noqa: E402

__all__ = ["front_2d", "method_colours", "pairwise_front_plot", "seed_bar_plot", "training_curve_plot", "reward_scatter"]


def front_2d(points: np.ndarray) -> np.ndarray:
    """The rows of ``points`` (N, 2) non-dominated in both columns, sorted by the first (maximisation)."""
    points = np.asarray(points, dtype=float)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
        raise ValueError(f"points must be a non-empty (N, 2) array; got shape {points.shape}")
    front = points[non_dominated_mask(torch.from_numpy(points)).numpy()]
    return front[np.argsort(front[:, 0])]


def method_colours(count: int) -> list[tuple[float, ...]]:
    """``count`` distinct colours: tab10's ten, then tab20's light shades, then repeats.

    (tab20 in its own order pairs each hue with its light shade, so neighbouring methods in a
    table, e.g. base and base+expander, would look alike.)
    """
    dark, light = plt.get_cmap("tab20").colors[0::2], plt.get_cmap("tab20").colors[1::2]
    palette = list(dark) + list(light)
    return [palette[i % len(palette)] for i in range(count)]


def pairwise_front_plot(methods: Mapping[str, np.ndarray], reward_names: Sequence[str], path: str | Path, title: str = "") -> Path:
    """One panel per reward pair: every method's points (faint) and its 2-D front (staircase)."""
    names = list(reward_names)
    if len(names) < 2:
        raise ValueError(f"a pairwise plot needs at least 2 rewards; got {names}")
    for method, rewards in methods.items():
        if np.asarray(rewards).ndim != 2 or np.asarray(rewards).shape[1] != len(names):
            raise ValueError(f"method {method!r}: rewards must be (N, {len(names)}); got {np.asarray(rewards).shape}")
    pairs = list(itertools.combinations(range(len(names)), 2))
    columns = min(3, len(pairs))
    rows = -(-len(pairs) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.8 * rows), squeeze=False)
    colours = method_colours(len(methods))
    for panel, (a, b) in zip(axes.flat, pairs):
        for m, (method, rewards) in enumerate(methods.items()):
            rewards = np.asarray(rewards, dtype=float)
            colour = colours[m]
            panel.scatter(rewards[:, a], rewards[:, b], s=8, alpha=0.25, color=colour)
            front = front_2d(rewards[:, [a, b]])
            panel.step(front[:, 0], front[:, 1], where="post", color=colour, linewidth=1.5, label=method)
            panel.scatter(front[:, 0], front[:, 1], s=18, color=colour)
        panel.set_xlabel(names[a])
        panel.set_ylabel(names[b])
    for panel in list(axes.flat)[len(pairs) :]:
        panel.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize="small")
    if title:
        figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.04 + 0.03 * ((len(labels) - 1) // 4), 1, 0.97 if title else 1))
    return _save(figure, path)


def seed_bar_plot(values: Mapping[str, Sequence[float]], path: str | Path, ylabel: str, title: str = "") -> Path:
    """A bar per method at the mean over seeds, the std as an error bar and each seed as a dot."""
    if not values:
        raise ValueError("no methods to plot")
    figure, axis = plt.subplots(figsize=(max(5.0, 0.8 * len(values) + 2), 4))
    for i, per_seed in enumerate(values.values()):
        per_seed = np.asarray(per_seed, dtype=float)
        axis.bar(i, per_seed.mean(), yerr=per_seed.std() if len(per_seed) > 1 else 0, capsize=3, color="tab:blue", alpha=0.7)
        axis.scatter(np.full(len(per_seed), i), per_seed, color="black", s=10, zorder=3)
    axis.set_xticks(range(len(values)), list(values), rotation=35, ha="right")
    axis.set_ylabel(ylabel)
    if title:
        axis.set_title(title)
    figure.tight_layout()
    return _save(figure, path)


def training_curve_plot(methods: Mapping[str, Mapping[str, Sequence[float]]], reward_names: Sequence[str], path: str | Path,
                        title: str = "", iterations: Mapping[str, Sequence[int]] | None = None) -> Path:  # fmt: skip
    """One panel per reward: a line per method of its value at each training iteration (rewards a method lacks are left
    out); ``iterations``: per method the iteration of each value (default 0, 1, 2, …)."""
    names = list(reward_names)
    if not methods or not names:
        raise ValueError("no methods or no rewards to plot")
    figure, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for colour, (method, curves) in zip(method_colours(len(methods)), methods.items()):
        for axis, name in zip(axes.flat, names):
            if name in curves:
                steps = iterations[method] if iterations else np.arange(len(curves[name]))
                axis.plot(steps, np.asarray(curves[name], dtype=float), color=colour, label=method, marker="o" if iterations else None)
    for axis, name in zip(axes.flat, names):
        axis.set_xlabel("iteration")
        axis.set_ylabel(name)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=min(4, max(1, len(labels))), fontsize="small")
    if title:
        figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.12, 1, 0.95 if title else 1))
    return _save(figure, path)


def _save(figure: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def reward_scatter(rewards: torch.Tensor, selected: torch.Tensor, size: int = 256) -> np.ndarray:
    """A training batch's rewards 1 vs 2 (or reward 1 vs image index when K = 1), P in red, as an
    (H, W, 3) uint8 image (drawn with PIL, for the trackers' image logs)."""
    from PIL import Image, ImageDraw

    x = rewards[:, 0].double()
    y = rewards[:, 1].double() if rewards.shape[1] > 1 else torch.arange(len(x), dtype=torch.double)

    def scaled(v: torch.Tensor) -> torch.Tensor:
        span = (v.max() - v.min()).clamp(min=1e-12)
        return 16 + (v - v.min()) / span * (size - 32)

    canvas = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(canvas)
    for xi, yi, chosen in zip(scaled(x).tolist(), scaled(y).tolist(), selected.tolist()):
        draw.ellipse([xi - 3, size - yi - 3, xi + 3, size - yi + 3], fill="red" if chosen else "gray")
    return np.asarray(canvas)
