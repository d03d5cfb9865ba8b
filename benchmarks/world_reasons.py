"""Why four world-v4 goals are missed: the pixel readings behind the card's figures.

The card (``python -m shapes.card``) measures *that* a goal is missed; this script measures the
readings that say *why*, on the same sampling (the project's policy, DDIM 20 steps, η = 1, CFG 4,
16 seeds per prompt, paired noise) and with the world's own pixel checker
(:func:`shapes.checker.read_image`, :func:`shapes.checker.read_quality`):

1. **Preference's seed share** (goal ≥ 0.30, card 0.12): the within-prompt (seed) share of variance
   of the preference reward and of the terms of its rule u = 4·adherence + 3·contrast + 2.5·[large]
   (:func:`shapes.heads.preference_rule`), read from the plain-prompt samples of all 12 colour ×
   shape prompts (adherence = share of the prompt's colour and shape the checker reads back;
   contrast of the prompt's colour to the read background), and
   the same shares on the world's prior with perfect rendering (what the data would allow).
2. **Identifiers' effect** (goal 6: every reward moves < 1 SE): paired change of every reward and of each
   reading when "l p c s, " is prepended, and of the sentiment and preference rules read from pixels
   (warmth(read colour) + warmth(read background) + read tint; 4·adherence + 3·contrast + 2.5·[large]);
   the rewards on all, held-out and training prompts with sign-flip p-values, and how often a model
   whose prefix changes nothing would show every reward < 1 SE on as many images.
3. **Sampled headroom** (goal ≥ 1.5, card +1.34): how often the samples of the rule's best expansion
   of each held-out prompt honour its background, size and companion, against the plain prompt.
4. **No clearly negative reward pair** (goal < −0.2): the rules' correlations on the world's prior
   (perfect rendering, adherence 1), which bound what the learned rewards can show.
5. With ``--other_world DIR``: every reward's paired change on the same plain-prompt seeds when DIR's SD model
   draws them instead (``other_model_*``, as the identifiers' rows): how far a change of the model alone — e.g. one
   more round of the ``identifiers`` distillation, which is told to keep the plain prediction — moves the rewards,
   the yardstick for goal 6's few hundredths.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/world_reasons.py --json runs/world_reasons.json
    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/world_reasons.py --seeds 64 --other_world COPY  # COPY − committed
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from parrot.models import built_world, committed_shapes_world
from parrot_base.cli import run_cli
from shapes.card import (
    ALL_IDENTIFIERS,
    REWARDS,
    CardSettings,
    best_expansion,
    load_world_rewards,
    sample_images,
    score_images,
    seed_share,
    sign_flip_null,
)
from shapes.checker import read_image, read_quality
from shapes.data import (
    HELD_OUT_PAIRS,
    Attributes,
    Companion,
    ShapesDataConfig,
    contrast,
    parse_caption,
    qualifies,
    render,
    sample_attributes,
    short_prompt,
    training_pairs,
    with_prefix,
)
from shapes.heads import WARMTH, aesthetic_rating, own_caption_utility, preference_rule
from t2i import Guidance, StableDiffusionPolicy


@torch.no_grad()
def sample(policy, rewards, texts: list[str], originals: list[str], seeds: list[int], settings: CardSettings) -> tuple[list, dict]:
    """Images (uint8 HWC) of ``texts`` as the card samples them (CFG), and every reward against ``originals``."""
    batch = sample_images(policy, texts, originals, Guidance.cfg(settings.guidance), settings, seeds)
    scores = score_images(rewards, batch, texts, originals)
    pixels = [(image.permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8) for image in batch]
    return pixels, scores


def readings(pixels: list, pairs: list[tuple[str, str]]) -> dict[str, np.ndarray]:
    """Per image: adherence to its (colour, shape), [large], background, contrast of the colour to it, tint, chroma,
    edge, specks, and the sentiment and preference rules on those readings."""
    names = ("adherence", "large", "tint", "chroma", "edge", "specks", "sentiment_rule", "background", "contrast", "preference_rule")
    rows: dict[str, list] = {k: [] for k in names}
    for image, (colour, shape) in zip(pixels, pairs):
        seen, quality = read_image(image), read_quality(image)
        rows["adherence"].append(((seen.colour == colour) + (seen.shape == shape)) / 2)
        rows["large"].append(float(seen.size == "large"))
        rows["tint"].append(quality.tint)
        rows["chroma"].append(quality.chroma)
        rows["edge"].append(quality.edge)
        rows["specks"].append(float(quality.specks))
        warmth = WARMTH.get(seen.colour, 0.0) + WARMTH[seen.background] + float(np.clip(quality.tint, -1, 1))
        rows["sentiment_rule"].append(warmth)
        rows["background"].append(seen.background)
        rows["contrast"].append(contrast(colour, seen.background) if seen.background != colour else 0.0)
        rows["preference_rule"].append(preference_rule(rows["adherence"][-1], rows["contrast"][-1], rows["large"][-1]))
    return {k: np.asarray(v) for k, v in rows.items()}


def paired(after: np.ndarray, before: np.ndarray) -> list[float]:
    difference = np.asarray(after, dtype=np.float64) - np.asarray(before, dtype=np.float64)
    return [float(difference.mean()), float(stats.sem(difference))]


def prior_figures(draws: int, seed: int) -> dict[str, float]:
    """Rule-level seed shares and correlations on the prior, rendering perfect (adherence 1)."""
    rng, data = np.random.default_rng(seed), ShapesDataConfig()
    pairs = training_pairs() + list(HELD_OUT_PAIRS)
    per_pair = draws // len(pairs)
    a, u, s = [], [], []
    for pair in pairs:
        for _ in range(per_pair):
            record = sample_attributes(rng, [pair], data)
            a.append(aesthetic_rating(record))
            u.append(own_caption_utility(record))
            s.append(WARMTH[record.colour] + WARMTH[record.background] + record.tint)
    a, u, s = map(np.asarray, (a, u, s))
    figures = {
        f"prior_seed_share_{n}": seed_share(v, len(pairs)) for n, v in (("aesthetic", a), ("preference_rule", u), ("sentiment_rule", s))
    }
    labels = np.asarray([sentiment_label_from(x) for x in s])
    figures |= {"prior_corr_aesthetic_preference": float(np.corrcoef(a, u)[0, 1])}
    figures |= {"prior_corr_aesthetic_sentiment": float(np.corrcoef(a, labels)[0, 1])}
    figures |= {"prior_corr_preference_sentiment": float(np.corrcoef(u, labels)[0, 1])}
    return figures


def sentiment_label_from(warmth: float) -> int:
    """The sentiment rule's label from its warmth sum (the rule of :func:`shapes.heads.sentiment_label`)."""
    return int(warmth >= 0)


