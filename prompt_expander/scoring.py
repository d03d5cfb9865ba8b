"""Scoring given expansions under a model: per-token log-probs and the exact per-token KL.

Logits are tempered (divided by the sampling temperature) so that a recomputed log-prob
equals the one recorded at sampling.
"""

from __future__ import annotations

import torch

from prompt_expander.expansions import Expansions

__all__ = ["expansion_logits", "kl_divergence", "token_log_probs"]


def expansion_logits(model: torch.nn.Module, expansions: Expansions, temperature: float) -> torch.Tensor:
    """Tempered logits predicting each expansion token, (N, L, V)."""
    device = next(model.parameters()).device
    input_ids = torch.cat([expansions.prompt_ids, expansions.token_ids], 1).to(device)
    # Positions after the prompt count on regardless of EOS, as in generate(); causal
    # attention means later (padding) tokens never change an earlier token's logits.
    mask = torch.cat([expansions.prompt_mask, torch.ones_like(expansions.token_ids)], 1).to(device)
    position_ids = (mask.cumsum(1) - 1).masked_fill(mask == 0, 0)
    logits = model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids).logits
    num_prompt = expansions.prompt_ids.shape[1]
    return logits[:, num_prompt - 1 : -1].float() / temperature


def token_log_probs(logits: torch.Tensor, expansions: Expansions) -> torch.Tensor:
    """log-prob of each expansion token under ``logits`` (N, L, V), (N, L), 0 on padding."""
    token_ids = expansions.token_ids.to(logits.device)
    log_probs = torch.log_softmax(logits, -1).gather(-1, token_ids[..., None]).squeeze(-1)
    return log_probs * expansions.attention_mask.to(logits.device)


def kl_divergence(logits: torch.Tensor, reference_logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Σ_t KL(p(·|t) ‖ q(·|t)) over each row's unmasked positions, (N,): p from ``logits``, q from ``reference_logits``."""
    log_p = torch.log_softmax(logits, -1)
    log_q = torch.log_softmax(reference_logits, -1)
    per_token = (log_p.exp() * (log_p - log_q)).sum(-1)
    return (per_token * attention_mask.to(per_token.device)).sum(1)
