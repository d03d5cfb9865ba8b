"""Build the shapes world from a seed: ``python -m shapes.build --out DIR [--quick] [--seed N] [--skip sdxl sd3] [--config F]``.

``--config F.yaml`` lays build settings over the defaults (:func:`shapes.build_config.build_config_with`), e.g. the
v9 candidates of ``benchmarks/world_configs/``; the card records every setting the build ran with.

The build is a list of stages (:data:`STAGES`) run in order over one :class:`BuildState`; each
stage trains or measures one thing, saves it under ``DIR`` in its library's standard format and
records its figures, sizes and time. Later stages (reward heads, the prompt expander) append
to :data:`STAGES`. The build ends by writing the world card ``DIR/WORLD.md`` and the same figures
as ``DIR/world.json`` (:mod:`shapes.world_card`, the one writer and reader of both).

Layout of ``DIR``::

    clip/        transformers CLIPModel + CLIPTokenizer + CLIPImageProcessor (from_pretrained)
    sd/          diffusers StableDiffusionPipeline directory (from_pretrained)
    sdxl/, sd3/  StableDiffusionXLPipeline and StableDiffusion3Pipeline directories of the same world (same VAE and CLIP)
    aesthetic/   head.safetensors: load_reward("laion_aesthetic", clip_model=DIR/clip, head_path=DIR/aesthetic/head.safetensors)
    preference/  PreferenceScorer directory: load_reward("preference", path=DIR/preference)
    sentiment/   probe.safetensors: load_reward("sentiment", model=DIR/clip, probe_path=DIR/sentiment/probe.safetensors)
    expander/    transformers GPT2LMHeadModel + tokenizer: PromptExpander.from_pretrained(DIR/expander)
    prompts/     train.txt and held_out.txt: the short colour × shape prompts of each split, one a line;
                 train_detailed.txt and held_out_detailed.txt: GenEval-style detailed prompts (size, colour, shape, background)

The alignment reward needs no training: load_reward("clip_score", model=DIR/clip) against the
original prompt. The reward rules are documented in :mod:`shapes.heads`.
    WORLD.md   the world card; world.json the same figures, machine-readable
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from parrot_base.cli import run_cli
from rewards.clip import ClipBackbone
from shapes.build_config import BuildConfig, build_config_with, quick_config
from shapes.card import measure_card
from shapes.clip import (
    build_clip,
    clip_image_processor,
    retrieval_accuracy,
    train_clip,
    train_tokenizer,
)
from shapes.data import Example, generate_examples, write_prompt_files
from shapes.expander import train_world_expander
from shapes.heads import (
    fit_world_aesthetic,
    fit_world_sentiment,
    train_world_preference,
    world_alignment,
)
from shapes.identifiers import train_prefix_invariance
from shapes.sd import (
    build_unet,
    build_vae,
    evaluate_pipeline,
    text_encoder_from_clip,
    train_unet,
    train_vae,
    vae_checker_agreement,
)
from shapes.sd3 import train_world_sd3
from shapes.sdxl import train_world_sdxl
from shapes.world_card import read_record, write_world_card
from t2i.tiny import assemble_sd_pipeline

__all__ = ["STAGES", "OPTIONAL_STAGES", "stages_to_run", "BuildConfig", "BuildState", "build_world", "main", "quick_config", "redo_stages"]


@dataclass
class BuildState:
    """What the stages share: inputs, products so far, and the card's records."""

    config: BuildConfig
    out: Path
    progress: bool = True
    train: list[Example] = field(default_factory=list)
    tokenizer: object = None
    clip: object = None
    vae: object = None
    pipeline: object = None
    figures: dict[str, float] = field(default_factory=dict)
    steps: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    parameters: dict[str, int] = field(default_factory=dict)
    expansions: dict[str, list[str]] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)


def _parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def stage_data(state: BuildState) -> None:
    cfg = state.config
    state.train = generate_examples(cfg.train_examples, cfg.seed, "train", cfg.data)
    for mode in ("short", "tagged"):
        state.figures[f"train_{mode}_fraction"] = sum(e.mode == mode for e in state.train) / len(state.train)
    state.figures["train_prefixed_fraction"] = sum(bool(e.prefix) for e in state.train) / len(state.train)
    write_prompt_files(state.out)


