"""The shapes world's build settings: :class:`BuildConfig` (every stage's settings) and :func:`quick_config`
(the seconds-long variant the tests run). Used by :mod:`shapes.build`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from parrot_base.config import ConfigError, config_from_dict, config_to_dict, merge_values, read_config_file
from shapes.card import CardSettings
from shapes.clip import ShapesClipConfig
from shapes.data import ShapesDataConfig
from shapes.expander import ShapesExpanderConfig
from shapes.heads import ShapesHeadsConfig
from shapes.identifiers import IdentifierInvarianceConfig
from shapes.sd import ShapesSDConfig
from shapes.sd3 import ShapesSD3Config

__all__ = ["BuildConfig", "quick_config", "build_config_with"]


@dataclass
class BuildConfig:
    """What to build; ``quick_config()`` gives the seconds-long variant the tests run."""

    seed: int = field(default=0, metadata={"help": "seed of every random choice in the build"})
    train_examples: int = field(default=10000, metadata={"help": "training images generated"})
    eval_examples: int = field(default=300, metadata={"help": "fresh images per evaluation split"})
    data: ShapesDataConfig = field(default_factory=ShapesDataConfig, metadata={"help": "generator settings"})
    clip: ShapesClipConfig = field(default_factory=ShapesClipConfig, metadata={"help": "tiny CLIP settings"})
    sd: ShapesSDConfig = field(default_factory=ShapesSDConfig, metadata={"help": "tiny Stable Diffusion settings"})
    identifiers: IdentifierInvarianceConfig = field(
        default_factory=IdentifierInvarianceConfig, metadata={"help": "the SD UNet's identifier-prefix distillation (shapes.identifiers)"}
    )
    sd3: ShapesSD3Config = field(default_factory=ShapesSD3Config, metadata={"help": "SD3-architecture model settings"})
    heads: ShapesHeadsConfig = field(default_factory=ShapesHeadsConfig, metadata={"help": "reward head settings"})
    expander: ShapesExpanderConfig = field(default_factory=ShapesExpanderConfig, metadata={"help": "expander settings"})
    card: CardSettings = field(default_factory=CardSettings, metadata={"help": "sampling of the card's figures"})

    def __post_init__(self) -> None:
        if self.train_examples < self.clip.batch_size:
            raise ValueError(f"train_examples={self.train_examples} is smaller than clip.batch_size={self.clip.batch_size}")
        if self.eval_examples < 1:
            raise ValueError(f"eval_examples={self.eval_examples} must be >= 1")


def quick_config(seed: int = 0) -> BuildConfig:
    """A build that runs end to end in seconds (same architectures, toy widths and step counts)."""
    return BuildConfig(
        seed=seed,
        train_examples=256,
        eval_examples=24,
        clip=ShapesClipConfig(hidden_size=32, heads=2, layers=1, patch_size=8, projection_dim=32, steps=20, batch_size=32),
        sd=ShapesSDConfig(
            vae_channels=(8, 16),
            vae_steps=10,
            vae_batch_size=8,
            unet_channels=(16, 32),
            unet_cross_attention=(False, True),
            unet_heads=2,
            unet_steps=10,
            unet_batch_size=8,
            eval_steps=2,
            eval_images_per_prompt=1,
        ),
        identifiers=IdentifierInvarianceConfig(steps=3, batch_size=4),
        sd3=ShapesSD3Config(layers=1, heads=2, head_dim=8, steps=10, batch_size=8),
        heads=ShapesHeadsConfig(
            examples=200,
            eval_examples=60,
            aesthetic_hidden_dims=(16, 8),
            aesthetic_dropouts=(0.0, 0.0),
            aesthetic_epochs=5,
            preference_pairs=48,
            preference_eval_pairs=16,
            preference_hidden_dims=(16, 8),
            preference_dropouts=(0.0, 0.0),
            preference_epochs=1,
            preference_batch_size=16,
        ),
        expander=ShapesExpanderConfig(
            max_steps=4, batch_size=8, n_embd=32, n_head=2, vocab_size=300, eval_pairs=8, expansions_per_prompt=1
        ),
        card=CardSettings(images_per_prompt=2, num_steps=2, rule_samples=3000, sampled_draws=2),
    )


def build_config_with(path: Path | None, seed: int, quick: bool = False) -> BuildConfig:
    """The build's settings: the defaults (``quick``: :func:`quick_config`'s), with the YAML mapping in ``path`` laid
    over them field by field (e.g. ``data: {light_strength: 0.2}``), and ``seed``. Unknown keys and values of the wrong
    type are refused by their dotted name in one line (:class:`parrot_base.config.ConfigError`)."""
    base = quick_config(seed) if quick else BuildConfig(seed=seed)
    if path is None:
        return base
    values = read_config_file(path, expected="a YAML mapping of the build's settings")
    if "seed" in values:
        raise ConfigError(f"--config {path}: set the seed with --seed, not in the file")
    return config_from_dict(BuildConfig, merge_values(config_to_dict(base), values))
