"""From a batch's reward matrix to per-(image, reward) advantages: normalise → select → credit → clip.

Notation (Parrot, Lee et al. 2024, Alg. 1 steps 5–6): R[i, k] = r_k(x_i, c_i) for the N images
of the *global* batch (all processes) and K rewards. Images come in groups g(i) of one
(prompt c, expansion ĉ, identifier k) (:class:`parrot.layout.BatchLayout`). The non-dominated set
P holds the images that no other image *of the same group* dominates (``scope`` ``group``, the
paper's "same text prompt"; ``batch`` takes P over the whole mixed batch), where a dominates b iff
R[a, k] ≥ R[b, k] for every k and R[a, k] > R[b, k] for at least one k (maximisation). Exact
duplicates do not dominate each other, so all copies of a non-dominated row are in P; with one
reward, P is every image that attains its group's maximum. P is always taken over all K rewards.
The T2I update weights image i's log-likelihood by the advantage A[i, k]:

- ``pareto``:          A[i, k] = R̃[i, k]·1[i ∈ P]          (Parrot; rewards outside P are 0)
- ``weighted``:        A[i, k] = w_k·R̃[i, k]                (no selection; Parrot's WS baselines)
- ``single:<name>``:   A[i, k] = R̃[i, k]·1[k = name]        (one reward, e.g. DDPO)

R̃ is set by ``reward_weighting``: ``raw`` (default) is the paper's weighting, R̃ = R (r_k on P, 0
elsewhere; it measured better than ``normalised`` on the shapes world, BENCHMARKS.md "Reward
weighting"); ``normalised`` is R after ``gradient_normalisation``:

- ``batch`` (default): each column z-scored over the global batch;
- ``group``: each column z-scored within the image's group (GRPO-style);
- ``per_prompt``: DDPO's per-prompt stat tracker (each column z-scored against the history of the
  same original prompt, falling back to the batch statistics until ``min_count`` scores are seen);
- ``none``: raw R (the same as ``reward_weighting`` ``raw``).

Identifier credit: with reward identifiers on, an image sampled from "<k>, ĉ" is pushed by reward k
only: A[i, j] = 0 for j ≠ k(i) (after selection over all K rewards).

Before selection (``selection_normalisation``): Pareto selection depends only on the order of each
reward column, so it is *invariant* to any per-reward increasing transform and is computed on the
raw scores; this setting only changes the weighted sum (``batch`` z-scores each column first).

Then A is clipped to [−``advantage_clip``, ``advantage_clip``]. Entries whose reward was
non-finite (``valid`` False; the evaluator replaced them by the batch's worst score so that
they can still be ranked) get A = 0: a NaN never reaches the gradient.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import moocore
import numpy as np
import torch

__all__ = [
    "SelectionConfig",
    "Selection",
    "parse_selection",
    "non_dominated_mask",
    "zscore_columns",
    "zscore_per_group",
    "non_dominated_per_group",
    "identifier_credit",
    "PerPromptStatTracker",
    "compute_advantages",
    "Advantages",
]

_NORMALISATIONS = ("none", "batch", "group", "per_prompt")
_SCOPES = ("group", "batch")
_WEIGHTINGS = ("normalised", "raw")


@dataclass
class SelectionConfig:
    """How the batch's rewards become advantages (see :mod:`parrot.selection`)."""

    mode: str = field(
        default="pareto",
        metadata={"help": "'pareto' (Parrot), 'weighted' (weighted sum, no selection) or 'single:<reward name>'"},
    )
    weights: tuple[float, ...] = field(
        default=(),
        metadata={"help": "per-reward weights for mode 'weighted', in rewards.names order; empty = equal weights"},
    )
    selection_normalisation: str = field(
        default="batch",
        metadata={"help": "'none' or 'batch' z-score before the weighted sum (Pareto selection is invariant to it)"},
    )
    scope: str = field(
        default="group",
        metadata={
            "help": "where the non-dominated set P is taken: 'group' (the N images of one prompt, expansion and "
            "identifier, as the paper) or 'batch' (the whole global batch of mixed prompts)"
        },
    )
    reward_weighting: str = field(
        default="raw",
        metadata={"help": "'raw' (the paper: A[i,k] = r_k on P, 0 elsewhere) or 'normalised' (R after gradient_normalisation)"},
    )
    gradient_normalisation: str = field(
        default="batch",
        metadata={
            "help": "R̃ of reward_weighting 'normalised': 'batch' (z-score per reward), 'group' (z-score within each "
            "group), 'per_prompt' (DDPO stat tracker) or 'none'"
        },
    )
    stat_buffer_size: int = field(default=32, metadata={"help": "per_prompt: scores kept per prompt and reward"})
    stat_min_count: int = field(default=4, metadata={"help": "per_prompt: scores needed before a prompt's own statistics are used"})
    advantage_clip: float = field(default=5.0, metadata={"help": "clip advantages to [-c, c] (DDPO: 5)"})

    def __post_init__(self) -> None:
        if not (self.mode in ("pareto", "weighted") or self.mode.startswith("single:")):
            raise ValueError(f"mode={self.mode!r}: use 'pareto', 'weighted' or 'single:<reward name>'")
        if self.selection_normalisation not in ("none", "batch"):
            raise ValueError(f"selection_normalisation={self.selection_normalisation!r}: use 'none' or 'batch'")
        if self.scope not in _SCOPES:
            raise ValueError(f"scope={self.scope!r}: use one of {_SCOPES}")
        if self.reward_weighting not in _WEIGHTINGS:
            raise ValueError(f"reward_weighting={self.reward_weighting!r}: use one of {_WEIGHTINGS}")
        if self.gradient_normalisation not in _NORMALISATIONS:
            raise ValueError(f"gradient_normalisation={self.gradient_normalisation!r}: use one of {_NORMALISATIONS}")
        if any(not np.isfinite(w) or w < 0 for w in self.weights):
            raise ValueError(f"weights={self.weights!r} must be finite and >= 0")
        if self.weights and sum(self.weights) <= 0:
            raise ValueError(f"weights={self.weights!r} sum to 0; give at least one positive weight")
        if self.stat_buffer_size < 1 or self.stat_min_count < 1:
            raise ValueError(f"stat_buffer_size={self.stat_buffer_size} and stat_min_count={self.stat_min_count} must be >= 1")
        if not self.advantage_clip > 0:
            raise ValueError(f"advantage_clip={self.advantage_clip!r} must be > 0")


