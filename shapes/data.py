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
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
from scipy.ndimage import gaussian_filter

__all__ = [
    "PROMPT_FILES",
    "write_prompt_files",
    "BACKGROUNDS",
    "COLOURS",
    "CORNERS",
    "FILLER_WORDS",
    "HELD_OUT_PAIRS",
    "IDENTIFIER_WORDS",
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
#: factor → (word for a high value, word for a low value)
QUALITY_WORDS: dict[str, tuple[str, str]] = {
    "sharpness": ("sharp", "blurry"),
    "cleanliness": ("clean", "cluttered"),
    "vividness": ("vivid", "faded"),
    "regularity": ("well-formed", "distorted"),
}
#: words that describe the whole image rather than one factor
GLOBAL_WORDS = ("masterpiece", "high contrast", "warm light", "cold light")
MODIFIER_WORDS = tuple(w for pair in QUALITY_WORDS.values() for w in pair) + GLOBAL_WORDS
#: reward identifiers of the shapes preset (template ``<{name}>``) and single letters: the world's
#: text tower and UNet learn them as harmless tokens (no pixel consequence)
IDENTIFIER_WORDS = ("<laion_aesthetic>", "<preference>", "<clip_score>", "<sentiment>", "l", "p", "c", "s")
#: filler words prepended like identifiers, so the text tower learns to ignore a prefix
FILLER_WORDS = ("photo", "picture", "image", "drawing", "art", "render", "digital", "illustration")
#: colour × shape pairs never seen in training.
HELD_OUT_PAIRS: tuple[tuple[str, str], ...] = (("red", "triangle"), ("green", "circle"), ("blue", "square"))

#: subject half-extent in units of the image side, per size; the companion's half-extent
HALF_EXTENT = {"small": 0.125, "large": 0.22}
COMPANION_HALF_EXTENT = 0.07
#: companion centres (x, y) in image sides (y grows downwards)
CORNERS = {"top left": (0.15, 0.15), "top right": (0.85, 0.15), "bottom left": (0.15, 0.85), "bottom right": (0.85, 0.85)}
#: a factor above HIGH (below LOW) qualifies its image for the factor's high (low) word
HIGH, LOW = 0.65, 0.35
#: tint beyond ±TINT_WORD qualifies for ``warm light`` / ``cold light``; contrast above this for ``high contrast``
TINT_WORD, CONTRAST_WORD, MASTERPIECE_Q = 0.5, 0.5, 0.8


def _luma(rgb) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


@dataclass(frozen=True)
class Companion:
    """A small second shape in a corner: the scene words ``with a small {colour} {shape}``."""

    colour: str
    shape: str
    corner: str


@dataclass(frozen=True)
class Attributes:
    """The full record of one image: what the text can state and what the seed draws.

    ``quality`` is q; ``sharpness``/``cleanliness``/``vividness``/``regularity`` ∈ [0, 1] its noisy
    pixel factors; ``tint`` ∈ [−1, 1] warm (+) or cold (−) light; ``offset`` the subject centre's
    shift from the image centre (image sides); ``detail_seed`` places the clutter specks.
    """

    colour: str
    shape: str
    size: str
    background: str
    quality: float = 0.5
    sharpness: float = 1.0
    cleanliness: float = 1.0
    vividness: float = 1.0
    regularity: float = 1.0
    tint: float = 0.0
    offset: tuple[float, float] = (0.0, 0.0)
    companion: Companion | None = None
    words: tuple[str, ...] = ()
    detail_seed: int = 0

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("colour", self.colour, tuple(COLOURS)),
            ("shape", self.shape, SHAPES),
            ("size", self.size, SIZES),
            ("background", self.background, tuple(BACKGROUNDS)),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; choose one of {allowed}")
        if self.background == self.colour:
            raise ValueError(f"background {self.background!r} equals the shape colour; pick a different background")
        for name in ("quality", *QUALITY_WORDS):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)} must lie in [0, 1]")
        if not -1.0 <= self.tint <= 1.0:
            raise ValueError(f"tint={self.tint} must lie in [-1, 1]")
        bad = [w for w in self.words if w not in MODIFIER_WORDS]
        if bad:
            raise ValueError(f"unknown modifier words {bad}; choose from {MODIFIER_WORDS}")

    @property
    def contrast(self) -> float:
        return contrast(self.colour, self.background)


def contrast(colour: str, background: str) -> float:
    """|luma(shape colour) − luma(background)| / 255 ∈ [0, 1]."""
    return abs(_luma(COLOURS[colour]) - _luma(BACKGROUNDS[background])) / 255.0


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


