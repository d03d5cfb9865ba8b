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
- ``ddpo:<r>``          DDPO on reward r alone: T2I only, no expander, no identifiers, ``single:<r>``
                        with DDPO's advantage (``pareto_cells.DDPO_ADVANTAGE``: r z-scored against its
                        prompt's history, the per-prompt stat tracker);
- ``ws1`` / ``ws2``     DPOK-style weighted sums, T2I only, no expander, no identifiers: WS1 puts
                        0.7 on r_1 and splits 0.3 over the others ({.7,.1,.1,.1} for K = 4), WS2
                        equal weights (``reward_weighting raw``: A_i = Σ_k w_k·z_B(r_k)_i, as in every
                        weighted-sum row below);
- ``ws2-unscaled``      the equal-weight sum as Flow-GRPO-style trainers form it: the rewards at their own
                        scales, s = Σ_k r_k / K, z-scored in its group (A_i = z_g(s)_i); a reward with a
                        small spread hardly moves s;
- ``parrot-t2i``        Pareto selection, T2I only, no expander: like-for-like against WS1/WS2 (the
                        paper's T2I-only 0.3992 vs WS 0.3273); identifiers as the preset sets them; the
                        default weighting (as every ``parrot*`` row but the next), A = z_g(r_k) on P_g;
- ``parrot-t2i-noids``  without reward identifiers, in training and in evaluation: like-for-like with
                        WS1/WS2 in the evaluated prompt too (c, not "<all ids>, c"), with the paper's
                        raw r_k on P (``reward_weighting raw``, the default before issue 13);
- ``parrot-t2i-noids-z`` the same with ``reward_weighting normalised`` + ``gradient_normalisation group``
                        (pinned; now the default): A = z_g(r_k) on the group's front (each reward centred
                        and scaled in its group, as the weighted sums' z-scored rewards are);
- ``parrot-t2i-noids-z-down`` the same with ``selection.dominated push_down`` (an extension, not the paper's
                        Algorithm 1): images off the front keep their below-mean entries, min(z_g(r_k), 0),
                        the push down the weighted sums keep and the paper's 0 drops;
- ``parrot-expander``   Pareto selection, only the expander trained (``--mode expander``);
- ``parrot``            Parrot joint (``--mode joint``);
- ``parrot-noids``      Parrot joint without identifiers (K expansions per prompt): like-for-like with
                        ``ws2+expander``;
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
(written atomically: its held-out samples, its training curve, the exact ``parrot.train`` flags, the selection
settings they resolved to, wall time; with ``--set "--evaluation.every N"`` its held-out curve too, the held-out
means at the start and every N iterations, which ``pareto_paired.py --curves`` pairs between methods). A rerun
with the same ``--out`` loads the finished cells and runs only the missing ones, so the full run can be done in
parts; a cell made with other flags, or a trained cell whose flags resolved to other selection settings (cells made
before issue 13 switched the default weighting from ``raw``), is refused, not reused.

Statistics (:mod:`parrot.evaluation`): each reward is min–max normalised over the union of ALL
cells' per-image held-out scores of the run (R̃ = (R − lo) / (hi − lo), constant → 0). Per cell:
the per-reward means, the Table-1 average (mean over rewards of the mean R̃) and the hypervolume
of its P per-prompt mean vectors in R̃ space (never of pooled images) against r_ref = (−δ, …, −δ),
δ = ``--ref-offset``, by ``moocore.hypervolume``. Per method: mean ± standard error over training
seeds (``scipy.stats.sem``, ddof 1; "–" for one seed); HV gain = mean HV − HV(base). Under the table,
issue 13's comparisons paired over training seeds (``pareto_report.GOAL_PAIRS``: Pareto T2I-only − WS1 and
− WS2, joint − base + SFT expander, prompt-centred guidance − CFG on ĉ, DPOK − RWR). Normalisation and
reference use the run's union, so HV values compare methods within a run, not across runs with different
method sets.

Commands (from the repository root, ``OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 PYTHONPATH=.``):

    python benchmarks/pareto.py --quick --out runs/pareto-quick        # smoke run, ≤ 10 min on 2 cores
    python benchmarks/pareto.py --out runs/pareto3                     # the full run; rerun to continue it
    python benchmarks/pareto.py --iterations 0 --seeds 0 --out runs/pareto40