def caption_records(rng: np.random.Generator, text: str, count: int, tries: int = 200000) -> list[Attributes]:
    """``count`` prior records that ``text`` (a caption-grammar prompt) truly describes: its pair drawn
    from the prior, its stated size, background and companion imposed, kept when every word is true."""
    stated, data, records = parse_caption(text), ShapesDataConfig(), []
    for _ in range(tries):
        record = sample_attributes(rng, [(stated.colour, stated.shape)], data)
        if stated.background is not None and stated.background != record.background:
            record = replace(record, background=stated.background, words=())
        if stated.size is not None:
            record = replace(record, size=stated.size)
        if stated.companion is not None:
            corner = record.companion.corner if record.companion is not None else "top left"
            record = replace(record, companion=Companion(*stated.companion, corner))
        if all(qualifies(record, w) for w in stated.words):
            records.append(record)
        if len(records) == count:
            return records
    raise ValueError(f"only {len(records)} of {count} prior draws fit {text!r}")


def rendered_headroom(rewards, count: int, seed: int) -> dict[str, object]:
    """The learned aesthetic reward on perfectly rendered records: best expansion − plain prompt per
    held-out prompt, and the reward's slope on the rule a(x) over all of them."""
    rng, figures, ratings, scores = np.random.default_rng(seed), {}, [], []
    aesthetic = rewards["laion_aesthetic"]
    for colour, shape in HELD_OUT_PAIRS:
        plain = caption_records(rng, short_prompt(colour, shape), count)
        best = caption_records(rng, best_expansion(colour, shape, 2000, 0)[0], count)
        images = torch.from_numpy(np.stack([render(r) for r in plain + best])).permute(0, 3, 1, 2).float() / 255.0
        values = aesthetic(images, [short_prompt(colour, shape)] * len(images)).numpy()
        figures[f"rendered_headroom_{colour}_{shape}"] = float(values[count:].mean() - values[:count].mean())
        figures[f"rule_headroom_{colour}_{shape}"] = float(
            np.mean([aesthetic_rating(r) for r in best]) - np.mean([aesthetic_rating(r) for r in plain])
        )
        ratings += [aesthetic_rating(r) for r in plain + best]
        scores += values.tolist()
    fit = stats.linregress(ratings, scores)
    figures["rendered_reward_slope_on_rule"], figures["rendered_reward_r2"] = float(fit.slope), float(fit.rvalue**2)
    return figures


