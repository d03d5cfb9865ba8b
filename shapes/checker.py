"""The pixel-rule checker: reads the attributes back from an image and scores it against a prompt.

Rules (no learned parts, so the figures it produces are exact and explainable):

- background: the median colour of the one-pixel border → nearest colour of :data:`BACKGROUNDS`;
- foreground mask α: each pixel's distance from the background colour, less a noise floor
  (``NOISE_FLOOR``: faint blotches and ringing of generated images are not shape), divided by
  the same for the shape's core, clipped to [0, 1] (anti-aliased edges are fractional);
- colour: the median colour of core pixels (α > 0.7) → nearest colour of :data:`COLOURS`
  (the background's own colour excluded);
- shape: fill ratio = Σα / area of the sub-pixel bounding box (width = Σ over columns of
  the column's largest α, height likewise), cut between the ideal ratios (triangle 1/2,
  circle π/4, square 1);
- size: the bounding box's side (√area) as a fraction of the image side, cut half-way between
  the small and large renderings;
- position: the α-weighted centroid → nearest centre of :data:`CENTRES`.

An image whose mask is empty (nothing differs from the background) gets ``None`` for the
foreground attributes and fails every foreground check.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shapes.data import BACKGROUNDS, CENTRES, COLOURS, HALF_EXTENT, PromptAttributes, parse_caption

__all__ = ["CheckResult", "ImageReading", "check", "check_prompt", "read_image"]

#: fill ratios of the ideal shapes are 1/2 (triangle), π/4 (circle), 1 (square); the cut points
#: sit between them, nearer the triangle because small anti-aliased triangles read a little full
FILL_CUTS = {"triangle": 0.69, "circle": 0.9}
#: bounding-box side (fraction of the image side) half-way between the small and large shapes
EXTENT_THRESHOLD = HALF_EXTENT["small"] + HALF_EXTENT["large"]
#: a foreground whose core differs from the background by less than this (0..255 RGB distance) is empty
MIN_CONTRAST = 40.0
#: distance from the background (0..255 RGB) below which a pixel counts as background
NOISE_FLOOR = 30.0


@dataclass(frozen=True)
class ImageReading:
    """What the rules read from one image (``None`` where there is no foreground)."""

    background: str
    colour: str | None
    shape: str | None
    size: str | None
    position: str | None
    fill_ratio: float
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
        return ImageReading(background, None, None, None, None, 0.0, 0.0, 0.0)
    core_distance = np.percentile(distance[distance >= 0.5 * distance.max()], 90)
    alpha = np.clip((distance - NOISE_FLOOR) / (core_distance - NOISE_FLOOR), 0.0, 1.0)
    core = alpha > 0.7
    palette = {k: v for k, v in COLOURS.items() if k != background}
    colour = _nearest(np.median(pixels[core], axis=0), palette)
    # sub-pixel bounding box: each column's (row's) largest coverage, summed
    box_area = alpha.max(axis=0).sum() * alpha.max(axis=1).sum()
    mass = alpha.sum()
    fill = float(mass / box_area)
    shape = "triangle" if fill < FILL_CUTS["triangle"] else "circle" if fill < FILL_CUTS["circle"] else "square"
    area = float(mass / (h * w))
    extent = float(np.sqrt(box_area / (h * w)))
    size = "large" if extent > EXTENT_THRESHOLD else "small"
    ys, xs = np.mgrid[0:h, 0:w]
    cx = float((alpha * (xs + 0.5)).sum() / mass / w)
    cy = float((alpha * (ys + 0.5)).sum() / mass / h)
    position = min(CENTRES, key=lambda p: (CENTRES[p][0] - cx) ** 2 + (CENTRES[p][1] - cy) ** 2)
    return ImageReading(background, colour, shape, size, position, fill, area, extent)


def check(image, prompt: PromptAttributes) -> CheckResult:
    """Compare the reading of ``image`` with every attribute ``prompt`` states."""
    reading = read_image(image)
    correct = {name: getattr(reading, name) == value for name, value in prompt.stated().items()}
    return CheckResult(reading, correct)


def check_prompt(image, prompt: str) -> CheckResult:
    """:func:`check` against a caption-grammar prompt (see :func:`shapes.data.parse_caption`)."""
    return check(image, parse_caption(prompt))
