"""One step of the world build's ``identifiers`` distillation: the student's two terms in one UNet pass ÷ in two.

:func:`shapes.identifiers.prefix_invariance_loss` runs the student on the prefixed and on the plain captions as one
doubled batch; before, it made two calls. Both forms are timed here on the same batches (loss and backward through
the UNet and the text tower, as the stage trains them), interleaved (two passes, one pass, two, …) so drift in the
machine's speed hits both alike; the figure is the ratio of medians, and the largest difference between the two
forms' losses says what the one pass changes besides time (rounding only).

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/identifiers_step.py --json runs/identifiers_step.json

The default world is the committed one (``shapes/world``); batch and captions as the stage draws them.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the repo's packages and benchmarks/ importable
    sys.path.insert(0, str(REPO))

from benchmarks.machine_load import LoadWatch  # noqa: E402
from shapes.build_config import BuildConfig  # noqa: E402
from shapes.data import generate_examples  # noqa: E402
from shapes.identifiers import DistillationBatch, _text_towers, distillation_batch, prefix_invariance_loss  # noqa: E402
from shapes.sd import encode_latents  # noqa: E402
from t2i.families import policy_of_pipeline  # noqa: E402


def loss_in_two_passes(policy, teacher, noisy, timesteps, plain, prefixed):
    """The yardstick: the stage's loss as it was computed before, one student call per caption set."""
    with torch.no_grad():
        target = teacher.unet_forward(noisy, timesteps, teacher.encode_prompts(plain))
    shifted = F.mse_loss(policy.unet_forward(noisy, timesteps, policy.encode_prompts(prefixed)), target)
    kept = F.mse_loss(policy.unet_forward(noisy, timesteps, policy.encode_prompts(plain)), target)
    return shifted + kept, shifted


def measure(world: Path, batch_size: int, repeats: int, examples: int, seed: int = 31) -> dict:
    """Median seconds of one loss + backward in each form, over ``repeats`` batches drawn as the stage draws them."""
    from diffusers import StableDiffusionPipeline

    pipeline = StableDiffusionPipeline.from_pretrained(world / "sd", safety_checker=None)
    config = BuildConfig()
    train = generate_examples(examples, config.seed, "train", config.data)
    policy, teacher = policy_of_pipeline(pipeline), policy_of_pipeline(copy.deepcopy(pipeline))
    torch.nn.ModuleList([teacher.unet, *_text_towers(teacher)]).eval().requires_grad_(False)
    trained = torch.nn.ModuleList([policy.unet, *_text_towers(policy)]).train().requires_grad_(True)
    latents = encode_latents(pipeline.vae, train)
    generator, rng = torch.Generator().manual_seed(seed), np.random.default_rng(seed)
    stage = replace(config.identifiers, batch_size=batch_size)
    batches = [distillation_batch(train, latents, pipeline.scheduler, stage, generator, rng) for _ in range(repeats + 1)]

    def step(loss_fn, batch: DistillationBatch) -> tuple[float, float]:
        trained.zero_grad(set_to_none=True)
        start = time.perf_counter()
        loss, _ = loss_fn(policy, teacher, batch.noisy, batch.timesteps, batch.plain, batch.prefixed)
        loss.backward()
        return time.perf_counter() - start, loss.item()

    for loss_fn in (loss_in_two_passes, prefix_invariance_loss):  # warm-up on the first batch
        step(loss_fn, batches[0])
    two, one, differences = [], [], []
    for batch in batches[1:]:
        seconds_two, loss_two = step(loss_in_two_passes, batch)
        seconds_one, loss_one = step(prefix_invariance_loss, batch)
        two.append(seconds_two)
        one.append(seconds_one)
        differences.append(abs(loss_one - loss_two) / abs(loss_two))
    return {
        "batch_size": batch_size,
        "repeats": repeats,
        "two_passes_s": statistics.median(two),
        "one_pass_s": statistics.median(one),
        "ratio": statistics.median(one) / statistics.median(two),
        "largest_relative_loss_difference": max(differences),
        "torch_threads": torch.get_num_threads(),
    }


def summary_line(figures: dict) -> str:
    """The figures of :func:`measure` in one line."""
    return (
        f"identifiers step (batch {figures['batch_size']}, median of {figures['repeats']}): two passes {figures['two_passes_s']:.3f}s  "
        f"one pass {figures['one_pass_s']:.3f}s  ratio {figures['ratio']:.3f}; losses differ by at most "
        f"{figures['largest_relative_loss_difference']:.1e} (relative)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--world", type=Path, default=REPO / "shapes" / "world", help="a built world directory (its sd/ is read)")
    parser.add_argument("--batch_size", type=int, default=BuildConfig().identifiers.batch_size, help="latents per step (the stage's)")
    parser.add_argument("--repeats", type=int, default=15, help="timed steps of each form (after one warm-up)")
    parser.add_argument("--examples", type=int, default=2000, help="training images drawn to take batches from")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    if not (args.world / "sd" / "model_index.json").is_file():
        raise SystemExit(f"error: {args.world} has no sd/ pipeline: give --world a built world directory")
    load = LoadWatch(own_threads=torch.get_num_threads())
    figures = measure(args.world, args.batch_size, args.repeats, args.examples)
    figures["load"] = load.finish()
    print(summary_line(figures))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
