"""GPU figures: rollout ÷ stock pipeline, training samples/s, peak memory and the UNet forward's MFU, at full size.

Random weights (:mod:`t2i.random_init`), bf16, SDPA attention (diffusers' default ``AttnProcessor2_0``, recorded), optionally
``torch.compile`` of the UNet (``--compile MODE``, as ``model.compile.mode``; the stock call of the rollout
ratio shares the compiled UNet): an SD 1.5-size UNet at 512 px and an SDXL-size UNet at 1024 px.

- **peak**: the card's measured bf16 matmul rate, 2n³ FLOPs of an n×n GEMM (n = 8192) per second.
- **UNet forward** at batch ``--batch`` (≥ 8; CFG doubles nothing here, one call of B rows): FLOPs counted by
  ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions, attention), seconds per call, TFLOP/s and
  MFU = achieved ÷ peak. Goal: ≥ 40 % at batch ≥ 8.
- **rollout ÷ stock**: ``policy.sample`` (trajectories and log-probs) ÷ the stock pipeline call on the same
  pipeline, interleaved, medians (``benchmarks/rollout_overhead.py``). Goal ≤ 1.03.
- **training**: one ``parrot.train`` iteration (T2I only, JPEG reward, DDPO-IS, every step trained): images
  per second of the T2I update (``time/update_t2i_s``). GRPO is not in this repository yet (reported so).
- **memory**: ``torch.cuda.max_memory_allocated`` per section.

A size whose family has no policy yet (SDXL before its family lands) gets the UNet figures only.

    python benchmarks/gpu.py --json runs/gpu.json [--compile default]
    python benchmarks/gpu.py --cpu_smoke          # toy sizes on the CPU: checks the script, measures nothing
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the repo's packages and benchmarks/ importable
    sys.path.insert(0, str(REPO))

from benchmarks.rollout_overhead import compare_rollouts, time_once  # noqa: E402
from benchmarks.throughput_timing import time_our_epochs  # noqa: E402
from parrot.models import BUILTIN_RANDOM, BUILTIN_TINY  # noqa: E402
from parrot.train import ParrotTrainer  # noqa: E402
from parrot.train_config import load_train_config  # noqa: E402
from parrot_base.cli import UsageError, run_cli  # noqa: E402
from t2i import POLICY_FAMILIES  # noqa: E402
from t2i.compile import COMPILE_MODES, CompileSettings, compile_denoiser  # noqa: E402
from t2i.random_init import build_random_pipeline, read_architecture  # noqa: E402

#: (architecture, image side) of the GPU run; the CPU smoke run uses the toy pipeline at its own size
SIZES = (("sd15", 512), ("sdxl_base", 1024))


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, repeats: int) -> dict:
    """Measured matmul rate: 2n³ FLOPs per n×n GEMM, best of ``repeats`` timed batches of 10."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    torch.matmul(a, b)  # warm-up
    best = min(time_once(lambda: [torch.matmul(a, b) for _ in range(10)]) for _ in range(repeats)) / 10
    return {"n": n, "seconds": best, "tflops": 2 * n**3 / best / 1e12}


def unet_inputs(pipeline, batch: int, side: int) -> tuple[tuple, dict]:
    """Random (x_t, t) and the conditioning tensors a UNet call of ``pipeline``'s family takes (SDXL: pooled + time ids)."""
    unet = pipeline.unet
    param = next(unet.parameters())
    latent = side // pipeline.vae_scale_factor
    x = torch.randn(batch, unet.config.in_channels, latent, latent, device=param.device, dtype=param.dtype)
    t = torch.full((batch,), 500, device=param.device)
    context = torch.randn(batch, 77, unet.config.cross_attention_dim, device=param.device, dtype=param.dtype)
    kwargs = {"encoder_hidden_states": context}
    if unet.config.addition_embed_type == "text_time":
        pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
        kwargs["added_cond_kwargs"] = {
            "text_embeds": torch.randn(batch, pooled, device=param.device, dtype=param.dtype),
            "time_ids": torch.tensor([side, side, 0, 0, side, side], device=param.device, dtype=param.dtype).repeat(batch, 1),
        }
    return (x, t), kwargs


