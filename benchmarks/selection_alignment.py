"""Pareto selection against a weighted sum on the same training batches: how far apart are the two updates?

Issue 13's T2I-only comparison (``benchmarks/pareto.py``: ``parrot-t2i-noids-z`` against ``ws2``) goes to the
weighted sum. This script asks why at the level of one update: it reads the training batches a run recorded (rewards R of every
image, ``samples/iteration-*.json``; train with ``--checkpoint_every 1`` to record every iteration) and gives the
advantages of two methods of ``pareto_cells.method_catalogue`` on each batch, computed by the training loop's own
:func:`parrot.selection.compute_advantages` with each method's resolved selection settings. In the T2I update
image i enters the loss with the weight a_i = Σ_k A[i, k] / normaliser (``parrot.t2i_update``), so per batch:

- ``front_share``: |P|/N of the first method (1 where it selects nothing);
- ``cosine``: cos(a, b) of the two methods' per-image weights (a proxy for the angle of their gradients
  Σ_i a_i ∇log p_i: equal weights give the same update, orthogonal ones unrelated updates);
- ``dropped_mass``: the share of the second method's Σ_i |b_i| on images the first gives weight 0;
- ``opposite_sign``: the share of images both weigh (a_i, b_i ≠ 0) that they push in opposite directions;
- ``scale``: ‖a‖ / ‖b‖ (Adam divides most of a constant scale away);
- ``net_push``: Σ_i a_i / Σ_i |a_i|, the first method's net push on the batch's likelihood (0: every push up is
  matched by a push down, as for z-scored weights over the whole batch; 1: every image pushed up);
- ``push_down_kept``: the share of the second method's push down (Σ |b_i| over b_i < 0) on images the first
  method weighs too.

When a batch is one group (T2I-only with one prompt per iteration, as the ``shapes`` preset trains) and both
methods z-score each reward over that group, ``parrot-t2i-noids-z``'s A_i = 1[i ∈ P]·Σ_k z(r_k)_i / |P| and
``ws2``'s A_i = Σ_k z(r_k)_i / (K·N): the Pareto update is the weighted sum's with the dominated images' weights
set to zero, and the figures above say how much that removes. Commands::

    python benchmarks/pareto.py --methods parrot-t2i-noids-z --out runs/align --runs-dir runs/align/runs \\
        --set "--checkpoint_every 1"
    python benchmarks/selection_alignment.py runs/align/runs/parrot-t2i-noids-z-seed0 \\
        runs/align/runs/parrot-t2i-noids-z-seed1 runs/align/runs/parrot-t2i-noids-z-seed2

The first method must be the one the runs trained with (its recomputed P is checked against the recorded one).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import stats

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the repo's packages and benchmarks/ importable
    sys.path.insert(0, str(REPO))

from benchmarks.pareto_cells import method_catalogue  # noqa: E402
from parrot.run_dir import RunDir, sample_records  # noqa: E402
from parrot.selection import PerPromptStatTracker, Selection, SelectionConfig, compute_advantages, parse_selection  # noqa: E402
from parrot.train_config import load_train_config  # noqa: E402
from parrot_base.cli import run_cli  # noqa: E402

__all__ = ["MethodSelection", "method_selections", "image_weights", "batch_alignment", "run_alignment", "summary", "main"]

FIGURES = ("front_share", "cosine", "dropped_mass", "opposite_sign", "scale", "net_push", "push_down_kept")


@dataclass
class MethodSelection:
    """One method's advantage settings, resolved as ``parrot.train`` resolves its flags."""

    name: str
    config: SelectionConfig
    selection: Selection

    def new_tracker(self) -> PerPromptStatTracker:
        """An empty per-prompt history, as a run starts with (``gradient_normalisation`` 'per_prompt' reads it)."""
        return PerPromptStatTracker(self.config.stat_buffer_size, self.config.stat_min_count)


def method_selections(names: list[str], preset: str) -> list[MethodSelection]:
    """The selection settings of catalogue methods ``names`` on ``preset`` (one refused when it trains with
    identifiers: their credit needs the identifier of every image, which this comparison leaves out)."""
    probe = load_train_config(["--preset", preset, "--output_dir", tempfile.gettempdir()])
    catalogue = method_catalogue(list(probe.rewards.names), probe.sampling.guidance_scale)
    methods = []
    for name in names:
        if name not in catalogue:
            raise ValueError(f"unknown method {name!r}; known: {', '.join(catalogue)}")
        config = load_train_config(["--preset", preset, *catalogue[name].overrides, "--output_dir", tempfile.gettempdir()])
        if config.identifiers.enabled:
            raise ValueError(f"method {name!r} trains with reward identifiers; compare methods without them")
        methods.append(MethodSelection(name, config.selection, parse_selection(config.selection, config.rewards.names)))
    return methods


