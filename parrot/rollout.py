"""Stages 1–4 of Algorithm 1: prompts c, expansions ĉ, images from "<k>, ĉ" with trajectories, and R.

Functions over :class:`~parrot.parts.TrainingParts`; the images of one process are a
:class:`Rollout` in :class:`parrot.layout.BatchLayout` order, and the rewards of every image
against its ORIGINAL prompt c a :class:`rewards.RewardScores` (N_local, K).
Every draw is seeded by :func:`parrot.seeding.derived_seed` (see there for the contract).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from parrot.identifiers import prepended_template, with_identifiers
from parrot.parts import TrainingParts
from parrot.sde_window import window_steps
from parrot.seeding import EXPANDER, IMAGES, PROMPTS, derived_seed
from prompt_expander.expansions import Expansions
from rewards import RewardScores
from rewards.base import expansion_metadata
from t2i import Trajectory

__all__ = [
    "Rollout", "draw_prompts", "local_prompts", "expand", "expanded_texts", "group_texts", "conditioning_prompts",
    "sample_images", "score", "sample_and_score", "chunk_bounds",
]  # fmt: skip


@dataclass
class Rollout:
    """This process's samples of one iteration, images in :class:`parrot.layout.BatchLayout` order."""

    trajectory: Trajectory
    original_prompts: list[str]  # c per image
    expanded_prompts: list[str]  # ĉ per image
    own_reward: torch.Tensor  # (N_local,) index k of the identifier the image was sampled with (0 when off)
    global_offset: int  # global index of this process's first image

    @property
    def rows(self) -> slice:
        """This rollout's rows of a global-batch tensor (R, A, P)."""
        return slice(self.global_offset, self.global_offset + self.trajectory.batch_size)


# ----- 1. prompts ------------------------------------------------------------------------------------
def draw_prompts(parts: TrainingParts, iteration: int) -> list[str]:
    """The global batch of original prompts (uniform with replacement), identical on every process."""
    generator = torch.Generator().manual_seed(derived_seed(parts.config.seed, iteration, PROMPTS))
    total = parts.config.sampling.prompts_per_process * parts.num_processes
    picks = torch.randint(len(parts.train_prompts), (total,), generator=generator).tolist()
    return [parts.train_prompts[i] for i in picks]


def local_prompts(parts: TrainingParts, global_prompts: list[str]) -> list[str]:
    """This process's share of the global prompts."""
    per = parts.config.sampling.prompts_per_process
    return global_prompts[parts.rank * per : (parts.rank + 1) * per]


# ----- 2. expansion ----------------------------------------------------------------------------------
def expand(parts: TrainingParts, prompts: list[str], iteration: int) -> Expansions | None:
    """E·K_id expansions per prompt (one per group, prompt-major), or None without an expander."""
    if parts.expander is None:
        return None
    seed = derived_seed(parts.config.seed, iteration, EXPANDER, parts.rank)
    return parts.expander.sample(prompts, parts.layout.groups_per_prompt, generator_seed=seed)


def expanded_texts(prompts: list[str], expansions: Expansions | None) -> list[str]:
    """ĉ per expansion row (``prompts`` itself without an expander); an empty expansion falls back
    to its c (the T2I model refuses empty prompts)."""
    if expansions is None:
        return list(prompts)
    return [text if text.strip() else prompt for prompt, text in zip(expansions.prompts, expansions.texts)]


def group_texts(parts: TrainingParts, prompts: list[str], expanded: list[str]) -> list[str]:
    """ĉ per group of ``prompts``: ``expanded`` has one text per group, or one per prompt (ĉ = c) to repeat."""
    groups = parts.layout.groups_per_prompt
    if len(expanded) == len(prompts) * groups:
        return list(expanded)
    if len(expanded) == len(prompts):
        return [text for text in expanded for _ in range(groups)]
    raise ValueError(f"{len(expanded)} expanded prompts for {len(prompts)} prompts × {groups} groups")


# ----- 3. images -------------------------------------------------------------------------------------
def conditioning_prompts(parts: TrainingParts, expanded: list[str], reward_index: torch.Tensor | None) -> list[str]:
    """ "<k>, ĉ" per image (ĉ alone when identifiers are off or ``reward_index`` is None)."""
    identifiers = parts.config.identifiers
    if not identifiers.enabled or reward_index is None:
        return list(expanded)
    template = prepended_template(identifiers)
    return [with_identifiers(text, [parts.reward_names[int(k)]], template) for text, k in zip(expanded, reward_index)]


