"""Held-out evaluation of a ``parrot.train`` run, and the statistics every table of the project uses.

**Settings** (what is sampled; :data:`SETTINGS`). Every setting draws image j of evaluation seed s
from the same initial noise (seeded by ``derived_seed(s, EVAL, j)``), so rows of two settings pair:

- ``plain_base``  the T2I model alone: LoRA off, no expander (ĉ = c), no identifiers, classifier-free
  guidance on c at ``sampling.guidance_scale``;
- ``untrained``   the untrained Parrot start: LoRA off, the expander at its SFT weights, the run's
  guidance (prompt-centred w1/w2 with an expander) and evaluation identifiers; ``"before"`` in
  ``evaluation.json``;
- ``trained``     the same with the trained weights; ``"after"`` in ``evaluation.json``.

Held-out expansions are near-greedy by default (``evaluation.expansion_decoding: beam``: the best
of ``evaluation.num_beams`` beams, as Promptist evaluates, the same ĉ for every seed) or sampled at
``evaluation.expander_temperature`` (``sample``: one draw per seed).

**Statistics.** R is a setting's (N, K) reward matrix, N = held-out prompts × seeds.

- paired Δ (:func:`paired_deltas`): per unit u, d_u = after_u − before_u; Δ = mean_u d_u, SE =
  ``scipy.stats.sem(d)`` (ddof 1). The unit is an image (``per="image"``, N pairs) or a held-out
  prompt (``per="prompt"``: each prompt's mean over its seeds first, P pairs). Per-prompt is the
  headline: images of one prompt are not independent draws of the prompt distribution.
- normalisation (:func:`minmax_bounds`): lo_k / hi_k = min / max of reward k over the union of the
  per-image scores of ALL compared rows (settings or methods); R̃[:, k] = (R[:, k] − lo_k) /
  (hi_k − lo_k), a reward constant over the union maps to 0.
- Table-1 average (:func:`table1_averages`, Parrot's Table 1 "average"): per row, mean over the K
  rewards of mean_i R̃[i, k] (= the normalised mean reward, averaged over rewards).
- hypervolume (:func:`per_prompt_hypervolume`): HV (``moocore.hypervolume``, maximisation) of the P
  per-prompt mean vectors in R̃ space against r_ref = (−δ, …, −δ) — never of the pooled images,
  whose spread mostly measures noise seeds rather than what a prompt gets on average.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import moocore
import numpy as np
import torch
from scipy.stats import sem

from parrot.identifiers import prepended_template, with_identifiers
from parrot.rollout import expanded_texts
from parrot.seeding import EVAL, derived_seed
from parrot.selection import non_dominated_mask
from rewards.base import expansion_metadata
from t2i import Guidance

if TYPE_CHECKING:
    from parrot.parts import TrainingParts

__all__ = [
    "SETTINGS",
    "EvaluationSamples",
    "PairedDelta",
    "TRAINED_PARTS",
    "held_out_samples",
    "held_out_samples_of_parts",
    "held_out_expansions",
    "paired_deltas",
    "paired_table1_delta",
    "per_prompt_means",
    "minmax_bounds",
    "normalise",
    "reference_point",
    "front_hypervolume",
    "per_prompt_hypervolume",
    "table1_averages",
    "evaluation_record",
    "format_table",
]

#: setting → its key in evaluation.json (``before`` / ``after`` kept from the two-setting schema)
SETTINGS = {"plain_base": "plain_base", "untrained": "before", "trained": "after"}
#: the parts a run trains: the T2I LoRA, the expander (its untrained state is the SFT model) and the identifier tokens
TRAINED_PARTS = ("t2i", "expander", "tokens")


@dataclass
class EvaluationSamples:
    """The held-out images of one setting: row j is prompt ``prompts[j]`` sampled with seed ``seeds[j]``."""

    reward_names: list[str]
    prompts: list[str]  # original prompts c
    expanded_prompts: list[str]  # ĉ (= c without an expander)
    seeds: list[int]
    scores: torch.Tensor  # R (N, K), float64
    images: torch.Tensor | None = None  # (N, 3, H, W) in [0, 1]; None when read back from JSON
    setting: str = ""

    def means(self) -> dict[str, float]:
        return {name: float(self.scores[:, k].mean()) for k, name in enumerate(self.reward_names)}

    def to_json(self) -> dict:
        """Everything but the images, as JSON-ready lists."""
        return {
            "setting": self.setting,
            "reward_names": self.reward_names,
            "prompts": self.prompts,
            "expanded_prompts": self.expanded_prompts,
            "seeds": self.seeds,
            "scores": self.scores.tolist(),
        }

    @classmethod
    def from_json(cls, data: Mapping) -> EvaluationSamples:
        scores = torch.as_tensor(np.asarray(data["scores"], dtype=float).reshape(len(data["prompts"]), len(data["reward_names"])))
        expanded = data.get("expanded_prompts", data["prompts"])
        return cls(list(data["reward_names"]), list(data["prompts"]), list(expanded), list(data["seeds"]),
                   scores, None, str(data.get("setting", "")))  # fmt: skip


# ----- sampling -----------------------------------------------------------------------------------
def held_out_expansions(parts: TrainingParts, seed: int) -> list[str]:
    """ĉ per held-out prompt for evaluation seed ``seed`` (c itself without an expander)."""
    config = parts.config.evaluation
    if parts.expander is None:
        return list(parts.eval_prompts)
    if config.expansion_decoding == "beam":
        expansions = parts.expander.beam_search(parts.eval_prompts, num_beams=config.num_beams)
    else:
        expansions = parts.expander.sample(
            parts.eval_prompts, temperature=config.expander_temperature or None, generator_seed=derived_seed(seed, EVAL)
        )
    return expanded_texts(parts.eval_prompts, expansions)


def evaluation_eta(parts: TrainingParts) -> float:
    """η of held-out sampling: ``evaluation.eta``, or the training ``sampling.eta`` when it is negative."""
    eta = parts.config.evaluation.eta
    return parts.config.sampling.eta if eta < 0 else eta


def held_out_samples(parts: TrainingParts, setting: str) -> EvaluationSamples:
    """Every held-out image (prompt × evaluation seed, fixed noise) of ``setting`` with its rewards."""
    if setting not in SETTINGS:
        raise ValueError(f"setting={setting!r}: use one of {', '.join(SETTINGS)}")
    trained = TRAINED_PARTS if setting == "trained" else ()
    return held_out_samples_of_parts(parts, trained, setting, plain=setting == "plain_base")


@torch.no_grad()
def held_out_samples_of_parts(parts: TrainingParts, trained: Collection[str], label: str, plain: bool = False) -> EvaluationSamples:
    """The held-out images with only the parts in ``trained`` (of :data:`TRAINED_PARTS`) as trained, the rest at
    their start (LoRA off, the SFT expander, the identifiers' start tokens); ``plain``: c itself under CFG, no
    expander and no identifiers. Same noise for every choice, so any two pair image by image."""
    unknown = set(trained) - set(TRAINED_PARTS)
    if unknown:
        raise ValueError(f"trained parts {sorted(unknown)}: use some of {', '.join(TRAINED_PARTS)}")
    prompts = parts.eval_prompts
    lora = parts.policy.adapters_disabled() if "t2i" not in trained else contextlib.nullcontext()
    sft = parts.expander.using_reference() if "expander" not in trained and parts.expander is not None else contextlib.nullcontext()
    tokens = parts.identifier_tokens
    start = tokens.at_start() if "tokens" not in trained and tokens is not None else contextlib.nullcontext()
    guidance = Guidance.cfg(parts.config.sampling.guidance_scale) if plain else parts.guidance
    template = prepended_template(parts.config.identifiers)
    columns, expanded_all, seeds, images = [], [], [], []
    with lora, sft, start:
        expanded = None
        for seed in parts.config.evaluation.seeds:
            if plain:
                expanded = list(prompts)
            elif expanded is None or parts.config.evaluation.expansion_decoding == "sample":
                expanded = held_out_expansions(parts, seed)  # beam: one ĉ per prompt for every seed
            conditioning = expanded if plain else [with_identifiers(e, parts.eval_identifiers, template) for e in expanded]
            generators = [torch.Generator(parts.device).manual_seed(derived_seed(seed, EVAL, i)) for i in range(len(prompts))]
            trajectory = parts.sample_policy(conditioning, prompts, generators, guidance, eta=evaluation_eta(parts))
            columns.append(parts.evaluator(trajectory.images, prompts, expansion_metadata(expanded)).scores)
            expanded_all += expanded
            seeds += [seed] * len(prompts)
            images.append(trajectory.images.cpu())
    return EvaluationSamples(
        reward_names=list(parts.reward_names),
        prompts=[p for _ in parts.config.evaluation.seeds for p in prompts],
        expanded_prompts=expanded_all,
        seeds=seeds,
        scores=torch.cat(columns).cpu().double(),
        images=torch.cat(images),
        setting=label,
    )


# ----- paired differences ------------------------------------------------------------------------
@dataclass(frozen=True)
class PairedDelta:
    """One reward's change between two paired settings of the same held-out images."""

    before: float  # mean over units before
    after: float  # mean over units after
    delta: float  # mean over units of after − before
    paired_se: float  # scipy.stats.sem of the per-unit differences (ddof 1); nan for fewer than 2 units
    count: int  # units paired: images, or prompts


def per_prompt_means(samples: EvaluationSamples) -> tuple[list[str], np.ndarray]:
    """(prompts in first-appearance order, (P, K) mean reward of each prompt over its images)."""
    scores = np.asarray(samples.scores, dtype=float)
    order = list(dict.fromkeys(samples.prompts))
    rows = {p: [] for p in order}
    for prompt, row in zip(samples.prompts, scores):
        rows[prompt].append(row)
    return order, np.stack([np.mean(rows[p], axis=0) for p in order])


def paired_deltas(before: EvaluationSamples, after: EvaluationSamples, per: str = "prompt") -> dict[str, PairedDelta]:
    """Per reward, after − before over paired units (``per``: ``image`` or ``prompt``); see the module docstring."""
    if before.prompts != after.prompts or before.seeds != after.seeds or before.reward_names != after.reward_names:
        raise ValueError("the two settings hold different held-out prompts, seeds or rewards: their images cannot be paired")
    if per == "image":
        b, a = np.asarray(before.scores, dtype=float), np.asarray(after.scores, dtype=float)
    elif per == "prompt":
        (_, b), (_, a) = per_prompt_means(before), per_prompt_means(after)
    else:
        raise ValueError(f"per={per!r}: use 'image' or 'prompt'")
    d = a - b
    return {
        name: PairedDelta(
            float(b[:, k].mean()),
            float(a[:, k].mean()),
            float(d[:, k].mean()),
            float(sem(d[:, k])) if len(d) > 1 else float("nan"),
            int(len(d)),
        )  # fmt: skip
        for k, name in enumerate(before.reward_names)
    }


# ----- normalisation, Table-1 average, hypervolume ---------------------------------------------------
def minmax_bounds(matrices: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
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
    """r_ref = (−offset, …) in normalised space (every point of the run strictly dominates it)."""
    if not offset > 0:
        raise ValueError(f"ref-offset={offset} must be > 0 so that the worst point still adds volume")
    return np.full(num_rewards, -float(offset))


def front_hypervolume(normalised: np.ndarray, reference: np.ndarray) -> tuple[float, int]:
    """(HV of the non-dominated rows of ``normalised`` against ``reference`` (maximisation), size of that front)."""
    points = np.asarray(normalised, dtype=float)
    front = points[non_dominated_mask(torch.from_numpy(points)).numpy()]
    # moocore counts only the part of each box above the reference point
    return float(moocore.hypervolume(front, ref=reference, maximise=True)), int(len(front))


def per_prompt_hypervolume(samples: EvaluationSamples, lo: np.ndarray, hi: np.ndarray, reference: np.ndarray) -> tuple[float, int]:
    """(HV of the per-prompt mean vectors in R̃ space, number of them on the front)."""
    return front_hypervolume(normalise(per_prompt_means(samples)[1], lo, hi), reference)


def table1_averages(rows: Mapping[str, np.ndarray], bounds: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, float]:
    """Parrot's Table-1 average per row: mean over rewards of the row's mean min–max normalised reward.

    ``bounds`` default to :func:`minmax_bounds` over the union of the rows' per-image scores.
    """
    lo, hi = bounds if bounds is not None else minmax_bounds(list(rows.values()))
    return {name: float(normalise(matrix, lo, hi).mean(0).mean()) for name, matrix in rows.items()}


def paired_table1_delta(before: np.ndarray, after: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[float, float]:
    """(mean, paired SE over units) of after − before on the Table-1 average: ``before`` and ``after`` are (units, K)
    reward means of the same units (prompts), each reward min–max normalised by (lo, hi), averaged over rewards;
    the SE is ``scipy.stats.sem`` of the per-unit differences (nan for one unit)."""
    d = normalise(after, lo, hi).mean(1) - normalise(before, lo, hi).mean(1)
    return float(d.mean()), float(sem(d)) if len(d) > 1 else float("nan")


# ----- the run's evaluation.json -------------------------------------------------------------------------
def _finite_or_none(value: float) -> float | None:
    return value if np.isfinite(value) else None


def evaluation_record(samples: Mapping[str, EvaluationSamples], ref_offset: float = 0.1) -> dict:
    """``evaluation.json`` of a run from its settings' samples (keys ``plain_base``, ``untrained``, ``trained``).

    Schema: ``before`` / ``after`` / ``plain_base``: reward → mean; ``deltas``: "after-before" and
    "after-plain_base" → per ("prompt", "image") → reward → {before, after, delta, paired_se, count};
    ``table1_average`` and ``hypervolume`` (per-prompt means) per key, with the ``normalisation``
    bounds and ``reference_point`` they share; ``images``: key → :meth:`EvaluationSamples.to_json`.
    """
    keyed = {SETTINGS[s]: samples[s] for s in SETTINGS if s in samples}
    scores = {key: np.asarray(s.scores, dtype=float) for key, s in keyed.items()}
    lo, hi = minmax_bounds(list(scores.values()))
    reference = reference_point(len(next(iter(keyed.values())).reward_names), ref_offset)
    record: dict = {key: s.means() for key, s in keyed.items()}
    record["deltas"] = {
        f"after-{base}": {
            per: {name: {k: (_finite_or_none(v) if isinstance(v, float) else v) for k, v in asdict(d).items()}
                  for name, d in paired_deltas(keyed[base], keyed["after"], per).items()}
            for per in ("prompt", "image")
        }
        for base in ("before", "plain_base") if base in keyed and "after" in keyed
    }  # fmt: skip
    record["table1_average"] = table1_averages(scores, (lo, hi))
    record["hypervolume"] = {key: per_prompt_hypervolume(s, lo, hi, reference)[0] for key, s in keyed.items()}
    record["normalisation"] = {"low": lo.tolist(), "high": hi.tolist(), "reference_point": reference.tolist(),
                               "kind": "min-max per reward over the union of the settings' held-out images"}  # fmt: skip
    record["images"] = {key: s.to_json() for key, s in keyed.items()}
    return record


def format_table(record: dict) -> str:
    """The held-out table (markdown): plain base | untrained | trained, Δ trained − untrained and − plain base (± paired SE per prompt)."""
    plain, before, after = record.get("plain_base"), record["before"], record["after"]
    deltas = record.get("deltas", {})

    def delta(base: str, name: str) -> str:
        entry = deltas.get(f"after-{base}", {}).get("prompt", {}).get(name)
        if entry is None:
            return "–"
        se = entry["paired_se"]
        return f"{entry['delta']:+.4f}" + (f" ± {se:.4f}" if se is not None else "")

    head = ["reward", *(["plain base"] if plain else []), "untrained", "trained", "Δ vs untrained", *(["Δ vs plain base"] if plain else [])]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in before:
        cells = [name, *([f"{plain[name]:.4f}"] if plain else []), f"{before[name]:.4f}", f"{after[name]:.4f}"]
        if deltas:
            cells += [delta("before", name), *([delta("plain_base", name)] if plain else [])]
        else:
            cells += [f"{after[name] - before[name]:+.4f}", *([f"{after[name] - plain[name]:+.4f}"] if plain else [])]
        lines.append("| " + " | ".join(cells) + " |")
    keys = [*(["plain_base"] if plain else []), "before", "after"]
    for label, field in (("Table-1 avg (norm.)", "table1_average"), ("HV (per-prompt means)", "hypervolume")):
        if field in record:
            values = record[field]
            lines.append("| " + " | ".join([label, *(f"{values[k]:.4f}" for k in keys), f"{values['after'] - values['before']:+.4f}",
                                            *([f"{values['after'] - values['plain_base']:+.4f}"] if plain else [])]) + " |")  # fmt: skip
    counts = {entry["count"] for entry in deltas.get("after-before", {}).get("prompt", {}).values()}
    if counts:
        lines.append(f"Δ ± paired standard error over {counts.pop()} held-out prompts (each prompt's mean over its seeds)")
    return "\n".join(lines)