@dataclass
class ShapesDataConfig:
    """Settings of the generator (the defaults are the world's)."""

    image_size: int = field(default=32, metadata={"help": "image side in pixels"})
    supersample: int = field(default=4, metadata={"help": "samples per pixel side for anti-aliasing"})
    short_fraction: float = field(default=0.25, metadata={"help": "fraction of examples captioned 'a red circle'"})
    tagged_fraction: float = field(
        default=0.2, metadata={"help": "fraction captioned with the short caption and the image's modifier words"}
    )
    factor_noise: float = field(default=0.2, metadata={"help": "std of each quality factor around the latent quality q"})
    word_probability: float = field(
        default=0.7, metadata={"help": "probability that a detailed caption names a modifier its image qualifies for"}
    )
    companion_probability: float = field(default=0.3, metadata={"help": "probability of a companion shape"})
    max_offset: float = field(default=0.1, metadata={"help": "uniform offset of the subject centre, in image sides"})
    max_blur: float = field(default=1.6, metadata={"help": "Gaussian blur σ in pixels at sharpness 0"})
    max_specks: int = field(default=6, metadata={"help": "clutter specks at cleanliness 0"})
    min_chroma: float = field(default=0.3, metadata={"help": "share of the subject colour's chroma kept at vividness 0"})
    max_stretch: float = field(default=0.35, metadata={"help": "aspect stretch of the subject at regularity 0"})
    tint_strength: float = field(default=18.0, metadata={"help": "RGB shift (R up, B down) at tint 1"})
    prefix_probability: float = field(
        default=0.3, metadata={"help": "probability that a training caption gets an identifier/filler prefix"}
    )

    def __post_init__(self) -> None:
        if self.image_size < 16:
            raise ValueError(f"image_size={self.image_size} is too small; use at least 16")
        if self.supersample < 1:
            raise ValueError(f"supersample={self.supersample} must be >= 1")
        if self.short_fraction + self.tagged_fraction > 1.0:
            raise ValueError(f"short_fraction={self.short_fraction} + tagged_fraction={self.tagged_fraction} must not exceed 1")
        for name in ("short_fraction", "tagged_fraction", "word_probability", "companion_probability", "min_chroma", "prefix_probability"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value} must lie in [0, 1]")
        if not 0.0 <= self.max_offset <= 0.15:
            raise ValueError(f"max_offset={self.max_offset} must lie in [0, 0.15]")


def short_prompt(colour: str, shape: str) -> str:
    """``a {colour} {shape}``: the short caption of a colour × shape pair."""
    return f"a {colour} {shape}"


def short_caption(attributes: Attributes | PromptAttributes) -> str:
    """``a {colour} {shape}``."""
    return short_prompt(attributes.colour, attributes.shape)


def qualifies(attributes: Attributes, word: str) -> bool:
    """True iff the image's factors make ``word`` a true description of it."""
    for name, (high, low) in QUALITY_WORDS.items():
        if word == high:
            return getattr(attributes, name) > HIGH
        if word == low:
            return getattr(attributes, name) < LOW
    if word == "masterpiece":
        return attributes.quality > MASTERPIECE_Q
    if word == "high contrast":
        return attributes.contrast > CONTRAST_WORD
    if word == "warm light":
        return attributes.tint > TINT_WORD
    if word == "cold light":
        return attributes.tint < -TINT_WORD
    raise ValueError(f"unknown modifier word {word!r}; choose from {MODIFIER_WORDS}")


def modifier_words(attributes: Attributes, rng: np.random.Generator, probability: float) -> tuple[str, ...]:
    """The modifier words a caption names: each word the image qualifies for, kept with ``probability``,
    in random order (Promptist-style tag lists have no fixed order)."""
    words = [w for w in MODIFIER_WORDS if qualifies(attributes, w) and rng.random() < probability]
    return tuple(words[i] for i in rng.permutation(len(words)))


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


def training_pairs() -> list[tuple[str, str]]:
    """The colour × shape pairs of the train split (all pairs minus :data:`HELD_OUT_PAIRS`)."""
    return [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in HELD_OUT_PAIRS]


#: the world's prompt files (under the world directory): the training and held-out short prompts
PROMPT_FILES = {"train": "prompts/train.txt", "held_out": "prompts/held_out.txt"}


def write_prompt_files(world: Path) -> None:
    """``prompts/train.txt`` (the train split's colour × shape prompts) and ``prompts/held_out.txt``
    (:data:`HELD_OUT_PAIRS`), one short prompt a line: the prompts a training preset on this world names."""
    pairs = {"train": training_pairs(), "held_out": list(HELD_OUT_PAIRS)}
    for split, name in PROMPT_FILES.items():
        path = Path(world) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(short_prompt(colour, shape) + "\n" for colour, shape in pairs[split]), encoding="utf-8")


