"""Reward identifiers, the protocol of Parrot's Fig. 7: does identifier <k> ask for reward k?

For a trained run, the held-out prompts are sampled (beam-decoded ĉ, the run's inference guidance,
fixed noise per prompt × evaluation seed) once with each single identifier "<k>, ĉ" and scored by
every reward. Identifier k "works" for reward k when r_k is highest under <k> among the single
identifiers; the margin is r_k(<k>) − max_{j≠k} r_k(<j>) with the paired standard error of the
per-image differences against that runner-up (``scipy.stats.sem``, ddof 1). Rows "all" (every
identifier, as Parrot evaluates) and "none" (ĉ alone) are printed for reference.

The untrained start (LoRA off, the SFT expander) is sampled the same way, because a world's tokens
can move pixels before any training: the training's own part is the **lift** of each identifier,
[r_k(<k>) − mean_{j≠k} r_k(<j>)] trained − the same untrained, per image (same noise), ± its SE.

The run is rebuilt from its own command line (the training flags) and its newest valid
checkpoint::

    python benchmarks/identifiers.py -- --seed 0 --output_dir runs/v4-seed0
    python benchmarks/identifiers.py --json runs/v4-seed0/identifiers.json -- --seed 0 --output_dir runs/v4-seed0

Each identifier also changes the *other* rewards: the **change matrix** D[k, j] = [r_j(<k>) − mean_i r_j(<i>)]
trained − the same untrained (mean over images, in units of r_j's standard deviation over the untrained images) has
the lifts on its diagonal (D[k, k] = lift_k·(K − 1)/K) and each identifier's side effects off it; the change every
identifier shares (trained − untrained, same units) is printed below it.
``--summarise A.json B.json …`` reads the ``--json`` records of several training seeds and prints, per reward, the
mean ± SE over seeds of the lift, the seeds where <k> wins by ≥ 2 SE, and D averaged over the seeds::

    python benchmarks/identifiers.py --summarise runs/ids-s0.json runs/ids-s1.json runs/ids-s2.json

``--t2i_from RUN`` swaps in the T2I LoRA of another run's newest valid checkpoint (the run in the flags still
decides expander, guidance and identifiers): a LoRA trained on one conditioning evaluated on another's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import stats

from parrot.checkpoint import latest_valid_checkpoint
from parrot.run_dir import RunDir, read_checkpoint
from parrot.train import ParrotTrainer
from parrot.train_config import TrainConfig, load_train_config
from parrot_base.cli import run_cli

__all__ = [
    "trained_run",
    "identifier_margins",
    "identifier_lifts",
    "common_change",
    "change_matrix",
    "identifier_table",
    "lift_table",
    "summary",
    "main",
]


def identifier_margins(scores: dict[str, np.ndarray], reward_names: list[str]) -> dict[str, dict[str, float]]:
    """Per reward k: r_k under <k>, the best other single identifier j, margin and its paired SE.

    ``scores[label]`` is the (images, K) reward matrix sampled with identifier ``label`` (same noise
    row by row for every label)."""
    result = {}
    for k, name in enumerate(reward_names):
        own = scores[name][:, k]
        others = {j: scores[j][:, k] for j in reward_names if j != name}
        runner_up = max(others, key=lambda j: others[j].mean())
        difference = own - others[runner_up]
        result[name] = {
            "own": float(own.mean()),
            "runner_up": runner_up,
            "runner_up_value": float(others[runner_up].mean()),
            "margin": float(difference.mean()),
            "paired_se": float(stats.sem(difference)),
        }
    return result


def own_minus_mean_of_others(scores: dict[str, np.ndarray], reward_names: list[str], k: int) -> np.ndarray:
    """Per image: r_k under <k> − the mean of r_k under the other single identifiers."""
    others = [scores[j][:, k] for j in reward_names if j != reward_names[k]]
    return scores[reward_names[k]][:, k] - np.mean(others, axis=0)


def identifier_lifts(
    trained: dict[str, np.ndarray], untrained: dict[str, np.ndarray], reward_names: list[str]
) -> dict[str, dict[str, float]]:
    """Per reward k: own − mean of others on the untrained start and on the trained run, and the training's lift
    (trained − untrained, paired per image) with its SE; both dicts map each single identifier to (images, K)."""
    result = {}
    for k, name in enumerate(reward_names):
        before = own_minus_mean_of_others(untrained, reward_names, k)
        after = own_minus_mean_of_others(trained, reward_names, k)
        result[name] = {
            "untrained": float(before.mean()),
            "trained": float(after.mean()),
            "lift": float((after - before).mean()),
            "lift_se": float(stats.sem(after - before)),
        }
    return result


def stacked(scores: dict[str, np.ndarray], reward_names: list[str]) -> np.ndarray:
    """(K identifiers, images, K rewards): the single identifiers' score matrices in reward order."""
    return np.stack([scores[name] for name in reward_names])


