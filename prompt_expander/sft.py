"""Supervised fine-tuning of the expander on Promptist-format pairs with TRL's ``SFTTrainer``.

The pairs are rendered with the expander template (:func:`prompt_expander.data.to_sft_dataset`)
into TRL's prompt/completion format, and the loss is on completion tokens only
(``completion_only_loss=True``). Without ``--model`` a GPT-2 is built from scratch with a
BPE tokenizer trained on the training pairs (and the template) by ``tokenizers``.

CLI::

    python -m prompt_expander.sft --output_dir runs/expander_sft --max_steps 500
    python -m prompt_expander.sft --config sft.yaml --learning_rate 1e-4   # YAML + overrides
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from datasets import Dataset, disable_progress_bars, enable_progress_bars, is_progress_bar_enabled
from transformers import PrinterCallback
from transformers.utils import logging as transformers_logging
from trl import SFTConfig, SFTTrainer

from parrot_base.cli import run_cli
from parrot_base.config import parse_config
from prompt_expander.config import ExpanderSamplingConfig
from prompt_expander.data import (
    DiffusionDBPairsConfig,
    build_diffusiondb_pairs,
    keeps_subject_and_adds_modifiers,
    load_pairs,
    subject_word_recall,
    to_sft_dataset,
)
from prompt_expander.expander import PromptExpander
from prompt_expander.loading import gpt2_lora_settings
from prompt_expander.scratch import TinyGPT2Config, build_gpt2, train_bpe_tokenizer
from prompt_expander.template import PARROT_TEMPLATE

__all__ = ["SFTSettings", "SFTResult", "run_sft", "held_out_loss", "modifier_keep_rate", "main"]


@dataclass
class SFTSettings:
    """Settings of one SFT run (every field is also a CLI flag)."""

    output_dir: str = field(default="runs/expander_sft", metadata={"help": "where the model directory is written"})
    model: str | None = field(default=None, metadata={"help": "hub id or local dir of a causal LM; None = GPT-2 from scratch"})
    train_data: str | None = field(
        default=None, metadata={"help": "pairs file (.jsonl/.csv/.tsv), dataset dir or hub name; None = DiffusionDB"}
    )
    eval_data: str | None = field(default=None, metadata={"help": "held-out pairs (same kinds); None = DiffusionDB test"})
    diffusiondb_path: str | None = field(
        default=None, metadata={"help": "DiffusionDB prompt file; None = ../shared/data/diffusiondb_prompts.txt"}
    )
    max_train_rows: int | None = field(default=None, metadata={"help": "use at most N training pairs"})
    max_eval_rows: int | None = field(default=200, metadata={"help": "use at most N held-out pairs"})
    template: str = field(default=PARROT_TEMPLATE, metadata={"help": "instruction template with a {prompt} slot"})
    max_steps: int = field(default=500, metadata={"help": "optimiser steps"})
    batch_size: int = field(default=16, metadata={"help": "pairs per step"})
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate (1e-3 from scratch, ~5e-5 for pretrained)"})
    warmup_steps: int = field(default=20, metadata={"help": "linear warm-up steps"})
    max_length: int = field(default=192, metadata={"help": "truncate prompt+completion to this many tokens"})
    lora_rank: int = field(default=0, metadata={"help": "LoRA rank on c_attn/c_proj; 0 = full fine-tuning"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    n_layer: int = field(default=2, metadata={"help": "from scratch: transformer blocks"})
    n_embd: int = field(default=128, metadata={"help": "from scratch: hidden width"})
    n_head: int = field(default=4, metadata={"help": "from scratch: attention heads"})
    vocab_size: int = field(default=2000, metadata={"help": "from scratch: BPE vocabulary size"})
    n_positions: int = field(default=192, metadata={"help": "from scratch: context length"})
    sample_eval_prompts: int = field(default=100, metadata={"help": "held-out prompts expanded for the keep/add rate"})
    bf16: bool | None = field(
        default=None,
        metadata={
            "help": "bf16 mixed precision; None = on where a CUDA device supports it, off on CPU (TRL turns it on by "
            "default, and on a CPU without bf16 units it made the shapes world's SFT several times slower)"
        },
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata={"help": "recompute activations in the backward pass to save memory (TRL's default; off: the expanders are small)"},
    )
    progress: bool = field(
        default=True, metadata={"help": "show the progress bars and print the loss every tenth of training (off: print nothing)"}
    )

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r} must be >= 1")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate={self.learning_rate!r} must be > 0")
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank={self.lora_rank!r} must be >= 0 (0 = full fine-tuning)")


@dataclass
class SFTResult:
    output_dir: str
    eval_loss_before: float
    eval_loss_after: float
    keep_rate_before: float
    keep_rate_after: float
    word_recall_before: float
    word_recall_after: float
    train_rows: int
    eval_rows: int
    parameters: int
    bf16: bool = False  # whether the trainer ran in bf16 mixed precision (SFTSettings.bf16)


def _pairs(settings: SFTSettings) -> tuple[Dataset, Dataset]:
    if settings.train_data is None or settings.eval_data is None:
        built = build_diffusiondb_pairs(DiffusionDBPairsConfig(path=settings.diffusiondb_path))
    train = load_pairs(settings.train_data if settings.train_data is not None else built["train"])
    held_out = load_pairs(settings.eval_data if settings.eval_data is not None else built["test"])
    if settings.max_train_rows is not None:
        train = train.select(range(min(len(train), settings.max_train_rows)))
    if settings.max_eval_rows is not None:
        held_out = held_out.select(range(min(len(held_out), settings.max_eval_rows)))
    return train, held_out


def _expander(settings: SFTSettings, train: Dataset) -> PromptExpander:
    config = ExpanderSamplingConfig(template=settings.template)
    lora = gpt2_lora_settings(settings.lora_rank) if settings.lora_rank > 0 else None
    if settings.model is not None:
        return PromptExpander.from_pretrained(settings.model, config, lora=lora)
    scratch = TinyGPT2Config(
        n_layer=settings.n_layer,
        n_embd=settings.n_embd,
        n_head=settings.n_head,
        n_positions=settings.n_positions,
        vocab_size=settings.vocab_size,
        seed=settings.seed,
    )
    # The tokenizer learns from exactly what the model reads: templated prompt + completion.
    rendered = to_sft_dataset(train, settings.template)
    corpus = [row["prompt"] + row["completion"] for row in rendered]
    tokenizer = train_bpe_tokenizer(corpus, settings.vocab_size, settings.n_positions)
    return PromptExpander(build_gpt2(tokenizer, scratch), tokenizer, config, lora=lora)


def modifier_keep_rate(expander: PromptExpander, prompts: list[str], seed: int = 0) -> tuple[float, float]:
    """For one sampled expansion per prompt: the share that keeps all the prompt's words and adds
    more, and the mean share of the prompt's words kept."""
    if not prompts:
        raise ValueError("no prompts to evaluate the keep/add rate on")
    expansions = expander.sample(prompts, n=1, generator_seed=seed, batch_size=32)
    kept = [keeps_subject_and_adds_modifiers(p, t) for p, t in zip(prompts, expansions.texts)]
    recall = [subject_word_recall(p, t) for p, t in zip(prompts, expansions.texts)]
    return sum(kept) / len(kept), sum(recall) / len(recall)


