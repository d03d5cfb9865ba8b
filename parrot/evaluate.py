"""``python -m parrot.evaluate``: Parrot's Table 1 for one or more methods over a prompt set (PartiPrompts by default).

Every method draws ``--images_per_prompt`` images of every original prompt c, image j from its own
generator seeded with ``seed + j`` (the same noise for every method, so rows pair), and every
reward scores every image against c (never ĉ). A method is ``NAME=SOURCE``:

- a ``parrot.train`` run directory: its pipeline (from the run's saved config), its trained LoRA
  (``final/lora``), its expander (``final/expander``, when the run trained one) and the identifiers
  of all its rewards, with the training config's rewards as the default ``--rewards``;
- a pipeline (hub id, local directory or ``builtin:tiny``), with an expander from ``--expanders NAME=DIR``.

With an expander, ĉ is the best of ``--num_beams`` beams (``--expansion_decoding beam``, as Promptist
evaluates) or sampled (``sample``, one per image) and guidance is prompt-centred (``--w1``, ``--w2``);
without one, CFG on c (``--guidance_scale``); ``--guidance`` forces either.

Outputs in ``--out DIR``: ``results.jsonl`` (one line per finished (method, prompt), appended and
flushed as each batch of prompts is scored), ``settings.json`` (what the results depend on),
``table.md`` and ``table.json`` (:mod:`parrot.table1`). Run the same command again after an interruption
and finished (method, prompt) pairs are skipped; a larger ``--max_prompts`` or a new method adds to
them; changed settings are refused (``--overwrite`` starts again).

    python -m parrot.evaluate --methods base=runwayml/stable-diffusion-v1-5 parrot=runs/parrot-sd15 \\
        --prompts partiprompts --images_per_prompt 4 --device cuda --dtype float16 --per_category --out runs/table1
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from parrot.evaluation import EvaluationSamples
from parrot.generate import GenerateConfig, guidance_of, load_generation_policy, parse_reward_list, resolve_identifiers
from parrot.identifiers import with_identifiers
from parrot.models import build_evaluator, resolve_reward_settings, resolve_world, with_world
from parrot.prompts import PromptRecord, read_prompt_records
from parrot.rollout import expanded_texts
from parrot.run_dir import RUN_RECORD, lora_training_config, open_run
from parrot.table1 import format_table1, table1_record
from parrot_base.cli import UsageError, run_cli
from parrot_base.config import parse_config
from prompt_expander.config import ExpanderSamplingConfig
from prompt_expander.expander import PromptExpander
from rewards.base import expansion_metadata

__all__ = [
    "EvaluateConfig",
    "Method",
    "parse_methods",
    "select_prompts",
    "run_settings",
    "open_results",
    "read_results",
    "run_evaluation",
    "main",
]

logger = logging.getLogger(__name__)

RESULTS, SETTINGS, TABLE_MD, TABLE_JSON = "results.jsonl", "settings.json", "table.md", "table.json"


@dataclass
class EvaluateConfig:
    """Parrot's Table 1: generate over a prompt set with fixed seeds, score against the original prompts, tabulate."""

    methods: tuple[str, ...] = field(
        default=(),
        metadata={"help": "rows, NAME=SOURCE each: a parrot.train run directory, or a pipeline (hub id, directory, builtin:tiny)"},
    )
    expanders: tuple[str, ...] = field(default=(), metadata={"help": "NAME=EXPANDER (directory or hub id) for pipeline methods"})
    prompts: str = field(
        default="partiprompts",
        metadata={
            "help": "prompt source: a shipped set (partiprompts, simple_animals, diffusiondb), a file or a dataset; '{world}' allowed"
        },
    )
    prompts_column: str = field(default="", metadata={"help": "prompt column of a datasets source ('' = prompt, Prompt, text, caption)"})
    prompts_split: str = field(default="train", metadata={"help": "split of a datasets source"})
    max_prompts: int = field(default=0, metadata={"help": "the first N prompts (after --categories; 0: all)"})
    categories: tuple[str, ...] = field(default=(), metadata={"help": "keep only prompts of these categories (PartiPrompts' Category)"})
    per_category: bool = field(default=False, metadata={"help": "also write one table per category"})
    images_per_prompt: int = field(default=4, metadata={"help": "N images per prompt; image j uses seed + j for every method"})
    seed: int = field(default=0, metadata={"help": "seed of image 0 of every prompt"})
    rewards: tuple[str, ...] = field(
        default=(), metadata={"help": "rewards, 'a,b' or 'a b' (empty: the first run method's training rewards)"}
    )
    reward_settings: dict[str, dict[str, Any]] = field(
        default_factory=dict, metadata={"help": "per-reward settings {name: {key: value}} (YAML only), as in training configs"}
    )
    world: str = field(default="", metadata={"help": "shapes world that '{world}' stands for ('' = the committed shapes/world)"})
    guidance: Literal["auto", "prompt_centred", "cfg"] = field(
        default="auto",
        metadata={"help": "'prompt_centred' (w1, w2), 'cfg' (guidance_scale), 'auto': centred iff the method has an expander"},
    )
    w1: float = field(default=5.0, metadata={"help": "weight of the original prompt c (prompt-centred guidance)"})
    w2: float = field(default=5.0, metadata={"help": "weight of the expanded prompt ĉ (prompt-centred guidance)"})
    guidance_scale: float = field(default=7.5, metadata={"help": "CFG scale"})
    expansion_decoding: Literal["beam", "sample"] = field(
        default="beam", metadata={"help": "ĉ: best of num_beams beams, or sampled per image"}
    )
    num_beams: int = field(default=4, metadata={"help": "beams of the expander (beam decoding)"})
    expander_temperature: float = field(default=1.0, metadata={"help": "expander temperature (sample decoding)"})
    num_steps: int = field(default=50, metadata={"help": "DDIM steps"})
    eta: float = field(default=0.0, metadata={"help": "DDIM η (0: deterministic given the seed)"})
    dtype: str = field(default="float32", metadata={"help": "model dtype: float32, float16, bfloat16"})
    device: str = field(default="cpu", metadata={"help": "torch device"})
    batch_size: int = field(default=8, metadata={"help": "images per sampling call (whole prompts)"})
    out: Path = field(default=Path("runs/evaluate"), metadata={"help": "output directory (resumed when it holds results)"})
    overwrite: bool = field(
        default=False, metadata={"help": "delete the earlier results, settings and tables in --out (nothing else) and start again"}
    )

    def __post_init__(self) -> None:
        for name in ("images_per_prompt", "num_steps", "num_beams", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.max_prompts < 0:
            raise ValueError(f"max_prompts={self.max_prompts} must be >= 0")
        if not self.methods:
            raise ValueError("--methods is empty: give NAME=RUN_DIR or NAME=MODEL for each row, e.g. --methods base=builtin:tiny")


# ----- inputs -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Method:
    """One row: its pipeline, LoRA ('' = none), expander ('' = ĉ = c) and, for a run, its training config."""

    name: str
    model: str
    lora: str = ""
    expander: str = ""
    training: dict | None = None

    def settings(self) -> dict[str, str]:
        return {"model": self.model, "lora": self.lora, "expander": self.expander}


def _named(items: tuple[str, ...], option: str) -> dict[str, str]:
    named = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise UsageError(f"{option} {item!r}: write NAME=SOURCE (e.g. base=builtin:tiny or parrot=runs/parrot)")
        if name in named:
            raise UsageError(f"{option}: the name {name!r} is given twice")
        named[name.strip()] = value.strip()
    return named


def _run_method(name: str, root: Path) -> Method:
    run = open_run(root)
    if not run.final_lora.is_dir():
        raise UsageError(f"--methods {name}={root}: the run has no final/lora (not finished?); evaluate a finished run")
    training = lora_training_config(run.final_lora)
    if not training:
        raise UsageError(f"--methods {name}={root}: no valid checkpoint holds the run's training config")
    pipeline = with_world(training["model"]["pipeline"], resolve_world(training.get("world", "")))
    expander = str(run.final_expander) if run.final_expander.is_dir() else ""
    return Method(name, pipeline, str(run.final_lora), expander, training)


def parse_methods(config: EvaluateConfig) -> list[Method]:
    """The rows of ``--methods`` (run directories or pipelines), with ``--expanders`` attached to pipelines."""
    world = resolve_world(config.world)
    expanders = {k: with_world(v, world) for k, v in _named(config.expanders, "--expanders").items()}
    methods = []
    for name, source in _named(config.methods, "--methods").items():
        source = with_world(source, world)
        if (Path(source) / RUN_RECORD).is_file() or (Path(source) / "final").is_dir():
            if name in expanders:
                raise UsageError(f"--expanders {name}: method {name!r} is a run directory, which brings its own expander")
            methods.append(_run_method(name, Path(source)))
        else:
            methods.append(Method(name, source, expander=expanders.get(name, "")))
    unknown = sorted(set(expanders) - {m.name for m in methods})
    if unknown:
        raise UsageError(f"--expanders {unknown}: no method of that name in --methods")
    return methods


def select_prompts(config: EvaluateConfig) -> list[PromptRecord]:
    """The prompts evaluated: the source's, filtered by ``--categories``, de-duplicated, the first ``--max_prompts``."""
    source = with_world(config.prompts, resolve_world(config.world))
    records = read_prompt_records(source, column=config.prompts_column, split=config.prompts_split)
    if config.categories:
        known = sorted({r.category for r in records})
        missing = sorted(set(config.categories) - set(known))
        if missing:
            raise UsageError(f"--categories {missing}: not in {config.prompts!r}; its categories: {known}")
        records = [r for r in records if r.category in config.categories]
    records = list({r.prompt: r for r in reversed(records)}.values())[::-1]  # first occurrence of each prompt
    return records[: config.max_prompts] if config.max_prompts else records


def reward_choice(config: EvaluateConfig, methods: list[Method]) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """(reward names, their settings): ``--rewards`` with ``--reward_settings``, else the first run's training rewards."""
    if config.rewards:
        return parse_reward_list(config.rewards), with_world(dict(config.reward_settings), resolve_world(config.world))
    training = next((m.training for m in methods if m.training), None)
    if training is None:
        raise UsageError("--rewards is empty and no method is a run directory to take them from: give --rewards a,b,c")
    world = resolve_world(training.get("world", ""))
    names = parse_reward_list(training["rewards"]["names"], "the run's rewards.names")
    return names, with_world({n: dict(training["rewards"].get("settings", {}).get(n, {})) for n in names}, world)


# ----- resumable results ------------------------------------------------------------------------
def run_settings(config: EvaluateConfig, methods: list[Method], rewards: dict[str, dict[str, Any]]) -> dict:
    """What a (method, prompt) result depends on: shared settings and each method's models."""
    shared = ("images_per_prompt", "seed", "guidance", "w1", "w2", "guidance_scale", "expansion_decoding", "num_beams",
              "expander_temperature", "num_steps", "eta", "dtype")  # fmt: skip
    common = {name: getattr(config, name) for name in shared} | {"rewards": rewards}
    return {"common": common, "methods": {m.name: m.settings() for m in methods}}


def _changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    return [f"{prefix}{k}: {old.get(k)!r} → {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def open_results(out: Path, settings: dict, overwrite: bool) -> dict[tuple[str, str], dict]:
    """Finished (method, prompt) → its result line; refuses results of other settings, records the settings."""
    if overwrite:  # this command's files only, never the rest of a directory
        for name in (RESULTS, SETTINGS, TABLE_MD, TABLE_JSON):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    settings = json.loads(json.dumps(settings))  # as JSON reads it back (tuples → lists)
    saved_path = out / SETTINGS
    if saved_path.is_file():
        saved = json.loads(saved_path.read_text(encoding="utf-8"))
        changed = _changes(saved["common"], settings["common"])
        for name in set(saved["methods"]) & set(settings["methods"]):
            changed += _changes(saved["methods"][name], settings["methods"][name], f"method {name} ")
        if changed:
            raise UsageError(f"{out} holds results of other settings ({'; '.join(changed)}): use another --out, or --overwrite")
        settings["methods"] = saved["methods"] | settings["methods"]
    saved_path.write_text(json.dumps(settings, indent=1) + "\n", encoding="utf-8")
    return read_results(out)


def read_results(out: Path) -> dict[tuple[str, str], dict]:
    """(method, prompt) → its line of ``results.jsonl`` ({} before the first)."""
    results = out / RESULTS
    if not results.is_file():
        return {}
    rows = (json.loads(line) for line in results.read_text(encoding="utf-8").splitlines() if line.strip())
    return {(row["method"], row["prompt"]): row for row in rows}


# ----- generation -------------------------------------------------------------------------------
def generation_config(config: EvaluateConfig, method: Method) -> GenerateConfig:
    """The ``parrot.generate`` settings of one method (its policy, LoRA, identifiers and guidance come from there)."""
    return GenerateConfig(
        prompts_file=config.prompts, model=method.model, dtype=config.dtype, device=config.device,
        lora=(method.lora,) if method.lora else (), expander=method.expander,
        identifiers=("auto",) if method.lora else ("none",), guidance=config.guidance, w1=config.w1, w2=config.w2,
        guidance_scale=config.guidance_scale, prompt_weighting=False, num_steps=config.num_steps, eta=config.eta,
        seed=config.seed, images_per_prompt=config.images_per_prompt, batch_size=config.batch_size,
    )  # fmt: skip


def expansions(config: EvaluateConfig, expander: PromptExpander | None, prompts: list[str]) -> list[str]:
    """ĉ per image (prompt-major): one beam-searched ĉ per prompt repeated, or one sample per image; c without an expander."""
    n = config.images_per_prompt
    if expander is None:
        return [p for p in prompts for _ in range(n)]
    if config.expansion_decoding == "beam":
        return [e for e in expanded_texts(prompts, expander.beam_search(prompts, num_beams=config.num_beams)) for _ in range(n)]
    texts = []
    for prompt in prompts:  # seeded per prompt: the same ĉ whichever prompts share its batch (and after a resume)
        sampled = expander.sample([prompt], n, temperature=config.expander_temperature, generator_seed=config.seed)
        texts += expanded_texts(sampled.prompts, sampled)
    return texts


def evaluate_method(config: EvaluateConfig, method: Method, todo: list[PromptRecord], evaluator, results_file) -> None:
    """Generate and score ``todo`` for ``method``, appending one result line per prompt as each batch finishes."""
    generation = generation_config(config, method)
    policy = load_generation_policy(generation)
    identifiers, template = resolve_identifiers(generation)
    guidance = guidance_of(generation)
    expander = PromptExpander.from_pretrained(method.expander, ExpanderSamplingConfig()).to(config.device) if method.expander else None
    n, per_batch = config.images_per_prompt, max(1, config.batch_size // config.images_per_prompt)
    with tqdm(total=len(todo), desc=f"evaluating {method.name}", unit="prompt") as bar:
        for start in range(0, len(todo), per_batch):
            records = todo[start : start + per_batch]
            prompts = [r.prompt for r in records]
            expanded = expansions(config, expander, prompts)
            originals = [p for p in prompts for _ in range(n)]
            conditioned = [with_identifiers(e, identifiers, template) for e in expanded]
            generators = [torch.Generator(device=policy.device).manual_seed(config.seed + i % n) for i in range(len(originals))]
            with torch.no_grad():
                images = policy.sample(conditioned, original_prompts=originals, guidance=guidance, num_inference_steps=config.num_steps,
                                       eta=config.eta, generator=generators, compute_log_probs=False).images  # fmt: skip
            scores = evaluator(images, originals, expansion_metadata(expanded)).scores.double().cpu()
            for i, record in enumerate(records):
                rows = slice(i * n, (i + 1) * n)
                line = {"method": method.name, "prompt": record.prompt, "category": record.category,
                        "expanded_prompts": expanded[rows], "conditioned_prompt": conditioned[i * n],
                        "seeds": [config.seed + j for j in range(n)],
                        "rewards": {name: scores[rows, k].tolist() for k, name in enumerate(evaluator.names)}}  # fmt: skip
                results_file.write(json.dumps(line) + "\n")
            results_file.flush()
            bar.update(len(records))


# ----- the table --------------------------------------------------------------------------------
def method_samples(done: dict[tuple[str, str], dict], method: str, prompts: list[str], names: list[str]) -> EvaluationSamples:
    """One method's images of ``prompts`` (in that order) from its result lines."""
    lines = [done[(method, p)] for p in prompts]
    scores = torch.tensor([[row["rewards"][name][j] for name in names] for row in lines for j in range(len(row["seeds"]))])
    return EvaluationSamples(
        reward_names=names,
        prompts=[row["prompt"] for row in lines for _ in row["seeds"]],
        expanded_prompts=[e for row in lines for e in row["expanded_prompts"]],
        seeds=[s for row in lines for s in row["seeds"]],
        scores=scores.double(),
        setting=method,
    )


def run_evaluation(config: EvaluateConfig) -> dict:
    """Evaluate every method on the selected prompts (resuming), write table.md / table.json; returns table.json."""
    methods = parse_methods(config)
    records = select_prompts(config)
    names, settings = reward_choice(config, methods)
    done = open_results(config.out, run_settings(config, methods, settings), config.overwrite)
    resolved = resolve_reward_settings(names, settings, config.out / "builtin", config.device, build=True)
    with build_evaluator(resolved) as evaluator, (config.out / RESULTS).open("a", encoding="utf-8") as results_file:
        for method in methods:
            todo = [r for r in records if (method.name, r.prompt) not in done]
            if todo:
                evaluate_method(config, method, todo, evaluator, results_file)
    done = read_results(config.out)
    prompts = [r.prompt for r in records]
    samples = {m.name: method_samples(done, m.name, prompts, names) for m in methods}
    record = table1_record(samples, {r.prompt: r.category for r in records} if config.per_category else None)
    seeds = list(range(config.seed, config.seed + config.images_per_prompt))
    record |= {"prompts": config.prompts, "prompt_count": len(prompts), "images_per_prompt": config.images_per_prompt, "seeds": seeds}
    record["settings"] = run_settings(config, methods, settings)
    (config.out / TABLE_JSON).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    (config.out / TABLE_MD).write_text(format_table1(record), encoding="utf-8")
    return record


def main(argv: list[str] | None = None) -> dict:
    config = parse_config(EvaluateConfig, argv)
    record = run_evaluation(config)
    sys.stdout.write(format_table1(record))
    sys.stdout.write(f"wrote {TABLE_MD}, {TABLE_JSON} and {RESULTS} to {config.out}\n")
    return record


if __name__ == "__main__":
    run_cli(main)
