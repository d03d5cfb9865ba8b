"""Pareto benchmark: every method at the same sample budget — reward table, Table-1 average, hypervolume, plots.

Every method is a setting of the one training loop (:class:`parrot.train.ParrotTrainer`), built
with :func:`parrot.train_config.load_train_config` on top of a preset (default ``shapes``) plus
any passthrough flags (``--set``), and evaluated by :mod:`parrot.evaluation` on the same held-out
prompts × evaluation seeds (fixed noise). Methods (K rewards r_1..r_K of the preset, in its order):

- ``base``              the T2I model alone: LoRA off, no expander, CFG on c (setting ``plain_base``);
- ``base+expander``     base + the SFT expander (Promptist), prompt-centred guidance, no RL
                        (setting ``untrained`` of the joint config, identifiers off);
- ``base+expander+ids`` the same with every reward identifier prepended as the paper evaluates
                        ("<k1> … <kK>, ĉ"), a diagnostic row of what unseen identifiers cost;
- ``ddpo:<r>``          DDPO on reward r alone: T2I only, no expander, no identifiers, ``single:<r>``;
- ``ws1`` / ``ws2``     DPOK-style weighted sums, T2I only, no expander, no identifiers: WS1 puts
                        0.7 on r_1 and splits 0.3 over the others ({.7,.1,.1,.1} for K = 4), WS2
                        equal weights;
- ``parrot-t2i``        Pareto selection, T2I only, no expander: like-for-like against WS1/WS2 (the
                        paper's T2I-only 0.3992 vs WS 0.3273); identifiers as the preset sets them;
- ``parrot-expander``   Pareto selection, only the expander trained (``--mode expander``);
- ``parrot``            Parrot joint (``--mode joint``);
- ``parrot-no-pcg``     Parrot joint without original-prompt-centred guidance at inference: w1 = 0 and
                        w2 = the preset's CFG scale, i.e. plain CFG on ĉ (:mod:`t2i.guidance` drops zero
                        weights); training samples with CFG on "<k>, ĉ" in both, so the two rows differ
                        only in how they are evaluated;
- ``ws2+expander``      WS2's equal-weight sum, T2I and expander trained jointly;
- ``dpok``              DPOK: KL-regularised policy gradient on the WS2 sum, T2I only
                        (``t2i.kl_weight`` = :data:`DPOK_KL_WEIGHT`);
- ``rwr``               DPOK's comparison: supervised fine-tuning on reward-weighted samples of the
                        base model on the WS2 sum (``t2i.estimator rwr``). Where ``parrot.train``
                        does not have that estimator yet the run stops at start with a message
                        naming the method (leave it out with ``--skip rwr``).

Same budget: every trained method runs the same iterations × images per iteration (checked and
printed) with the same training seeds (same prompt draws and initial noise per iteration).
Untrained methods do not depend on the training seed: they are evaluated once (seed ``none``).

Cells: one (method, training seed) is one cell, kept as ``OUT/cells/<method>-seed<s>.json``
(written atomically: its held-out samples, the exact ``parrot.train`` flags, wall time). A rerun
with the same ``--out`` loads the finished cells and runs only the missing ones, so the full run
can be done in parts; a cell made with other flags is refused, not reused.

Statistics (:mod:`parrot.evaluation`): each reward is min–max normalised over the union of ALL
cells' per-image held-out scores of the run (R̃ = (R − lo) / (hi − lo), constant → 0). Per cell:
the per-reward means, the Table-1 average (mean over rewards of the mean R̃) and the hypervolume
of its P per-prompt mean vectors in R̃ space (never of pooled images) against r_ref = (−δ, …, −δ),
δ = ``--ref-offset``, by ``moocore.hypervolume``. Per method: mean ± standard error over training
seeds (``scipy.stats.sem``, ddof 1; "–" for one seed); HV gain = mean HV − HV(base). The headline
is gain(parrot) ÷ gain(ws2) (goal ≥ 1.3). Normalisation and reference use the run's union, so HV
values compare methods within a run, not across runs with different method sets.

Commands (from the repository root, ``OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 PYTHONPATH=.``):

    python benchmarks/pareto.py --quick --out runs/pareto-quick        # smoke run, ≤ 10 min on 2 cores
    python benchmarks/pareto.py --out runs/pareto3                     # the full run; rerun to continue it
    python benchmarks/pareto.py --iterations 0 --seeds 0 --out runs/pareto40

``--quick``: all methods, 1 training seed, 1 iteration of 2 prompts × 4 images, 8 DDIM steps,
2 evaluation seeds (a smoke run, not a result). The full run: 3 training seeds, 12 iterations of
the preset's batch for every trained method (shapes: 1 prompt × 4 identifiers × 4 images, 20 DDIM steps; a cell
≈ 1–2 min on 2 cores), 8 evaluation seeds. ``--iterations 0`` takes the preset's own budget
(shapes: 40 iterations, the ``make demo`` run; ≈ 5 min a cell). ``OUT`` receives ``table.md``,
``pareto.json``, ``fronts.png`` and ``hypervolume.png``. Wall times of the runs made: BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import sem
from tqdm.auto import tqdm

from parrot.evaluation import (
    EvaluationSamples,
    front_hypervolume,
    minmax_bounds,
    normalise,
    per_prompt_hypervolume,
    per_prompt_means,
    reference_point,
    table1_averages,
)
from parrot.plots import pairwise_front_plot, seed_bar_plot
from parrot.presets import DEFAULT_PRESET
from parrot.train import ParrotTrainer, read_prompt_list
from parrot.train_config import TrainConfig, derived_quantities, load_train_config
from parrot_base.config import ConfigError

__all__ = [
    "Method",
    "method_catalogue",
    "minmax_bounds",
    "normalise",
    "reference_point",
    "front_hypervolume",
    "cell_path",
    "run_cells",
    "run_benchmark",
    "main",
]

#: the full run's budget: 12 iterations a cell (the shapes preset's own 40 take ~5 min a cell on 2 CPU cores)
FULL_RUN_ITERATIONS = 12
QUICK = {"iterations": 1, "seeds": [0], "eval_seeds": 2, "overrides": ["--sampling.prompts_per_process", "2", "--sampling.num_steps", "8"]}
#: β of DPOK's KL to the base model in the ``dpok`` row (DPOK's own runs use 0.01 with its reward scale)
DPOK_KL_WEIGHT = 0.01


@dataclass(frozen=True)
class Method:
    """A method: its ``parrot.train`` overrides and the held-out setting it is evaluated in.

    ``setting`` is one of :data:`parrot.evaluation.SETTINGS`: ``trained`` methods train first;
    ``plain_base`` / ``untrained`` ones are evaluated without training, once.
    """

    name: str
    overrides: tuple[str, ...]
    setting: str

    @property
    def trained(self) -> bool:
        return self.setting == "trained"


def ws1_weights(num_rewards: int) -> list[float]:
    """0.7 on the first reward, 0.3 split equally over the rest ({.7,.1,.1,.1} for K = 4)."""
    if num_rewards == 1:
        return [1.0]
    return [0.7] + [0.3 / (num_rewards - 1)] * (num_rewards - 1)


def method_catalogue(reward_names: list[str], guidance_scale: float) -> dict[str, Method]:
    """Every method of the benchmark, in table order (see the module docstring)."""
    k = len(reward_names)
    t2i_alone = ("--mode", "t2i", "--expander.model", "", "--identifiers.enabled", "false")
    ws2 = ("--selection.mode", "weighted", "--selection.weights", *map(str, [1.0 / k] * k))
    pareto = ("--selection.mode", "pareto")  # reward identifiers as the preset sets them
    # an expander without identifiers samples K expansions per prompt instead of one per identifier:
    # the same images per prompt, and the expander's group-mean baseline still has expansions to compare
    expander_no_ids = ("--identifiers.enabled", "false", "--sampling.expansions_per_prompt", str(k))
    methods = [
        Method("base", t2i_alone, "plain_base"),
        Method("base+expander", ("--mode", "joint", *expander_no_ids), "untrained"),
        # diagnostic: the paper's evaluation prompt "<all ids>, ĉ" before any training
        Method("base+expander+ids", ("--mode", "joint", "--identifiers.enabled", "true", "--identifiers.evaluation", "all"), "untrained"),
    ]
    methods += [Method(f"ddpo:{r}", (*t2i_alone, "--selection.mode", f"single:{r}"), "trained") for r in reward_names]
    methods += [
        Method("ws1", (*t2i_alone, "--selection.mode", "weighted", "--selection.weights", *map(str, ws1_weights(k))), "trained"),
        Method("ws2", (*t2i_alone, *ws2), "trained"),
        Method("parrot-t2i", ("--mode", "t2i", "--expander.model", "", *pareto), "trained"),
        Method("parrot-expander", ("--mode", "expander", *pareto), "trained"),
        Method("parrot", ("--mode", "joint", *pareto), "trained"),
        Method("parrot-no-pcg", ("--mode", "joint", *pareto, "--sampling.w1", "0", "--sampling.w2", str(guidance_scale)), "trained"),
        Method("ws2+expander", ("--mode", "joint", *expander_no_ids, *ws2), "trained"),
        Method("dpok", (*t2i_alone, *ws2, "--t2i.kl_weight", str(DPOK_KL_WEIGHT)), "trained"),
        Method("rwr", (*t2i_alone, *ws2, "--t2i.estimator", "rwr"), "trained"),
    ]
    return {m.name: m for m in methods}


# ----- cells: one (method, training seed) each, kept on disk ----------------------------------------
def base_overrides(args: argparse.Namespace, eval_seeds: int, iterations: int) -> list[str]:
    """Preset, benchmark budget, then the user's passthrough flags (which may change the budget)."""
    return [
        "--preset", args.preset, *(["--iterations", str(iterations)] if iterations else []),
        "--evaluation.seeds", *map(str, range(eval_seeds)),
        "--evaluation.enabled", "false", "--logging.log_with", "none", "--checkpoint_every", "0",
        *(QUICK["overrides"] if args.quick else []), *shlex.split(args.set),
    ]  # fmt: skip


