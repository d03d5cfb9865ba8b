"""The shapes world's data: a procedural, seedable generator of captioned images.

Every image shows one anti-aliased shape on a plain background and carries its full
attribute record (:class:`Attributes`), a *short* caption (``a red circle``) and a *detailed*
caption naming every attribute plus optional style words
(``a large red circle at the left on a black background, sharp, high contrast``).

Defaults and steering. Each example is drawn in one of two *modes*:

- ``short`` examples come from a skewed distribution (mostly large, centred, on white), so a
  model that only sees ``a red circle`` learns those typical values as defaults;
- ``detailed`` examples draw size, position and background uniformly, so a detailed prompt
  must be read to be honoured. That gap is what a prompt expander can exploit.

Held-out split. The colour × shape pairs in :data:`HELD_OUT_PAIRS` never appear in the
``train`` split; the ``held_out`` split contains only them (every colour and every shape is
still seen in training, just not together).

Rendering is supersampled (``supersample``² samples per pixel, box-filtered), which gives the
anti-aliased edges. Everything is numpy, driven by one ``numpy.random.Generator`` per split.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "DEFAULTS",
    "HELD_OUT_PAIRS",
    "POSITIONS",
    "SHAPES",
    "SIZES",
    "STYLE_WORDS",
    "Attributes",
    "Example",
    "ShapesDataConfig",
    "PromptAttributes",
    "detailed_caption",
    "generate_examples",
    "parse_caption",
    "render",
    "short_caption",
    "short_prompt",
    "to_dataset",
    "training_pairs",
]

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 40),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
    **COLOURS,
}
SHAPES = ("circle", "square", "triangle")
SIZES = ("small", "large")
POSITIONS = ("center", "left", "right", "top", "bottom")
STYLE_WORDS = ("sharp", "high contrast", "minimal", "clean", "flat")
#: The typical values that ``short`` examples skew to (what an unstated attribute defaults to).
DEFAULTS = {"size": "large", "position": "center", "background": "white"}
#: colour × shape pairs never seen in training.
HELD_OUT_PAIRS: tuple[tuple[str, str], ...] = (("red", "triangle"), ("green", "circle"), ("blue", "square"))

#: shape half-extent in units of the image side, per size.
HALF_EXTENT = {"small": 0.125, "large": 0.22}
#: shape centre (x, y) in units of the image side, per position (y grows downwards).
CENTRES = {"center": (0.5, 0.5), "left": (0.27, 0.5), "right": (0.73, 0.5), "top": (0.5, 0.27), "bottom": (0.5, 0.73)}


@dataclass(frozen=True)
class Attributes:
    """The full attribute record of one image."""

    colour: str
    shape: str
    size: str
    position: str
    background: str
    style: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("colour", self.colour, tuple(COLOURS)),
            ("shape", self.shape, SHAPES),
            ("size", self.size, SIZES),
            ("position", self.position, POSITIONS),
            ("background", self.background, tuple(BACKGROUNDS)),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; choose one of {allowed}")
        if self.background == self.colour:
            raise ValueError(f"background {self.background!r} equals the shape colour; pick a different background")
        bad = [w for w in self.style if w not in STYLE_WORDS]
        if bad:
            raise ValueError(f"unknown style words {bad}; choose from {STYLE_WORDS}")


@dataclass(frozen=True)
class PromptAttributes:
    """What a prompt states: every field is ``None`` where the prompt leaves it unstated."""

    colour: str | None = None
    shape: str | None = None
    size: str | None = None
    position: str | None = None
    background: str | None = None
    style: tuple[str, ...] = ()

    def stated(self) -> dict[str, str]:
        """The stated visual attributes (style words excluded: they do not change pixels)."""
        return {k: v for k, v in asdict(self).items() if k != "style" and v is not None}


@dataclass(frozen=True)
class Example:
    """One captioned image: ``image`` is uint8 H×W×3; ``mode`` is ``short`` or ``detailed``."""

    image: np.ndarray
    attributes: Attributes
    short_caption: str
    detailed_caption: str
    mode: Literal["short", "detailed"]

    @property
    def caption(self) -> str:
        """The caption this example is trained with (its mode's caption)."""
        return self.short_caption if self.mode == "short" else self.detailed_caption


@dataclass
class ShapesDataConfig:
    """Settings of the generator (the defaults are the world's)."""

    image_size: int = field(default=32, metadata={"help": "image side in pixels"})
    supersample: int = field(default=4, metadata={"help": "samples per pixel side for anti-aliasing"})
    short_fraction: float = field(
        default=0.5, metadata={"help": "fraction of examples drawn in 'short' mode (skewed to the defaults)"}
    )
    default_probability: float = field(
        default=0.8,
        metadata={"help": "in 'short' mode, probability that each of size/position/background takes its default"},
    )
    jitter: float = field(default=0.03, metadata={"help": "uniform jitter of the shape centre, in image sides"})

    def __post_init__(self) -> None:
        if self.image_size < 16:
            raise ValueError(f"image_size={self.image_size} is too small; use at least 16")
        if self.supersample < 1:
            raise ValueError(f"supersample={self.supersample} must be >= 1")
        for name in ("short_fraction", "default_probability"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value} must lie in [0, 1]")
        if not 0.0 <= self.jitter <= 0.1:
            raise ValueError(f"jitter={self.jitter} must lie in [0, 0.1]")


def short_prompt(colour: str, shape: str) -> str:
    """``a {colour} {shape}``: the short caption of a colour × shape pair."""
    return f"a {colour} {shape}"


def short_caption(attributes: Attributes | PromptAttributes) -> str:
    """``a {colour} {shape}``."""
    return short_prompt(attributes.colour, attributes.shape)


def detailed_caption(attributes: Attributes) -> str:
    """``a {size} {colour} {shape} at the {position} on a {background} background[, style, ...]``."""
    text = (
        f"a {attributes.size} {attributes.colour} {attributes.shape} at the {attributes.position}"
        f" on a {attributes.background} background"
    )
    return ", ".join((text, *attributes.style))


def _alternatives(words) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_CAPTION = re.compile(
    rf"^an? (?:(?P<size>{_alternatives(SIZES)}) )?(?P<colour>{_alternatives(COLOURS)}) (?P<shape>{_alternatives(SHAPES)})"
    rf"(?: at the (?P<position>{_alternatives(POSITIONS)}))?"
    rf"(?: on an? (?P<background>{_alternatives(BACKGROUNDS)}) background)?"
    rf"(?P<style>(?:, (?:{_alternatives(STYLE_WORDS)}))*)$"
)


def parse_caption(text: str) -> PromptAttributes:
    """Parse a short or detailed caption back to the attributes it states.

    Accepts the grammar of :func:`short_caption` / :func:`detailed_caption` with any of size,
    position, background and style words left out (case and surrounding spaces ignored).
    """
    normalised = " ".join(text.strip().lower().split())
    match = _CAPTION.match(normalised)
    if match is None:
        raise ValueError(
            f"cannot parse caption {text!r}; expected e.g. 'a red circle' or "
            "'a large red circle at the left on a black background, sharp'"
        )
    style = tuple(w.strip() for w in match["style"].split(",") if w.strip())
    return PromptAttributes(
        colour=match["colour"],
        shape=match["shape"],
        size=match["size"],
        position=match["position"],
        background=match["background"],
        style=style,
    )


def training_pairs() -> list[tuple[str, str]]:
    """The colour × shape pairs of the train split (all pairs minus :data:`HELD_OUT_PAIRS`)."""
    return [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in HELD_OUT_PAIRS]


def _shape_coverage(shape: str, xs: np.ndarray, ys: np.ndarray, cx: float, cy: float, h: float) -> np.ndarray:
    """Boolean mask of sample points inside the shape of half-extent ``h`` centred at (cx, cy)."""
    if shape == "circle":
        return (xs - cx) ** 2 + (ys - cy) ** 2 <= h * h
    if shape == "square":
        return (np.abs(xs - cx) <= h) & (np.abs(ys - cy) <= h)
    # upward triangle with its base at cy + h and apex at cy - h (fills half its bounding box)
    inside_height = (ys >= cy - h) & (ys <= cy + h)
    half_width_at_y = h * (ys - (cy - h)) / (2 * h)
    return inside_height & (np.abs(xs - cx) <= half_width_at_y)


def render(attributes: Attributes, config: ShapesDataConfig | None = None, offset=(0.0, 0.0)) -> np.ndarray:
    """Draw ``attributes`` as an anti-aliased uint8 image (H×W×3); ``offset`` shifts the centre."""
    config = config or ShapesDataConfig()
    n, s = config.image_size, config.supersample
    coords = (np.arange(n * s) + 0.5) / (n * s)
    xs, ys = np.meshgrid(coords, coords)
    cx, cy = CENTRES[attributes.position]
    inside = _shape_coverage(
        attributes.shape, xs, ys, cx + offset[0], cy + offset[1], HALF_EXTENT[attributes.size]
    )
    alpha = inside.reshape(n, s, n, s).mean(axis=(1, 3))[..., None]
    fg = np.asarray(COLOURS[attributes.colour], dtype=np.float64)
    bg = np.asarray(BACKGROUNDS[attributes.background], dtype=np.float64)
    return np.round(alpha * fg + (1.0 - alpha) * bg).astype(np.uint8)


def _sample_attributes(
    rng: np.random.Generator, pairs: list[tuple[str, str]], mode: str, config: ShapesDataConfig
) -> Attributes:
    colour, shape = pairs[rng.integers(len(pairs))]

    def pick(name: str, choices: tuple[str, ...]) -> str:
        if mode == "short" and rng.random() < config.default_probability and DEFAULTS[name] in choices:
            return DEFAULTS[name]
        return choices[rng.integers(len(choices))]

    backgrounds = tuple(b for b in BACKGROUNDS if b != colour)
    n_style = int(rng.integers(0, 3))
    style = tuple(STYLE_WORDS[i] for i in sorted(rng.choice(len(STYLE_WORDS), size=n_style, replace=False)))
    return Attributes(
        colour=colour,
        shape=shape,
        size=pick("size", SIZES),
        position=pick("position", POSITIONS),
        background=pick("background", backgrounds),
        style=style,
    )


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
        mode = "short" if rng.random() < config.short_fraction else "detailed"
        attributes = _sample_attributes(rng, pairs, mode, config)
        offset = rng.uniform(-config.jitter, config.jitter, size=2)
        examples.append(
            Example(
                image=render(attributes, config, offset=tuple(offset)),
                attributes=attributes,
                short_caption=short_caption(attributes),
                detailed_caption=detailed_caption(attributes),
                mode=mode,
            )
        )
    return examples


def to_dataset(examples: list[Example]):
    """A ``datasets.Dataset`` view: columns image (PIL), caption, short/detailed captions, mode, attributes."""
    from datasets import Dataset, Features, Image, Sequence, Value

    features = Features(
        {
            "image": Image(),
            "caption": Value("string"),
            "short_caption": Value("string"),
            "detailed_caption": Value("string"),
            "mode": Value("string"),
            **{k: Value("string") for k in ("colour", "shape", "size", "position", "background")},
            "style": Sequence(Value("string")),
        }
    )
    rows = {name: [] for name in features}
    for ex in examples:
        record = asdict(ex.attributes)
        record["style"] = list(record["style"])
        row = {
            "image": ex.image,
            "caption": ex.caption,
            "short_caption": ex.short_caption,
            "detailed_caption": ex.detailed_caption,
            "mode": ex.mode,
            **record,
        }
        for name in features:
            rows[name].append(row[name])
    return Dataset.from_dict(rows, features=features)
