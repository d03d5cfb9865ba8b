"""Rollout overhead: trajectory-recording sampling ÷ a stock diffusers pipeline call.

Both run the same pipeline object (same weights, prompts, steps, batch, η, CFG scale and
seed); the stock call returns tensors (``output_type="pt"``) like the policy does, and its
progress bar is off like the policy's. Calls are interleaved (stock, policy, stock, …) so
drift in machine load hits both alike; the figure is the ratio of medians.

    python benchmarks/rollout_overhead.py --json runs/rollout_overhead.json

Sizes: ``small`` is the test pipeline (UNet 32/64, 8×8 latents); ``large`` is UNet
64/128/256 on 32×32 latents, where the UNet dominates the time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from t2i import Guidance, StableDiffusionPolicy
from t2i.tiny import TinyPipelineConfig, build_tiny_pipeline

SIZES = {
    "small": TinyPipelineConfig(),
    "large": TinyPipelineConfig(block_out_channels=(64, 128, 256), latent_size=32, text_hidden_size=64),
}


def time_once(fn) -> float:
    """Wall seconds of ``fn()`` (waiting for the GPU's queued work when there is one)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() and torch.cuda.is_initialized() else (lambda: None)
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def measure(size: str, batch: int, steps: int, repeats: int, guidance_scale: float = 7.5) -> dict:
    pipeline = build_tiny_pipeline(SIZES[size])
    return {"size": size} | compare_rollouts(pipeline, StableDiffusionPolicy(pipeline), batch, steps, repeats, guidance_scale)


def compare_rollouts(
    pipeline, policy, batch: int, steps: int, repeats: int, guidance_scale: float = 7.5, height: int | None = None
) -> dict:
    """Medians of the stock ``pipeline`` call and of ``policy.sample`` on it, interleaved, and their ratio."""
    pipeline.set_progress_bar_config(disable=True)
    prompts = [f"a {c} circle" for c in ("red", "green", "blue", "yellow")] * (batch // 4 + 1)
    prompts = prompts[:batch]
    device = policy.device

    def plain():
        with torch.no_grad():
            pipeline(prompts, num_inference_steps=steps, eta=1.0, guidance_scale=guidance_scale, height=height, width=height,
                     generator=torch.Generator(device).manual_seed(0), output_type="pt")  # fmt: skip

    def recorded():
        policy.sample(prompts, num_inference_steps=steps, eta=1.0, guidance=Guidance.cfg(guidance_scale), height=height, width=height,
                      generator=torch.Generator(device).manual_seed(0))  # fmt: skip

    plain(), recorded()  # warm-up
    plain_s, policy_s = [], []
    for _ in range(repeats):
        plain_s.append(time_once(plain))
        policy_s.append(time_once(recorded))
    plain_median, policy_median = statistics.median(plain_s), statistics.median(policy_s)
    return {
        "batch": batch,
        "steps": steps,
        "repeats": repeats,
        "plain_s": plain_median,
        "policy_s": policy_median,
        "ratio": policy_median / plain_median,
        "torch_threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["small", "large"], choices=sorted(SIZES))
    parser.add_argument("--batch", type=int, default=4, help="images per call")
    parser.add_argument("--num_steps", type=int, default=20, help="DDIM steps")
    parser.add_argument("--repeats", type=int, default=9, help="timed calls of each kind (after one warm-up)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--json", type=Path, help="write the first size's figures here, all sizes under 'sizes'")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = [measure(size, args.batch, args.num_steps, args.repeats) for size in args.sizes]
    for r in results:
        print(
            f"{r['size']:>6}: stock {r['plain_s']:.3f}s  policy {r['policy_s']:.3f}s  ratio {r['ratio']:.3f} "
            f"(batch {r['batch']}, {r['steps']} steps, median of {r['repeats']})"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        first = results[0]
        payload = {"ratio": first["ratio"], "plain_s": first["plain_s"], "policy_s": first["policy_s"], "sizes": results}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
