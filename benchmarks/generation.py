"""Benchmark: issue 7's generation measurements, every one through ``parrot.generate.run_generation``.

Experiments (mean of each reward over held-out prompts × seeds, the same seeds for every row):

- ``wrong_lora``: (1) the base model, (2) base + ``--negative_prompt wrong``, (3) the wrong LoRA
  (``python -m parrot.wrong_lora``) + ``--negative_prompt wrong``; CFG, no expander.
- ``guidance``: a Parrot-trained LoRA + expander with prompt-centred guidance at each (w1, w2)
  of ``--pairs`` (w1 = 0 is expanded-prompt-only guidance); rewards score the ORIGINAL prompt.
- ``identifiers``: the same model with each single identifier, all of them, and none (Fig. 7 of
  the paper: which reward moves).

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 PYTHONPATH=. python benchmarks/generation.py \\
        --model WORLD/sd --wrong_lora runs/wrong/lora --lora RUN/final/lora --expander RUN/final/expander \\
        --prompts_file held_out.txt --rewards laion_aesthetic,preference --reward_settings rewards.yaml \\
        --experiments wrong_lora guidance identifiers --out runs/bench_generation
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import yaml

from parrot.generate import GenerateConfig, parse_reward_list, run_generation, training_identifiers


def mean_rewards(base: dict, variant: dict, seeds: list[int], out: Path) -> dict[str, float]:
    """Mean of every reward over the prompts and ``seeds`` for one generation setting."""
    totals: dict[str, list[float]] = {}
    for seed in seeds:
        rows = run_generation(GenerateConfig(**(base | variant | {"seed": seed, "out": out, "overwrite": True})))
        for row in rows:
            for name, value in row["rewards"].items():
                totals.setdefault(name, []).append(value)
    shutil.rmtree(out)
    return {name: sum(v) / len(v) for name, v in totals.items()}


def settings_of(args: argparse.Namespace) -> dict[str, dict[str, dict]]:
    """experiment → {row label: GenerateConfig overrides}."""
    experiments: dict[str, dict[str, dict]] = {}
    if "wrong_lora" in args.experiments:
        experiments["wrong_lora"] = {
            "base": {},
            "base + negative 'wrong'": {"negative_prompt": "wrong"},
            "wrong LoRA + negative 'wrong'": {"negative_prompt": "wrong", "lora": (args.wrong_lora,)},
        }
    trained = {"lora": (args.lora,), "expander": args.expander, "guidance": "prompt_centred"}
    if "guidance" in args.experiments:
        experiments["guidance"] = {f"w1={w1:g}, w2={w2:g}": trained | {"w1": w1, "w2": w2} for w1, w2 in args.pairs}
    if "identifiers" in args.experiments:
        names, _ = training_identifiers(args.lora)
        rows = {f"<{n}> only": trained | {"identifiers": (n,)} for n in names}
        experiments["identifiers"] = rows | {"all": trained | {"identifiers": ("auto",)}, "none": trained | {"identifiers": ("none",)}}
    return experiments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="builtin:tiny")
    parser.add_argument("--lora", default="", help="Parrot-trained LoRA (guidance, identifiers)")
    parser.add_argument("--expander", default="", help="Parrot-trained expander (guidance, identifiers)")
    parser.add_argument("--wrong_lora", default="", help="LoRA from python -m parrot.wrong_lora")
    parser.add_argument("--prompts_file", required=True, help="held-out prompts")
    parser.add_argument("--max_prompts", type=int, default=0)
    parser.add_argument("--rewards", required=True, help="a,b,c")
    parser.add_argument("--reward_settings", type=Path, help="YAML {name: {key: value}}")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--num_steps", type=int, default=20, help="DDIM steps")
    parser.add_argument("--guidance_scale", type=float, default=7.5, help="CFG scale of the wrong_lora rows")
    parser.add_argument(
        "--pairs",
        type=lambda s: tuple(float(x) for x in s.split(",")),
        nargs="+",
        default=[(0.0, 5.0), (5.0, 5.0)],
        help="(w1, w2) pairs as w1,w2",
    )
    parser.add_argument(
        "--experiments", nargs="+", default=["wrong_lora", "guidance", "identifiers"], choices=["wrong_lora", "guidance", "identifiers"]
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench_generation"))
    args = parser.parse_args()
    needs = {"wrong_lora": ["wrong_lora"], "guidance": ["lora", "expander"], "identifiers": ["lora", "expander"]}
    for experiment in args.experiments:
        missing = [f"--{flag}" for flag in needs[experiment] if not getattr(args, flag)]
        if missing:
            parser.error(f"experiment {experiment} needs {' '.join(missing)}")
    base = {
        "model": args.model,
        "prompts_file": args.prompts_file,
        "max_prompts": args.max_prompts,
        "rewards": tuple(parse_reward_list([args.rewards])),
        "num_steps": args.num_steps,
        "guidance_scale": args.guidance_scale,
        "reward_settings": yaml.safe_load(args.reward_settings.read_text()) if args.reward_settings else {},
    }
    results = {}
    for experiment, rows in settings_of(args).items():
        results[experiment] = {label: mean_rewards(base, variant, args.seeds, args.out / "tmp") for label, variant in rows.items()}
        names = list(next(iter(results[experiment].values())))
        print(f"\n### {experiment} (seeds {args.seeds})\n\n| setting | " + " | ".join(names) + " |")
        print("|---|" + "---:|" * len(names))
        for label, means in results[experiment].items():
            print(f"| {label} | " + " | ".join(f"{means[n]:.4f}" for n in names) + " |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=1))


if __name__ == "__main__":
    main()
