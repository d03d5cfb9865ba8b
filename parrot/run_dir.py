"""The run directory of ``python -m parrot.train`` (its ``--output_dir``): layout, schema, writer and reader.

Every file of a run is named here and read or written only through this module, by
``parrot.train`` (writer), ``parrot.report``, ``parrot.generate`` and the benchmarks (readers)::

    RUN/run.json                     the run record: {"layout_version": 1, "writer": "parrot.train"}, written at start
    RUN/checkpoints/checkpoint-NNNNNN/   atomic, verified (parrot.checkpoint): {t2i,expander}_trainable.safetensors,
                                     lora/ (diffusers format), optimizer_{t2i,expander}.{safetensors,json},
                                     rng.safetensors, state.json {iteration, stat_tracker, config}, manifest.json
    RUN/curves.jsonl                 one line per iteration: {"iteration", "reward/<name>/{mean,std}",
                                     "pareto/selected_fraction", "reward/nonfinite", "time/iteration_s", "time/<stage>_s",
                                     with identifiers "identifier/<name>/own_minus_others", with evaluation.every
                                     "heldout/<name>/mean" (the held-out curve; iteration 0 is its start)}
    RUN/samples/iteration-NNNNNN.png / .json   the last batch before a checkpoint: a grid and its :class:`SampleRecord`
    RUN/evaluation.json              the held-out record (its content: :func:`parrot.evaluation.evaluation_record`)
    RUN/final/lora, RUN/final/expander   the trained LoRA (diffusers format) and expander
    RUN/final/identifiers/<reward>/  with identifiers.trainable_tokens: each trained identifier token (diffusers'
                                     textual-inversion file; a checkpoint holds them in identifiers/ beside its lora/ too)
    RUN/builtin/                     the built-in toy reward models (``builtin:…``) built for the run
    RUN/<logging.project>/           accelerate's tracker files (TensorBoard events; ``parrot.report`` reads them)

:func:`open_run` is the one reader's entry: a directory with an unknown ``layout_version`` is
refused with one line; a directory written before run records existed (no ``run.json``) but holding
this layout's files is read as version 1, with a warning.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from parrot.checkpoint import (
    atomic_checkpoint_dir,
    latest_valid_checkpoint,
    load_tensors,
    optimizer_state_from_files,
    optimizer_state_to_files,
    prune_checkpoints,
    read_json,
    save_tensors,
    write_json,
)
from parrot.sharding import local_slice
from parrot_base.cli import UsageError

__all__ = [
    "LAYOUT_VERSION", "RUN_RECORD", "CURVES_FILE", "RunDir", "start_run", "open_run", "clear_curves", "append_curve", "read_curves",
    "SampleRecord", "write_samples", "sample_records", "write_evaluation", "read_evaluation_json",
    "CheckpointState", "write_checkpoint", "read_checkpoint", "lora_training_config",
]  # fmt: skip

logger = logging.getLogger(__name__)

LAYOUT_VERSION = 1
RUN_RECORD = "run.json"
CURVES_FILE = "curves.jsonl"
_STATE = "state.json"
_CHECKPOINT = re.compile(r"^checkpoint-\d{6,}$")


@dataclass(frozen=True)
class RunDir:
    """Paths of one run directory (nothing is read or written by making one)."""

    root: Path

    @property
    def record(self) -> Path:
        return self.root / RUN_RECORD

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def curves(self) -> Path:
        return self.root / CURVES_FILE

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    @property
    def evaluation(self) -> Path:
        return self.root / "evaluation.json"

    @property
    def final(self) -> Path:
        return self.root / "final"

    @property
    def final_lora(self) -> Path:
        return self.final / "lora"

    @property
    def final_expander(self) -> Path:
        return self.final / "expander"

    @property
    def builtin_models(self) -> Path:
        return self.root / "builtin"

    def sample_stem(self, iteration: int) -> Path:
        return self.samples / f"iteration-{iteration:06d}"


# ----- the run record -------------------------------------------------------------------------------
def _read_version(run: RunDir) -> int | None:
    """``layout_version`` of run.json, None without one; an unreadable or unknown one is a UsageError."""
    if not run.record.is_file():
        return None
    try:
        version = json.loads(run.record.read_text(encoding="utf-8"))["layout_version"]
    except (ValueError, KeyError, TypeError) as err:
        raise UsageError(f"{run.record} is unreadable ({type(err).__name__}: {err}); restore it or start a new --output_dir") from None
    if version != LAYOUT_VERSION:
        raise UsageError(
            f"{run.root} has run directory layout version {version!r}; this parrot reads version {LAYOUT_VERSION}: "
            "use the parrot version that wrote it, or start a new --output_dir"
        )
    return version


def start_run(root: Path) -> RunDir:
    """Create (or, resuming, reopen) the run directory and write its run record; a directory written
    with another layout version is refused before anything in it is read or replaced."""
    run = RunDir(Path(root))
    run.root.mkdir(parents=True, exist_ok=True)
    _read_version(run)
    write_json({"layout_version": LAYOUT_VERSION, "writer": "parrot.train"}, run.record)
    return run


def _has_run_files(run: RunDir) -> bool:
    return any(p.exists() for p in (run.checkpoints, run.curves, run.samples, run.evaluation, run.final))


def open_run(root: Path | str) -> RunDir:
    """The run directory at ``root`` for reading; refuses a missing directory or an unknown layout version."""
    run = RunDir(Path(root))
    if not run.root.is_dir():
        raise FileNotFoundError(f"run directory {str(root)!r} does not exist; pass the --output_dir of a python -m parrot.train run")
    if _read_version(run) is None and _has_run_files(run):
        logger.warning("%s has no %s (written by an older parrot.train): reading it as layout version %d",
                       run.root, RUN_RECORD, LAYOUT_VERSION)  # fmt: skip
    return run


# ----- curves.jsonl ---------------------------------------------------------------------------------
def clear_curves(run: RunDir) -> None:
    """A fresh start: no curve of an earlier run in this directory."""
    run.curves.unlink(missing_ok=True)


def append_curve(run: RunDir, iteration: int, metrics: Mapping[str, float]) -> None:
    """Append iteration ``iteration``'s training-batch reward statistics, |P| share and seconds to ``curves.jsonl``.

    One JSON object a line: ``{"iteration": n, "reward/<name>/mean": …, "reward/<name>/std": …,
    "pareto/selected_fraction": …, "reward/nonfinite": …, "identifier/<name>/own_minus_others": … (with
    identifiers), "time/iteration_s": …}`` (wall seconds of the
    iteration's stages, without logging and checkpoints) and the seconds of its stages that ran
    (``time/sample_and_score_s``, ``time/update_t2i_s``, ``time/update_expander_s``); with ``evaluation.every`` the
    held-out images' mean rewards every that many iterations (``heldout/<name>/mean``, iteration 0 on a line of its
    own: the start). A resumed run
    appends the iterations it repeats again; :func:`read_curves` keeps the last line of each iteration.
    """
    line = {"iteration": int(iteration)} | {
        k: float(v) for k, v in metrics.items() if k.startswith(("reward/", "pareto/", "identifier/", "time/", "heldout/"))
    }
    with run.curves.open("a", encoding="utf-8") as file:
        file.write(json.dumps(line) + "\n")


def read_curves(run: RunDir) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """tag → (iterations, values) from ``curves.jsonl`` (the last line of an iteration wins); {} when absent."""
    if not run.curves.is_file():
        return {}
    latest: dict[int, dict] = {}
    for line in run.curves.read_text(encoding="utf-8").splitlines():
        if line.strip():
            entry = json.loads(line)
            latest[int(entry.pop("iteration"))] = entry
    tags = sorted({tag for entry in latest.values() for tag in entry})
    steps = sorted(latest)
    return {
        tag: (np.array([s for s in steps if tag in latest[s]]), np.array([latest[s][tag] for s in steps if tag in latest[s]], dtype=float))
        for tag in tags
    }


# ----- samples/ -------------------------------------------------------------------------------------
@dataclass
class SampleRecord:
    """``samples/iteration-NNNNNN.json``: the grid's images in layout order, a row of ``columns`` per group."""

    iteration: int
    columns: int
    reward_names: list[str]
    original_prompts: list[str]  # c
    expanded_prompts: list[str]  # ĉ
    conditioning_prompts: list[str]  # "<k>, ĉ"
    rewards: list[list[float]]  # R (n, K)
    selected: list[bool]  # in P


