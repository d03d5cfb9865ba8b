"""The shapes world's reward heads: procedural ground truths and their training on the world CLIP.

Every head is trained and saved through the project's reward classes (no parallel code):

- **aesthetic** — :class:`rewards.aesthetic.AestheticHead` (the LAION MLP at a smaller input
  size) fitted with :func:`rewards.aesthetic.fit_aesthetic_head` on e_x, the L2-normalised world
  CLIP image embedding, to the rating a(x) of :func:`aesthetic_rating`;
- **preference** — :class:`rewards.preference.PreferenceScorer` r_θ(x, c) trained by
  :func:`rewards.train_preference.train_preference` (Bradley–Terry) on synthetic comparisons
  sampled from the noisy utility of :func:`utility`;
- **sentiment** — a linear probe σ(w·e_x + b) fitted by :func:`rewards.clip_rewards.fit_linear_probe`
  to the label of :func:`sentiment_label`, loaded by the ``sentiment`` reward.

The rules (v6 rewards: v5's with the companion's weight raised; documented in the world card too)::

    luma(rgb)   = 0.299 R + 0.587 G + 0.114 B                            (0..255)
    contrast    = |luma(shape colour) − luma(background)| / 255            (0..0.75)
    centred     = max(0, 1 − ‖offset‖ / 0.1)                               (the seed's composition)
    a(x)        = 1 + 1.5·sharpness + 1.5·cleanliness + 1.5·vividness + 1·regularity
                    + 2.5·contrast + 1·centred + 1.5·[companion] − 2·[size = large]     (−1..~10.9)
    warmth      = red +1, yellow +1, white +0.5, green −0.5, gray −0.5, blue −1, black −1
    tint        ∈ [−1, 1], the seed's light: warm (+) or cold (−)
    sentiment   = 1  iff  tint + w·(warmth(shape colour) + warmth(background)) ≥ θ
                  (ShapesHeadsConfig's sentiment_warmth_weight w = 1 and sentiment_threshold θ = 0 by default)
    u(x, c)     = 4·adherence(x, c) + 3·contrast + 2.5·[size = large]
                  adherence = share of c's stated attributes the pixel checker reads back from x
    P[a ≻ b | c] = σ(u(x_a, c) − u(x_b, c))            (the Bradley–Terry model the scorer fits)

Trade-offs built in (v5): **a large subject enters aesthetic with −2 and preference with +2.5**:
the aesthetic rule wants space around a small subject, people want to see the subject big, so on
the base model's samples, where the seed often decides the size, aesthetic and preference pull
against each other. Both like contrast (a subject that stands out), and only aesthetic reads the
quality factors, the composition and a companion. Sentiment wants warm shapes on bright
backgrounds and warm light, so ``a blue square`` (adherence) costs sentiment unless the background
is made warm; contrast favours dark shapes on white and yellow shapes on black, while sentiment
dislikes black; a companion shape pleases aesthetic but dilutes the subject that CLIPScore and the
preference's adherence look for. v6 raises the companion's weight 0.5 → 1.5, so that about half the curated
SFT targets (:mod:`shapes.expander`) carry one and expansions dilute c, as real ones do (scene words
beside the subject), which is what prompt-centred guidance is for: with 0.5 no near-greedy expansion
named a companion and prompt-centred guidance had nothing to recover (card, v5); 2.5 (tried) put one in most
expansions but cost the SFT expander its aesthetic and preference gains over c (card: +0.74 ± 0.27, +0.19 ± 0.18).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch

from rewards import load_reward
from rewards.aesthetic import AestheticHead, AestheticHeadConfig, fit_aesthetic_head
from rewards.clip import ClipBackbone
from rewards.clip_rewards import fit_linear_probe, save_linear_probe
from rewards.train_preference import TrainPreferenceConfig, train_preference
from shapes.checker import check
from shapes.data import (
    BACKGROUNDS,
    COLOURS,
    SIZES,
    Attributes,
    Example,
    ShapesDataConfig,
    generate_examples,
    parse_caption,
    render,
    sample_attributes,
)

__all__ = [
    "WARMTH",
    "ShapesHeadsConfig",
    "aesthetic_rating",
    "centredness",
    "sentiment_label",
    "utility",
    "own_caption_utility",
    "preference_rule",
    "UTILITY_WEIGHTS",
    "image_embeddings",
    "r_squared",
    "fit_world_aesthetic",
    "fit_world_sentiment",
    "preference_pairs",
    "train_world_preference",
    "world_alignment",
    "AESTHETIC_FILE",
    "SENTIMENT_FILE",
]

AESTHETIC_FILE = "head.safetensors"
SENTIMENT_FILE = "probe.safetensors"
#: warmth of each colour (shape or background): warm and bright positive, cold and dark negative.
WARMTH = {"red": 1.0, "yellow": 1.0, "white": 0.5, "green": -0.5, "gray": -0.5, "blue": -1.0, "black": -1.0}
#: weights of u(x, c)'s terms (module docstring): [large] enters with the sign opposite to a(x)'s, contrast with the same
UTILITY_WEIGHTS = {"adherence": 4.0, "contrast": 3.0, "large": 2.5}


@dataclass
class ShapesHeadsConfig:
    """Sizes and training settings of the world's reward heads."""

    examples: int = field(default=4000, metadata={"help": "images (split 'all') the aesthetic head and probe learn from"})
    eval_examples: int = field(default=600, metadata={"help": "fresh images for held-out R² and accuracy"})
    aesthetic_hidden_dims: tuple[int, ...] = field(default=(256, 64, 16), metadata={"help": "aesthetic head widths"})
    aesthetic_dropouts: tuple[float, ...] = field(default=(0.1, 0.1, 0.0), metadata={"help": "aesthetic head dropouts"})
    aesthetic_epochs: int = field(default=200, metadata={"help": "aesthetic head epochs"})
    aesthetic_lr: float = field(default=1e-3, metadata={"help": "aesthetic head learning rate"})
    probe_weight_decay: float = field(default=1e-4, metadata={"help": "L2 penalty of the sentiment probe"})
    sentiment_warmth_weight: float = field(
        default=1.0, metadata={"help": "weight of the colours' warmth against the light's tint in the sentiment label"}
    )
    sentiment_threshold: float = field(default=0.0, metadata={"help": "mood at and above which an image is positive"})
    preference_pairs: int = field(default=8000, metadata={"help": "synthetic comparisons to train on"})
    preference_eval_pairs: int = field(default=500, metadata={"help": "held-out comparisons"})
    preference_keep: float = field(
        default=0.6, metadata={"help": "probability that a candidate image keeps each attribute of the prompt's scene"}
    )
    preference_hidden_dims: tuple[int, ...] = field(default=(128, 32, 16), metadata={"help": "scorer head widths"})
    preference_dropouts: tuple[float, ...] = field(default=(0.1, 0.1, 0.0), metadata={"help": "scorer head dropouts"})
    preference_epochs: int = field(default=5, metadata={"help": "Bradley–Terry epochs"})
    preference_batch_size: int = field(default=64, metadata={"help": "pairs per step"})
    preference_freeze_fraction: float = field(default=0.5, metadata={"help": "share of each CLIP tower kept frozen"})
    preference_lr: float = field(default=1e-4, metadata={"help": "backbone learning rate"})
    preference_head_lr: float = field(default=1e-3, metadata={"help": "head learning rate"})

    def __post_init__(self) -> None:
        self.aesthetic_hidden_dims = tuple(int(d) for d in self.aesthetic_hidden_dims)
        self.aesthetic_dropouts = tuple(float(p) for p in self.aesthetic_dropouts)
        self.preference_hidden_dims = tuple(int(d) for d in self.preference_hidden_dims)
        self.preference_dropouts = tuple(float(p) for p in self.preference_dropouts)
        for name in ("examples", "eval_examples", "aesthetic_epochs", "preference_pairs", "preference_eval_pairs"):
            if getattr(self, name) < 2:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 2")
        if not 0.0 <= self.preference_keep <= 1.0:
            raise ValueError(f"preference_keep={self.preference_keep} must lie in [0, 1]")