def cell_flags(common: list[str], method: Method, seed: int | None) -> list[str]:
    """The ``parrot.train`` flags of a cell, without its output directory (the cell's identity on disk)."""
    return [*common, *method.overrides, "--seed", str(0 if seed is None else seed)]


def method_config(flags: list[str], method: Method, output_dir: Path) -> TrainConfig:
    try:
        return load_train_config([*flags, "--output_dir", str(output_dir)])
    except ConfigError as err:
        needs = (
            " (DPOK's supervised fine-tuning on reward-weighted base-model samples; not in this parrot.train yet)"
            if method.name == "rwr"
            else ""
        )
        raise SystemExit(f"method {method.name!r}{needs}: parrot.train refuses its flags: {err}; "
                         f"leave it out with --skip {method.name}") from None  # fmt: skip


def cell_path(cells: Path, method: Method, seed: int | None) -> Path:
    return cells / f"{method.name.replace(':', '_')}-seed{'none' if seed is None else seed}.json"


def write_cell(path: Path, cell: dict) -> None:
    """Write a cell atomically (temporary file, then rename): a killed run leaves no half cell."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(cell), encoding="utf-8")
    os.replace(tmp, path)


def read_cell(path: Path, flags: list[str]) -> dict | None:
    """A finished cell made with exactly ``flags``; None when there is none; refuses one made with other flags."""
    if not path.is_file():
        return None
    cell = json.loads(path.read_text(encoding="utf-8"))
    if cell.get("flags") != flags:
        raise SystemExit(f"{path} was made with other parrot.train flags ({shlex.join(cell.get('flags', []))}); "
                         "remove it or use another --out")  # fmt: skip
    return cell


def run_cell(config: TrainConfig, method: Method) -> EvaluationSamples:
    """Train (if the method trains) and return its held-out samples in the method's setting."""
    trainer = ParrotTrainer(config)
    if method.trained:
        with contextlib.redirect_stdout(io.StringIO()):  # the trainer's one-line size summary; printed once here instead
            trainer.train()
    return trainer.evaluation_samples(method.setting)