def write_samples(run: RunDir, grid: Image.Image, record: SampleRecord) -> Path:
    """The grid PNG and its record; returns the PNG's path."""
    stem = run.sample_stem(record.iteration)
    stem.parent.mkdir(parents=True, exist_ok=True)
    grid.save(stem.with_suffix(".png"))
    write_json(asdict(record), stem.with_suffix(".json"))
    return stem.with_suffix(".png")


def sample_records(run: RunDir) -> list[tuple[Path, dict | None]]:
    """(grid PNG, its record as written, or None when missing or unreadable) per checkpoint, by iteration."""
    found = []
    for png in sorted(run.samples.glob("iteration-*.png")):
        try:
            found.append((png, json.loads(png.with_suffix(".json").read_text(encoding="utf-8"))))
        except (OSError, ValueError):
            found.append((png, None))
    return found


# ----- evaluation.json ------------------------------------------------------------------------------
def write_evaluation(run: RunDir, record: Mapping[str, Any]) -> Path:
    write_json(dict(record), run.evaluation)
    return run.evaluation


def read_evaluation_json(run: RunDir) -> dict | None:
    """The held-out record as written, or None when the run has none (yet); invalid JSON raises ValueError."""
    if not run.evaluation.is_file():
        return None
    return json.loads(run.evaluation.read_text(encoding="utf-8"))


