"""The Pareto benchmark's report: its Table-1-shaped markdown table and its plots (``benchmarks/pareto.py``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.stats import sem

from benchmarks.pareto_paired import curve_point, paired_cells, paired_differences, shared_iterations
from parrot.plots import pairwise_front_plot, seed_bar_plot, training_curve_plot

__all__ = [
    "GOAL_PAIRS",
    "heldout_curve_table",
    "mean_curves",
    "mean_heldout_curves",
    "markdown_table",
    "paired_goal_lines",
    "training_rise_table",
    "write_plots",
]

#: issue 13's goals as (A, B) pairs: Pareto T2I-only against both weighted sums, the joint run against its SFT start,
#: prompt-centred guidance against CFG on ĉ, DPOK against its reward-weighted supervised baseline
GOAL_PAIRS = (
    ("parrot-t2i-noids-z", "ws1"),
    ("parrot-t2i-noids-z", "ws2"),
    ("parrot", "base+expander"),
    ("parrot", "parrot-no-pcg"),
    ("dpok", "rwr"),
)


def _mean_se(pair: list[float | None], digits: int = 4) -> str:
    mean, se = pair
    return f"{mean:.{digits}f} ± " + (f"{se:.{digits}f}" if se is not None else "–")


def markdown_table(result: dict) -> str:
    """Parrot's Table 1 shape: per-reward mean ± SE over seeds, Table-1 average, per-prompt-mean HV ± SE, HV gain, front size."""
    names = result["reward_names"]
    head = ["method", *names, "avg norm.", "HV", "HV gain", "front size", "s/cell"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, entry in result["methods"].items():
        s = entry["summary"]
        cells = [method, *(_mean_se(s["means"][r]) for r in names)]
        cells += [
            _mean_se(s["average_normalised"]),
            _mean_se(s["hypervolume"]),
            f"{s['hypervolume_gain']:+.4f}",
            f"{s['front_size'][0]:.1f}",
            f"{np.mean([r['wall_s'] for r in entry['seeds'].values()]):.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += training_rise_table(result)
    lines += heldout_curve_table(result)
    lines += paired_goal_lines(result["methods"])
    return "\n".join(lines)


def paired_goal_lines(methods: dict) -> list[str]:
    """Issue 13's like-for-like comparisons, A − B paired over training seeds (mean ± SE), for the pairs of
    :data:`GOAL_PAIRS` that this run has with ≥ 2 shared seeds. (They replace the ratio of Parrot's HV gain to WS2's,
    which divided a joint row by a T2I-only one, and by a gain smaller than its seed spread.)"""
    lines = []
    for a, b in GOAL_PAIRS:
        if a in methods and b in methods and len(paired_cells(methods, a, b)) >= 2:
            d = paired_differences(methods, a, b)
            figures = [("Table-1 avg", d.pop("table1_average")), ("HV", d.pop("hypervolume")), *d.items()]
            lines.append(f"- {a} − {b}: " + ", ".join(f"{name} {m:+.4f} ± {se:.4f}" for name, (m, se) in figures))
    return ["", "Paired over training seeds (A − B; any other pair: `benchmarks/pareto_paired.py`):", "", *lines] if lines else []


def training_rise_table(result: dict) -> list[str]:
    """Lines of a second table: per trained method and reward, how its training-batch mean moved (last quarter of
    the iterations less the first, mean ± SE over seeds); no lines when no cell kept a curve."""
    names = result["reward_names"]
    rows = [(m, e["summary"].get("training_rise", {})) for m, e in result["methods"].items() if e["trained"]]
    rows = [(m, rise) for m, rise in rows if rise]
    if not rows:
        return []
    lines = ["", "Training-batch reward, last quarter of the iterations − first quarter (mean ± SE over seeds):", ""]
    lines += ["| method | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    for method, rise in rows:
        lines.append(f"| {method} | " + " | ".join(_mean_se(rise[r], 3) if r in rise else "–" for r in names) + " |")
    return lines


def mean_heldout_curves(result: dict) -> dict[str, tuple[list[int], dict[str, list[list[float | None]]]]]:
    """Per method with held-out curves (cells trained with ``--evaluation.every``): the iterations all its seeds'
    curves have, and per reward [mean, SE] over seeds at each (SE None for one seed), and the same for
    ``table1_average``, each seed's Table-1 average of its held-out means on the run's normalisation (the average is
    linear in the per-reward means, so it is the one the table's row would have)."""
    names, bounds = result["reward_names"], result["normalisation"]
    lo_hi = (np.asarray(bounds["low"]), np.asarray(bounds["high"]))
    out = {}
    for method, entry in result["methods"].items():
        curves = [r["heldout_curve"] for r in entry["seeds"].values() if r.get("heldout_curve")]
        if curves:
            shared = shared_iterations(curves)
            points = [[curve_point(c, n, names, lo_hi) for c in curves] for n in shared]
            out[method] = (shared, {k: [_mean_se_over_seeds([p[k] for p in at]) for at in points] for k in points[0][0]})
    return out


def _mean_se_over_seeds(values: list[float]) -> list[float | None]:
    return [float(np.mean(values)), float(sem(values)) if len(values) > 1 else None]


def heldout_curve_table(result: dict) -> list[str]:
    """Lines of a table of :func:`mean_heldout_curves`: per method and curve point each reward's held-out mean ± SE
    over seeds; no lines without curves."""
    names = result["reward_names"]
    lines = []
    for method, (iterations, curves) in mean_heldout_curves(result).items():
        for i, n in enumerate(iterations):
            lines.append(f"| {method} | {n} | " + " | ".join(_mean_se(curves[r][i]) for r in [*names, "table1_average"]) + " |")
    if not lines:
        return []
    head = ["", "Held-out mean reward during training (`--evaluation.every`; mean ± SE over seeds):", ""]
    return head + ["| method | iteration | " + " | ".join(names) + " | Table-1 avg |", "|" + "---|" * (len(names) + 3), *lines]


def mean_curves(result: dict) -> dict[str, dict[str, np.ndarray]]:
    """Per trained method and reward, its training-batch mean per iteration averaged over seeds (shortest run's length)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for method, entry in result["methods"].items():
        for name in result["reward_names"]:
            curves = [r["curve"][name] for r in entry["seeds"].values() if r.get("curve", {}).get(name)]
            if entry["trained"] and curves:
                length = min(map(len, curves))
                out.setdefault(method, {})[name] = np.mean([c[:length] for c in curves], axis=0)
    return out


def write_plots(result: dict, out: Path) -> dict[str, str]:
    names = result["reward_names"]
    means = {m: np.array([v for r in e["seeds"].values() for v in r["per_prompt_means"].values()]) for m, e in result["methods"].items()}
    budget = result["budget"]
    title = f"per-prompt mean held-out rewards (every training seed); {budget['images_per_run']} training images per run"
    paths = {
        "hypervolume": str(
            seed_bar_plot(
                {m: [r["hypervolume"] for r in e["seeds"].values()] for m, e in result["methods"].items()},
                out / "hypervolume.png",
                "hypervolume (min-max normalised)",
                "hypervolume of the per-prompt means per training seed",
            )
        )
    }
    if curves := mean_curves(result):
        paths["curves"] = str(training_curve_plot(curves, names, out / "curves.png", "training-batch mean reward (mean over seeds)"))
    if held_out := mean_heldout_curves(result):
        paths["heldout_curves"] = str(
            training_curve_plot(
                {m: {r: [p[0] for p in points] for r, points in c.items()} for m, (_, c) in held_out.items()},
                names,
                out / "heldout_curves.png",
                "held-out mean reward during training (mean over seeds)",
                iterations={m: n for m, (n, _) in held_out.items()},
            )
        )
    if len(names) >= 2:
        paths["fronts"] = str(pairwise_front_plot(means, names, out / "fronts.png", title))
    return paths
