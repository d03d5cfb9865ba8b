"""Atomic training checkpoints without pickle: safetensors for tensors, JSON for the rest.

A checkpoint is a directory ``checkpoint-{iteration:06d}`` written first under a hidden
temporary name in the same folder, flushed, and then renamed in one ``os.rename`` — a
reader never sees a half-written checkpoint, and a run killed mid-write leaves only a
``.tmp-*`` folder that :func:`latest_valid_checkpoint` ignores and the next save cleans up.

Optimiser states (``torch.optim`` ``state_dict``) are split into tensors (safetensors) and
their plain-Python remainder (JSON), so loading never unpickles anything.

Every checkpoint carries ``manifest.json`` (written last, before the rename): each file's
path relative to the checkpoint, its size and sha256. :func:`latest_valid_checkpoint` checks
it newest first and, when a checkpoint is damaged (a truncated safetensors, a garbled
state.json, a missing file), warns naming the bad file and falls back to the previous one. A
write that fails (a full disk) removes its temporary folder, leaves every earlier checkpoint
as it was and raises :class:`CheckpointWriteError`, whose message says what to do.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from parrot.sharding import local_slice
from parrot_base.cli import UsageError

__all__ = [
    "save_tensors",
    "load_tensors",
    "optimizer_state_to_files",
    "optimizer_state_from_files",
    "atomic_checkpoint_dir",
    "CheckpointWriteError",
    "NoValidCheckpointError",
    "MANIFEST",
    "write_manifest",
    "checkpoint_problem",
    "latest_valid_checkpoint",
    "prune_checkpoints",
    "write_json",
    "read_json",
]

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^checkpoint-(\d{6,})$")
MANIFEST = "manifest.json"
_MANIFEST_VERSION = 1


class CheckpointWriteError(UsageError):
    """A checkpoint could not be written (e.g. the disk is full); the earlier ones are intact."""


class NoValidCheckpointError(UsageError):
    """``--resume`` found checkpoints, and every one of them is damaged."""


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Write ``path``; a failed write (full disk) is an OSError with its errno, as ``open`` would raise."""
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))
    except SafetensorError as err:  # safetensors reports I/O errors as "... (os error 28) ..."
        found = re.search(r"os error (\d+)", str(err))
        if found is None:
            raise
        code = int(found.group(1))
        raise OSError(code, os.strerror(code), str(path)) from err


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


def optimizer_state_to_files(optimizer: torch.optim.Optimizer | Mapping[str, Any], directory: Path, name: str) -> None:
    """``name.safetensors`` (every tensor of the state) and ``name.json`` (everything else) of an optimiser or of
    its ``state_dict`` (under FSDP the gathered one: :func:`parrot.sharding.full_optimizer_state`)."""
    state = optimizer.state_dict() if isinstance(optimizer, torch.optim.Optimizer) else optimizer
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
    """Load what :func:`optimizer_state_to_files` wrote; a state of a sharded parameter (FSDP) is cut to this
    process's slice (:func:`parrot.sharding.local_slice`)."""
    meta = read_json(directory / f"{name}.json")
    tensors = load_tensors(directory / f"{name}.safetensors")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        param_id, entry = key.split(".", 1)
        like = params[int(param_id)] if int(param_id) < len(params) else value
        state.setdefault(int(param_id), {})[entry] = local_slice(like, value)
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
        for old in self.root.glob(".old-checkpoint-*"):  # a run killed while replacing a checkpoint
            final = self.root / old.name[len(".old-") :].rsplit("-", 1)[0]
            if final.exists():
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(old, final)
        self.tmp.mkdir()
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc is None:
                self._publish()
                return
        except OSError as err:
            exc = err
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        shutil.rmtree(self.tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise CheckpointWriteError(_write_failure(self.final, exc)) from exc
        # any other exception of the body propagates unchanged (a bug keeps its traceback)

    def _publish(self) -> None:
        """Manifest, fsync, then one rename; a checkpoint of the same iteration is replaced only then."""
        write_manifest(self.tmp)
        for path in self.tmp.rglob("*"):
            if path.is_file():
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())
        replaced = None
        if self.final.exists():  # a re-run of the same iteration after a resume
            replaced = self.final.with_name(f".old-{self.final.name}-{os.getpid()}")
            os.rename(self.final, replaced)
        try:
            os.rename(self.tmp, self.final)
        except OSError:
            if replaced is not None:
                os.rename(replaced, self.final)
            raise
        if replaced is not None:
            shutil.rmtree(replaced, ignore_errors=True)


def _write_failure(final: Path, err: OSError) -> str:
    reason = os.strerror(err.errno) if err.errno else str(err)
    hint = "free disk space" if err.errno in (errno.ENOSPC, errno.EDQUOT) else "fix the cause"
    return f"could not write checkpoint {final} ({reason}); the earlier checkpoints are intact: {hint} and rerun with --resume true"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: Path) -> None:
    """``manifest.json``: {relative path: {size, sha256}} of every other file under ``directory``."""
    files = sorted(p for p in Path(directory).rglob("*") if p.is_file() and p.name != MANIFEST)
    entries = {p.relative_to(directory).as_posix(): {"size": p.stat().st_size, "sha256": _sha256(p)} for p in files}
    write_json({"version": _MANIFEST_VERSION, "files": entries}, Path(directory) / MANIFEST)


def checkpoint_problem(path: Path) -> str | None:
    """What is wrong with checkpoint ``path`` (naming the file), or None when its manifest checks out.

    A checkpoint without a manifest (written by an older version) is accepted, with a warning.
    """
    manifest_path = Path(path) / MANIFEST
    if not manifest_path.is_file():  # written before manifests existed: nothing to check against
        logger.warning("checkpoint %s has no %s (an older version wrote it): not verified", path, MANIFEST)
        return None
    try:
        entries = json.loads(manifest_path.read_text(encoding="utf-8"))["files"]
        entries = {str(name): (int(e["size"]), str(e["sha256"])) for name, e in entries.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        return f"{MANIFEST} is unreadable ({type(err).__name__})"
    for name, (size, sha256) in sorted(entries.items()):
        file = Path(path) / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != size:
            return f"{name} has {file.stat().st_size} bytes, the manifest says {size}"
        if _sha256(file) != sha256:
            return f"{name} does not match its sha256 in the manifest"
    return None


def _complete(root: Path) -> list[tuple[int, Path]]:
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return sorted(found)


def latest_valid_checkpoint(root: Path) -> Path | None:
    """The newest checkpoint under ``root`` whose manifest checks out, or None when there is none.

    A damaged newer checkpoint is skipped with a warning naming its bad file; when checkpoints
    exist but every one is damaged, :class:`NoValidCheckpointError` says so (starting over
    silently would throw the run away).
    """
    found = _complete(Path(root))
    problems = []
    for _, path in reversed(found):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        logger.warning("checkpoint %s is damaged: %s; trying the one before it", path, problem)
        problems.append(f"{path.name}: {problem}")
    if found:
        raise NoValidCheckpointError(
            f"every checkpoint under {root} is damaged ({'; '.join(problems)}); move them away to start over, or run without --resume"
        )
    return None


def prune_checkpoints(root: Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest checkpoints; returns the deleted paths."""
    found = _complete(Path(root))
    doomed = [p for _, p in found[: max(0, len(found) - keep)]]
    for path in doomed:
        shutil.rmtree(path)
    return doomed
