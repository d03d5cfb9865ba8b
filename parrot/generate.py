"""``python -m parrot.generate``: turn user prompts into images the way Parrot does at inference.

For each original prompt c: the expander (optional) samples an expansion ĉ, the reward
identifiers "<k1> <k2> …" are prepended to it (Parrot, Lee et al. 2024, §3.3; default: all the
LoRA was trained with), and the T2I model samples with original-prompt-centred guidance

    ε̄ = w1·ε(x_t, c) + (1 − w1 − w2)·ε(x_t, ∅) + w2·ε(x_t, "<ids>, ĉ")

(``--guidance cfg``: plain classifier-free guidance with ``--guidance_scale`` on "<ids>, ĉ";
w1 = 0 is the same thing). ∅ is ``--negative_prompt``. Prompts and negative prompts may use
compel's weighting syntax, ``(oil on canvas)+++`` / ``(blurry)--`` (see
:mod:`t2i.prompt_weighting`). ``--best_of N --rank_by REWARD`` keeps, for every image, the
best of N candidates (:func:`parrot.best_of_n.best_of_n`); ``--rewards a,b,c`` scores every
kept image against the ORIGINAL prompt.

Outputs in ``--out DIR``: ``images/00000.png …``, ``results.jsonl`` (one row per image:
prompt, expanded_prompt, identifiers, seed, w1, w2, image, rewards) and ``grid.png`` (one row
per prompt).

    python -m parrot.generate --prompt "a red circle" --images_per_prompt 4 --out runs/gen
    python -m parrot.generate --model runwayml/stable-diffusion-v1-5 --lora runs/parrot/final/lora \\
        --expander runs/parrot/final/expander --prompts_file ../shared/data/PartiPrompts.tsv \\
        --max_prompts 16 --rewards laion_aesthetic,clip_score --out runs/gen
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from diffusers.utils import make_image_grid
from tqdm.auto import tqdm

from parrot.best_of_n import best_of_n
from parrot.identifiers import TOKEN_TEMPLATE, IdentifierConfig, token_dir, with_identifiers
from parrot.models import build_evaluator, build_policy, resolve_reward_settings
from parrot.prompts import read_prompts
from parrot.run_dir import lora_training_config
from parrot.sample import prepare_output_dir
from parrot_base.cli import run_cli
from parrot_base.config import parse_config
from prompt_expander.config import ExpanderSamplingConfig
from prompt_expander.expander import PromptExpander
from rewards.base import as_pil_images, expansion_metadata
from rewards.registry import reward_names
from t2i import DiffusionPolicy, Guidance
from t2i.flux import FluxPolicy
from t2i.prompt_weighting import has_weighting, plain_prompt, reads_weighting, supports_prompt_weighting, with_prompt_weighting
from t2i.textual_inversion import load_token_embeddings

__all__ = [
    "GenerateConfig",
    "parse_reward_list",
    "training_identifiers",
    "load_generation_policy",
    "run_generation",
    "main",
]

logger = logging.getLogger(__name__)

AUTO = "auto"


@dataclass
class GenerateConfig:
    """Generate images from prompts with a (Parrot-trained) diffusion model."""

    prompt: str = field(default="", metadata={"help": "one prompt (or use --prompts_file)"})
    prompts_file: str = field(
        default="", metadata={"help": "prompt file: .txt (one per line), .tsv (a 'Prompt' column) or .jsonl ('prompt' key)"}
    )
    max_prompts: int = field(default=0, metadata={"help": "use only the first N prompts of the file (0: all)"})
    model: str = field(default="builtin:tiny", metadata={"help": "hub id or local SD-family pipeline directory, or 'builtin:tiny'"})
    dtype: str = field(default="float32", metadata={"help": "model dtype: float32, float16, bfloat16"})
    device: str = field(default="cpu", metadata={"help": "torch device"})
    lora: tuple[str, ...] = field(
        default=(), metadata={"help": "diffusers-format LoRA directories (e.g. RUN/final/lora, a 'wrong' LoRA); all active"}
    )
    textual_inversion: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "token-embedding directories (parrot.wrong_lora --pivotal true: OUT/embeddings), loaded first; a LoRA's "
            "trained identifier tokens (identifiers.trainable_tokens) load by themselves"
        },
    )
    expander: str = field(default="", metadata={"help": "prompt expander directory or hub id (empty: ĉ = c)"})
    expander_temperature: float = field(default=1.0, metadata={"help": "expander sampling temperature"})
    expander_top_p: float = field(default=1.0, metadata={"help": "expander nucleus mass"})
    identifiers: tuple[str, ...] = field(
        default=(AUTO,),
        metadata={"help": "reward identifiers to prepend: 'auto' (all the first LoRA's training run used), 'none', or names"},
    )
    identifier_template: str = field(
        default="", metadata={"help": "identifier text for reward {name}; empty: the training run's, else '<{name}>'"}
    )
    guidance: Literal["auto", "prompt_centred", "cfg"] = field(
        default="auto", metadata={"help": "'prompt_centred' (w1, w2), 'cfg' (guidance_scale), 'auto': centred iff an expander is used"}
    )
    w1: float = field(default=5.0, metadata={"help": "weight of the original prompt c (prompt-centred guidance)"})
    w2: float = field(default=5.0, metadata={"help": "weight of the expanded prompt ĉ (prompt-centred guidance)"})
    guidance_scale: float = field(default=7.5, metadata={"help": "CFG scale (guidance cfg)"})
    distilled_guidance: float = field(
        default=0.0,
        metadata={
            "help": "FLUX.1-dev: the value g of its guidance embedding (0: the --lora's training run's model.distilled_guidance, "
            "else FluxPipeline's 3.5); other models have none"
        },
    )
    negative_prompt: str = field(default="", metadata={"help": "prompt of the ∅ branch, e.g. 'wrong' with a wrong LoRA"})
    prompt_weighting: bool = field(
        default=True, metadata={"help": "parse compel weighting syntax like '(red)++' in prompts (SD 1.x/2.x and SDXL models)"}
    )
    num_steps: int = field(default=50, metadata={"help": "DDIM steps", "formerly": "steps"})
    eta: float = field(default=0.0, metadata={"help": "DDIM η (0: deterministic)"})
    seed: int = field(default=0, metadata={"help": "image j of every prompt uses seed + j (best-of-N: one generator seeded with it)"})
    images_per_prompt: int = field(default=1, metadata={"help": "images per prompt"})
    batch_size: int = field(default=8, metadata={"help": "images per sampling call"})
    best_of: int = field(default=1, metadata={"help": "N candidates per image, the best by --rank_by kept (1: off)"})
    rank_by: str = field(default="", metadata={"help": "reward that ranks best-of-N candidates"})
    rewards: tuple[str, ...] = field(default=(), metadata={"help": "rewards scoring every image, 'a,b,c' or 'a b c'"})
    reward_settings: dict[str, dict[str, Any]] = field(
        default_factory=dict,
        metadata={"help": "per-reward settings {name: {key: value}} (YAML only); 'builtin:tiny_clip' builds a toy CLIP"},
    )
    out: Path = field(default=Path("runs/generate"), metadata={"help": "output directory"})
    overwrite: bool = field(default=False, metadata={"help": "replace a non-empty output directory"})

    def __post_init__(self) -> None:
        for name in ("num_steps", "images_per_prompt", "batch_size", "best_of"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.max_prompts < 0:
            raise ValueError(f"max_prompts={self.max_prompts} must be >= 0")
        if self.prompt and self.prompts_file:
            raise ValueError("give only one of --prompt TEXT and --prompts_file FILE")
        if not self.prompts_file and not self.prompt.strip():
            raise ValueError("--prompt is empty: give the text to draw (or --prompts_file FILE)")
        if self.best_of > 1 and not self.rank_by:
            raise ValueError(f"best_of={self.best_of} needs --rank_by REWARD to rank the candidates")


# ----- inputs -----------------------------------------------------------------------------------
def parse_reward_list(items: Sequence[str], option: str = "--rewards") -> list[str]:
    """Registered reward names from 'a,b,c' / ['a', 'b'] items; unknown names are refused by name."""
    names = [name.strip() for item in items for name in item.split(",") if name.strip()]
    known = reward_names()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"{option}: unknown reward(s) {unknown}; known rewards: {', '.join(known)}")
    if len(set(names)) != len(names):
        raise ValueError(f"{option}: {names} repeats a reward")
    return names


def training_identifiers(lora_dir: str | Path | None) -> tuple[list[str], str | None]:
    """(reward names, identifier template) the LoRA's training run used; ([], None) when unknown or off."""
    config = lora_training_config(lora_dir) if lora_dir else None
    if not config:
        return [], None
    ids = config.get("identifiers", {})
    template = TOKEN_TEMPLATE if ids.get("trainable_tokens") else ids.get("template")
    if not ids.get("enabled", True):
        return [], template
    return list(config.get("rewards", {}).get("names", [])), template


