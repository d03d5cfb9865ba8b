"""The prompt expansion network (PEN): a causal LM p_φ(ĉ | c) used as an RL policy.

Notation (Parrot, Lee et al. 2024): c is the original user prompt, ĉ an expansion of it,
φ the expander's weights and p_ref the SFT reference. ``Expansions.log_probs[i, t]`` is
log p_φ(ĉ_{i,t} | template(c_i), ĉ_{i,<t}) under the *sampling* distribution (the logits
divided by the temperature, no top-p/top-k truncation; ``decoding``). The expansion ends with
the tokenizer's EOS when the model emitted it within ``max_new_tokens`` (77 by default,
as in Parrot; the downstream CLIP text encoder also reads at most 77 tokens).

The model is kept in eval mode (dropout off) so that a recomputed log-prob equals the
sampled one; trainers that want dropout (SFT) switch it on themselves.

``PromptExpander`` holds the model, its tokenizer, the sampling settings and the reference
p_ref; the work is done by one module per job: ``loading`` (weights in and out, LoRA),
``encoding`` (text ↔ tokens, over-long prompts), ``decoding`` (sampling, beam search),
``scoring`` (log-probs, KL) and ``rl`` (the policy-gradient loss).
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import torch
from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from prompt_expander.config import ExpanderSamplingConfig
from prompt_expander.decoding import beam_batch, sample_batch
from prompt_expander.encoding import context_length, encode_expansions, encode_prompts
from prompt_expander.expansions import Expansions, concat_expansions
from prompt_expander.loading import add_lora, load_causal_lm, save_merged
from prompt_expander.rl import PolicyGradientConfig, PolicyGradientLoss, policy_gradient_loss
from prompt_expander.scoring import expansion_logits, kl_divergence, token_log_probs
from prompt_expander.template import check_prompts
from t2i.lora import LoraSettings

__all__ = ["PromptExpander"]


def _check_batching(name: str, count: int, batch_size: int) -> None:
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"{name}={count!r} must be a positive integer")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be >= 1")


class PromptExpander:
    """A causal LM with a tokenizer, sampling expansions and scoring them (see module docstring)."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        config: ExpanderSamplingConfig | None = None,
        lora: LoraSettings | None = None,
    ):
        self.config = config or ExpanderSamplingConfig()
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos_token; the expander needs one to end expansions")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer = tokenizer
        self.reference_model: PreTrainedModel | None = None
        if lora is not None:  # p_ref is the base with the adapters switched off: no second copy of the weights.
            model = add_lora(model, lora)
        else:
            self.reference_model = copy.deepcopy(model).eval().requires_grad_(False)
        # RL log-probs must be deterministic functions of the weights: no dropout (eval mode).
        self.model = model.eval()

    # ----- weights: loading, saving, device, the reference -----------------------------------
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        config: ExpanderSamplingConfig | None = None,
        lora: LoraSettings | None = None,
        torch_dtype: torch.dtype = torch.float32,
    ) -> PromptExpander:
        """Load a causal LM and its tokenizer by hub id or local directory."""
        model, tokenizer = load_causal_lm(name_or_path, torch_dtype)
        return cls(model, tokenizer, config, lora)

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write a stock transformers model directory (LoRA merged into the weights) and the tokenizer.

        The result loads with ``transformers.pipeline("text-generation", model=directory)``.
        """
        return save_merged(self.model, self.tokenizer, directory)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def context_length(self) -> int:
        return context_length(self.model.config)

    def to(self, device: str | torch.device) -> PromptExpander:
        self.model.to(device)
        if self.reference_model is not None:
            self.reference_model.to(device)
        return self

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    @contextlib.contextmanager
    def using_reference(self) -> Iterator[None]:
        """Everything inside (sampling, beam search, log-probs) uses the reference p_ref instead of p_φ.

        With LoRA the adapters are switched off; otherwise the frozen copy taken at construction
        stands in for the trained model until the block ends (also when it raises).
        """
        if isinstance(self.model, PeftModel):
            with self.model.disable_adapter():
                yield
            return
        trained = self.model
        self.model = self.reference_model if self.reference_model is not None else copy.deepcopy(trained)
        try:
            yield
        finally:
            self.model = trained

    # ----- text ↔ tokens (encoding) ------------------------------------------------------------
    def encode_prompts(self, prompts: str | Sequence[str]) -> list[list[int]]:
        """Token ids of the templated prompts, each checked against the context length."""
        return encode_prompts(self.tokenizer, self.config, self.context_length, prompts)

    def encode(self, prompts: Sequence[str], texts: Sequence[str]) -> Expansions:
        """Expansions for given (prompt, expansion text) pairs, without log-probs (``encoding.encode_expansions``)."""
        return encode_expansions(self.tokenizer, self.config, self.context_length, prompts, texts)

    # ----- generation (decoding) ---------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self,
        prompts: str | Sequence[str],
        n: int = 1,
        *,
        temperature: float | None = None,
        top_p: float | None = None,
        max_new_tokens: int | None = None,
        batch_size: int = 64,
        generator_seed: int | None = None,
    ) -> Expansions:
        """n expansions per prompt (rows ordered prompt-major: c_0 × n, c_1 × n, …), with log-probs.

        Overrides of temperature / top_p / max_new_tokens apply to this call only.
        """
        prompts = check_prompts(prompts)
        _check_batching("n", n, batch_size)
        overrides = {k: v for k, v in dict(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens).items() if v is not None}
        config = replace(self.config, **overrides)
        if generator_seed is not None:
            torch.manual_seed(generator_seed)
        repeated = [p for p in prompts for _ in range(n)]
        chunks = [
            sample_batch(self.model, self.tokenizer, config, repeated[i : i + batch_size]) for i in range(0, len(repeated), batch_size)
        ]
        return concat_expansions(chunks, self.tokenizer.pad_token_id)

    @torch.no_grad()
    def beam_search(
        self,
        prompts: str | Sequence[str],
        num_beams: int = 4,
        *,
        max_new_tokens: int | None = None,
        batch_size: int = 64,
    ) -> Expansions:
        """The near-greedy expansion of each prompt, as Promptist evaluates: the best of ``num_beams``
        beams (``transformers`` ``generate(num_beams=…)``, no sampling; ``num_beams`` 1 is greedy).

        Deterministic given the weights; the result carries no per-token log-probs (beam scores are
        not the policy's sampling distribution), use :meth:`log_probs` for those.
        """
        prompts = check_prompts(prompts)
        _check_batching("num_beams", num_beams, batch_size)
        config = self.config if max_new_tokens is None else replace(self.config, max_new_tokens=max_new_tokens)
        chunks = [
            beam_batch(self.model, self.tokenizer, config, prompts[i : i + batch_size], num_beams)
            for i in range(0, len(prompts), batch_size)
        ]
        return concat_expansions(chunks, self.tokenizer.pad_token_id)

    # ----- scoring -----------------------------------------------------------------------------
    def log_probs(self, expansions: Expansions) -> torch.Tensor:
        """Per-token log p_φ(ĉ_t | c, ĉ_<t) under the current weights, (N, L), 0 on padding, with grad."""
        return token_log_probs(expansion_logits(self.model, expansions, self.config.temperature), expansions)

    def kl_to_reference(self, expansions: Expansions, *, logits: torch.Tensor | None = None) -> torch.Tensor:
        """Σ_t KL(p_φ(·|c, ĉ_<t) ‖ p_ref(·|c, ĉ_<t)) over each expansion's tokens, (N,), with grad.

        The exact per-token KL over the vocabulary along sampled prefixes; its expectation
        under ĉ ~ p_φ is the sequence-level KL(p_φ(·|c) ‖ p_ref(·|c)). ``logits``: p_φ's tempered
        logits of ``expansions`` when already computed (one forward pass fewer).
        """
        if logits is None:
            logits = expansion_logits(self.model, expansions, self.config.temperature)
        with torch.no_grad(), self.using_reference():
            reference_logits = expansion_logits(self.model, expansions, self.config.temperature)
        return kl_divergence(logits, reference_logits, expansions.attention_mask)

    def policy_gradient_loss(
        self,
        expansions: Expansions,
        rewards: torch.Tensor,
        config: PolicyGradientConfig | None = None,
        groups: torch.Tensor | None = None,
    ) -> PolicyGradientLoss:
        """The RL loss for sampled ``expansions`` and their rewards (N,), ready for ``.backward()``
        (``groups`` (N,): the original prompt of each expansion, for the ``group_mean`` baseline).

        One forward pass of the policy gives both the log-probs and the KL to the reference.
        """
        config = config or PolicyGradientConfig()
        logits = expansion_logits(self.model, expansions, self.config.temperature)
        log_probs = token_log_probs(logits, expansions)
        kl = self.kl_to_reference(expansions, logits=logits) if config.kl_weight > 0 else None
        old = None if expansions.log_probs is None else expansions.log_probs.to(log_probs.device)
        return policy_gradient_loss(
            log_probs,
            expansions.attention_mask.to(log_probs.device),
            rewards.to(log_probs.device),
            config,
            old_log_probs=old,
            kl=kl,
            groups=groups,
        )
