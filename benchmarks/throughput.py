"""Performance benchmark of the training loop: every figure a ratio measured in this run, on this machine.

    PYTHONPATH=. HF_HUB_OFFLINE=1 python benchmarks/throughput.py --json runs/throughput.json [--quick]
        [--rollout] [--trl] [--overlap] [--scaling]      (no section flag: all four)

Sections:

``rollout``  trajectory-recording sampling ÷ a stock diffusers pipeline call (reuses
             ``benchmarks/rollout_overhead.py``'s ``measure``).
``trl``      samples/s of one DDPO-IS epoch (sampling + JPEG-compressibility reward + updates) of
             ``parrot.train.ParrotTrainer`` ÷ the same of TRL 0.23.1's ``DDPOTrainer``, on the same
             saved tiny pipeline, steps, batch, inner epochs, timestep fraction, LoRA (rank 4 on
             to_q/k/v/out), CFG scale and threads. The peer runs in its own virtual environment
             (``benchmarks/peers/trl_ddpo.py``), built from PyPI on first use under
             ``$PARROT_BENCH_CACHE`` (default ``~/.cache/parrot-bench``). Rounds alternate ours and
             the peer so that load drift hits both; each times ``--epochs`` epochs after a warm-up.
             Each side also reports its time per stage and its UNet calls/rows per epoch.
``overlap``  share of reward-scoring time hidden behind sampling with ``sampling.chunks``:
             (t_sample + t_score − t_pipelined) / t_score, t_sample = the chunked sampling alone,
             t_score = scoring all images alone, t_pipelined = ``sample_and_score`` (all three
             timed in the same repeats, interleaved; medians).
``scaling``  time per iteration for batch 8/16/32/64 (time per image ÷ that of batch 8), and
             peak memory of the T2I update versus trained timesteps with and without gradient
             checkpointing, each configuration in a fresh subprocess: peak RSS (VmHWM, reset
             through /proc/self/clear_refs after sampling and ``malloc_trim``) minus the RSS just
             before ``update_t2i``.

Notation: B = images per epoch/iteration, T = DDIM steps, S = trained steps per image.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the repo's packages and benchmarks/ importable
    sys.path.insert(0, str(REPO))

from benchmarks import rollout_overhead  # noqa: E402
from benchmarks.peers.environment import ensure_peer_env, peer_env_dir, run_peer, save_peer_pipeline  # noqa: E402
from benchmarks.rollout_overhead import time_once  # noqa: E402
from parrot.credit import batch_advantages, gather_scores  # noqa: E402
from parrot.rollout import chunk_bounds, draw_prompts, local_prompts, sample_and_score, sample_images, score  # noqa: E402
from parrot.t2i_update import update_t2i  # noqa: E402
from parrot.train import ParrotTrainer  # noqa: E402
from parrot.train_config import load_train_config  # noqa: E402
from rewards.tiny import TinyClipConfig, save_tiny_clip  # noqa: E402
from t2i.tiny import TinyPipelineConfig, build_tiny_pipeline  # noqa: E402


# ----- arithmetic -----------------------------------------------------------------------------
def overlap_share(t_sample: float, t_score: float, t_pipelined: float) -> float:
    """Share of the scoring time hidden behind sampling: (t_sample + t_score − t_pipelined) / t_score."""
    if not t_score > 0:
        raise ValueError(f"t_score={t_score} must be > 0 to say what share of it was hidden")
    return (t_sample + t_score - t_pipelined) / t_score


def spread(values: list[float]) -> dict:
    """Median, min, max and count of repeated measurements."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def ratio_summary(ours: list[float], peer: list[float]) -> dict:
    """median(ours) ÷ median(peer), and the ratio of each paired repeat."""
    return {
        "ratio_of_medians": statistics.median(ours) / statistics.median(peer),
        "per_repeat": [a / b for a, b in zip(ours, peer)],
    }


