"""From a batch's reward matrix to per-(image, reward) advantages: normalise → select → credit → clip.

Notation (Parrot, Lee et al. 2024, Alg. 1 steps 5–6): R[i, k] = r_k(x_i, c_i) for the N images
of the *global* batch (all processes) and K rewards. Images come in groups g(i) of one
(prompt c, expansion ĉ, identifier k) (:class:`parrot.layout.BatchLayout`; GRPO's group of G images).
The non-dominated set P holds the images that no other image *of the same group* dominates
(``scope`` ``group``, the paper's "same text prompt"; ``batch`` takes P over the whole mixed batch),
where a dominates b iff R[a, k] ≥ R[b, k] for every k and R[a, k] > R[b, k] for at least one k
(maximisation). Exact duplicates do not dominate each other, so all copies of a non-dominated row are
in P; with one reward, P is every image that attains its group's maximum. P is always taken over all
K rewards. z_g(x) is x z-scored within each group, z_B(x) over the global batch (a constant set
gives 0, never NaN). The T2I update weights image i's log-likelihood by A_i = Σ_k A[i, k]:

- ``pareto``:          A[i, k] = R̃[i, k]·1[i ∈ P]          (Parrot; by default z_g(r_k)·1[i ∈ P_g], the paper's r_k with ``raw``;
                       with ``dominated`` ``push_down``, an extension, min(R̃[i, k], 0) for i ∉ P instead of 0)
- ``single:<name>``:   A[i, k] = R̃[i, k]·1[k = name]        (one reward; by default GRPO's z_g(r_name))
- ``weighted``:        A_i = G(s)_i of the weighted sum s_i = Σ_k w_k·r̂_ik  (no selection; Parrot's WS
                       baselines with ``raw``; Flow-GRPO / DanceGRPO's multi-reward GRPO with the defaults)
- ``gdpo``:            A_i = z_B(Σ_k w_k·z_g(r_k))_i       (GDPO, Liu et al. 2026: each reward normalised in its
                       group, the weighted sum normalised over the batch; the three settings below do not apply)

For ``pareto`` and ``single``, R̃ is set by ``reward_weighting``: ``raw`` is the paper's weighting, R̃ = R
(r_k on P, 0 elsewhere); ``normalised`` (default) is R with each column after ``gradient_normalisation``:

- ``batch``: z-scored over the global batch;
- ``group`` (default): z-scored within the image's group (GRPO);
- ``per_prompt``: DDPO's stat tracker (z-scored against the original prompt's history; batch statistics until
  ``min_count`` scores are seen);
- ``none``: raw R (the same as ``reward_weighting`` ``raw``).

The default, ``normalised`` + ``group`` (A = z_g(r_k)·1[i ∈ P_g]), measured better than ``raw`` on 3 seeds of the
v5 shapes world (Pareto T2I-only, Table-1 avg 0.586 ± 0.002 vs 0.567 ± 0.003, paired +0.019 ± 0.002, HV +0.036 ±
0.011, every reward up; BENCHMARKS.md "Reward weighting"); ``raw`` was the default before, on a 1-seed 8-iteration
figure. Groups of one image have no statistics: there set ``gradient_normalisation batch`` or ``reward_weighting raw``.

For ``weighted`` the rewards are summed first and the *sum* is what ``gradient_normalisation`` normalises, as GRPO
does: r̂_k is r_k in the units of ``selection_normalisation`` (``batch``, the default: z_B(r_k), so that rewards of
different scales can be summed; ``none``: raw), s = Σ_k w_k·r̂_k, and G(s) is s itself with ``raw`` (Parrot's WS
baselines, which pin it: A_i = Σ_k w_k·z_B(r_k)_i) or, with ``normalised``, s z-scored per
``gradient_normalisation`` (``group``: z_g(s), Flow-GRPO's multi-reward advantage with ``selection_normalisation
none``; ``batch``: z_B(s) = Σ_k w_k·z_B(r_k) / std_B(s)).

Per-reward form of a per-image advantage (``weighted``, ``gdpo``): the update reads A_i = Σ_k A[i, k], and
identifier credit keeps one column, so the scalar is split into each reward's share. A z-score of a sum is linear
in its terms: z(s)_i = Σ_k (w_k·r̂_ik − μ_k) / σ(s), with μ_k the mean of w_k·r̂_k and σ(s) the standard deviation
of s over the same images (group or batch); A[i, k] is the k-th term, reward k's centred contribution, so the row
sums to A_i exactly, and with identifiers the image of "<k>, ĉ" keeps its own reward's share. (``per_prompt``
standardises against a history, which has no such split: there A[i, k] = A_i·w_k / Σ_j w_j.)

Identifier credit: with identifiers on, an image of "<k>, ĉ" is pushed by r_k only: A[i, j] = 0 for j ≠ k(i) (after P);
with ``identifiers.contrast`` λ > 0 (an extension, off by default) A[i, j] is scaled by −λ/(K−1) instead.

P depends only on each reward column's order (*invariant* to increasing per-reward transforms): taken on raw scores.

Then A is clipped to [−``advantage_clip``, ``advantage_clip``]: each entry for ``pareto`` / ``single``, the row
sum A_i for ``weighted`` / ``gdpo`` (its shares scaled together). Entries whose reward was non-finite (``valid``
False; the evaluator replaced them by the batch's worst score so that they can still be ranked) get A = 0: a NaN
never reaches the gradient.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import moocore
import numpy as np
import torch

__all__ = [
    "SelectionConfig", "Selection", "parse_selection", "non_dominated_mask", "column_statistics", "zscore_columns", "zscore_per_group",
    "standardised_shares", "non_dominated_per_group", "identifier_credit", "PerPromptStatTracker", "compute_advantages", "Advantages",
]  # fmt: skip

_NORMALISATIONS = ("none", "batch", "group", "per_prompt")
_SCOPES = ("group", "batch")
_WEIGHTINGS = ("normalised", "raw")
_DOMINATED = ("zero", "push_down")


@dataclass
class SelectionConfig:
    """How the batch's rewards become advantages (see :mod:`parrot.selection`)."""

    mode: str = field(
        default="pareto",
        metadata={
            "help": "'pareto' (Parrot), 'weighted' (weighted sum, no selection; GRPO's multi-reward with the default "
            "reward_weighting and gradient_normalisation, the WS baselines with reward_weighting raw), 'gdpo' (each reward "
            "z-scored in its group, weighted sum z-scored over the batch) or 'single:<reward name>'"
        },
    )
    weights: tuple[float, ...] = field(
        default=(),
        metadata={"help": "per-reward weights w_k of modes 'weighted' and 'gdpo', in rewards.names order; empty = equal weights"},
    )
    selection_normalisation: str = field(
        default="batch",
        metadata={"help": "mode 'weighted': each reward as summed, 'batch' (z-scored over the batch) or 'none' (raw)"},
    )
    scope: str = field(
        default="group",
        metadata={
            "help": "where the non-dominated set P is taken: 'group' (the N images of one prompt, expansion and "
            "identifier, as the paper) or 'batch' (the whole global batch of mixed prompts)"
        },
    )
    reward_weighting: str = field(
        default="normalised",
        metadata={
            "help": "'normalised' (default: after gradient_normalisation, each reward or the weighted sum of 'weighted'; "
            "with 'group' A = z_g(r_k) on P, Table-1 avg +0.019 ± 0.002 over raw on 3 seeds of the v5 shapes world) "
            "or 'raw' (the paper: A[i,k] = r_k on P, 0 elsewhere; 'weighted': the sum itself, Parrot's WS baselines)"
        },
    )
    dominated: str = field(
        default="zero",
        metadata={
            "help": "mode 'pareto': what the images off the front P get: 'zero' (the paper: A = 0) or 'push_down' (an "
            "extension: only their below-average entries, A[i,k] = min(R̃[i,k], 0), so that P decides what is pushed up "
            "and every image's below-average rewards still push it down, as a weighted sum's do; needs reward_weighting "
            "'normalised')"
        },
    )
    gradient_normalisation: str = field(
        default="group",
        metadata={
            "help": "reward_weighting 'normalised': 'group' (default: z-score within each group of G images, GRPO; "
            "needs >= 2 images per group), 'batch' (z-score over the batch), 'per_prompt' (DDPO stat tracker) or 'none'"
        },
    )
    stat_buffer_size: int = field(default=32, metadata={"help": "per_prompt: scores kept per prompt and reward"})
    stat_min_count: int = field(default=4, metadata={"help": "per_prompt: scores needed before a prompt's own statistics are used"})
    advantage_clip: float = field(default=5.0, metadata={"help": "clip advantages to [-c, c] (DDPO: 5)"})

    def __post_init__(self) -> None:
        if not (self.mode in ("pareto", "weighted", "gdpo") or self.mode.startswith("single:")):
            raise ValueError(f"mode={self.mode!r}: use 'pareto', 'weighted', 'gdpo' or 'single:<reward name>'")
        if self.selection_normalisation not in ("none", "batch"):
            raise ValueError(f"selection_normalisation={self.selection_normalisation!r}: use 'none' or 'batch'")
        if self.scope not in _SCOPES:
            raise ValueError(f"scope={self.scope!r}: use one of {_SCOPES}")
        if self.reward_weighting not in _WEIGHTINGS:
            raise ValueError(f"reward_weighting={self.reward_weighting!r}: use one of {_WEIGHTINGS}")
        if self.dominated not in _DOMINATED:
            raise ValueError(f"dominated={self.dominated!r}: use one of {_DOMINATED}")
        centred = self.reward_weighting == "normalised" and self.gradient_normalisation != "none"
        if self.dominated == "push_down" and not (self.mode == "pareto" and centred):
            raise ValueError(
                "dominated='push_down' needs mode 'pareto' with reward_weighting 'normalised' and a gradient_normalisation "
                "other than 'none' (a push down is a score below its mean)"
            )
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
    """A parsed selection mode: ``kind`` pareto|weighted|gdpo|single and its weights w_k (K,)."""

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
    if config.mode in ("weighted", "gdpo"):
        weights = config.weights or tuple(1.0 / len(names) for _ in names)
        if len(weights) != len(names):
            raise ValueError(f"selection.weights has {len(weights)} value(s) {weights} but there are {len(names)} rewards {names}")
        return Selection(config.mode, tuple(float(w) for w in weights))
    if config.weights:
        raise ValueError(f"selection.weights={config.weights} is only used with selection.mode 'weighted' or 'gdpo'")
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


