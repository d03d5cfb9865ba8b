"""The shapes world's caption tokenizer and tiny CLIP, trained contrastively from scratch.

Notation (CLIP, Radford et al. 2021): image embeddings u_i, caption embeddings v_j (both
L2-normalised projections), logits s_ij = τ·u_i·v_j with a learned temperature τ = exp(logit_scale).

The tokenizer is a ``transformers.CLIPTokenizer`` (CLIP's own normaliser, pre-tokeniser and
``</w>`` BPE) whose merges are learned on the world's captions with the ``tokenizers`` library,
so that every scene and modifier word is one token (prefix words such as ``<laion_aesthetic>``
are rarer and stay several tokens). All 256 byte symbols (with and without ``</w>``) stay in
the vocabulary, so no text ever maps to the unknown token.

The loss is CLIP's symmetric cross-entropy, except that a caption counts as a positive for
every image whose attributes it states (``a red circle`` matches every red circle in the
batch). CLIPModel's built-in ``return_loss`` assumes the diagonal is the only positive, which
is false here because short captions repeat within a batch; so the loss is computed here.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tokenizers import pre_tokenizers, trainers
from tqdm.auto import tqdm
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPTextConfig,
    CLIPTokenizer,
    CLIPVisionConfig,
    get_cosine_schedule_with_warmup,
)

from shapes.data import COLOURS, SHAPES, Attributes, Example, PromptAttributes, parse_caption, qualifies, short_prompt, with_prefix

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "ShapesClipConfig",
    "build_clip",
    "caption_matches",
    "clip_image_processor",
    "images_to_tensor",
    "multi_positive_clip_loss",
    "normalise_pixels",
    "retrieval_accuracy",
    "train_clip",
    "train_tokenizer",
]

#: OpenAI CLIP's pixel statistics (kept so the saved image processor is the stock one)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


@dataclass
class ShapesClipConfig:
    """Sizes and training settings of the tiny CLIP."""

    max_length: int = field(
        default=77, metadata={"help": "text context in tokens (77 as SD's CLIP; prefixed detailed captions take up to ~45)"}
    )
    bpe_vocab_size: int = field(default=400, metadata={"help": "BPE vocabulary size learned on the captions"})
    hidden_size: int = field(default=64, metadata={"help": "width of both towers"})
    layers: int = field(default=2, metadata={"help": "transformer layers per tower"})
    heads: int = field(default=4, metadata={"help": "attention heads per layer"})
    patch_size: int = field(default=4, metadata={"help": "ViT patch side in pixels"})
    projection_dim: int = field(default=64, metadata={"help": "shared embedding dimension"})
    steps: int = field(default=800, metadata={"help": "optimiser steps"})
    batch_size: int = field(default=64, metadata={"help": "image/caption pairs per step"})
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW peak learning rate (warm-up, then cosine decay)"})
    short_caption_probability: float = field(
        default=0.5,
        metadata={"help": "probability that a pair uses the example's own caption (short/tagged/detailed) instead of the detailed one"},
    )

    def __post_init__(self) -> None:
        for name in ("max_length", "bpe_vocab_size", "hidden_size", "layers", "heads", "patch_size", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.hidden_size % self.heads:
            raise ValueError(f"hidden_size={self.hidden_size} must be divisible by heads={self.heads}")
        if not 0.0 <= self.short_caption_probability <= 1.0:
            raise ValueError(f"short_caption_probability={self.short_caption_probability} must lie in [0, 1]")


def train_tokenizer(captions: list[str], vocab_size: int = 400, max_length: int = 32) -> CLIPTokenizer:
    """Learn BPE merges on ``captions`` and return them as a stock ``CLIPTokenizer``."""
    if not captions:
        raise ValueError("train_tokenizer needs at least one caption")
    backend = CLIPTokenizer().backend_tokenizer  # CLIP's normaliser + pre-tokeniser around an empty BPE
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    backend.train_from_iterator(captions, trainer)
    model = json.loads(backend.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    # The trainer numbers its initial alphabet in hash-set order, which varies between runs; number
    # the vocabulary here instead (specials, byte symbols with and without </w>, then merges in rank
    # order) so that a seed gives the same token ids, hence the same CLIP, every time.
    ordered = [BOS, EOS]
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        ordered += [symbol, symbol + "</w>"]
    ordered += [a + b for a, b in merges] + sorted(model["vocab"])
    vocab: dict[str, int] = {}
    for token in ordered:
        vocab.setdefault(token, len(vocab))
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges)
    tokenizer.model_max_length = max_length
    return tokenizer


def build_clip(tokenizer: CLIPTokenizer, config: ShapesClipConfig, image_size: int = 32) -> CLIPModel:
    """A randomly initialised tiny ``CLIPModel`` sized by ``config``."""
    common = dict(
        hidden_size=config.hidden_size,
        intermediate_size=4 * config.hidden_size,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
    )
    text = CLIPTextConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=config.max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **common,
    )
    vision = CLIPVisionConfig(image_size=image_size, patch_size=config.patch_size, num_channels=3, **common)
    return CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=config.projection_dim))


def clip_image_processor(image_size: int = 32):
    """The stock CLIP image processor for this world's image size (saved next to the model)."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    )


