"""The LAION aesthetic predictor: an MLP head on L2-normalised CLIP image embeddings.

Notation: a(x) = h(e_x) with e_x = f(x)/‖f(x)‖ (see :mod:`rewards.clip`) and h the LAION
"improved aesthetic predictor" MLP 768→1024→128→64→16→1 (no non-linearities, dropout 0.2,
0.2, 0.1 after the first three layers; DDPO's aesthetic reward). The module layout matches
the public state dict (``layers.0``, ``layers.2``, ``layers.4``, ``layers.6``, ``layers.7``)
so ``sac+logos+ava1-l14-linearMSE.pth`` loads as it is. The same class at other sizes is the
head of small worlds (``AestheticHeadConfig(input_dim=..., hidden_dims=...)``).

The public ``.pth`` is read with ``torch.load(weights_only=True)`` (tensors only, never a
full unpickle) or converted once to safetensors with :func:`convert_head_checkpoint`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from rewards.base import Reward, RewardConfig, resolve_dtype
from rewards.clip import ClipBackbone
from rewards.registry import register_reward

__all__ = [
    "AestheticHeadConfig",
    "AestheticHead",
    "LaionAesthetic",
    "LaionAestheticConfig",
    "load_head_state_dict",
    "convert_head_checkpoint",
    "fit_aesthetic_head",
]


@dataclass
class AestheticHeadConfig:
    input_dim: int = field(default=768, metadata={"help": "CLIP projection dim (768 for ViT-L/14)"})
    hidden_dims: tuple[int, ...] = field(default=(1024, 128, 64, 16), metadata={"help": "widths of the hidden layers"})
    dropouts: tuple[float, ...] = field(
        default=(0.2, 0.2, 0.1, 0.0), metadata={"help": "dropout after each hidden layer (0 = no dropout module)"}
    )

    def __post_init__(self) -> None:
        self.hidden_dims = tuple(int(d) for d in self.hidden_dims)
        self.dropouts = tuple(float(p) for p in self.dropouts)
        if self.input_dim < 1 or any(d < 1 for d in self.hidden_dims):
            raise ValueError(f"head sizes must be positive: input_dim={self.input_dim}, hidden_dims={self.hidden_dims}")
        if len(self.dropouts) != len(self.hidden_dims):
            raise ValueError(f"dropouts {self.dropouts} must have one entry per hidden layer {self.hidden_dims}")


class AestheticHead(torch.nn.Module):
    """h: (B, input_dim) normalised embeddings → (B,) scores."""

    def __init__(self, config: AestheticHeadConfig | None = None):
        super().__init__()
        self.config = config or AestheticHeadConfig()
        layers: list[torch.nn.Module] = []
        width = self.config.input_dim
        for hidden, p in zip(self.config.hidden_dims, self.config.dropouts):
            layers.append(torch.nn.Linear(width, hidden))
            if p > 0:
                layers.append(torch.nn.Dropout(p))
            width = hidden
        layers.append(torch.nn.Linear(width, 1))
        self.layers = torch.nn.Sequential(*layers)

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        if embeds.ndim != 2 or embeds.shape[1] != self.config.input_dim:
            raise ValueError(f"head expects (B, {self.config.input_dim}) embeddings, got {tuple(embeds.shape)}")
        return self.layers(embeds).squeeze(-1)

    def save(self, path: str | os.PathLike) -> None:
        """Weights in safetensors, sizes in the file's metadata (so :meth:`load` needs no config)."""
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, os.fspath(path), metadata={"head_config": json.dumps(asdict(self.config))})

    @classmethod
    def load(cls, path: str | os.PathLike, config: AestheticHeadConfig | None = None) -> AestheticHead:
        """Load a head from safetensors (ours or converted) or the public ``.pth`` (tensors only)."""
        state, stored = load_head_state_dict(path)
        head = cls(config or stored or AestheticHeadConfig())
        try:
            head.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"{os.fspath(path)!r} does not fit a head of sizes {head.config}: {err}") from err
        return head.eval()


def resolve_head_file(path: str) -> str:
    """A local head file as is; ``OWNER/REPO/FILE`` that is not a local file through ``hf_hub_download``
    (the local cache under ``HF_HUB_OFFLINE=1``)."""
    if Path(path).expanduser().is_file():
        return str(Path(path).expanduser())
    parts = path.split("/")
    if len(parts) < 3 or not all(parts):
        raise FileNotFoundError(f"no aesthetic head file at {path!r} (give a local file or a hub file OWNER/REPO/FILE)")
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download("/".join(parts[:2]), "/".join(parts[2:]))
    except Exception as err:  # offline without a cached copy, a missing repo or file
        raise FileNotFoundError(
            f"no aesthetic head file at {path!r}: not a local file, and the hub file could not be read ({err})"
        ) from err