def _shape_coverage(shape: str, xs: np.ndarray, ys: np.ndarray, cx: float, cy: float, hx: float, hy: float) -> np.ndarray:
    """Boolean mask of sample points inside the shape of half-extents (hx, hy) centred at (cx, cy)."""
    u, v = (xs - cx) / hx, (ys - cy) / hy
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
    # upward triangle with its base at v = 1 and apex at v = -1 (fills half its bounding box)
    return (v >= -1.0) & (v <= 1.0) & (np.abs(u) <= (v + 1.0) / 2.0)


def _faded(colour: str, vividness: float, min_chroma: float) -> np.ndarray:
    """The colour pulled toward the grey of equal luma: chroma kept = min_chroma + (1 − min_chroma)·vividness."""
    rgb = np.asarray(COLOURS[colour], dtype=np.float64)
    keep = min_chroma + (1.0 - min_chroma) * vividness
    return _luma(rgb) + keep * (rgb - _luma(rgb))


def render(attributes: Attributes, config: ShapesDataConfig | None = None) -> np.ndarray:
    """Draw ``attributes`` as a uint8 image (H×W×3): background, subject, companion, specks, blur, tint."""
    config = config or ShapesDataConfig()
    n, s = config.image_size, config.supersample
    coords = (np.arange(n * s) + 0.5) / (n * s)
    xs, ys = np.meshgrid(coords, coords)
    image = np.broadcast_to(np.asarray(BACKGROUNDS[attributes.background], dtype=np.float64), (n, n, 3)).copy()

    def paint(mask: np.ndarray, rgb: np.ndarray) -> None:
        alpha = mask.reshape(n, s, n, s).mean(axis=(1, 3))[..., None]
        image[:] = alpha * rgb + (1.0 - alpha) * image

    stretch = 1.0 + config.max_stretch * (1.0 - attributes.regularity)
    h = HALF_EXTENT[attributes.size]
    cx, cy = 0.5 + attributes.offset[0], 0.5 + attributes.offset[1]
    subject = _shape_coverage(attributes.shape, xs, ys, cx, cy, h * stretch, h / stretch)
    paint(subject, _faded(attributes.colour, attributes.vividness, config.min_chroma))
    if attributes.companion is not None:
        kx, ky = CORNERS[attributes.companion.corner]
        e = COMPANION_HALF_EXTENT
        paint(_shape_coverage(attributes.companion.shape, xs, ys, kx, ky, e, e), np.asarray(COLOURS[attributes.companion.colour], float))
    rng = np.random.default_rng(attributes.detail_seed)
    specks = int(round(config.max_specks * (1.0 - attributes.cleanliness)))
    palette = [np.asarray(c, dtype=np.float64) for c in BACKGROUNDS.values()]
    for _ in range(specks):
        x, y = rng.integers(1, n - 3, size=2)
        image[y : y + 2, x : x + 2] = palette[rng.integers(len(palette))]
    sigma = config.max_blur * (1.0 - attributes.sharpness)
    if sigma > 0.05:
        image = gaussian_filter(image, sigma=(sigma, sigma, 0), mode="nearest")
    image += config.tint_strength * attributes.tint * np.array([1.0, 0.25, -1.0])
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _clip01(x: float) -> float:
    return float(min(1.0, max(0.0, x)))


def sample_attributes(rng: np.random.Generator, pairs: list[tuple[str, str]], config: ShapesDataConfig) -> Attributes:
    """One record from the world's prior (the same prior for short and detailed captions)."""
    colour, shape = pairs[rng.integers(len(pairs))]
    backgrounds = tuple(b for b in BACKGROUNDS if b != colour)
    background = backgrounds[rng.integers(len(backgrounds))]
    q = float(rng.random())
    factors = {name: _clip01(q + config.factor_noise * rng.standard_normal()) for name in QUALITY_WORDS}
    companion = None
    if rng.random() < config.companion_probability:
        others = [(c, s) for c in COLOURS for s in SHAPES if c not in (colour, background) and s != shape]
        c2, s2 = others[rng.integers(len(others))]
        companion = Companion(c2, s2, tuple(CORNERS)[rng.integers(len(CORNERS))])
    record = Attributes(
        colour=colour,
        shape=shape,
        size=SIZES[rng.integers(len(SIZES))],
        background=background,
        quality=q,
        tint=float(rng.uniform(-1.0, 1.0)),
        offset=tuple(float(v) for v in rng.uniform(-config.max_offset, config.max_offset, size=2)),
        companion=companion,
        detail_seed=int(rng.integers(2**31)),
        **factors,
    )
    return replace(record, words=modifier_words(record, rng, config.word_probability))


def random_prefix(rng: np.random.Generator) -> str:
    """1–4 identifier or filler words in random order, joined by spaces."""
    vocabulary = IDENTIFIER_WORDS + FILLER_WORDS
    count = int(rng.integers(1, 5))
    return " ".join(vocabulary[i] for i in rng.choice(len(vocabulary), size=count, replace=False))


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
