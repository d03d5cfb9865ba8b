"""Extra rounds of the world's identifier distillation on a copy of a built world (goal 6's experiments).

Goal 6 of issue 13 asks that prepending every identifier ("l p c s, c") move the untrained model's rewards by
nothing measurable. On the committed world one small shift is real (held-out preference, BENCHMARKS.md "Goal 6
measured with more images"). This script makes the candidate fixes measured there, each on a fresh copy of a world
(``--out``), for ``world_reasons.py --world COPY`` to read:

1. **A tower step** (``--tower_steps N``): the SD model's text tower alone (UNet untouched) trained so that the
   states after a prefix match the plain caption's, aligned by the prefix's length (:func:`prefix_state_shift`:
   content, EOS and padding positions, relative squared difference), on captions the data generator writes for the
   training colour × shape pairs (never a held-out pair); the plain states are held to the starting tower (weight
   10, relative drift) and the prefix's own states too (L_anchor of :mod:`shapes.identifiers`, relative). The
   prefixes are drawn as the ``identifiers`` stage draws them (:func:`shapes.identifiers.distillation_prefix`).
2. **A round** (``--round unet|recipe``): ``--round_steps`` more steps of the stage's own ε-distillation
   (:func:`shapes.identifiers.train_prefix_invariance` on the build's training images) with distillation seed
   ``--seed``, the UNet alone or, as the build does, the UNet and the tower.

Either or both (the step first). The copy's ``sd/`` is the result; every other folder is the source world's.

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/identifier_rounds.py --out COPY --round recipe --seed 42
    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/identifier_rounds.py --out COPY --tower_steps 2000 --round none
    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/world_reasons.py --world COPY --seeds 64  # the prefix's effect
    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/world_reasons.py --seeds 64 --other_world COPY  # COPY − source
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the repo's packages importable
    sys.path.insert(0, str(REPO))

from parrot.models import built_world  # noqa: E402
from parrot_base.cli import UsageError, run_cli  # noqa: E402
from shapes.attributes import PRESET_IDENTIFIERS  # noqa: E402
from shapes.build_config import BuildConfig  # noqa: E402
from shapes.data import generate_examples, with_prefix  # noqa: E402
from shapes.identifiers import distillation_prefix, train_prefix_invariance  # noqa: E402

__all__ = ["prefix_length", "prefix_state_shift", "train_tower_shift", "prompt_file_shifts", "main"]

#: the data generator's seed for the tower step's captions (training pairs only), and how many it draws
TOWER_CAPTION_SEED, TOWER_CAPTION_DRAWS = 321, 6000


def _ids(tokenizer, texts: list[str]) -> torch.Tensor:
    return tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids


def prefix_length(tokenizer, prefix: str) -> int:
    """Tokens that "<prefix>, " adds in front of a caption (0 for no prefix)."""
    return len(tokenizer(with_prefix("x", prefix)).input_ids) - len(tokenizer("x").input_ids)


def prefix_state_shift(tower, tokenizer, texts: list[str], prefix: str, plain_states: torch.Tensor | None = None) -> torch.Tensor:
    """Per text, ‖h("<prefix>, c")[1+k:] − h(c)[1:L−k]‖² ÷ ‖h(c)[1:L−k]‖²: how far the prefix moves the states of
    everything after it (content, EOS and padding, k = :func:`prefix_length`), against ``plain_states`` (default:
    ``tower``'s own states of the plain texts)."""
    length, k = tokenizer.model_max_length, prefix_length(tokenizer, prefix)
    plain = tower(_ids(tokenizer, texts)).last_hidden_state if plain_states is None else plain_states
    prefixed = tower(_ids(tokenizer, [with_prefix(t, prefix) for t in texts])).last_hidden_state
    after, before = prefixed[:, 1 + k :], plain[:, 1 : length - k]
    return (after - before).square().sum((1, 2)) / before.square().sum((1, 2))


def _relative(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).square().mean() / b.square().mean()


def train_tower_shift(
    tower, tokenizer, captions: list[str], steps: int, learning_rate: float = 1e-3, batch_size: int = 32, seed: int = 0,
    plain_weight: float = 10.0, progress: bool = True,
) -> dict[str, float]:  # fmt: skip
    """Step 1 of the module docstring, in place on ``tower``: loss = mean shift + ``plain_weight`` × plain drift + anchor, AdamW
    (no weight decay), gradient norm clipped to 1; returns the shift at the start and the end (mean of the first and
    last tenth of the steps)."""
    rng = np.random.default_rng(seed)
    teacher = copy.deepcopy(tower).eval().requires_grad_(False)
    optimiser = torch.optim.AdamW(tower.parameters(), lr=learning_rate, weight_decay=0.0)
    tower.train().requires_grad_(True)
    shifts = []
    for _ in tqdm(range(steps), desc="tower step", disable=not progress):
        batch = [captions[i] for i in rng.integers(len(captions), size=batch_size)]
        prefix = distillation_prefix(rng)
        plain_ids = _ids(tokenizer, batch)
        with torch.no_grad():
            target = teacher(plain_ids).last_hidden_state
        shift = prefix_state_shift(tower, tokenizer, batch, prefix, target).mean()
        drift = (tower(plain_ids).last_hidden_state - target).square().sum((1, 2)).div(target.square().sum((1, 2))).mean()
        own, k = _ids(tokenizer, [prefix]), prefix_length(tokenizer, prefix)
        anchor = _relative(tower(own).last_hidden_state[:, : 1 + k], teacher(own).last_hidden_state[:, : 1 + k])
        loss = shift + plain_weight * drift + anchor
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tower.parameters(), 1.0)
        optimiser.step()
        shifts.append(shift.item())
    tower.eval().requires_grad_(False)
    tenth = max(1, len(shifts) // 10)
    return {"tower_shift_start": float(np.mean(shifts[:tenth])), "tower_shift_end": float(np.mean(shifts[-tenth:]))} if shifts else {}


@torch.no_grad()
def prompt_file_shifts(tower, tokenizer, world: Path, reference=None) -> dict[str, float]:
    """Mean :func:`prefix_state_shift` of "l p c s" over the world's training and held-out prompt files (short and
    detailed), and with ``reference`` (the starting tower) each file set's plain-state drift from it."""
    figures = {}
    for split, names in (("training", ("train.txt", "train_detailed.txt")), ("held_out", ("held_out.txt", "held_out_detailed.txt"))):
        texts = [line for name in names for line in (world / "prompts" / name).read_text().splitlines() if line.strip()]
        figures[f"shift_lpcs_{split}"] = prefix_state_shift(tower, tokenizer, texts, " ".join(PRESET_IDENTIFIERS)).mean().item()
        if reference is not None:
            ids = _ids(tokenizer, texts)
            figures[f"plain_drift_{split}"] = _relative(tower(ids).last_hidden_state, reference(ids).last_hidden_state).item()
    return figures


def _fresh_copy(source: Path, out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} is not empty: give a new folder for the copy")
    shutil.copytree(source, out, dirs_exist_ok=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", default="", help="the built world to start from ('' = the committed shapes/world)")
    parser.add_argument("--out", type=Path, required=True, help="a new folder: the copy, with its sd/ replaced")
    parser.add_argument("--tower_steps", type=int, default=0, help="steps of the tower step (0: none)")
    parser.add_argument("--tower_lr", type=float, default=1e-3, help="the tower step's AdamW learning rate")
    parser.add_argument(
        "--round", choices=("none", "unet", "recipe"), default="recipe", help="then an ε round: none, UNet alone, or UNet and tower"
    )
    parser.add_argument("--round_steps", type=int, default=1000, help="steps of the ε round")
    parser.add_argument("--seed", type=int, default=42, help="the ε round's distillation seed")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.tower_steps < 0 or args.round_steps < 1 or args.tower_lr <= 0:
        raise UsageError("--tower_steps must be >= 0, --round_steps >= 1 and --tower_lr > 0")
    if args.tower_steps == 0 and args.round == "none":
        raise UsageError("nothing to do: give --tower_steps N or a --round")
    source = built_world(args.world, ("sd", "prompts"))
    _fresh_copy(source, args.out)
    from diffusers import StableDiffusionPipeline

    pipeline = StableDiffusionPipeline.from_pretrained(args.out / "sd", safety_checker=None)
    start_tower = copy.deepcopy(pipeline.text_encoder).eval()
    figures: dict[str, object] = {
        f"{k}_before": v for k, v in prompt_file_shifts(pipeline.text_encoder, pipeline.tokenizer, source).items()
    }
    started = time.perf_counter()
    if args.tower_steps:
        examples = generate_examples(TOWER_CAPTION_DRAWS, TOWER_CAPTION_SEED, "train")
        captions = sorted({replace(e, prefix="").caption for e in examples})
        figures |= train_tower_shift(pipeline.text_encoder, pipeline.tokenizer, captions, args.tower_steps, args.tower_lr)
    if args.round != "none":
        config = BuildConfig()
        torch.manual_seed(config.seed)  # as the build's stage sets it
        train = generate_examples(config.train_examples, config.seed, "train", config.data)
        stage = replace(config.identifiers, steps=args.round_steps, text_encoder=args.round == "recipe")
        figures |= {f"round_{k}": v for k, v in train_prefix_invariance(pipeline, train, stage, seed=args.seed).items() if k != "seconds"}
    figures["seconds"] = time.perf_counter() - started
    figures |= prompt_file_shifts(pipeline.text_encoder, pipeline.tokenizer, source, start_tower)
    pipeline.save_pretrained(args.out / "sd")
    for key, value in figures.items():
        print(f"{key}: {round(value, 5) if isinstance(value, float) else value}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1), encoding="utf-8")


if __name__ == "__main__":
    run_cli(main)
