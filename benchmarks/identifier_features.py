"""How far apart are the reward identifiers where the UNet reads them? (Parrot's Fig. 7 on the shapes world)

Identifier k can only ask for reward k if the T2I model's conditioning tells "<k>, ĉ" from "<j>, ĉ":
a LoRA on the UNet reads the text tower's output sequence, so if the tower maps every identifier to
nearly the same states, no UNet update can make them differ. For each identifier template this
script measures, on training captions of the world (``shapes.data.generate_examples``, prefix
removed) encoded by the SD model's tower and one noised training latent each at timestep ``--t``:

- ``features id-vs-id``: mean over identifier pairs of ‖H("<a>, c") − H("<b>, c")‖², as a share of
  the prefix's own effect mean_a ‖H("<a>, c") − H(c)‖² (H: the tower's output sequence, all positions);
- ``first position``: the same at the first identifier token alone (causal tower: it sees only the
  start token and itself), as a share of its squared norm;
- ``ε id-vs-id`` and ``ε prefix``: mean ‖ε("<a>, c") − ε("<b>, c")‖² and mean ‖ε("<a>, c") − ε(c)‖²
  of the UNet's conditional prediction, as shares of the conditional signal ‖ε(c) − ε(∅)‖².

A world whose identifiers leave pixels alone (goal 6) has a small ε prefix share; Fig. 7 needs the
id-vs-id shares not to vanish with it.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/identifier_features.py --templates '{name:.1}' '{name:.3}'
"""

from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import replace
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline

from parrot.identifiers import IdentifierConfig, identifier
from parrot.models import committed_shapes_world
from parrot.presets import PRESETS
from parrot_base.cli import run_cli
from shapes.build_config import BuildConfig
from shapes.data import generate_examples, with_prefix
from shapes.sd import encode_latents
from t2i.families import policy_of_pipeline

__all__ = ["mean_square", "between_identifiers", "from_reference", "identifier_shares", "main"]


def mean_square(x: torch.Tensor) -> float:
    return float((x.double() ** 2).mean())


def between_identifiers(values: dict[str, torch.Tensor]) -> float:
    """mean over identifier pairs (a, b) of mean ‖values[a] − values[b]‖²."""
    pairs = list(itertools.combinations(values, 2))
    return sum(mean_square(values[a] - values[b]) for a, b in pairs) / len(pairs)


def from_reference(values: dict[str, torch.Tensor], reference: torch.Tensor) -> float:
    """mean over identifiers a of mean ‖values[a] − reference‖² (reference 0: the mean squared norm)."""
    return sum(mean_square(v - reference) for v in values.values()) / len(values)


def identifier_shares(features: dict[str, torch.Tensor], plain_features: torch.Tensor, first: dict[str, torch.Tensor]) -> dict[str, float]:
    """The two feature shares of the module docstring from H per identifier text (B, L, D), H(c) and the first
    identifier token's state per identifier (B, D)."""
    return {
        "features_id_vs_id": between_identifiers(features) / from_reference(features, plain_features),
        "first_position_id_vs_id": between_identifiers(first) / from_reference(first, torch.zeros(())),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="an SD pipeline directory; default: the committed world's sd/")
    parser.add_argument("--templates", nargs="+", default=["{name:.1}"], help="identifier templates to compare")
    parser.add_argument("--captions", type=int, default=128, help="training captions (one latent each)")
    parser.add_argument("--t", type=int, default=500, help="the timestep at which ε is compared")
    parser.add_argument("--json", default="", help="also write the figures here")
    args = parser.parse_args(argv)
    for template in args.templates:
        IdentifierConfig(template=template)  # one clear line for a template that is not a format of {name}
    if args.captions < 1:
        raise ValueError(f"--captions {args.captions}: need at least 1")
    model = Path(args.model) if args.model else committed_shapes_world() / "sd"
    if not (model / "model_index.json").is_file():
        raise FileNotFoundError(f"--model {str(model)!r} is not an SD pipeline directory (no model_index.json)")
    torch.manual_seed(0)
    pipeline = StableDiffusionPipeline.from_pretrained(model, safety_checker=None)
    policy = policy_of_pipeline(pipeline)
    steps = pipeline.scheduler.config.num_train_timesteps
    if not 0 <= args.t < steps:
        raise ValueError(f"--t {args.t}: the scheduler's timesteps are 0 … {steps - 1}")
    examples = generate_examples(4 * args.captions, 0, "train", BuildConfig().data)[: args.captions]
    captions = [replace(e, prefix="").caption for e in examples]
    latents = encode_latents(pipeline.vae, examples)
    t = torch.full((len(captions),), args.t)
    noisy = pipeline.scheduler.add_noise(latents, torch.randn(latents.shape, generator=torch.Generator().manual_seed(0)), t)
    names = PRESETS["shapes"]["rewards"]["names"]
    figures = {}
    with torch.no_grad():
        plain = policy.encode_prompts(captions)
        eps_plain = policy.unet_forward(noisy, t, plain)
        signal = mean_square(eps_plain - policy.unet_forward(noisy, t, policy.encode_prompts([""] * len(captions))))
        for template in args.templates:
            texts = [identifier(template, n) for n in names]
            embeds = {a: policy.encode_prompts([with_prefix(c, a) for c in captions]) for a in texts}
            eps = {a: policy.unet_forward(noisy, t, embeds[a]) for a in texts}
            states = {a: e["encoder_hidden_states"] for a, e in embeds.items()}
            shares = identifier_shares(states, plain["encoder_hidden_states"], {a: s[:, 1] for a, s in states.items()})
            shares["eps_id_vs_id"] = between_identifiers(eps) / signal
            shares["eps_prefix"] = from_reference(eps, eps_plain) / signal
            shares["identifiers"] = texts
            shares["tokens"] = [pipeline.tokenizer(a, add_special_tokens=False).input_ids for a in texts]
            figures[template] = shares
    print(f"model {model}; {len(captions)} training captions, ε at t = {args.t}")
    print("| template | identifiers | features id-vs-id / prefix | first position id-vs-id | ε id-vs-id | ε prefix |")
    print("|---|---|---:|---:|---:|---:|")
    for template, f in figures.items():
        print(
            f"| `{template}` | {' '.join(f['identifiers'])} | {f['features_id_vs_id']:.4f} | {f['first_position_id_vs_id']:.4f} | "
            f"{f['eps_id_vs_id']:.5f} | {f['eps_prefix']:.5f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    run_cli(main)
