"""The instruments of ``benchmarks/throughput.py``: the ratio arithmetic and our trainer timed epoch by epoch.

:func:`ddpo_args` are the ``parrot.train`` flags of a single-reward DDPO-IS run matching the TRL
peer's settings; :func:`time_our_epochs` times ``run_iteration`` calls with their stage times and
UNet calls (:func:`unet_counter`).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from pathlib import Path

from parrot.train import ParrotTrainer

__all__ = ["TIMED_STAGES", "ddpo_args", "overlap_share", "ratio_summary", "spread", "time_our_epochs", "unet_counter"]


# ----- arithmetic -----------------------------------------------------------------------------
def overlap_share(t_sample: float, t_score: float, t_pipelined: float) -> float:
    """Share of the scoring time hidden behind sampling: (t_sample + t_score − t_pipelined) / t_score."""
    if not t_score > 0:
        raise ValueError(f"t_score={t_score} must be > 0 to say what share of it was hidden")
    return (t_sample + t_score - t_pipelined) / t_score


def spread(values: list[float]) -> dict:
    """Median, min, max and count of repeated measurements."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def ratio_summary(ours: list[float], peer: list[float]) -> dict:
    """median(ours) ÷ median(peer), and the ratio of each paired repeat."""
    return {
        "ratio_of_medians": statistics.median(ours) / statistics.median(peer),
        "per_repeat": [a / b for a, b in zip(ours, peer)],
    }


# ----- our trainer -----------------------------------------------------------------------------
def ddpo_args(output_dir: Path, pipeline: str, batch: int, steps: int, inner_epochs: int, fraction: float, *extra: str) -> list[str]:
    """``parrot.train`` arguments of a single-reward DDPO-IS run matching the TRL peer's settings."""
    return [
        "--preset", "tiny", "--output_dir", str(output_dir), "--mode", "t2i", "--expander.model", "",
        "--model.pipeline", pipeline, "--model.lora.rank", "4",
        "--rewards.names", "jpeg_compressibility", "--selection.mode", "single:jpeg_compressibility",
        "--selection.reward_weighting", "raw",  # A = r: groups of one image, nothing to z-score them in (as before issue 13)
        "--identifiers.enabled", "false", "--sampling.prompts_per_process", str(batch), "--sampling.images_per_prompt", "1",
        "--sampling.num_steps", str(steps), "--sampling.guidance_scale", "5.0", "--t2i.estimator", "is",
        "--t2i.clip_range", "1e-4", "--t2i.lr", "3e-4", "--t2i.inner_epochs", str(inner_epochs), "--t2i.minibatches", "1",
        "--t2i.timestep_fraction", str(fraction), "--logging.log_with", "none", "--evaluation.enabled", "false",
        "--checkpoint_every", "0", *extra,
    ]  # fmt: skip


@contextlib.contextmanager
def unet_counter(trainer: ParrotTrainer):
    """Yields {"calls", "rows"} of the UNet's forward passes while the block runs."""
    unet = {"calls": 0, "rows": 0}

    def count(_module, inputs):
        unet["calls"] += 1
        unet["rows"] += int(inputs[0].shape[0])

    handle = trainer.parts.policy.unet.register_forward_pre_hook(count)
    try:
        yield unet
    finally:
        handle.remove()


#: the stages timed per epoch: their seconds as ``run_iteration`` records them in its metrics
TIMED_STAGES = {"sample_and_score": "time/sample_and_score_s", "update_t2i": "time/update_t2i_s"}


def time_our_epochs(trainer: ParrotTrainer, epochs: int, warmup: int, first: int = 0, recompute_old: bool = False) -> dict:
    """Seconds of ``epochs`` timed ``run_iteration`` calls after ``warmup`` untimed ones, with stage times
    (``recompute_old``: θ_old log-probs recomputed by an extra no-grad UNet pass, as before the fix)."""
    for i in range(warmup):
        trainer.run_iteration(first + i, recompute_old)
    seconds, stages = [], dict.fromkeys(TIMED_STAGES, 0.0)
    with unet_counter(trainer) as unet:
        for i in range(epochs):
            started = time.perf_counter()
            metrics = trainer.run_iteration(first + warmup + i, recompute_old).metrics
            seconds.append(time.perf_counter() - started)
            for name, key in TIMED_STAGES.items():
                stages[name] += metrics[key]
    return {
        "epoch_seconds": seconds,
        "stage_seconds_per_epoch": {k: v / epochs for k, v in stages.items()},
        "unet_calls_per_epoch": unet["calls"] / epochs,
        "unet_rows_per_epoch": unet["rows"] / epochs,
    }
