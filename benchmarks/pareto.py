"""Pareto fronts of the methods at the same sample budget: reward table, fronts, hypervolume, plots.

Every method is a setting of the one training loop (:class:`parrot.train.ParrotTrainer`), built
with :func:`parrot.train_config.load_train_config` on top of a preset (default ``shapes``) plus
any passthrough flags (``--set``). Methods (K rewards r_1..r_K of the preset, in its order):

- ``base``            the T2I model alone, CFG on c, no training (``--expander.model ""``);
- ``base+expander``   the SFT expander with prompt-centred guidance, no RL (the joint config's
                      ``evaluation_samples(base=True)``: LoRA off, expander at its SFT weights);
- ``base+expander+ids`` the same with every reward identifier prepended as the paper evaluates
                      ("<k1> … <kK>, ĉ"), a diagnostic row of what unseen identifiers cost;
- ``ddpo:<r>``        DDPO on reward r alone: T2I only, no expander, no identifiers, ``single:<r>``;
- ``ws1`` / ``ws2``   DPOK-style weighted sums, T2I only, no expander, no identifiers: WS1 puts
                      0.7 on r_1 and splits 0.3 equally over the others ({.7,.1,.1,.1} for K = 4),
                      WS2 equal weights ({.25,.25,.25,.25});
- ``parrot-t2i``      Pareto selection, T2I trained, the expander fixed (``--mode t2i``); reward
                      identifiers as the preset sets them (the ``shapes`` preset: off, see its comment);
- ``parrot-expander`` Pareto selection, only the expander trained (``--mode expander``);
- ``parrot``          Parrot joint (``--mode joint``);
- ``parrot-no-pcg``   Parrot joint without original-prompt-centred guidance: w1 = 0 and w2 = the
                      preset's CFG scale, i.e. plain CFG on ĉ with the same total guidance as
                      ``base`` (:mod:`t2i.guidance`: zero weights are dropped, so w1 = 0 *is* CFG).

Same budget: every trained method runs the same iterations × images per iteration (checked and
printed) with the same training seeds (so the same prompt draws and initial noise per iteration),
and every method is evaluated on the same held-out prompts × evaluation seeds (fixed noise).
Untrained methods do not depend on the training seed: they are evaluated once.

Notation: a method's evaluation images give R (N, K) (N = held-out prompts × evaluation seeds).
Normalisation: each reward is min–max scaled, R̃[:, k] = (R[:, k] − lo_k) / (hi_k − lo_k), with
lo_k / hi_k the minimum / maximum of reward k over the union of ALL methods' evaluation images of
the run (every seed); a reward constant over the union maps to 0. Reference point: r_ref =
(−δ, …, −δ) in R̃ space with δ = ``--ref-offset`` (default 0.1, i.e. 10 % of each reward's range
below the worst image of the run), so every image strictly dominates it. The hypervolume HV of a
method (per training seed) is that of its non-dominated evaluation images
(:func:`parrot.selection.non_dominated_mask`) in R̃ space against r_ref, by ``moocore.hypervolume``.
Gain = mean over seeds of HV(method) − HV(base); the headline is gain(parrot) ÷ gain(ws2) (goal ≥ 1.3).
The table's "avg norm." column is Parrot's Table 1 average: the mean over rewards of mean_i R̃[i, k].
Because normalisation and reference use the run's union, HV values compare methods within a run,
not across runs with different method sets.

Commands (from the repository root, ``OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 PYTHONPATH=.``):

    python benchmarks/pareto.py --quick --json runs/pareto-quick/pareto.json --out runs/pareto-quick
    python benchmarks/pareto.py --json runs/pareto3/pareto.json --out runs/pareto3      # the full run
    python benchmarks/pareto.py --iterations 0 --seeds 0 --json runs/pareto40/pareto.json --out runs/pareto40

``--quick``: all methods, 1 training seed, 1 iteration of 2 prompts × 4 images, 8 DDIM steps,
2 evaluation seeds (about 1 min on 2 cores; a smoke run, not a result). The full run: 3 training
seeds, 12 iterations of the preset's batch for every trained method (shapes: 4 prompts × 4 images,
192 images per run, 20 DDIM steps; about 1 h on 2 cores), 8 evaluation seeds. ``--iterations 0``
takes the preset's own budget (shapes: 40 iterations, the ``make demo`` run; about 1 h per seed).
The wall times of the runs made are in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import moocore
import numpy as np
import torch
from tqdm.auto import tqdm

from parrot.plots import pairwise_front_plot, seed_bar_plot
from parrot.selection import non_dominated_mask
from parrot.train import EvaluationSamples, ParrotTrainer, read_prompt_list
from parrot.train_config import DEFAULT_PRESET, TrainConfig, derived_quantities, load_train_config

__all__ = [
    "Method",
    "method_catalogue",
    "minmax_bounds",
    "normalise",
    "reference_point",
    "front_hypervolume",
    "run_benchmark",
    "main",
]

#: the full run's budget: the shapes preset's own 40 iterations take ~1 h per seed on 2 CPU cores
FULL_RUN_ITERATIONS = 12
QUICK = {"iterations": 1, "seeds": [0], "eval_seeds": 2, "overrides": ["--sampling.prompts_per_process", "2", "--sampling.num_steps", "8"]}


@dataclass(frozen=True)
class Method:
    """A method: its ``parrot.train`` overrides and whether it trains (untrained: evaluated with LoRA off, expander at SFT)."""

    name: str
    overrides: tuple[str, ...]
    trained: bool


def ws1_weights(num_rewards: int) -> list[float]:
    """0.7 on the first reward, 0.3 split equally over the rest ({.7,.1,.1,.1} for K = 4)."""
    if num_rewards == 1:
        return [1.0]
    return [0.7] + [0.3 / (num_rewards - 1)] * (num_rewards - 1)


def method_catalogue(reward_names: list[str], guidance_scale: float) -> dict[str, Method]:
    """Every method of the benchmark, in table order (see the module docstring)."""
    t2i_alone = ("--mode", "t2i", "--expander.model", "", "--identifiers.enabled", "false")
    methods = [
        Method("base", t2i_alone, trained=False),
        Method("base+expander", ("--mode", "joint", "--identifiers.enabled", "false"), trained=False),
        # diagnostic: the paper's evaluation prompt "<all ids>, ĉ" before any training
        Method("base+expander+ids", ("--mode", "joint", "--identifiers.enabled", "true", "--identifiers.evaluation", "all"), trained=False),
    ]
    methods += [Method(f"ddpo:{r}", (*t2i_alone, "--selection.mode", f"single:{r}"), trained=True) for r in reward_names]
    for name, weights in (("ws1", ws1_weights(len(reward_names))), ("ws2", [1.0 / len(reward_names)] * len(reward_names))):
        methods.append(Method(name, (*t2i_alone, "--selection.mode", "weighted", "--selection.weights", *map(str, weights)), True))
    pareto = ("--selection.mode", "pareto",)  # reward identifiers as the preset sets them
    methods += [
        Method("parrot-t2i", ("--mode", "t2i", *pareto), True),
        Method("parrot-expander", ("--mode", "expander", *pareto), True),
        Method("parrot", ("--mode", "joint", *pareto), True),
        Method("parrot-no-pcg", ("--mode", "joint", *pareto, "--sampling.w1", "0", "--sampling.w2", str(guidance_scale)), True),
    ]
    return {m.name: m for m in methods}


# ----- normalisation and hypervolume ------------------------------------------------------------
def minmax_bounds(matrices: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) per reward over the union of the (N_i, K) matrices."""
    if not matrices:
        raise ValueError("no reward matrices to normalise over")
    union = np.concatenate([np.asarray(m, dtype=float) for m in matrices])
    if union.ndim != 2 or not np.isfinite(union).all():
        raise ValueError(f"reward matrices must be finite (N, K); got shape {union.shape} with non-finite values or wrong rank")
    return union.min(0), union.max(0)