def load_head_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], AestheticHeadConfig | None]:
    """(state dict, stored sizes or None) from ``.safetensors`` or a tensors-only ``.pth``/``.pt``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no aesthetic head file at {str(path)!r}")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        stored = metadata.get("head_config")
        config = AestheticHeadConfig(**json.loads(stored)) if stored else None
        return load_file(str(path)), config
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the weights-only unpickler refuses anything but tensors and containers
        raise ValueError(f"{str(path)!r} is not a tensors-only checkpoint; refusing to unpickle it ({err})") from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{str(path)!r} does not hold a state dict of tensors")
    return state, None


def convert_head_checkpoint(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Convert the public LAION ``.pth`` head to a safetensors file (sizes read from the weights)."""
    state, _ = load_head_state_dict(source)
    linear = [k for k in state if k.endswith(".weight")]
    linear.sort(key=lambda k: int(k.split(".")[1]))
    dims = [state[k].shape for k in linear]
    config = AestheticHeadConfig(input_dim=dims[0][1], hidden_dims=tuple(d[0] for d in dims[:-1]))
    head = AestheticHead(config)
    head.load_state_dict(state)
    head.save(target)
    return Path(target)


def fit_aesthetic_head(
    head: AestheticHead,
    embeds: torch.Tensor,
    ratings: torch.Tensor,
    epochs: int = 50,
    lr: float = 1e-3,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Train h by MSE regression of ratings on normalised embeddings (LAION's recipe); per-epoch losses.
    ``progress``: show a bar over the epochs."""
    if embeds.shape[0] != ratings.shape[0]:
        raise ValueError(f"{embeds.shape[0]} embeddings but {ratings.shape[0]} ratings")
    generator = torch.Generator().manual_seed(seed)
    embeds = torch.nn.functional.normalize(embeds.float(), dim=-1)
    ratings = ratings.float()
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr)
    head.train()
    losses = []
    for _ in tqdm(range(epochs), desc="aesthetic head", leave=False, disable=not progress):
        order = torch.randperm(embeds.shape[0], generator=generator)
        total = 0.0
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            loss = torch.nn.functional.mse_loss(head(embeds[index]), ratings[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(index)
        losses.append(total / len(order))
    head.eval()
    return losses


@dataclass
class LaionAestheticConfig(RewardConfig):
    clip_model: str = field(default="openai/clip-vit-large-patch14", metadata={"help": "hub id or local dir of the CLIP model"})
    head_path: str = field(
        default="",
        metadata={
            "help": "the head: a local .safetensors or LAION's public .pth (tensors only), or a hub file OWNER/REPO/FILE "
            "(e.g. trl-lib/ddpo-aesthetic-predictor/aesthetic-model.pth, the LAION ViT-L/14 head DDPO and TRL use)"
        },
    )


class LaionAesthetic(Reward):
    """a(x) = h(e_x); the prompt is ignored."""

    needs_prompts = False

    def __init__(self, config: LaionAestheticConfig, backbone: ClipBackbone, head: AestheticHead):
        super().__init__(config)
        if head.config.input_dim != backbone.embed_dim:
            raise ValueError(f"aesthetic head takes {head.config.input_dim}-d embeddings but the CLIP model gives {backbone.embed_dim}-d")
        self.backbone = backbone
        self.head = head.to(backbone.device).eval()

    def score_batch(self, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]]) -> torch.Tensor:
        return self.head(self.backbone.image_embeds(images))


@register_reward("laion_aesthetic", LaionAestheticConfig)
def laion_aesthetic(config: LaionAestheticConfig) -> LaionAesthetic:
    if not config.head_path:
        raise ValueError(
            "laion_aesthetic needs head_path: the local file of the LAION head "
            "(e.g. sac+logos+ava1-l14-linearMSE.pth, or its safetensors conversion)"
        )
    head = AestheticHead.load(resolve_head_file(config.head_path))
    backbone = ClipBackbone.from_pretrained(config.clip_model, device=config.device, dtype=resolve_dtype(config.dtype))
    return LaionAesthetic(config, backbone, head)
