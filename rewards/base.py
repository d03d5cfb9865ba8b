"""The reward interface: ``reward(images, prompts, metadata) -> scores``.

Notation (DDPO, Black et al. 2023; Parrot, Lee et al. 2024): a reward r_k(x, c) scores an
image x against the ORIGINAL user prompt c (never the expansion ĉ, which may be carried in
``metadata[i]["expanded_prompt"]``). ``images`` are float tensors (B, 3, H, W) in [0, 1] or a
list of PIL images; the result is a float32 CPU tensor of B scores. ``higher_is_better``
says which way the reward points (every reward here is oriented so that it is True, but the
flag is declared so that consumers never have to guess).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

__all__ = [
    "Reward",
    "RewardConfig",
    "as_image_tensor",
    "as_pil_images",
    "check_reward_inputs",
    "expansion_metadata",
    "resolve_dtype",
]

logger = logging.getLogger(__name__)

Metadata = Sequence[dict[str, Any]]
ImageBatch = torch.Tensor | Sequence[Image.Image]


def expansion_metadata(expanded_prompts: Sequence[str]) -> list[dict[str, Any]]:
    """One metadata dict per image carrying its expansion ĉ under the key rewards read."""
    return [{"expanded_prompt": e} for e in expanded_prompts]


# Float images may overshoot [0, 1] by rounding noise; anything beyond this is a caller bug
# (typically images still in [-1, 1]).
_RANGE_TOLERANCE = 1e-3


@dataclass
class RewardConfig:
    """Settings every reward has: where it runs and how many images go through it at once."""

    device: str = field(default="cpu", metadata={"help": "torch device the reward model runs on, e.g. 'cuda:0'"})
    batch_size: int = field(default=32, metadata={"help": "images scored per forward pass"})
    dtype: str = field(default="float32", metadata={"help": "model weights dtype: float32, float16 or bfloat16"})

    def __post_init__(self) -> None:
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size!r} must be a positive integer")
        resolve_dtype(self.dtype)


def resolve_dtype(name: str) -> torch.dtype:
    """``'float16'`` → ``torch.float16``; refuses names that are not floating dtypes."""
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype={name!r} is not a torch floating dtype; use float32, float16 or bfloat16")
    return dtype


def as_image_tensor(images: ImageBatch) -> torch.Tensor:
    """A (B, 3, H, W) float32 tensor in [0, 1] from a tensor or a list of same-sized PIL images."""
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be shaped (B, 3, H, W); got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(f"images must be a float tensor in [0, 1]; got dtype {images.dtype}")
        finite = images[torch.isfinite(images)]
        if finite.numel() and (finite.min() < -_RANGE_TOLERANCE or finite.max() > 1 + _RANGE_TOLERANCE):
            raise ValueError(
                f"images must lie in [0, 1]; got values in [{finite.min().item():.3f}, {finite.max().item():.3f}] "
                "(convert images in [-1, 1] with (x + 1) / 2)"
            )
        return images.float().clamp(0, 1) if finite.numel() == images.numel() else images.float()
    images = list(images)
    if not images:
        raise ValueError("images is empty: give at least one image")
    arrays = []
    for i, image in enumerate(images):
        if not isinstance(image, Image.Image):
            raise TypeError(f"images[{i}] is {type(image).__name__}; expected a PIL image or pass a (B, 3, H, W) tensor")
        arrays.append(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)
    sizes = {a.shape for a in arrays}
    if len(sizes) > 1:
        raise ValueError(f"PIL images have different sizes {sorted(s[:2] for s in sizes)}; resize them to one size first")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def as_pil_images(images: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) in [0, 1] → RGB PIL images (uint8, rounded as DDPO does)."""
    pixels = (images.detach().float().cpu() * 255).round().clamp(0, 255).to(torch.uint8)
    return [Image.fromarray(np.ascontiguousarray(a)) for a in pixels.permute(0, 2, 3, 1).numpy()]


def check_reward_inputs(
    name: str, images: ImageBatch, prompts: Sequence[str] | None, metadata: Metadata | None
) -> tuple[torch.Tensor, list[str], list[dict[str, Any]]]:
    """Validate and normalise one reward call; errors name the reward and the bad value."""
    tensor = as_image_tensor(images)
    batch = tensor.shape[0]
    if batch == 0:
        raise ValueError(f"reward {name!r}: images is empty (batch of 0)")
    if prompts is None:
        prompts = [""] * batch
    if isinstance(prompts, str):
        raise TypeError(f"reward {name!r}: prompts must be a list of strings, one per image, not a single string")
    prompts = list(prompts)
    if len(prompts) != batch:
        raise ValueError(f"reward {name!r}: got {batch} images but {len(prompts)} prompts; give one prompt per image")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise TypeError(f"reward {name!r}: prompts[{i}] is {type(p).__name__}, expected str")
    metadata = [{} for _ in range(batch)] if metadata is None else [dict(m) for m in metadata]
    if len(metadata) != batch:
        raise ValueError(f"reward {name!r}: got {batch} images but {len(metadata)} metadata dicts; give one per image")
    return tensor, prompts, metadata


class Reward(ABC):
    """A named scoring function r(x, c). Subclasses implement :meth:`score_batch`.

    ``__call__`` validates the inputs, splits them into chunks of ``config.batch_size``, and
    returns float32 CPU scores of shape (B,). Non-finite scores are returned as they are: the
    multi-reward evaluator masks and counts them.
    """

    name: str = "reward"
    higher_is_better: bool = True
    needs_prompts: bool = True

    def __init__(self, config: RewardConfig | None = None):
        self.config = config if config is not None else RewardConfig()

    @property
    def device(self) -> torch.device:
        return torch.device(self.config.device)

    @abstractmethod
    def score_batch(self, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]]) -> torch.Tensor:
        """Scores (b,) of at most ``batch_size`` images (float32 CPU, in [0, 1])."""

    def __call__(self, images: ImageBatch, prompts: Sequence[str] | None = None, metadata: Metadata | None = None) -> torch.Tensor:
        if self.needs_prompts and prompts is None:
            raise ValueError(f"reward {self.name!r} compares images with prompts: pass the original prompts")
        tensor, prompts, metadata = check_reward_inputs(self.name, images, prompts, metadata)
        if self.needs_prompts:
            empty = [i for i, p in enumerate(prompts) if not p.strip()]
            if empty:
                raise ValueError(f"reward {self.name!r}: prompts {empty} are empty; it scores images against their prompts")
        size = self.config.batch_size
        chunks = []
        with torch.inference_mode():
            for start in range(0, tensor.shape[0], size):
                stop = start + size
                scores = self.score_batch(tensor[start:stop], prompts[start:stop], metadata[start:stop])
                chunks.append(scores.detach().float().cpu().reshape(-1))
        scores = torch.cat(chunks)
        if scores.shape[0] != tensor.shape[0]:
            raise RuntimeError(f"reward {self.name!r} returned {scores.shape[0]} scores for {tensor.shape[0]} images")
        return scores

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, higher_is_better={self.higher_is_better})"