@dataclass
class PlainSamples:
    """The plain-prompt samples every section compares against: 12 prompts × n seeds, row-major."""

    pairs: list[tuple[str, str]]  # (colour, shape) per image
    originals: list[str]  # c per image
    seeds: list[int]
    scores: dict[str, np.ndarray]
    read: dict[str, np.ndarray]
    groups: int

    @property
    def held_out(self) -> np.ndarray:
        """Which images are of a held-out colour × shape pair."""
        return np.asarray([pair in HELD_OUT_PAIRS for pair in self.pairs])


def preference_reasons(plain: PlainSamples, prior_draws: int) -> dict[str, object]:
    """1. preference's seed share and the terms of its rule."""
    figures: dict[str, object] = {}
    for name in ("preference", "laion_aesthetic"):
        figures[f"seed_share_{name}"] = seed_share(plain.scores[name], plain.groups)
    for name in ("adherence", "large", "contrast"):
        figures[f"seed_share_{name}"] = seed_share(plain.read[name], plain.groups)
    rule = preference_rule(plain.read["adherence"], plain.read["contrast"], plain.read["large"])
    figures["seed_share_preference_rule_read"] = seed_share(rule, plain.groups)
    figures["adherence_mean"] = float(plain.read["adherence"].mean())
    figures["adherence_per_prompt"] = plain.read["adherence"].reshape(plain.groups, -1).mean(1).round(3).tolist()
    figures["corr_preference_adherence"] = float(np.corrcoef(plain.scores["preference"], plain.read["adherence"])[0, 1])
    figures["corr_preference_rule_read"] = float(np.corrcoef(plain.scores["preference"], rule)[0, 1])
    return figures | prior_figures(prior_draws, 0)


def split_shifts(after: dict[str, np.ndarray], before: dict[str, np.ndarray], held: np.ndarray, name: str) -> dict[str, object]:
    """Every reward's paired change after − before (the same images' seeds) on all prompts, the held-out ones
    (``held``) and the training ones: ``{name}_{split}_{reward}`` = [mean, SE, sign-flip p], and how often a change
    that does nothing would show every reward < 1 SE on as many images (:func:`sign_flip_null`)."""
    differences = np.stack([after[r] - before[r] for r in REWARDS], axis=1)
    figures: dict[str, object] = {}
    for rows, split in ((slice(None), "all"), (held, "held_out"), (~held, "training")):
        null = sign_flip_null(differences[rows])
        for i, r in enumerate(REWARDS):
            figures[f"{name}_{split}_{r}"] = [*paired(after[r][rows], before[r][rows]), null["p"][i]]
        figures[f"{name}_{split}_null_all_within_1se"] = null["all_within_1se"]
    return figures


def identifier_reasons(draw, plain: PlainSamples) -> dict[str, object]:
    """2. identifiers: the same seeds behind "l p c s, " — every reward, on all prompts and on the held-out ones,
    with sign-flip p-values (:func:`sign_flip_null`), and the pixel readings behind them."""
    pixels, scores = draw([with_prefix(t, ALL_IDENTIFIERS) for t in plain.originals], plain.originals, plain.seeds)
    read = readings(pixels, plain.pairs)
    held = plain.held_out
    figures: dict[str, object] = split_shifts(scores, plain.scores, held, "identifiers")
    for name in ("sentiment_rule", "tint", "chroma", "edge", "specks", "adherence", "large", "contrast", "preference_rule"):
        figures[f"identifiers_delta_{name}"] = paired(read[name], plain.read[name])
        figures[f"identifiers_held_out_delta_{name}"] = paired(read[name][held], plain.read[name][held])
    figures["identifiers_background_changed"] = float((read["background"] != plain.read["background"]).mean())
    for name, values in (("plain", plain.read["background"]), ("identifiers", read["background"])):
        names, counts = np.unique(values, return_counts=True)
        figures[f"backgrounds_{name}"] = {str(k): round(float(c) / len(values), 3) for k, c in zip(names, counts)}
        figures[f"background_warmth_{name}"] = float(np.mean([WARMTH[b] for b in values]))
    return figures