@dataclass(frozen=True)
class Selection:
    """A parsed selection mode: ``kind`` pareto|weighted|single and its weights w_k (K,)."""

    kind: str
    weights: tuple[float, ...]


def parse_selection(config: SelectionConfig, reward_names: Sequence[str]) -> Selection:
    """Resolve the mode against the configured reward names (errors name the bad value)."""
    names = list(reward_names)
    if config.mode.startswith("single:"):
        target = config.mode.split(":", 1)[1]
        if target not in names:
            raise ValueError(f"selection.mode={config.mode!r}: reward {target!r} is not among rewards.names {names}")
        return Selection("single", tuple(1.0 if n == target else 0.0 for n in names))
    if config.mode == "weighted":
        weights = config.weights or tuple(1.0 / len(names) for _ in names)
        if len(weights) != len(names):
            raise ValueError(f"selection.weights has {len(weights)} value(s) {weights} but there are {len(names)} rewards {names}")
        return Selection("weighted", tuple(float(w) for w in weights))
    if config.weights:
        raise ValueError(f"selection.weights={config.weights} is only used with selection.mode 'weighted'")
    return Selection("pareto", tuple(1.0 for _ in names))


def non_dominated_mask(rewards: torch.Tensor) -> torch.Tensor:
    """(N,) bool: True for rows of ``rewards`` (N, K) that no other row dominates (maximisation).

    Uses ``moocore.is_nondominated`` with ``keep_weakly=True`` so duplicated non-dominated rows
    are all kept (neither dominates the other under the ≥-everywhere, >-somewhere rule).
    """
    if rewards.ndim != 2 or rewards.shape[0] == 0 or rewards.shape[1] == 0:
        raise ValueError(f"rewards must be a non-empty (N, K) matrix; got shape {tuple(rewards.shape)}")
    values = rewards.detach().cpu().double().numpy()
    if not np.isfinite(values).all():
        raise ValueError("rewards contain NaN or inf; mask them (rewards.mask_nonfinite) before selection")
    mask = moocore.is_nondominated(values, maximise=True, keep_weakly=True)
    return torch.from_numpy(np.asarray(mask, dtype=bool))


