"""The measured sections of ``benchmarks/throughput.py`` (definitions in its docstring): ours against
the TRL peer (:func:`trl_section`), reward scoring hidden behind sampling (:func:`overlap_section`),
time per image over batch sizes (:func:`batch_scaling`) and the T2I update's peak memory over
trained timesteps (:func:`memory_scaling`, each configuration a fresh process running
:func:`memory_probe`).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the repo's packages and benchmarks/ importable
    sys.path.insert(0, str(REPO))

from benchmarks.peers.environment import ensure_peer_env, run_peer, save_peer_pipeline  # noqa: E402
from benchmarks.rollout_overhead import time_once  # noqa: E402
from benchmarks.throughput_timing import ddpo_args, overlap_share, ratio_summary, spread, time_our_epochs  # noqa: E402
from parrot.credit import batch_advantages, gather_scores  # noqa: E402
from parrot.rollout import chunk_bounds, draw_prompts, local_prompts, sample_and_score, sample_images, score  # noqa: E402
from parrot.t2i_update import update_t2i  # noqa: E402
from parrot.train import ParrotTrainer  # noqa: E402
from parrot.train_config import load_train_config  # noqa: E402
from rewards.tiny import TinyClipConfig, save_tiny_clip  # noqa: E402
from t2i.tiny import TinyPipelineConfig, build_tiny_pipeline  # noqa: E402

__all__ = ["OVERLAP_CLIP", "MEMORY_PIPELINE", "batch_scaling", "memory_probe", "memory_scaling", "overlap_section", "trl_section"]


# ----- the TRL peer ----------------------------------------------------------------------------
def trl_section(args: argparse.Namespace, work: Path) -> dict:
    batch, steps, inner, fraction = args.trl_batch, args.steps, args.inner_epochs, args.timestep_fraction
    python = ensure_peer_env(args.peer_env)
    pipeline_dir = save_peer_pipeline(work / f"peer_pipeline_{args.size}", args.size_configs[args.size])
    compiled = ("--model.compile.mode", args.ours_compile) if args.ours_compile != "off" else ()
    trainer = ParrotTrainer(load_train_config(ddpo_args(work / "ours", str(pipeline_dir), batch, steps, inner, fraction, *compiled)))
    ours_runs, peer_runs, recompute_runs = [], [], []
    for round_ in range(args.rounds):
        first = round_ * (2 * args.epochs + 2)
        ours_runs.append(time_our_epochs(trainer, args.epochs, warmup=args.warmup if round_ == 0 else 0, first=first))
        peer_runs.append(run_peer(python, pipeline_dir, batch, steps, inner, fraction, args.epochs, 1, args.threads))
        if args.recompute_old:  # before the fix: θ_old log-probs recomputed by an extra no-grad UNet pass
            recompute_runs.append(time_our_epochs(trainer, args.epochs, warmup=0, first=first + args.epochs + 1, recompute_old=True))
    ours_sps = [batch / statistics.median(r["epoch_seconds"]) for r in ours_runs]
    peer_sps = [r["samples_per_second"] for r in peer_runs]
    extra = {}
    if recompute_runs:
        recompute_sps = [batch / statistics.median(r["epoch_seconds"]) for r in recompute_runs]
        extra = {"recompute_old_samples_per_second": spread(recompute_sps), "recompute_old_runs": recompute_runs,
                 "recompute_old_ratio": ratio_summary(recompute_sps, peer_sps),
                 "reuse_over_recompute": ratio_summary(ours_sps, recompute_sps)}  # fmt: skip
    return extra | {
        "settings": {
            "batch": batch,
            "steps": steps,
            "inner_epochs": inner,
            "timestep_fraction": fraction,
            "trained_steps": trainer.parts.derived.trained_steps_per_image,
            "lora_rank": 4,
            "guidance_scale": 5.0,
            "epochs_per_round": args.epochs,
            "rounds": args.rounds,
            "size": args.size,
            "ours_compile": args.ours_compile,
            "ours_warmup_epochs": args.warmup,
        },  # fmt: skip
        "ours_samples_per_second": spread(ours_sps),
        "trl_samples_per_second": spread(peer_sps),
        "ratio": ratio_summary(ours_sps, peer_sps),
        "ours_runs": ours_runs,
        "trl_runs": peer_runs,
        "trl_versions": peer_runs[0]["versions"],
    }


# ----- reward overlap --------------------------------------------------------------------------
#: the scoring CLIP of the overlap section: ViT-B/16 geometry (224 px, 16 px patches) at a third of its
#: width and half its depth, so that scoring costs a sizeable share of sampling, as a real reward model does
OVERLAP_CLIP = TinyClipConfig(image_size=224, patch_size=16, hidden_size=256, layers=6, projection_dim=64)


def overlap_trainer(args: argparse.Namespace, work: Path) -> ParrotTrainer:
    """The toy pipeline with two rewards: JPEG compressibility and CLIPScore on :data:`OVERLAP_CLIP`."""
    clip_dir = save_tiny_clip(work / "overlap_clip", OVERLAP_CLIP)
    config = load_train_config([
        "--preset", "tiny", "--output_dir", str(work / "overlap"), "--mode", "t2i", "--expander.model", "",
        "--rewards.names", "jpeg_compressibility", "clip_score",
        "--sampling.prompts_per_process", str(args.overlap_prompts), "--sampling.images_per_prompt", "4",
        "--sampling.num_steps", str(args.steps), "--sampling.chunks", str(args.chunks),
        "--logging.log_with", "none", "--evaluation.enabled", "false",
    ])  # fmt: skip
    config.rewards.settings = {"clip_score": {"model": str(clip_dir)}}
    return ParrotTrainer(config)


def measure_overlap(trainer: ParrotTrainer, repeats: int) -> dict:
    """t_sample (the chunked sampling alone), t_score (scoring every image alone), t_pipelined
    (``sample_and_score``) and the unchunked sample-then-score, interleaved per repeat."""
    parts = trainer.parts
    prompts = local_prompts(parts, draw_prompts(parts, 0))
    bounds = chunk_bounds(len(prompts) * parts.config.sampling.images_per_prompt, parts.config.sampling.chunks)
    rollout = sample_images(parts, prompts, prompts, 0, 0)
    score(parts, rollout), sample_and_score(parts, prompts, prompts, 0, 0)  # warm-up
    runs: dict[str, list[float]] = {"sample": [], "score": [], "pipelined": [], "unchunked": []}
    for _ in range(repeats):
        runs["sample"].append(time_once(lambda: [sample_images(parts, prompts, prompts, 0, 0, slice(a, b)) for a, b in bounds]))
        runs["score"].append(time_once(lambda: score(parts, rollout)))
        runs["pipelined"].append(time_once(lambda: sample_and_score(parts, prompts, prompts, 0, 0)))
        runs["unchunked"].append(time_once(lambda: score(parts, sample_images(parts, prompts, prompts, 0, 0))))
    med = {k: statistics.median(v) for k, v in runs.items()}
    return {
        "torch_threads": torch.get_num_threads(),
        **{f"t_{k}_s": spread(v) for k, v in runs.items()},
        "overlap_share": overlap_share(med["sample"], med["score"], med["pipelined"]),
        # load from other jobs only ever adds time: the minima are the least disturbed repeats
        "overlap_share_of_minima": overlap_share(min(runs["sample"]), min(runs["score"]), min(runs["pipelined"])),
        "overlap_share_per_repeat": [overlap_share(*t) for t in zip(runs["sample"], runs["score"], runs["pipelined"])],
        "pipelined_over_unchunked": med["pipelined"] / med["unchunked"],
    }


def overlap_section(args: argparse.Namespace, work: Path) -> dict:
    trainer = overlap_trainer(args, work)
    threads = torch.get_num_threads()
    by_threads = []
    for n in args.overlap_threads:  # torch's intra-op thread count is per process, shared by both stages
        torch.set_num_threads(n)
        by_threads.append(measure_overlap(trainer, args.repeats))
    torch.set_num_threads(threads)
    return {
        "images": args.overlap_prompts * 4,
        "chunks": args.chunks,
        "steps": args.steps,
        "rewards": list(trainer.parts.reward_names),
        "clip": {
            "image_size": OVERLAP_CLIP.image_size,
            "patch_size": OVERLAP_CLIP.patch_size,
            "hidden_size": OVERLAP_CLIP.hidden_size,
            "layers": OVERLAP_CLIP.layers,
        },
        "by_threads": by_threads,
    }


# ----- scaling -----------------------------------------------------------------------------------
def batch_scaling(args: argparse.Namespace, work: Path) -> dict:
    pipeline_dir = work / "tiny_pipeline"
    if not (pipeline_dir / "model_index.json").is_file():
        build_tiny_pipeline().save_pretrained(pipeline_dir)
    rows = []
    for batch in args.batches:
        trainer = ParrotTrainer(load_train_config(ddpo_args(work / f"scale{batch}", str(pipeline_dir), batch, args.scaling_steps,
                                                            1, args.timestep_fraction)))  # fmt: skip
        run = time_our_epochs(trainer, args.scaling_epochs, warmup=1)
        rows.append({"batch": batch, "iteration_s": spread(run["epoch_seconds"]), "stage_seconds": run["stage_seconds_per_epoch"]})
    base = rows[0]["iteration_s"]["median"] / rows[0]["batch"]
    for row in rows:
        row["time_per_image_vs_first"] = row["iteration_s"]["median"] / row["batch"] / base
    return {"steps": args.scaling_steps, "inner_epochs": 1, "timestep_fraction": args.timestep_fraction,
            "epochs": args.scaling_epochs, "rows": rows}  # fmt: skip


MEMORY_PIPELINE = TinyPipelineConfig(latent_size=16)  # 32×32 images: activations large enough to measure


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def memory_probe(pipeline_dir: str, batch: int, steps: int, trained: int, checkpointing: bool, output_dir: str) -> dict:
    """In a fresh process: sample + score one iteration, then peak RSS growth of ``update_t2i``."""
    fraction = trained / steps
    trainer = ParrotTrainer(load_train_config(ddpo_args(Path(output_dir), pipeline_dir, batch, steps, 1, fraction,
                                                        "--model.gradient_checkpointing", str(checkpointing).lower())))  # fmt: skip
    parts = trainer.parts
    assert parts.derived.trained_steps_per_image == trained, (parts.derived.trained_steps_per_image, trained)
    prompts = local_prompts(parts, draw_prompts(parts, 0))
    rollout, scores = sample_and_score(parts, prompts, prompts, 0, 0)
    advantages = batch_advantages(parts, gather_scores(parts, scores), prompts)
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back, so the update's peak is new pages
    before = rss_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (peak RSS) to the current RSS
    start = time.perf_counter()
    update_t2i(parts, rollout, advantages, 0)
    seconds = time.perf_counter() - start
    return {"trained_steps": trained, "gradient_checkpointing": checkpointing, "rss_before_update_mib": before / 1024,
            "update_peak_growth_mib": (rss_kib("VmHWM") - before) / 1024, "update_s": seconds}  # fmt: skip


def memory_scaling(args: argparse.Namespace, work: Path) -> dict:
    pipeline_dir = work / "memory_pipeline"
    build_tiny_pipeline(MEMORY_PIPELINE).save_pretrained(pipeline_dir)
    rows = []
    for trained in args.trained_steps:
        for checkpointing in (False, True):
            code = (f"import json, sys; sys.path.insert(0, {str(REPO)!r}); from benchmarks.throughput_sections import memory_probe; "
                    f"print(json.dumps(memory_probe({str(pipeline_dir)!r}, {args.memory_batch}, {args.memory_steps}, {trained}, "
                    f"{checkpointing}, {str(work / 'memory')!r})))")  # fmt: skip
            env = os.environ | {"HF_HUB_OFFLINE": "1"}
            if args.threads:
                env["OMP_NUM_THREADS"] = str(args.threads)
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
            if done.returncode != 0:
                raise RuntimeError(f"memory probe failed:\n{done.stderr[-3000:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {"pipeline": {"block_out_channels": list(MEMORY_PIPELINE.block_out_channels), "latent_size": MEMORY_PIPELINE.latent_size},
            "batch": args.memory_batch, "steps": args.memory_steps, "rows": rows}  # fmt: skip
