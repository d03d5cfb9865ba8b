"""Which trained part of a run moves each held-out reward: the T2I LoRA, the expander or the identifier tokens.

A joint run trains up to three parts at once (:data:`parrot.evaluation.TRAINED_PARTS`): the T2I LoRA, the prompt
expander (its start is the SFT model) and, with ``identifiers.trainable_tokens``, the identifier tokens. The run's
held-out table compares all of them trained against all at their start; this script samples the held-out images
(the run's own evaluation: beam ĉ, its guidance, all identifiers, fixed noise per prompt × evaluation seed) for
**every subset** of the parts trained, the rest at their start, so any two subsets pair image by image. Per part p
and reward r it prints

- the **main effect**: r(S ∪ {p}) − r(S) averaged over the subsets S without p (a 2^P factorial's main effect),
- **alone**: only p trained − nothing trained, and **last**: everything trained − everything but p,

each as mean ± paired SE over the held-out images (``scipy.stats.sem``, ddof 1). Main effects add up to the total
(everything − nothing) only when the parts do not interact; the table prints the total beside them.

    python benchmarks/joint_parts.py --json runs/parts-s0.json -- --seed 0 --output_dir runs/demo-s0
    python benchmarks/joint_parts.py --summarise runs/parts-s0.json runs/parts-s1.json runs/parts-s2.json

The run is rebuilt from its training flags (after ``--``) and its newest valid checkpoint, as in
``benchmarks/identifiers.py``. ``--summarise`` prints each effect's mean ± SE over the records (training seeds).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
from scipy import stats

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the repo's packages and benchmarks/ importable
    sys.path.insert(0, str(REPO))

from benchmarks.identifiers import sem_over_runs, trained_run  # noqa: E402
from parrot.evaluation import TRAINED_PARTS, held_out_samples_of_parts  # noqa: E402
from parrot.train import ParrotTrainer  # noqa: E402
from parrot.train_config import load_train_config  # noqa: E402
from parrot_base.cli import run_cli  # noqa: E402

__all__ = ["subset_label", "run_parts", "part_effects", "effects_table", "summary", "main"]

EFFECTS = ("main", "alone", "last")


def subset_label(subset: frozenset[str] | set[str], parts: list[str]) -> str:
    """``"t2i+expander"`` (in ``parts`` order), ``"none"`` for the empty subset."""
    return "+".join(p for p in parts if p in subset) or "none"


def run_parts(trainer: ParrotTrainer) -> list[str]:
    """The parts this run trained, in :data:`TRAINED_PARTS` order."""
    parts, mode = trainer.parts, trainer.parts.config.mode
    trained = {
        "t2i": mode != "expander",
        "expander": parts.expander is not None and mode != "t2i",
        "tokens": parts.identifier_tokens is not None,
    }
    return [p for p in TRAINED_PARTS if trained[p]]


def part_effects(scores: dict[str, np.ndarray], parts: list[str]) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """Per part p and effect (main, alone, last): per-reward mean and paired SE over images (each a (K,) array).

    ``scores[subset_label(S)]`` is the (images, K) reward matrix with the parts in S trained; every subset of
    ``parts`` must be present, rows paired (same noise). Also ``"total"``: everything − nothing."""

    def of(subset) -> np.ndarray:
        return np.asarray(scores[subset_label(frozenset(subset), parts)], dtype=float)

    everything, nothing = frozenset(parts), frozenset()

    def summarised(differences: np.ndarray) -> dict[str, np.ndarray]:
        return {"mean": differences.mean(0), "se": stats.sem(differences, axis=0)}

    result = {}
    for p in parts:
        others = [q for q in parts if q != p]
        subsets = [frozenset(c) for n in range(len(others) + 1) for c in itertools.combinations(others, n)]
        main = np.mean([of(s | {p}) - of(s) for s in subsets], axis=0)
        result[p] = {
            "main": summarised(main),
            "alone": summarised(of({p}) - of(nothing)),
            "last": summarised(of(everything) - of(everything - {p})),
        }
    result["total"] = {"main": summarised(of(everything) - of(nothing))}
    return result


def effects_table(effects: dict, reward_names: list[str]) -> str:
    """Markdown: one row per (part, effect), one column per reward, mean ± SE."""
    lines = ["| part | effect | " + " | ".join(reward_names) + " |", "|---|---|" + "---:|" * len(reward_names)]
    for part, by_effect in effects.items():
        for effect, values in by_effect.items():
            cells = " | ".join(f"{m:+.4f} ± {e:.4f}" for m, e in zip(values["mean"], values["se"]))
            lines.append(f"| {part} | {effect if part != 'total' else 'everything − nothing'} | {cells} |")
    return "\n".join(lines)


def summary(records: list[dict]) -> str:
    """Markdown over records of several runs: each effect's per-run mean, then mean ± SE over runs."""
    names = records[0]["reward_names"]
    parts = records[0]["parts"]
    if any(r["parts"] != parts or r["reward_names"] != names for r in records):
        raise ValueError("--summarise: the records trained different parts or rewards; summarise like with like")
    effects = [part_effects({k: np.array(v) for k, v in r["scores"].items()}, parts) for r in records]
    over_runs = {}
    for part, by_effect in effects[0].items():
        for effect in by_effect:
            values = np.stack([e[part][effect]["mean"] for e in effects])
            over_runs.setdefault(part, {})[effect] = {"mean": values.mean(0), "se": sem_over_runs(values)}
    return f"{len(records)} runs; effect of each part in reward units, mean ± SE over runs\n\n" + effects_table(over_runs, names)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="", help="also write every subset's scores here")
    parser.add_argument("--summarise", nargs="+", default=[], metavar="JSON", help="only summarise these --json records of several runs")
    args = parser.parse_args(argv[:split])
    if args.summarise:
        missing = [path for path in args.summarise if not Path(path).is_file()]
        if missing:
            raise FileNotFoundError(f"--summarise: no file {missing[0]}")
        print(summary([json.loads(Path(path).read_text()) for path in args.summarise]))
        return
    config = load_train_config(argv[split + 1 :])
    trainer, checkpoint = trained_run(config)
    parts = run_parts(trainer)
    names = list(trainer.parts.reward_names)
    scores = {}
    for n in range(len(parts) + 1):
        for subset in itertools.combinations(parts, n):
            label = subset_label(frozenset(subset), parts)
            scores[label] = held_out_samples_of_parts(trainer.parts, subset, label).scores.numpy()
    print(f"run {config.output_dir}, {checkpoint}; parts {', '.join(parts)}; {scores['none'].shape[0]} held-out images per subset\n")
    print("| parts trained | " + " | ".join(names) + " |\n|---|" + "---:|" * len(names))
    for label, matrix in scores.items():
        print(f"| {label} | " + " | ".join(f"{v:.4f}" for v in matrix.mean(0)) + " |")
    print("\n" + effects_table(part_effects(scores, parts), names))
    if args.json:
        record = {"run": str(config.output_dir), "checkpoint": str(checkpoint), "parts": parts, "reward_names": names,
                  "scores": {k: v.tolist() for k, v in scores.items()}}  # fmt: skip
        Path(args.json).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    run_cli(main)
