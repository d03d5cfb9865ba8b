"""Goal 5 over many draws of the expansion: prompt-centred guidance − CFG on ĉ, CLIPScore to c, per sampled ĉ.

The world card's goal-5 figure (``pcg_delta_clip_score``, :func:`shapes.card.measure_card`) sampled *one* expansion
ĉ of each held-out prompt until this script showed that figure to be a lottery; it now samples
``CardSettings.sampled_draws`` of them on the same images. This script measures the one-draw figure for ``--draws``
expansions of each prompt (temperature ``--temperature``, by default the card's, generator seeds 0, 1, …; draw 0 is the
one-draw card's own), each on all the card's image seeds, pairing prompt-centred guidance (w1 = w2 = half the card's
guidance) against CFG on ĉ, and prints per draw the paired Δ ± SE over its images with the expansions, then the mean
± SE of Δ over the (prompt, draw) units (each the mean of its images: the expansions as a random sample, the figure
to quote) and over the draws.

``--written`` measures the same pair on written expansions instead, one per kind of dilution
(:data:`WRITTEN_KINDS`: a large or small subject, alone or with a small companion, on the v8 beams' white backdrop
with every positive quality word): whether guidance towards c undoes a dilution when the expansion has one, apart
from how often the SFT expander's samples have one.

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/guidance_draws.py --draws 8 --json runs/guidance_draws.json
    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/guidance_draws.py --written
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import stats

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the repo's packages importable
    sys.path.insert(0, str(REPO))

from parrot.models import built_world  # noqa: E402
from parrot_base.cli import UsageError, run_cli  # noqa: E402
from prompt_expander import PromptExpander  # noqa: E402
from shapes.card import CardSettings, load_world_rewards, sample_scores, written_expansion  # noqa: E402
from shapes.data import HELD_OUT_PAIRS, short_prompt  # noqa: E402
from t2i import Guidance, StableDiffusionPolicy  # noqa: E402

__all__ = ["WRITTEN_KINDS", "written_draws", "unit_summary", "main"]

#: the written expansions of ``--written``: kind → (size, companion); the backdrop is the v8 beams' white
WRITTEN_KINDS = {
    "large, alone": ("large", False),
    "small, alone": ("small", False),
    "large, companion": ("large", True),
    "small, companion": ("small", True),
}


def written_draws(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    """kind of :data:`WRITTEN_KINDS` → its written expansion of each (colour, shape) in ``pairs``, in order."""
    return {
        kind: [written_expansion(colour, shape, size, "white", companion) for colour, shape in pairs]
        for kind, (size, companion) in WRITTEN_KINDS.items()
    }


def unit_summary(differences: np.ndarray) -> dict[str, float]:
    """``differences`` of shape (draws, prompts, images): mean ± SE over the (prompt, draw) units' means and over the
    draws' means (``scipy.stats.sem``, ddof 1), and how many draws alone reach Δ ≥ 2 SE over their images."""
    units = differences.mean(axis=2)
    per_draw = differences.reshape(differences.shape[0], -1)
    return {
        "mean": float(differences.mean()),
        "se_units": float(stats.sem(units.ravel())),
        "se_draws": float(stats.sem(per_draw.mean(axis=1))) if len(per_draw) > 1 else float("nan"),
        "draws_meeting_2se": int(sum(d.mean() >= 2 * stats.sem(d) for d in per_draw)),
        "draws": int(differences.shape[0]),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", default="", help="a built shapes world ('' = the committed shapes/world)")
    parser.add_argument("--draws", type=int, default=8, help="sampled expansions of each held-out prompt (default: %(default)s)")
    parser.add_argument("--temperature", type=float, default=None, help="sampling temperature of ĉ (default: the card's)")
    parser.add_argument("--written", action="store_true", help="written expansions, one per kind of dilution, in place of sampled draws")
    parser.add_argument("--json", default="", help="also write the figures here")
    args = parser.parse_args(argv)
    if args.draws < 2:
        raise UsageError(f"--draws {args.draws}: at least 2 draws give an SE over draws")
    world = built_world(args.world, ["sd", "clip", "expander"])
    settings = CardSettings()
    temperature = settings.expander_temperature if args.temperature is None else args.temperature
    if temperature <= 0:
        raise UsageError(f"--temperature {temperature}: must be > 0")
    n = settings.images_per_prompt
    policy = StableDiffusionPolicy.from_pretrained(world / "sd")
    rewards = {"clip_score": load_world_rewards(world)["clip_score"]}
    held_out = [short_prompt(colour, shape) for colour, shape in HELD_OUT_PAIRS]
    originals = [p for p in held_out for _ in range(n)]
    seeds = settings.image_seeds(len(held_out))  # the card's held-out seeds
    cfg = Guidance.cfg(settings.guidance)
    centred = Guidance.prompt_centred(settings.guidance / 2, settings.guidance / 2)
    if args.written:
        draws = written_draws(list(HELD_OUT_PAIRS))
    else:
        expander = PromptExpander.from_pretrained(world / "expander")
        draws = {str(d): expander.sample(held_out, n=1, temperature=temperature, generator_seed=d).texts for d in range(args.draws)}
    differences, expansions = [], []
    for draw, texts in draws.items():
        expanded = [t for t in texts for _ in range(n)]
        with_cfg = sample_scores(policy, rewards, expanded, originals, cfg, settings, seeds)["clip_score"]
        with_pcg = sample_scores(policy, rewards, expanded, originals, centred, settings, seeds)["clip_score"]
        difference = with_pcg - with_cfg
        differences.append(difference.reshape(len(held_out), n))
        expansions.append(texts)
        per_prompt = " ".join(f"{m:+.4f}" for m in differences[-1].mean(axis=1))
        figure = f"{difference.mean():+.4f} ± {stats.sem(difference):.4f} (per prompt {per_prompt})"
        print(f"draw {draw}: {figure} | " + " | ".join(texts), flush=True)
    if args.written:  # the kinds are chosen, not drawn: each line above is the figure, no summary over them
        if args.json:
            written = {kind: difference.tolist() for kind, difference in zip(draws, differences)}
            Path(args.json).write_text(json.dumps({"written": written, "expansions": expansions}, indent=1))
        return
    summary = unit_summary(np.stack(differences))
    print(
        f"prompt-centred − CFG on ĉ, CLIPScore to c, over {summary['draws']} draws: {summary['mean']:+.4f} "
        f"± {summary['se_units']:.4f} (SE over the {summary['draws'] * len(held_out)} prompt × draw units; "
        f"over draws ± {summary['se_draws']:.4f}); draws meeting ≥ 2 SE alone: {summary['draws_meeting_2se']}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "expansions": expansions}, indent=1))


if __name__ == "__main__":
    run_cli(main)
