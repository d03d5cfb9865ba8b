"""Rollout overhead: trajectory-recording sampling ÷ a stock diffusers pipeline call (SD, SDXL, SD3 or FLUX).

Both run the same pipeline object (same weights, prompts, steps, batch, guidance and seed); the
stock call returns tensors (``output_type="pt"``) like the policy does, and its progress bar is off
like the policy's. Calls are interleaved (stock, policy, stock, …) so drift in machine load hits
both alike; the figure is the ratio of medians.

    python benchmarks/rollout_overhead.py --json runs/rollout_overhead.json
    python benchmarks/rollout_overhead.py --family sdxl --json runs/rollout_overhead_sdxl.json
    python benchmarks/rollout_overhead.py --family sd3 --json runs/rollout_overhead_sd3.json
    python benchmarks/rollout_overhead.py --family flux --json runs/rollout_overhead_flux.json

``--family sd`` times ``StableDiffusionPolicy`` against ``StableDiffusionPipeline`` on the tiny SD
pipeline (:mod:`t2i.tiny`), ``sdxl`` the SDXL ones (:mod:`t2i.tiny_sdxl`), ``sd3`` the SD3 ones
(:mod:`t2i.tiny_sd3`) and ``flux`` the FLUX.1 ones (:mod:`t2i.tiny_flux`). The UNet families sample
stochastic DDIM with η = 1 against the stock call with ``eta=1.0``, CFG 7.5; the flow families record
Flow-GRPO's SDE (noise level a = 0.7, log-probs) against the stock Euler call: SD3 with CFG 7.5, FLUX
CFG-free with its distilled guidance 3.5 (:func:`call_settings`). Sizes: ``small`` is the test pipeline
(SD: UNet 32/64, 8×8 latents); ``large`` is UNet 64/128/256 (SD3, FLUX: a wider, deeper transformer)
on 32×32 latents, where the denoiser dominates the time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from diffusers import DiffusionPipeline

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the repo's packages and benchmarks/ importable
    sys.path.insert(0, str(REPO))

from benchmarks.machine_load import LoadWatch  # noqa: E402
from t2i import (  # noqa: E402
    DiffusionPolicy,
    FlowMatchingPolicy,
    FluxPolicy,
    Guidance,
    StableDiffusion3Policy,
    StableDiffusionPolicy,
    StableDiffusionXLPolicy,
)
from t2i.compile import COMPILE_MODES, CompileSettings, compile_denoiser  # noqa: E402
from t2i.tiny import TinyPipelineConfig, build_tiny_pipeline  # noqa: E402
from t2i.tiny_flux import TinyFluxConfig, build_tiny_flux_pipeline  # noqa: E402
from t2i.tiny_sd3 import TinySD3Config, build_tiny_sd3_pipeline  # noqa: E402
from t2i.tiny_sdxl import TinySDXLConfig, build_tiny_sdxl_pipeline  # noqa: E402

SIZES = {
    "small": TinyPipelineConfig(),
    "large": TinyPipelineConfig(block_out_channels=(64, 128, 256), latent_size=32, text_hidden_size=64),
}
SDXL_SIZES = {
    "small": TinySDXLConfig(),
    "large": TinySDXLConfig(block_out_channels=(64, 128, 256), latent_size=32, text_hidden_size=64, text_hidden_size_2=64),
}
SD3_SIZES = {
    "small": TinySD3Config(),
    "large": TinySD3Config(latent_size=32, num_layers=4, num_attention_heads=4, attention_head_dim=32, text_hidden_size=64,
                           text_hidden_size_2=64, projection_dims=(64, 64), joint_attention_dim=128),
}  # fmt: skip
FLUX_SIZES = {
    "small": TinyFluxConfig(),
    "large": TinyFluxConfig(latent_size=32, num_layers=2, num_single_layers=4, num_attention_heads=4, attention_head_dim=32,
                            axes_dims_rope=(8, 12, 12), text_hidden_size=64, joint_attention_dim=128),
}  # fmt: skip
POLICIES: dict[str, type[DiffusionPolicy]] = {
    "sd": StableDiffusionPolicy,
    "sdxl": StableDiffusionXLPolicy,
    "sd3": StableDiffusion3Policy,
    "flux": FluxPolicy,
}
BUILDERS = {
    "sd": lambda size: build_tiny_pipeline(SIZES[size]),
    "sdxl": lambda size: build_tiny_sdxl_pipeline(SDXL_SIZES[size]),
    "sd3": lambda size: build_tiny_sd3_pipeline(SD3_SIZES[size]),
    "flux": lambda size: build_tiny_flux_pipeline(FLUX_SIZES[size]),
}
FLOW_NOISE_LEVEL = 0.7  # Flow-GRPO's a


def tiny_pipeline(family: str, size: str) -> DiffusionPipeline:
    """The tiny pipeline of ``family`` (a key of :data:`POLICIES`) at ``size`` (seeded: every call gives the same weights)."""
    return BUILDERS[family](size)


def call_settings(policy: DiffusionPolicy, guidance_scale: float) -> tuple[dict, dict]:
    """Keyword arguments of the stock call and of ``policy.sample`` that draw the same kind of rollout.

    DDIM families: η = 1 on both sides, CFG ``guidance_scale``. Flow families: the stock Euler call against the
    policy's SDE at a = 0.7 with log-probs; SD3 with CFG ``guidance_scale``; FLUX CFG-free (one pass, its
    distilled guidance g as the stock ``guidance_scale``), or true CFG when ``guidance_scale`` > 1.
    """
    if isinstance(policy, FluxPolicy):
        stock = {"guidance_scale": policy.distilled_guidance}
        if guidance_scale > 1:
            stock |= {"true_cfg_scale": guidance_scale, "negative_prompt": ""}
        return stock, {"eta": FLOW_NOISE_LEVEL, "guidance": Guidance.cfg(max(guidance_scale, 1.0))}
    if isinstance(policy, FlowMatchingPolicy):
        return {"guidance_scale": guidance_scale}, {"eta": FLOW_NOISE_LEVEL, "guidance": Guidance.cfg(guidance_scale)}
    return {"eta": 1.0, "guidance_scale": guidance_scale}, {"eta": 1.0, "guidance": Guidance.cfg(guidance_scale)}


def time_once(fn) -> float:
    """Wall seconds of ``fn()`` (waiting for the GPU's queued work when there is one)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() and torch.cuda.is_initialized() else (lambda: None)
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def measure(
    size: str, batch: int, steps: int, repeats: int, guidance_scale: float | None = None, compile_mode: str = "off", family: str = "sd"
) -> dict:
    """Stock call and policy sample of ``family``, interleaved; with ``compile_mode`` the policy samples with its
    own copy of the pipeline (same seed, same weights) whose UNet is compiled, against the eager stock call.
    ``guidance_scale`` None is the family's default: 7.5, or 1 (CFG-free) for FLUX."""
    pipeline = tiny_pipeline(family, size)
    policy = POLICIES[family](pipeline if compile_mode == "off" else tiny_pipeline(family, size))
    compile_denoiser(policy.unet, CompileSettings(mode=compile_mode))
    scale = policy.default_guidance_scale if guidance_scale is None else guidance_scale
    figures = compare_rollouts(pipeline, policy, batch, steps, repeats, scale)
    return {"family": family, "size": size, **figures, "guidance_scale": scale, "compile": compile_mode}


def compare_rollouts(
    pipeline: DiffusionPipeline, policy: DiffusionPolicy, batch: int, steps: int, repeats: int, guidance_scale: float = 7.5,
    height: int | None = None,
) -> dict:  # fmt: skip
    """Medians of the stock ``pipeline`` call and of ``policy.sample``, interleaved, their ratio, and the first policy call's seconds."""
    pipeline.set_progress_bar_config(disable=True)
    prompts = [f"a {c} circle" for c in ("red", "green", "blue", "yellow")] * (batch // 4 + 1)
    prompts = prompts[:batch]
    device = policy.device
    stock_settings, policy_settings = call_settings(policy, guidance_scale)

    def plain():
        with torch.no_grad():
            pipeline(prompts, num_inference_steps=steps, height=height, width=height, generator=torch.Generator(device).manual_seed(0),
                     output_type="pt", **stock_settings)  # fmt: skip

    def recorded():
        policy.sample(prompts, num_inference_steps=steps, height=height, width=height, generator=torch.Generator(device).manual_seed(0),
                      **policy_settings)  # fmt: skip

    plain()  # warm-up
    compile_s = time_once(recorded)  # warm-up; with compile on, the first call compiles the sampling graph
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
        "first_policy_call_s": compile_s,
        "torch_threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", default="sd", choices=sorted(POLICIES), help="pipeline family: SD 1.x, SDXL, SD3 or FLUX.1")
    parser.add_argument("--sizes", nargs="+", default=["small", "large"], choices=sorted(SIZES))
    parser.add_argument("--batch", type=int, default=4, help="images per call")
    parser.add_argument("--num_steps", type=int, default=20, help="denoising steps (DDIM, or the flow families' SDE / Euler)")
    parser.add_argument("--repeats", type=int, default=9, help="timed calls of each kind (after one warm-up)")
    parser.add_argument(
        "--settle", type=float, default=0.0, help="wait up to this many seconds for the load to fall below 0.75 per core first"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--compile", default="off", choices=COMPILE_MODES, help="torch.compile mode of the policy's UNet")
    parser.add_argument("--json", type=Path, help="write the first size's figures here, all sizes under 'sizes'")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load = LoadWatch(settle_s=args.settle, own_threads=torch.get_num_threads())
    results = [
        measure(size, args.batch, args.num_steps, args.repeats, compile_mode=args.compile, family=args.family) for size in args.sizes
    ]
    load_record = load.finish()
    for r in results:
        print(
            f"{r['family']} {r['size']:>6}: stock {r['plain_s']:.3f}s  policy {r['policy_s']:.3f}s  ratio {r['ratio']:.3f} "
            f"(batch {r['batch']}, {r['steps']} steps, guidance {r['guidance_scale']}, median of {r['repeats']}; compile {r['compile']}, "
            f"first policy call {r['first_policy_call_s']:.1f}s)"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        first = results[0]
        payload = {
            "ratio": first["ratio"],
            "plain_s": first["plain_s"],
            "policy_s": first["policy_s"],
            "sizes": results,
            "load": load_record,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
