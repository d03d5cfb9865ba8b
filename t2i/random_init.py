"""Full-size architectures with random weights, built offline: SD 1.5, SDXL base, SD3.5 Medium, FLUX.1-dev.

The architectures are JSON files in ``t2i/architectures/`` (shipped with the package), one per model:
each component (``unet`` / ``transformer``, ``vae``, ``text_encoder*``, ``tokenizer*``, ``scheduler``) is a
class name from :data:`COMPONENT_CLASSES` and the keyword arguments of its config, copied from the public
``config.json`` files of the model repositories (no weights). ``published_parameters`` holds each
weighted component's published parameter count (tests hold the built models to it within 1 %).
``clip_vit_l14`` (a reward backbone) and ``gpt2`` (an expander) are single-model architectures.

Tokenizers are built in memory: CLIP's is :func:`t2i.tiny.byte_level_clip_tokenizer` (its 514 ids are a
subset of CLIP's 49408, which random weights do not mind), T5's a character-level Unigram
(:func:`character_level_t5_tokenizer`). Nothing is downloaded::

    from t2i.random_init import build_random_pipeline, parameter_counts
    pipe = build_random_pipeline("sd15")                   # a stock StableDiffusionPipeline, random weights
    parameter_counts("flux_dev")                           # on the meta device: nothing is allocated
    build_random_pipeline("sd35_medium", device="meta", skip=("text_encoder_3",))  # T5 left out

In training configs the pipeline name ``builtin:random:<arch>`` (e.g. ``builtin:random:sd15``) builds one.
"""

from __future__ import annotations

import contextlib
import json
import string
from pathlib import Path
from typing import Any

import diffusers
import torch
import transformers
from transformers import PreTrainedTokenizerBase

from t2i.tiny import byte_level_clip_tokenizer

__all__ = [
    "ARCHITECTURES_DIR",
    "COMPONENT_CLASSES",
    "architecture_names",
    "read_architecture",
    "build_component",
    "build_random_pipeline",
    "parameter_counts",
    "build_random_model",
    "character_level_t5_tokenizer",
]

ARCHITECTURES_DIR = Path(__file__).resolve().parent / "architectures"

_DIFFUSERS_CLASSES = ("UNet2DConditionModel", "SD3Transformer2DModel", "FluxTransformer2DModel", "AutoencoderKL")
_TRANSFORMERS_CLASSES = ("CLIPTextModel", "CLIPTextModelWithProjection", "T5EncoderModel", "CLIPModel", "GPT2LMHeadModel")
_SCHEDULERS = ("PNDMScheduler", "DDIMScheduler", "EulerDiscreteScheduler", "FlowMatchEulerDiscreteScheduler")
_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionXLPipeline", "StableDiffusion3Pipeline", "FluxPipeline")
_CONFIG_CLASSES = {"CLIPTextModel": "CLIPTextConfig", "CLIPTextModelWithProjection": "CLIPTextConfig", "T5EncoderModel": "T5Config",
                   "CLIPModel": "CLIPConfig", "GPT2LMHeadModel": "GPT2Config"}  # fmt: skip


def character_level_t5_tokenizer(model_max_length: int = 512) -> PreTrainedTokenizerBase:
    """A T5 tokenizer (Unigram, ``<pad>`` = 0, ``</s>`` = 1, ``<unk>`` = 2 as in T5) over printable ASCII characters."""
    chars = [c for c in string.printable if not c.isspace()]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    vocab += [("\u2581" + c, -2.0) for c in chars] + [(c, -3.0) for c in chars]
    tokenizer = transformers.T5TokenizerFast(vocab=vocab, extra_ids=0)
    tokenizer.model_max_length = model_max_length
    return tokenizer


_TOKENIZERS = {
    "ByteLevelCLIPTokenizer": lambda config: byte_level_clip_tokenizer(config.get("model_max_length", 77)),
    "CharacterLevelT5Tokenizer": lambda config: character_level_t5_tokenizer(config.get("model_max_length", 512)),
}
#: every class an architecture file may name (nothing else is ever imported from a file's text)
COMPONENT_CLASSES = frozenset(_DIFFUSERS_CLASSES + _TRANSFORMERS_CLASSES + _SCHEDULERS + _PIPELINES) | frozenset(_TOKENIZERS)


def architecture_names() -> list[str]:
    """Names of the shipped architectures (the JSON files' stems)."""
    return sorted(p.stem for p in ARCHITECTURES_DIR.glob("*.json"))


