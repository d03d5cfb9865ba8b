"""CLIP as used by the rewards: torch preprocessing and L2-normalised embeddings.

Notation (Radford et al. 2021; CLIPScore, Hessel et al. 2021): e_x = f(x)/‖f(x)‖ is the
normalised image embedding, e_c = g(c)/‖g(c)‖ the normalised text embedding, cos(x, c) =
e_x·e_c, and τ = exp(logit_scale) the learned temperature (PickScore's score is τ·cos).

Images are preprocessed here in torch rather than with transformers' ``CLIPImageProcessor``:
without torchvision that processor falls back to a PIL backend, which would send every
generated tensor through uint8 PIL images on the CPU. The torch path does the same steps
(bicubic resize of the shortest side, centre crop, mean/std normalisation) on the reward's
device, reading the sizes and statistics from the checkpoint's ``preprocessor_config.json``
when there is one. Resizing uses antialiased bicubic interpolation, so values differ from
PIL's by interpolation rounding only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, CLIPModel
from transformers.utils import cached_file

from t2i.sources import resolve_model_source

__all__ = ["ClipBackbone", "ImagePreprocessor", "resolve_model_source", "OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD"]

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _side(value: int | dict | None, default: int) -> tuple[int, int] | int:
    """Read a transformers ``size``/``crop_size`` entry: int side, shortest edge, or (h, w)."""
    if value is None:
        return default
    if isinstance(value, int):
        return value
    if "shortest_edge" in value:
        return int(value["shortest_edge"])
    return int(value["height"]), int(value["width"])


@dataclass
class ImagePreprocessor:
    """Torch equivalent of the CLIP-family image processors (resize, centre crop, normalise)."""

    resize: int | tuple[int, int] = 224  # int: shortest side; (h, w): exact size
    crop: tuple[int, int] = (224, 224)
    mean: tuple[float, ...] = OPENAI_CLIP_MEAN
    std: tuple[float, ...] = OPENAI_CLIP_STD

    @classmethod
    def from_pretrained(cls, source: str, image_size: int) -> ImagePreprocessor:
        """Read ``preprocessor_config.json`` if the checkpoint has one; else CLIP's defaults at ``image_size``."""
        file = cached_file(source, "preprocessor_config.json", _raise_exceptions_for_missing_entries=False)
        if file is None:
            return cls(resize=image_size, crop=(image_size, image_size))
        settings = json.loads(Path(file).read_text())
        resize = _side(settings.get("size"), image_size) if settings.get("do_resize", True) else image_size
        crop = _side(settings.get("crop_size"), image_size) if settings.get("do_center_crop", True) else resize
        crop = (crop, crop) if isinstance(crop, int) else crop
        mean = tuple(settings.get("image_mean", OPENAI_CLIP_MEAN))
        std = tuple(settings.get("image_std", OPENAI_CLIP_STD))
        return cls(resize=resize, crop=crop, mean=mean, std=std)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] → normalised pixel values (B, 3, crop_h, crop_w)."""
        height, width = images.shape[-2:]
        if isinstance(self.resize, int):
            scale = self.resize / min(height, width)
            size = (max(self.crop[0], round(height * scale)), max(self.crop[1], round(width * scale)))
        else:
            size = self.resize
        if (height, width) != tuple(size):
            images = F.interpolate(images, size=size, mode="bicubic", align_corners=False, antialias=True)
        top = (images.shape[-2] - self.crop[0]) // 2
        left = (images.shape[-1] - self.crop[1]) // 2
        images = images[..., top : top + self.crop[0], left : left + self.crop[1]].clamp(0, 1)
        mean = images.new_tensor(self.mean).view(1, -1, 1, 1)
        std = images.new_tensor(self.std).view(1, -1, 1, 1)
        return (images - mean) / std


class ClipBackbone(torch.nn.Module):
    """A transformers ``CLIPModel`` with its tokenizer and torch preprocessing; gives e_x, e_c, τ."""

    def __init__(self, model: CLIPModel, tokenizer, preprocess: ImagePreprocessor):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.preprocess = preprocess

    @classmethod
    def from_pretrained(
        cls, source: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> ClipBackbone:
        """Load a ``CLIPModel`` + tokenizer from a hub id (e.g. ``openai/clip-vit-large-patch14``) or a local directory."""
        source = resolve_model_source(source)
        try:
            model = CLIPModel.from_pretrained(source, dtype=dtype)
            tokenizer = AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError) as err:
            raise OSError(f"could not load a CLIP model and tokenizer from {source!r}: {err}") from err
        preprocess = ImagePreprocessor.from_pretrained(source, model.config.vision_config.image_size)
        return cls(model.eval(), tokenizer, preprocess).to(device)

    def use_processing_of(self, source: str | os.PathLike) -> None:
        """Take the tokenizer and image preprocessing of another checkpoint (PickScore uses CLIP-H's)."""
        source = resolve_model_source(source, required_file="tokenizer_config.json")
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        self.preprocess = ImagePreprocessor.from_pretrained(source, self.model.config.vision_config.image_size)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Save the model (safetensors) and tokenizer so that :meth:`from_pretrained` reloads them."""
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def embed_dim(self) -> int:
        return self.model.config.projection_dim

    @property
    def temperature(self) -> torch.Tensor:
        """τ = exp(logit_scale)."""
        return self.model.logit_scale.exp()

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Unnormalised projected image features f(x), (B, D); images (B, 3, H, W) in [0, 1]."""
        pixels = self.preprocess(images.to(self.device, torch.float32)).to(self.model.dtype)
        pooled = self.model.vision_model(pixel_values=pixels).pooler_output
        return self.model.visual_projection(pooled).float()

    def text_features(self, prompts: list[str]) -> torch.Tensor:
        """Unnormalised projected text features g(c), (B, D); prompts longer than the context are truncated."""
        tokens = self.tokenizer(prompts, padding=True, truncation=True, return_tensors="pt").to(self.device)
        pooled = self.model.text_model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).pooler_output
        return self.model.text_projection(pooled).float()

    def image_embeds(self, images: torch.Tensor) -> torch.Tensor:
        """e_x = f(x)/‖f(x)‖, (B, D)."""
        return F.normalize(self.image_features(images), dim=-1)

    def text_embeds(self, prompts: list[str]) -> torch.Tensor:
        """e_c = g(c)/‖g(c)‖, (B, D)."""
        return F.normalize(self.text_features(prompts), dim=-1)
