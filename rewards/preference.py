"""A prompt-and-image preference scorer r_θ(x, c) in the style of ImageReward (Xu et al. 2023).

Notation: e_x, e_c are the L2-normalised CLIP embeddings (:mod:`rewards.clip`); the scorer is
r_θ(x, c) = h([e_x, e_c, e_x ⊙ e_c]) with h the same MLP class as the LAION aesthetic head
(:class:`rewards.aesthetic.AestheticHead`) at input size 3·D. It is trained from pairwise
comparisons (x_w preferred over x_l for prompt c) with the Bradley–Terry loss
−log σ(r_θ(x_w, c) − r_θ(x_l, c)) while the first ``freeze_fraction`` of each CLIP tower's
layers stay frozen (ImageReward freezes 70% of its backbone); see
:mod:`rewards.train_preference`. ImageReward's backbone is BLIP; any transformers
``CLIPModel`` is used here so that the same code runs on the public CLIP checkpoints and on
the tiny CLIP of the shapes world.

A trained scorer is a directory: ``backbone/`` (``CLIPModel.save_pretrained``, safetensors,
plus tokenizer), ``head.safetensors`` and ``scorer_config.json``; the ``preference`` reward
loads it by path.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from rewards.aesthetic import AestheticHead, AestheticHeadConfig
from rewards.base import Reward, RewardConfig, resolve_dtype
from rewards.clip import ClipBackbone
from rewards.registry import register_reward

__all__ = ["PreferenceScorerConfig", "PreferenceScorer", "PreferenceReward", "freeze_fraction_of_backbone"]

SCORER_CONFIG = "scorer_config.json"
HEAD_FILE = "head.safetensors"
BACKBONE_DIR = "backbone"


@dataclass
class PreferenceScorerConfig:
    hidden_dims: tuple[int, ...] = field(
        default=(1024, 128, 64, 16), metadata={"help": "hidden widths of the MLP head h (ImageReward's sizes)"}
    )
    dropouts: tuple[float, ...] = field(default=(0.2, 0.2, 0.1, 0.0), metadata={"help": "dropout after each hidden layer of h"})

    def head_config(self, embed_dim: int) -> AestheticHeadConfig:
        return AestheticHeadConfig(input_dim=3 * embed_dim, hidden_dims=tuple(self.hidden_dims), dropouts=tuple(self.dropouts))


def _tower_layers(model: torch.nn.Module) -> list[tuple[list[torch.nn.Module], list[torch.nn.Module]]]:
    """For each CLIP tower: (modules before the encoder layers, the encoder layers in order)."""
    towers = []
    for tower in (model.vision_model, model.text_model):
        before = [tower.embeddings] + ([tower.pre_layrnorm] if hasattr(tower, "pre_layrnorm") else [])
        towers.append((before, list(tower.encoder.layers)))
    return towers


def freeze_fraction_of_backbone(model: torch.nn.Module, fraction: float) -> int:
    """Freeze embeddings and the first ⌊fraction·L⌋ layers of both CLIP towers (all of CLIP at 1.0).

    Returns the number of parameters left trainable in the backbone.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"freeze_fraction={fraction} must lie in [0, 1]")
    model.requires_grad_(fraction < 1.0)
    if 0.0 < fraction < 1.0:
        for before, layers in _tower_layers(model):
            for module in before + layers[: int(fraction * len(layers))]:
                module.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class PreferenceScorer(torch.nn.Module):
    """r_θ(x, c) = h([e_x, e_c, e_x ⊙ e_c])."""

    def __init__(self, backbone: ClipBackbone, config: PreferenceScorerConfig | None = None, head: AestheticHead | None = None):
        super().__init__()
        self.config = config or PreferenceScorerConfig()
        self.backbone = backbone
        self.head = head if head is not None else AestheticHead(self.config.head_config(backbone.embed_dim))
        self.head.to(backbone.device)

    @classmethod
    def from_backbone(
        cls, source: str | os.PathLike, config: PreferenceScorerConfig | None = None, device: str = "cpu"
    ) -> PreferenceScorer:
        """A new scorer (random head) on a CLIP from a hub id or local directory."""
        return cls(ClipBackbone.from_pretrained(source, device=device), config)

    @property
    def device(self) -> torch.device:
        return self.backbone.device

    def forward(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        e_x = self.backbone.image_embeds(images)
        e_c = self.backbone.text_embeds(prompts)
        return self.head(torch.cat([e_x, e_c, e_x * e_c], dim=-1))

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(directory / BACKBONE_DIR)
        self.head.save(directory / HEAD_FILE)
        (directory / SCORER_CONFIG).write_text(json.dumps(asdict(self.config), indent=2))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str = "cpu", dtype: torch.dtype = torch.float32) -> PreferenceScorer:
        directory = Path(directory)
        missing = [name for name in (SCORER_CONFIG, HEAD_FILE, BACKBONE_DIR) if not (directory / name).exists()]
        if missing:
            raise FileNotFoundError(
                f"{str(directory)!r} is not a preference scorer directory (missing {missing}); "
                "train one with python -m rewards.train_preference"
            )
        config = PreferenceScorerConfig(**json.loads((directory / SCORER_CONFIG).read_text()))
        backbone = ClipBackbone.from_pretrained(directory / BACKBONE_DIR, device=device, dtype=dtype)
        head = AestheticHead.load(directory / HEAD_FILE)
        return cls(backbone, config, head).eval()


@dataclass
class PreferenceRewardConfig(RewardConfig):
    path: str = field(default="", metadata={"help": "directory written by python -m rewards.train_preference"})


class PreferenceReward(Reward):
    """r_θ(x, c) of a trained :class:`PreferenceScorer`."""

    def __init__(self, config: PreferenceRewardConfig, scorer: PreferenceScorer):
        super().__init__(config)
        self.scorer = scorer.eval()

    def score_batch(self, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]]) -> torch.Tensor:
        return self.scorer(images, prompts)


@register_reward("preference", PreferenceRewardConfig)
def preference(config: PreferenceRewardConfig) -> PreferenceReward:
    if not config.path:
        raise ValueError("the preference reward needs path: a directory written by python -m rewards.train_preference")
    scorer = PreferenceScorer.from_pretrained(config.path, device=config.device, dtype=resolve_dtype(config.dtype))
    return PreferenceReward(config, scorer)
