"""The shapes world's data (v4): a procedural, seedable generator of captioned images.

Every image shows one anti-aliased subject shape on a plain background, optionally a small
*companion* shape in a corner, and the imperfections of a real photograph. Each image carries its
full record (:class:`Attributes`), a *short* caption (``a red circle``) and a *detailed* caption
in Promptist's style: the scene, then comma-separated modifier words
(``a large red circle on a black background with a small blue square, sharp, vivid, masterpiece``).

What makes this a miniature of the real setting (the world card measures each point):

- **A latent quality q** ~ U(0, 1) per image drives four pixel factors, each q plus independent
  noise: *sharpness* (Gaussian blur), *cleanliness* (clutter specks), *vividness* (saturation of
  the subject's colour) and *regularity* (how little the subject is stretched). Their modifier
  words (:data:`QUALITY_WORDS`: ``sharp``/``blurry``, ``clean``/``cluttered``, ``vivid``/``faded``,
  ``well-formed``/``distorted``, and the vague ``masterpiece`` for high q) appear in a detailed
  caption with a probability that rises with the factor, so "c, masterpiece, sharp" asks for
  better pixels and "c, blurry, faded" for worse ones, as real Stable Diffusion learned from
  web captions. ``high contrast`` marks a contrasting background; ``warm light`` / ``cold light``
  mark the lighting *tint*.
- **The plain prompt is mediocre.** Short captions are drawn from the same full prior as
  detailed ones (no skew to any reward optimum): ``a red circle`` leaves size, background,
  quality, tint, offset and companion to the seed.
- **The seed decides what rewards see:** quality factors, tint, the subject's offset from the
  centre and the clutter are drawn per image and only partly fixed by the words.
- **Scene words dilute the subject:** ``with a small {colour} {shape}`` adds a companion shape.
- **Identifier-robust text:** :func:`with_prefix` puts identifier tokens and filler words in
  front of a caption (``<preference> photo, a red circle``) with no pixel consequence; the world
  trains its text tower and UNet on ~30% of captions so prefixed.
- **Position is not part of the language:** the subject sits near the centre with a seed-drawn
  offset (v3 captioned positions, but its small UNet honoured them at chance).

Held-out split. The colour × shape pairs in :data:`HELD_OUT_PAIRS` never appear in the
``train`` split; the ``held_out`` split contains only them.

Rendering is supersampled (``supersample``² samples per pixel, box-filtered), then blurred by
``scipy.ndimage.gaussian_filter``. Everything is numpy, driven by one ``numpy.random.Generator``
per split.

Where it lives: :mod:`shapes.attributes` (vocabulary, the record, the prior and the generator's
settings), :mod:`shapes.captions` (the caption grammar and its parser), :mod:`shapes.rendering`
(pixels); this module draws captioned examples from them and re-exports every public name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from shapes.attributes import (
    BACKGROUNDS,
    COLOURS,
    CORNERS,
    FILLER_WORDS,
    GLOBAL_WORDS,
    HALF_EXTENT,
    HELD_OUT_PAIRS,
    IDENTIFIER_WORDS,
    MODIFIER_WORDS,
    POSITIVE_WORDS,
    QUALITY_WORDS,
    SHAPES,
    SIZES,
    Attributes,
    Companion,
    ShapesDataConfig,
    contrast,
    modifier_words,
    qualifies,
    sample_attributes,
    training_pairs,
)
from shapes.captions import (
    PROMPT_FILES,
    PromptAttributes,
    detailed_caption,
    parse_caption,
    random_prefix,
    short_caption,
    short_prompt,
    strip_prefix,
    with_prefix,
    write_prompt_files,
)
from shapes.rendering import render

__all__ = [
    "PROMPT_FILES",
    "write_prompt_files",
    "BACKGROUNDS",
    "COLOURS",
    "CORNERS",
    "FILLER_WORDS",
    "GLOBAL_WORDS",
    "HALF_EXTENT",
    "HELD_OUT_PAIRS",
    "IDENTIFIER_WORDS",
    "MODIFIER_WORDS",
    "POSITIVE_WORDS",
    "QUALITY_WORDS",
    "SHAPES",
    "SIZES",
    "Attributes",
    "Companion",
    "Example",
    "PromptAttributes",
    "ShapesDataConfig",
    "contrast",
    "detailed_caption",
    "generate_examples",
    "modifier_words",
    "parse_caption",
    "qualifies",
    "random_prefix",
    "render",
    "sample_attributes",
    "short_caption",
    "short_prompt",
    "strip_prefix",
    "to_dataset",
    "training_pairs",
    "with_prefix",
]


@dataclass(frozen=True)
class Example:
    """One captioned image: ``image`` is uint8 H×W×3; ``mode`` is ``short``, ``tagged`` or ``detailed``."""

    image: np.ndarray
    attributes: Attributes
    short_caption: str
    detailed_caption: str
    mode: Literal["short", "tagged", "detailed"]
    prefix: str = ""

    @property
    def caption(self) -> str:
        """The caption this example is trained with (its mode's caption, behind its prefix): ``short``
        ``a red circle``; ``tagged`` the short caption with the image's modifier words
        (``a red circle, sharp, vivid``); ``detailed`` the whole scene with them."""
        if self.mode == "detailed":
            text = self.detailed_caption
        else:
            text = ", ".join((self.short_caption, *(self.attributes.words if self.mode == "tagged" else ())))
        return with_prefix(text, self.prefix)


def generate_examples(
    n: int, seed: int, split: Literal["train", "held_out", "all"] = "train", config: ShapesDataConfig | None = None
) -> list[Example]:
    """``n`` examples drawn deterministically from ``seed`` for ``split``."""
    config = config or ShapesDataConfig()
    if n < 0:
        raise ValueError(f"n={n} must be >= 0")
    all_pairs = [(c, s) for c in COLOURS for s in SHAPES]
    pairs = {"train": training_pairs(), "held_out": list(HELD_OUT_PAIRS), "all": all_pairs}.get(split)
    if pairs is None:
        raise ValueError(f"unknown split {split!r}; choose 'train', 'held_out' or 'all'")
    rng = np.random.default_rng(seed)
    examples = []
    for _ in range(n):
        u = rng.random()
        mode = "short" if u < config.short_fraction else "tagged" if u < config.short_fraction + config.tagged_fraction else "detailed"
        attributes = sample_attributes(rng, pairs, config)
        prefix = random_prefix(rng) if rng.random() < config.prefix_probability else ""
        examples.append(
            Example(
                image=render(attributes, config),
                attributes=attributes,
                short_caption=short_caption(attributes),
                detailed_caption=detailed_caption(attributes),
                mode=mode,
                prefix=prefix,
            )
        )
    return examples


def to_dataset(examples: list[Example]):
    """A ``datasets.Dataset`` view: image (PIL), captions, mode, prefix and the record's named fields."""
    from datasets import Dataset, Features, Image, Sequence, Value

    scalar = ("quality", *QUALITY_WORDS, "tint")
    features = Features(
        {
            "image": Image(),
            "caption": Value("string"),
            "short_caption": Value("string"),
            "detailed_caption": Value("string"),
            "mode": Value("string"),
            "prefix": Value("string"),
            **{k: Value("string") for k in ("colour", "shape", "size", "background")},
            **{k: Value("float32") for k in scalar},
            "words": Sequence(Value("string")),
        }
    )
    rows = {name: [] for name in features}
    for ex in examples:
        a = ex.attributes
        row = {
            "image": ex.image,
            "caption": ex.caption,
            "short_caption": ex.short_caption,
            "detailed_caption": ex.detailed_caption,
            "mode": ex.mode,
            "prefix": ex.prefix,
            "colour": a.colour,
            "shape": a.shape,
            "size": a.size,
            "background": a.background,
            "words": list(a.words),
            **{k: float(getattr(a, k)) for k in scalar},
        }
        for name in features:
            rows[name].append(row[name])
    return Dataset.from_dict(rows, features=features)
