"""Loaders for published reward models whose code needs packages not installable here.

``hpsv2`` (Wu et al. 2023) is an open_clip ViT-H-14 fine-tune and ``imagereward`` (Xu et al.
2023) a BLIP-based scorer; both official packages import torchvision (through open_clip and
timm), which has no build that imports on the CPU torch the project installs. So the project
names neither as a dependency, not even as an extra: GPU users install them by hand next to a
matching torchvision (``pip install hpsv2`` / ``pip install image-reward``), and these loaders are
not exercised by the offline test suite. Both score images against the
original prompt, higher is better.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

import torch

from rewards.base import Reward, RewardConfig, as_pil_images
from rewards.registry import register_reward

__all__ = ["HPSv2Config", "ImageRewardConfig"]


def _import_optional(module: str, pip_name: str):
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"this reward needs the package that provides {module!r}: on a GPU machine with a torchvision "
            f"matching your torch, pip install {pip_name} (the CPU install path never installs torchvision)"
        ) from err


@dataclass
class HPSv2Config(RewardConfig):
    version: str = field(default="v2.1", metadata={"help": "HPS version: v2.0 or v2.1"})


@dataclass
class ImageRewardConfig(RewardConfig):
    model: str = field(default="ImageReward-v1.0", metadata={"help": "ImageReward checkpoint name or local .pt path"})


class _PerImageReward(Reward):
    """Calls a package's scorer one (image, prompt) pair at a time on PIL images."""

    def __init__(self, config: RewardConfig, score_one):
        super().__init__(config)
        self.score_one = score_one

    def score_batch(self, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]]) -> torch.Tensor:
        return torch.tensor([float(self.score_one(img, p)) for img, p in zip(as_pil_images(images), prompts)])


@register_reward("hpsv2", HPSv2Config)
def hpsv2(config: HPSv2Config) -> Reward:
    package = _import_optional("hpsv2", "hpsv2")
    return _PerImageReward(config, lambda image, prompt: package.score([image], prompt, hps_version=config.version)[0])


@register_reward("imagereward", ImageRewardConfig)
def imagereward(config: ImageRewardConfig) -> Reward:
    package = _import_optional("ImageReward", "image-reward")
    model = package.load(config.model, device=config.device)
    return _PerImageReward(config, lambda image, prompt: model.score(prompt, image))