def trained_token_dirs(lora_dir: str | Path) -> list[Path]:
    """The identifier tokens the LoRA's training run trained (``identifiers.trainable_tokens``): one folder per reward
    beside the LoRA folder; [] when the run trained none."""
    config = lora_training_config(lora_dir) or {}
    if not config.get("identifiers", {}).get("trainable_tokens"):
        return []
    folders = [token_dir(lora_dir, name) for name in config.get("rewards", {}).get("names", [])]
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        raise FileNotFoundError(f"the LoRA {str(lora_dir)!r} was trained with identifier tokens, but {missing[0]!r} is missing")
    return folders


def resolve_identifiers(config: GenerateConfig) -> tuple[list[str], str]:
    """The reward names whose identifiers are prepended, and the identifier template."""
    trained, trained_template = training_identifiers(config.lora[0] if config.lora else None)
    template = config.identifier_template or trained_template or "<{name}>"
    IdentifierConfig(template=template)  # the one check of a template (refuses it naming the problem)
    chosen = tuple(config.identifiers)
    if chosen in ((AUTO,),):
        if config.lora and not trained:
            logger.info("no training config found next to %s: no identifiers prepended", config.lora[0])
        return trained, template
    if chosen in (("none",), ()):
        return [], template
    names = [name.strip() for item in chosen for name in item.split(",") if name.strip()]
    unknown = [n for n in names if trained and n not in trained]
    if unknown:
        raise ValueError(f"--identifiers {unknown}: the LoRA was trained with identifiers for {trained} only")
    return names, template