def in_untrained_sd(change: np.ndarray, before: np.ndarray) -> np.ndarray:
    """``change`` (…, K) over each reward's standard deviation on the untrained images of every single identifier
    (``before``, as :func:`stacked`); NaN for a constant reward, which has no unit."""
    spread = before.reshape(-1, before.shape[-1]).std(0)
    return np.divide(change, spread, out=np.full_like(change, np.nan), where=spread > 0)


def common_change(trained: dict[str, np.ndarray], untrained: dict[str, np.ndarray], reward_names: list[str]) -> np.ndarray:
    """(K,): the change every single identifier shares, mean over identifiers and images of r_j trained − untrained, in
    the standard deviations of :func:`change_matrix` (what the lifts are to be read against)."""
    after, before = stacked(trained, reward_names), stacked(untrained, reward_names)
    return in_untrained_sd((after - before).mean((0, 1)), before)


def change_matrix(trained: dict[str, np.ndarray], untrained: dict[str, np.ndarray], reward_names: list[str]) -> np.ndarray:
    """D (K, K): row k identifier <k>, column j reward r_j; [r_j(<k>) − mean_i r_j(<i>)] trained − untrained, mean over
    images, over r_j's standard deviation on the untrained images of every single identifier."""
    after, before = stacked(trained, reward_names), stacked(untrained, reward_names)
    specific = (after - after.mean(0)) - (before - before.mean(0))
    return in_untrained_sd(specific.mean(1), before)


def sem_over_runs(values: np.ndarray) -> np.ndarray:
    """SE over the first axis (runs, ddof 1); NaN for a single run."""
    return stats.sem(values, axis=0) if len(values) > 1 else np.full(values.shape[1:], np.nan)