def image_weights(record: dict, method: MethodSelection, tracker: PerPromptStatTracker) -> tuple[np.ndarray, np.ndarray]:
    """a_i = Σ_k A[i, k] / normaliser of every image of a recorded batch under ``method`` (``tracker``: its
    run's per-prompt history so far), and its P mask."""
    rewards = torch.tensor(record["rewards"], dtype=torch.float64)
    groups = torch.arange(rewards.shape[0]) // int(record["columns"])
    advantages = compute_advantages(
        rewards, torch.isfinite(rewards), record["original_prompts"], method.config, method.selection, tracker, groups=groups
    )
    return (advantages.values.double().sum(1) / advantages.normaliser).numpy(), advantages.selected.numpy()


def batch_alignment(a: np.ndarray, b: np.ndarray, selected: np.ndarray) -> dict[str, float]:
    """The module docstring's figures for one batch's weights ``a`` (first method, P mask ``selected``) and ``b``."""
    norm_a, norm_b = np.linalg.norm(a), np.linalg.norm(b)
    both = (a != 0) & (b != 0)
    return {
        "front_share": float(selected.mean()),
        "cosine": float(a @ b / (norm_a * norm_b)) if norm_a and norm_b else float("nan"),
        "dropped_mass": float(np.abs(b[a == 0]).sum() / np.abs(b).sum()) if np.abs(b).sum() else float("nan"),
        "opposite_sign": float((np.sign(a[both]) != np.sign(b[both])).mean()) if both.any() else float("nan"),
        "scale": float(norm_a / norm_b) if norm_b else float("nan"),
        "net_push": float(a.sum() / np.abs(a).sum()) if np.abs(a).any() else float("nan"),
        "push_down_kept": float(-b[(b < 0) & (a != 0)].sum() / -b[b < 0].sum()) if (b < 0).any() else float("nan"),
    }


def run_alignment(run_root: str | Path, first: MethodSelection, second: MethodSelection) -> list[dict[str, float]]:
    """Per recorded iteration of the run: its figures (module docstring), in iteration order."""
    records = sample_records(RunDir(Path(run_root)))
    if not records:
        raise FileNotFoundError(f"no recorded training batches under {Path(run_root) / 'samples'}: train with --checkpoint_every 1")
    rows = []
    trackers = first.new_tracker(), second.new_tracker()
    for png, record in records:
        if record is None:
            raise ValueError(f"{png.with_suffix('.json')} is missing or unreadable")
        a, selected = image_weights(record, first, trackers[0])
        b, _ = image_weights(record, second, trackers[1])
        if first.selection.kind == "pareto" and selected.tolist() != list(record["selected"]):
            raise ValueError(f"{png.with_suffix('.json')}: its recorded P is not {first.name!r}'s; name the run's own method first")
        rows.append({"iteration": int(record["iteration"]), **batch_alignment(a, b, selected)})
    return rows


def summary(per_run: dict[str, list[dict[str, float]]]) -> str:
    """Markdown: per run the mean of each figure over its iterations, then mean ± SE over runs."""
    lines = ["| run | iterations | " + " | ".join(FIGURES) + " |", "|---|---:|" + "---:|" * len(FIGURES)]
    means = []
    for run, rows in per_run.items():
        mean = [float(np.nanmean([r[f] for r in rows])) for f in FIGURES]
        means.append(mean)
        lines.append(f"| {run} | {len(rows)} | " + " | ".join(f"{m:.3f}" for m in mean) + " |")
    if len(means) > 1:
        values = np.array(means)
        se = stats.sem(values, axis=0)
        cells = " | ".join(f"{m:.3f} ± {e:.3f}" for m, e in zip(values.mean(0), se))
        lines.append(f"| mean ± SE over {len(means)} runs | | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, list[dict[str, float]]]:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories whose samples/ recorded every training batch")
    parser.add_argument("--methods", nargs=2, default=["parrot-t2i-noids-z", "ws2"], metavar=("TRAINED", "OTHER"),
                        help="the runs' own method, then the one to compare (pareto_cells names; default %(default)s)")  # fmt: skip
    parser.add_argument("--preset", default="shapes", help="the preset the runs trained on (default %(default)s)")
    parser.add_argument("--json", default="", help="also write every iteration's figures here")
    args = parser.parse_args(argv)
    first, second = method_selections(args.methods, args.preset)
    per_run = {run: run_alignment(run, first, second) for run in args.runs}
    print(f"{args.methods[0]} (a) against {args.methods[1]} (b) on the runs' recorded batches\n\n{summary(per_run)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"methods": args.methods, "runs": per_run}, indent=1), encoding="utf-8")
    return per_run


if __name__ == "__main__":
    run_cli(main)
