"""What prompt-centred guidance does to the picture on a shapes world: the backgrounds it reads back.

Parrot's prompt-centred guidance adds w1·(ε(c) − ε(∅)) to w2·(ε(ĉ) − ε(∅)): the plain prompt c pulls the image
towards what the model draws for c alone. Where c's own images and ĉ's disagree on the scene (the world leaves
background and size to the seed for c; the SFT beam states "on a white background"), the sum can draw neither. For
every held-out prompt this script samples c with CFG, the SFT expander's beam ĉ with CFG at the same total weight and
ĉ with prompt-centred guidance (w1, w2), on the same noise (DDIM 20 steps, η = 1, as the card), and prints each
setting's mean rewards against c with the background, colour and size the world's pixel checker
(:func:`shapes.checker.read_image`) reads back, counted over the images.

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/guidance_backgrounds.py --images 32
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the repo's packages importable
    sys.path.insert(0, str(REPO))

from parrot.models import built_world  # noqa: E402
from parrot_base.cli import UsageError, run_cli  # noqa: E402
from prompt_expander import PromptExpander  # noqa: E402
from shapes.card import REWARDS, CardSettings, load_world_rewards, sample_images, score_images  # noqa: E402
from shapes.checker import read_image  # noqa: E402
from shapes.data import HELD_OUT_PAIRS, short_prompt  # noqa: E402
from t2i import Guidance, StableDiffusionPolicy  # noqa: E402

__all__ = ["settings_of", "read_counts", "main"]


def settings_of(prompt: str, beam: str, w1: float, w2: float) -> dict[str, tuple[str, Guidance]]:
    """{label: (text, guidance)}: c with CFG w1 + w2, ĉ with CFG w1 + w2, ĉ with prompt-centred (w1, w2)."""
    total = w1 + w2
    return {
        f"c, CFG {total:g}": (prompt, Guidance.cfg(total)),
        f"beam ĉ, CFG {total:g}": (beam, Guidance.cfg(total)),
        f"beam ĉ, prompt-centred ({w1:g}, {w2:g})": (beam, Guidance.prompt_centred(w1, w2)),
    }


def read_counts(images) -> dict[str, dict[str, int]]:
    """How often the checker reads each background, colour and size in ``images``."""
    seen = [read_image(image) for image in images]
    return {
        attribute: dict(Counter(str(getattr(r, attribute)) for r in seen).most_common()) for attribute in ("background", "colour", "size")
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", default="", help="a built shapes world ('' = the committed shapes/world)")
    parser.add_argument("--images", type=int, default=32, help="images per prompt and setting (default: %(default)s)")
    parser.add_argument("--w1", type=float, default=2.0, help="prompt-centred weight of c (default: %(default)s, the preset's)")
    parser.add_argument("--w2", type=float, default=2.0, help="prompt-centred weight of ĉ (default: %(default)s)")
    parser.add_argument("--json", default="", help="also write the figures here")
    args = parser.parse_args(argv)
    world = built_world(args.world, ("sd", "expander"))
    if args.images < 1:
        raise UsageError("--images must be >= 1")
    card = CardSettings()
    policy, rewards = StableDiffusionPolicy.from_pretrained(world / "sd"), load_world_rewards(world)
    prompts = [short_prompt(c, s) for c, s in HELD_OUT_PAIRS]
    beams = PromptExpander.from_pretrained(world / "expander").beam_search(prompts, num_beams=card.num_beams).texts
    seeds, record = list(range(args.images)), {}
    print("| prompt | setting | " + " | ".join(REWARDS) + " | background read | colour read | size read |")
    print("|---|---|" + "---|" * (len(REWARDS) + 3))
    for prompt, beam in zip(prompts, beams):
        for label, (text, guidance) in settings_of(prompt, beam, args.w1, args.w2).items():
            images = sample_images(policy, [text] * args.images, [prompt] * args.images, guidance, card, seeds)
            scores = score_images(rewards, images, [text] * args.images, [prompt] * args.images)
            counts = read_counts(images)
            means = {name: float(scores[name].mean()) for name in REWARDS}
            record.setdefault(prompt, {"beam": beam})[label] = {"rewards": means, "read": counts}
            cells = [f"{means[name]:.3f}" for name in REWARDS] + [", ".join(f"{k} {v}" for k, v in counts[a].items()) for a in counts]
            print(f"| {prompt} | {label} | " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    run_cli(main)
