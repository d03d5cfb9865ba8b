"""Classifier-free guidance and Parrot's original-prompt-centred guidance as one rule.

Every guidance used here is a weighted sum of noise predictions whose weights add to 1:

    ε̄ = (1 − Σ_j w_j)·ε(x_t, ∅) + Σ_j w_j·ε(x_t, c_j)  =  ε(x_t, ∅) + Σ_j w_j·(ε(x_t, c_j) − ε(x_t, ∅))

- classifier-free guidance with scale s: one condition c with w = s (Ho & Salimans 2022);
- Parrot's original-prompt-centred guidance (Lee et al. 2024, eq. 4):
  ε̄ = w1·ε(x_t, c) + (1 − w1 − w2)·ε(x_t, ∅) + w2·ε(x_t, ĉ), c the user's original prompt,
  ĉ the expanded one (paper default w1 = w2 = 5).

The second form is the one computed, because it is exactly what diffusers'
``StableDiffusionPipeline`` computes for CFG (``uncond + s·(text − uncond)``), so our sampler
reproduces the stock pipeline bit for bit. Conditions with weight 0 are dropped before the
network is called: with w1 = 0, Parrot's guidance *is* CFG on ĉ with scale w2.

What the weights are applied to is decided here and nowhere else: one weight is CFG on the
sampled prompts, two weights are (w1, w2) on [c, ĉ] — the original prompts, then the sampled
ones (:meth:`Guidance.conditions`, :attr:`Guidance.prompt_centred_weights`). Callers pass the
original prompts whenever they have them and let the guidance decide whether they are used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["Guidance", "combine_noise_predictions"]


@dataclass(frozen=True)
class Guidance:
    """Weights w_j of the conditional noise predictions; the unconditional one gets 1 − Σ w_j.

    ``weights == (1.0,)`` means a single conditional pass and no unconditional one
    (diffusers' behaviour for guidance_scale = 1).
    """

    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.weights:
            raise ValueError("guidance needs at least one conditional weight")
        for w in self.weights:
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
                raise ValueError(f"guidance weight {w!r} is not a finite number")
        object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))

    @classmethod
    def cfg(cls, scale: float) -> Guidance:
        """Classifier-free guidance with scale s on one prompt (s = 1: no guidance).

        Unlike diffusers, which switches guidance off for any s ≤ 1, s in (0, 1) here
        interpolates between the unconditional and conditional predictions.
        """
        return cls((scale,))

    @classmethod
    def prompt_centred(cls, w1: float, w2: float) -> Guidance:
        """Parrot's guidance on (original c, expanded ĉ): weights (w1, w2) in that order."""
        return cls((w1, w2))

    @classmethod
    def choose(cls, prompt_centred: bool, w1: float, w2: float, guidance_scale: float) -> Guidance:
        """Parrot's (w1, w2) when ``prompt_centred``, else CFG with ``guidance_scale``: the one place a
        caller's setting becomes a guidance (training, evaluation, ``parrot.generate``, ``parrot.sample``)."""
        return cls.prompt_centred(w1, w2) if prompt_centred else cls.cfg(guidance_scale)

    @property
    def is_prompt_centred(self) -> bool:
        """Whether the weights are Parrot's (w1 on the original prompts c, w2 on the sampled prompts ĉ)."""
        return len(self.weights) == 2

    @property
    def prompt_centred_weights(self) -> tuple[float, float]:
        """(w1, w2) of the same computation: CFG with scale s is (0, s), as zero weights are dropped."""
        if self.is_prompt_centred:
            return self.weights  # type: ignore[return-value]
        if len(self.weights) == 1:
            return 0.0, self.weights[0]
        raise ValueError(f"guidance has {len(self.weights)} weights; only 1 (CFG) or 2 (Parrot) have (w1, w2)")

    def conditions(self, prompts: list[str], original_prompts: list[str] | None = None) -> list[list[str]]:
        """The prompt list each weight applies to, in weight order: [c, ĉ] (prompt-centred) or [prompts] (CFG).

        ``prompts`` are the sampled ones (ĉ, "<k>, ĉ" or c itself); ``original_prompts`` (c) are
        used only by prompt-centred guidance, which needs them; CFG leaves them unused.
        """
        if self.is_prompt_centred:
            if original_prompts is None:
                raise ValueError("prompt-centred guidance needs original_prompts (c) alongside the expanded prompts")
            if len(original_prompts) != len(prompts):
                raise ValueError(f"original_prompts has {len(original_prompts)} prompts but prompts has {len(prompts)}")
            return [list(original_prompts), list(prompts)]
        if len(self.weights) == 1:
            return [list(prompts)]
        raise ValueError(f"guidance has {len(self.weights)} weights; sampling takes 1 (CFG) or 2 (Parrot)")

    @property
    def active(self) -> tuple[int, ...]:
        """Indices of the conditions the network is evaluated on: those with a non-zero weight."""
        kept = tuple(j for j, w in enumerate(self.weights) if w != 0.0)
        return kept or (len(self.weights) - 1,)

    @property
    def needs_unconditional(self) -> bool:
        """False only when a single active condition has weight exactly 1."""
        active = self.active
        return not (len(active) == 1 and self.weights[active[0]] == 1.0)


def combine_noise_predictions(eps_uncond: torch.Tensor | None, eps_conds: list[torch.Tensor], weights: tuple[float, ...]) -> torch.Tensor:
    """ε(∅) + Σ_j w_j·(ε(c_j) − ε(∅)); with ``eps_uncond`` None, the single ε(c) itself."""
    if len(eps_conds) != len(weights):
        raise ValueError(f"{len(eps_conds)} conditional predictions but {len(weights)} weights")
    if eps_uncond is None:
        if len(eps_conds) != 1:
            raise ValueError("without an unconditional prediction exactly one condition is allowed")
        return eps_conds[0]
    guided = eps_uncond
    for w, eps in zip(weights, eps_conds):
        guided = guided + w * (eps - eps_uncond)
    return guided
