"""A GPT-2-family expander from scratch: a byte-level BPE tokenizer trained with ``tokenizers``
and a randomly initialised ``GPT2LMHeadModel`` of a chosen size.

Used when no pretrained LM is at hand (offline tests, the CPU benchmarks). The tokenizer is
GPT-2's kind (byte-level BPE, ``<|endoftext|>`` as BOS/EOS/pad), so everything downstream —
TRL's SFTTrainer, ``transformers.pipeline`` — treats it like the real GPT-2 tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from t2i.random_init import build_random_model

__all__ = ["TinyGPT2Config", "train_bpe_tokenizer", "build_gpt2", "build_random_lm", "EOS_TOKEN"]

EOS_TOKEN = "<|endoftext|>"


@dataclass
class TinyGPT2Config:
    """Sizes of a GPT-2 trained from scratch (defaults: ~0.3M parameters plus embeddings)."""

    n_layer: int = field(default=2, metadata={"help": "transformer blocks"})
    n_embd: int = field(default=64, metadata={"help": "hidden width"})
    n_head: int = field(default=4, metadata={"help": "attention heads (must divide n_embd)"})
    n_positions: int = field(default=192, metadata={"help": "context length (template + prompt + 77 new tokens)"})
    vocab_size: int = field(default=2000, metadata={"help": "BPE vocabulary size to train"})
    seed: int = field(default=0, metadata={"help": "seed of the random initialisation"})

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_head={self.n_head} must divide n_embd={self.n_embd}")
        if self.vocab_size < 300:
            raise ValueError(f"vocab_size={self.vocab_size} must be >= 300 (256 bytes + special tokens + merges)")


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 2000, model_max_length: int = 192) -> PreTrainedTokenizerFast:
    """Train a GPT-2-style byte-level BPE tokenizer on ``texts``."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS_TOKEN], show_progress=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        model_max_length=model_max_length,
    )


def build_gpt2(tokenizer: PreTrainedTokenizerFast, config: TinyGPT2Config | None = None) -> GPT2LMHeadModel:
    """A randomly initialised GPT-2 whose vocabulary matches ``tokenizer``."""
    config = config or TinyGPT2Config()
    torch.manual_seed(config.seed)
    model_config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=config.n_positions,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(model_config)


def build_random_lm(architecture: str = "gpt2", seed: int = 0) -> GPT2LMHeadModel:
    """A full-size causal LM of a shipped architecture (``gpt2``: 124M, Promptist's size) with random weights.

    Its vocabulary is the architecture's (50257 for GPT-2); a smaller tokenizer's ids are a subset of it.
    """
    return build_random_model(architecture, seed=seed)
