"""The Pareto benchmark's report: its Table-1-shaped markdown table and its plots (``benchmarks/pareto.py``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from parrot.plots import pairwise_front_plot, seed_bar_plot, training_curve_plot

__all__ = ["mean_curves", "markdown_table", "training_rise_table", "write_plots"]


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
    ratio = result["gain_ratio_parrot_over_ws2"]
    if "parrot" in result["methods"] and "ws2" in result["methods"]:
        gains = {m: result["methods"][m]["summary"]["hypervolume_gain"] for m in ("parrot", "ws2")}
        verdict = f"= {ratio:.2f} (goal ≥ 1.3)" if ratio is not None else "undefined: ws2 does not gain hypervolume over base"
        lines += ["", f"HV gain of parrot ({gains['parrot']:+.4f}) ÷ HV gain of ws2 ({gains['ws2']:+.4f}) {verdict}"]
    return "\n".join(lines)


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
    if len(names) >= 2:
        paths["fronts"] = str(pairwise_front_plot(means, names, out / "fronts.png", title))
    return paths