def zscore_columns(rewards: torch.Tensor, valid: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
    """(R − mean) / (std + eps) per column, statistics over the ``valid`` entries only."""
    valid = torch.ones_like(rewards, dtype=torch.bool) if valid is None else valid
    weights = valid.to(rewards.dtype)
    count = weights.sum(0).clamp(min=1)
    filled = torch.where(valid, rewards, torch.zeros_like(rewards))
    mean = filled.sum(0) / count
    var = (((filled - mean) ** 2) * weights).sum(0) / count
    return (rewards - mean) / (var.sqrt() + eps)


def zscore_per_group(rewards: torch.Tensor, valid: torch.Tensor, groups: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Each column z-scored within each group (rows with the same ``groups`` label)."""
    out = torch.empty_like(rewards)
    for g in torch.unique(groups):
        rows = groups == g
        out[rows] = zscore_columns(rewards[rows], valid[rows], eps)
    return out


def non_dominated_per_group(rewards: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """(N,) bool: the non-dominated set of each group (rows with the same ``groups`` label), over all K rewards."""
    selected = torch.zeros(rewards.shape[0], dtype=torch.bool)
    for g in torch.unique(groups):
        rows = (groups == g).nonzero().flatten()
        selected[rows] = non_dominated_mask(rewards[rows])
    return selected


def identifier_credit(values: torch.Tensor, identifiers: torch.Tensor) -> torch.Tensor:
    """A with every column but the image's own identifier k(i) zeroed: "<k>, ĉ" is pushed by r_k only."""
    if identifiers.shape != values.shape[:1]:
        raise ValueError(f"identifiers {tuple(identifiers.shape)} must give one reward index per row of {tuple(values.shape)}")
    own = torch.nn.functional.one_hot(identifiers.long(), values.shape[1]).to(values.dtype)
    return values * own


class PerPromptStatTracker:
    """DDPO's per-prompt reward statistics, one history per (original prompt, reward).

    ``normalise`` appends the batch's valid scores to each prompt's history (at most
    ``buffer_size`` most recent), then z-scores each score against its prompt's history; a
    prompt with fewer than ``min_count`` scores uses the batch's statistics of that reward.
    The state is plain lists so that checkpoints store it as JSON.
    """

    def __init__(self, buffer_size: int = 32, min_count: int = 4):
        self.buffer_size = buffer_size
        self.min_count = min_count
        self.history: dict[str, list[deque]] = {}

    def normalise(self, prompts: Sequence[str], rewards: torch.Tensor, valid: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
        if len(prompts) != rewards.shape[0]:
            raise ValueError(f"{len(prompts)} prompts for {rewards.shape[0]} reward rows")
        num_rewards = rewards.shape[1]
        batch_z = zscore_columns(rewards, valid, eps)
        for i, prompt in enumerate(prompts):
            queues = self.history.setdefault(prompt, [deque(maxlen=self.buffer_size) for _ in range(num_rewards)])
            for k in range(num_rewards):
                if valid[i, k]:
                    queues[k].append(float(rewards[i, k]))
        out = batch_z.clone()
        for i, prompt in enumerate(prompts):
            for k, queue in enumerate(self.history[prompt]):
                if len(queue) >= self.min_count:
                    values = torch.tensor(list(queue), dtype=rewards.dtype)
                    out[i, k] = (rewards[i, k] - values.mean()) / (values.std(unbiased=False) + eps)
        return out

    def state_dict(self) -> dict:
        return {prompt: [list(q) for q in queues] for prompt, queues in self.history.items()}

    def load_state_dict(self, state: dict) -> None:
        self.history = {prompt: [deque(values, maxlen=self.buffer_size) for values in queues] for prompt, queues in state.items()}


@dataclass
class Advantages:
    """A (N, K) advantages, the non-dominated mask (N,) and the normaliser of the loss."""

    values: torch.Tensor
    selected: torch.Tensor
    normaliser: float  # |P| for pareto, N otherwise: the 1/|P| of the gradient


def compute_advantages(
    rewards: torch.Tensor,
    valid: torch.Tensor,
    prompts: Sequence[str],
    config: SelectionConfig,
    selection: Selection,
    tracker: PerPromptStatTracker | None = None,
    groups: torch.Tensor | None = None,
    identifiers: torch.Tensor | None = None,
) -> Advantages:
    """Advantages of the global batch (N, K) per the module docstring.

    ``groups`` (N,) labels each image's (prompt, expansion, identifier) group (None: the whole batch
    is one group); ``identifiers`` (N,) the reward index k each image was sampled for (None:
    identifiers off, every reward credits every image).
    """
    if rewards.ndim != 2 or valid.shape != rewards.shape:
        raise ValueError(f"rewards {tuple(rewards.shape)} and valid {tuple(valid.shape)} must both be (N, K)")
    if len(selection.weights) != rewards.shape[1]:
        raise ValueError(f"selection has {len(selection.weights)} weights for {rewards.shape[1]} rewards")
    rewards = rewards.double()
    valid = valid.bool() & torch.isfinite(rewards)
    # For ranking, a missing score counts as the worst one in its column (as the evaluator does).
    worst = torch.where(valid, rewards, torch.full_like(rewards, float("inf"))).min(0).values
    worst = torch.where(torch.isfinite(worst), worst, torch.zeros_like(worst))
    ranked = torch.where(valid, rewards, worst.expand_as(rewards))
    groups = torch.zeros(rewards.shape[0], dtype=torch.long) if groups is None else groups.long().cpu()
    if groups.shape != rewards.shape[:1]:
        raise ValueError(f"groups {tuple(groups.shape)} must label each of the {rewards.shape[0]} rows")

    if config.reward_weighting == "raw" or config.gradient_normalisation == "none":
        normalised = ranked.clone()
    elif config.gradient_normalisation == "batch":
        normalised = zscore_columns(ranked, valid)
    elif config.gradient_normalisation == "group":
        normalised = zscore_per_group(ranked, valid, groups)
    else:
        if tracker is None:
            raise ValueError("gradient_normalisation='per_prompt' needs a PerPromptStatTracker")
        normalised = tracker.normalise(prompts, ranked, valid)

    weights = torch.tensor(selection.weights, dtype=rewards.dtype)
    if selection.kind == "pareto":
        selected = non_dominated_per_group(ranked, groups) if config.scope == "group" else non_dominated_mask(ranked)
        values = normalised * selected[:, None].to(rewards.dtype)
        normaliser = float(selected.sum())
    else:
        selected = torch.ones(rewards.shape[0], dtype=torch.bool)
        if selection.kind == "weighted" and config.selection_normalisation == "batch":
            # z-scored columns for the sum; every gradient normalisation but 'none' already is one
            already = config.reward_weighting == "normalised" and config.gradient_normalisation != "none"
            normalised = normalised if already else zscore_columns(normalised, valid)
        values = normalised * weights
        normaliser = float(rewards.shape[0])
    if identifiers is not None:
        values = identifier_credit(values, identifiers.cpu())
    values = values.clamp(-config.advantage_clip, config.advantage_clip)
    values = torch.where(valid, values, torch.zeros_like(values))
    return Advantages(values=values.float(), selected=selected, normaliser=normaliser)