# ----- our trainer -----------------------------------------------------------------------------
def ddpo_args(output_dir: Path, pipeline: str, batch: int, steps: int, inner_epochs: int, fraction: float, *extra: str) -> list[str]:
    """``parrot.train`` arguments of a single-reward DDPO-IS run matching the TRL peer's settings."""
    return [
        "--preset", "tiny", "--output_dir", str(output_dir), "--mode", "t2i", "--expander.model", "",
        "--model.pipeline", pipeline, "--model.lora.rank", "4",
        "--rewards.names", "jpeg_compressibility", "--selection.mode", "single:jpeg_compressibility",
        "--identifiers.enabled", "false", "--sampling.prompts_per_process", str(batch), "--sampling.images_per_prompt", "1",
        "--sampling.num_steps", str(steps), "--sampling.guidance_scale", "5.0", "--t2i.estimator", "is",
        "--t2i.clip_range", "1e-4", "--t2i.lr", "3e-4", "--t2i.inner_epochs", str(inner_epochs), "--t2i.minibatches", "1",
        "--t2i.timestep_fraction", str(fraction), "--logging.log_with", "none", "--evaluation.enabled", "false",
        "--checkpoint_every", "0", *extra,
    ]  # fmt: skip


@contextlib.contextmanager
def unet_counter(trainer: ParrotTrainer):
    """Yields {"calls", "rows"} of the UNet's forward passes while the block runs."""
    unet = {"calls": 0, "rows": 0}

    def count(_module, inputs):
        unet["calls"] += 1
        unet["rows"] += int(inputs[0].shape[0])

    handle = trainer.parts.policy.unet.register_forward_pre_hook(count)
    try:
        yield unet
    finally:
        handle.remove()


#: the stages timed per epoch: their seconds as ``run_iteration`` records them in its metrics
TIMED_STAGES = {"sample_and_score": "time/sample_and_score_s", "update_t2i": "time/update_t2i_s"}


def time_our_epochs(trainer: ParrotTrainer, epochs: int, warmup: int, first: int = 0, recompute_old: bool = False) -> dict:
    """Seconds of ``epochs`` timed ``run_iteration`` calls after ``warmup`` untimed ones, with stage times
    (``recompute_old``: θ_old log-probs recomputed by an extra no-grad UNet pass, as before the fix)."""
    for i in range(warmup):
        trainer.run_iteration(first + i, recompute_old)
    seconds, stages = [], dict.fromkeys(TIMED_STAGES, 0.0)
    with unet_counter(trainer) as unet:
        for i in range(epochs):
            started = time.perf_counter()
            metrics = trainer.run_iteration(first + warmup + i, recompute_old).metrics
            seconds.append(time.perf_counter() - started)
            for name, key in TIMED_STAGES.items():
                stages[name] += metrics[key]
    return {
        "epoch_seconds": seconds,
        "stage_seconds_per_epoch": {k: v / epochs for k, v in stages.items()},
        "unet_calls_per_epoch": unet["calls"] / epochs,
        "unet_rows_per_epoch": unet["rows"] / epochs,
    }


