"""The world card's figures that need the trained world: is it a faithful miniature of the real setting?

``python -m shapes.card --world DIR`` measures them on a built world (the build runs it as its
last stage) and prints them as JSON. Every figure samples with the project's own policy
(:class:`t2i.StableDiffusionPolicy`, stochastic DDIM, η = 1, as training does) and scores with the
world's four rewards against the ORIGINAL prompt c. Paired comparisons draw both conditions from
the same per-image noise (one ``torch.Generator`` seed per image), so their difference isolates the
text; ± figures are paired standard errors (``scipy.stats.sem`` of the per-image differences).

Figures (``R`` = each reward: laion_aesthetic, preference, clip_score, sentiment):

- ``headroom_rule_<c>`` / ``headroom_rule_min``: E[a(x) | best expansion] − E[a(x) | c] by the
  aesthetic rule on perfect rendering (:func:`expected_rating`) for each held-out prompt;
  ``headroom_sampled_aesthetic`` (± ``_se``): the same on samples, best expansion vs c;
- ``seed_share_R``: with the plain prompt fixed, the share of R's variance that lies within a
  prompt (over seeds), pooled over all 12 colour × shape prompts;
- ``seed_spread_beam_R``: the seeds' spread of R under the SFT expander's beam ĉ relative to under c (the ratio of
  the root-mean within-prompt variances over the held-out prompts' images): what the seed still decides once the
  expansion's words are fixed, i.e. what a group of one (c, ĉ) gives the T2I update to learn from (no goal; on v8
  preference and sentiment keep under a fifth, BENCHMARKS.md "Why the LoRA finds only CLIPScore");
- ``sft_delta_R`` (± ``sft_se_R``): the SFT expander's near-greedy expansion ĉ, the best of
  ``num_beams`` beams (Promptist's decoding and the evaluation's default), with CFG on ĉ, minus CFG on
  c, held-out prompts; ``sft_sampled_delta_R`` (± se): the same with ĉ sampled at temperature
  ``expander_temperature``, ``sampled_draws`` expansions a prompt with the prompt's seeds split among them, the SE
  over the prompt × draw units (the expansions are the random sample);
- ``pcg_delta_clip_score`` (± se): prompt-centred guidance (w1 = w2 = scale/2) minus CFG on ĉ at the
  same total weight, CLIPScore to c, on the *sampled* ĉ (as above, SE over prompt × draw units): the goal is that expansions can dilute the
  subject, which the sampled ones do (v7's beam ĉ named a large subject and left guidance no job; v8's
  lower CLIPScore to c too, but in the Pareto benchmark guidance ties CFG on them, BENCHMARKS.md "Pareto fronts");
- ``identifier_text_cosine``: cosine of the world CLIP's pooled text features of
  "l p c s, c" and c (the preset's four identifiers), mean over prompts;
  ``identifiers_delta_R`` (± se): rewards of "<ids>, c" minus c on the untrained model, and ``identifiers_p_R``
  its sign-flip p-value (:func:`sign_flip_null`: "< 1 SE" alone misses for a model without any effect about three
  times in four, BENCHMARKS.md "Goal 6 measured with more images");
- ``corr_R1_R2``: Pearson correlation of two rewards over the plain-prompt samples.
"""

from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats

from parrot_base.cli import run_cli
from rewards import load_reward
from shapes.attributes import PRESET_IDENTIFIERS
from shapes.data import (
    BACKGROUNDS,
    COLOURS,
    HELD_OUT_PAIRS,
    MODIFIER_WORDS,
    POSITIVE_WORDS,
    SHAPES,
    SIZES,
    Attributes,
    Companion,
    ShapesDataConfig,
    contrast,
    detailed_caption,
    sample_attributes,
    short_prompt,
    training_pairs,
    with_prefix,
)
from shapes.heads import aesthetic_rating
from t2i import Guidance, StableDiffusionPolicy

__all__ = [
    "CardSettings", "REWARDS", "best_expansion", "expansion_words", "expected_rating", "load_world_rewards", "measure_card",
    "sample_images", "sample_scores", "score_images", "seed_share", "seed_spread_ratio", "sign_flip_null", "t_statistics",
    "within_prompt_variance",
    "written_expansion", "main",
]  # fmt: skip

