"""Expansions ĉ of original prompts c as token tensors, and the padding that batches them.

Prompts are left-padded (generation continues from the right edge), expansions right-padded;
an expansion ends at its first EOS (kept), everything after it is padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

__all__ = ["Expansions", "concat_expansions", "first_eos_mask", "pad_left", "pad_right"]


@dataclass
class Expansions:
    """N expansions ĉ of N original prompts c (a prompt repeated n times when n > 1)."""

    prompts: list[str]  # original prompts c, one per row
    texts: list[str]  # decoded expansions ĉ
    prompt_ids: torch.Tensor  # (N, P) templated prompt, left-padded
    prompt_mask: torch.Tensor  # (N, P) 1 on prompt tokens
    token_ids: torch.Tensor  # (N, L) expansion tokens (incl. EOS when emitted), right-padded
    attention_mask: torch.Tensor  # (N, L) 1 on expansion tokens
    log_probs: torch.Tensor | None = None  # (N, L) per-token log p_φ at sampling, 0 on padding

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def lengths(self) -> torch.Tensor:
        """Number of expansion tokens per row, (N,)."""
        return self.attention_mask.sum(1)

    def sequence_log_probs(self) -> torch.Tensor:
        """log p_φ(ĉ_i | c_i) at sampling time, (N,)."""
        if self.log_probs is None:
            raise ValueError("these expansions carry no log-probs; use PromptExpander.log_probs(expansions)")
        return (self.log_probs * self.attention_mask).sum(1)

    def select(self, index: torch.Tensor | Sequence[int]) -> Expansions:
        """The rows ``index`` (e.g. a selected subset for the update)."""
        index = torch.as_tensor(index, dtype=torch.long)
        picked = index.tolist()
        return replace(
            self,
            prompts=[self.prompts[i] for i in picked],
            texts=[self.texts[i] for i in picked],
            prompt_ids=self.prompt_ids[index],
            prompt_mask=self.prompt_mask[index],
            token_ids=self.token_ids[index],
            attention_mask=self.attention_mask[index],
            log_probs=None if self.log_probs is None else self.log_probs[index],
        )


def pad_right(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows as (ids, mask), (N, width), padded after each row's tokens."""
    width = max(1, max(len(r) for r in rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def pad_left(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows as (ids, mask), (N, width), padded before each row's tokens."""
    ids, mask = pad_right([r[::-1] for r in rows], pad_id)
    return ids.flip(1), mask.flip(1)


def first_eos_mask(token_ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """1 on every token up to and including the first EOS of each row, 0 after it."""
    is_eos = (token_ids == eos_id).long()
    eos_before = is_eos.cumsum(1) - is_eos  # EOS tokens strictly before position t
    return (eos_before == 0).long()


def concat_expansions(chunks: list[Expansions], pad_id: int) -> Expansions:
    """The rows of all ``chunks`` in order, re-padded to common widths."""
    if len(chunks) == 1:
        return chunks[0]

    def cat(tensors: list[torch.Tensor], left: bool, value: int | float) -> torch.Tensor:
        width = max(t.shape[1] for t in tensors)
        padded = [F.pad(t, (width - t.shape[1], 0) if left else (0, width - t.shape[1]), value=value) for t in tensors]
        return torch.cat(padded, 0)

    return Expansions(
        prompts=[p for c in chunks for p in c.prompts],
        texts=[t for c in chunks for t in c.texts],
        prompt_ids=cat([c.prompt_ids for c in chunks], True, pad_id),
        prompt_mask=cat([c.prompt_mask for c in chunks], True, 0),
        token_ids=cat([c.token_ids for c in chunks], False, pad_id),
        attention_mask=cat([c.attention_mask for c in chunks], False, 0),
        log_probs=None if any(c.log_probs is None for c in chunks) else cat([c.log_probs for c in chunks], False, 0.0),
    )