def stage_clip(state: BuildState) -> None:
    cfg = state.config
    torch.manual_seed(cfg.seed)
    captions = [e.caption for e in state.train] + [e.detailed_caption for e in state.train]
    state.tokenizer = train_tokenizer(captions, cfg.clip.bpe_vocab_size, cfg.clip.max_length)
    state.clip = build_clip(state.tokenizer, cfg.clip, cfg.data.image_size)
    record = train_clip(state.clip, state.tokenizer, state.train, cfg.clip, seed=cfg.seed, progress=state.progress)
    state.figures["clip_final_loss"] = record["final_loss"]
    state.steps["clip"] = cfg.clip.steps
    state.parameters["clip"] = _parameter_count(state.clip)
    state.figures["clip_top1_train_pairs"] = retrieval_accuracy(
        state.clip, state.tokenizer, generate_examples(cfg.eval_examples, cfg.seed + 1, "train", cfg.data)
    )
    state.figures["clip_top1_held_out_pairs"] = retrieval_accuracy(
        state.clip, state.tokenizer, generate_examples(cfg.eval_examples, cfg.seed + 2, "held_out", cfg.data)
    )
    directory = state.out / "clip"
    state.clip.save_pretrained(directory)
    state.tokenizer.save_pretrained(directory)
    clip_image_processor(cfg.data.image_size).save_pretrained(directory)


def stage_vae(state: BuildState) -> None:
    cfg = state.config
    torch.manual_seed(cfg.seed)
    state.vae = build_vae(cfg.sd, cfg.data.image_size)
    record = train_vae(state.vae, state.train, cfg.sd, seed=cfg.seed, progress=state.progress)
    state.figures["vae_reconstruction_mse"] = record["reconstruction_mse"]
    state.figures["vae_checker_agreement"] = vae_checker_agreement(
        state.vae, generate_examples(cfg.eval_examples, cfg.seed + 3, "all", cfg.data)
    )
    state.steps["vae"] = cfg.sd.vae_steps
    state.parameters["vae"] = _parameter_count(state.vae)


def stage_unet(state: BuildState) -> None:
    cfg = state.config
    torch.manual_seed(cfg.seed)
    latent_size = cfg.data.image_size // 2 ** (len(cfg.sd.vae_channels) - 1)
    text_encoder = text_encoder_from_clip(state.clip)
    unet = build_unet(cfg.sd, latent_size, text_encoder.config.hidden_size)
    state.pipeline = assemble_sd_pipeline(state.vae, unet, text_encoder, state.tokenizer)
    record = train_unet(state.pipeline, state.train, cfg.sd, seed=cfg.seed, progress=state.progress)
    state.figures["unet_final_loss"] = record["final_loss"]
    state.steps["unet"] = cfg.sd.unet_steps
    state.parameters["unet"] = _parameter_count(unet)
    state.pipeline.save_pretrained(state.out / "sd")


def _sd_pipeline(state: BuildState):
    """This build's SD pipeline, or the built world's for a ``--redo``."""
    if state.pipeline is None:
        from diffusers import StableDiffusionPipeline

        state.pipeline = StableDiffusionPipeline.from_pretrained(state.out / "sd", safety_checker=None)
    return state.pipeline


def stage_identifiers(state: BuildState) -> None:
    """The SD UNet made identifier-robust (:mod:`shapes.identifiers`), saved over ``sd/``. It starts from the UNet
    in hand: after ``unet`` in a build; a ``--redo identifiers`` distils the saved model once more (redo ``unet`` too
    for the recipe from scratch)."""
    cfg = state.config
    torch.manual_seed(cfg.seed)
    figures = train_prefix_invariance(_sd_pipeline(state), state.train, cfg.identifiers, seed=cfg.seed + 30, progress=state.progress)
    figures.pop("seconds")
    state.figures |= figures
    state.steps["identifiers"] = cfg.identifiers.steps
    state.pipeline.save_pretrained(state.out / "sd")


def stage_t2i_eval(state: BuildState) -> None:
    _sd_pipeline(state)
    state.figures.update({f"t2i_{k}": v for k, v in evaluate_pipeline(state.pipeline, state.config.sd, state.config.seed).items()})


def _world_parts(state: BuildState) -> tuple:
    """(VAE, CLIP, tokenizer) of this build, or of the built world on disk for a ``--redo``."""
    if state.vae is not None and state.clip is not None:
        return state.vae, state.clip, state.tokenizer
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPModel

    sd = StableDiffusionPipeline.from_pretrained(state.out / "sd", safety_checker=None)
    return sd.vae, CLIPModel.from_pretrained(state.out / "clip"), sd.tokenizer


