"""The Pareto benchmark's statistics over its cells (definitions in ``benchmarks/pareto.py``).

Every reward min–max normalised over the union of all cells' per-image held-out scores; per cell
the per-reward means, the Table-1 average and the hypervolume of the per-prompt mean vectors; per
method mean ± standard error over training seeds and the hypervolume gain over ``base``.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import sem

from benchmarks.pareto_cells import Method
from parrot.evaluation import (
    EvaluationSamples,
    minmax_bounds,
    normalise,
    per_prompt_hypervolume,
    per_prompt_means,
    reference_point,
    table1_averages,
)

__all__ = ["curve_rise", "method_results", "summarise"]


def summarise(values: list[float]) -> list[float | None]:
    """[mean, standard error over seeds] (SE None for one value)."""
    return [float(np.mean(values)), float(sem(values)) if len(values) > 1 else None]


def curve_rise(values: list[float]) -> float | None:
    """How a training curve moved: the mean of its last quarter of iterations less that of its first
    quarter (at least one iteration each); None for a curve of fewer than 2 iterations."""
    if len(values) < 2:
        return None
    quarter = max(1, len(values) // 4)
    return float(np.mean(values[-quarter:]) - np.mean(values[:quarter]))


def method_results(
    methods: list[Method], cells: dict, reward_names: list[str], ref_offset: float
) -> tuple[dict[str, dict], np.ndarray, np.ndarray, np.ndarray]:
    """Per method its per-seed figures and their summary, with the run's normalisation bounds (lo, hi)
    and reference point; ``cells`` maps (method name, seed) to a cell read by ``read_cell``."""
    samples = {key: EvaluationSamples.from_json(cell["samples"]) for key, cell in cells.items()}
    scores = {key: s.scores.numpy() for key, s in samples.items()}
    lo, hi = minmax_bounds(list(scores.values()))
    averages = table1_averages(scores, (lo, hi))
    reference = reference_point(len(reward_names), ref_offset)
    result_methods: dict[str, dict] = {}
    for method in methods:
        per_seed = {}
        for (name, seed), held_out_samples in samples.items():
            if name != method.name:
                continue
            matrix = scores[(name, seed)]
            hv, front = per_prompt_hypervolume(held_out_samples, lo, hi, reference)
            prompts, prompt_means = per_prompt_means(held_out_samples)
            per_seed["none" if seed is None else str(seed)] = {
                "means": dict(zip(reward_names, map(float, matrix.mean(0)))),
                "normalised_means": dict(zip(reward_names, map(float, normalise(matrix, lo, hi).mean(0)))),
                "average_normalised": averages[(name, seed)],
                "hypervolume": hv,
                "front_size": front,
                "per_prompt_means": dict(zip(prompts, prompt_means.tolist())),
                "num_images": int(len(matrix)),
                "wall_s": cells[(name, seed)]["wall_s"],
                "scores": matrix.tolist(),
                "curve": cells[(name, seed)].get("curve", {}),  # training-batch mean per iteration (older cells: none)
                "heldout_curve": cells[(name, seed)].get("heldout_curve", {}),  # with --evaluation.every: held-out means
            }
        result_methods[method.name] = _method_entry(method, per_seed, reward_names)
    base_hv = result_methods["base"]["summary"]["hypervolume"][0]
    for entry in result_methods.values():
        entry["summary"]["hypervolume_gain"] = entry["summary"]["hypervolume"][0] - base_hv
    return result_methods, lo, hi, reference


def _method_entry(method: Method, per_seed: dict[str, dict], reward_names: list[str]) -> dict:
    runs_of = list(per_seed.values())
    return {
        "setting": method.setting,
        "trained": method.trained,
        "overrides": list(method.overrides),
        "seeds": per_seed,
        "summary": {
            "means": {r: summarise([s["means"][r] for s in runs_of]) for r in reward_names},
            "average_normalised": summarise([s["average_normalised"] for s in runs_of]),
            "hypervolume": summarise([s["hypervolume"] for s in runs_of]),
            "front_size": summarise([s["front_size"] for s in runs_of]),
            "training_rise": {
                r: summarise(rises)
                for r in reward_names
                if (rises := [x for s in runs_of if (x := curve_rise(s["curve"].get(r, []))) is not None])
            },
        },
    }
