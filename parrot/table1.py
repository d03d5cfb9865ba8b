"""Parrot's Table 1 (Lee et al., ECCV 2024) from per-(method, prompt) reward scores: one row per method.

Notation: method m has an :class:`~parrot.evaluation.EvaluationSamples` whose score matrix R_m is (P·N, K):
P prompts c × N images per prompt (fixed seeds, shared by every method), K rewards scored against c.

- reward column k: mean over prompts of r̄_{m,p,k} (prompt p's mean over its N images) ± SE, SE =
  ``scipy.stats.sem`` over the P per-prompt means (ddof 1; None for one prompt);
- average column ("average of normalised rewards", Table 1's last column): each reward min–max
  normalised over the union of ALL methods' per-image scores (:func:`parrot.evaluation.minmax_bounds`),
  R̃ = (R − lo) / (hi − lo); the mean over rewards of the normalised means
  (:func:`parrot.evaluation.table1_averages`) ± the SE over prompts of each prompt's normalised average;
- per-category tables (PartiPrompts' ``Category``) restrict the prompts and keep the overall bounds,
  so that every table reads on one scale.

The statistics are those of :mod:`parrot.evaluation`; this module only lays them out as rows.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy.stats import sem

from parrot.evaluation import EvaluationSamples, minmax_bounds, normalise, per_prompt_means, table1_averages

__all__ = ["REWARD_LABELS", "mean_and_se", "method_row", "table1_record", "format_table1"]

#: Table 1's column names for the rewards that stand for them (other rewards keep their name)
REWARD_LABELS = {
    "clip_score": "TIA",
    "laion_aesthetic": "aesthetics",
    "pickscore": "human preference",
    "preference": "human preference",
    "hpsv2": "human preference",
    "imagereward": "human preference",
    "sentiment": "sentiment",
}


def mean_and_se(values: np.ndarray) -> dict[str, float | None]:
    """{"mean", "se"} of per-prompt values; se is ``scipy.stats.sem`` (ddof 1), None for fewer than 2 values."""
    values = np.asarray(values, dtype=float)
    return {"mean": float(values.mean()), "se": float(sem(values)) if len(values) > 1 else None}


def method_row(samples: EvaluationSamples, lo: np.ndarray, hi: np.ndarray) -> dict:
    """One method's row: per reward and for the normalised average, mean ± SE over prompts."""
    _, means = per_prompt_means(samples)  # (P, K)
    average = table1_averages({"row": np.asarray(samples.scores, dtype=float)}, (lo, hi))["row"]
    per_prompt_average = normalise(means, lo, hi).mean(1)
    return {
        "rewards": {name: mean_and_se(means[:, k]) for k, name in enumerate(samples.reward_names)},
        "average": {"mean": average, "se": mean_and_se(per_prompt_average)["se"]},
        "prompts": int(len(means)),
        "images": int(len(samples.prompts)),
    }


def _subset(samples: EvaluationSamples, prompts: set[str]) -> EvaluationSamples:
    keep = [i for i, p in enumerate(samples.prompts) if p in prompts]
    return EvaluationSamples(
        samples.reward_names,
        [samples.prompts[i] for i in keep],
        [samples.expanded_prompts[i] for i in keep],
        [samples.seeds[i] for i in keep],
        samples.scores[keep],
        setting=samples.setting,
    )


def table1_record(samples: Mapping[str, EvaluationSamples], categories: Mapping[str, str] | None = None) -> dict:
    """``table.json``: rows per method, the normalisation bounds and, when ``categories`` (prompt → category)
    are given, the same rows per category (on the overall bounds)."""
    first = next(iter(samples.values()))
    lo, hi = minmax_bounds([np.asarray(s.scores, dtype=float) for s in samples.values()])
    record = {
        "rewards": list(first.reward_names),
        "labels": {name: REWARD_LABELS.get(name, name) for name in first.reward_names},
        "methods": {name: method_row(s, lo, hi) for name, s in samples.items()},
        "normalisation": {"low": lo.tolist(), "high": hi.tolist(), "kind": "min-max per reward over the union of all methods' images"},
    }
    if categories:
        names = sorted({categories[p] for p in first.prompts})
        record["categories"] = {
            category: {
                method: method_row(_subset(s, {p for p in s.prompts if categories[p] == category}), lo, hi) for method, s in samples.items()
            }
            for category in names
        }
    return record


def _cell(entry: Mapping[str, float | None]) -> str:
    return f"{entry['mean']:.4f}" + (f" ± {entry['se']:.4f}" if entry["se"] is not None else "")


def _rows(record: Mapping, methods: Mapping[str, Mapping]) -> list[str]:
    head = [
        "method",
        *(f"{record['labels'][n]} ({n})" if record["labels"][n] != n else n for n in record["rewards"]),
        "average (normalised)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, row in methods.items():
        cells = [method, *(_cell(row["rewards"][n]) for n in record["rewards"]), _cell(row["average"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def format_table1(record: Mapping) -> str:
    """``table.md``: Table 1 (and one table per category when the record has them)."""
    row = next(iter(record["methods"].values()))
    lines = [*_rows(record, record["methods"]), ""]
    lines.append(
        f"mean ± standard error over {row['prompts']} prompts (each prompt's mean over its {row['images'] // row['prompts']} "
        "images, scored against the original prompt); average: each reward min–max normalised over all methods' images, "
        "then averaged over rewards (Parrot's Table 1)"
    )
    for category, methods in record.get("categories", {}).items():
        count = next(iter(methods.values()))["prompts"]
        lines += ["", f"### {category} ({count} prompts)", "", *_rows(record, methods)]
    return "\n".join(lines) + "\n"
