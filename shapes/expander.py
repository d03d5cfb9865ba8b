"""The shapes world's prompt expander: a tiny GPT-2 SFT-trained on short → detailed captions.

Pairs are Promptist-style and quality-curated: (``prompt`` = short caption, ``completion`` =
detailed caption) of the same image, for the images in the top ``curated_fraction`` of the
training set by how the world's raters score them (:func:`curation_score`: the aesthetic rule a(x) plus
the preference rule u under the image's own caption), as Promptist kept the prompts whose images people
rated best, with each target's modifier words in one fixed order (``word_order``, :func:`in_fixed_order`);
training runs :func:`prompt_expander.sft.run_sft` (TRL's SFTTrainer, Parrot's instruction
template, a GPT-2 + BPE tokenizer built from scratch). The quality gate
(:func:`well_formed_share`) samples expansions of held-out short prompts (colour × shape pairs
never seen in training) and counts those that parse as a *detailed* caption
(:func:`shapes.data.parse_caption` with size and background stated) keeping the short prompt's
colour and shape.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from prompt_expander.expander import PromptExpander
from prompt_expander.sft import SFTSettings, run_sft
from shapes.attributes import BACKGROUNDS, MODIFIER_WORDS
from shapes.captions import detailed_caption
from shapes.data import HELD_OUT_PAIRS, Attributes, Example, ShapesDataConfig, generate_examples, parse_caption, short_prompt
from shapes.heads import aesthetic_rating, own_caption_utility

__all__ = [
    "ShapesExpanderConfig",
    "caption_pairs",
    "curation_score",
    "curated",
    "in_fixed_order",
    "is_faithful_expansion",
    "well_formed_share",
    "train_world_expander",
]


WORD_ORDERS = ("fixed", "caption")


@dataclass
class ShapesExpanderConfig:
    """Sizes and SFT settings of the world's expander."""

    max_steps: int = field(default=800, metadata={"help": "SFT optimiser steps"})
    batch_size: int = field(default=32, metadata={"help": "pairs per step"})
    learning_rate: float = field(default=2e-3, metadata={"help": "AdamW learning rate"})
    n_layer: int = field(default=2, metadata={"help": "GPT-2 blocks"})
    n_embd: int = field(default=64, metadata={"help": "GPT-2 width"})
    n_head: int = field(default=4, metadata={"help": "GPT-2 heads"})
    vocab_size: int = field(default=600, metadata={"help": "BPE vocabulary size"})
    n_positions: int = field(default=160, metadata={"help": "context length: template (~35-60 tokens) + max_new_tokens 77"})
    eval_pairs: int = field(default=200, metadata={"help": "held-out pairs (unseen colour × shape) for the SFT loss"})
    expansions_per_prompt: int = field(default=20, metadata={"help": "sampled expansions per held-out short prompt"})
    curated_fraction: float = field(
        default=0.30,
        metadata={
            "help": "share of training images, best by curation_score (aesthetic + preference rule), whose captions become SFT pairs"
        },
    )
    habit_background: str = field(
        default="",
        metadata={
            "help": "a backdrop the curated prompts favour beyond the raters' scores, as prompt writers keep habits the "
            "reward models do not share ('' for none; the SFT expander then leaves the rewards a direction to find)"
        },
    )
    habit_bonus: float = field(
        default=0.0, metadata={"help": "curation score added to the images on habit_background (0: curation by the raters alone)"}
    )
    word_order: str = field(
        default="fixed",
        metadata={
            "help": "modifier words of the SFT targets: 'fixed' (in the world's MODIFIER_WORDS order, as prompt writers "
            "keep a habitual tag order) or 'caption' (as the image's caption draws them, in random order: the v7 expander)"
        },
    )

    def __post_init__(self) -> None:
        if self.word_order not in WORD_ORDERS:
            raise ValueError(f"word_order={self.word_order!r}: use one of {WORD_ORDERS}")
        for name in ("max_steps", "batch_size", "eval_pairs", "expansions_per_prompt"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if not 0.0 < self.curated_fraction <= 1.0:
            raise ValueError(f"curated_fraction={self.curated_fraction} must lie in (0, 1]")
        if self.habit_background and self.habit_background not in BACKGROUNDS:
            raise ValueError(f"habit_background={self.habit_background!r}; choose one of {', '.join(BACKGROUNDS)} or '' for none")
        if self.habit_bonus < 0.0:
            raise ValueError(f"habit_bonus={self.habit_bonus} must be >= 0")


def caption_pairs(examples: list[Example], word_order: str = "caption") -> list[dict[str, str]]:
    """Promptist-format pairs: the short caption and the detailed caption of each image, its modifier words as the
    caption has them (``caption``) or in :data:`MODIFIER_WORDS` order (``fixed``, :func:`in_fixed_order`)."""
    if word_order not in WORD_ORDERS:
        raise ValueError(f"word_order={word_order!r}: use one of {WORD_ORDERS}")

    def target(e: Example) -> str:
        return detailed_caption(in_fixed_order(e.attributes)) if word_order == "fixed" else e.detailed_caption

    return [{"prompt": e.short_caption, "completion": target(e)} for e in examples]


def in_fixed_order(attributes: Attributes) -> Attributes:
    """``attributes`` with its modifier words in :data:`MODIFIER_WORDS` order.

    Why the SFT targets use it: the world's captions list an image's words in random order (the T2I model must read
    any order), so a curated tag list of n words is spread over n! strings, and the SFT expander's most likely
    string (what beam search returns) is the shortest common one: on the v7 card "…, high contrast" alone, which
    forgoes the quality words that make the curated images good (card: aesthetic +0.28 ± 0.21 over c, against
    +1.09 ± 0.27 with the words in one order; BENCHMARKS.md, "The SFT targets' word order")."""
    return replace(attributes, words=tuple(sorted(attributes.words, key=MODIFIER_WORDS.index)))


def curation_score(attributes: Attributes, habit_background: str = "", habit_bonus: float = 0.0) -> float:
    """a(x) + u(x, c_x) + b·[background = h]: the aesthetic rule plus the preference rule of the image under its own
    detailed caption (adherence 1), plus the prompt writers' habit (``habit_bonus`` b for the backdrop
    ``habit_background`` h; none by default). Both raters count, as both are "people" here: with a(x) alone (v5
    rules) every curated image is small and the SFT expander loses preference (−0.97 on the card), since the two
    rules disagree on size. With the raters alone the curated scene is the rewards' own optimum, so no expansion
    beats the SFT beam (v8); a habit moves the SFT expander off it, as real curated prompts are not reward-optimal."""
    habit = habit_bonus * float(attributes.background == habit_background)  # no backdrop is named "": no habit
    return aesthetic_rating(attributes) + own_caption_utility(attributes) + habit


def curated(examples: list[Example], fraction: float, habit_background: str = "", habit_bonus: float = 0.0) -> list[Example]:
    """The top ``fraction`` of ``examples`` by :func:`curation_score` (ties kept in input order)."""
    keep = max(1, round(fraction * len(examples)))
    scores = [curation_score(e.attributes, habit_background, habit_bonus) for e in examples]
    order = sorted(range(len(examples)), key=lambda i: -scores[i])
    return [examples[i] for i in sorted(order[:keep])]


def is_faithful_expansion(short: str, expansion: str) -> bool:
    """True iff ``expansion`` parses as a detailed caption with ``short``'s colour and shape."""
    stated = parse_caption(short)
    try:
        parsed = parse_caption(expansion)
    except ValueError:
        return False
    complete = None not in (parsed.size, parsed.background)
    return complete and (parsed.colour, parsed.shape) == (stated.colour, stated.shape)


def well_formed_share(expander: PromptExpander, prompts: list[str], n: int, seed: int = 0) -> float:
    """Share of ``n`` sampled expansions per prompt that :func:`is_faithful_expansion` accepts."""
    expansions = expander.sample(prompts, n=n, generator_seed=seed)
    originals = [p for p in prompts for _ in range(n)]
    return sum(is_faithful_expansion(p, t) for p, t in zip(originals, expansions.texts)) / len(originals)


def _write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def train_world_expander(
    train: list[Example], config: ShapesExpanderConfig, data: ShapesDataConfig, out: Path, seed: int, progress: bool = True
) -> dict[str, float]:
    """SFT the expander into ``out`` (a stock transformers directory); its figures. ``progress``: TRL's bars and loss log."""
    habit = (config.habit_background, config.habit_bonus)
    held_out = curated(
        generate_examples(round(config.eval_pairs / config.curated_fraction), seed + 20, "held_out", data), config.curated_fraction, *habit
    )
    with tempfile.TemporaryDirectory() as scratch:
        train_file, eval_file = Path(scratch) / "train.jsonl", Path(scratch) / "eval.jsonl"
        _write_jsonl(train_file, caption_pairs(curated(train, config.curated_fraction, *habit), config.word_order))
        _write_jsonl(eval_file, caption_pairs(held_out, config.word_order))
        settings = SFTSettings(
            output_dir=os.fspath(out),
            train_data=os.fspath(train_file),
            eval_data=os.fspath(eval_file),
            max_eval_rows=config.eval_pairs,
            max_steps=config.max_steps,
            batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            warmup_steps=min(20, config.max_steps // 10),
            max_length=config.n_positions,
            seed=seed,
            n_layer=config.n_layer,
            n_embd=config.n_embd,
            n_head=config.n_head,
            vocab_size=config.vocab_size,
            n_positions=config.n_positions,
            sample_eval_prompts=20,
            progress=progress,
        )
        result = run_sft(settings)
    expander = PromptExpander.from_pretrained(out)
    prompts = [short_prompt(colour, shape) for colour, shape in HELD_OUT_PAIRS]
    return {
        "expander_eval_loss_before": result.eval_loss_before,
        "expander_eval_loss_after": result.eval_loss_after,
        "expander_held_out_well_formed": well_formed_share(expander, prompts, config.expansions_per_prompt, seed),
        "expander_parameters": float(result.parameters),
    }
