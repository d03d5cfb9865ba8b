"""The pixel-rule checker: reads the attributes back from an image and scores it against a prompt.

Rules (no learned parts, so the figures it produces are exact and explainable):

- background: the median colour of the one-pixel border → nearest colour of :data:`BACKGROUNDS`;
- foreground mask α: each pixel's distance from the background colour, less a noise floor
  (``NOISE_FLOOR``: faint blotches and ringing of generated images are not shape), divided by
  the same for the shape's core, clipped to [0, 1] (anti-aliased edges are fractional);
- colour: the median colour of core pixels (α > 0.7) → nearest colour of :data:`COLOURS`
  (the background's own colour excluded);
- shape, from the moments of α about its centroid, which blur cannot erase (a Gaussian blur adds
  σ² to each second moment and nothing to the third): the world's triangle points up, so a
  vertical skewness E[y³]/E[y²]^{3/2} below ``TRIANGLE_SKEW`` reads as the triangle (ideal
  −2√2/5 ≈ −0.57, circle and square 0); otherwise the *corner ratio* E[x²y²]/(E[x²]E[y²]) tells
  the square (1 at any blur or stretch: x and y are independent over a rectangle) from the circle
  (2/3 when sharp, rising towards 1 with blur), cut at ``SQUARE_CORNER_RATIO``. (A fill ratio of
  the bounding box, the rule before, read about 40 % of the world's own triangle renders and 15 % of
  its squares wrong, mostly as circles: blur empties a triangle's apex and corners and shrinks the box.)
- size: the side of the box the read shape would fill with its mass, √(Σα / ideal fill) with
  the ideal fills triangle 1/2, circle π/4, square 1 (mass survives blur, a box does not), as a
  fraction of the image side, cut half-way between the small and large renderings;
- the subject: α is kept only on the largest connected region of α > ``REGION_CUT`` (grown by one
  pixel for its soft edge), so clutter specks and the small companion shape are not read as
  part of the subject (``scipy.ndimage.label``);
- quality (:func:`read_quality`, what the modifier words claim): *edge* = the subject's steepest
  neighbouring-pixel step over its contrast to the background (1 = a crisp edge, lower when
  blurred); *specks* = small regions away from the subject; *chroma* = (max − min) of the subject's
  median core colour over that of its palette colour; *aspect* = |log(width / height)| of the
  subject (0 = as drawn, larger when stretched, ``distorted``); *tint* = mean (R − B) of the border less
  the background's own, over 36 (the record's tint where no channel clips; on white or black
  one channel clips and it reads half of it).

An image whose mask is empty (nothing differs from the background) gets ``None`` for the
foreground attributes and fails every foreground check.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_dilation, label

from shapes.data import BACKGROUNDS, COLOURS, HALF_EXTENT, PromptAttributes, parse_caption

__all__ = [
    "CheckResult",
    "ImageReading",
    "QualityReading",
    "check",
    "check_prompt",
    "prompt_verdicts",
    "read_image",
    "read_quality",
    "shape_moments",
]

#: vertical skewness of α below which the subject reads as the (upward) triangle; chosen on the world
#: prior's renders, where blurred small triangles reach −0.2 (BENCHMARKS.md, "The pixel checker's shape and size reading")
TRIANGLE_SKEW = -0.15
#: corner ratio E[x²y²]/(E[x²]E[y²]) of α at or above which a subject that is no triangle is the square
SQUARE_CORNER_RATIO = 0.85
#: share of its bounding box each ideal shape fills
IDEAL_FILL = {"triangle": 0.5, "circle": float(np.pi / 4), "square": 1.0}
#: bounding-box side (fraction of the image side) half-way between the small and large shapes
EXTENT_THRESHOLD = HALF_EXTENT["small"] + HALF_EXTENT["large"]
#: a foreground whose core differs from the background by less than this (0..255 RGB distance) is empty
MIN_CONTRAST = 40.0
#: distance from the background (0..255 RGB) below which a pixel counts as background
NOISE_FLOOR = 30.0
#: α above which a pixel belongs to a region when separating the subject from specks and companion
REGION_CUT = 0.3


@dataclass(frozen=True)
class ImageReading:
    """What the rules read from one image (``None`` where there is no foreground)."""

    background: str
    colour: str | None
    shape: str | None
    size: str | None
    skewness: float
    corner_ratio: float
    area: float
    extent: float


@dataclass(frozen=True)
class CheckResult:
    """Per-attribute verdicts for the attributes a prompt states, and their mean as ``score``."""

    reading: ImageReading
    correct: dict[str, bool]

    @property
    def score(self) -> float:
        return float(np.mean(list(self.correct.values()))) if self.correct else 1.0

    @property
    def all_correct(self) -> bool:
        return all(self.correct.values())


def _nearest(colour: np.ndarray, palette: dict[str, tuple[int, int, int]]) -> str:
    names = list(palette)
    distances = [np.linalg.norm(colour - np.asarray(palette[n], dtype=np.float64)) for n in names]
    return names[int(np.argmin(distances))]


def _as_uint8_hwc(image) -> np.ndarray:
    """Accept uint8 H×W×3, a PIL image, or a float tensor/array 3×H×W or H×W×3 in [0, 1]."""
    if hasattr(image, "convert"):
        image = np.asarray(image.convert("RGB"))
    if hasattr(image, "detach"):
        image = image.detach().cpu().float().numpy()
    array = np.asarray(image)
    if array.ndim != 3:
        raise ValueError(f"expected one image with 3 dimensions, got shape {array.shape}")
    if array.shape[0] == 3 and array.shape[-1] != 3:
        array = array.transpose(1, 2, 0)
    if array.shape[-1] != 3:
        raise ValueError(f"expected an RGB image (3 channels), got shape {array.shape}")
    if array.dtype != np.uint8:
        if not np.isfinite(array).all():
            raise ValueError("image contains NaN or infinite values")
        array = np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    return array


def read_image(image) -> ImageReading:
    """Apply the rules of the module docstring to one image."""
    pixels = _as_uint8_hwc(image).astype(np.float64)
    h, w, _ = pixels.shape
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background = _nearest(np.median(border, axis=0), BACKGROUNDS)
    bg_colour = np.asarray(BACKGROUNDS[background], dtype=np.float64)
    distance = np.linalg.norm(pixels - bg_colour, axis=-1)
    if distance.max() < MIN_CONTRAST:
        return ImageReading(background, None, None, None, 0.0, 0.0, 0.0, 0.0)
    alpha = subject_alpha(distance)
    core = alpha > 0.7
    palette = {k: v for k, v in COLOURS.items() if k != background}
    colour = _nearest(np.median(pixels[core], axis=0), palette)
    skewness, corner_ratio = shape_moments(alpha)
    if skewness < TRIANGLE_SKEW:
        shape = "triangle"
    else:
        shape = "square" if corner_ratio >= SQUARE_CORNER_RATIO else "circle"
    area = float(alpha.sum() / (h * w))
    extent = float(np.sqrt(area / IDEAL_FILL[shape]))
    size = "large" if extent > EXTENT_THRESHOLD else "small"
    return ImageReading(background, colour, shape, size, skewness, corner_ratio, area, extent)


def shape_moments(alpha: np.ndarray) -> tuple[float, float]:
    """(vertical skewness E[y³]/E[y²]^{3/2}, corner ratio E[x²y²]/(E[x²]E[y²])) of the coverage α,
    x and y measured from its centroid (pixel centres) and y growing downwards."""
    mass = alpha.sum()
    if not mass > 0.0:  # nothing covered
        return 0.0, 1.0
    ys, xs = np.mgrid[0 : alpha.shape[0], 0 : alpha.shape[1]]
    weights = alpha / mass
    dx = xs - (weights * xs).sum()
    dy = ys - (weights * ys).sum()
    vx, vy = (weights * dx**2).sum(), (weights * dy**2).sum()
    if vx <= 0.0 or vy <= 0.0:  # one row or column: no shape to read beyond a line
        return 0.0, 1.0
    return float((weights * dy**3).sum() / vy**1.5), float((weights * dx**2 * dy**2).sum() / (vx * vy))


def _foreground_alpha(distance: np.ndarray) -> np.ndarray:
    core_distance = np.percentile(distance[distance >= 0.5 * distance.max()], 90)
    return np.clip((distance - NOISE_FLOOR) / max(core_distance - NOISE_FLOOR, 1e-6), 0.0, 1.0)


def _regions(alpha: np.ndarray) -> tuple[np.ndarray, int, int]:
    """(labels, count, label of the region with the largest α mass) of α > REGION_CUT."""
    labels, count = label(alpha > REGION_CUT)
    if count == 0:
        return labels, 0, 0
    masses = np.bincount(labels.ravel(), weights=alpha.ravel(), minlength=count + 1)
    masses[0] = 0.0
    return labels, count, int(np.argmax(masses))


def subject_alpha(distance: np.ndarray) -> np.ndarray:
    """Foreground coverage α of the subject: the largest region, grown by one pixel, with α
    renormalised by that region's own core distance (a bright speck must not dim the subject)."""
    labels, count, best = _regions(_foreground_alpha(distance))
    if count == 0:
        return _foreground_alpha(distance)
    subject = labels == best
    core_distance = max(float(np.percentile(distance[subject], 90)), NOISE_FLOOR + 1e-6)
    alpha = np.clip((distance - NOISE_FLOOR) / (core_distance - NOISE_FLOOR), 0.0, 1.0)
    return alpha * binary_dilation(subject, iterations=1)


