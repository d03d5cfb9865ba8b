"""Prompts → the encoded conditioning of a batch, with the long-prompt warning (:class:`ConditioningMixin`).

The family-independent half of turning text into UNet conditioning: :meth:`ConditioningMixin.build_conditioning`
checks the conditions against the guidance's weights, warns about prompts the text encoder cannot read
whole, encodes each distinct prompt once through the family's ``encode_prompts`` and stacks the
groups (∅ first) into a :class:`~t2i.trajectory.Conditioning`. A policy mixes it in; it needs the
policy's ``encode_prompts``, ``prompt_overflow``, ``device`` and a ``_warned_long_prompts`` set.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from t2i.guidance import Guidance
from t2i.prompts import check_conditions
from t2i.trajectory import Conditioning

__all__ = ["ConditioningMixin"]

# the warnings keep the logger name they always had, so filters users set on "t2i.policy" still apply
logger = logging.getLogger("t2i.policy")


class ConditioningMixin:
    """Conditioning of a batch for a guidance (see the module docstring for what it needs)."""

    def warn_long_prompts(self, prompts: Sequence[str]) -> int:
        """Warn once per distinct prompt the text encoder cannot read whole (token count, words dropped).

        Called on every prompt the policy encodes (:meth:`build_conditioning`), so generation and
        training share it; a prompt already warned about in this policy's lifetime stays silent.
        Returns how many new warnings were logged.
        """
        warned = 0
        for prompt in dict.fromkeys(prompts):
            if prompt in self._warned_long_prompts:
                continue
            overflow = self.prompt_overflow(prompt)
            if overflow is not None:
                self._warned_long_prompts.add(prompt)
                logger.warning("%s", overflow.describe(prompt))
                warned += 1
        return warned

    def build_conditioning(
        self,
        conditions: Sequence[Sequence[str]],
        guidance: Guidance,
        negative_prompt: str | Sequence[str] = "",
    ) -> Conditioning:
        """Encode the prompts of each condition c_j (and ∅) for ``guidance``'s weights.

        ``conditions[j]`` is the list of B prompts for weight ``guidance.weights[j]``. Only
        conditions with a non-zero weight are encoded and evaluated.
        """
        negatives = check_conditions(conditions, guidance, negative_prompt)
        texts = ([negatives] if guidance.needs_unconditional else []) + [list(conditions[j]) for j in guidance.active]
        flat = [p for group in texts for p in group]
        self.warn_long_prompts(flat)
        # one text-encoder call over the distinct prompts of all groups (a batch repeats each prompt
        # images_per_prompt times, and ∅ is one prompt), then each row picked back out
        position = {p: i for i, p in enumerate(dict.fromkeys(flat))}
        encoded = self.encode_prompts(list(position))
        rows = torch.tensor([position[p] for p in flat], device=self.device)
        per_row = {key: value[rows] for key, value in encoded.items()}
        size = len(texts[0])
        groups = [{key: value[g * size : (g + 1) * size] for key, value in per_row.items()} for g in range(len(texts))]
        weights = tuple(guidance.weights[j] for j in guidance.active)
        return Conditioning.from_groups(groups, weights, has_unconditional=guidance.needs_unconditional)
