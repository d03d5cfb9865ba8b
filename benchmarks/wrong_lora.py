"""The "wrong" negative LoRA measured the way issue 15 asks: each bad-image source, 3 seeds, paired.

For every seed s and source (prompted, lowest_reward, degraded), ``parrot.wrong_lora`` trains a LoRA
on the world's training prompts with seed s. Then, for each CFG scale, the held-out prompts are drawn
with the same image seeds (s·1000 + j) in three settings — the base model, the base with the trigger
as negative prompt ("negative only"), and the source's LoRA with the trigger as negative prompt — and
scored against the prompt by aesthetic, preference and alignment (CLIPScore). Per seed, each setting's
mean over prompts × images; across seeds, the paired differences LoRA+neg − negative-only and
LoRA+neg − base as mean ± SE (n = seeds). Goal (issue 15): LoRA + negative beats both on aesthetic and
preference by ≥ 2 SE, without losing alignment by more than 1 SE. Two measured reasons come with it: the
LoRA alone (no negative prompt: what it does to every branch, since it is not confined to the trigger)
and the mean aesthetic of each source's training images beside the base model's samples (are they bad?).

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/wrong_lora.py --out runs/wrong_lora_bench
    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/wrong_lora.py --model {world}/sdxl --out runs/wrong_lora_sdxl

On the committed shapes world by default (``--model {world}/sd`` and the world's rewards and prompts).
Finished trainings and generations are kept under ``--out`` and skipped on a rerun.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the repo's packages importable
    sys.path.insert(0, str(REPO))

from parrot.generate import GenerateConfig, run_generation  # noqa: E402
from parrot.models import resolve_world, with_world  # noqa: E402
from parrot.presets import PRESETS  # noqa: E402
from parrot.wrong_lora import WrongLoraConfig, train_wrong_lora  # noqa: E402

SOURCES = ("prompted", "lowest_reward", "degraded")
REWARDS = ("laion_aesthetic", "preference", "clip_score")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--world", default="", help="shapes world directory (default: the committed one)")
    parser.add_argument("--model", default="{world}/sd", help="the SD-family pipeline")
    parser.add_argument("--sources", nargs="+", default=list(SOURCES), choices=SOURCES)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--guidance_scales", type=float, nargs="+", default=[13.0, 4.0], help="13: the article's; 4: the world preset's")
    parser.add_argument("--images_per_prompt", type=int, default=8)
    parser.add_argument("--num_steps", type=int, default=20)
    parser.add_argument("--train_steps", type=int, default=200)
    parser.add_argument("--keep", type=int, default=4, help="bad images per training prompt")
    parser.add_argument("--trigger", default="wrong")
    parser.add_argument("--out", type=Path, default=Path("runs/wrong_lora_bench"))
    args = parser.parse_args(argv)
    if len(args.seeds) < 2:
        parser.error("--seeds: give at least 2 seeds for a standard error")
    return args


def world_settings(args: argparse.Namespace) -> dict:
    world = resolve_world(args.world)
    preset = PRESETS["shapes"]
    return {
        "model": with_world(args.model, world),
        "train_prompts": with_world(preset["prompts"]["train_file"], world),
        "held_out": with_world(preset["prompts"]["evaluation_file"], world),
        "reward_settings": {k: v for k, v in with_world(preset["rewards"]["settings"], world).items() if k in REWARDS},
    }


def trained_lora(args: argparse.Namespace, world: dict, source: str, seed: int) -> Path:
    """The LoRA of (source, seed), trained unless already on disk."""
    out = args.out / "loras" / f"{source}-seed{seed}"
    if not (out / "wrong_lora.json").is_file():
        train_wrong_lora(WrongLoraConfig(
            model=world["model"], prompts_file=world["train_prompts"], source=source, rank_by="laion_aesthetic",
            reward_settings=world["reward_settings"], keep=args.keep, candidates=2 * args.keep, num_steps=args.num_steps,
            trigger=args.trigger, train_steps=args.train_steps, seed=seed, out=out, overwrite=True,
        ))  # fmt: skip
    return out / "lora"


def mean_scores(args: argparse.Namespace, world: dict, label: str, seed: int, scale: float, **variant) -> dict[str, float]:
    """Mean of each reward over held-out prompts × images of one setting (cached under ``--out``)."""
    cache = args.out / "scores" / f"{label}-cfg{scale:g}-seed{seed}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    variant = {"prompts_file": world["held_out"]} | variant
    rows = run_generation(GenerateConfig(
        model=world["model"], guidance="cfg", guidance_scale=scale, num_steps=args.num_steps,
        seed=1000 * seed, images_per_prompt=args.images_per_prompt, rewards=REWARDS, reward_settings=world["reward_settings"],
        out=args.out / "tmp", overwrite=True, **variant,
    ))  # fmt: skip
    means = {name: statistics.fmean(row["rewards"][name] for row in rows) for name in REWARDS}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(means))
    return means


def bad_image_aesthetic(args: argparse.Namespace, world: dict, loras: dict) -> dict[str, dict[str, float]]:
    """Why: the mean aesthetic of each source's training images (are they bad?), per source mean ± SE over
    seeds, beside the base model's own samples of the training prompts (CFG 4, same count)."""
    import numpy as np
    import torch
    from PIL import Image

    from rewards import load_reward

    reward = load_reward("laion_aesthetic", **world["reward_settings"]["laion_aesthetic"])

    def score(directory: Path) -> float:
        files = sorted(directory.glob("*.png"))
        images = torch.stack([torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1).float() / 255 for f in files])
        return float(reward(images).mean())

    out = {}
    for source in args.sources:
        values = [score(loras[source, s].parent / "images") for s in args.seeds]
        out[source] = {"mean": statistics.fmean(values), "se": statistics.stdev(values) / len(values) ** 0.5}
    base = [mean_scores(args, world, "train-prompts-base", s, 4.0, prompts_file=world["train_prompts"]) for s in args.seeds]
    values = [b["laion_aesthetic"] for b in base]
    out["base samples"] = {"mean": statistics.fmean(values), "se": statistics.stdev(values) / len(values) ** 0.5}
    # did the LoRA learn the concept? the trigger drawn as the prompt, with each source's LoRA and without
    trigger = {"prompt": args.trigger, "prompts_file": ""}
    for source in ("none", *args.sources):
        values = []
        for s in args.seeds:
            lora = {} if source == "none" else {"lora": (str(loras[source, s]),)}
            values.append(mean_scores(args, world, f"trigger-{source}", s, 4.0, **trigger, **lora)["laion_aesthetic"])
        out[f"'{args.trigger}' drawn, LoRA {source}"] = {
            "mean": statistics.fmean(values),
            "se": statistics.stdev(values) / len(values) ** 0.5,
        }
    return out