@dataclass(frozen=True)
class QualityReading:
    """The pixel factors the modifier words claim (see the module docstring)."""

    edge: float
    specks: int
    chroma: float
    aspect: float
    tint: float


def read_quality(image) -> QualityReading:
    """Measure edge crispness, clutter specks, subject chroma and tint of one image."""
    pixels = _as_uint8_hwc(image).astype(np.float64)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    border_colour = np.median(border, axis=0)
    background = _nearest(border_colour, BACKGROUNDS)
    bg = np.asarray(BACKGROUNDS[background], dtype=np.float64)
    tint = float(((border[:, 0] - border[:, 2]).mean() - (bg[0] - bg[2])) / 36.0)
    distance = np.linalg.norm(pixels - border_colour, axis=-1)
    if distance.max() < MIN_CONTRAST:
        return QualityReading(edge=0.0, specks=0, chroma=0.0, aspect=0.0, tint=tint)
    alpha = _foreground_alpha(distance)
    labels, count, best = _regions(alpha)
    subject = labels == best
    near = binary_dilation(subject, iterations=2)
    specks = sum(1 for k in range(1, count + 1) if k != best and not near[labels == k].any())
    core = subject & (alpha > 0.7)
    median = np.median(pixels[core], axis=0) if core.any() else pixels[subject].mean(0)
    steps = np.maximum(np.abs(np.diff(pixels, axis=0)).sum(-1)[:, :-1], np.abs(np.diff(pixels, axis=1)).sum(-1)[:-1, :])
    region = binary_dilation(subject, iterations=1)[:-1, :-1]
    step_scale = np.abs(median - border_colour).sum()
    edge = float(steps[region].max() / step_scale) if region.any() and step_scale > 0 else 0.0
    palette = {k: v for k, v in COLOURS.items() if k != background}
    reference = np.asarray(COLOURS[_nearest(median, palette)], dtype=np.float64)
    chroma = float((median.max() - median.min()) / (reference.max() - reference.min()))
    kept = alpha * binary_dilation(subject, iterations=1)
    aspect = float(kept.max(axis=0).sum() / max(kept.max(axis=1).sum(), 1e-6))
    return QualityReading(edge=edge, specks=int(specks), chroma=chroma, aspect=abs(np.log(aspect)), tint=tint)


def check(image, prompt: PromptAttributes) -> CheckResult:
    """Compare the reading of ``image`` with every attribute ``prompt`` states."""
    reading = read_image(image)
    correct = {name: getattr(reading, name) == value for name, value in prompt.stated().items()}
    return CheckResult(reading, correct)


def check_prompt(image, prompt: str) -> CheckResult:
    """:func:`check` against a caption-grammar prompt (see :func:`shapes.data.parse_caption`)."""
    return check(image, parse_caption(prompt))


def prompt_verdicts(image, prompt: str) -> dict[str, bool]:
    """{attribute: honoured} for each attribute ``prompt`` states (colour, shape, and size and background
    where named): the checker of the ``attribute_rules`` reward (:mod:`rewards.attribute_rules`)."""
    return check_prompt(image, prompt).correct
