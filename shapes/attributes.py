"""What the shapes world contains and how one image's record is drawn (v4).

The vocabulary (colours, backgrounds, shapes, sizes, the modifier words of :data:`QUALITY_WORDS`
and :data:`GLOBAL_WORDS`, identifier and filler words), the held-out split
(:data:`HELD_OUT_PAIRS`), the full record of one image (:class:`Attributes`), when a modifier word
is true of a record (:func:`qualifies`), the generator's settings (:class:`ShapesDataConfig`) and
the world's prior over records (:func:`sample_attributes`). :mod:`shapes.data` describes the world
and re-exports every public name.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "COMPANION_HALF_EXTENT",
    "CORNERS",
    "FILLER_WORDS",
    "GLOBAL_WORDS",
    "HALF_EXTENT",
    "HELD_OUT_PAIRS",
    "IDENTIFIER_WORDS",
    "LIGHT_ABSORPTION",
    "LIGHT_TARGETS",
    "PRESET_IDENTIFIERS",
    "MODIFIER_WORDS",
    "POSITIVE_WORDS",
    "QUALITY_WORDS",
    "SHAPES",
    "SIZES",
    "Attributes",
    "Companion",
    "ShapesDataConfig",
    "contrast",
    "luma",
    "modifier_words",
    "qualifies",
    "sample_attributes",
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
#: the words that ask for a better image: each factor's high word and "masterpiece"
POSITIVE_WORDS = tuple(high for high, _ in QUALITY_WORDS.values()) + ("masterpiece",)
#: reward identifiers of the shapes preset (template ``<{name}>``) and single letters: the world's
#: text tower and UNet learn them as harmless tokens (no pixel consequence)
IDENTIFIER_WORDS = ("<laion_aesthetic>", "<preference>", "<clip_score>", "<sentiment>", "l", "p", "c", "s")
#: the shapes preset's reward identifiers (template ``{name:.1}``), as Parrot prepends them ("l, ĉ"; "l p c s, ĉ")
PRESET_IDENTIFIERS = IDENTIFIER_WORDS[4:8]
#: filler words prepended like identifiers, so the text tower learns to ignore a prefix
FILLER_WORDS = ("photo", "picture", "image", "drawing", "art", "render", "digital", "illustration")
#: colour × shape pairs never seen in training.
HELD_OUT_PAIRS: tuple[tuple[str, str], ...] = (("red", "triangle"), ("green", "circle"), ("blue", "square"))

#: subject half-extent in units of the image side, per size; the companion's half-extent
HALF_EXTENT = {"small": 0.125, "large": 0.22}
COMPANION_HALF_EXTENT = 0.07
#: the share of (R, G, B) that warm and cold light take out at |tint| 1 and ``ShapesDataConfig.light_strength`` 1
LIGHT_ABSORPTION = {"warm": np.array([0.0, 0.5, 1.0]), "cold": np.array([1.0, 0.5, 0.0])}
#: what ``ShapesDataConfig.light_target`` may name: every pixel, or the backdrop only
LIGHT_TARGETS = ("scene", "background")
#: companion centres (x, y) in image sides (y grows downwards)
CORNERS = {"top left": (0.15, 0.15), "top right": (0.85, 0.15), "bottom left": (0.15, 0.85), "bottom right": (0.85, 0.85)}
#: a factor above HIGH (below LOW) qualifies its image for the factor's high (low) word
HIGH, LOW = 0.65, 0.35
#: tint beyond ±TINT_WORD qualifies for ``warm light`` / ``cold light``; contrast above this for ``high contrast``
TINT_WORD, CONTRAST_WORD, MASTERPIECE_Q = 0.5, 0.5, 0.8


def luma(rgb) -> float:
    """Luma (ITU-R 601) of an RGB triple in 0..255."""
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
    return abs(luma(COLOURS[colour]) - luma(BACKGROUNDS[background])) / 255.0


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


def training_pairs() -> list[tuple[str, str]]:
    """The colour × shape pairs of the train split (all pairs minus :data:`HELD_OUT_PAIRS`)."""
    return [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in HELD_OUT_PAIRS]


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
    light_strength: float = field(
        default=0.0,
        metadata={"help": "how strongly warm (cold) light dims blue (red) at |tint| 1: LIGHT_ABSORPTION's scale (0: the RGB shift alone)"},
    )
    light_target: str = field(
        default="scene",
        metadata={
            "help": "what the coloured light falls on: 'scene' (every pixel) or 'background' (the backdrop; the shapes keep their colours)"
        },
    )
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
        shares = ("short_fraction", "tagged_fraction", "word_probability", "companion_probability", "min_chroma", "prefix_probability")
        for name in (*shares, "light_strength"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value} must lie in [0, 1]")
        if self.light_target not in LIGHT_TARGETS:
            raise ValueError(f"light_target={self.light_target!r}; choose one of {', '.join(LIGHT_TARGETS)}")
        if not 0.0 <= self.max_offset <= 0.15:
            raise ValueError(f"max_offset={self.max_offset} must lie in [0, 0.15]")


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