def centredness(attributes: Attributes) -> float:
    """max(0, 1 − ‖offset‖ / 0.1): 1 for a subject at the image centre."""
    return max(0.0, 1.0 - float(np.hypot(*attributes.offset)) / 0.1)


def aesthetic_rating(attributes: Attributes) -> float:
    """a(x) of the module docstring."""
    return (
        1.0
        + 1.5 * attributes.sharpness
        + 1.5 * attributes.cleanliness
        + 1.5 * attributes.vividness
        + 1.0 * attributes.regularity
        + 2.5 * attributes.contrast
        + 1.0 * centredness(attributes)
        + 1.5 * (attributes.companion is not None)
        - 2.0 * (attributes.size == "large")
    )


def sentiment_label(attributes: Attributes, warmth_weight: float = 1.0, threshold: float = 0.0) -> int:
    """1 (positive) iff the mood tint + ``warmth_weight``·(warmth(shape colour) + warmth(background)) ≥ ``threshold``
    (the defaults: v8's warmth(shape colour) + warmth(background) + tint ≥ 0)."""
    return int(attributes.tint + warmth_weight * (WARMTH[attributes.colour] + WARMTH[attributes.background]) >= threshold)


def preference_rule(adherence, contrast, large):
    """u = 4·adherence + 3·contrast + 2.5·[large] from its terms (floats or numpy arrays alike)."""
    return UTILITY_WEIGHTS["adherence"] * adherence + UTILITY_WEIGHTS["contrast"] * contrast + UTILITY_WEIGHTS["large"] * large


