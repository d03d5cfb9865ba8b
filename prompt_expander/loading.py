"""Loading and saving the expander's causal LM, and wrapping it in LoRA adapters (peft)."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from t2i.lora import LoraSettings

__all__ = ["add_lora", "gpt2_lora_settings", "load_causal_lm", "save_merged"]


def gpt2_lora_settings(rank: int = 8, alpha: float | None = None) -> LoraSettings:
    """LoRA on GPT-2's fused attention and output projections (``c_attn``, ``c_proj``)."""
    return LoraSettings(rank=rank, alpha=alpha, target_modules=("c_attn", "c_proj"))


def load_causal_lm(
    name_or_path: str | os.PathLike, torch_dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal LM and its tokenizer by hub id or local directory; a missing directory is refused by name."""
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
    return model, tokenizer


def add_lora(model: PreTrainedModel, lora: LoraSettings) -> PeftModel:
    """``model`` frozen, with trainable LoRA adapters (no dropout) named ``lora.adapter_name``."""
    model.requires_grad_(False)
    peft_config = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha if lora.alpha is not None else lora.rank,
        target_modules=list(lora.target_modules),
        lora_dropout=0.0,
    )
    return get_peft_model(model, peft_config, adapter_name=lora.adapter_name)


def save_merged(model: PreTrainedModel | PeftModel, tokenizer: PreTrainedTokenizerBase, directory: str | os.PathLike) -> Path:
    """Write a stock transformers model directory (LoRA merged into a copy of the weights) and the tokenizer.

    The result loads with ``transformers.pipeline("text-generation", model=directory)``.
    """
    directory = Path(directory)
    if isinstance(model, PeftModel):
        model = copy.deepcopy(model).merge_and_unload()
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory
