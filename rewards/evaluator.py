"""Multi-reward evaluation: K rewards on one batch → a (B, K) score matrix with names.

Notation (Parrot, Lee et al. 2024, Alg. 1 step 4): R[i, k] = r_k(x_i, c_i). Non-finite
scores never leave the evaluator: they are replaced by the worst finite score of the same
reward in the batch (0 when none is finite), flagged in ``valid`` and counted, per batch and
cumulatively, and a warning is logged. ``submit`` scores on a worker thread and returns a
``Future``, so scoring batch n overlaps sampling batch n+1 (torch releases the GIL in its
kernels; JPEG encoding in PIL releases it too).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch

from rewards.base import ImageBatch, Metadata, Reward, check_reward_inputs
from rewards.registry import load_reward

__all__ = ["RewardScores", "MultiRewardEvaluator", "mask_nonfinite"]

logger = logging.getLogger(__name__)


@dataclass
class RewardScores:
    """R (B, K) with reward ``names``; ``valid`` (B, K) is False where a score was non-finite."""

    scores: torch.Tensor
    names: list[str]
    valid: torch.Tensor
    higher_is_better: list[bool] = field(default_factory=list)

    @property
    def nonfinite_counts(self) -> dict[str, int]:
        return {name: int((~self.valid[:, k]).sum()) for k, name in enumerate(self.names)}

    def __getitem__(self, name: str) -> torch.Tensor:
        """The (B,) column of reward ``name``."""
        if name not in self.names:
            raise KeyError(f"no reward {name!r} in these scores; they have {self.names}")
        return self.scores[:, self.names.index(name)]

    def as_dicts(self) -> list[dict[str, float]]:
        """One {name: score} dict per image (for logging and JSON)."""
        return [dict(zip(self.names, row.tolist())) for row in self.scores]

    @classmethod
    def concatenate(cls, parts: Sequence[RewardScores]) -> RewardScores:
        """The rows of ``parts`` one after another, masked as if scored as one batch.

        A non-finite score is filled with the worst finite score of the *whole* batch (not of
        its part), so scoring a batch in chunks gives exactly the scores of one call.
        """
        if not parts:
            raise ValueError("concatenate needs at least one RewardScores")
        first = parts[0]
        if any(p.names != first.names for p in parts):
            raise ValueError(f"cannot concatenate scores of different rewards: {[p.names for p in parts]}")
        raw = torch.cat([torch.where(p.valid, p.scores, torch.full_like(p.scores, float("nan"))) for p in parts])
        scores, valid = mask_nonfinite(raw)
        return cls(scores, list(first.names), valid, list(first.higher_is_better))


def mask_nonfinite(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace non-finite entries of each column by that column's worst finite value (0 if none).

    Returns (clean scores, valid mask). "Worst" is the minimum: every reward is oriented
    higher-is-better here (see :class:`rewards.base.Reward`).
    """
    valid = torch.isfinite(scores)
    filled = torch.where(valid, scores, torch.full_like(scores, float("inf")))
    worst = filled.min(dim=0).values
    worst = torch.where(torch.isfinite(worst), worst, torch.zeros_like(worst))
    return torch.where(valid, scores, worst.expand_as(scores)), valid


class MultiRewardEvaluator:
    """Scores a batch with K rewards; optionally in the background via :meth:`submit`."""

    def __init__(self, rewards: Sequence[Reward], max_workers: int = 1):
        rewards = list(rewards)
        if not rewards:
            raise ValueError("MultiRewardEvaluator needs at least one reward")
        names = [r.name for r in rewards]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"reward names must be unique; repeated: {duplicates}")
        for reward in rewards:
            if not reward.higher_is_better:
                raise ValueError(f"reward {reward.name!r} is lower-is-better; wrap it so that higher is better")
        self.rewards = rewards
        self.names = names
        self.total_nonfinite = {name: 0 for name in names}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="reward")

    @classmethod
    def from_names(cls, specs: Sequence[str] | Mapping[str, Mapping[str, Any]], max_workers: int = 1) -> MultiRewardEvaluator:
        """Load rewards by name: ``["jpeg_compressibility", ...]`` or ``{name: {setting: value}}``."""
        specs = {name: {} for name in specs} if not isinstance(specs, Mapping) else specs
        return cls([load_reward(name, **dict(settings)) for name, settings in specs.items()], max_workers)

    def __call__(self, images: ImageBatch, prompts: Sequence[str], metadata: Metadata | None = None) -> RewardScores:
        images, prompts, metadata = check_reward_inputs("evaluator", images, prompts, metadata)
        columns = [reward(images, prompts, metadata) for reward in self.rewards]
        scores, valid = mask_nonfinite(torch.stack(columns, dim=1))
        result = RewardScores(scores, list(self.names), valid, [r.higher_is_better for r in self.rewards])
        counts = result.nonfinite_counts
        if any(counts.values()):
            with self._lock:
                for name, count in counts.items():
                    self.total_nonfinite[name] += count
            logger.warning("non-finite reward scores masked in this batch: %s", {k: v for k, v in counts.items() if v})
        return result

    def submit(self, images: ImageBatch, prompts: Sequence[str], metadata: Metadata | None = None) -> Future:
        """Score in the background; ``.result()`` gives the :class:`RewardScores`."""
        if isinstance(images, torch.Tensor):
            images = images.detach().clone()  # the sampler may reuse its buffer for the next batch
        return self._pool.submit(self, images, list(prompts), None if metadata is None else list(metadata))

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def __enter__(self) -> MultiRewardEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