def sample_images(
    parts: TrainingParts, prompts: list[str], expanded: list[str], iteration: int, offset: int, part: slice = slice(None)
) -> Rollout:
    """The N images of every group of ``prompts`` (``part``: only those images of the layout-ordered
    list), with trajectories; ``expanded`` gives ĉ per group (or per prompt, see :func:`group_texts`).

    Image i is drawn from its own generator seeded by its global index ``offset + i``, so any
    split of the images into parts samples exactly the images of one call; with ``identifiers.paired_noise`` by
    the index of its namesake under identifier 0, ``offset + i − k(i)·N``: the images (p, e, ·, j) share their
    noise. With ``t2i.estimator`` ``rwr`` the images come from the base model (LoRA off), as DPOK's supervised
    baseline. With ``sampling.sde_window`` only the iteration's window of steps is stochastic
    (:mod:`parrot.sde_window`).
    """
    layout = parts.layout.for_prompts(len(prompts))
    texts = group_texts(parts, prompts, expanded)
    indices = range(layout.num_images)[part]
    originals = [prompts[p] for p in layout.image_prompt()[part].tolist()]
    expanded_per_image = [texts[g] for g in layout.image_group()[part].tolist()]
    own = layout.image_identifier()[part]
    paired = parts.config.identifiers.enabled and parts.config.identifiers.paired_noise
    seed_indices = [offset + i - (k * layout.images if paired else 0) for i, k in zip(indices, own.tolist())]
    generators = [torch.Generator(parts.device).manual_seed(derived_seed(parts.config.seed, iteration, IMAGES, i)) for i in seed_indices]
    model = parts.policy.adapters_disabled() if parts.config.t2i.estimator == "rwr" else contextlib.nullcontext()
    with model:
        conditioning = conditioning_prompts(parts, expanded_per_image, own)
        window = window_steps(parts.config.sampling.sde_window, parts.config.sampling.num_steps, iteration)
        trajectory = parts.sample_policy(conditioning, originals, generators, parts.training_guidance, window)
    return Rollout(trajectory, originals, expanded_per_image, own, offset + (indices[0] if indices else 0))


# ----- 4. rewards ------------------------------------------------------------------------------------
def score(parts: TrainingParts, rollout: Rollout) -> RewardScores:
    """R (N_local, K): every reward of every image against its ORIGINAL prompt c."""
    return parts.evaluator(rollout.trajectory.images, rollout.original_prompts, expansion_metadata(rollout.expanded_prompts))


def sample_and_score(
    parts: TrainingParts, prompts: list[str], expanded: list[str], iteration: int, offset: int
) -> tuple[Rollout, RewardScores]:
    """Stages 3–4, pipelined: the images are sampled in ``sampling.chunks`` parts and part j is
    scored on the evaluator's worker thread while part j+1 samples. Same images, trajectories
    and scores as sampling everything and then scoring it (``chunks`` = 1 does exactly that)."""
    total = parts.layout.for_prompts(len(prompts)).num_images
    bounds = chunk_bounds(total, parts.config.sampling.chunks)
    if len(bounds) == 1:
        rollout = sample_images(parts, prompts, expanded, iteration, offset)
        return rollout, score(parts, rollout)
    pieces, pending = [], []
    for start, stop in bounds:
        piece = sample_images(parts, prompts, expanded, iteration, offset, slice(start, stop))
        pending.append(parts.evaluator.submit(piece.trajectory.images, piece.original_prompts, expansion_metadata(piece.expanded_prompts)))
        pieces.append(piece)
    rollout = Rollout(
        Trajectory.concatenate([p.trajectory for p in pieces]),
        [c for p in pieces for c in p.original_prompts],
        [e for p in pieces for e in p.expanded_prompts],
        torch.cat([p.own_reward for p in pieces]),
        offset,
    )
    return rollout, RewardScores.concatenate([future.result() for future in pending])


def chunk_bounds(total: int, chunks: int) -> list[tuple[int, int]]:
    """``total`` items split into at most ``chunks`` contiguous (start, stop) parts of near-equal size."""
    chunks = max(1, min(chunks, total))
    edges = [round(j * total / chunks) for j in range(chunks + 1)]
    return [(a, b) for a, b in zip(edges, edges[1:]) if b > a]
