"""The world card of a built shapes world: ``WORLD.md`` for people and ``world.json``, the same figures
machine-readable. This module is the one writer and reader of both files: :mod:`shapes.build` writes
them after its stages and reads ``world.json`` back to ``--redo`` some; the figures come from the
build's stages and from :mod:`shapes.card` (the ``card_*`` ones).

``world.json`` holds ``{"figures", "seconds", "steps", "parameters", "sft_expansions"}``: the figures
by name, per stage its wall seconds, optimiser steps and parameter count, and the SFT expander's
expansions of the held-out prompts per decoding (``{"beam": [...], "sampled": [...]}``). ``WORLD.md``
tabulates them, with the world-v4 goals table (:func:`goal_rows`), the rewards' rules and the build
configuration.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from shapes.data import HELD_OUT_PAIRS
from shapes.heads import AESTHETIC_FILE, SENTIMENT_FILE, UTILITY_WEIGHTS

if TYPE_CHECKING:
    from shapes.build import BuildState

__all__ = ["CARD_FILE", "FAMILY_MODELS", "RECORD_FILE", "family_rows", "goal_rows", "read_record", "world_card_text", "write_world_card"]

#: the world card and its machine-readable record, under the world directory
CARD_FILE, RECORD_FILE = "WORLD.md", "world.json"


def read_record(out: Path) -> dict:
    """The ``world.json`` of the built world in ``out``; refuses a directory without one."""
    if not (out / RECORD_FILE).is_file():
        raise FileNotFoundError(f"{out} holds no built world (no world.json); build it first without --redo")
    return json.loads((out / RECORD_FILE).read_text())


def write_world_card(state: BuildState, stages: list[str], command: str, load: tuple[float, float, float]) -> None:
    """``WORLD.md`` and ``world.json`` of ``state`` (``stages``: the build's stage names in order)."""
    state.commands = [*state.commands, command]
    (state.out / CARD_FILE).write_text(world_card_text(state, load, stages))
    record = {
        "commands": state.commands,
        "figures": state.figures,
        "seconds": state.seconds,
        "steps": state.steps,
        "parameters": state.parameters,
        "sft_expansions": state.expansions,
    }
    (state.out / RECORD_FILE).write_text(json.dumps(record, indent=1))


def _expansion_lines(expansions: dict[str, list[str]], card) -> list[str]:
    """The SFT expander's expansions of the held-out prompts, one line per decoding the card measured."""
    draws = len(expansions.get("sampled", [])) // len(HELD_OUT_PAIRS)  # as the record has them (older cards kept one)
    how = {"beam": f"best of {card.num_beams} beams", "sampled": f"sampled at temperature {card.expander_temperature} ({draws} a prompt)"}
    quoted = {decoding: "; ".join(json.dumps(e, ensure_ascii=True) for e in texts) for decoding, texts in expansions.items()}
    bullets = [f"- {how.get(decoding, decoding)}: {text}" for decoding, text in quoted.items()]
    return ["SFT expansions of the held-out prompts:", "", *bullets]


def _directory_megabytes(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def goal_rows(figures: dict[str, float]) -> list[str]:
    """One row per world-v4 goal that has a figure: (goal, figure, value, met)."""
    f = figures.get

    def row(goal: str, name: str, ok) -> str:
        value = f(name)
        if value is None:
            return f"| {goal} | `{name}` | — | not measured |"
        return f"| {goal} | `{name}` | {value:.3f} | {'yes' if ok(value) else 'NO'} |"

    rows = [
        row("plain prompt mediocre: rule headroom ≥ 1.5 on every held-out prompt", "card_headroom_rule_min", lambda v: v >= 1.5),
        row("… and measured on samples (best expansion − c, aesthetic)", "card_headroom_sampled_delta_laion_aesthetic", lambda v: v >= 1.5),
        row('"sharp" gives crisper edges than "blurry"', "t2i_word_sharp_edge", lambda v: v > f("t2i_word_blurry_edge", v)),
        row('"vivid" gives more chroma than "faded"', "t2i_word_vivid_chroma", lambda v: v > f("t2i_word_faded_chroma", v)),
        row('"clean" gives fewer specks than "cluttered"', "t2i_word_clean_specks", lambda v: v < f("t2i_word_cluttered_specks", v)),
        row("seeds explain ≥ 30% of aesthetic variance (plain prompt)", "card_seed_share_laion_aesthetic", lambda v: v >= 0.3),
        row("seeds explain ≥ 30% of preference variance", "card_seed_share_preference", lambda v: v >= 0.3),
        row("seeds explain ≥ 10% of sentiment variance", "card_seed_share_sentiment", lambda v: v >= 0.1),
    ]
    for prefix, decoding in (("sft", "beam ĉ"), ("sft_sampled", "sampled ĉ")):
        for name in ("laion_aesthetic", "preference"):
            se = f(f"card_{prefix}_se_{name}")
            rows.append(
                row(
                    f"SFT expander ({decoding}) beats c on {name} by ≥ 3 paired SE (SE {se if se is None else round(se, 3)})",
                    f"card_{prefix}_delta_{name}",
                    lambda v, se=se: se is not None and v >= 3 * se,
                )
            )
        lowers = f"SFT expander ({decoding}) lowers CLIPScore to c (as Promptist)"
        rows.append(row(lowers, f"card_{prefix}_delta_clip_score", lambda v: v < 0))
    se = f("card_pcg_se_clip_score")
    rows.append(
        row(
            f"prompt-centred guidance beats CFG on ĉ (sampled) on CLIPScore by ≥ 2 SE (SE {se if se is None else round(se, 3)})",
            "card_pcg_delta_clip_score",
            lambda v: se is not None and v >= 2 * se,
        )
    )
    rows.append(row("text features with all identifiers: cosine ≥ 0.95", "card_identifier_text_cosine", lambda v: v >= 0.95))
    for name in ("laion_aesthetic", "preference", "clip_score", "sentiment"):
        se, p = f(f"card_identifiers_se_{name}"), f(f"card_identifiers_p_{name}")
        rows.append(
            row(
                f"identifiers move {name} by < 1 SE (SE {se if se is None else round(se, 3)}"
                + ("" if p is None else f", sign-flip p {p:.2f}")
                + ")",
                f"card_identifiers_delta_{name}",
                lambda v, se=se: se is not None and abs(v) < se,
            )
        )
    rows += family_rows(figures, row)
    correlations = {k: v for k, v in figures.items() if k.startswith("card_corr_")}
    if correlations:
        worst = min(correlations, key=correlations.get)
        rows.append(row("the rewards trade off: some pairwise correlation clearly negative (< −0.2)", worst, lambda v: v < -0.2))
    return rows


#: figure prefix → model name of the other architectures of the world (issues 15 and 16)
FAMILY_MODELS = {"sdxl": "SDXL model", "sd3": "SD3 model"}


def family_rows(figures: dict[str, float], row) -> list[str]:
    """The SDXL- and SD3-architecture models' goals (issues 15, 16): short prompts right on training pairs
    ≥ 0.70, and the quality vocabulary honoured as the SD model's rows ask; rows of a model not built are left out."""
    f, rows = figures.get, []
    for prefix, model in FAMILY_MODELS.items():
        if f"{prefix}_short_train_colour_shape" not in figures:
            continue
        rows += [
            row(f"{model}: short prompt colour + shape right on training pairs ≥ 0.70", f"{prefix}_short_train_colour_shape",
                lambda v: v >= 0.7),
            row(f'{model}: "sharp" gives crisper edges than "blurry"', f"{prefix}_word_sharp_edge",
                lambda v, p=prefix: v > f(f"{p}_word_blurry_edge", v)),
            row(f'{model}: "vivid" gives more chroma than "faded"', f"{prefix}_word_vivid_chroma",
                lambda v, p=prefix: v > f(f"{p}_word_faded_chroma", v)),
            row(f'{model}: "clean" gives fewer specks than "cluttered"', f"{prefix}_word_clean_specks",
                lambda v, p=prefix: v < f(f"{p}_word_cluttered_specks", v)),
        ]  # fmt: skip
    return rows


def world_card_text(state: BuildState, load_at_start: tuple[float, float, float], stages: list[str]) -> str:
    """The text of ``WORLD.md``: build header (``state.commands``, the build's commands so far, this one last), stage
    and size tables, figures, goals, rewards, configuration."""
    cfg = state.config
    lines = [
        *_header(state, load_at_start),
        *_stage_and_size_tables(state, stages),
        *_figure_tables(state),
        "",
        "## Is it a faithful miniature? (the world-v4 goals)",
        "",
        "| goal | figure | value | met |",
        "|---|---|---:|---|",
        *goal_rows(state.figures),
        "",
        *_expansion_lines(state.expansions, cfg.card),
        "",
        *_rewards_section(state),
        "",
        "## Configuration",
        "",
        "```json",
        json.dumps(asdict(cfg), indent=1),
        "```",
        "",
    ]
    return "\n".join(lines)


def _load_reading(load: float) -> str:
    """What the load average at start says of the stage times: ≥ 1 means other jobs held a core's worth of work."""
    return " (other jobs shared the CPU, so times are upper bounds)" if load >= 1.0 else " (no other job held a core at start)"


def _header(state: BuildState, load_at_start: tuple[float, float, float]) -> list[str]:
    cfg = state.config
    return [
        "# The shapes world (v4 models; v7: an identifier-robust SD UNet and text tower; v6 rewards)",
        "",
        f"Built with {_history(state.commands)} (seed {cfg.seed}) in {sum(state.seconds.values()):.0f} s "
        "(each stage's last run) on "
        f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), torch threads "
        f"{torch.get_num_threads()}; 1-minute load average at start {load_at_start[0]:.1f}{_load_reading(load_at_start[0])}.",
        "",
        f"Data: {cfg.train_examples} training images {cfg.data.image_size}×{cfg.data.image_size}; "
        f"held-out colour × shape pairs {', '.join(f'{c} {s}' for c, s in HELD_OUT_PAIRS)}.",
        "",
    ]


def _history(commands: list[str]) -> str:
    """The commands that made the world, in order (a record from before histories were kept starts the list unnamed)."""
    return ", then ".join(f"`{c}`" for c in commands)


def _stage_and_size_tables(state: BuildState, stages: list[str]) -> list[str]:
    lines = ["## Stages", "", "| stage | seconds | optimiser steps | parameters |", "|---|---:|---:|---:|"]
    for name in stages:
        if name in state.seconds:
            lines.append(f"| {name} | {state.seconds[name]:.1f} | {state.steps.get(name, '')} | {state.parameters.get(name, '')} |")
    lines += ["", "## Sizes on disk", "", "| directory | MB |", "|---|---:|"]
    for child in sorted(p for p in state.out.iterdir() if p.is_dir()):
        lines.append(f"| {child.name}/ | {_directory_megabytes(child):.2f} |")
    return lines


def _figure_tables(state: BuildState) -> list[str]:
    cfg = state.config
    lines = ["", "## Quality figures", "", "| figure | value |", "|---|---:|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in state.figures.items() if not k.startswith("card_")]
    lines += ["", "## Sampled figures (shapes.card)", "", "| figure | value |", "|---|---:|"]
    lines += [f"| {k[5:]} | {v:.4f} |" for k, v in state.figures.items() if k.startswith("card_")]
    return lines + [
        "",
        "Figures: `clip_top1_*` = top-1 retrieval of the right short caption among all 12 colour × shape",
        "captions for fresh images; `t2i_short_*_colour_shape` = fraction of samples of short prompts whose",
        "colour and shape the pixel-rule checker reads correctly; `t2i_detailed_*` = fraction of samples of",
        "detailed captions (records from the world's prior) honouring each stated attribute (`sdxl_*`, `sd3_*`: the same",
        "for the SDXL- and SD3-architecture models in `sdxl/` and `sd3/`, `shapes/sdxl.py`, `shapes/sd3.py`); `t2i_plain_*`,",
        "`t2i_word_<word>_<reading>`, `t2i_positive_*`, `t2i_negative_*` = pixel readings",
        "(`shapes.checker.read_quality`: edge crispness, clutter specks, subject chroma, |log aspect|, tint)",
        'of "c", "c, <word>", "c, <all positive words>, masterpiece" and "c, <all negative words>" over the',
        f"training pairs. Sampling: DDIM (SD3: Euler) {cfg.sd.eval_steps} steps, guidance {cfg.sd.eval_guidance}.",
        "`card_*` figures: `python -m shapes.card --world DIR` (definitions in `shapes/card.py`), "
        f"{cfg.card.images_per_prompt} seeds per prompt, paired noise, ± = paired SE.",
    ]


def _rewards_section(state: BuildState) -> list[str]:
    cfg, w = state.config, UTILITY_WEIGHTS
    return [
        "## Rewards (rules in `shapes/heads.py`)",
        "",
        '- aesthetic: `load_reward("laion_aesthetic", clip_model=WORLD/clip, '
        f"head_path=WORLD/aesthetic/{AESTHETIC_FILE})`, the LAION MLP head regressed on",
        "  a(x) = 1 + 1.5·sharpness + 1.5·cleanliness + 1.5·vividness + 1·regularity + 2.5·contrast + 1·centred",
        "  + 1.5·[companion] − 2·[large]; `aesthetic_held_out_r2` on fresh images.",
        '- preference: `load_reward("preference", path=WORLD/preference)`, Bradley–Terry on comparisons drawn with',
        f"  P[a ≻ b | c] = σ(u_a − u_b), u = {w['adherence']:g}·(share of the prompt's attributes the checker reads back)",
        f"  + {w['contrast']:g}·contrast + {w['large']:g}·[large]; `preference_held_out_accuracy` against the sampled (noisy)",
        "  labels, `_bayes_accuracy` its ceiling. The trade-offs built in: a large subject enters aesthetic with −2",
        f"  and preference with +{w['large']:g} (v5); both like contrast; only aesthetic reads quality and composition, and a",
        "  companion shape pleases aesthetic (+1.5, v6) while diluting the subject that CLIPScore and adherence look for.",
        '- alignment: `load_reward("clip_score", model=WORLD/clip)` against the ORIGINAL prompt (no training);',
        "  `alignment_*` = mean cosine with the right / a wrong short caption and how often the right one scores higher.",
        '- sentiment: `load_reward("sentiment", model=WORLD/clip, '
        f"probe_path=WORLD/sentiment/{SENTIMENT_FILE})`, a linear probe on the label",
        f"  tint + {cfg.heads.sentiment_warmth_weight:g}·(warmth(shape) + warmth(background)) ≥ {cfg.heads.sentiment_threshold:g}"
        " (red, yellow +1; white +0.5; green, gray −0.5;",
        "  blue, black −1; tint ∈ [−1, 1] the seed's warm or cold light: an RGB shift of "
        f"{cfg.data.tint_strength:g}·tint·(1, 0.25, −1)"
        + (
            f", after warm (cold) light scales B and G (R and G) by 1 − {cfg.data.light_strength:g}·|tint|·(1, 0.5)"
            + (" on the backdrop only" if cfg.data.light_target == "background" else "")
            if cfg.data.light_strength > 0
            else ""
        )
        + ").",
        "- expander: `PromptExpander.from_pretrained(WORLD/expander)`, GPT-2 SFT (TRL) on Promptist-style pairs: short",
        f"  caption → detailed caption of the top {cfg.expander.curated_fraction:.0%} of training images by a(x) + u under",
        "  the image's own caption"
        + (
            f" + {cfg.expander.habit_bonus:g} on a {cfg.expander.habit_background} background (the prompt writers' habit,"
            " which no reward shares)"
            if cfg.expander.habit_background and cfg.expander.habit_bonus > 0
            else ""
        )
        + " (`shapes.expander.curation_score`), its modifier words "
        + ("in one fixed order (`shapes.expander.in_fixed_order`);" if cfg.expander.word_order == "fixed" else "as its caption has them;"),
        "  `expander_held_out_well_formed` = share of sampled expansions of the held-out short prompts that parse as",
        "  detailed captions keeping the prompt's colour and shape.",
    ]