def held_out_loss(trainer: SFTTrainer, held_out: Dataset) -> float:
    """Mean per-token completion loss (nats) on the held-out pairs."""
    return float(trainer.evaluate(held_out)["eval_loss"])


def uses_bf16(settings: SFTSettings) -> bool:
    """``settings.bf16``, or where it is None whether a CUDA device here supports bf16."""
    if settings.bf16 is not None:
        return settings.bf16
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


@contextlib.contextmanager
def library_progress_bars(enabled: bool):
    """Inside: the progress bars of datasets (loading, mapping) and transformers (writing shards) off unless
    ``enabled`` (then left as they are: a command may have quieted them); each library's setting restored after."""
    switches = [
        (is_progress_bar_enabled, enable_progress_bars, disable_progress_bars),
        (transformers_logging.is_progress_bar_enabled, transformers_logging.enable_progress_bar, transformers_logging.disable_progress_bar),
    ]
    before = [is_enabled() for is_enabled, _, _ in switches]
    if not enabled:
        for _, _, disable in switches:
            disable()
    try:
        yield
    finally:
        for was, (_, enable, disable) in zip(before, switches):
            (enable if was else disable)()


def run_sft(settings: SFTSettings) -> SFTResult:
    """Train, evaluate before/after on the held-out pairs, and save a pipeline-loadable directory."""
    with library_progress_bars(settings.progress):
        return _run_sft(settings)