def read_architecture(name: str) -> dict[str, Any]:
    """The architecture ``name`` (a shipped name, or a path to a JSON file of the same layout)."""
    path = Path(name) if name.endswith(".json") else ARCHITECTURES_DIR / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"unknown architecture {name!r}: choose one of {', '.join(architecture_names())} or give a .json file")
    architecture = json.loads(path.read_text(encoding="utf-8"))
    if architecture.get("pipeline_class", _PIPELINES[0]) not in _PIPELINES:
        raise ValueError(f"{path.name}: pipeline_class {architecture['pipeline_class']!r} is not one of {list(_PIPELINES)}")
    for component, spec in architecture["components"].items():
        if spec is None:  # a component the pipeline accepts as None (e.g. SD3's T5), left out by the file
            continue
        if spec.get("class") not in COMPONENT_CLASSES:
            raise ValueError(
                f"{path.name}: component {component!r} names class {spec.get('class')!r}, not one of {sorted(COMPONENT_CLASSES)}"
            )
    return architecture


def build_component(spec: dict[str, Any], dtype: torch.dtype = torch.float32) -> Any:
    """One component with random weights from its ``{"class", "config"}`` spec (weights cast to ``dtype``)."""
    name, config = spec["class"], dict(spec.get("config", {}))
    if name in _TOKENIZERS:
        return _TOKENIZERS[name](config)
    if name in _SCHEDULERS:
        return getattr(diffusers, name).from_config(config)  # as diffusers reads a scheduler_config.json (extra keys ignored)
    if name in _DIFFUSERS_CLASSES:
        model = getattr(diffusers, name)(**config)
    else:
        model = getattr(transformers, name)(getattr(transformers, _CONFIG_CLASSES[name])(**config))
    return (model if dtype == torch.float32 else model.to(dtype=dtype)).eval()


def _weighted(architecture: dict[str, Any]) -> list[str]:
    return [
        c
        for c, spec in architecture["components"].items()
        if spec is not None and spec["class"] in _DIFFUSERS_CLASSES + _TRANSFORMERS_CLASSES
    ]


def build_random_pipeline(
    name: str, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", seed: int = 0, skip: tuple[str, ...] = ()
) -> diffusers.DiffusionPipeline:
    """The stock diffusers pipeline of architecture ``name`` with random weights (seeded by ``seed``).

    Weights are created on ``device`` (fast random init on a GPU); ``device="meta"`` allocates none
    (accelerate's ``init_empty_weights`` would untie T5's and GPT-2's tied embeddings), for
    parameter counts and memory estimates; ``skip`` names components to leave out (``None``), e.g. the
    T5 encoder of SD3 (``text_encoder_3``), which its pipeline accepts; a file may also give a
    component as ``null`` to leave it out.
    """
    architecture = read_architecture(name)
    if "pipeline_class" not in architecture:
        raise ValueError(f"architecture {name!r} is a single model, not a pipeline")
    torch.manual_seed(seed)
    components = {}
    for component, spec in architecture["components"].items():
        if spec is None or component in skip:
            components[component] = None
            continue
        weighted = spec["class"] in _DIFFUSERS_CLASSES + _TRANSFORMERS_CLASSES
        with torch.device(device) if weighted else contextlib.nullcontext():  # weights made where they live
            components[component] = build_component(spec, dtype)
    pipeline_class = getattr(diffusers, architecture["pipeline_class"])
    if pipeline_class is diffusers.StableDiffusionPipeline:
        components |= {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    return pipeline_class(**components, **architecture.get("pipeline_config", {}))


def parameter_counts(name: str) -> dict[str, int]:
    """Parameters of each weighted component of architecture ``name``, counted on the meta device."""
    architecture = read_architecture(name)
    counts = {}
    with torch.device("meta"):
        for component in _weighted(architecture):
            model = build_component(architecture["components"][component])
            counts[component] = sum(p.numel() for p in model.parameters())
    return counts


def build_random_model(name: str, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.nn.Module:
    """The ``model`` of a single-model architecture (``clip_vit_l14``, ``gpt2``) with random weights."""
    architecture = read_architecture(name)
    if "model" not in architecture["components"]:
        raise ValueError(f"architecture {name!r} is a pipeline, not a single model")
    torch.manual_seed(seed)
    return build_component(architecture["components"]["model"], dtype)