def summary(records: list[dict]) -> str:
    """Markdown over training seeds (``--json`` records): lift mean ± SE and wins per reward, then D's mean ± SE."""
    names = list(records[0]["lifts"])
    lines = [f"{len(records)} runs; lift = own − mean of the other single identifiers, trained − untrained (reward units)", "",
             "| reward k | lift ± SE over runs | runs where <k> wins by ≥ 2 SE |", "|---|---:|---:|"]  # fmt: skip
    for name in names:
        lifts = np.array([r["lifts"][name]["lift"] for r in records])
        wins = sum(r["margins"][name]["margin"] >= 2 * r["margins"][name]["paired_se"] for r in records)
        lines.append(f"| {name} | {lifts.mean():+.4f} ± {sem_over_runs(lifts):.4f} | {wins} of {len(records)} |")
    pairs = [[{k: np.array(v) for k, v in r[key].items()} for key in ("scores", "untrained_scores")] for r in records]
    matrices = np.stack([change_matrix(trained, untrained, names) for trained, untrained in pairs])
    common = np.stack([common_change(trained, untrained, names) for trained, untrained in pairs])
    mean, se, common_se = matrices.mean(0), sem_over_runs(matrices), sem_over_runs(common)
    lines += ["", "Change matrix D (rows: identifier <k>; columns: reward r_j; standard deviations of r_j; ± SE over runs)", "",
              "| identifier | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]  # fmt: skip
    for k, name in enumerate(names):
        lines.append(f"| <{name}> | " + " | ".join(f"{mean[k, j]:+.3f} ± {se[k, j]:.3f}" for j in range(len(names))) + " |")
    lines.append("| common (every identifier) | " + " | ".join(f"{m:+.3f} ± {e:.3f}" for m, e in zip(common.mean(0), common_se)) + " |")
    return "\n".join(lines)


def lift_table(trained: dict[str, np.ndarray], untrained: dict[str, np.ndarray], reward_names: list[str]) -> str:
    """Markdown: per reward k, own − mean of the other single identifiers untrained, trained, and the lift."""
    lines = ["| reward k | own − others, untrained | trained | lift ± paired SE |", "|---|---:|---:|---:|"]
    for name, m in identifier_lifts(trained, untrained, reward_names).items():
        lines.append(f"| {name} | {m['untrained']:+.4f} | {m['trained']:+.4f} | {m['lift']:+.4f} ± {m['lift_se']:.4f} |")
    return "\n".join(lines)


def identifier_table(scores: dict[str, np.ndarray], reward_names: list[str]) -> str:
    """Markdown: mean of each reward (columns) under each identifier setting (rows), then the margins."""
    lines = ["| identifier | " + " | ".join(reward_names) + " |", "|---|" + "---:|" * len(reward_names)]
    for label, matrix in scores.items():
        lines.append(f"| {label} | " + " | ".join(f"{v:.4f}" for v in matrix.mean(0)) + " |")
    lines += ["", "| reward k | r_k under <k> | best other | margin ± paired SE | ≥ 2 SE |", "|---|---:|---|---:|---|"]
    for name, m in identifier_margins(scores, reward_names).items():
        ok = m["margin"] >= 2 * m["paired_se"]
        lines.append(
            f"| {name} | {m['own']:.4f} | <{m['runner_up']}> {m['runner_up_value']:.4f} | "
            f"{m['margin']:+.4f} ± {m['paired_se']:.4f} | {'yes' if ok else 'no'} |"
        )
    return "\n".join(lines)


def newest_checkpoint(run: str | Path, what: str = "the run") -> Path:
    """The newest valid checkpoint of the run directory ``run``; ``what`` names it in the error when it has none."""
    checkpoint = latest_valid_checkpoint(RunDir(Path(run)).checkpoints)
    if checkpoint is None:
        raise FileNotFoundError(f"{what}: no checkpoint under {run}/checkpoints: train the run first")
    return checkpoint


def trained_run(config: TrainConfig) -> tuple[ParrotTrainer, Path]:
    """The run of ``config`` rebuilt from its flags, with its newest valid checkpoint loaded (and that checkpoint)."""
    trainer = ParrotTrainer(config)
    checkpoint = newest_checkpoint(config.output_dir)
    trainer.load_checkpoint(checkpoint)
    return trainer, checkpoint


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="", help="also write the scores and margins here")
    parser.add_argument("--t2i_from", default="", metavar="RUN", help="evaluate this run's T2I LoRA instead (its newest valid checkpoint)")
    parser.add_argument("--summarise", nargs="+", default=[], metavar="JSON", help="only summarise these --json records of several seeds")
    args = parser.parse_args(argv[:split])
    if args.summarise:
        records = []
        for path in args.summarise:
            if not Path(path).is_file():
                raise FileNotFoundError(f"--summarise: no file {path}")
            record = json.loads(Path(path).read_text())
            if "untrained_scores" not in record:
                raise ValueError(f"--summarise: {path} has no untrained scores (written before lifts were recorded): rerun it")
            records.append(record)
        print(summary(records))
        return
    config = load_train_config(argv[split + 1 :])
    if not config.identifiers.enabled:
        raise ValueError("the run trained without identifiers (identifiers.enabled false): nothing to compare")
    trainer, checkpoint = trained_run(config)
    if args.t2i_from:
        checkpoint = newest_checkpoint(args.t2i_from, "--t2i_from")
        read_checkpoint(checkpoint, {"t2i": trainer.parts.trainable_state()["t2i"]}, {})
    names = list(trainer.parts.reward_names)
    scores, untrained = {}, {}
    for label, identifiers in [(n, [n]) for n in names] + [("all", names), ("none", [])]:
        trainer.parts.eval_identifiers = identifiers
        scores[label] = trainer.evaluation_samples("trained").scores.numpy()
        if len(identifiers) == 1:
            untrained[label] = trainer.evaluation_samples("untrained").scores.numpy()
    print(f"run {config.output_dir}, T2I LoRA of {checkpoint}; {scores['all'].shape[0]} held-out images per row")
    print(identifier_table(scores, names))
    print("\nThe training's part (untrained start: LoRA off, SFT expander; same images):\n")
    print(lift_table(scores, untrained, names))
    if args.json:
        record = {
            "scores": {k: v.tolist() for k, v in scores.items()},
            "untrained_scores": {k: v.tolist() for k, v in untrained.items()},
            "margins": identifier_margins(scores, names),
            "lifts": identifier_lifts(scores, untrained, names),
        }
        Path(args.json).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    run_cli(main)