def run_cells(common: list[str], methods: list[Method], seeds: list[int], cells: Path, work: Path) -> tuple[dict, tuple[int, int]]:
    """The cell of every (method, training seed) — loaded when finished on disk, else run and written —
    and the shared budget (iterations, images per iteration). An untrained method has one cell, seed ``None``."""
    runs = [(m, s) for m in methods for s in (seeds if m.trained else [None])]
    flags = {(m.name, s): cell_flags(common, m, s) for m, s in runs}
    configs = {(m.name, s): method_config(flags[m.name, s], m, work / cell_path(cells, m, s).stem) for m, s in runs}
    budgets = {(configs[m.name, s].iterations, derived_quantities(configs[m.name, s], 1).images_per_iteration)
               for m, s in runs if m.trained}  # fmt: skip
    if len(budgets) > 1:
        raise SystemExit(f"methods would train on different budgets (iterations, images per iteration): {sorted(budgets)}")
    budget = budgets.pop() if budgets else (0, 0)
    done: dict[tuple[str, int | None], dict] = {}
    bar = tqdm(runs, desc="pareto cells", unit="cell")
    for method, seed in bar:
        key, path = (method.name, seed), cell_path(cells, method, seed)
        cell = read_cell(path, flags[key])
        if cell is None:
            bar.set_postfix_str(f"{method.name} seed {seed}")
            tick = time.perf_counter()
            samples = run_cell(configs[key], method)
            cell = {"method": method.name, "seed": seed, "setting": method.setting, "flags": flags[key],
                    "wall_s": round(time.perf_counter() - tick, 2), "samples": samples.to_json()}  # fmt: skip
            write_cell(path, cell)
        done[key] = cell
    return done, budget


