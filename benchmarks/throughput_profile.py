"""Where an epoch of ours goes, and what the standard speed levers change: sections ``--profile``,
``--update_options`` and ``--compile`` of ``benchmarks/throughput.py`` (the same DDPO-IS epoch as its
``--trl`` section: :func:`benchmarks.throughput_timing.ddpo_args`).

``profile``         one epoch split into the policy's own calls, timed by wrapping them on the
                    trainer's policy (no profiler overhead inside the UNet): the UNet forward while
                    sampling (no grad) and while updating (grad), the DDIM step with its log-density,
                    prompt encoding, VAE decode, the reward, the backward pass, the optimiser step,
                    and what is left (Python, the loop, bookkeeping).
``update_options``  ``update_t2i`` alone on one fixed rollout, interleaved over options: plain,
                    gradient checkpointing, ``channels_last`` UNet weights, fused AdamW.
``compile``         epochs with ``model.compile`` off and on (inductor): compile time (first epoch −
                    steady epoch) apart from the steady-state epoch.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from pathlib import Path

import torch

from benchmarks.throughput_timing import ddpo_args, spread, time_our_epochs
from parrot import rollout as rollout_stage
from parrot.credit import batch_advantages, gather_scores
from parrot.rollout import draw_prompts, local_prompts, sample_and_score
from parrot.t2i_update import update_t2i
from parrot.train import ParrotTrainer
from parrot.train_config import load_train_config
from t2i.tiny import build_tiny_pipeline

__all__ = ["compile_section", "profile_section", "update_options_section"]


def _trainer(args: argparse.Namespace, work: Path, name: str, *extra: str) -> ParrotTrainer:
    pipeline_dir = work / f"pipeline_{args.profile_size}"
    if not (pipeline_dir / "model_index.json").is_file():
        build_tiny_pipeline(args.size_configs[args.profile_size]).save_pretrained(pipeline_dir)
    flags = ddpo_args(work / name, str(pipeline_dir), args.trl_batch, args.steps, args.inner_epochs, args.timestep_fraction, *extra)
    return ParrotTrainer(load_train_config(flags))


# ----- profile ------------------------------------------------------------------------------------
@contextlib.contextmanager
def _timed_calls(trainer: ParrotTrainer, totals: dict[str, float]):
    """Wrap the policy's and optimiser's calls so their wall time adds up in ``totals``."""
    policy, parts = trainer.parts.policy, trainer.parts
    originals = []  # (owner, attribute, what its own __dict__ held before, if anything)

    def wrap(owner, attribute: str, name_of):
        original = getattr(owner, attribute)
        originals.append((owner, attribute, vars(owner).get(attribute)))

        def wrapper(*a, **k):
            name = name_of()
            start = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                totals[name] = totals.get(name, 0.0) + time.perf_counter() - start

        setattr(owner, attribute, wrapper)

    wrap(policy, "unet_forward", lambda: "unet forward (update, grad)" if torch.is_grad_enabled() else "unet forward (sampling)")
    wrap(policy, "step", lambda: "DDIM step + log-prob (update)" if torch.is_grad_enabled() else "DDIM step + log-prob (sampling)")
    wrap(policy, "encode_prompts", lambda: "prompt encoding")
    wrap(policy, "decode", lambda: "VAE decode")
    wrap(rollout_stage, "score", lambda: "reward")  # a module function: sample_and_score looks it up at call time
    wrap(parts.t2i_optimizer, "step", lambda: "optimiser step")
    original_backward = torch.Tensor.backward

    def backward(self, *a, **k):
        start = time.perf_counter()
        try:
            return original_backward(self, *a, **k)
        finally:
            totals["backward"] = totals.get("backward", 0.0) + time.perf_counter() - start

    torch.Tensor.backward = backward
    try:
        yield
    finally:
        torch.Tensor.backward = original_backward
        for owner, attribute, own in reversed(originals):
            if own is None:
                delattr(owner, attribute)  # the instance's own wrapper: the class's method shows through again
            else:
                setattr(owner, attribute, own)


def profile_section(args: argparse.Namespace, work: Path) -> dict:
    """Seconds per epoch of each part of the epoch, and the rest, over ``args.epochs`` epochs after a warm-up."""
    trainer = _trainer(args, work, "profile")
    trainer.run_iteration(0)
    totals: dict[str, float] = {}
    stages = {"sample_and_score": 0.0, "update_t2i": 0.0}
    epochs = args.epochs * args.rounds
    with _timed_calls(trainer, totals):
        started = time.perf_counter()
        for i in range(epochs):
            metrics = trainer.run_iteration(1 + i).metrics
            stages["sample_and_score"] += metrics["time/sample_and_score_s"]
            stages["update_t2i"] += metrics["time/update_t2i_s"]
        wall = time.perf_counter() - started
    per_epoch = {k: v / epochs for k, v in totals.items()}
    sampling = ("unet forward (sampling)", "DDIM step + log-prob (sampling)", "prompt encoding", "VAE decode", "reward")
    update = ("unet forward (update, grad)", "DDIM step + log-prob (update)", "backward", "optimiser step")
    stage = {k: v / epochs for k, v in stages.items()}
    per_epoch["rest of sample_and_score"] = stage["sample_and_score"] - sum(per_epoch.get(k, 0.0) for k in sampling)
    per_epoch["rest of update_t2i"] = stage["update_t2i"] - sum(per_epoch.get(k, 0.0) for k in update)
    per_epoch["rest of the iteration"] = wall / epochs - stage["sample_and_score"] - stage["update_t2i"]
    return {"size": args.profile_size, "epochs": epochs, "epoch_s": wall / epochs, "stage_s": stage, "seconds_per_epoch": per_epoch}


# ----- update options -----------------------------------------------------------------------------
def _option_switches(parts) -> dict[str, tuple]:
    """name → (turn on, turn off) of each option on the trainer's UNet / optimiser."""
    unet = parts.policy.unet
    params = parts.t2i_params
    lr, weight_decay = parts.t2i_optimizer.defaults["lr"], parts.t2i_optimizer.defaults["weight_decay"]
    plain_optimizer = parts.t2i_optimizer
    fused = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    return {
        "plain": (lambda: None, lambda: None),
        "gradient_checkpointing": (unet.enable_gradient_checkpointing, unet.disable_gradient_checkpointing),
        "channels_last": (lambda: unet.to(memory_format=torch.channels_last), lambda: unet.to(memory_format=torch.contiguous_format)),
        "fused_adamw": (lambda: setattr(parts, "t2i_optimizer", fused), lambda: setattr(parts, "t2i_optimizer", plain_optimizer)),
    }