def headroom_reasons(draw, plain: PlainSamples, n: int) -> dict[str, object]:
    """3. the rule's best expansion of each held-out prompt against the plain prompt."""
    rows = slice(len(plain.originals) - len(HELD_OUT_PAIRS) * n, len(plain.originals))
    best = [best_expansion(colour, shape, 2000, 0)[0] for colour, shape in HELD_OUT_PAIRS for _ in range(n)]
    pixels, scores = draw(best, plain.originals[rows], plain.seeds[rows])
    read, before = readings(pixels, plain.pairs[rows]), {k: v[rows] for k, v in plain.read.items()}
    stated = [text.split(" on a ")[1].split(" background")[0] for text in best]
    figures: dict[str, object] = {
        "headroom_delta_laion_aesthetic": paired(scores["laion_aesthetic"], plain.scores["laion_aesthetic"][rows]),
        "best_background_honoured": float(np.mean([b == s for b, s in zip(read["background"], stated)])),
        "plain_background_was_that": float(np.mean([b == s for b, s in zip(before["background"], stated)])),
        "best_large_honoured": float(read["large"].mean()),
        "best_adherence": float(read["adherence"].mean()),
        "plain_adherence_held_out": float(before["adherence"].mean()),
        "best_companion_or_specks": float((read["specks"] > 0).mean()),
        "plain_companion_or_specks": float((before["specks"] > 0).mean()),
    }
    for name in ("edge", "chroma"):
        figures[f"best_delta_{name}"] = paired(read[name], before[name])
    return figures | {"best_expansions": sorted(set(best))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", type=Path, default=None, help="a built world (default: the committed shapes/world)")
    parser.add_argument("--seeds", type=int, default=16, help="seeds per prompt")
    parser.add_argument("--first_seed", type=int, default=0, help="image seeds first_seed … first_seed + seeds − 1")
    parser.add_argument("--num_steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=4.0)
    parser.add_argument("--prior_draws", type=int, default=24000)
    parser.add_argument("--rendered", type=int, default=64, help="records per caption for the rendered headroom")
    parser.add_argument("--only_rendered", action="store_true", help="only the rendered-headroom figures (no sampling)")
    parser.add_argument(
        "--other_world",
        type=Path,
        default=None,
        help="also the plain prompts under this built world's SD model, the same seeds: the rewards' change a change of model alone makes",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.seeds < 2 or args.rendered < 1 or args.prior_draws < 1 or args.num_steps < 1:
        parser.error("--seeds must be ≥ 2 (paired standard errors), --rendered, --prior_draws and --num_steps ≥ 1")
    if args.other_world and args.only_rendered:
        parser.error("--other_world compares sampled images: drop --only_rendered")
    other_world = built_world(str(args.other_world), ("sd",)) if args.other_world else None  # refused before any sampling
    world = args.world or committed_shapes_world()
    policy, rewards = StableDiffusionPolicy.from_pretrained(world / "sd"), load_world_rewards(world)
    settings = CardSettings(num_steps=args.num_steps, guidance=args.guidance)
    figures = rendered_headroom(rewards, args.rendered, 0)
    if not args.only_rendered:

        def draw(texts, originals, seeds):
            return sample(policy, rewards, texts, originals, seeds, settings)

        pairs = training_pairs() + list(HELD_OUT_PAIRS)
        image_pairs = [p for p in pairs for _ in range(args.seeds)]
        originals, seeds = [short_prompt(*p) for p in image_pairs], [args.first_seed + i for _ in pairs for i in range(args.seeds)]
        pixels, scores = draw(originals, originals, seeds)
        plain = PlainSamples(image_pairs, originals, seeds, scores, readings(pixels, image_pairs), len(pairs))
        figures |= preference_reasons(plain, args.prior_draws)
        figures |= identifier_reasons(draw, plain)
        figures |= headroom_reasons(draw, plain, args.seeds)
        if other_world:
            other = StableDiffusionPolicy.from_pretrained(other_world / "sd")
            _, scores = sample(other, rewards, originals, originals, seeds, settings)
            figures |= split_shifts(scores, plain.scores, plain.held_out, "other_model")
    report(figures, args.json)


def report(figures: dict, path: Path | None) -> None:
    for key, value in figures.items():
        print(f"{key}: {value if not isinstance(value, float) else round(value, 4)}")
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(figures, indent=1), encoding="utf-8")


if __name__ == "__main__":
    run_cli(main)
