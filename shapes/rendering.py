"""Rendering of one record of the shapes world (:class:`shapes.attributes.Attributes`) as pixels.

Rendering is supersampled (``supersample``² samples per pixel, box-filtered), then blurred by
``scipy.ndimage.gaussian_filter``; the settings are :class:`shapes.attributes.ShapesDataConfig`'s.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from shapes.attributes import (
    BACKGROUNDS,
    COLOURS,
    COMPANION_HALF_EXTENT,
    CORNERS,
    HALF_EXTENT,
    LIGHT_ABSORPTION,
    Attributes,
    ShapesDataConfig,
    luma,
)

__all__ = ["render"]


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
    return luma(rgb) + keep * (rgb - luma(rgb))


def render(attributes: Attributes, config: ShapesDataConfig | None = None) -> np.ndarray:
    """Draw ``attributes`` as a uint8 image (H×W×3): background, subject, companion, specks, blur, tint."""
    config = config or ShapesDataConfig()
    n, s = config.image_size, config.supersample
    coords = (np.arange(n * s) + 0.5) / (n * s)
    xs, ys = np.meshgrid(coords, coords)
    # coloured light scales each channel, as illumination times reflectance
    light = 1.0 - config.light_strength * abs(attributes.tint) * LIGHT_ABSORPTION["warm" if attributes.tint > 0 else "cold"]
    backdrop = np.asarray(BACKGROUNDS[attributes.background], dtype=np.float64)
    if config.light_target == "background":
        backdrop = backdrop * light
    image = np.broadcast_to(backdrop, (n, n, 3)).copy()

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
    if config.light_target == "scene" and config.light_strength > 0:  # no light: skip the per-pixel product by 1
        image = image * light
    image += config.tint_strength * attributes.tint * np.array([1.0, 0.25, -1.0])
    return np.clip(np.round(image), 0, 255).astype(np.uint8)
