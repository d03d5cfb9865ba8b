"""The prompt expansion network (PEN): a causal LM p_φ(ĉ | c) used as an RL policy.

Notation (Parrot, Lee et al. 2024): c is the original user prompt, ĉ an expansion of it,
φ the expander's weights and p_ref the SFT reference. ``Expansions.log_probs[i, t]`` is
log p_φ(ĉ_{i,t} | template(c_i), ĉ_{i,<t}) under the *sampling* distribution, i.e. the
model's logits divided by the temperature, without top-p/top-k truncation (truncation is
a sampling device, not part of the policy whose gradient we take). The expansion ends with
the tokenizer's EOS when the model emitted it within ``max_new_tokens`` (77 by default,
as in Parrot; the downstream CLIP text encoder also reads at most 77 tokens).

The model is kept in eval mode (dropout off) so that a recomputed log-prob equals the
sampled one; trainers that want dropout (SFT) switch it on themselves.

Over-long prompts: the templated prompt plus ``max_new_tokens`` must fit the model's
context (``n_positions``). By default a longer prompt is refused with an error naming it;
with ``ExpanderSamplingConfig.truncate_prompts`` the *original prompt's* tokens are cut from the
right (the instruction around it is kept) until it fits.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from prompt_expander.rl import PolicyGradientConfig, PolicyGradientLoss, policy_gradient_loss
from prompt_expander.template import PARROT_TEMPLATE, check_prompts, check_template, completion_prefix, render_input
from t2i.lora import LoraSettings

__all__ = ["ExpanderSamplingConfig", "Expansions", "PromptExpander", "gpt2_lora_settings"]


@dataclass
class ExpanderSamplingConfig:
    """Sampling settings of the expander."""

    template: str = field(default=PARROT_TEMPLATE, metadata={"help": "instruction template with a {prompt} slot"})
    max_new_tokens: int = field(default=77, metadata={"help": "cap on expansion tokens (Parrot: 77)"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature; log-probs use the same one"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass (1.0 = off)"})
    truncate_prompts: bool = field(
        default=False,
        metadata={"help": "cut over-long original prompts to fit the context instead of raising an error"},
    )

    def __post_init__(self) -> None:
        check_template(self.template)
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens!r} must be a positive integer")
        if not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature!r} must be > 0")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p!r} must be in (0, 1]")


def gpt2_lora_settings(rank: int = 8, alpha: float | None = None) -> LoraSettings:
    """LoRA on GPT-2's fused attention and output projections (``c_attn``, ``c_proj``)."""
    return LoraSettings(rank=rank, alpha=alpha, target_modules=("c_attn", "c_proj"))


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