``--catalogue grpo`` replaces the methods by issue 16's GRPO rows (``pareto_cells.grpo_catalogue``: base,
``ddpo:<hard>``, ``grpo:<hard>``, ``grpo-ws``, ``gdpo``, ``grpo-pareto``; ``--hard`` names the single-reward
rows' reward), e.g. on the world's SD3 model with the GenEval-style rule reward (BENCHMARKS.md, "GRPO"):

    python benchmarks/pareto.py --catalogue grpo --hard attribute_rules --out runs/grpo16 --set "--model.pipeline {world}/sd3 \
        --identifiers.enabled false --rewards.names attribute_rules laion_aesthetic preference \
        --prompts.train_file {world}/prompts/train_detailed.txt --prompts.evaluation_file {world}/prompts/held_out_detailed.txt \
        --sampling.eta 0.7 --sampling.num_steps 10 --sampling.prompts_per_process 2 --sampling.images_per_prompt 8 --evaluation.eta 0"

``--quick``: all methods, 1 training seed, 1 iteration of 2 prompts × 4 images, 8 DDIM steps,
2 evaluation seeds (a smoke run, not a result). The full run: 3 training seeds, 12 iterations of
the preset's batch for every trained method (shapes: 1 prompt × 4 identifiers × 4 images, 20 DDIM steps; a cell
≈ 1–2 min on 2 cores), 8 evaluation seeds. ``--iterations 0`` takes the preset's own budget
(shapes: 40 iterations, the ``make demo`` run; ≈ 5 min a cell). ``OUT`` receives ``table.md``,
``pareto.json``, ``fronts.png``, ``hypervolume.png`` and ``curves.png`` (each trained method's training-batch
mean reward per iteration, mean over seeds; the table adds how it moved from the first to the last quarter
of the iterations), and with held-out curves ``heldout_curves.png`` and their table. Wall times of the runs made:
BENCHMARKS.md.

Modules: this script runs the cells and assembles ``pareto.json``; ``pareto_cells.py`` holds the
method catalogue and the cells' flags and files, ``pareto_stats.py`` the statistics,
``pareto_report.py`` the table and the plots.
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
from pathlib import Path

from tqdm.auto import tqdm

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the repo's packages and benchmarks/ importable
    sys.path.insert(0, str(REPO))

from benchmarks.pareto_cells import (  # noqa: E402
    DPOK_KL_WEIGHT,
    QUICK,
    Method,
    base_overrides,
    cell_flags,
    cell_path,
    grpo_catalogue,
    method_catalogue,
    method_config,
    read_cell,
    selection_made_with,
    write_cell,
    ws1_weights,
)
from benchmarks.pareto_report import markdown_table, write_plots  # noqa: E402
from benchmarks.pareto_stats import method_results  # noqa: E402
from parrot.evaluation import EvaluationSamples, front_hypervolume, minmax_bounds, normalise, reference_point  # noqa: E402
from parrot.presets import DEFAULT_PRESET  # noqa: E402
from parrot.prompts import read_prompt_list  # noqa: E402
from parrot.run_dir import read_curves  # noqa: E402
from parrot.train import ParrotTrainer  # noqa: E402
from parrot.train_config import TrainConfig, derived_quantities, load_train_config  # noqa: E402
from parrot_base.config import ConfigError  # noqa: E402

