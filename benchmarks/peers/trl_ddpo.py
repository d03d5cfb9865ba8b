"""The peer of ``benchmarks/throughput.py --trl``: TRL 0.23.1's ``DDPOTrainer`` on a saved pipeline.

Runs inside the peer's own virtual environment (TRL 0.23.1, diffusers 0.39, transformers < 5),
which ``throughput.py`` builds and caches outside the repository; it prints one JSON line.
It imports nothing of this project except ``rewards.jpeg`` (the same JPEG compressibility as
our trainer scores), found through PYTHONPATH.

One epoch of ``DDPOTrainer.step``: sample ``batch`` images (one sampling batch), score them,
whiten the rewards, then ``inner_epochs`` passes of PPO-clipped updates over the trained
timesteps with one optimiser step per pass (train batch = ``batch``, no gradient accumulation).
The wall time of each ``step`` call is recorded, and so is the time inside its three stages
(``_generate_samples``, ``compute_rewards``, ``_train_batched_samples``), by wrapping them.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

PROMPTS = ("a red circle", "a blue square", "a green triangle", "a yellow star",
           "two red squares", "a small blue circle", "a big green square", "a purple triangle")  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pipeline", type=Path, required=True, help="saved diffusers StableDiffusionPipeline directory")
    parser.add_argument("--batch", type=int, default=8, help="images per epoch (one sampling and one train batch)")
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps")
    parser.add_argument("--inner_epochs", type=int, default=1, help="passes over the epoch's samples")
    parser.add_argument("--timestep_fraction", type=float, default=0.5, help="share of steps trained")
    parser.add_argument("--guidance_scale", type=float, default=5.0, help="CFG scale (sampling and training)")
    parser.add_argument("--lora_rank", type=int, default=4, help="must be 4: TRL's DDPO pipeline hard-codes rank 4")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs (after --warmup untimed ones)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed epochs first")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args(argv)
    if not (args.pipeline / "model_index.json").is_file():
        parser.error(f"--pipeline {args.pipeline}: no diffusers pipeline there (model_index.json missing)")
    return args


def result_json(args: argparse.Namespace, epoch_seconds: list[float], versions: dict[str, str], **extra) -> str:
    """The driver's output: samples/s = batch ÷ median epoch time, and the raw times."""
    median = statistics.median(epoch_seconds)
    payload = {
        "samples_per_second": args.batch / median,
        "epoch_seconds": list(epoch_seconds),
        "median_epoch_s": median,
        "batch": args.batch,
        "versions": versions,
    }
    return json.dumps(payload | extra)


def timed(stages: dict[str, float], name: str, method):
    """``method`` with its wall time added to ``stages[name]``."""

    def wrapper(*a, **k):
        start = time.perf_counter()
        try:
            return method(*a, **k)
        finally:
            stages[name] = stages.get(name, 0.0) + time.perf_counter() - start

    return wrapper


def ddpo_config(args: argparse.Namespace):
    """TRL's ``DDPOConfig`` of one epoch as the module docstring describes it."""
    from trl import DDPOConfig

    return DDPOConfig(
        num_epochs=args.warmup + args.epochs,
        sample_num_steps=args.steps,
        sample_eta=1.0,
        sample_guidance_scale=args.guidance_scale,
        sample_batch_size=args.batch,
        sample_num_batches_per_epoch=1,
        train_batch_size=args.batch,
        train_gradient_accumulation_steps=1,
        train_num_inner_epochs=args.inner_epochs,
        train_timestep_fraction=args.timestep_fraction,
        train_learning_rate=3e-4,
        train_cfg=True,
        mixed_precision="no",
        log_with=None,
        save_freq=10**9,
        logdir=str(Path.cwd() / "runs" / "trl_ddpo_peer"),
        per_prompt_stat_tracking=False,
        async_reward_computation=False,
    )


def build_trainer(args: argparse.Namespace):
    """``DDPOTrainer`` on the saved pipeline (LoRA), JPEG compressibility as reward, prompts drawn from :data:`PROMPTS`."""
    from accelerate import PartialState
    from trl import DDPOTrainer, DefaultDDPOStableDiffusionPipeline

    from rewards.jpeg import jpeg_size_kb

    def reward_fn(images, prompts, metadata):
        return -jpeg_size_kb(images.float().cpu()), {}

    def prompt_fn():
        return random.choice(PROMPTS), {}

    config = ddpo_config(args)
    PartialState()  # the pipeline logs through accelerate before DDPOTrainer creates its Accelerator
    pipeline = DefaultDDPOStableDiffusionPipeline(str(args.pipeline), use_lora=True)
    return DDPOTrainer(config, reward_fn, prompt_fn, pipeline)


def time_epochs(trainer, args: argparse.Namespace) -> tuple[list[float], dict[str, float], list[int]]:
    """Seconds of each timed ``step`` after the warm-up ones, the stages' seconds and [UNet calls, UNet rows],
    both summed over the timed epochs."""
    stages: dict[str, float] = {}
    for name in ("_generate_samples", "compute_rewards", "_train_batched_samples"):
        setattr(trainer, name, timed(stages, name, getattr(trainer, name)))
    unet_rows = [0, 0]

    def count(_module, inputs):
        unet_rows[0] += 1
        unet_rows[1] += int(inputs[0].shape[0])

    trainer.sd_pipeline.unet.register_forward_pre_hook(count)
    global_step, seconds = 0, []
    for epoch in range(args.warmup + args.epochs):
        if epoch == args.warmup:
            stages.clear()
            unet_rows[:] = [0, 0]
        start = time.perf_counter()
        global_step = trainer.step(epoch, global_step)
        if epoch >= args.warmup:
            seconds.append(time.perf_counter() - start)
    return seconds, stages, unet_rows


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import diffusers
    import torch
    import transformers
    import trl

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.lora_rank != 4:
        raise SystemExit(f"--lora_rank {args.lora_rank}: TRL 0.23.1's DefaultDDPOStableDiffusionPipeline uses rank 4 only")
    torch.manual_seed(0)
    random.seed(0)
    seconds, stages, unet_rows = time_epochs(build_trainer(args), args)
    versions = {"trl": trl.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
                "torch": torch.__version__}  # fmt: skip
    per_epoch = {k: v / args.epochs for k, v in stages.items()}
    sys.stdout.write(
        result_json(args, seconds, versions, stage_seconds_per_epoch=per_epoch, torch_threads=torch.get_num_threads(),
                    unet_calls_per_epoch=unet_rows[0] / args.epochs, unet_rows_per_epoch=unet_rows[1] / args.epochs)
        + "\n"
    )  # fmt: skip


if __name__ == "__main__":
    main()
