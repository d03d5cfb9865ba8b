"""The shapes world's caption grammar: short and detailed captions, identifier prefixes, the parser.

``a red circle`` (:func:`short_caption`); ``a large red circle on a black background with a small
blue square, sharp, vivid`` (:func:`detailed_caption`); ``<preference> photo, a red circle``
(:func:`with_prefix`); :func:`parse_caption` reads any of them back to what it states
(:class:`PromptAttributes`). :data:`PROMPT_FILES` are the world's prompt files (short and detailed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shapes.attributes import (
    BACKGROUNDS,
    COLOURS,
    FILLER_WORDS,
    HELD_OUT_PAIRS,
    IDENTIFIER_WORDS,
    MODIFIER_WORDS,
    SHAPES,
    SIZES,
    Attributes,
    training_pairs,
)

__all__ = [
    "PROMPT_FILES",
    "PromptAttributes",
    "DETAILED_PROMPT_BACKGROUNDS",
    "detailed_caption",
    "detailed_prompts",
    "parse_caption",
    "random_prefix",
    "short_caption",
    "short_prompt",
    "strip_prefix",
    "with_prefix",
    "write_prompt_files",
]


@dataclass(frozen=True)
class PromptAttributes:
    """What a prompt states: every field is ``None`` (or empty) where the prompt leaves it unstated."""

    colour: str | None = None
    shape: str | None = None
    size: str | None = None
    background: str | None = None
    companion: tuple[str, str] | None = None
    words: tuple[str, ...] = ()

    def stated(self) -> dict[str, str]:
        """The stated attributes of the subject and background (what the pixel checker reads back)."""
        return {k: getattr(self, k) for k in ("colour", "shape", "size", "background") if getattr(self, k) is not None}


def short_prompt(colour: str, shape: str) -> str:
    """``a {colour} {shape}``: the short caption of a colour × shape pair."""
    return f"a {colour} {shape}"


def short_caption(attributes: Attributes | PromptAttributes) -> str:
    """``a {colour} {shape}``."""
    return short_prompt(attributes.colour, attributes.shape)


def detailed_caption(attributes: Attributes) -> str:
    """``a {size} {colour} {shape} on a {background} background[ with a small {c} {s}][, word, ...]``."""
    text = f"a {attributes.size} {attributes.colour} {attributes.shape} on a {attributes.background} background"
    if attributes.companion is not None:
        text += f" with a small {attributes.companion.colour} {attributes.companion.shape}"
    return ", ".join((text, *attributes.words))


def with_prefix(caption: str, prefix: str) -> str:
    """``"{prefix}, {caption}"`` (the caption unchanged for an empty prefix): the identifier format."""
    return f"{prefix}, {caption}" if prefix else caption


def strip_prefix(text: str) -> str:
    """The caption behind an identifier/filler prefix (text before the first ``", "`` that does not
    start with an article); the text unchanged when it has none."""
    normalised = " ".join(text.strip().lower().split())
    head, sep, rest = normalised.partition(", ")
    if sep and not re.match(r"^an? ", head):
        return rest
    return normalised


def _alternatives(words) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_CAPTION = re.compile(
    rf"^an? (?:(?P<size>{_alternatives(SIZES)}) )?(?P<colour>{_alternatives(COLOURS)}) (?P<shape>{_alternatives(SHAPES)})"
    rf"(?: on an? (?P<background>{_alternatives(BACKGROUNDS)}) background)?"
    rf"(?: with an? small (?P<ccolour>{_alternatives(COLOURS)}) (?P<cshape>{_alternatives(SHAPES)}))?"
    rf"(?P<words>(?:, (?:{_alternatives(MODIFIER_WORDS)}))*)$"
)


def parse_caption(text: str) -> PromptAttributes:
    """Parse a short or detailed caption (behind an optional prefix) back to what it states.

    Accepts the grammar of :func:`short_caption` / :func:`detailed_caption` with any of size,
    background, companion and modifier words left out (case and surrounding spaces ignored).
    """
    normalised = strip_prefix(text)
    match = _CAPTION.match(normalised)
    if match is None:
        raise ValueError(
            f"cannot parse caption {text!r}; expected e.g. 'a red circle' or "
            "'a large red circle on a black background with a small blue square, sharp'"
        )
    words = tuple(w.strip() for w in match["words"].split(",") if w.strip())
    companion = (match["ccolour"], match["cshape"]) if match["ccolour"] else None
    return PromptAttributes(
        colour=match["colour"],
        shape=match["shape"],
        size=match["size"],
        background=match["background"],
        companion=companion,
        words=words,
    )


def random_prefix(rng: np.random.Generator) -> str:
    """1–4 identifier or filler words in random order, joined by spaces."""
    vocabulary = IDENTIFIER_WORDS + FILLER_WORDS
    count = int(rng.integers(1, 5))
    return " ".join(vocabulary[i] for i in rng.choice(len(vocabulary), size=count, replace=False))


#: the world's prompt files (under the world directory): the short colour × shape prompts of each split, and
#: GenEval-style detailed prompts (size, colour, shape and background stated, every one checkable by the pixel rules)
PROMPT_FILES = {
    "train": "prompts/train.txt",
    "held_out": "prompts/held_out.txt",
    "train_detailed": "prompts/train_detailed.txt",
    "held_out_detailed": "prompts/held_out_detailed.txt",
}
#: the backgrounds of the detailed prompt files: the neutral ones, never the subject's own colour
DETAILED_PROMPT_BACKGROUNDS = ("white", "black", "gray")


def detailed_prompts(pairs: list[tuple[str, str]]) -> list[str]:
    """``a {size} {colour} {shape} on a {background} background`` for every pair × size × neutral background."""
    return [
        f"a {size} {colour} {shape} on a {background} background"
        for colour, shape in pairs
        for size in SIZES
        for background in DETAILED_PROMPT_BACKGROUNDS
    ]


def write_prompt_files(world: Path) -> None:
    """The files of :data:`PROMPT_FILES`, one prompt a line: ``train.txt`` (the train split's colour × shape
    prompts), ``held_out.txt`` (:data:`HELD_OUT_PAIRS`) and their detailed versions (:func:`detailed_prompts`,
    2 sizes × 3 backgrounds per pair): the prompts a training preset on this world names."""
    pairs = {"train": training_pairs(), "held_out": list(HELD_OUT_PAIRS)}
    prompts = {split: [short_prompt(colour, shape) for colour, shape in pairs[split]] for split in pairs}
    prompts |= {f"{split}_detailed": detailed_prompts(pairs[split]) for split in pairs}
    for split, name in PROMPT_FILES.items():
        path = Path(world) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(prompt + "\n" for prompt in prompts[split]), encoding="utf-8")