def images_to_tensor(examples: list[Example]) -> torch.Tensor:
    """uint8 H×W×3 images → float B×3×H×W in [0, 1] (the project's image convention)."""
    if not examples:
        raise ValueError("images_to_tensor needs at least one example")
    import numpy as np

    return torch.from_numpy(np.stack([e.image for e in examples])).permute(0, 3, 1, 2).float() / 255.0


def normalise_pixels(images: torch.Tensor) -> torch.Tensor:
    """B×3×H×W in [0, 1] → CLIP's normalised ``pixel_values`` (what the image processor computes)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape B×3×H×W, got {tuple(images.shape)}")
    mean = torch.tensor(CLIP_MEAN, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean) / std


def _describes(prompt: PromptAttributes, image: Attributes) -> bool:
    """True iff every attribute, the companion and every modifier word ``prompt`` states is true of ``image``."""
    if any(getattr(image, k) != v for k, v in prompt.stated().items()):
        return False
    if prompt.companion is not None and (image.companion is None or (image.companion.colour, image.companion.shape) != prompt.companion):
        return False
    return all(qualifies(image, w) for w in prompt.words)


def caption_matches(prompts: list[PromptAttributes], images: list[Attributes]) -> torch.Tensor:
    """M[i, j] = 1 where caption j states only what is true of image i (attributes, companion, modifiers)."""
    return torch.tensor([[float(_describes(p, image)) for p in prompts] for image in images])


def multi_positive_clip_loss(logits_per_image: torch.Tensor, matches: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy of s_ij against targets spread uniformly over each row's/column's positives."""
    if logits_per_image.shape != matches.shape:
        raise ValueError(f"logits {tuple(logits_per_image.shape)} and matches {tuple(matches.shape)} differ in shape")
    if (matches.sum(1) == 0).any() or (matches.sum(0) == 0).any():
        raise ValueError("every image and every caption needs at least one positive in the batch")
    image_targets = matches / matches.sum(1, keepdim=True)
    text_targets = matches.t() / matches.t().sum(1, keepdim=True)
    image_loss = -(image_targets * F.log_softmax(logits_per_image, dim=1)).sum(1).mean()
    text_loss = -(text_targets * F.log_softmax(logits_per_image.t(), dim=1)).sum(1).mean()
    return 0.5 * (image_loss + text_loss)


def train_clip(
    model: CLIPModel,
    tokenizer: CLIPTokenizer,
    examples: list[Example],
    config: ShapesClipConfig,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, float]:
    """Train ``model`` in place on ``examples``; returns ``{"final_loss", "seconds"}``."""
    if len(examples) < config.batch_size:
        raise ValueError(f"need at least batch_size={config.batch_size} examples, got {len(examples)}")
    generator = torch.Generator().manual_seed(seed)
    pixels = normalise_pixels(images_to_tensor(examples))
    own = [e.caption for e in examples]
    detailed = [e.detailed_caption for e in examples]
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.01)
    schedule = get_cosine_schedule_with_warmup(optimiser, max(1, config.steps // 20), config.steps)
    model.train()
    start, loss = time.perf_counter(), torch.tensor(float("nan"))
    for _ in tqdm(range(config.steps), desc="clip", disable=not progress):
        index = torch.randperm(len(examples), generator=generator)[: config.batch_size].tolist()
        use_short = (torch.rand(len(index), generator=generator) < config.short_caption_probability).tolist()
        captions = [own[i] if s else with_prefix(detailed[i], examples[i].prefix) for i, s in zip(index, use_short)]
        tokens = tokenizer(captions, padding="max_length", truncation=True, max_length=config.max_length, return_tensors="pt")
        output = model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask, pixel_values=pixels[index])
        matches = caption_matches([parse_caption(c) for c in captions], [examples[i].attributes for i in index])
        loss = multi_positive_clip_loss(output.logits_per_image, matches)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
    model.eval()
    return {"final_loss": loss.item(), "seconds": time.perf_counter() - start}


@torch.no_grad()
def retrieval_accuracy(model: CLIPModel, tokenizer: CLIPTokenizer, examples: list[Example]) -> float:
    """Top-1 accuracy of picking each image's short caption among all colour × shape short captions."""
    if not examples:
        raise ValueError("retrieval_accuracy needs at least one example")
    candidates = [short_prompt(c, s) for c in COLOURS for s in SHAPES]
    tokens = tokenizer(candidates, padding="max_length", truncation=True, return_tensors="pt")
    text = F.normalize(model.get_text_features(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).pooler_output, dim=-1)
    image = F.normalize(model.get_image_features(pixel_values=normalise_pixels(images_to_tensor(examples))).pooler_output, dim=-1)
    predicted = (image @ text.t()).argmax(1).tolist()
    truth = [candidates.index(e.short_caption) for e in examples]
    return sum(p == t for p, t in zip(predicted, truth)) / len(examples)