REWARDS = ("laion_aesthetic", "preference", "clip_score", "sentiment")
#: every identifier of the shapes preset (template ``{name:.1}``: l p c s), as evaluation prepends them
ALL_IDENTIFIERS = " ".join(PRESET_IDENTIFIERS)


@dataclass
class CardSettings:
    """How the card samples."""

    images_per_prompt: int = field(default=16, metadata={"help": "seeds per prompt for every sampled figure"})
    num_steps: int = field(default=20, metadata={"help": "DDIM steps"})
    guidance: float = field(default=4.0, metadata={"help": "total guidance weight (CFG scale; w1 + w2 for prompt-centred)"})
    num_beams: int = field(default=4, metadata={"help": "beams of the SFT expander's near-greedy expansion (as the evaluation)"})
    expander_temperature: float = field(default=0.3, metadata={"help": "temperature of the sampled expansions"})
    sampled_draws: int = field(
        default=16,
        metadata={
            "help": "expansions sampled per held-out prompt for the sampled-ĉ figures, images_per_prompt split among them "
            "(their SE is over the prompt × draw units: one draw a prompt made goal 5 a lottery; one draw an image, as "
            "parrot.evaluate's sample decoding and this default at the default images_per_prompt, gives the smallest SE "
            "for the same images, BENCHMARKS.md)"
        },
    )
    rule_samples: int = field(default=20000, metadata={"help": "prior draws per prompt for the rule's expectations"})
    seed: int = field(default=0, metadata={"help": "seed of every draw"})

    def image_seeds(self, prompts: int, n: int | None = None) -> list[int]:
        """The seed of each image of ``prompts`` prompts × ``n`` images (default ``images_per_prompt``), prompt-major:
        image i of every prompt from ``seed``·1000 + i, so that every row sampled on these seeds pairs image by image."""
        return [self.seed * 1000 + i for _ in range(prompts) for i in range(self.images_per_prompt if n is None else n)]

    def __post_init__(self) -> None:
        if self.sampled_draws < 1 or self.images_per_prompt % self.sampled_draws:
            raise ValueError(f"sampled_draws={self.sampled_draws} must be >= 1 and divide images_per_prompt={self.images_per_prompt}")


def load_world_rewards(world: Path) -> dict[str, object]:
    """The world's four rewards, as the shapes preset loads them."""
    return {
        "laion_aesthetic": load_reward(
            "laion_aesthetic", clip_model=str(world / "clip"), head_path=str(world / "aesthetic" / "head.safetensors")
        ),
        "preference": load_reward("preference", path=str(world / "preference")),
        "clip_score": load_reward("clip_score", model=str(world / "clip")),
        "sentiment": load_reward("sentiment", model=str(world / "clip"), probe_path=str(world / "sentiment" / "probe.safetensors")),
    }


def expected_rating(
    colour: str,
    shape: str,
    *,
    size: str | None = None,
    background: str | None = None,
    companion: bool | None = None,
    words: tuple[str, ...] = (),
    samples: int = 20000,
    seed: int = 0,
) -> float:
    """E[a(x) | the caption] under the world's prior, rendering assumed perfect: records of the pair
    drawn from the prior and kept when the caption describes them (stated scene, and every word
    true of the record)."""
    from dataclasses import replace

    from shapes.data import qualifies

    rng = np.random.default_rng(seed)
    data = ShapesDataConfig()
    ratings = []
    for _ in range(samples):
        record = sample_attributes(rng, [(colour, shape)], data)
        changes = {k: v for k, v in (("size", size), ("background", background)) if v is not None}
        if "background" in changes and changes["background"] == colour:
            raise ValueError(f"background {background!r} equals the colour")
        record = replace(record, **changes)
        if companion is not None and (record.companion is not None) != companion:
            continue
        if record.companion is not None and record.companion.colour == record.background:
            continue  # the companion would be invisible on the new background: not a record of this caption
        if all(qualifies(record, w) for w in words):
            ratings.append(aesthetic_rating(record))
    if not ratings:
        raise ValueError(f"no prior draw of {short_prompt(colour, shape)} fits words {words}; raise samples")
    return float(np.mean(ratings))


