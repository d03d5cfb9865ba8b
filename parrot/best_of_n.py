"""Best-of-N reranking at inference: generate N candidates per prompt, keep the top k by a named reward.

ImageReward (Xu et al. 2023) reports "top-1 of 64" selection; here N and k are free. For
prompt c_p the candidates are x_{p,1..N} ~ π(·|c_p); the kept set is the k candidates with the
largest r(x_{p,j}, c_p), best first. Rewards score against the ORIGINAL prompt (pass
``original_prompts`` when the policy samples from expansions).

    python -m parrot.best_of_n --reward jpeg_compressibility --prompt "a red circle" --n 8 --k 2 --out runs/bon

(``--model`` defaults to ``builtin:tiny``, the random toy pipeline; ``python -m parrot.generate
--best_of N --rank_by REWARD`` keeps the best of N per image the same way, with an expander and
identifiers.)
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

from parrot.models import build_policy
from parrot_base.cli import run_cli
from parrot_base.config import RUNNER_OPTIONS_HELP, OneLineArgumentParser
from rewards.base import Reward, as_pil_images
from rewards.registry import load_reward
from t2i import Guidance

__all__ = ["BestOfN", "best_of_n", "main"]

logger = logging.getLogger(__name__)


@dataclass
class BestOfN:
    """P prompts × N candidates; ``kept_*`` are the top k per prompt, best first."""

    prompts: list[str]
    reward_name: str
    candidates: torch.Tensor  # (P, N, 3, H, W) in [0, 1]
    scores: torch.Tensor  # (P, N)
    kept_indices: torch.Tensor  # (P, k) candidate indices, best first

    @property
    def kept_images(self) -> torch.Tensor:
        """(P, k, 3, H, W)."""
        return torch.stack([self.candidates[p, idx] for p, idx in enumerate(self.kept_indices)])

    @property
    def kept_scores(self) -> torch.Tensor:
        """(P, k), descending along k."""
        return torch.gather(self.scores, 1, self.kept_indices)


def best_of_n(
    policy,
    prompts: Sequence[str],
    reward: Reward | str,
    n: int = 8,
    k: int = 1,
    *,
    original_prompts: Sequence[str] | None = None,
    seed: int = 0,
    batch_size: int = 16,
    reward_settings: dict[str, Any] | None = None,
    **sample_kwargs: Any,
) -> BestOfN:
    """Sample N images per prompt with ``policy.sample`` and keep the top k by ``reward``.

    ``reward`` is a :class:`Reward` or a registered name (loaded with ``reward_settings``);
    ``sample_kwargs`` go to ``StableDiffusionPolicy.sample`` (default: deterministic DDIM,
    η = 0, no log-probs). Candidates are drawn from one generator seeded with ``seed``.
    """
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts is empty: give at least one prompt")
    if n < 1 or not 1 <= k <= n:
        raise ValueError(f"need n >= 1 and 1 <= k <= n; got n={n}, k={k}")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    if original_prompts is not None and len(original_prompts) != len(prompts):
        raise ValueError(f"original_prompts has {len(original_prompts)} prompts but prompts has {len(prompts)}")
    if isinstance(reward, str):
        reward = load_reward(reward, **(reward_settings or {}))
    elif reward_settings:
        raise TypeError("reward_settings apply only when the reward is given by name")
    sample_kwargs.setdefault("eta", 0.0)
    sample_kwargs.setdefault("compute_log_probs", False)

    flat_prompts = [p for p in prompts for _ in range(n)]
    flat_originals = None if original_prompts is None else [c for c in original_prompts for _ in range(n)]
    generator = torch.Generator(device=policy.device).manual_seed(seed)
    images = []
    for start in tqdm(range(0, len(flat_prompts), batch_size), desc="best-of-N sampling", leave=False):
        chunk = slice(start, start + batch_size)
        extra = {} if flat_originals is None else {"original_prompts": flat_originals[chunk]}
        images.append(policy.sample(flat_prompts[chunk], generator=generator, **extra, **sample_kwargs).images.cpu())
    images = torch.cat(images)
    metadata = [{} if flat_originals is None else {"expanded_prompt": p} for p in flat_prompts]
    scores = reward(images, flat_originals or flat_prompts, metadata)
    scores = torch.nan_to_num(scores, nan=float("-inf"))  # a NaN candidate is never kept
    scores = scores.view(len(prompts), n)
    kept = scores.argsort(dim=1, descending=True, stable=True)[:, :k]
    return BestOfN(prompts, reward.name, images.view(len(prompts), n, *images.shape[1:]), scores, kept)


#: options of the command's first home (rewards.best_of_n) → their names here
_RENAMED = {
    "--pipeline": "--model",
    "--tiny": "--model builtin:tiny",
    "--steps": "--num_steps",
    "--guidance-scale": "--guidance_scale",
    "--batch-size": "--batch_size",
    "--reward-setting": "--reward_setting",
}


def _parse_setting(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--reward_setting {text!r} must look like key=value")
    key, value = text.split("=", 1)
    return key, yaml.safe_load(value)


def main(argv: Sequence[str] | None = None) -> BestOfN:
    parser = OneLineArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=RUNNER_OPTIONS_HELP,
        allow_abbrev=False,
        renamed=_RENAMED,
    )
    parser.add_argument(
        "--model",
        default="builtin:tiny",
        help="hub id or local SD 1.x/2.x, SDXL, SD3 or FLUX.1 pipeline directory, or 'builtin:tiny' / 'builtin:tiny_sdxl' / "
        "'builtin:tiny_sd3' / 'builtin:tiny_flux' (random toys)",
    )
    parser.add_argument("--dtype", default="float32", help="model dtype: float32, float16, bfloat16")
    parser.add_argument("--reward", required=True, help="registered reward name")
    parser.add_argument("--reward_setting", action="append", default=[], type=_parse_setting, help="key=value, repeatable")
    parser.add_argument("--prompt", action="append", required=True, help="prompt (repeatable)")
    parser.add_argument("--n", type=int, default=8, help="candidates per prompt")
    parser.add_argument("--k", type=int, default=1, help="images kept per prompt")
    parser.add_argument("--num_steps", type=int, default=50, help="DDIM steps")
    parser.add_argument("--guidance_scale", type=float, default=7.5, help="classifier-free guidance scale")
    parser.add_argument(
        "--distilled_guidance", type=float, default=None, help="FLUX.1-dev: the value g of its guidance embedding (default 3.5)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch_size", type=int, default=16, help="images per sampling call")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", required=True, help="output directory for the kept images and scores.json")
    args = parser.parse_args(argv)

    policy = build_policy(args.model, args.dtype, args.device, distilled_guidance=args.distilled_guidance)
    settings = dict(args.reward_setting)
    settings.setdefault("device", args.device)
    result = best_of_n(
        policy,
        args.prompt,
        args.reward,
        args.n,
        args.k,
        seed=args.seed,
        batch_size=args.batch_size,
        reward_settings=settings,
        num_inference_steps=args.num_steps,
        guidance=Guidance.cfg(args.guidance_scale),
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for p, prompt in enumerate(result.prompts):
        kept = result.kept_indices[p].tolist()
        for rank, (index, image) in enumerate(zip(kept, as_pil_images(result.kept_images[p]))):
            image.save(out / f"prompt{p:03d}_rank{rank}_cand{index}.png")
        records.append({"prompt": prompt, "scores": result.scores[p].tolist(), "kept": kept})
    (out / "scores.json").write_text(json.dumps({"reward": result.reward_name, "results": records}, indent=2))
    for record in records:
        print(json.dumps({"prompt": record["prompt"], "kept": record["kept"], "best": max(record["scores"])}))
    return result


if __name__ == "__main__":
    run_cli(main)
