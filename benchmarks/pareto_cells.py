"""The Pareto benchmark's methods and cells (see ``benchmarks/pareto.py`` for the definitions).

The method catalogue (:func:`method_catalogue`: every method as ``parrot.train`` flags and the
held-out setting it is evaluated in) and a cell's identity on disk: its flags
(:func:`cell_flags`), its file under ``OUT/cells/`` (:func:`cell_path`), written atomically
(:func:`write_cell`) and read back only when made with exactly the same flags (:func:`read_cell`).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from parrot.train_config import TrainConfig, load_train_config
from parrot_base.config import ConfigError

__all__ = [
    "DDPO_ADVANTAGE",
    "DPOK_KL_WEIGHT",
    "GRPO_KL_WEIGHT",
    "QUICK",
    "Method",
    "base_overrides",
    "cell_flags",
    "cell_path",
    "grpo_catalogue",
    "method_catalogue",
    "method_config",
    "effective_selection",
    "flag_differences",
    "read_cell",
    "recorded_selection",
    "selection_made_with",
    "write_cell",
    "ws1_weights",
]

QUICK = {"iterations": 1, "seeds": [0], "eval_seeds": 2, "overrides": ["--sampling.prompts_per_process", "2", "--sampling.num_steps", "8"]}

#: DDPO's advantage (Black et al. 2023): r z-scored against its prompt's history (the per-prompt stat tracker), so that
#: it is centred. Not ``raw``: with one reward, raw is A = r itself, uncentred, which pushes up the likelihood of every
#: image with a positive score (measured in BENCHMARKS.md "Pareto fronts": it did not raise its own reward on v6)
DDPO_ADVANTAGE = ("--selection.reward_weighting", "normalised", "--selection.gradient_normalisation", "per_prompt")

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
    # the paper's raw weighting, pinned where a row's figures were made with it (the default before issue 13's switch
    # to normalised + group): the WS baselines' A_i = Σ_k w_k·z_B(r_k)_i, the "raw" Pareto row's r_k on P
    raw = ("--selection.reward_weighting", "raw")
    equal_weights = ("--selection.mode", "weighted", "--selection.weights", *map(str, [1.0 / k] * k))
    ws2 = (*equal_weights, *raw)
    in_group = ("--selection.reward_weighting", "normalised", "--selection.gradient_normalisation", "group")
    ws2_unscaled = (*equal_weights, "--selection.selection_normalisation", "none", *in_group)
    pareto = ("--selection.mode", "pareto")  # reward identifiers as the preset sets them; the default weighting
    pareto_z = in_group
    # an expander without identifiers samples K expansions per prompt instead of one per identifier:
    # the same images per prompt, and the expander's group-mean baseline still has expansions to compare
    expander_no_ids = ("--identifiers.enabled", "false", "--sampling.expansions_per_prompt", str(k))
    methods = [
        Method("base", t2i_alone, "plain_base"),
        Method("base+expander", ("--mode", "joint", *expander_no_ids), "untrained"),
        # diagnostic: the paper's evaluation prompt "<all ids>, ĉ" before any training
        Method("base+expander+ids", ("--mode", "joint", "--identifiers.enabled", "true", "--identifiers.evaluation", "all"), "untrained"),
    ]
    methods += [Method(f"ddpo:{r}", (*t2i_alone, "--selection.mode", f"single:{r}", *DDPO_ADVANTAGE), "trained") for r in reward_names]
    methods += [
        Method("ws1", (*t2i_alone, "--selection.mode", "weighted", "--selection.weights", *map(str, ws1_weights(k)), *raw), "trained"),
        Method("ws2", (*t2i_alone, *ws2), "trained"),
        # the weighted sum as Flow-GRPO-style trainers compute it: the rewards summed at their own scales, the sum
        # z-scored in its group (a reward with a small spread, e.g. CLIPScore, barely moves the sum)
        Method("ws2-unscaled", (*t2i_alone, *ws2_unscaled), "trained"),
        Method("parrot-t2i", ("--mode", "t2i", "--expander.model", "", *pareto), "trained"),
        # like-for-like with WS1/WS2 in the evaluation prompt too: no identifiers in training or evaluation; the paper's raw r_k
        Method("parrot-t2i-noids", (*t2i_alone, *pareto, *raw), "trained"),
        # the same with the normalised weighting (now the default, pinned as measured): z_g(r_k) on the group's front,
        # each reward in its group's units (the weighted sums z-score their rewards too; raw r_k adds rewards of
        # different scales, uncentred)
        Method("parrot-t2i-noids-z", (*t2i_alone, *pareto, *pareto_z), "trained"),
        # an extension, not the paper's Algorithm 1: the front decides what is pushed up, and the images off it keep
        # their below-mean entries (A = min(z_g(r_k), 0)), the push down a weighted sum keeps and Pareto's zero drops
        Method("parrot-t2i-noids-z-down", (*t2i_alone, *pareto, *pareto_z, "--selection.dominated", "push_down"), "trained"),
        Method("parrot-expander", ("--mode", "expander", *pareto), "trained"),
        Method("parrot", ("--mode", "joint", *pareto), "trained"),
        # joint without identifiers: like-for-like with ws2+expander (K expansions per prompt, c-only evaluation)
        Method("parrot-noids", ("--mode", "joint", *expander_no_ids, *pareto), "trained"),
        Method("parrot-no-pcg", ("--mode", "joint", *pareto, "--sampling.w1", "0", "--sampling.w2", str(guidance_scale)), "trained"),
        Method("ws2+expander", ("--mode", "joint", *expander_no_ids, *ws2), "trained"),
        Method("dpok", (*t2i_alone, *ws2, "--t2i.kl_weight", str(DPOK_KL_WEIGHT)), "trained"),
        Method("rwr", (*t2i_alone, *ws2, "--t2i.estimator", "rwr"), "trained"),
    ]
    return {m.name: m for m in methods}


#: β of the KL to the LoRA-off reference in the GRPO rows (Flow-GRPO's SD3.5 runs use 0.04 with rewards in [0, 1])
GRPO_KL_WEIGHT = 0.04


def grpo_catalogue(reward_names: list[str], hard: str) -> dict[str, Method]:
    """The GRPO methods (issue 16; ``--catalogue grpo``), all T2I only (no expander, no identifiers), on one
    group of G = ``sampling.images_per_prompt`` images per prompt:

    - ``base``            the model alone (no training);
    - ``ddpo:<hard>``     DDPO on the reward ``hard`` alone: each reward z-scored against the history of its
                          prompt (DDPO's per-prompt stat tracker), PPO-clipped ratio, no KL;
    - ``grpo:<hard>``     GRPO on it alone: z-scored within the group, PPO clip, KL to the LoRA-off reference;
    - ``grpo-ws``         GRPO on the equal-weight sum of the rewards (each z-scored over the batch so that
                          scales do not set the weights), the sum z-scored within the group (Flow-GRPO's
                          multi-reward advantage);
    - ``gdpo``            GDPO: each reward z-scored in its group, the equal-weight sum z-scored over the batch;
    - ``grpo-pareto``     Parrot's non-dominated set within each group, A = z_g(r_k) on it, 0 elsewhere.
    """
    if hard not in reward_names:
        raise SystemExit(f"--hard {hard!r} is not among the rewards {reward_names}")
    t2i_alone = ("--mode", "t2i", "--expander.model", "", "--identifiers.enabled", "false")
    shared = ("--t2i.estimator", "is", "--selection.reward_weighting", "normalised")
    grpo = (*t2i_alone, *shared, "--selection.gradient_normalisation", "group", "--t2i.kl_weight", str(GRPO_KL_WEIGHT))
    methods = [
        Method("base", t2i_alone, "plain_base"),
        Method(
            f"ddpo:{hard}",
            (*t2i_alone, "--t2i.estimator", "is", *DDPO_ADVANTAGE, "--t2i.kl_weight", "0", "--selection.mode", f"single:{hard}"),
            "trained",
        ),
        Method(f"grpo:{hard}", (*grpo, "--selection.mode", f"single:{hard}"), "trained"),
        Method("grpo-ws", (*grpo, "--selection.mode", "weighted", "--selection.selection_normalisation", "batch"), "trained"),
        Method("gdpo", (*grpo, "--selection.mode", "gdpo"), "trained"),
        Method("grpo-pareto", (*grpo, "--selection.mode", "pareto"), "trained"),
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


#: the selection settings of cells written before cells recorded them: the defaults until issue 13
SELECTION_BEFORE_RECORD = {"reward_weighting": "raw", "gradient_normalisation": "batch"}


def effective_selection(reward_weighting: str, gradient_normalisation: str) -> dict[str, str]:
    """The weighting settings as the advantages see them: ``raw`` ignores ``gradient_normalisation``."""
    return {"reward_weighting": reward_weighting, "gradient_normalisation": gradient_normalisation if reward_weighting != "raw" else "-"}


def selection_made_with(config: TrainConfig) -> dict[str, str]:
    """The weighting a trained cell's advantages depend on, as resolved (flags and defaults), so that a change of
    default cannot pass an old cell off as a new one with the same flags."""
    return effective_selection(config.selection.reward_weighting, config.selection.gradient_normalisation)


def recorded_selection(cell: dict) -> dict[str, str]:
    """A cell's weighting: as recorded, or for an older cell :data:`SELECTION_BEFORE_RECORD` under its flags."""
    if "selection" in cell:
        return cell["selection"]
    flags, made = cell.get("flags", []), dict(SELECTION_BEFORE_RECORD)
    for flag, value in zip(flags, flags[1:]):
        if flag.startswith("--selection.") and flag.removeprefix("--selection.") in made:
            made[flag.removeprefix("--selection.")] = value
    return effective_selection(**made)


def _options(flags: list[str]) -> dict[str, list[str]]:
    """``--name v1 v2 … --other …`` as {--name: [v1, v2, …]}, in order; a repeated option keeps its last values."""
    options: dict[str, list[str]] = {}
    name = ""
    for token in flags:
        if token.startswith("--"):
            name = token
            options[name] = []
        else:
            options.setdefault(name, []).append(token)
    return options


def flag_differences(made: list[str], now: list[str]) -> str:
    """The options on which two cells' flags differ, e.g. "--evaluation.seeds: 0 … 7 there, 0 … 31 now"; the whole
    list when they differ only in order."""
    there, here = _options(made), _options(now)
    differing = [name for name in {**there, **here} if there.get(name) != here.get(name)]
    if not differing:
        return f"the same options in another order: {shlex.join(made)}"

    def values(options: dict[str, list[str]], name: str) -> str:
        if name not in options:
            return "absent"
        vals = [shlex.quote(v) for v in options[name]]
        return " ".join(vals if len(vals) <= 4 else [vals[0], "…", vals[-1]]) or "(no value)"

    return "; ".join(f"{name}: {values(there, name)} there, {values(here, name)} now" for name in differing)


def read_cell(path: Path, flags: list[str], selection: dict[str, str] | None = None) -> dict | None:
    """A finished cell made with exactly ``flags`` (and, when trained, ``selection``: :func:`selection_made_with`);
    None when there is none; refuses one made otherwise."""
    if not path.is_file():
        return None
    cell = json.loads(path.read_text(encoding="utf-8"))
    if cell.get("flags") != flags:
        raise SystemExit(f"{path} was made with other parrot.train flags ({flag_differences(cell.get('flags', []), flags)}); "
                         "remove it or use another --out")  # fmt: skip
    made = recorded_selection(cell)
    if selection is not None and cell.get("setting") == "trained" and made != selection:
        raise SystemExit(f"{path} was made with selection {made}, not the {selection} its flags give now (the defaults "
                         "changed in issue 13); remove it or use another --out")  # fmt: skip
    return cell