def expansion_words(
    colour: str, background: str, quality: tuple[str, ...] = POSITIVE_WORDS, extra: tuple[str, ...] = ()
) -> tuple[str, ...]:
    """The modifier words of a written expansion, in the world's word order: ``quality`` (every positive word by
    default), "high contrast" where ``colour`` contrasts with ``background`` (> 0.5), then ``extra``."""
    words = quality + (("high contrast",) if contrast(colour, background) > 0.5 else ()) + extra
    return tuple(sorted(words, key=MODIFIER_WORDS.index))


def written_expansion(
    colour: str, shape: str, size: str, background: str, companion: bool, quality: tuple[str, ...] = POSITIVE_WORDS,
    extra: tuple[str, ...] = (),
) -> str:  # fmt: skip
    """The detailed caption asking for ``size``, ``background``, a small companion (the first colour that is neither
    ``colour`` nor ``background``, the first other shape) or none, and :func:`expansion_words`."""
    partner = None
    if companion:
        partner = Companion(next(c for c in COLOURS if c not in (colour, background)), next(s for s in SHAPES if s != shape), "top left")
    words = expansion_words(colour, background, quality, extra)
    return detailed_caption(Attributes(colour, shape, size, background, companion=partner, words=words))


def best_expansion(colour: str, shape: str, samples: int, seed: int) -> tuple[str, float]:
    """The expansion with the highest expected rule rating: every positive word, the background of
    highest contrast, a companion, the size a(x) rates higher; returns (caption, expected rating)."""
    background = max((b for b in BACKGROUNDS if b != colour), key=lambda b: contrast(colour, b))
    size = max(SIZES, key=lambda v: aesthetic_rating(Attributes(colour, shape, v, background)))
    words = expansion_words(colour, background)
    value = expected_rating(colour, shape, size=size, background=background, companion=True, words=words, samples=samples, seed=seed)
    return written_expansion(colour, shape, size, background, companion=True), value


def _generators(seed: int, n: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed * 100003 + i) for i in range(n)]


@torch.no_grad()
def sample_images(
    policy, texts: list[str], originals: list[str], guidance: Guidance, settings: CardSettings, seeds: list[int]
) -> torch.Tensor:
    """One image of each of ``texts`` (float (B, 3, H, W) in [0, 1]), image i from generator seed ``seeds[i]``,
    stochastic DDIM (η = 1) as training samples; ``originals`` (c) feed prompt-centred guidance."""
    images = []
    for start in range(0, len(texts), 64):
        chunk = slice(start, start + 64)
        trajectory = policy.sample(
            texts[chunk],
            original_prompts=originals[chunk],
            guidance=guidance,
            num_inference_steps=settings.num_steps,
            eta=1.0,
            generator=[torch.Generator().manual_seed(s) for s in seeds[chunk]],
            compute_log_probs=False,
        )
        images.append(trajectory.images.float())
    return torch.cat(images)


@torch.no_grad()
def sample_scores(
    policy, rewards, texts: list[str], originals: list[str], guidance: Guidance, settings: CardSettings, seeds: list[int]
) -> dict[str, np.ndarray]:
    """Scores (per reward, one per image) of images of ``texts`` scored against ``originals``."""
    return score_images(rewards, sample_images(policy, texts, originals, guidance, settings, seeds), texts, originals)


@torch.no_grad()
def score_images(rewards, images: torch.Tensor, texts: list[str], originals: list[str]) -> dict[str, np.ndarray]:
    """Every reward's score of ``images`` (made from ``texts``) against ``originals``, one per image."""
    metadata = [{"expanded_prompt": t} for t in texts]
    return {name: reward(images, originals, metadata).numpy().astype(np.float64) for name, reward in rewards.items()}


def within_prompt_variance(values: np.ndarray, prompts: int) -> float:
    """The mean over ``prompts`` prompt-major equal groups of ``values`` of each group's variance (ddof 0): the part
    the seeds decide with the text fixed."""
    return float(np.asarray(values, dtype=np.float64).reshape(prompts, -1).var(axis=1).mean())


