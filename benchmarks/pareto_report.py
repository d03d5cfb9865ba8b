"""The Pareto benchmark's report: its Table-1-shaped markdown table and its plots (``benchmarks/pareto.py``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from parrot.plots import pairwise_front_plot, seed_bar_plot

__all__ = ["markdown_table", "write_plots"]


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
    ratio = result["gain_ratio_parrot_over_ws2"]
    if "parrot" in result["methods"] and "ws2" in result["methods"]:
        gains = {m: result["methods"][m]["summary"]["hypervolume_gain"] for m in ("parrot", "ws2")}
        verdict = f"= {ratio:.2f} (goal ≥ 1.3)" if ratio is not None else "undefined: ws2 does not gain hypervolume over base"
        lines += ["", f"HV gain of parrot ({gains['parrot']:+.4f}) ÷ HV gain of ws2 ({gains['ws2']:+.4f}) {verdict}"]
    return "\n".join(lines)


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
    if len(names) >= 2:
        paths["fronts"] = str(pairwise_front_plot(means, names, out / "fronts.png", title))
    return paths