# ----- model ------------------------------------------------------------------------------------
def load_generation_policy(config: GenerateConfig) -> DiffusionPolicy:
    """The T2I model with every token embedding of ``--textual_inversion`` and every LoRA of ``--lora`` loaded and
    active (compel-weighted prompts unless off)."""
    policy = build_policy(config.model, config.dtype, config.device, distilled_guidance=generation_distilled_guidance(config))
    if config.distilled_guidance and not isinstance(policy, FluxPolicy):
        raise ValueError(f"--distilled_guidance applies to FLUX.1 models only; {config.model} is a {type(policy).__name__}")
    trained_tokens = trained_token_dirs(config.lora[0]) if config.lora else []
    for directory in [*trained_tokens, *config.textual_inversion]:
        load_token_embeddings(policy.pipeline, directory)
    if config.prompt_weighting and supports_prompt_weighting(policy):
        policy = with_prompt_weighting(policy)
    names = []
    for i, directory in enumerate(config.lora):
        name = f"lora{i}"
        policy.load_lora(directory, adapter_name=name, trainable=False)
        names.append(name)
    if len(names) > 1:
        policy.pipeline.set_adapters(names)
    return policy


def generation_distilled_guidance(config: GenerateConfig) -> float | None:
    """FLUX's guidance value g: ``--distilled_guidance``, else the first LoRA's training run's, else None (the family's default)."""
    if config.distilled_guidance:
        return config.distilled_guidance
    trained = lora_training_config(config.lora[0]) if config.lora else None
    return (trained or {}).get("model", {}).get("distilled_guidance")


def expand_prompts(config: GenerateConfig, prompts: list[str]) -> list[str]:
    """ĉ for every image (prompt-major, ``images_per_prompt`` per prompt); ĉ = c without an expander."""
    repeated = [p for p in prompts for _ in range(config.images_per_prompt)]
    if not config.expander:
        return repeated
    sampling = ExpanderSamplingConfig(temperature=config.expander_temperature, top_p=config.expander_top_p)
    expander = PromptExpander.from_pretrained(config.expander, sampling).to(config.device)
    return expander.sample(prompts, config.images_per_prompt, generator_seed=config.seed).texts


def guidance_of(config: GenerateConfig) -> Guidance:
    mode = config.guidance
    if mode == "auto":
        mode = "prompt_centred" if config.expander else "cfg"
    return Guidance.choose(mode == "prompt_centred", config.w1, config.w2, config.guidance_scale)