# ----- the TRL peer ----------------------------------------------------------------------------
def trl_section(args: argparse.Namespace, work: Path) -> dict:
    batch, steps, inner, fraction = args.trl_batch, args.steps, args.inner_epochs, args.timestep_fraction
    python = ensure_peer_env(args.peer_env)
    pipeline_dir = save_peer_pipeline(work / "tiny_pipeline")
    trainer = ParrotTrainer(load_train_config(ddpo_args(work / "ours", str(pipeline_dir), batch, steps, inner, fraction)))
    ours_runs, peer_runs, recompute_runs = [], [], []
    for round_ in range(args.rounds):
        first = round_ * (2 * args.epochs + 2)
        ours_runs.append(time_our_epochs(trainer, args.epochs, warmup=1 if round_ == 0 else 0, first=first))
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
            code = (f"import json, sys; sys.path.insert(0, {str(REPO)!r}); from benchmarks.throughput import memory_probe; "
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


# ----- the command -----------------------------------------------------------------------------
def versions() -> dict:
    import diffusers
    import transformers

    return {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average_at_start": os.getloadavg()}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name in ("rollout", "trl", "overlap", "scaling"):
        parser.add_argument(f"--{name}", action="store_true", help=f"run the {name} section (no section flag: all)")
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (smoke use, ≤ 3 min)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads of ours and the peer (0: torch default)")
    parser.add_argument(
        "--recompute_old",
        action="store_true",
        help="trl section: also time ours recomputing θ_old log-probs (the code before reusing the sampled ones)",
    )
    parser.add_argument("--peer_env", type=Path, default=None, help="TRL 0.23.1 venv (default $PARROT_BENCH_CACHE/trl-0.23.1)")
    args = parser.parse_args(argv)
    if not any(getattr(args, n) for n in ("rollout", "trl", "overlap", "scaling")):
        args.rollout = args.trl = args.overlap = args.scaling = True
    args.peer_env = args.peer_env or peer_env_dir()
    quick = args.quick
    # full run ≈ 15 min on 2 cores; --quick ≈ 3 min (fewer steps, repeats and sizes: smoke use only)
    args.steps, args.inner_epochs, args.timestep_fraction = (4 if quick else 10), 2, 0.5
    args.trl_batch = 4 if quick else 8
    args.rounds, args.epochs = (1, 1) if quick else (3, 3)
    args.repeats = 2 if quick else 7
    args.rollout_sizes = ["small"]  # "large" (10 s a call here) stays in benchmarks/rollout_overhead.py
    args.rollout_repeats = 3 if quick else 7
    args.overlap_prompts, args.chunks = (2, 2) if quick else (4, 4)
    args.overlap_threads = [2] if quick else [2, 1]
    args.scaling_steps, args.scaling_epochs = (4, 1) if quick else (6, 2)
    args.batches = [4, 8] if quick else [8, 16, 32, 64]
    args.memory_batch = 4
    args.memory_steps, args.trained_steps = (4, [4]) if quick else (20, [2, 5, 10, 20])
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict = {"versions": versions(), "quick": args.quick}
    with tempfile.TemporaryDirectory(prefix="parrot-throughput-") as tmp:
        work = Path(tmp)
        if args.rollout:
            runs = [rollout_overhead.measure(size, 4, 20, args.rollout_repeats) for size in args.rollout_sizes]
            results["rollout"] = {"sizes": runs}
            for r in runs:
                print(f"rollout {r['size']}: policy ÷ stock = {r['ratio']:.3f} (stock {r['plain_s']:.3f}s, policy {r['policy_s']:.3f}s)")
        if args.trl:
            results["trl"] = trl_section(args, work)
            t = results["trl"]
            print(
                f"training: ours {t['ours_samples_per_second']['median']:.2f} samples/s, TRL {t['trl_samples_per_second']['median']:.2f} "
                f"samples/s; ours ÷ TRL = {t['ratio']['ratio_of_medians']:.2f} "
                f"(per round {[round(x, 2) for x in t['ratio']['per_repeat']]})"
            )
            if "recompute_old_ratio" in t:
                print(
                    f"training, θ_old recomputed (before): {t['recompute_old_samples_per_second']['median']:.2f} samples/s; ÷ TRL = "
                    f"{t['recompute_old_ratio']['ratio_of_medians']:.2f}; "
                    f"reuse ÷ recompute = {t['reuse_over_recompute']['ratio_of_medians']:.2f}"
                )
        if args.overlap:
            results["overlap"] = o = overlap_section(args, work)
            for m in o["by_threads"]:
                print(
                    f"overlap ({m['torch_threads']} torch threads): {o['chunks']} chunks of {o['images']} images: sample "
                    f"{m['t_sample_s']['median']:.3f}s, score {m['t_score_s']['median']:.3f}s, pipelined "
                    f"{m['t_pipelined_s']['median']:.3f}s → share hidden {m['overlap_share']:.2f}; pipelined ÷ unchunked "
                    f"{m['pipelined_over_unchunked']:.3f} (unchunked {m['t_unchunked_s']['median']:.3f}s)"
                )
        if args.scaling:
            results["scaling"] = {"batch": batch_scaling(args, work), "memory": memory_scaling(args, work)}
            for row in results["scaling"]["batch"]["rows"]:
                print(
                    f"scaling: batch {row['batch']}: {row['iteration_s']['median']:.2f}s/iteration, time/image ÷ batch "
                    f"{args.batches[0]}'s = {row['time_per_image_vs_first']:.3f}"
                )
            for row in results["scaling"]["memory"]["rows"]:
                print(
                    f"memory: S={row['trained_steps']} checkpointing={row['gradient_checkpointing']}: update peak "
                    f"+{row['update_peak_growth_mib']:.0f} MiB ({row['update_s']:.2f}s)"
                )
    results["load_average_at_end"] = os.getloadavg()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