__all__ = [
    "DPOK_KL_WEIGHT",
    "Method",
    "method_catalogue",
    "ws1_weights",
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


def run_cell(config: TrainConfig, method: Method) -> tuple[EvaluationSamples, dict[str, list[float]], dict[str, list[float]]]:
    """Train (if the method trains); its held-out samples in the method's setting, its training curve: reward name →
    the training batch's mean reward at each iteration (``curves.jsonl``; {} untrained), and its held-out curve
    (``--set "--evaluation.every N"``): {"iterations": [...], reward name: held-out mean at each} ({} without one)."""
    trainer = ParrotTrainer(config)
    curve: dict[str, list[float]] = {}
    held_out: dict[str, list[float]] = {}
    if method.trained:
        with contextlib.redirect_stdout(io.StringIO()):  # the trainer's one-line size summary; printed once here instead
            trainer.train()
        curves = read_curves(trainer.run)
        names = trainer.parts.reward_names
        curve = {name: curves[f"reward/{name}/mean"][1].tolist() for name in names if f"reward/{name}/mean" in curves}
        if f"heldout/{names[0]}/mean" in curves:
            held_out = {"iterations": curves[f"heldout/{names[0]}/mean"][0].tolist()}
            held_out |= {name: curves[f"heldout/{name}/mean"][1].tolist() for name in names}
    return trainer.evaluation_samples(method.setting), curve, held_out


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
        cell = read_cell(path, flags[key], selection_made_with(configs[key]))
        if cell is None:
            bar.set_postfix_str(f"{method.name} seed {seed}")
            tick = time.perf_counter()
            samples, curve, held_out = run_cell(configs[key], method)
            cell = {"method": method.name, "seed": seed, "setting": method.setting, "flags": flags[key],
                    "selection": selection_made_with(configs[key]),
                    "wall_s": round(time.perf_counter() - tick, 2), "samples": samples.to_json(), "curve": curve}  # fmt: skip
            if held_out:
                cell["heldout_curve"] = held_out
            write_cell(path, cell)
        done[key] = cell
    return done, budget


def choose_methods(args: argparse.Namespace, catalogue: dict[str, Method]) -> list[Method]:
    """The methods of ``--methods`` (default all) less ``--skip``, with ``base`` always first."""
    chosen = args.methods or list(catalogue)
    unknown = [m for m in [*chosen, *args.skip] if m not in catalogue]
    if unknown:
        raise SystemExit(f"--methods / --skip: unknown {unknown}; known: {', '.join(catalogue)}")
    if "base" in args.skip:
        raise SystemExit("--skip base: every hypervolume gain is measured against base")
    chosen = [m for m in chosen if m not in args.skip]
    if "base" not in chosen:
        chosen = ["base", *chosen]  # every gain is measured against it
    return [catalogue[m] for m in chosen]


def run_benchmark(args: argparse.Namespace, argv: list[str]) -> dict:
    """Every cell of the chosen methods (run or loaded), then the statistics: the ``pareto.json`` record."""
    started = time.perf_counter()
    iterations = QUICK["iterations"] if args.quick else args.iterations
    seeds = QUICK["seeds"] if args.quick else args.seeds
    eval_seeds = QUICK["eval_seeds"] if args.quick else args.eval_seeds
    common = base_overrides(args, eval_seeds, iterations)
    try:
        probe = load_train_config([*common, "--mode", "t2i"])
    except ConfigError as err:
        raise SystemExit(f"error: the benchmark's parrot.train flags (preset, budget, --set) are refused: {err}") from None
    reward_names = list(probe.rewards.names)
    held_out = read_prompt_list(probe.prompts.evaluation, probe.prompts.evaluation_file, "prompts.evaluation")
    if not held_out:
        raise SystemExit("the config has no held-out prompts: set prompts.evaluation or prompts.evaluation_file (--set)")
    if args.catalogue == "grpo":
        catalogue = grpo_catalogue(reward_names, args.hard or reward_names[0])
    else:
        catalogue = method_catalogue(reward_names, probe.sampling.guidance_scale)
    methods = choose_methods(args, catalogue)
    sys.stdout.write(
        f"pareto: {len(methods)} methods, training seeds {seeds}; budget per trained cell = {probe.iterations} iterations × "
        f"{derived_quantities(probe, 1).images_per_iteration} images (same for every trained method); evaluation {len(held_out)} held-out "
        f"prompts × {len(probe.evaluation.seeds)} seeds; {probe.sampling.num_steps} DDIM steps; cells in {args.out / 'cells'}\n"
    )
    with tempfile.TemporaryDirectory(prefix="pareto-runs-") if not args.runs_dir else contextlib.nullcontext(args.runs_dir) as work:
        cells, (iters, per_iteration) = run_cells(common, methods, seeds, args.out / "cells", Path(work))
    result_methods, lo, hi, reference = method_results(methods, cells, reward_names, args.ref_offset)
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
        "wall_s": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default=DEFAULT_PRESET, help="parrot.train preset (default: %(default)s)")
    parser.add_argument("--set", default="", metavar="FLAGS", help="extra parrot.train flags in one string, e.g. --set='--t2i.lr 1e-3'")
    parser.add_argument(
        "--catalogue",
        choices=("parrot", "grpo"),
        default="parrot",
        help="the methods: Parrot's benchmark (default) or the GRPO rows of issue 16 (see pareto_cells.grpo_catalogue)",
    )
    parser.add_argument("--hard", default="", help="--catalogue grpo: the reward of the single-reward rows (default: the first reward)")
    parser.add_argument("--methods", nargs="+", help="a subset of the methods (base is always added)")
    parser.add_argument("--skip", nargs="+", default=[], help="methods to leave out (e.g. rwr where parrot.train lacks its estimator)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    parser.add_argument(
        "--iterations",
        type=int,
        default=FULL_RUN_ITERATIONS,
        help="training iterations of every trained method (default %(default)s; 0 = the preset's)",
    )
    # 32, not 8: at 8 seeds a held-out prompt the same DDPO-on-aesthetic LoRAs read +0.06 ± 0.10 against +0.29 ± 0.07
    # on 32 (BENCHMARKS.md, "DDPO on aesthetic and on CLIPScore at 40 iterations"); 96 images cost ~15 s a cell
    parser.add_argument(
        "--eval-seeds", type=int, default=32, help="evaluation seeds per held-out prompt (cells made with another number are refused)"
    )
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