def column_statistics(values: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per column over the ``valid`` entries: mean, (population) std, and whether they are all equal (or none)."""
    weights = valid.to(values.dtype)
    count = weights.sum(0).clamp(min=1)
    filled = torch.where(valid, values, torch.zeros_like(values))
    mean = filled.sum(0) / count
    std = ((((filled - mean) ** 2) * weights).sum(0) / count).sqrt()
    top = torch.where(valid, values, torch.full_like(values, -float("inf"))).max(0).values
    bottom = torch.where(valid, values, torch.full_like(values, float("inf"))).min(0).values
    return mean, std, ~(top > bottom)


def zscore_columns(rewards: torch.Tensor, valid: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
    """(R − mean) / (std + eps) per column, statistics over the ``valid`` entries only; 0 in a constant column."""
    valid = torch.ones_like(rewards, dtype=torch.bool) if valid is None else valid
    mean, std, constant = column_statistics(rewards, valid)
    return torch.where(constant, torch.zeros_like(rewards), (rewards - mean) / (std + eps))


def zscore_per_group(rewards: torch.Tensor, valid: torch.Tensor, groups: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Each column z-scored within each group (rows with the same ``groups`` label)."""
    out = torch.empty_like(rewards)
    for g in torch.unique(groups):
        rows = groups == g
        out[rows] = zscore_columns(rewards[rows], valid[rows], eps)
    return out


def standardised_shares(contributions: torch.Tensor, valid_rows: torch.Tensor, groups: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """z(s) of the row sums s = Σ_k C[:, k] within each group, split into per-column shares (N, K).

    Share (C[i, k] − μ_k) / (σ(s) + eps), μ_k the mean of column k and σ(s) the std of s over the
    group's ``valid_rows``: the row sums are exactly (s − mean(s)) / (σ(s) + eps); 0 in a group whose s is constant.
    """
    out = torch.zeros_like(contributions)
    for g in torch.unique(groups):
        rows = groups == g
        block, ok = contributions[rows], valid_rows[rows]
        mean, _, _ = column_statistics(block, ok[:, None].expand_as(block))
        _, std, constant = column_statistics(block.sum(1, keepdim=True), ok[:, None])
        out[rows] = torch.where(constant, torch.zeros_like(block), (block - mean) / (std + eps))
    return out


def non_dominated_per_group(rewards: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """(N,) bool: the non-dominated set of each group (rows with the same ``groups`` label), over all K rewards."""
    selected = torch.zeros(rewards.shape[0], dtype=torch.bool)
    for g in torch.unique(groups):
        rows = (groups == g).nonzero().flatten()
        selected[rows] = non_dominated_mask(rewards[rows])
    return selected


def identifier_credit(values: torch.Tensor, identifiers: torch.Tensor, contrast: float = 0.0) -> torch.Tensor:
    """A with the image's own identifier's column k(i) kept and every other column j scaled by −λ/(K−1): "<k>, ĉ" is
    pushed by r_k only (λ = ``contrast`` = 0, the paper) or also against the mean of the other rewards.

    Why λ: summed over identifiers, the paper's update is Σ_k ∇J_k(<k>) with J_k(y) = E_{x~p(·|y)} r_k(x); when the
    identifiers' conditions are close, ∇J_k(<k>) = a_k + d_k with a small identifier-specific part d_k, and the
    common part Σ a_k moves r_k under <k> against the other identifiers by ⟨d_k, Σ a⟩, first order in d, of any sign,
    while the aligned ⟨d_k, d_k⟩ is second order. Crediting each image of <j> with −λ·mean_{k≠j} A[·, k] adds
    −λ·mean_{j≠k} ∇J_k(<j>) for each k, which removes λ of the common part. Measured on the shapes world, with
    ``identifiers.paired_noise`` at λ = 1 it does, but no identifier then ranks first on its reward either
    (BENCHMARKS.md, "Why the identifier-specific changes take either sign"): an extension, off by default."""
    if identifiers.shape != values.shape[:1]:
        raise ValueError(f"identifiers {tuple(identifiers.shape)} must give one reward index per row of {tuple(values.shape)}")
    num_rewards = values.shape[1]
    own = torch.nn.functional.one_hot(identifiers.long(), num_rewards).to(values.dtype)
    if contrast == 0.0 or num_rewards == 1:
        return values * own
    return values * (own - (1.0 - own) * contrast / (num_rewards - 1))


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
    normaliser: float  # |P| for pareto (the 1/|P| of the gradient), N otherwise and with dominated 'push_down'


def compute_advantages(
    rewards: torch.Tensor,
    valid: torch.Tensor,
    prompts: Sequence[str],
    config: SelectionConfig,
    selection: Selection,
    tracker: PerPromptStatTracker | None = None,
    groups: torch.Tensor | None = None,
    identifiers: torch.Tensor | None = None,
    identifier_contrast: float = 0.0,
) -> Advantages:
    """Advantages of the global batch (N, K) per the module docstring.

    ``groups`` (N,) labels each image's (prompt, expansion, identifier) group (None: the whole batch
    is one group); ``identifiers`` (N,) the reward index k each image was sampled for (None:
    identifiers off, every reward credits every image); ``identifier_contrast`` λ of :func:`identifier_credit`.
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

    weights = torch.tensor(selection.weights, dtype=rewards.dtype)
    selected = torch.ones(rewards.shape[0], dtype=torch.bool)
    normaliser = float(rewards.shape[0])
    scalar = selection.kind in ("weighted", "gdpo")
    if scalar:
        values = scalar_advantage_shares(ranked, valid, prompts, config, selection, tracker, groups)
    else:
        normalised = normalised_columns(ranked, valid, prompts, config, tracker, groups)
        if selection.kind == "pareto":
            selected = non_dominated_per_group(ranked, groups) if config.scope == "group" else non_dominated_mask(ranked)
            normaliser = float(selected.sum()) if config.dominated == "zero" else normaliser
        values = front_weighted(normalised, selected, config.dominated) * weights  # pareto: weights 1; single: one-hot
    if identifiers is not None:
        values = identifier_credit(values, identifiers.cpu(), identifier_contrast)
    values = torch.where(valid, clipped_advantages(values, config.advantage_clip, scalar), torch.zeros_like(values))
    return Advantages(values=values.float(), selected=selected, normaliser=normaliser)


def front_weighted(normalised: torch.Tensor, selected: torch.Tensor, dominated: str = "zero") -> torch.Tensor:
    """R̃ on the front P; off it 0 (``zero``, the paper) or min(R̃, 0) (``push_down``: only the push down)."""
    on_front = selected[:, None]
    off_front = torch.zeros_like(normalised) if dominated == "zero" else normalised.clamp(max=0.0)
    return torch.where(on_front, normalised, off_front)


def clipped_advantages(values: torch.Tensor, clip: float, scalar: bool) -> torch.Tensor:
    """A clipped entry-wise to [−clip, clip], or (``scalar``) A_i = Σ_k A[i, k]'s shares scaled together to |A_i| ≤ clip."""
    if not scalar:
        return values.clamp(-clip, clip)
    size = values.sum(1, keepdim=True).abs()
    return values * torch.where(size > clip, clip / size, 1.0)


def normalised_columns(
    ranked: torch.Tensor,
    valid: torch.Tensor,
    prompts: Sequence[str],
    config: SelectionConfig,
    tracker: PerPromptStatTracker | None,
    groups: torch.Tensor,
) -> torch.Tensor:
    """R̃ (N, K): every column per ``reward_weighting`` and ``gradient_normalisation`` (``pareto``, ``single``)."""
    if config.reward_weighting == "raw" or config.gradient_normalisation == "none":
        return ranked.clone()
    if config.gradient_normalisation == "batch":
        return zscore_columns(ranked, valid)
    if config.gradient_normalisation == "group":
        return zscore_per_group(ranked, valid, groups)
    return per_prompt_normalised(tracker, prompts, ranked, valid)


def scalar_advantage_shares(
    ranked: torch.Tensor,
    valid: torch.Tensor,
    prompts: Sequence[str],
    config: SelectionConfig,
    selection: Selection,
    tracker: PerPromptStatTracker | None,
    groups: torch.Tensor,
) -> torch.Tensor:
    """A (N, K) of ``weighted`` and ``gdpo``: the per-image advantage A_i split into per-reward shares
    that sum to it (module docstring)."""
    weights = torch.tensor(selection.weights, dtype=ranked.dtype)
    rows = valid[:, weights > 0].all(1)  # images with every weighted reward finite give the statistics of s
    batch = torch.zeros_like(groups)
    if selection.kind == "gdpo":
        return standardised_shares(zscore_per_group(ranked, valid, groups) * weights, rows, batch)
    summed = ranked if config.selection_normalisation == "none" else zscore_columns(ranked, valid)
    contributions = summed * weights  # w_k·r̂_ik, the terms of s_i
    if config.reward_weighting == "raw" or config.gradient_normalisation == "none":
        return contributions
    if config.gradient_normalisation in ("batch", "group"):
        return standardised_shares(contributions, rows, groups if config.gradient_normalisation == "group" else batch)
    advantage = per_prompt_normalised(tracker, prompts, contributions.sum(1, keepdim=True), rows[:, None])
    return advantage * weights / weights.sum()


def per_prompt_normalised(tracker: PerPromptStatTracker | None, prompts: Sequence[str], values, valid) -> torch.Tensor:
    """``values`` z-scored against each original prompt's history (``gradient_normalisation`` 'per_prompt')."""
    if tracker is None:
        raise ValueError("gradient_normalisation='per_prompt' needs a PerPromptStatTracker")
    return tracker.normalise(prompts, values, valid)
