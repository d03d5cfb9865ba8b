"""JPEG (in)compressibility, exactly as DDPO defines them (Black et al. 2023, §6.1).

The image is quantised to uint8 (x·255 rounded), encoded as JPEG at quality 95 with PIL, and
its size s(x) is measured in kB (1 kB = 1000 bytes). ``jpeg_incompressibility`` is s(x) and
``jpeg_compressibility`` is −s(x); both are higher-is-better and ignore the prompt.
"""

from __future__ import annotations

import io
from typing import Any

import torch

from rewards.base import Reward, RewardConfig, as_pil_images
from rewards.registry import register_reward

__all__ = ["JpegSize", "jpeg_size_kb"]

JPEG_QUALITY = 95


def jpeg_size_kb(images: torch.Tensor, quality: int = JPEG_QUALITY) -> torch.Tensor:
    """s(x): the JPEG size in kB of each (3, H, W) image in [0, 1], (B,) float32."""
    sizes = []
    for image in as_pil_images(images):
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        sizes.append(buffer.tell() / 1000)
    return torch.tensor(sizes, dtype=torch.float32)


class JpegSize(Reward):
    """±s(x): ``sign=+1`` is incompressibility, ``sign=-1`` compressibility."""

    needs_prompts = False

    def __init__(self, config: RewardConfig, sign: float):
        super().__init__(config)
        self.sign = sign

    def score_batch(self, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]]) -> torch.Tensor:
        # JPEG encoding of a NaN image is undefined: report NaN, the evaluator masks it.
        bad = ~torch.isfinite(images.flatten(1)).all(dim=1)
        scores = self.sign * jpeg_size_kb(torch.nan_to_num(images))
        scores[bad] = float("nan")
        return scores


@register_reward("jpeg_compressibility")
def jpeg_compressibility(config: RewardConfig) -> JpegSize:
    return JpegSize(config, sign=-1.0)


@register_reward("jpeg_incompressibility")
def jpeg_incompressibility(config: RewardConfig) -> JpegSize:
    return JpegSize(config, sign=1.0)
