"""What a rollout records: the encoded prompts of a batch (:class:`Conditioning`) and its :class:`Trajectory`.

Notation (DDPO, Black et al. 2023; Parrot, Lee et al. 2024): a trajectory is
x_T → x_{T-1} → … → x_0 with each step x_{t-1} ~ p_θ(· | x_t, c) = N(μ_θ, σ_t² I) under
stochastic DDIM (η > 0). ``Trajectory.latents[:, i]`` is the latent *before* step i
(``latents[:, 0]`` is x_T, ``latents[:, -1]`` is x_0), ``timesteps[i]`` its t, and
``log_probs[:, i]`` is log p_θ(latents[:, i+1] | latents[:, i]) averaged over latent
dimensions. c is the conditioning: for CFG one prompt, for Parrot's original-prompt-centred
guidance the original prompt c and the expansion ĉ (see :mod:`t2i.guidance`). With an SDE window
(``stochastic``; Flow-GRPO-Fast, MixGRPO) only the window's steps are stochastic at η; the others are
deterministic (η = 0) and their ``log_probs`` are NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

__all__ = ["Conditioning", "Embeds", "Trajectory"]

Embeds = dict[str, torch.Tensor]


@dataclass
class Conditioning:
    """Text conditioning of a batch, ready for one batched UNet call per step.

    ``embeds`` maps UNet keyword names to tensors shaped (G, B, …): group 0 is the
    unconditional/negative prompt ∅ when ``has_unconditional``, then one group per active
    condition c_j; ``weights`` are the w_j of those conditions.
    """

    embeds: Embeds
    weights: tuple[float, ...]
    has_unconditional: bool

    @property
    def num_groups(self) -> int:
        return next(iter(self.embeds.values())).shape[0]

    @property
    def batch_size(self) -> int:
        return next(iter(self.embeds.values())).shape[1]

    @classmethod
    def from_groups(cls, groups: Sequence[Embeds], weights: tuple[float, ...], has_unconditional: bool) -> Conditioning:
        """The per-group encodings (each tensor (B, …), ∅ first when ``has_unconditional``) stacked to (G, B, …)."""
        embeds = {key: torch.stack([group[key] for group in groups]) for key in groups[0]}
        return cls(embeds=embeds, weights=weights, has_unconditional=has_unconditional)

    def flat(self, index: torch.Tensor | None = None) -> Embeds:
        """Groups concatenated along the batch, (G·N, …), optionally taking samples ``index`` (N,)."""
        out = {}
        for key, value in self.embeds.items():
            if index is not None:
                value = value[:, index]
            out[key] = value.reshape(-1, *value.shape[2:])
        return out

    def select(self, index: torch.Tensor) -> Conditioning:
        return replace(self, embeds={k: v[:, index] for k, v in self.embeds.items()})

    @classmethod
    def concatenate(cls, parts: Sequence[Conditioning]) -> Conditioning:
        """The batches of ``parts`` one after another (same groups and weights in every part)."""
        first = parts[0]
        for part in parts[1:]:
            if part.weights != first.weights or part.has_unconditional != first.has_unconditional:
                raise ValueError(f"cannot concatenate conditionings with weights {first.weights} and {part.weights}")
        return replace(first, embeds={k: torch.cat([p.embeds[k] for p in parts], dim=1) for k in first.embeds})


@dataclass
class Trajectory:
    """A batch of recorded sampling trajectories (see the module docstring for notation)."""

    latents: torch.Tensor  # (B, T+1, C, h, w) float32, x_T … x_0
    timesteps: torch.Tensor  # (T,) int64 for DDIM; float32 t = σ·1000 for flow matching (SD3, FLUX)
    log_probs: torch.Tensor  # (B, T) float32, mean over latent dims
    images: torch.Tensor  # (B, 3, H, W) float32 in [0, 1]
    conditioning: Conditioning
    prompts: list[str]
    eta: float
    num_inference_steps: int
    original_prompts: list[str] | None = None  # c of prompt-centred guidance; None under CFG
    stochastic: torch.Tensor | None = None  # (T,) bool, the SDE window: steps taken at η (others at η = 0); None = all

    @property
    def batch_size(self) -> int:
        return self.latents.shape[0]

    @property
    def log_probs_sum(self) -> torch.Tensor:
        """log p summed (not averaged) over the latent dimensions, (B, T)."""
        return self.log_probs * self.latents[0, 0].numel()

    def select(self, index: torch.Tensor | Sequence[int]) -> Trajectory:
        """The sub-batch of samples ``index`` (e.g. one process's slice, or the selected set P)."""
        index = torch.as_tensor(index, dtype=torch.long, device=self.latents.device)
        picked = index.tolist()
        return replace(
            self,
            latents=self.latents[index],
            log_probs=self.log_probs[index],
            images=self.images[index],
            conditioning=self.conditioning.select(index),
            prompts=[self.prompts[i] for i in picked],
            original_prompts=None if self.original_prompts is None else [self.original_prompts[i] for i in picked],
        )

    @classmethod
    def concatenate(cls, parts: Sequence[Trajectory]) -> Trajectory:
        """The samples of ``parts`` one after another (the inverse of :meth:`select` on a split batch)."""
        if not parts:
            raise ValueError("concatenate needs at least one trajectory")
        first = parts[0]
        for part in parts[1:]:
            if not torch.equal(part.timesteps, first.timesteps) or part.eta != first.eta or not _same_window(part, first):
                raise ValueError("cannot concatenate trajectories sampled with different timesteps, eta or SDE window")
        originals = [p.original_prompts for p in parts]
        return replace(
            first,
            latents=torch.cat([p.latents for p in parts]),
            log_probs=torch.cat([p.log_probs for p in parts]),
            images=torch.cat([p.images for p in parts]),
            conditioning=Conditioning.concatenate([p.conditioning for p in parts]),
            prompts=[text for p in parts for text in p.prompts],
            original_prompts=None if any(o is None for o in originals) else [text for o in originals for text in o],
        )


def _same_window(a: Trajectory, b: Trajectory) -> bool:
    if a.stochastic is None or b.stochastic is None:
        return a.stochastic is b.stochastic
    return torch.equal(a.stochastic, b.stochastic)
