"""Atomic training checkpoints without pickle: safetensors for tensors, JSON for the rest.

A checkpoint is a directory ``checkpoint-{iteration:06d}`` written first under a hidden
temporary name in the same folder, flushed, and then renamed in one ``os.rename`` — a
reader never sees a half-written checkpoint, and a run killed mid-write leaves only a
``.tmp-*`` folder that :func:`latest_checkpoint` ignores and the next save cleans up.

Optimiser states (``torch.optim`` ``state_dict``) are split into tensors (safetensors) and
their plain-Python remainder (JSON), so loading never unpickles anything.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

__all__ = [
    "save_tensors",
    "load_tensors",
    "optimizer_state_to_files",
    "optimizer_state_from_files",
    "atomic_checkpoint_dir",
    "latest_checkpoint",
    "prune_checkpoints",
    "write_json",
    "read_json",
]

_NAME = re.compile(r"^checkpoint-(\d{6,})$")


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {str(path)!r} is missing")
    return load_file(str(path))


def write_json(data: Any, path: Path) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=True))


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {str(path)!r} is missing")
    return json.loads(path.read_text())


def optimizer_state_to_files(optimizer: torch.optim.Optimizer, directory: Path, name: str) -> None:
    """``name.safetensors`` (every tensor of the state) and ``name.json`` (everything else)."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for param_id, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{param_id}.{key}"] = value
            else:
                plain.setdefault(str(param_id), {})[key] = value
    save_tensors(tensors, directory / f"{name}.safetensors")
    write_json({"param_groups": state["param_groups"], "plain_state": plain}, directory / f"{name}.json")


def optimizer_state_from_files(optimizer: torch.optim.Optimizer, directory: Path, name: str) -> None:
    meta = read_json(directory / f"{name}.json")
    tensors = load_tensors(directory / f"{name}.safetensors")
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        param_id, entry = key.split(".", 1)
        state.setdefault(int(param_id), {})[entry] = value
    for param_id, entries in meta["plain_state"].items():
        state.setdefault(int(param_id), {}).update(entries)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


class atomic_checkpoint_dir:
    """``with atomic_checkpoint_dir(root, iteration) as tmp:`` write into ``tmp``; renamed on success."""

    def __init__(self, root: Path, iteration: int):
        self.root = Path(root)
        self.final = self.root / f"checkpoint-{iteration:06d}"
        self.tmp = self.root / f".tmp-checkpoint-{iteration:06d}-{os.getpid()}"

    def __enter__(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob(".tmp-checkpoint-*"):
            shutil.rmtree(stale, ignore_errors=True)
        self.tmp.mkdir()
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        for path in self.tmp.rglob("*"):
            if path.is_file():
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())
        if self.final.exists():  # a re-run of the same iteration after a resume
            shutil.rmtree(self.final)
        os.rename(self.tmp, self.final)


def _complete(root: Path) -> list[tuple[int, Path]]:
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return sorted(found)


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint under ``root`` (temporary folders are ignored), or None."""
    found = _complete(Path(root))
    return found[-1][1] if found else None


def prune_checkpoints(root: Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest checkpoints; returns the deleted paths."""
    found = _complete(Path(root))
    doomed = [p for _, p in found[: max(0, len(found) - keep)]]
    for path in doomed:
        shutil.rmtree(path)
    return doomed