def _run_sft(settings: SFTSettings) -> SFTResult:
    torch.manual_seed(settings.seed)
    train, held_out = _pairs(settings)
    expander = _expander(settings, train)
    args = SFTConfig(
        output_dir=settings.output_dir,
        max_steps=settings.max_steps,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=max(settings.batch_size, 32),
        learning_rate=settings.learning_rate,
        warmup_steps=settings.warmup_steps,
        lr_scheduler_type="cosine",
        max_length=settings.max_length,
        completion_only_loss=True,
        logging_steps=max(1, settings.max_steps // 10),
        logging_strategy="steps" if settings.progress else "no",
        disable_tqdm=not settings.progress,
        save_strategy="no",
        report_to="none",
        seed=settings.seed,
        use_cpu=not torch.cuda.is_available(),
        bf16=uses_bf16(settings),
        gradient_checkpointing=settings.gradient_checkpointing,
        dataloader_num_workers=0,
    )
    trainer = SFTTrainer(
        model=expander.model,
        args=args,
        train_dataset=to_sft_dataset(train, settings.template),
        eval_dataset=to_sft_dataset(held_out, settings.template),
        processing_class=expander.tokenizer,
    )
    if not settings.progress:  # with tqdm off the Trainer prints every log (the final metrics too) through this callback
        trainer.remove_callback(PrinterCallback)
    eval_prompts = list(held_out["prompt"][: settings.sample_eval_prompts])
    loss_before = held_out_loss(trainer, trainer.eval_dataset)
    keep_before, recall_before = modifier_keep_rate(expander, eval_prompts, settings.seed)
    trainer.train()
    expander.model.eval()
    loss_after = held_out_loss(trainer, trainer.eval_dataset)
    keep_after, recall_after = modifier_keep_rate(expander, eval_prompts, settings.seed)
    expander.save_pretrained(settings.output_dir)
    result = SFTResult(
        output_dir=settings.output_dir,
        eval_loss_before=loss_before,
        eval_loss_after=loss_after,
        keep_rate_before=keep_before,
        keep_rate_after=keep_after,
        word_recall_before=recall_before,
        word_recall_after=recall_after,
        train_rows=len(train),
        eval_rows=len(held_out),
        parameters=sum(p.numel() for p in expander.model.parameters()),
        bf16=bool(trainer.args.bf16),
    )
    (Path(settings.output_dir) / "sft_result.json").write_text(json.dumps(asdict(result), indent=2))
    if not math.isfinite(loss_after):
        raise FloatingPointError(f"held-out loss after SFT is {loss_after}")
    return result


def parse_settings(argv: list[str] | None = None) -> SFTSettings:
    """``--config file.yaml`` gives defaults; any other flag overrides them (the project's one config parser)."""
    return parse_config(SFTSettings, argv, description="Promptist-format SFT of a prompt expander with TRL")


def main(argv: list[str] | None = None) -> None:
    result = run_sft(parse_settings(argv))
    print(json.dumps(asdict(result), indent=2))
    expander = PromptExpander.from_pretrained(result.output_dir)
    print("expansion:", expander.sample("a cat sitting on a windowsill", generator_seed=0).texts[0])


if __name__ == "__main__":
    run_cli(main)
