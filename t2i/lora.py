"""PEFT LoRA on the UNet's attention projections, saved and loaded in diffusers' LoRA format.

The files are what ``StableDiffusionPipeline.save_lora_weights`` writes
(``pytorch_lora_weights.safetensors`` plus the adapter's config as metadata), so a stock
``pipeline.load_lora_weights(dir)`` loads our adapters and we load anyone's. :class:`LoraMixin`
gives a policy (anything with ``pipeline`` and ``unet``) these as methods, and the base model θ_0
by switching the adapters off.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import DiffusionPipeline
from diffusers.utils import convert_state_dict_to_diffusers
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

__all__ = ["LoraMixin", "LoraSettings", "add_lora", "save_lora", "load_lora", "LORA_WEIGHT_NAME"]

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"


@dataclass
class LoraSettings:
    """LoRA adapter settings (Hu et al. 2021): ΔW = (alpha / rank)·B·A with B initialised to 0."""

    rank: int = field(default=4, metadata={"help": "LoRA rank r"})
    alpha: float | None = field(default=None, metadata={"help": "LoRA alpha; None means alpha = rank (scale 1)"})
    target_modules: tuple[str, ...] = field(
        default=("to_q", "to_k", "to_v", "to_out.0"),
        metadata={"help": "UNet attention projections that get adapters (as in diffusers' LoRA scripts)"},
    )
    adapter_name: str = field(default="default", metadata={"help": "PEFT adapter name"})

    def __post_init__(self) -> None:
        if not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"LoRA rank={self.rank!r} must be a positive integer")
        if self.alpha is not None and not self.alpha > 0:
            raise ValueError(f"LoRA alpha={self.alpha!r} must be > 0")
        if not self.target_modules:
            raise ValueError("LoRA target_modules is empty: name at least one UNet module")


def add_lora(unet: torch.nn.Module, settings: LoraSettings) -> list[torch.nn.Parameter]:
    """Freeze the UNet and add a zero-initialised (B = 0) LoRA; returns the trainable parameters."""
    unet.requires_grad_(False)
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha if settings.alpha is not None else settings.rank,
        init_lora_weights="gaussian",
        target_modules=list(settings.target_modules),
    )
    unet.add_adapter(config, adapter_name=settings.adapter_name)
    return [p for p in unet.parameters() if p.requires_grad]


def save_lora(
    pipeline_class: type[DiffusionPipeline],
    unet: torch.nn.Module,
    directory: str | os.PathLike,
    adapter_name: str,
    denoiser_name: str = "unet",
    state_dict: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``directory/pytorch_lora_weights.safetensors`` in diffusers' LoRA format.

    ``denoiser_name`` is the pipeline's keyword for the denoiser's layers: ``unet`` (``unet_lora_layers``), or
    ``transformer`` for SD3 and FLUX (``transformer_lora_layers``). ``state_dict``: the LoRA's tensors by
    parameter name to write instead of the UNet's own (a sharded UNet's LoRA gathered to full tensors).
    """
    if adapter_name not in getattr(unet, "peft_config", {}):
        raise ValueError(f"the UNet has no LoRA adapter named {adapter_name!r}; add_lora() or load_lora() first")
    directory = Path(directory)
    own = None if state_dict is None else dict(state_dict)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet, state_dict=own, adapter_name=adapter_name))
    pipeline_class.save_lora_weights(
        directory,
        safe_serialization=True,
        weight_name=LORA_WEIGHT_NAME,
        **{f"{denoiser_name}_lora_layers": layers, f"{denoiser_name}_lora_adapter_metadata": unet.peft_config[adapter_name].to_dict()},
    )
    return directory / LORA_WEIGHT_NAME


def load_lora(
    pipeline: DiffusionPipeline, directory: str | os.PathLike, adapter_name: str, trainable: bool, denoiser_name: str = "unet"
) -> None:
    """Load a diffusers-format LoRA from a local directory into the pipeline's denoiser (``pipeline.<denoiser_name>``)."""
    path = Path(directory)
    if not (path / LORA_WEIGHT_NAME).is_file():
        raise FileNotFoundError(f"no LoRA weights at {str(path / LORA_WEIGHT_NAME)!r}")
    pipeline.load_lora_weights(str(path), weight_name=LORA_WEIGHT_NAME, adapter_name=adapter_name)
    if trainable:
        for name, param in getattr(pipeline, denoiser_name).named_parameters():
            if "lora_" in name and f".{adapter_name}." in name:
                param.requires_grad_(True)


class LoraMixin:
    """LoRA management of a policy's UNet: add, save, load, the trainable parameters, and θ_0 with the adapters off."""

    pipeline: DiffusionPipeline
    unet: torch.nn.Module
    denoiser_name: str

    def add_lora(self, settings: LoraSettings | None = None) -> list[torch.nn.Parameter]:
        """Add trainable LoRA adapters to the UNet's attention projections; returns their parameters."""
        return add_lora(self.unet, settings or LoraSettings())

    def save_lora(
        self, directory: str | os.PathLike, adapter_name: str = "default", state_dict: Mapping[str, torch.Tensor] | None = None
    ) -> Path:
        """Save the UNet LoRA in diffusers' format (``pytorch_lora_weights.safetensors``); ``state_dict``: its
        tensors to write instead of the UNet's own (:func:`save_lora`)."""
        return save_lora(type(self.pipeline), self.unet, directory, adapter_name, self.denoiser_name, state_dict)

    def load_lora(self, directory: str | os.PathLike, adapter_name: str = "default", trainable: bool = True) -> None:
        """Load a diffusers-format LoRA (ours or any SD LoRA) as adapter ``adapter_name``."""
        load_lora(self.pipeline, directory, adapter_name, trainable, self.denoiser_name)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.unet.parameters() if p.requires_grad]

    @contextlib.contextmanager
    def adapters_disabled(self) -> Iterator[None]:
        """The base model θ_0 (adapters off), e.g. for DPOK's KL term; no second UNet copy."""
        if not getattr(self.unet, "_hf_peft_config_loaded", False):
            yield
            return
        self.unet.disable_adapters()
        try:
            yield
        finally:
            self.unet.enable_adapters()
