"""Logging of the training loop: tracker config and images, the progress line, and the sample dumps.

Scalars go through accelerate's trackers (``accelerator.log``) and ``curves.jsonl``
(:func:`parrot.run_dir.append_curve`); images (the batch and its reward scatter, captioned with c,
the conditioning prompt and R) to TensorBoard; the batch before each checkpoint to ``samples/``
(:func:`parrot.run_dir.write_samples`). Main process only; the caller checks.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator

import numpy as np
from accelerate import Accelerator
from diffusers.utils import make_image_grid
from PIL import Image

from parrot.credit import GatheredRewards
from parrot.plots import reward_scatter
from parrot.rollout import Rollout
from parrot.run_dir import SampleRecord
from parrot.selection import Advantages
from rewards import RewardScores
from rewards.base import as_pil_images

__all__ = ["flat_scalars", "progress_postfix", "prefixed", "stopwatch", "log_images", "sample_grid"]


def flat_scalars(tree: dict, prefix: str = "") -> dict[str, float | int | str | bool]:
    """A nested config as tracker hyperparameters: dotted keys, non-scalars as JSON text."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= flat_scalars(value, f"{prefix}{key}.")
        else:
            flat[prefix + key] = value if isinstance(value, (int, float, str, bool)) else json.dumps(value)
    return flat


def prefixed(prefix: str, stats: dict[str, float]) -> dict[str, float]:
    """``{"prefix/key": value}``: an update stage's statistics as metrics."""
    return {f"{prefix}/{k}": v for k, v in stats.items()}


@contextlib.contextmanager
def stopwatch(seconds: dict[str, float], key: str) -> Iterator[None]:
    """``seconds[key]``: the wall seconds of the ``with`` body."""
    started = time.perf_counter()
    yield
    seconds[key] = time.perf_counter() - started


def progress_postfix(metrics: dict[str, float]) -> dict[str, str]:
    """The progress bar's per-reward batch means."""
    return {k.split("/")[1]: f"{v:.3g}" for k, v in metrics.items() if k.endswith("/mean")}


def log_images(
    accelerator: Accelerator, iteration: int, rollout: Rollout, scores: RewardScores, gathered: GatheredRewards, advantages: Advantages
) -> None:
    """This process's batch and the global batch's reward scatter (P in red) to TensorBoard, captioned."""
    images = np.stack([np.asarray(image) for image in as_pil_images(rollout.trajectory.images.cpu())])
    captions = [
        f"{i}: c={c!r} | prompt={p!r} | " + ", ".join(f"{k}={v:.3f}" for k, v in s.items())
        for i, (c, p, s) in enumerate(zip(rollout.original_prompts, rollout.trajectory.prompts, scores.as_dicts()))
    ]
    scatter = reward_scatter(gathered.rewards, advantages.selected)
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.log_images({"samples": images, "pareto_scatter": scatter[None]}, step=iteration, dataformats="NHWC")
            tracker.writer.add_text("samples/captions", "\n\n".join(captions), iteration)


def sample_grid(
    iteration: int, columns: int, reward_names: list[str], rollout: Rollout, gathered: GatheredRewards, advantages: Advantages
) -> tuple[Image.Image, SampleRecord]:
    """This process's batch as a grid (a row of ``columns`` images per group "<k>, ĉ") and its record."""
    images = as_pil_images(rollout.trajectory.images.cpu())
    grid = make_image_grid(images, rows=len(images) // columns, cols=columns)
    record = SampleRecord(
        iteration=iteration,
        columns=columns,
        reward_names=list(reward_names),
        original_prompts=rollout.original_prompts,
        expanded_prompts=rollout.expanded_prompts,
        conditioning_prompts=list(rollout.trajectory.prompts),
        rewards=gathered.rewards[rollout.rows].tolist(),
        selected=advantages.selected[rollout.rows].tolist(),
    )
    return grid, record
