"""Which policy family a pipeline is: read from its ``model_index.json`` (``_class_name``).

Every loader of the project (training, generation, best-of-N, the wrong LoRA) goes through
:func:`load_policy`, so a user changes only the pipeline's name or directory to switch families.
A local directory's ``model_index.json`` is read directly; a hub id's through
``huggingface_hub.hf_hub_download`` (which reads the local cache under ``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from huggingface_hub import hf_hub_download

from t2i.flux import FluxPolicy
from t2i.policy import DiffusionPolicy, StableDiffusionPolicy
from t2i.sd3 import StableDiffusion3Policy
from t2i.sdxl import StableDiffusionXLPolicy
from t2i.sources import resolve_model_source

__all__ = ["POLICY_FAMILIES", "load_policy", "pipeline_class_name", "policy_class_for", "policy_of_pipeline"]

#: diffusers pipeline class name → the policy family that drives it
POLICY_FAMILIES: dict[str, type[DiffusionPolicy]] = {
    "StableDiffusionPipeline": StableDiffusionPolicy,
    "StableDiffusionXLPipeline": StableDiffusionXLPolicy,
    "StableDiffusion3Pipeline": StableDiffusion3Policy,
    "FluxPipeline": FluxPolicy,
}


def pipeline_class_name(name_or_path: str | os.PathLike) -> str:
    """``_class_name`` of the pipeline's ``model_index.json`` ('' when it has none)."""
    source = resolve_model_source(name_or_path, "model_index.json", kind="diffusers pipeline")
    if Path(source).is_dir():
        index = Path(source) / "model_index.json"
    else:
        try:
            index = Path(hf_hub_download(source, "model_index.json"))
        except (OSError, ValueError) as err:
            raise OSError(f"could not read the model_index.json of {source!r}: it is not a local directory, nor a hub id ({err})") from err
    return str(json.loads(index.read_text(encoding="utf-8")).get("_class_name", ""))


def policy_class_for(name_or_path: str | os.PathLike) -> type[DiffusionPolicy]:
    """The policy family of the pipeline ``name_or_path``; refuses a pipeline class no family drives."""
    name = pipeline_class_name(name_or_path)
    if name not in POLICY_FAMILIES:
        supported = ", ".join(POLICY_FAMILIES)
        found = f"a {name}" if name else "a pipeline without _class_name in model_index.json"
        raise ValueError(f"{os.fspath(name_or_path)!r} is {found}; the policy families drive {supported}")
    return POLICY_FAMILIES[name]


def load_policy(
    name_or_path: str | os.PathLike, *, torch_dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", **kwargs
) -> DiffusionPolicy:
    """The policy of the family ``model_index.json`` names, loaded from a hub id or a local directory."""
    return policy_class_for(name_or_path).from_pretrained(name_or_path, torch_dtype=torch_dtype, device=device, **kwargs)


def policy_of_pipeline(pipeline) -> DiffusionPolicy:
    """A loaded pipeline object as the policy of its family (by its class, as :func:`policy_class_for` by name)."""
    name = type(pipeline).__name__
    if name not in POLICY_FAMILIES:
        raise ValueError(f"a {name} has no policy family; the policy families drive {', '.join(POLICY_FAMILIES)}")
    return POLICY_FAMILIES[name](pipeline)