def normalise(rewards: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """R̃ = (R − lo) / (hi − lo) per column; a constant column (hi = lo) maps to 0."""
    span = np.where(hi > lo, hi - lo, 1.0)
    return (np.asarray(rewards, dtype=float) - lo) / span


def reference_point(num_rewards: int, offset: float) -> np.ndarray:
    """r_ref = (−offset, …) in normalised space (every image of the run strictly dominates it)."""
    if not offset > 0:
        raise ValueError(f"ref-offset={offset} must be > 0 so that the worst image still adds volume")
    return np.full(num_rewards, -float(offset))


def front_hypervolume(normalised: np.ndarray, reference: np.ndarray) -> tuple[float, int]:
    """(HV of the non-dominated rows of R̃ against r_ref (maximisation), size of that front)."""
    points = np.asarray(normalised, dtype=float)
    front = points[non_dominated_mask(torch.from_numpy(points)).numpy()]
    # moocore counts only the part of each box above the reference point; rows that do not
    # strictly dominate it add nothing
    return float(moocore.hypervolume(front, ref=reference, maximise=True)), int(len(front))


# ----- running the methods ----------------------------------------------------------------------
def base_overrides(args: argparse.Namespace, eval_seeds: int, iterations: int) -> list[str]:
    """Preset, benchmark budget, then the user's passthrough flags (which may change the budget)."""
    return [
        "--preset", args.preset, *(["--iterations", str(iterations)] if iterations else []),
        "--evaluation.seeds", *map(str, range(eval_seeds)),
        "--evaluation.enabled", "false", "--logging.log_with", "none", "--checkpoint_every", "0",
        *(QUICK["overrides"] if args.quick else []), *shlex.split(args.set),
    ]  # fmt: skip


def method_config(common: list[str], method: Method, seed: int, output_dir: Path) -> TrainConfig:
    return load_train_config([*common, *method.overrides, "--seed", str(seed), "--output_dir", str(output_dir)])


def run_method(config: TrainConfig, method: Method) -> EvaluationSamples:
    """Train (if the method trains) and return its held-out evaluation images' rewards."""
    trainer = ParrotTrainer(config)
    if method.trained:
        with contextlib.redirect_stdout(io.StringIO()):  # the trainer's one-line size summary; printed once here instead
            trainer.train()
    return trainer.evaluation_samples(base=not method.trained)


def summarise(values: list[float]) -> list[float]:
    """[mean, std] (population std; 0 for one value)."""
    return [float(np.mean(values)), float(np.std(values))]


def train_and_evaluate(
    common: list[str], methods: list[Method], seeds: list[int], work: Path
) -> tuple[dict, dict, tuple[int, int]]:
    """Rewards R (N, K) and wall seconds per (method, training seed), and the shared budget (iterations, images/iteration).

    An untrained method is run once, under seed ``None``.
    """
    runs = [(m, s) for m in methods for s in (seeds if m.trained else [None])]
    configs = {
        (m.name, s): method_config(common, m, 0 if s is None else s, work / f"{m.name.replace(':', '_')}-seed{s}")
        for m, s in runs
    }
    budgets = {(configs[m.name, s].iterations, derived_quantities(configs[m.name, s], 1).images_per_iteration)
               for m, s in runs if m.trained}
    if len(budgets) > 1:
        raise SystemExit(f"methods would train on different budgets (iterations, images per iteration): {sorted(budgets)}")
    budget = budgets.pop() if budgets else (0, 0)
    scores: dict[tuple[str, int | None], np.ndarray] = {}
    wall: dict[tuple[str, int | None], float] = {}
    bar = tqdm(runs, desc="pareto runs", unit="run")
    for method, seed in bar:
        bar.set_postfix_str(f"{method.name} seed {seed}")
        tick = time.perf_counter()
        samples = run_method(configs[(method.name, seed)], method)
        wall[(method.name, seed)] = time.perf_counter() - tick
        scores[(method.name, seed)] = samples.scores.numpy()
    return scores, wall, budget


def run_benchmark(args: argparse.Namespace, argv: list[str]) -> dict:
    started = time.perf_counter()
    iterations = QUICK["iterations"] if args.quick else args.iterations
    seeds = QUICK["seeds"] if args.quick else args.seeds
    eval_seeds = QUICK["eval_seeds"] if args.quick else args.eval_seeds
    common = base_overrides(args, eval_seeds, iterations)
    probe = load_train_config([*common, "--mode", "t2i"])
    reward_names = list(probe.rewards.names)
    held_out = read_prompt_list(probe.prompts.evaluation, probe.prompts.evaluation_file, "prompts.evaluation")
    if not held_out:
        raise SystemExit("the config has no held-out prompts: set prompts.evaluation or prompts.evaluation_file (--set)")
    catalogue = method_catalogue(reward_names, probe.sampling.guidance_scale)
    chosen = args.methods or list(catalogue)
    unknown = [m for m in chosen if m not in catalogue]
    if unknown:
        raise SystemExit(f"--methods: unknown {unknown}; known: {', '.join(catalogue)}")
    if "base" not in chosen:
        chosen = ["base", *chosen]  # every gain is measured against it
    methods = [catalogue[m] for m in chosen]
    sys.stdout.write(
        f"pareto: {len(methods)} methods, training seeds {seeds}; budget per trained run = {probe.iterations} iterations × "
        f"{derived_quantities(probe, 1).images_per_iteration} images (same for every trained method); evaluation {len(held_out)} held-out "
        f"prompts × {len(probe.evaluation.seeds)} seeds; {probe.sampling.num_steps} DDIM steps\n"
    )
    with (tempfile.TemporaryDirectory(prefix="pareto-runs-") if not args.runs_dir else contextlib.nullcontext(args.runs_dir)) as work:
        scores, wall, (iters, per_iteration) = train_and_evaluate(common, methods, seeds, Path(work))

    lo, hi = minmax_bounds(list(scores.values()))
    reference = reference_point(len(reward_names), args.ref_offset)
    result_methods: dict[str, dict] = {}
    for method in methods:
        per_seed = {}
        for (name, seed), matrix in scores.items():
            if name != method.name:
                continue
            scaled = normalise(matrix, lo, hi)
            hv, front = front_hypervolume(scaled, reference)
            per_seed["none" if seed is None else str(seed)] = {
                "means": dict(zip(reward_names, map(float, matrix.mean(0)))),
                "normalised_means": dict(zip(reward_names, map(float, scaled.mean(0)))),
                "average_normalised": float(scaled.mean()),
                "hypervolume": hv,
                "front_size": front,
                "num_images": int(len(matrix)),
                "wall_s": round(wall[(name, seed)], 2),
                "scores": matrix.tolist(),
            }
        runs_of = list(per_seed.values())
        result_methods[method.name] = {
            "trained": method.trained,
            "overrides": list(method.overrides),
            "seeds": per_seed,
            "summary": {
                "means": {r: summarise([s["means"][r] for s in runs_of]) for r in reward_names},
                "average_normalised": summarise([s["average_normalised"] for s in runs_of]),
                "hypervolume": summarise([s["hypervolume"] for s in runs_of]),
                "front_size": summarise([s["front_size"] for s in runs_of]),
            },
        }
    base_hv = result_methods["base"]["summary"]["hypervolume"][0]
    for entry in result_methods.values():
        entry["summary"]["hypervolume_gain"] = entry["summary"]["hypervolume"][0] - base_hv
    ratio = None
    if "parrot" in result_methods and "ws2" in result_methods:
        ws2_gain = result_methods["ws2"]["summary"]["hypervolume_gain"]
        ratio = result_methods["parrot"]["summary"]["hypervolume_gain"] / ws2_gain if ws2_gain > 0 else None
    return {
        "command": "python benchmarks/pareto.py " + shlex.join(argv),
        "preset": args.preset,
        "quick": bool(args.quick),
        "reward_names": reward_names,
        "budget": {
            "iterations": iters,
            "images_per_iteration": per_iteration,
            "images_per_run": iters * per_iteration,
            "training_seeds": list(seeds),
            "evaluation_seeds": list(probe.evaluation.seeds),
            "evaluation_prompts": held_out,
            "num_steps": probe.sampling.num_steps,
            "overrides": common,
        },
        "normalisation": {
            "kind": "min-max per reward over the union of all methods' evaluation images of this run",
            "low": lo.tolist(),
            "high": hi.tolist(),
        },
        "reference_point": reference.tolist(),
        "methods": result_methods,
        "gain_ratio_parrot_over_ws2": ratio,
        "wall_s": round(time.perf_counter() - started, 1),
    }


# ----- reporting --------------------------------------------------------------------------------
def markdown_table(result: dict) -> str:
    """Parrot's Table 1 shape: per-reward mean ± std over seeds, avg. normalised, HV ± std, HV gain, front size."""
    names = result["reward_names"]
    head = ["method", *names, "avg norm.", "HV", "HV gain", "front size", "s/run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, entry in result["methods"].items():
        s = entry["summary"]
        cells = [method, *(f"{s['means'][r][0]:.4f} ± {s['means'][r][1]:.4f}" for r in names)]
        cells += [f"{s['average_normalised'][0]:.4f} ± {s['average_normalised'][1]:.4f}",
                  f"{s['hypervolume'][0]:.4f} ± {s['hypervolume'][1]:.4f}", f"{s['hypervolume_gain']:+.4f}",
                  f"{s['front_size'][0]:.1f}", f"{np.mean([r['wall_s'] for r in entry['seeds'].values()]):.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    ratio = result["gain_ratio_parrot_over_ws2"]
    if "parrot" in result["methods"] and "ws2" in result["methods"]:
        gains = {m: result["methods"][m]["summary"]["hypervolume_gain"] for m in ("parrot", "ws2")}
        verdict = (f"= {ratio:.2f} (goal ≥ 1.3)" if ratio is not None
                   else "undefined: ws2 does not gain hypervolume over base")
        lines += ["", f"HV gain of parrot ({gains['parrot']:+.4f}) ÷ HV gain of ws2 ({gains['ws2']:+.4f}) {verdict}"]
    return "\n".join(lines)


def write_plots(result: dict, out: Path) -> dict[str, str]:
    names = result["reward_names"]
    pooled = {m: np.concatenate([np.asarray(r["scores"]) for r in e["seeds"].values()]) for m, e in result["methods"].items()}
    budget = result["budget"]
    title = f"held-out images, all seeds pooled; {budget['images_per_run']} training images per run"
    paths = {"hypervolume": str(seed_bar_plot(
        {m: [r["hypervolume"] for r in e["seeds"].values()] for m, e in result["methods"].items()},
        out / "hypervolume.png", "hypervolume (min-max normalised)", "hypervolume of the held-out front per training seed",
    ))}
    if len(names) >= 2:
        paths["fronts"] = str(pairwise_front_plot(pooled, names, out / "fronts.png", title))
    return paths


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default=DEFAULT_PRESET, help="parrot.train preset (default: %(default)s)")
    parser.add_argument("--set", default="", metavar="FLAGS", help="extra parrot.train flags in one string, e.g. --set='--t2i.lr 1e-3'")
    parser.add_argument("--methods", nargs="+", help="a subset of the methods (base is always added)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    parser.add_argument(
        "--iterations", type=int, default=FULL_RUN_ITERATIONS,
        help="training iterations of every trained method (default %(default)s: 3 seeds in about 1 h on 2 CPU cores; 0 = the preset's)",
    )
    parser.add_argument("--eval-seeds", type=int, default=8, help="evaluation seeds per held-out prompt")
    parser.add_argument("--ref-offset", type=float, default=0.1, help="δ of the reference point (−δ, …) in normalised space")
    parser.add_argument("--quick", action="store_true", help="smoke budget (see the module docstring); overrides the three above")
    parser.add_argument("--json", type=Path, help="write every figure of the tables here")
    parser.add_argument("--out", type=Path, help="directory for fronts.png, hypervolume.png and table.md")
    parser.add_argument("--runs-dir", default="", help="keep each run's output_dir here (default: a temporary directory)")
    args = parser.parse_args(argv)
    if args.iterations < 0 or args.eval_seeds < 1 or not args.seeds:
        parser.error(f"need --iterations >= 0 (got {args.iterations}), --eval-seeds >= 1 ({args.eval_seeds}) and a seed")

    result = run_benchmark(args, argv)
    table = markdown_table(result)
    sys.stdout.write(table + f"\nwall time {result['wall_s']:.0f} s\n")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        result["plots"] = write_plots(result, args.out)
        (args.out / "table.md").write_text(f"`{result['command']}`\n\n{table}\n", encoding="utf-8")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1), encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