# ----- checkpoints ----------------------------------------------------------------------------------
@dataclass
class CheckpointState:
    """``state.json`` of a checkpoint, and the torch RNG state beside it."""

    iteration: int
    stat_tracker: dict
    config: dict
    rng: torch.Tensor | None = None


def write_checkpoint(
    run: RunDir,
    state: CheckpointState,
    trainable: Mapping[str, Mapping[str, torch.Tensor]],
    save_lora: Callable[[Path], None],
    optimizers: Mapping[str, torch.optim.Optimizer | Mapping[str, Any] | None],
    keep: int,
) -> Path:
    """Checkpoint ``state.iteration`` (atomic, with a manifest), keeping the ``keep`` newest; returns its path.
    ``trainable`` holds full tensors and ``optimizers`` optimisers or their full ``state_dict`` (under FSDP gathered
    by every process first: :mod:`parrot.sharding`)."""
    with atomic_checkpoint_dir(run.checkpoints, state.iteration) as tmp:
        for name, tensors in trainable.items():
            save_tensors(dict(tensors), tmp / f"{name}_trainable.safetensors")
        save_lora(tmp / "lora")
        for name, optimizer in optimizers.items():
            if optimizer is not None:
                optimizer_state_to_files(optimizer, tmp, f"optimizer_{name}")
        save_tensors({"torch": torch.get_rng_state() if state.rng is None else state.rng}, tmp / "rng.safetensors")
        write_json({"iteration": state.iteration, "stat_tracker": state.stat_tracker, "config": state.config}, tmp / _STATE)
    prune_checkpoints(run.checkpoints, keep)
    return run.checkpoints / f"checkpoint-{state.iteration:06d}"


def read_checkpoint(
    path: Path, trainable: Mapping[str, Mapping[str, torch.Tensor]], optimizers: Mapping[str, torch.optim.Optimizer | None]
) -> CheckpointState:
    """Copy checkpoint ``path``'s tensors into ``trainable`` and its states into ``optimizers``; its state.json and RNG."""
    for name, params in trainable.items():
        saved = load_tensors(path / f"{name}_trainable.safetensors")
        missing = sorted(set(params) - set(saved))
        if missing:
            raise ValueError(f"checkpoint {path} lacks {len(missing)} {name} parameter(s), e.g. {missing[0]!r}: other model?")
        with torch.no_grad():
            for key, param in params.items():
                param.copy_(local_slice(param, saved[key]))  # FSDP: this process's slice of the full tensor
    for name, optimizer in optimizers.items():
        if optimizer is not None:
            optimizer_state_from_files(optimizer, path, f"optimizer_{name}")
    rng = load_tensors(path / "rng.safetensors")["torch"]
    state = read_json(path / _STATE)
    return CheckpointState(int(state["iteration"]), state["stat_tracker"], state.get("config", {}), rng)


def lora_training_config(lora_dir: Path | str) -> dict[str, Any] | None:
    """The saved config of the training run a LoRA directory comes from (RUN/final/lora: the run's newest
    valid checkpoint; RUN/checkpoints/checkpoint-N/lora: that checkpoint), None for a LoRA saved elsewhere."""
    holder = Path(lora_dir).parent
    if _CHECKPOINT.match(holder.name) and holder.parent.name == "checkpoints":
        open_run(holder.parent.parent)
        state = holder / _STATE
    elif holder.name == "final":
        run = open_run(holder.parent)
        checkpoint = latest_valid_checkpoint(run.checkpoints)
        if checkpoint is None:
            return None
        state = checkpoint / _STATE
    else:
        return None
    return read_json(state).get("config") if state.is_file() else None
