"""Which attributes of the GenEval-style rule reward a trained model honours more often: the rule, split.

The ``attribute_rules`` reward (:mod:`rewards.attribute_rules`) is the fraction of the prompt's
stated attributes (colour, shape, size, background) the world's pixel checker reads back. This
script splits that fraction into its attributes for images written by ``python -m parrot.generate``
(its ``results.jsonl`` and ``images/``), so that a before/after of RL on the rule says *which*
attribute moved and where the headroom lies (issue 16's GRPO figure).

For each output directory: the rate at which each attribute is honoured, over the images whose
prompt states it, and the rule reward (the mean fraction). With ``--base DIR`` every other directory
is also compared image by image with the base (same prompt and seed, i.e. the same initial noise):
the paired difference of each rate. Several trained directories (e.g. one per training seed) give
mean ± SE over them of their differences (``scipy.stats.sem``, ddof 1).

    python -m parrot.generate --model shapes/world/sd3 --prompts_file shapes/world/prompts/held_out_detailed.txt \\
        --images_per_prompt 8 --num_steps 10 --guidance cfg --guidance_scale 4 --eta 0 --out runs/attr/base
    python -m parrot.generate … --lora runs/grpo-s0/final/lora --out runs/attr/s0     # one per training seed
    python benchmarks/rule_attributes.py --base runs/attr/base runs/attr/s0 runs/attr/s1 runs/attr/s2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import stats

from parrot_base.cli import UsageError, run_cli
from shapes.checker import prompt_verdicts

__all__ = ["read_verdicts", "attribute_rates", "paired_differences", "main"]

RULE = "rule"


def read_verdicts(directory: Path) -> dict[tuple[str, int], dict[str, bool]]:
    """{(prompt, seed): {attribute: honoured}} for every image of a ``parrot.generate`` output directory."""
    results = directory / "results.jsonl"
    if not results.is_file():
        raise UsageError(f"{directory} has no results.jsonl: give directories written by python -m parrot.generate")
    verdicts = {}
    for line in results.read_text().splitlines():
        row = json.loads(line)
        image = np.asarray(Image.open(directory / row["image"]).convert("RGB"), dtype=np.float32) / 255.0
        verdicts[(row["prompt"], int(row["seed"]))] = dict(prompt_verdicts(torch.from_numpy(image).permute(2, 0, 1), row["prompt"]))
    return verdicts


def attribute_rates(verdicts: dict[tuple[str, int], dict[str, bool]]) -> dict[str, float]:
    """Per attribute: the share of the images stating it that honour it; ``rule``: the mean fraction honoured."""
    names = sorted({a for v in verdicts.values() for a in v})
    rates = {a: float(np.mean([v[a] for v in verdicts.values() if a in v])) for a in names}
    rates[RULE] = float(np.mean([np.mean(list(v.values())) for v in verdicts.values()]))
    return rates


def paired_differences(base: dict, trained: dict) -> dict[str, float]:
    """Rates of ``trained`` minus ``base`` over the (prompt, seed) images both hold."""
    shared = sorted(set(base) & set(trained))
    if not shared:
        raise UsageError("the directories share no (prompt, seed) image: generate them with the same prompts and seeds")
    before = attribute_rates({key: base[key] for key in shared})
    after = attribute_rates({key: trained[key] for key in shared})
    return {name: after[name] - before[name] for name in before}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="+", type=Path, help="parrot.generate output directories")
    parser.add_argument("--base", type=Path, default=None, help="the untrained model's directory: paired differences against it")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    verdicts = {str(d): read_verdicts(d) for d in args.dirs}
    report: dict = {"rates": {name: attribute_rates(v) for name, v in verdicts.items()}}
    if args.base is not None:
        base = read_verdicts(args.base)
        report["rates"][f"base {args.base}"] = attribute_rates(base)
        diffs = [paired_differences(base, v) for v in verdicts.values()]
        names = list(diffs[0])
        report["difference_mean"] = {n: float(np.mean([d[n] for d in diffs])) for n in names}
        report["difference_se"] = {n: float(stats.sem([d[n] for d in diffs])) if len(diffs) > 1 else float("nan") for n in names}
    for name, rates in report["rates"].items():
        print(f"{name}: " + ", ".join(f"{a} {r:.3f}" for a, r in rates.items()))
    if args.base is not None:
        mean, se = report["difference_mean"], report["difference_se"]
        print("trained − base: " + ", ".join(f"{a} {mean[a]:+.3f} ± {se[a]:.3f}" for a in mean))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    run_cli(main)