def _pad_right(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(1, max(len(r) for r in rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def _pad_left(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids, mask = _pad_right([r[::-1] for r in rows], pad_id)
    return ids.flip(1), mask.flip(1)


def _first_eos_mask(token_ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """1 on every token up to and including the first EOS of each row, 0 after it."""
    is_eos = (token_ids == eos_id).long()
    eos_before = is_eos.cumsum(1) - is_eos  # EOS tokens strictly before position t
    return (eos_before == 0).long()


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
        if lora is not None:
            # p_ref is the base with the adapters switched off: no second copy of the weights.
            model.requires_grad_(False)
            peft_config = LoraConfig(
                r=lora.rank,
                lora_alpha=lora.alpha if lora.alpha is not None else lora.rank,
                target_modules=list(lora.target_modules),
                lora_dropout=0.0,
            )
            model = get_peft_model(model, peft_config, adapter_name=lora.adapter_name)
        else:
            self.reference_model = copy.deepcopy(model).eval().requires_grad_(False)
        # RL log-probs must be deterministic functions of the weights: no dropout (eval mode).
        self.model = model.eval()

    # ----- construction / saving ---------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        config: ExpanderSamplingConfig | None = None,
        lora: LoraSettings | None = None,
        torch_dtype: torch.dtype = torch.float32,
    ) -> PromptExpander:
        """Load a causal LM and its tokenizer by hub id or local directory."""
        text = os.fspath(name_or_path)
        path = Path(text).expanduser()
        looks_local = path.is_absolute() or text.startswith((".", "~")) or text.count("/") > 1
        if looks_local and not path.is_dir():
            raise FileNotFoundError(f"no model directory at {text!r}")
        if path.is_dir() and not (path / "config.json").is_file():
            raise FileNotFoundError(f"{text!r} is not a transformers model directory (no config.json in it)")
        source = str(path) if path.is_dir() else text
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype)
        return cls(model, tokenizer, config, lora)

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write a stock transformers model directory (LoRA merged into the weights) and the tokenizer.

        The result loads with ``transformers.pipeline("text-generation", model=directory)``.
        """
        directory = Path(directory)
        model = self.model
        if isinstance(model, PeftModel):
            model = copy.deepcopy(model).merge_and_unload()
        model.save_pretrained(directory, safe_serialization=True)
        self.tokenizer.save_pretrained(directory)
        return directory

    # ----- basic properties ----------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def context_length(self) -> int:
        config = self.model.config
        length = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
        if length is None:
            raise ValueError("the model config names no context length (n_positions / max_position_embeddings)")
        return int(length)

    def to(self, device: str | torch.device) -> PromptExpander:
        self.model.to(device)
        if self.reference_model is not None:
            self.reference_model.to(device)
        return self

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    # ----- tokenization --------------------------------------------------------------------
    def encode_prompts(self, prompts: str | Sequence[str]) -> list[list[int]]:
        """Token ids of the templated prompts, each checked against the context length."""
        prompts = check_prompts(prompts)
        budget = self.context_length - self.config.max_new_tokens
        rows = []
        for i, prompt in enumerate(prompts):
            ids = self._encode_rendered(prompt)
            if len(ids) > budget:
                if not self.config.truncate_prompts:
                    raise ValueError(
                        f"prompts[{i}] ({prompt[:60]!r}...) is {len(ids)} tokens with the template, but the model's "
                        f"context of {self.context_length} leaves {budget} after max_new_tokens="
                        f"{self.config.max_new_tokens}: shorten it, lower max_new_tokens, or set truncate_prompts=True"
                    )
                ids = self._truncated_prompt_ids(prompt, len(ids) - budget)
            rows.append(ids)
        return rows

    def _encode_rendered(self, prompt: str) -> list[int]:
        # The tokenizer's own special tokens (e.g. a BOS) are added, exactly as TRL's SFTTrainer
        # tokenizes the prompt column, so sampling sees the context SFT trained on.
        return self.tokenizer(render_input(self.config.template, prompt))["input_ids"]

    def _truncated_prompt_ids(self, prompt: str, excess: int) -> list[int]:
        """Drop ``excess`` tokens (plus any needed) from the end of the original prompt only."""
        prompt_ids = self.tokenizer(prompt.strip(), add_special_tokens=False)["input_ids"]
        keep = len(prompt_ids) - excess
        budget = self.context_length - self.config.max_new_tokens
        while keep > 0:
            short = self.tokenizer.decode(prompt_ids[:keep])
            ids = self._encode_rendered(short)
            if len(ids) <= budget and short.strip().rstrip("."):
                return ids
            keep -= 1
        raise ValueError(
            f"the template alone does not fit the context of {self.context_length} with max_new_tokens="
            f"{self.config.max_new_tokens}: lower max_new_tokens or use a shorter template"
        )

    def encode(self, prompts: Sequence[str], texts: Sequence[str]) -> Expansions:
        """Expansions for given (prompt, expansion text) pairs, without log-probs.

        Each text is tokenized after the template's boundary space, cut to ``max_new_tokens − 1``
        tokens and ended with EOS, as a sampled expansion that stopped would be.
        """
        prompts = check_prompts(prompts)
        if len(texts) != len(prompts):
            raise ValueError(f"got {len(prompts)} prompts but {len(texts)} expansions; give one expansion per prompt")
        prompt_ids, prompt_mask = _pad_left(self.encode_prompts(prompts), self.tokenizer.pad_token_id)
        prefix = completion_prefix(self.config.template)
        rows = []
        for text in texts:
            ids = self.tokenizer(prefix + text.strip(), add_special_tokens=False)["input_ids"]
            rows.append(ids[: self.config.max_new_tokens - 1] + [self.tokenizer.eos_token_id])
        token_ids, attention_mask = _pad_right(rows, self.tokenizer.pad_token_id)
        return Expansions(list(prompts), [t.strip() for t in texts], prompt_ids, prompt_mask, token_ids, attention_mask)

    def decode(self, token_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[str]:
        return [self.tokenizer.decode(ids[mask.bool()], skip_special_tokens=True).strip() for ids, mask in zip(token_ids, attention_mask)]

    # ----- sampling --------------------------------------------------------------------------
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
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n={n!r} must be a positive integer")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be >= 1")
        overrides = {k: v for k, v in dict(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens).items() if v is not None}
        with self._config_override(overrides):
            if generator_seed is not None:
                torch.manual_seed(generator_seed)
            repeated = [p for p in prompts for _ in range(n)]
            chunks = [self._sample_chunk(repeated[i : i + batch_size]) for i in range(0, len(repeated), batch_size)]
        return _concat(chunks, self.tokenizer.pad_token_id)

    @contextlib.contextmanager
    def _config_override(self, overrides: dict) -> Iterator[None]:
        saved = self.config
        self.config = replace(saved, **overrides) if overrides else saved
        try:
            yield
        finally:
            self.config = saved

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
        if not isinstance(num_beams, int) or num_beams < 1:
            raise ValueError(f"num_beams={num_beams!r} must be a positive integer")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be >= 1")
        overrides = {} if max_new_tokens is None else {"max_new_tokens": max_new_tokens}
        with self._config_override(overrides):
            chunks = [self._beam_chunk(prompts[i : i + batch_size], num_beams) for i in range(0, len(prompts), batch_size)]
        return _concat(chunks, self.tokenizer.pad_token_id)

    def beam_generation_config(self, num_beams: int) -> GenerationConfig:
        """The ``generate`` settings of :meth:`beam_search` (one returned sequence per prompt)."""
        return GenerationConfig(
            do_sample=False,
            num_beams=num_beams,
            num_return_sequences=1,
            max_new_tokens=self.config.max_new_tokens,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
            bos_token_id=self.tokenizer.bos_token_id,
        )

    def _beam_chunk(self, prompts: list[str], num_beams: int) -> Expansions:
        pad_id, eos_id = self.tokenizer.pad_token_id, self.tokenizer.eos_token_id
        prompt_ids, prompt_mask = _pad_left(self.encode_prompts(prompts), pad_id)
        prompt_ids, prompt_mask = prompt_ids.to(self.device), prompt_mask.to(self.device)
        sequences = self.model.generate(
            input_ids=prompt_ids, attention_mask=prompt_mask, generation_config=self.beam_generation_config(num_beams)
        )
        token_ids = sequences[:, prompt_ids.shape[1] :]
        mask = _first_eos_mask(token_ids, eos_id)
        token_ids = token_ids.masked_fill(mask == 0, pad_id)
        return Expansions(list(prompts), self.decode(token_ids, mask), prompt_ids, prompt_mask, token_ids, mask)

    def _sample_chunk(self, prompts: list[str]) -> Expansions:
        pad_id, eos_id = self.tokenizer.pad_token_id, self.tokenizer.eos_token_id
        prompt_ids, prompt_mask = _pad_left(self.encode_prompts(prompts), pad_id)
        prompt_ids, prompt_mask = prompt_ids.to(self.device), prompt_mask.to(self.device)
        generation = GenerationConfig(
            do_sample=True,
            temperature=self.config.temperature,
            top_p=self.config.top_p,
            top_k=0,
            max_new_tokens=self.config.max_new_tokens,
            eos_token_id=eos_id,
            pad_token_id=pad_id,
            bos_token_id=self.tokenizer.bos_token_id,
            return_dict_in_generate=True,
            output_logits=True,
        )
        out = self.model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, generation_config=generation)
        token_ids = out.sequences[:, prompt_ids.shape[1] :]
        logits = torch.stack(out.logits, dim=1).float() / self.config.temperature  # raw, unprocessed scores
        log_probs = torch.log_softmax(logits, -1).gather(-1, token_ids[..., None]).squeeze(-1)
        mask = _first_eos_mask(token_ids, eos_id)
        token_ids = token_ids.masked_fill(mask == 0, pad_id)
        return Expansions(
            prompts=list(prompts),
            texts=self.decode(token_ids, mask),
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            token_ids=token_ids,
            attention_mask=mask,
            log_probs=log_probs * mask,
        )

    # ----- scoring ---------------------------------------------------------------------------
    def _expansion_logits(self, model: torch.nn.Module, expansions: Expansions) -> torch.Tensor:
        """Tempered logits predicting each expansion token, (N, L, V)."""
        device = self.device
        input_ids = torch.cat([expansions.prompt_ids, expansions.token_ids], 1).to(device)
        # Positions after the prompt count on regardless of EOS, as in generate(); causal
        # attention means later (padding) tokens never change an earlier token's logits.
        mask = torch.cat([expansions.prompt_mask, torch.ones_like(expansions.token_ids)], 1).to(device)
        position_ids = (mask.cumsum(1) - 1).masked_fill(mask == 0, 0)
        logits = model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids).logits
        num_prompt = expansions.prompt_ids.shape[1]
        return logits[:, num_prompt - 1 : -1].float() / self.config.temperature

    def log_probs(self, expansions: Expansions) -> torch.Tensor:
        """Per-token log p_φ(ĉ_t | c, ĉ_<t) under the current weights, (N, L), 0 on padding, with grad."""
        return self._token_log_probs(self._expansion_logits(self.model, expansions), expansions)

    @staticmethod
    def _token_log_probs(logits: torch.Tensor, expansions: Expansions) -> torch.Tensor:
        token_ids = expansions.token_ids.to(logits.device)
        log_probs = torch.log_softmax(logits, -1).gather(-1, token_ids[..., None]).squeeze(-1)
        return log_probs * expansions.attention_mask.to(logits.device)

    @contextlib.contextmanager
    def reference(self) -> Iterator[torch.nn.Module]:
        """The reference p_ref: the LoRA base with adapters off, or the frozen copy taken at construction."""
        if isinstance(self.model, PeftModel):
            with self.model.disable_adapter():
                yield self.model
        else:
            yield self.reference_model

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

    def kl_to_reference(self, expansions: Expansions) -> torch.Tensor:
        """Σ_t KL(p_φ(·|c, ĉ_<t) ‖ p_ref(·|c, ĉ_<t)) over each expansion's tokens, (N,), with grad.

        The exact per-token KL over the vocabulary along sampled prefixes; its expectation
        under ĉ ~ p_φ is the sequence-level KL(p_φ(·|c) ‖ p_ref(·|c)).
        """
        return self._kl_from_logits(self._expansion_logits(self.model, expansions), expansions)

    def _kl_from_logits(self, logits: torch.Tensor, expansions: Expansions) -> torch.Tensor:
        with torch.no_grad(), self.reference() as reference:
            ref_logits = self._expansion_logits(reference, expansions)
        log_p = torch.log_softmax(logits, -1)
        log_q = torch.log_softmax(ref_logits, -1)
        per_token = (log_p.exp() * (log_p - log_q)).sum(-1)
        return (per_token * expansions.attention_mask.to(per_token.device)).sum(1)

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
        logits = self._expansion_logits(self.model, expansions)
        log_probs = self._token_log_probs(logits, expansions)
        kl = self._kl_from_logits(logits, expansions) if config.kl_weight > 0 else None
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


def _concat(chunks: list[Expansions], pad_id: int) -> Expansions:
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