# ----- generation -------------------------------------------------------------------------------
def sample_images(
    policy: DiffusionPolicy, config: GenerateConfig, conditioned: list[str], originals: list[str], guidance: Guidance
) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """One image per row; image j of each prompt from its own generator seeded with seed + j."""
    seeds = [config.seed + i % config.images_per_prompt for i in range(len(conditioned))]
    common = dict(guidance=guidance, negative_prompt=config.negative_prompt, num_inference_steps=config.num_steps, eta=config.eta)
    images, extra = [], []
    if config.best_of > 1:
        result = best_of_n(
            policy,
            conditioned,
            config.rank_by,
            config.best_of,
            1,
            original_prompts=originals,
            seed=config.seed,
            batch_size=config.batch_size,
            reward_settings=_reward_settings(config, [config.rank_by])[config.rank_by],
            **common,
        )
        kept = result.kept_indices[:, 0]
        for row, index in enumerate(kept.tolist()):
            extra.append(
                {
                    "seed": config.seed,
                    "best_of": config.best_of,
                    "candidate": index,
                    "rank_by": {config.rank_by: float(result.scores[row, index])},
                }
            )
        return result.kept_images[:, 0], extra
    for start in tqdm(range(0, len(conditioned), config.batch_size), desc="generating", disable=len(conditioned) <= config.batch_size):
        chunk = slice(start, start + config.batch_size)
        generators = [torch.Generator(device=policy.device).manual_seed(s) for s in seeds[chunk]]
        trajectory = policy.sample(
            conditioned[chunk],
            original_prompts=originals[chunk],
            generator=generators,
            compute_log_probs=False,
            progress=len(conditioned) <= config.batch_size,
            **common,
        )
        images.append(trajectory.images.cpu())
    return torch.cat(images), [{"seed": s} for s in seeds]


def _reward_settings(config: GenerateConfig, names: list[str]) -> dict[str, dict[str, Any]]:
    return resolve_reward_settings(names, config.reward_settings, config.out / ".builtin", config.device, build=True)


def score_images(config: GenerateConfig, names: list[str], images: torch.Tensor, originals: list[str], expanded: list[str]):
    """Every reward of ``names`` on every image, against the ORIGINAL prompts; one dict per image."""
    if not names:
        return [{} for _ in originals]
    with build_evaluator(_reward_settings(config, names)) as evaluator:
        scores = evaluator(images, originals, expansion_metadata(expanded))
    return scores.as_dicts()


def run_generation(config: GenerateConfig) -> list[dict[str, Any]]:
    """Generate, score and write every output; returns the results.jsonl rows."""
    prompts = [config.prompt] if config.prompt else read_prompts(config.prompts_file, config.max_prompts)
    names = parse_reward_list(config.rewards)
    if config.best_of > 1:
        parse_reward_list([config.rank_by], "--rank_by")
    identifiers, template = resolve_identifiers(config)
    guidance = guidance_of(config)
    prepare_output_dir(config.out, config.overwrite)

    policy = load_generation_policy(config)
    weighted = reads_weighting(policy)  # load_generation_policy decided it
    literal = [p for p in [*prompts, config.negative_prompt] if config.prompt_weighting and not weighted and has_weighting(p)]
    if literal:
        raise ValueError(
            f"compel's weighting syntax in {literal[0]!r} is read for SD 1.x/2.x and SDXL models only; {config.model} is a "
            f"{type(policy).__name__}: pass --prompt_weighting false to use the prompt as written"
        )
    expanded = expand_prompts(config, prompts)
    originals = [p for p in prompts for _ in range(config.images_per_prompt)]
    conditioned = [with_identifiers(e, identifiers, template) for e in expanded]
    images, extras = sample_images(policy, config, conditioned, originals, guidance)
    scored_prompts = [plain_prompt(p) for p in originals] if weighted else originals
    scores = score_images(config, names, images, scored_prompts, expanded)

    w1, w2 = guidance.prompt_centred_weights
    pictures = as_pil_images(images)
    rows = []
    for i, picture in enumerate(pictures):
        name = f"images/{i:05d}.png"
        picture.save(config.out / name)
        rows.append(
            {
                "prompt": originals[i],
                "expanded_prompt": expanded[i],
                "identifiers": identifiers,
                "conditioned_prompt": conditioned[i],
                "w1": w1,
                "w2": w2,
                "image": name,
                "rewards": scores[i],
            }
            | extras[i]
        )
    (config.out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    grid = make_image_grid(pictures, rows=len(prompts), cols=config.images_per_prompt)
    grid.save(config.out / "grid.png")
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    config = parse_config(GenerateConfig, argv)
    rows = run_generation(config)
    for row in rows:
        scores = "  ".join(f"{k}={v:.4g}" for k, v in row["rewards"].items())
        sys.stdout.write(f"{row['image']}  {row['conditioned_prompt']!r}  {scores}\n")
    sys.stdout.write(f"wrote {len(rows)} image(s), results.jsonl and grid.png to {config.out}\n")
    return rows


if __name__ == "__main__":
    run_cli(main)