def paired(a: list[dict], b: list[dict]) -> dict[str, dict[str, float]]:
    """Per reward: mean ± SE over seeds of a − b."""
    out = {}
    for name in REWARDS:
        deltas = [x[name] - y[name] for x, y in zip(a, b)]
        out[name] = {"mean": statistics.fmean(deltas), "se": statistics.stdev(deltas) / len(deltas) ** 0.5}
    return out


def verdict(vs_negative: dict, vs_base: dict) -> bool:
    """Issue 15's goal: +2 SE on aesthetic and preference against both, alignment not down by more than 1 SE."""
    wins = all(d[r]["mean"] >= 2 * d[r]["se"] and d[r]["mean"] > 0 for d in (vs_negative, vs_base) for r in REWARDS[:2])
    keeps = all(d["clip_score"]["mean"] >= -d["clip_score"]["se"] for d in (vs_negative, vs_base))
    return wins and keeps


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    world = world_settings(args)
    loras = {(source, seed): trained_lora(args, world, source, seed) for source in args.sources for seed in args.seeds}
    results: dict = {"settings": {k: v for k, v in vars(args).items() if k != "out"} | {"out": str(args.out)}, "by_scale": {}}
    for scale in args.guidance_scales:
        base = [mean_scores(args, world, "base", s, scale) for s in args.seeds]
        negative = [mean_scores(args, world, "negative", s, scale, negative_prompt=args.trigger) for s in args.seeds]
        rows = {"base": base, "negative only": negative}
        comparisons = {}
        for source in args.sources:
            lora = [mean_scores(args, world, f"lora-{source}", s, scale, negative_prompt=args.trigger, lora=(str(loras[source, s]),))
                    for s in args.seeds]  # fmt: skip
            rows[f"LoRA ({source}) + negative"] = lora
            # why: the LoRA is active in every branch, not only in the trigger's; its effect without the negative
            rows[f"LoRA ({source}) alone"] = [mean_scores(args, world, f"lora-only-{source}", s, scale, lora=(str(loras[source, s]),))
                                              for s in args.seeds]  # fmt: skip
            vs_negative, vs_base = paired(lora, negative), paired(lora, base)
            comparisons[source] = {"vs_negative_only": vs_negative, "vs_base": vs_base, "goal_met": verdict(vs_negative, vs_base)}
        results["by_scale"][f"{scale:g}"] = {
            "means": {label: {r: statistics.fmean(x[r] for x in per_seed) for r in REWARDS} for label, per_seed in rows.items()},
            "per_seed": rows,
            "comparisons": comparisons,
        }
        print(report(scale, results["by_scale"][f"{scale:g}"]))
    results["bad_image_aesthetic"] = bad = bad_image_aesthetic(args, world, loras)
    print("\nmean aesthetic of the training images: " + ", ".join(f"{k} {v['mean']:.3f} ± {v['se']:.3f}" for k, v in bad.items()))
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    return results


def report(scale: float, block: dict) -> str:
    lines = [f"\nCFG {scale:g}\n", "| setting | " + " | ".join(REWARDS) + " |", "|---|" + "---:|" * len(REWARDS)]
    lines += [f"| {label} | " + " | ".join(f"{m[r]:.3f}" for r in REWARDS) + " |" for label, m in block["means"].items()]
    for source, c in block["comparisons"].items():
        for against in ("vs_negative_only", "vs_base"):
            d = c[against]
            lines.append(f"{source} {against}: " + ", ".join(f"{r} {d[r]['mean']:+.3f} ± {d[r]['se']:.3f}" for r in REWARDS))
        lines.append(f"{source}: goal {'met' if c['goal_met'] else 'not met'}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
