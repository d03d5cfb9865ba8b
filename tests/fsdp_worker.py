"""GRPO on the toy FLUX in each of 2 processes, sharded (FSDP2) and data parallel (run by torchrun from
test_parrot_fsdp.py).

The FSDP runs read accelerate's FSDP plugin from the environment an FSDP ``accelerate launch`` sets
(``ACCELERATE_USE_FSDP``, ``FSDP_*``: :data:`FSDP_ENV`); the data-parallel run has none of it. Every run zeroes
the advantages of process 1's images (``parrot.train.batch_advantages`` wrapped), so process 1 has no trained image
and, under FSDP, must still take part in every forward and backward of the sharded transformer. Writes OUT/<run>/
(the run directory), OUT/updates-<run>-rank<r>.json (the T2I update's statistics of each iteration: loss, grad_norm)
and OUT/shards-rank<r>.json (this process's numel of the transformer's parameters).

  fsdp     2 iterations under FSDP, a checkpoint after each, held-out evaluation on
  dp       1 iteration data parallel (the existing path): its LoRA is FSDP's checkpoint 1
  resumed  FSDP from fsdp's checkpoint 1 (copied) to iteration 2: its LoRA is fsdp's final one
  kl-*, rwr-*  1 iteration with DPOK's KL / reward-weighted regression, sharded and data parallel (:data:`VARIANTS`)
"""

import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_parrot_train import quick_args  # noqa: E402

import parrot.train  # noqa: E402
from parrot.credit import batch_advantages  # noqa: E402
from parrot.run_dir import RunDir  # noqa: E402
from parrot.sharding import reshard  # noqa: E402
from parrot.t2i_update import update_t2i  # noqa: E402
from parrot.train import ParrotTrainer  # noqa: E402
from parrot.train_config import load_train_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# what `accelerate launch --config_file configs/accelerate_fsdp.yaml` exports (test_parrot_fsdp checks the file gives these)
FSDP_ENV = {
    "ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
    "FSDP_TRANSFORMER_CLS_TO_WRAP": "FluxTransformerBlock,FluxSingleTransformerBlock", "FSDP_RESHARD_AFTER_FORWARD": "true",
}  # fmt: skip
# GRPO (the shipped YAML) on the toy FLUX, CFG-free; 1 prompt × G = 4 images per process in 2 minibatches; no KL, so
# that an image with A = 0 is not trained
GRPO_FLUX = ["--config", str(REPO / "configs" / "grpo_tiny_sd3.yaml"), "--model.pipeline", "builtin:tiny_flux",
             "--t2i.kl_weight", "0", "--t2i.minibatches", "2", "--checkpoint_every", "1"]  # fmt: skip
EVALUATION = ["--evaluation.enabled", "true", "--evaluation.seeds", "0", "--prompts.max_evaluation", "1"]
# other paths through the sharded model: DPOK's KL to the LoRA-off transformer (adapters switched off under FSDP,
# every image trained), and DPOK's reward-weighted regression (w = max(A, 0): process 1 again trains nothing)
VARIANTS = {"kl": ["--t2i.kl_weight", "0.01"], "rwr": ["--t2i.estimator", "rwr"]}


UPDATES: list[dict[str, float]] = []  # the T2I update's statistics (loss, grad_norm, ...) of this process's iterations


def recorded_update(*args, **kwargs) -> dict[str, float]:
    stats = update_t2i(*args, **kwargs)
    UPDATES.append(stats)
    return stats


def without_process_1(parts, gathered, prompts):
    """The loop's advantages with process 1's rows zeroed: process 1 trains no image."""
    advantages = batch_advantages(parts, gathered, prompts)
    values = advantages.values.clone()
    values[parts.derived.images_per_process :] = 0
    return dataclasses.replace(advantages, values=values)


def train(out: Path, sharded: bool, *extra: str) -> ParrotTrainer:
    for key, value in FSDP_ENV.items():
        if sharded:
            os.environ[key] = value
        else:
            os.environ.pop(key, None)
    trainer = ParrotTrainer(load_train_config(quick_args(out, *GRPO_FLUX, *extra)))
    assert trainer.parts.num_processes == 2 and trainer.parts.sharded == sharded
    trainer.parts.accelerator.end_training = lambda: None  # keep the process group for the next run of this process
    UPDATES.clear()
    trainer.train()
    (out.parent / f"updates-{out.name}-rank{trainer.parts.rank}.json").write_text(json.dumps(UPDATES))
    return trainer


def record_shards(trainer: ParrotTrainer, out: Path) -> None:
    """This process's numel of the transformer's parameters (DTensor shards) and the full numel."""
    reshard(trainer.parts.policy.unet)  # the root may still hold its gathered weights after the last forward
    params = list(trainer.parts.policy.unet.parameters())
    local = sum(p.to_local().numel() for p in params)
    full = sum(p.numel() for p in params)
    lora = [p for n, p in trainer.parts.policy.unet.named_parameters() if "lora_" in n]
    rank = trainer.parts.rank
    lora_local, lora_full = sum(p.to_local().numel() for p in lora), sum(p.numel() for p in lora)
    record = {"local": local, "full": full, "lora_local": lora_local, "lora_full": lora_full}
    (out / f"shards-rank{rank}.json").write_text(json.dumps(record))


def main(out_dir: str) -> None:
    torch.set_num_threads(1)
    out = Path(out_dir)
    parrot.train.batch_advantages = without_process_1
    parrot.train.update_t2i = recorded_update
    fsdp = train(out / "fsdp", True, "--iterations", "2", *EVALUATION)
    record_shards(fsdp, out)
    train(out / "dp", False, "--iterations", "1")
    resumed = out / "resumed"
    if fsdp.parts.accelerator.is_main_process:
        checkpoint = RunDir(out / "fsdp").checkpoints / "checkpoint-000001"
        shutil.copytree(checkpoint, RunDir(resumed).checkpoints / checkpoint.name)
        shutil.copy(out / "fsdp" / "run.json", resumed / "run.json")
    fsdp.parts.accelerator.wait_for_everyone()
    train(resumed, True, "--iterations", "2", "--resume", "true")
    for name, flags in VARIANTS.items():  # 1 iteration each, sharded and data parallel
        train(out / f"{name}-fsdp", True, "--iterations", "1", *flags)
        train(out / f"{name}-dp", False, "--iterations", "1", *flags)
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