def seed_share(values: np.ndarray, prompts: int) -> float:
    """Share of the variance of ``values`` that lies within prompts (:func:`within_prompt_variance` ÷ the total; NaN
    for constant values)."""
    total = np.asarray(values, dtype=np.float64).var()
    return within_prompt_variance(values, prompts) / total if total > 0 else float("nan")


def seed_spread_ratio(after: np.ndarray, before: np.ndarray, prompts: int) -> float:
    """√(:func:`within_prompt_variance` of ``after``) ÷ the same of ``before`` (each ``prompts`` prompt-major groups)."""
    return float(np.sqrt(within_prompt_variance(after, prompts) / within_prompt_variance(before, prompts)))


def t_statistics(differences: np.ndarray) -> np.ndarray:
    """mean ÷ SE over the images (axis −2) of paired differences (…, images, rewards); where every difference is the
    same, 0 for no change and ±∞ for a constant shift."""
    mean, se = differences.mean(-2), differences.std(-2, ddof=1) / np.sqrt(differences.shape[-2])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(se > 0, mean / se, np.where(mean == 0, 0.0, np.sign(mean) * np.inf))


def sign_flip_null(differences: np.ndarray, flips: int = 10000, seed: int = 0) -> dict[str, object]:
    """What "moves by < 1 SE" means when nothing moves. Under "the change (the card's: the identifiers' prefix) does
    nothing" each image's paired difference (one column per reward) is as likely negated; flipping whole rows keeps the
    rewards' correlation.
    Returns each reward's observed t and two-sided sign-flip p-value, and ``all_within_1se``: the share of flips whose
    every |t| < 1 — how often a model without any effect would meet "every reward < 1 SE" on these images."""
    differences = np.asarray(differences, dtype=np.float64)
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(flips, differences.shape[0], 1))
    null, observed = np.abs(t_statistics(signs * differences)), t_statistics(differences)
    return {
        "t": observed.tolist(),
        "p": (((null >= np.abs(observed)).sum(0) + 1.0) / (flips + 1.0)).tolist(),
        "all_within_1se": float((null < 1).all(axis=1).mean()),
    }


def _paired(figures: dict[str, float], name: str, after: np.ndarray, before: np.ndarray, units: int | None = None) -> None:
    """Mean of after − before and its SE: over the images, or over ``units`` consecutive equal groups' means (where the
    groups, not the images, are the random sample: the sampled expansions)."""
    difference = after - before
    figures[name] = float(difference.mean())
    grouped = difference if units is None else difference.reshape(units, -1).mean(axis=1)
    figures[name.replace("_delta", "_se")] = float(stats.sem(grouped))