def stage_sdxl(state: BuildState) -> None:
    """The SDXL-architecture model (:mod:`shapes.sdxl`) on the same VAE, CLIP and data, and its T2I figures (``sdxl_*``)."""
    cfg = state.config
    torch.manual_seed(cfg.seed)
    _record(state, "sdxl", train_world_sdxl(_world_parts(state), state.train, cfg.sd, state.out / "sdxl", cfg.seed, state.progress))
    state.steps["sdxl"] = cfg.sd.unet_steps


def stage_sd3(state: BuildState) -> None:
    """The SD3-architecture model (:mod:`shapes.sd3`, flow matching) on the same VAE, CLIP and data, and its figures (``sd3_*``)."""
    cfg = state.config
    torch.manual_seed(cfg.seed)
    _record(state, "sd3", train_world_sd3(_world_parts(state), state.train, cfg.sd, cfg.sd3, state.out / "sd3", cfg.seed, state.progress))
    state.steps["sd3"] = cfg.sd3.steps


def _record(state: BuildState, name: str, figures: dict[str, float]) -> None:
    """Figures into the card; ``*_parameters`` entries into the stage's parameter count."""
    for key, value in figures.items():
        if key.endswith("_parameters"):
            state.parameters[name] = int(value)
        else:
            state.figures[key] = value


def _reward_examples(state: BuildState) -> tuple[list[Example], list[Example]]:
    """(fit, held-out) images of every colour × shape pair for the aesthetic head and the sentiment probe."""
    cfg = state.config
    return (
        generate_examples(cfg.heads.examples, cfg.seed + 4, "all", cfg.data),
        generate_examples(cfg.heads.eval_examples, cfg.seed + 5, "all", cfg.data),
    )