def own_caption_utility(attributes: Attributes) -> float:
    """u of a record under its own caption: adherence 1 (what the curation and the rule-level measurements score)."""
    return preference_rule(1.0, attributes.contrast, float(attributes.size == "large"))


def utility(image: np.ndarray, attributes: Attributes, prompt: str) -> float:
    """u(x, c) of the module docstring; adherence read by the pixel checker from ``image``."""
    adherence = check(image, parse_caption(prompt)).score
    return preference_rule(adherence, attributes.contrast, float(attributes.size == "large"))


def _images(examples: list[Example]) -> torch.Tensor:
    return torch.from_numpy(np.stack([e.image for e in examples])).permute(0, 3, 1, 2).float() / 255.0


@torch.no_grad()
def image_embeddings(backbone: ClipBackbone, examples: list[Example], batch_size: int = 256) -> torch.Tensor:
    """e_x of every example's image through the reward backbone (the same preprocessing the rewards use)."""
    return torch.cat([backbone.image_embeds(_images(examples[i : i + batch_size])) for i in range(0, len(examples), batch_size)])


def r_squared(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """Coefficient of determination 1 − SSE/SST."""
    residual = (target - predicted).square().sum()
    total = (target - target.mean()).square().sum()
    return float(1.0 - residual / total)


def fit_world_aesthetic(
    backbone: ClipBackbone,
    train: list[Example],
    held_out: list[Example],
    config: ShapesHeadsConfig,
    out: Path,
    seed: int,
    progress: bool = True,
) -> dict[str, float]:
    """Fit the LAION-style head to a(x); save ``out/head.safetensors``; held-out R² and MSE (``progress``: a bar)."""
    torch.manual_seed(seed)
    head = AestheticHead(
        AestheticHeadConfig(input_dim=backbone.embed_dim, hidden_dims=config.aesthetic_hidden_dims, dropouts=config.aesthetic_dropouts)
    )
    ratings = torch.tensor([aesthetic_rating(e.attributes) for e in train])
    losses = fit_aesthetic_head(
        head,
        image_embeddings(backbone, train),
        ratings,
        epochs=config.aesthetic_epochs,
        lr=config.aesthetic_lr,
        seed=seed,
        progress=progress,
    )
    with torch.no_grad():
        predicted = head(image_embeddings(backbone, held_out))
    target = torch.tensor([aesthetic_rating(e.attributes) for e in held_out])
    out.mkdir(parents=True, exist_ok=True)
    head.save(out / AESTHETIC_FILE)
    return {
        "aesthetic_train_mse": losses[-1],
        "aesthetic_held_out_mse": float((predicted - target).square().mean()),
        "aesthetic_held_out_r2": r_squared(predicted, target),
        "aesthetic_parameters": float(sum(p.numel() for p in head.parameters())),
    }


def fit_world_sentiment(
    backbone: ClipBackbone, train: list[Example], held_out: list[Example], config: ShapesHeadsConfig, out: Path
) -> dict[str, float]:
    """Fit the sentiment probe to :func:`sentiment_label`; save ``out/probe.safetensors``; accuracies."""

    def label(e: Example) -> int:
        return sentiment_label(e.attributes, config.sentiment_warmth_weight, config.sentiment_threshold)

    labels = torch.tensor([label(e) for e in train], dtype=torch.float32)
    weight, bias = fit_linear_probe(image_embeddings(backbone, train), labels, weight_decay=config.probe_weight_decay)
    out.mkdir(parents=True, exist_ok=True)
    save_linear_probe(out / SENTIMENT_FILE, weight, bias)

    def accuracy(examples: list[Example]) -> float:
        predicted = (image_embeddings(backbone, examples) @ weight + bias) > 0
        truth = torch.tensor([label(e) for e in examples], dtype=torch.bool)
        return float((predicted == truth).float().mean())

    return {
        "sentiment_train_accuracy": accuracy(train),
        "sentiment_held_out_accuracy": accuracy(held_out),
        "sentiment_positive_fraction": float(labels.mean()),
    }


def _candidate(rng: np.random.Generator, scene: Attributes, keep: float, data: ShapesDataConfig) -> Attributes:
    """A fresh draw from the world's prior (its own quality, tint, offset, companion) that keeps each
    of the prompt scene's colour, shape, size and background with probability ``keep``."""
    from dataclasses import replace

    fresh = sample_attributes(rng, [(scene.colour, scene.shape)], data)
    colour = scene.colour
    shape = scene.shape if rng.random() < keep else str(("circle", "square", "triangle")[rng.integers(3)])
    size = scene.size if rng.random() < keep else str(SIZES[rng.integers(len(SIZES))])
    backgrounds = tuple(b for b in BACKGROUNDS if b != colour)
    background = (
        scene.background if scene.background in backgrounds and rng.random() < keep else str(backgrounds[rng.integers(len(backgrounds))])
    )
    if rng.random() >= keep:
        choices = tuple(c for c in COLOURS if c != background)
        colour = str(choices[rng.integers(len(choices))])
    companion = fresh.companion
    if companion is not None and companion.colour in (colour, background):
        companion = None
    return replace(fresh, colour=colour, shape=shape, size=size, background=background, companion=companion, words=())


def preference_pairs(n: int, seed: int, config: ShapesHeadsConfig, data: ShapesDataConfig) -> tuple[datasets.Dataset, float]:
    """``n`` comparisons (prompt, image_a, image_b, preferred) drawn from the module's utility model.

    Prompts are the captions (short or detailed, by the example's mode) of fresh scenes from
    every colour × shape pair; the two candidates are perturbed renderings of the scene.
    Returns the dataset and the Bayes accuracy E[max(p, 1 − p)] that no scorer can beat.
    """
    rng = np.random.default_rng(seed)
    scenes = generate_examples(n, seed, "all", data)
    rows: dict[str, list] = {"prompt": [], "image_a": [], "image_b": [], "preferred": []}
    bayes = 0.0
    for scene in scenes:
        prompt = scene.caption
        candidates = [_candidate(rng, scene.attributes, config.preference_keep, data) for _ in range(2)]
        images = [render(a, data) for a in candidates]
        u_a, u_b = (utility(image, a, prompt) for image, a in zip(images, candidates))
        p_a = 1.0 / (1.0 + np.exp(-(u_a - u_b)))
        bayes += max(p_a, 1.0 - p_a)
        rows["prompt"].append(prompt)
        rows["image_a"].append(images[0])
        rows["image_b"].append(images[1])
        rows["preferred"].append("a" if rng.random() < p_a else "b")
    features = datasets.Features(
        {
            "prompt": datasets.Value("string"),
            "image_a": datasets.Image(),
            "image_b": datasets.Image(),
            "preferred": datasets.Value("string"),
        }
    )
    return datasets.Dataset.from_dict(rows, features=features), bayes / n


def train_world_preference(
    clip_dir: Path, config: ShapesHeadsConfig, data: ShapesDataConfig, out: Path, seed: int, progress: bool = True
) -> dict[str, float]:
    """Train the Bradley–Terry scorer on the world CLIP with ``rewards.train_preference``; save to ``out``."""
    train_pairs, _ = preference_pairs(config.preference_pairs, seed + 10, config, data)
    eval_pairs, bayes = preference_pairs(config.preference_eval_pairs, seed + 11, config, data)
    settings = TrainPreferenceConfig(
        backbone=os.fspath(clip_dir),
        output_dir=os.fspath(out),
        hidden_dims=list(config.preference_hidden_dims),
        dropouts=list(config.preference_dropouts),
        freeze_fraction=config.preference_freeze_fraction,
        epochs=config.preference_epochs,
        batch_size=config.preference_batch_size,
        learning_rate=config.preference_lr,
        head_learning_rate=config.preference_head_lr,
        seed=seed,
        progress=progress,
    )
    scorer, history = train_preference(settings, train_pairs, eval_pairs)
    return {
        "preference_held_out_accuracy": history[-1]["eval_accuracy"],
        "preference_held_out_bayes_accuracy": bayes,
        "preference_held_out_loss": history[-1]["eval_loss"],
        "preference_parameters": float(sum(p.numel() for p in scorer.parameters())),
    }


@torch.no_grad()
def world_alignment(clip_dir: Path, examples: list[Example]) -> dict[str, float]:
    """CLIPScore of the world CLIP (no training): matched vs mismatched short captions of ``examples``
    (``alignment_*``: mean cosine with the right / a wrong caption, and how often the right one scores higher)."""
    reward = load_reward("clip_score", model=str(clip_dir))
    captions = [e.short_caption for e in examples]
    wrong = [next(c for c in captions[i + 1 :] + captions[:i] if c != captions[i]) for i in range(len(captions))]
    matched, mismatched = reward(_images(examples), captions), reward(_images(examples), wrong)
    return {
        "alignment_clip_score_matched": float(matched.mean()),
        "alignment_clip_score_mismatched": float(mismatched.mean()),
        "alignment_matched_above_mismatched": float((matched > mismatched).float().mean()),
    }
