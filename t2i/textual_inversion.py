"""A trainable token in the text towers (textual inversion / pivotal tuning), saved as diffusers reads it.

Pivotal tuning (as in diffusers' advanced Dreambooth LoRA script) trains a new token's input
embedding in every text tower alongside a UNet LoRA. Here: :func:`add_trainable_token` adds the
token to each tower's tokenizer, initialises its embedding row from the mean embedding of an
initialiser text, and lets gradients reach that row only (a hook zeroes the others; train it with
weight decay 0, since decoupled decay would shrink every row). The file is the one owner of the
format: ``learned_embeds.safetensors`` holding ``{token: (1, d)}`` for a one-tower family (what
``StableDiffusionPipeline.load_textual_inversion(dir)`` reads) and ``{"clip_l": …, "clip_g": …}`` for
SDXL (the advanced script's layout: load each with ``load_textual_inversion(state_dict[key],
token=…, text_encoder=…, tokenizer=…)``); the token is also in the file's metadata.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

__all__ = [
    "EMBEDDINGS_NAME", "TOWER_KEYS", "add_trainable_token", "add_trainable_tokens", "load_token_embeddings", "save_token_embeddings",
    "text_towers", "token_rows",
]  # fmt: skip

EMBEDDINGS_NAME = "learned_embeds.safetensors"
#: state-dict keys of each tower in a multi-tower file, in the pipeline's order (text_encoder, text_encoder_2)
TOWER_KEYS = ("clip_l", "clip_g")


def text_towers(pipeline) -> list[tuple]:
    """(tokenizer, text_encoder) of each text tower the pipeline has, in order."""
    towers = [(pipeline.tokenizer, pipeline.text_encoder)]
    if getattr(pipeline, "text_encoder_2", None) is not None:
        towers.append((pipeline.tokenizer_2, pipeline.text_encoder_2))
    return towers


def _keep_only_rows(rows: list[int]):
    def hook(grad: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros_like(grad)
        mask[rows] = 1
        return grad * mask

    return hook


def add_trainable_token(pipeline, token: str, initialiser: str) -> list[torch.nn.Parameter]:
    """Add ``token`` to every tower, its embedding row = the mean embedding of ``initialiser``'s tokens;
    returns the towers' input-embedding matrices, trainable in that row only."""
    return add_trainable_tokens(pipeline, {token: initialiser})


def add_trainable_tokens(pipeline, initialisers: dict[str, str]) -> list[torch.nn.Parameter]:
    """:func:`add_trainable_token` for several tokens at once (``{token: initialiser}``): the towers'
    input-embedding matrices, trainable in the new tokens' rows only (one gradient mask for all of them)."""
    params = []
    for tokenizer, encoder in text_towers(pipeline):
        init_ids = {}
        for token, initialiser in initialisers.items():
            if token in tokenizer.get_vocab():
                raise ValueError(f"the token {token!r} is already in the tokenizer's vocabulary: choose a new one, e.g. <{token}>")
            init_ids[token] = tokenizer(initialiser, add_special_tokens=False).input_ids
            if not init_ids[token]:
                raise ValueError(f"the initialiser text {initialiser!r} has no tokens")
        tokenizer.add_tokens(list(initialisers))
        encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)  # the new rows are set just below
        weight = encoder.get_input_embeddings().weight
        rows = [tokenizer.convert_tokens_to_ids(token) for token in initialisers]
        with torch.no_grad():
            for row, ids in zip(rows, init_ids.values()):
                weight[row] = weight[ids].mean(0)
        weight.requires_grad_(True)
        weight.register_hook(_keep_only_rows(rows))
        params.append(weight)
    return params


def token_rows(pipeline, token: str) -> list[torch.Tensor]:
    """The token's embedding row in every tower, as (1, d) views of the embedding matrices (writing them writes the model)."""
    rows = []
    for tokenizer, encoder in text_towers(pipeline):
        row = tokenizer.convert_tokens_to_ids(token)
        rows.append(encoder.get_input_embeddings().weight[row : row + 1])
    return rows


def save_token_embeddings(pipeline, token: str, directory: str | os.PathLike) -> Path:
    """Write the token's embedding row of every tower to ``directory/learned_embeds.safetensors``."""
    rows = [row.detach().float().cpu().clone() for row in token_rows(pipeline, token)]
    tensors = {token: rows[0]} if len(rows) == 1 else dict(zip(TOWER_KEYS, rows))
    path = Path(directory) / EMBEDDINGS_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"token": token})
    return path


def load_token_embeddings(pipeline, directory: str | os.PathLike) -> str:
    """Load a file written by :func:`save_token_embeddings` into ``pipeline`` with diffusers' loader; returns the token."""
    path = Path(directory) / EMBEDDINGS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{str(directory)!r} holds no {EMBEDDINGS_NAME} (write one with parrot.wrong_lora --pivotal true)")
    with safe_open(str(path), framework="pt") as f:
        token = (f.metadata() or {}).get("token")
        tensors = {key: f.get_tensor(key) for key in f.keys()}
    if token is None:
        raise ValueError(f"{path} has no 'token' in its metadata: it was not written by save_token_embeddings")
    towers = text_towers(pipeline)
    keys = [token] if len(towers) == 1 else list(TOWER_KEYS[: len(towers)])
    missing = [k for k in keys if k not in tensors]
    if missing:
        raise ValueError(f"{path} has no embedding for {missing} (it holds {sorted(tensors)}): it was made for another model family")
    for key, (tokenizer, encoder) in zip(keys, towers):
        pipeline.load_textual_inversion(tensors[key], token=token, tokenizer=tokenizer, text_encoder=encoder)
    return token
