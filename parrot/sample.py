"""``python -m parrot.sample``: sample images from a diffusion policy and record the trajectories.

Writes ``OUT/images/00000.png …``, ``OUT/trajectory.safetensors`` (latents x_T…x_0, timesteps,
per-step log-probs) and ``OUT/samples.jsonl`` (one row per image: prompt, original prompt,
guidance weights, seed, the trajectory's total log-prob). Useful to inspect RL rollouts; with
``--model builtin:tiny`` (the default) it runs a randomly initialised toy pipeline, offline.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from parrot.models import build_policy
from parrot_base.cli import run_cli
from parrot_base.config import parse_config
from rewards.base import as_pil_images
from t2i import DiffusionPolicy, Guidance

__all__ = ["SampleConfig", "run_sampling", "main"]


@dataclass
class SampleConfig:
    """Sample images with trajectory and log-prob recording."""

    model: str = field(
        default="builtin:tiny",
        metadata={
            "help": "hub id or local SD 1.x/2.x, SDXL, SD3 or FLUX.1 pipeline directory, or 'builtin:tiny' / 'builtin:tiny_sdxl' / "
            "'builtin:tiny_sd3' / 'builtin:tiny_flux' (random toys)"
        },
    )
    prompt: tuple[str, ...] = field(default=(), metadata={"help": "prompts (ĉ, the ones sampled from), one argument each"})
    original_prompt: tuple[str, ...] = field(
        default=(), metadata={"help": "original prompts c, one per prompt; switches to prompt-centred guidance"}
    )
    guidance_scale: float = field(default=7.5, metadata={"help": "CFG scale when no original prompts are given"})
    w1: float = field(default=5.0, metadata={"help": "Parrot weight of the original prompt c"})
    w2: float = field(default=5.0, metadata={"help": "Parrot weight of the expanded prompt ĉ"})
    negative_prompt: str = field(default="", metadata={"help": "prompt of the unconditional branch"})
    num_steps: int = field(default=20, metadata={"help": "number of DDIM steps T", "formerly": "steps"})
    eta: float = field(default=1.0, metadata={"help": "DDIM η (> 0 records log-probs; 1 is DDPM-like)"})
    seed: int = field(default=0, metadata={"help": "random seed of the generator"})
    lora: str = field(default="", metadata={"help": "optional diffusers-format LoRA directory to load"})
    out: Path = field(default=Path("runs/sample"), metadata={"help": "output directory"})
    overwrite: bool = field(default=False, metadata={"help": "replace a non-empty output directory"})


def prepare_output_dir(out: Path, overwrite: bool) -> None:
    """Create ``out``; refuse to touch a non-empty one unless ``overwrite``."""
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty; pass --overwrite to replace it")
        shutil.rmtree(out)
    (out / "images").mkdir(parents=True, exist_ok=True)


def load_policy(config: SampleConfig) -> DiffusionPolicy:
    policy = build_policy(config.model, "float32", "cpu")
    if config.lora:
        policy.load_lora(config.lora, trainable=False)
    return policy


def run_sampling(config: SampleConfig) -> list[dict]:
    """Sample one image per prompt, write the outputs, and return the jsonl rows."""
    if not config.prompt:
        raise ValueError("no prompts: pass --prompt 'a red circle' 'a blue square'")
    policy = load_policy(config)
    guidance = Guidance.choose(bool(config.original_prompt), config.w1, config.w2, config.guidance_scale)
    generator = torch.Generator(device=policy.device).manual_seed(config.seed)
    trajectory = policy.sample(
        list(config.prompt),
        original_prompts=list(config.original_prompt) or None,
        guidance=guidance,
        negative_prompt=config.negative_prompt,
        num_inference_steps=config.num_steps,
        eta=config.eta,
        generator=generator,
        progress=True,
    )
    prepare_output_dir(config.out, config.overwrite)
    rows = []
    for i, (prompt, image) in enumerate(zip(trajectory.prompts, as_pil_images(trajectory.images))):
        name = f"images/{i:05d}.png"
        image.save(config.out / name)
        rows.append(
            {
                "prompt": prompt,
                "original_prompt": trajectory.original_prompts[i] if trajectory.original_prompts else None,
                "guidance_weights": list(guidance.weights),
                "seed": config.seed,
                "image": name,
                "log_prob_total": float(trajectory.log_probs_sum[i].sum()),
            }
        )
    (config.out / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    save_file(
        {
            "latents": trajectory.latents.contiguous().cpu(),
            "timesteps": trajectory.timesteps.cpu(),
            "log_probs": trajectory.log_probs.cpu(),
        },
        str(config.out / "trajectory.safetensors"),
    )
    return rows


def main(argv: list[str] | None = None) -> None:
    config = parse_config(SampleConfig, argv)
    rows = run_sampling(config)
    for row in rows:
        sys.stdout.write(f"{row['image']}  log p(trajectory) = {row['log_prob_total']:.1f}  {row['prompt']!r}\n")
    sys.stdout.write(f"wrote {len(rows)} image(s), samples.jsonl and trajectory.safetensors to {config.out}\n")


if __name__ == "__main__":
    run_cli(main)