def stage_aesthetic(state: BuildState) -> None:
    cfg = state.config
    backbone = ClipBackbone.from_pretrained(state.out / "clip")
    fit, held_out = _reward_examples(state)
    _record(state, "aesthetic", fit_world_aesthetic(backbone, fit, held_out, cfg.heads, state.out / "aesthetic", cfg.seed, state.progress))
    state.steps["aesthetic"] = cfg.heads.aesthetic_epochs * -(-cfg.heads.examples // 256)


def stage_preference(state: BuildState) -> None:
    cfg = state.config
    _record(
        state,
        "preference",
        train_world_preference(state.out / "clip", cfg.heads, cfg.data, state.out / "preference", cfg.seed, state.progress),
    )
    state.steps["preference"] = cfg.heads.preference_epochs * -(-int(cfg.heads.preference_pairs) // cfg.heads.preference_batch_size)


def stage_sentiment(state: BuildState) -> None:
    backbone = ClipBackbone.from_pretrained(state.out / "clip")
    fit, held_out = _reward_examples(state)
    _record(state, "sentiment", fit_world_sentiment(backbone, fit, held_out, state.config.heads, state.out / "sentiment"))


def stage_alignment(state: BuildState) -> None:
    """CLIPScore of the world CLIP (no training): matched vs mismatched short captions of held-out images."""
    cfg = state.config
    state.figures |= world_alignment(state.out / "clip", generate_examples(cfg.eval_examples, cfg.seed + 6, "all", cfg.data))


def stage_expander(state: BuildState) -> None:
    cfg = state.config
    _record(state, "expander", train_world_expander(state.train, cfg.expander, cfg.data, state.out / "expander", cfg.seed, state.progress))
    state.steps["expander"] = cfg.expander.max_steps


def stage_card(state: BuildState) -> None:
    """The sampled figures of :mod:`shapes.card` on the finished world."""
    figures = measure_card(state.out, state.config.card)
    state.expansions = figures.pop("sft_expansions")
    state.figures.update({f"card_{k}": v for k, v in figures.items()})


#: (name, stage) in build order; later stages append here.
STAGES: list[tuple[str, Callable[[BuildState], None]]] = [
    ("data", stage_data),
    ("clip", stage_clip),
    ("vae", stage_vae),
    ("unet", stage_unet),
    ("identifiers", stage_identifiers),
    ("t2i_eval", stage_t2i_eval),
    ("sdxl", stage_sdxl),
    ("sd3", stage_sd3),
    ("aesthetic", stage_aesthetic),
    ("preference", stage_preference),
    ("sentiment", stage_sentiment),
    ("alignment", stage_alignment),
    ("expander", stage_expander),
    ("card", stage_card),
]


#: stages whose products no later stage reads: the SDXL- and SD3-architecture models (issues 15, 16); ``--skip``
#: leaves them out (the SD world of issue 13 alone), and every other stage seeds itself, so the rest is unchanged
OPTIONAL_STAGES = ("sdxl", "sd3")


def stages_to_run(skip: Sequence[str] = ()) -> list[tuple[str, Callable[[BuildState], None]]]:
    """:data:`STAGES` less ``skip`` (only :data:`OPTIONAL_STAGES` may be left out)."""
    refused = [name for name in skip if name not in OPTIONAL_STAGES]
    if refused:
        raise ValueError(f"--skip {' '.join(refused)}: only {', '.join(OPTIONAL_STAGES)} can be left out (later stages read the others)")
    return [(name, stage) for name, stage in STAGES if name not in skip]


def build_world(
    out: str | os.PathLike, config: BuildConfig, progress: bool = True, command: str = "", skip: Sequence[str] = ()
) -> BuildState:
    """Run every stage of :data:`STAGES` but ``skip`` into ``out`` (which must be empty or missing)."""
    stages = stages_to_run(skip)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"output directory {out} is not empty; choose a new --out or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    state = BuildState(config=config, out=out, progress=progress)
    for name, stage in stages:
        start = time.perf_counter()
        stage(state)
        state.seconds[name] = time.perf_counter() - start
    write_world_card(state, [name for name, _ in stages], command or f"python -m shapes.build --out {out}", load)
    return state


def redo_stages(out: str | os.PathLike, config: BuildConfig, names: list[str], progress: bool = True, command: str = "") -> BuildState:
    """Re-run the named stages on the built world in ``out`` (the training data is regenerated from
    the seed), keeping every other stage's products and figures; rewrites WORLD.md and world.json."""
    out = Path(out)
    known = [name for name, _ in STAGES]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; choose from {known}")
    record = read_record(out)
    state = BuildState(config=config, out=out, progress=progress)
    state.figures, state.seconds = record["figures"], record["seconds"]
    state.steps, state.parameters = record["steps"], record["parameters"]
    expansions = record.get("sft_expansions", {})
    # worlds before the card decoded by beam search recorded the sampled expansions alone, as a list
    state.expansions = {"sampled": expansions} if isinstance(expansions, list) else expansions
    state.commands = record.get("commands", ["an earlier build (its commands were not recorded)"])
    load = os.getloadavg()
    for name, stage in STAGES:
        if name == "data" or name in names:
            start = time.perf_counter()
            stage(state)
            state.seconds[name] = time.perf_counter() - start
    write_world_card(state, [name for name, _ in STAGES], command or f"python -m shapes.build --out {out} --redo {' '.join(names)}", load)
    return state


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output directory (created; must be empty)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the whole build")
    parser.add_argument("--quick", action="store_true", help="toy sizes: runs end to end in seconds")
    parser.add_argument("--overwrite", action="store_true", help="delete --out first if it exists")
    parser.add_argument(
        "--config", type=Path, default=None, help="YAML file of build settings laid over the defaults, e.g. 'data: {light_strength: 0.2}'"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument(
        "--redo", nargs="+", default=[], metavar="STAGE", help="re-run only these stages on the built world in --out (e.g. expander card)"
    )
    parser.add_argument(
        "--skip", nargs="+", default=[], metavar="STAGE", help=f"leave out these stages (any of {', '.join(OPTIONAL_STAGES)})"
    )
    args = parser.parse_args(argv)
    if args.skip and args.redo:
        raise ValueError("--skip is for a whole build; --redo names the stages it runs")
    stages_to_run(args.skip)  # refuse a wrong --skip before anything is deleted or built
    config = build_config_with(args.config, args.seed, quick=args.quick)
    command = "python -m shapes.build --out DIR" + (" --quick" if args.quick else "") + f" --seed {args.seed}"
    command += f" --config {args.config.name}" if args.config else ""
    command += f" --skip {' '.join(args.skip)}" if args.skip else ""
    if args.redo:
        state = redo_stages(args.out, config, args.redo, progress=not args.no_progress, command=command + " --redo " + " ".join(args.redo))
        print(json.dumps({k: state.figures[k] for k in sorted(state.figures)}, indent=1))
        return
    if args.overwrite and Path(args.out).exists():
        shutil.rmtree(args.out)
    state = build_world(args.out, config, progress=not args.no_progress, command=command, skip=args.skip)
    print(json.dumps(state.figures, indent=1))
    print(f"world card: {Path(args.out) / 'WORLD.md'}")


if __name__ == "__main__":
    run_cli(main)