def unet_forward_figures(pipeline, batch: int, side: int, repeats: int, peak_tflops: float) -> dict:
    """FLOPs of one UNet forward (counted eagerly), its median seconds as called (compiled or not), TFLOP/s and MFU."""
    args, kwargs = unet_inputs(pipeline, batch, side)
    unet = pipeline.unet
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            unet.forward(*args, **kwargs, return_dict=False)  # .forward: the eager graph even when the module is compiled
        unet(*args, **kwargs, return_dict=False)  # warm-up (and compilation)
        seconds = sorted(time_once(lambda: unet(*args, **kwargs, return_dict=False)) for _ in range(repeats))[repeats // 2]
    flops = counter.get_total_flops()
    achieved = flops / seconds / 1e12
    return {"batch": batch, "flops": flops, "seconds": seconds, "tflops": achieved, "mfu": achieved / peak_tflops}


def training_config(pipeline: str, args: argparse.Namespace, side: int, work: Path) -> dict:
    """``parrot.train`` settings of the training figure: T2I only, DDPO-IS, every denoising step trained."""
    return {
        "mode": "t2i", "iterations": 100, "output_dir": str(work), "device": args.device, "checkpoint_every": 0,
        "model": {"pipeline": pipeline, "dtype": args.dtype, "gradient_checkpointing": args.gradient_checkpointing,
                  "lora": {"rank": 4}, "compile": {"mode": args.compile}},
        "rewards": {"names": ["jpeg_compressibility"], "settings": {}},
        "identifiers": {"enabled": False}, "expander": {"model": ""}, "prompts": {"train": ["a red circle", "a cat on a sofa"]},
        "sampling": {"prompts_per_process": 1, "images_per_prompt": args.batch, "num_steps": args.steps, "resolution": side},
        "t2i": {"estimator": "is", "clip_range": 1e-4, "inner_epochs": 1, "minibatches": 1, "timestep_fraction": 1.0},
        "selection": {"reward_weighting": "raw"},  # A = r as before issue 13; any --batch, 1 included
        "evaluation": {"enabled": False}, "logging": {"log_with": "none", "images_every": 0},
    }  # fmt: skip


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None


def size_figures(arch: str, side: int, args: argparse.Namespace, peak_tflops: float, work: Path) -> dict:
    """All figures of one architecture: UNet forward, and with a policy family the rollout ratio and training rate."""
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    has_family = arch == "tiny" or read_architecture(arch)["pipeline_class"] in POLICY_FAMILIES
    record = {"arch": arch, "side": side, "grpo": "not in this repository yet"}
    trainer = None
    if has_family:
        config_path = work / f"{arch}.yaml"
        pipeline_name = BUILTIN_TINY if arch == "tiny" else BUILTIN_RANDOM + arch
        config_path.write_text(yaml.safe_dump(training_config(pipeline_name, args, side, work / arch)), encoding="utf-8")
        trainer = ParrotTrainer(load_train_config(["--preset", "none", "--config", str(config_path)]))
        pipeline = trainer.parts.policy.pipeline
    else:
        pipeline = build_random_pipeline(arch, dtype=dtype, device=device)
        compile_denoiser(pipeline.unet, CompileSettings(mode=args.compile))
        record["policy"] = f"no policy family yet for {type(pipeline).__name__}: UNet figures only"
    record["attention"] = sorted({type(p).__name__ for p in pipeline.unet.attn_processors.values()})  # AttnProcessor2_0: SDPA
    record["compile"] = args.compile
    record["parameters_unet"] = sum(p.numel() for p in pipeline.unet.parameters())
    reset_peak(device)
    record["unet_forward"] = unet_forward_figures(pipeline, args.batch, side, args.repeats, peak_tflops)
    record["unet_forward"]["peak_gib"] = peak_gib(device)
    if trainer is not None:
        reset_peak(device)
        record["rollout"] = compare_rollouts(pipeline, trainer.parts.policy, args.batch, args.steps, args.repeats, height=side)
        record["rollout"]["peak_gib"] = peak_gib(device)
        reset_peak(device)
        timing = time_our_epochs(trainer, epochs=args.train_epochs, warmup=1)
        update_s = timing["stage_seconds_per_epoch"]["update_t2i"]
        record["ddpo_is"] = {"images_per_s": args.batch / update_s, "denoising_steps_per_s": args.batch * args.steps / update_s,
                             "update_t2i_s": update_s, "peak_gib": peak_gib(device)} | timing  # fmt: skip
    return record


def _gib(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} GiB"


def format_report(record: dict) -> str:
    peak = record["peak"]
    lines = [f"{record['device_name']}: measured {record['dtype']} matmul peak {peak['tflops']:.3g} TFLOP/s (n = {peak['n']})"]
    for size in record["sizes"]:
        unet = size["unet_forward"]
        lines.append(f"{size['arch']} @ {size['side']} px, batch {unet['batch']}: UNet forward {unet['flops'] / 1e12:.3g} TFLOP in "
                     f"{unet['seconds'] * 1e3:.1f} ms = {unet['tflops']:.3g} TFLOP/s, MFU {100 * unet['mfu']:.1f} % "
                     f"(goal >= 40 %), peak {_gib(unet['peak_gib'])}")  # fmt: skip
        if "rollout" in size:
            rollout, train = size["rollout"], size["ddpo_is"]
            lines.append(f"  rollout / stock {rollout['ratio']:.3f} (goal <= 1.03; {rollout['policy_s']:.2f} s vs "
                         f"{rollout['plain_s']:.2f} s, {rollout['steps']} steps), peak {_gib(rollout['peak_gib'])}")  # fmt: skip
            lines.append(f"  DDPO-IS training {train['images_per_s']:.2f} images/s ({train['denoising_steps_per_s']:.1f} "
                         f"denoising steps/s), peak {_gib(train['peak_gib'])}; GRPO: {size['grpo']}")  # fmt: skip
        else:
            lines.append(f"  {size['policy']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu_smoke", action="store_true", help="toy sizes on the CPU, float32: checks the script runs")
    parser.add_argument("--batch", type=int, default=8, help="images per UNet call, rollout and training iteration")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps of rollouts and training")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per figure (median)")
    parser.add_argument("--train_epochs", type=int, default=2, help="timed training iterations (after one warm-up)")
    parser.add_argument("--gradient_checkpointing", action="store_true", help="UNet activation checkpointing in training")
    parser.add_argument("--compile", default="off", choices=COMPILE_MODES,
                        help="torch.compile mode of the UNet (model.compile.mode: rollouts, training and the forward figure)")  # fmt: skip
    parser.add_argument("--matmul_n", type=int, default=8192, help="side of the GEMM that measures the peak")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.cpu_smoke:
        args.device, args.dtype, sizes = "cpu", "float32", (("tiny", 16),)
        args.matmul_n, args.batch, args.steps, args.repeats, args.train_epochs = 128, 2, 2, 1, 1
    elif not torch.cuda.is_available():
        raise UsageError("CUDA is not available: benchmarks/gpu.py measures a GPU (use --cpu_smoke to check the script on a CPU)")
    else:
        args.device, args.dtype, sizes = "cuda", "bfloat16", SIZES
        torch.backends.cuda.matmul.allow_tf32 = True
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    started = time.perf_counter()
    record = {"device_name": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "dtype": args.dtype,
              "torch": torch.__version__, "peak": matmul_peak(device, dtype, args.matmul_n, args.repeats), "sizes": []}  # fmt: skip
    with tempfile.TemporaryDirectory() as work:
        for arch, side in sizes:
            record["sizes"].append(size_figures(arch, side, args, record["peak"]["tflops"], Path(work)))
            torch.cuda.empty_cache() if device.type == "cuda" else None
    record["wall_s"] = time.perf_counter() - started
    print(format_report(record))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return record


if __name__ == "__main__":
    run_cli(main)