def update_options_section(args: argparse.Namespace, work: Path) -> dict:
    """Median seconds of ``update_t2i`` per option (interleaved repeats on one rollout), and each ÷ plain."""
    trainer = _trainer(args, work, "options")
    parts = trainer.parts
    prompts = local_prompts(parts, draw_prompts(parts, 0))
    rollout, scores = sample_and_score(parts, prompts, prompts, 0, 0)
    advantages = batch_advantages(parts, gather_scores(parts, scores), prompts)
    switches = _option_switches(parts)
    seconds: dict[str, list[float]] = {name: [] for name in switches}
    for repeat in range(args.repeats + 1):
        for name, (on, off) in switches.items():
            on()
            start = time.perf_counter()
            update_t2i(parts, rollout, advantages, 0)
            if repeat:  # the first pass of each option is its warm-up
                seconds[name].append(time.perf_counter() - start)
            off()
    plain = statistics.median(seconds["plain"])
    return {"size": args.profile_size, "update_s": {k: spread(v) for k, v in seconds.items()},
            "over_plain": {k: statistics.median(v) / plain for k, v in seconds.items()}}  # fmt: skip


# ----- compile ------------------------------------------------------------------------------------
def compile_section(args: argparse.Namespace, work: Path) -> dict:
    """Epoch seconds with ``model.compile`` off and on: first epoch (compiles), then steady epochs."""
    rows = []
    for mode in ("off", args.compile_mode):
        trainer = _trainer(args, work, f"compile_{mode}", "--model.compile.mode", mode)
        start = time.perf_counter()
        trainer.run_iteration(0)
        first = time.perf_counter() - start
        steady = time_our_epochs(trainer, args.epochs * args.rounds, warmup=1, first=1)
        median = statistics.median(steady["epoch_seconds"])
        rows.append({"compile": mode, "first_epoch_s": first, "compile_s": first - median, "epoch_s": spread(steady["epoch_seconds"]),
                     "stage_seconds_per_epoch": steady["stage_seconds_per_epoch"]})  # fmt: skip
    off, on = rows[0]["epoch_s"]["median"], rows[1]["epoch_s"]["median"]
    return {"size": args.profile_size, "rows": rows, "compiled_over_eager_epoch": on / off}
