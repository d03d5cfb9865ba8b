"""Rewards computed from one CLIP model: CLIPScore, PickScore and CLIP sentiment.

Notation as in :mod:`rewards.clip` (e_x, e_c, τ):
- ``clip_score`` = cos(x, c) = e_x·e_c (CLIPScore without its 2.5·max(·, 0) rescaling);
- ``pickscore`` = τ·e_x·e_c with PickScore's CLIP-H fine-tune (Kirstain et al. 2023), which is
  a plain transformers ``CLIPModel`` (``yuvalkirstain/PickScore_v1``, processor settings from
  ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``);
- ``sentiment`` = P(positive | x): either CLIP zero-shot, softmax over τ·e_x·ē_± with ē_± the
  renormalised mean embedding of the positive / negative descriptions (CLIP's prompt
  ensembling), or a linear probe σ(w·e_x + b) loaded from a safetensors file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from rewards.base import Reward, RewardConfig, resolve_dtype
from rewards.clip import ClipBackbone
from rewards.registry import register_reward

__all__ = [
    "ClipRewardConfig",
    "ClipScore",
    "SentimentConfig",
    "ClipSentiment",
    "fit_linear_probe",
    "save_linear_probe",
    "load_linear_probe",
]


@dataclass
class ClipRewardConfig(RewardConfig):
    model: str = field(default="openai/clip-vit-large-patch14", metadata={"help": "hub id or local directory of a transformers CLIPModel"})


@dataclass
class PickScoreConfig(ClipRewardConfig):
    model: str = field(default="yuvalkirstain/PickScore_v1", metadata={"help": "hub id or local dir of PickScore's CLIPModel"})
    processor: str = field(
        default="laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
        metadata={"help": "hub id or local dir whose tokenizer/preprocessor_config PickScore uses ('' = same as model)"},
    )


@dataclass
class SentimentConfig(ClipRewardConfig):
    positive_texts: tuple[str, ...] = field(
        default=("a happy image", "a joyful, cheerful picture", "a photo full of positive emotion"),
        metadata={"help": "descriptions of the positive class (zero-shot mode)"},
    )
    negative_texts: tuple[str, ...] = field(
        default=("a sad image", "a gloomy, depressing picture", "a photo full of negative emotion"),
        metadata={"help": "descriptions of the negative class (zero-shot mode)"},
    )
    probe_path: str = field(default="", metadata={"help": "safetensors linear probe (weight, bias) on e_x; empty = zero-shot"})


def load_backbone(config: ClipRewardConfig) -> ClipBackbone:
    return ClipBackbone.from_pretrained(config.model, device=config.device, dtype=resolve_dtype(config.dtype))


class ClipScore(Reward):
    """``scale``·e_x·e_c: scale 1 is CLIPScore's cosine, scale τ is PickScore."""

    def __init__(self, config: ClipRewardConfig, backbone: ClipBackbone, use_temperature: bool = False):
        super().__init__(config)
        self.backbone = backbone
        self.use_temperature = use_temperature

    def score_batch(self, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]]) -> torch.Tensor:
        cosine = (self.backbone.image_embeds(images) * self.backbone.text_embeds(prompts)).sum(-1)
        return cosine * self.backbone.temperature.float() if self.use_temperature else cosine


@register_reward("clip_score", ClipRewardConfig)
def clip_score(config: ClipRewardConfig) -> ClipScore:
    return ClipScore(config, load_backbone(config))


@register_reward("pickscore", PickScoreConfig)
def pickscore(config: PickScoreConfig) -> ClipScore:
    backbone = load_backbone(config)
    if config.processor and config.processor != config.model:
        backbone.use_processing_of(config.processor)
    return ClipScore(config, backbone, use_temperature=True)


def save_linear_probe(path: str | os.PathLike, weight: torch.Tensor, bias: torch.Tensor | float) -> None:
    """Save a linear probe p = σ(w·e_x + b) in safetensors (``weight`` (D,), ``bias`` (1,))."""
    bias = torch.as_tensor(bias, dtype=torch.float32).reshape(1)
    save_file({"weight": weight.detach().float().reshape(-1).contiguous(), "bias": bias}, os.fspath(path))


def fit_linear_probe(
    embeds: torch.Tensor, labels: torch.Tensor, weight_decay: float = 1e-4, max_iter: int = 200
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logistic regression p = σ(w·e_x + b) on normalised embeddings (L-BFGS, L2 penalty); returns (w, b).

    Labels are 1 for the positive class and 0 otherwise. Plain torch rather than scikit-learn,
    which is not a dependency of the project.
    """
    if embeds.ndim != 2 or embeds.shape[0] != labels.shape[0]:
        raise ValueError(f"need (N, D) embeddings and N labels; got {tuple(embeds.shape)} and {tuple(labels.shape)}")
    if not set(labels.unique().tolist()) <= {0, 1}:
        raise ValueError(f"labels must be 0 or 1; got values {labels.unique().tolist()}")
    x = F.normalize(embeds.detach().float(), dim=-1)
    y = labels.detach().float()
    weight = torch.zeros(x.shape[1], requires_grad=True)
    bias = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(x @ weight + bias, y) + weight_decay * weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return weight.detach(), bias.detach()


def load_linear_probe(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no linear probe file at {os.fspath(path)!r} (expected safetensors with weight, bias)")
    tensors = load_file(os.fspath(path))
    missing = {"weight", "bias"} - set(tensors)
    if missing:
        raise ValueError(f"linear probe {os.fspath(path)!r} lacks tensor(s) {sorted(missing)}; it has {sorted(tensors)}")
    return tensors["weight"].reshape(-1), tensors["bias"].reshape(1)


class ClipSentiment(Reward):
    """P(positive | x) ∈ [0, 1] by CLIP zero-shot or a linear probe on e_x (prompt ignored)."""

    needs_prompts = False

    def __init__(self, config: SentimentConfig, backbone: ClipBackbone):
        super().__init__(config)
        self.backbone = backbone
        self.probe: tuple[torch.Tensor, torch.Tensor] | None = None
        if config.probe_path:
            weight, bias = load_linear_probe(config.probe_path)
            if weight.numel() != backbone.embed_dim:
                raise ValueError(f"linear probe has {weight.numel()} weights but the CLIP embedding has {backbone.embed_dim} dimensions")
            self.probe = (weight.to(backbone.device), bias.to(backbone.device))
        else:
            if not config.positive_texts or not config.negative_texts:
                raise ValueError("zero-shot sentiment needs non-empty positive_texts and negative_texts (or a probe_path)")
            with torch.inference_mode():
                self.class_embeds = torch.stack(
                    [
                        F.normalize(backbone.text_embeds(list(texts)).mean(0), dim=-1)
                        for texts in (config.positive_texts, config.negative_texts)
                    ]
                )

    def score_batch(self, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]]) -> torch.Tensor:
        embeds = self.backbone.image_embeds(images)
        if self.probe is not None:
            weight, bias = self.probe
            return torch.sigmoid(embeds @ weight + bias)
        logits = self.backbone.temperature.float() * embeds @ self.class_embeds.T
        return logits.softmax(dim=-1)[:, 0]


@register_reward("sentiment", SentimentConfig)
def sentiment(config: SentimentConfig) -> ClipSentiment:
    return ClipSentiment(config, load_backbone(config))