# ----- aggregation ------------------------------------------------------------------------------------
def summarise(values: list[float]) -> list[float | None]:
    """[mean, standard error over seeds] (SE None for one value)."""
    return [float(np.mean(values)), float(sem(values)) if len(values) > 1 else None]


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
    unknown = [m for m in [*chosen, *args.skip] if m not in catalogue]
    if unknown:
        raise SystemExit(f"--methods / --skip: unknown {unknown}; known: {', '.join(catalogue)}")
    if "base" in args.skip:
        raise SystemExit("--skip base: every hypervolume gain is measured against base")
    chosen = [m for m in chosen if m not in args.skip]
    if "base" not in chosen:
        chosen = ["base", *chosen]  # every gain is measured against it
    methods = [catalogue[m] for m in chosen]
    sys.stdout.write(
        f"pareto: {len(methods)} methods, training seeds {seeds}; budget per trained cell = {probe.iterations} iterations × "
        f"{derived_quantities(probe, 1).images_per_iteration} images (same for every trained method); evaluation {len(held_out)} held-out "
        f"prompts × {len(probe.evaluation.seeds)} seeds; {probe.sampling.num_steps} DDIM steps; cells in {args.out / 'cells'}\n"
    )
    with tempfile.TemporaryDirectory(prefix="pareto-runs-") if not args.runs_dir else contextlib.nullcontext(args.runs_dir) as work:
        cells, (iters, per_iteration) = run_cells(common, methods, seeds, args.out / "cells", Path(work))

    samples = {key: EvaluationSamples.from_json(cell["samples"]) for key, cell in cells.items()}
    scores = {key: s.scores.numpy() for key, s in samples.items()}
    lo, hi = minmax_bounds(list(scores.values()))
    averages = table1_averages(scores, (lo, hi))
    reference = reference_point(len(reward_names), args.ref_offset)
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
            }
        runs_of = list(per_seed.values())
        result_methods[method.name] = {
            "setting": method.setting,
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
            "kind": "min-max per reward over the union of all cells' per-image held-out scores of this run",
            "low": lo.tolist(),
            "high": hi.tolist(),
        },
        "reference_point": reference.tolist(),
        "hypervolume_of": "per-prompt mean reward vectors (over evaluation seeds), normalised",
        "methods": result_methods,
        "gain_ratio_parrot_over_ws2": ratio,
        "wall_s": round(time.perf_counter() - started, 1),
    }


# ----- reporting --------------------------------------------------------------------------------
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


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default=DEFAULT_PRESET, help="parrot.train preset (default: %(default)s)")
    parser.add_argument("--set", default="", metavar="FLAGS", help="extra parrot.train flags in one string, e.g. --set='--t2i.lr 1e-3'")
    parser.add_argument("--methods", nargs="+", help="a subset of the methods (base is always added)")
    parser.add_argument("--skip", nargs="+", default=[], help="methods to leave out (e.g. rwr where parrot.train lacks its estimator)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    parser.add_argument(
        "--iterations",
        type=int,
        default=FULL_RUN_ITERATIONS,
        help="training iterations of every trained method (default %(default)s; 0 = the preset's)",
    )
    parser.add_argument("--eval-seeds", type=int, default=8, help="evaluation seeds per held-out prompt")
    parser.add_argument("--ref-offset", type=float, default=0.1, help="δ of the reference point (−δ, …) in normalised space")
    parser.add_argument("--quick", action="store_true", help="smoke budget (see the module docstring); overrides the three above")
    parser.add_argument("--out", type=Path, help="cells/, table.md, pareto.json, fronts.png, hypervolume.png "
                                                  "(default runs/pareto, runs/pareto-quick with --quick)")  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write pareto.json here")
    parser.add_argument("--runs-dir", default="", help="keep each cell's training output_dir here (default: a temporary directory)")
    args = parser.parse_args(argv)
    if args.iterations < 0 or args.eval_seeds < 1 or not args.seeds:
        parser.error(f"need --iterations >= 0 (got {args.iterations}), --eval-seeds >= 1 ({args.eval_seeds}) and a seed")
    args.out = args.out or Path("runs/pareto-quick" if args.quick else "runs/pareto")

    result = run_benchmark(args, argv)
    table = markdown_table(result)
    sys.stdout.write(table + f"\nwall time {result['wall_s']:.0f} s\n")
    args.out.mkdir(parents=True, exist_ok=True)
    result["plots"] = write_plots(result, args.out)
    (args.out / "table.md").write_text(f"`{result['command']}`\n\n{table}\n", encoding="utf-8")
    for path in {args.out / "pareto.json", *([args.json] if args.json else [])}:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1), encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
