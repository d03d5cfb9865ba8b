"""The named presets of ``python -m parrot.train``: nested mappings of config values under the
YAML file and ``--dotted.field`` overrides (:func:`parrot.train_config.load_train_config`).

``tiny`` is a random toy world built in code (runs anywhere, offline). ``shapes`` (the default)
runs on a built shapes world through ``{world}`` paths that :mod:`parrot.models` resolves;
no preset imports the world's code.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from parrot_base.config import read_yaml

__all__ = ["DEFAULT_PRESET", "PRESETS", "preset_name"]

_TINY_PROMPTS = (
    "a red circle",
    "a blue square",
    "a green triangle",
    "a yellow star",
    "two red squares",
    "a small blue circle",
    "a big green square",
    "a purple triangle",
)
_TINY_HELD_OUT = ("a red square", "a blue triangle", "a green circle", "a yellow square")

PRESETS: dict[str, dict[str, Any]] = {
    # A random toy SD, a random toy CLIP behind two CLIP rewards, JPEG compressibility and a
    # random GPT-2 expander: exercises every code path offline on CPU in a few minutes.
    "tiny": {
        "iterations": 20,
        "checkpoint_every": 10,
        "output_dir": "runs/train-tiny",
        "model": {"pipeline": "builtin:tiny", "lora": {"rank": 4}},
        "rewards": {
            "names": ["jpeg_compressibility", "clip_score", "sentiment"],
            "settings": {"clip_score": {"model": "builtin:tiny_clip"}, "sentiment": {"model": "builtin:tiny_clip"}},
        },
        "prompts": {"train": list(_TINY_PROMPTS), "evaluation": list(_TINY_HELD_OUT)},
        # 2 prompts × 3 identifiers (one expansion each) × 2 images = 12 images per process
        "sampling": {"prompts_per_process": 2, "images_per_prompt": 6, "num_steps": 10, "w1": 2.0, "w2": 2.0, "guidance_scale": 3.0},
        # every denoising step is trained, as the paper accumulates the gradient over all of them
        "t2i": {"lr": 1e-3, "estimator": "is", "clip_range": 0.2, "inner_epochs": 2, "timestep_fraction": 1.0},
        "expander": {
            "model": "builtin:tiny_gpt2",
            "lr": 1e-3,
            "lora_rank": 4,
            "sampling": {"max_new_tokens": 12},
            "update": {"kl_weight": 0.05},
        },
        "logging": {"images_every": 10},
    },
}
PRESETS["shapes"] = {
    # The shapes world (v4 models, v5 rewards; python -m shapes.build): a trained tiny SD, its expander and the four
    # rewards of the Parrot paper's loop, all loaded through the same classes as the real models.
    "iterations": 40,
    "checkpoint_every": 20,
    "output_dir": "runs/train-shapes",
    "model": {"pipeline": "{world}/sd", "lora": {"rank": 4}},
    "rewards": {
        "names": ["laion_aesthetic", "preference", "clip_score", "sentiment"],
        "settings": {
            "laion_aesthetic": {"clip_model": "{world}/clip", "head_path": "{world}/aesthetic/head.safetensors"},
            "preference": {"path": "{world}/preference"},
            "clip_score": {"model": "{world}/clip"},
            "sentiment": {"model": "{world}/clip", "probe_path": "{world}/sentiment/probe.safetensors"},
            # GenEval-style: the world's pixel checker (named, imported by the reward only when it is used)
            "attribute_rules": {"checker": "shapes.checker:prompt_verdicts"},
        },
    },
    # the world's own prompt files (shapes.data.PROMPT_FILES): its train split and held-out colour × shape pairs
    "prompts": {"train_file": "{world}/prompts/train.txt", "evaluation_file": "{world}/prompts/held_out.txt"},
    # 1 prompt × 4 identifiers (one ĉ each) × 4 images = 16 images per iteration; training samples use
    # CFG 4 on "<k>, ĉ", the held-out table prompt-centred guidance w1 = w2 = 2 with all identifiers
    "sampling": {
        "prompts_per_process": 1,
        "expansions_per_prompt": 1,
        "images_per_prompt": 16,
        "num_steps": 20,
        "w1": 2.0,
        "w2": 2.0,
        "guidance_scale": 4.0,
    },
    # every denoising step is trained, as the paper accumulates the gradient over all of them
    "t2i": {"lr": 1e-3, "estimator": "is", "clip_range": 0.2, "inner_epochs": 2, "timestep_fraction": 1.0},
    # at 1e-4 the expander's LoRA changed no sampled token in 6 iterations on the v3 world; 2e-3 learns
    "expander": {
        "model": "{world}/expander",
        "lr": 2e-3,
        "lora_rank": 4,
        "sampling": {"max_new_tokens": 48},
        "update": {"kl_weight": 0.05},
    },
    # 3 held-out colour × shape pairs × 8 seeds: 24 images per column of the held-out table
    "evaluation": {"seeds": [0, 1, 2, 3, 4, 5, 6, 7]},
    "logging": {"images_every": 10},
    # Reward identifiers on, one letter per reward ("l p c s, ĉ" at evaluation): the world's text
    # tower and UNet were trained with identifier tokens and filler words in front of ~30% of
    # captions, and v6/v7 distil the SD UNet and its text tower so that a prefix changes nothing (shapes/identifiers.py).
    # Measured on the untrained model (48 held-out images, Δ ± paired SE against c alone, v7):
    # "l p c s" moves aesthetic +0.006 ± 0.023, preference +0.047 ± 0.023, CLIPScore +0.0006 ± 0.0012,
    # sentiment +0.007 ± 0.009 (v6: −0.14, +0.03, −0.010, −0.05; shapes/world/WORLD.md, identifier rows).
    "identifiers": {"enabled": True, "template": "{name:.1}"},
}
#: the committed shapes world (shapes/world); ``tiny`` is the random toy built in code.
DEFAULT_PRESET = "shapes"


def preset_name(argv: Sequence[str]) -> str:
    """The preset named by ``--preset``, else the config file's ``preset:`` key, else the default."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--preset")
    parser.add_argument("--config", type=Path)
    known, _ = parser.parse_known_args(list(argv))
    if known.preset:
        return known.preset
    if known.config is not None and known.config.is_file():
        loaded = read_yaml(known.config, "--config") or {}
        if isinstance(loaded, dict) and loaded.get("preset"):
            return str(loaded["preset"])
    return DEFAULT_PRESET