def measure_card(world: str | Path, settings: CardSettings | None = None) -> dict[str, float]:
    """Every figure of the module docstring for the world in ``world``."""
    from prompt_expander import PromptExpander

    settings = settings or CardSettings()
    world = Path(world)
    policy = StableDiffusionPolicy.from_pretrained(world / "sd")
    rewards = load_world_rewards(world)
    n = settings.images_per_prompt
    cfg = Guidance.cfg(settings.guidance)
    figures: dict[str, float] = {}

    held_out = [short_prompt(c, s) for c, s in HELD_OUT_PAIRS]
    everything = [short_prompt(c, s) for c, s in training_pairs()] + held_out
    originals = [p for p in everything for _ in range(n)]
    seeds = settings.image_seeds(len(everything))
    plain = sample_scores(policy, rewards, originals, originals, cfg, settings, seeds)
    for name, values in plain.items():
        figures[f"seed_share_{name}"] = seed_share(values, len(everything))
    for a, b in itertools.combinations(REWARDS, 2):
        figures[f"corr_{a}_{b}"] = float(np.corrcoef(plain[a], plain[b])[0, 1])

    # the held-out prompts' rows of the plain samples, and the same seeds for every paired figure
    rows = slice(len(originals) - len(held_out) * n, len(originals))
    held_originals, held_seeds = originals[rows], seeds[rows]
    held_plain = {k: v[rows] for k, v in plain.items()}

    best_texts, headroom = [], []
    for (colour, shape), prompt in zip(HELD_OUT_PAIRS, held_out):
        text, best = best_expansion(colour, shape, settings.rule_samples, settings.seed)
        base = expected_rating(colour, shape, samples=settings.rule_samples, seed=settings.seed)
        figures[f"headroom_rule_{prompt.replace(' ', '_')}"] = best - base
        headroom.append(best - base)
        best_texts += [text] * n
    figures["headroom_rule_min"] = float(min(headroom))
    best_scores = sample_scores(policy, rewards, best_texts, held_originals, cfg, settings, held_seeds)
    _paired(figures, "headroom_sampled_delta_laion_aesthetic", best_scores["laion_aesthetic"], held_plain["laion_aesthetic"])

    expander = PromptExpander.from_pretrained(world / "expander")
    expansions = {
        "beam": expander.beam_search(held_out, num_beams=settings.num_beams).texts,
        "sampled": expander.sample(
            held_out, n=settings.sampled_draws, temperature=settings.expander_temperature, generator_seed=settings.seed
        ).texts,
    }
    # prompt-major, n seeds a prompt: the beam ĉ on all n, each sampled ĉ on n / sampled_draws of them
    expanded = {decoding: [e for e in texts for _ in range(n * len(held_out) // len(texts))] for decoding, texts in expansions.items()}
    units = {"beam": None, "sampled": len(expansions["sampled"])}
    sft = {}
    for decoding, prefix in (("beam", "sft"), ("sampled", "sft_sampled")):
        sft[decoding] = sample_scores(policy, rewards, expanded[decoding], held_originals, cfg, settings, held_seeds)
        for name in REWARDS:
            _paired(figures, f"{prefix}_delta_{name}", sft[decoding][name], held_plain[name], units[decoding])
    for name in REWARDS:
        figures[f"seed_spread_beam_{name}"] = seed_spread_ratio(sft["beam"][name], held_plain[name], len(held_out))
    half = settings.guidance / 2
    centred = sample_scores(policy, rewards, expanded["sampled"], held_originals, Guidance.prompt_centred(half, half), settings, held_seeds)
    _paired(figures, "pcg_delta_clip_score", centred["clip_score"], sft["sampled"]["clip_score"], units["sampled"])

    identified = sample_scores(
        policy, rewards, [with_prefix(p, ALL_IDENTIFIERS) for p in held_originals], held_originals, cfg, settings, held_seeds
    )
    for name in REWARDS:
        _paired(figures, f"identifiers_delta_{name}", identified[name], held_plain[name])
    null = sign_flip_null(np.stack([identified[name] - held_plain[name] for name in REWARDS], axis=1))
    figures |= {f"identifiers_p_{name}": p for name, p in zip(REWARDS, null["p"])}
    figures["identifier_text_cosine"] = identifier_text_cosine(world, everything + expansions["sampled"])
    figures["sft_expansions"] = expansions  # type: ignore[assignment]  (kept for the card's text)
    return figures


@torch.no_grad()
def identifier_text_cosine(world: Path, prompts: list[str]) -> float:
    """Mean cosine of the world CLIP's pooled text features of "<all ids>, p" and p."""
    from transformers import CLIPModel, CLIPTokenizer

    model = CLIPModel.from_pretrained(world / "clip").eval()
    tokenizer = CLIPTokenizer.from_pretrained(world / "clip")

    def features(texts: list[str]) -> torch.Tensor:
        tokens = tokenizer(texts, padding="max_length", truncation=True, return_tensors="pt")
        output = model.get_text_features(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask)
        return F.normalize(getattr(output, "pooler_output", output), dim=-1)

    return float((features(prompts) * features([with_prefix(p, ALL_IDENTIFIERS) for p in prompts])).sum(-1).mean())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Measure the world card's sampled figures of a built shapes world.")
    parser.add_argument("--world", default=str(Path(__file__).parent / "world"), help="world directory")
    parser.add_argument("--images-per-prompt", type=int, default=16, help="seeds per prompt")
    parser.add_argument("--seed", type=int, default=0, help="seed of every draw")
    parser.add_argument("--json", default="", help="also write the figures to this file")
    args = parser.parse_args(argv)
    figures = measure_card(args.world, CardSettings(images_per_prompt=args.images_per_prompt, seed=args.seed))
    text = json.dumps(figures, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text)


if __name__ == "__main__":
    run_cli(main)
