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

Modules: this script parses the flags, runs the sections and prints and writes the figures;
``throughput_sections.py`` measures each section with the instruments of ``throughput_timing.py``
(ratio arithmetic, our trainer timed per epoch).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the repo's packages and benchmarks/ importable
    sys.path.insert(0, str(REPO))

from benchmarks import rollout_overhead  # noqa: E402
from benchmarks.machine_load import LoadWatch  # noqa: E402
from benchmarks.peers.environment import peer_env_dir  # noqa: E402
from benchmarks.rollout_overhead import SIZES  # noqa: E402
from benchmarks.throughput_profile import compile_section, profile_section, update_options_section  # noqa: E402
from benchmarks.throughput_sections import batch_scaling, memory_scaling, overlap_section, trl_section  # noqa: E402
from benchmarks.throughput_timing import overlap_share, ratio_summary, spread  # noqa: E402
from t2i.compile import COMPILE_MODES  # noqa: E402

__all__ = ["main", "overlap_share", "parse_args", "ratio_summary", "spread", "versions"]


SECTIONS = ("rollout", "trl", "overlap", "scaling", "profile", "update_options", "compile")


# ----- the command -----------------------------------------------------------------------------
def versions() -> dict:
    import diffusers
    import transformers

    return {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name in SECTIONS:
        parser.add_argument(f"--{name}", action="store_true", help=f"run the {name} section (no section flag: the first four)")
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (smoke use, ≤ 3 min)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument(
        "--settle", type=float, default=0.0, help="wait up to this many seconds for the load to fall below 0.75 per core first"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads of ours and the peer (0: torch default)")
    parser.add_argument(
        "--recompute_old",
        action="store_true",
        help="trl section: also time ours recomputing θ_old log-probs (the code before reusing the sampled ones)",
    )
    parser.add_argument("--peer_env", type=Path, default=None, help="TRL 0.23.1 venv (default $PARROT_BENCH_CACHE/trl-0.23.1)")
    parser.add_argument(
        "--size",
        default="small",
        choices=sorted(SIZES),
        help="toy UNet of the trl/profile/update_options/compile sections: small (32/64, 8×8 latents) or large (64/128/256, 32×32)",
    )
    parser.add_argument("--compile_mode", default="default", choices=COMPILE_MODES[1:], help="torch.compile mode of the compile section")
    parser.add_argument(
        "--warmup", type=int, default=1, help="trl section: our untimed epochs before the first round (the peer: 1 per round)"
    )
    parser.add_argument(
        "--ours_compile",
        default="off",
        choices=COMPILE_MODES,
        help="trl section: ours with model.compile.mode MODE (compiled in the warm-up)",
    )
    parser.add_argument("--rounds", type=int, default=0, help="interleaved rounds of the trl section, profile epochs ÷ epochs (0: 3)")
    parser.add_argument("--epochs", type=int, default=0, help="timed epochs per round (0: 3; 1 suits --size large)")
    parser.add_argument("--repeats", type=int, default=0, help="repeats of the overlap and update_options sections (0: 7)")
    args = parser.parse_args(argv)
    if not any(getattr(args, n) for n in SECTIONS):
        args.rollout = args.trl = args.overlap = args.scaling = True
    args.size_configs, args.profile_size = SIZES, args.size
    args.peer_env = args.peer_env or peer_env_dir()
    quick = args.quick
    # full run ≈ 15 min on 2 cores; --quick ≈ 3 min (fewer steps, repeats and sizes: smoke use only)
    args.steps, args.inner_epochs, args.timestep_fraction = (4 if quick else 10), 2, 0.5
    args.trl_batch = 4 if quick else 8
    args.rounds = args.rounds or (1 if quick else 3)
    args.epochs = args.epochs or (1 if quick else 3)
    args.repeats = args.repeats or (2 if quick else 7)
    args.rollout_sizes = ["small"]  # "large" (10 s a call here) stays in benchmarks/rollout_overhead.py
    args.rollout_repeats = 3 if quick else 7
    args.overlap_prompts, args.chunks = (2, 2) if quick else (4, 4)
    args.overlap_threads = [2] if quick else [2, 1]
    args.scaling_steps, args.scaling_epochs = (4, 1) if quick else (6, 2)
    args.batches = [4, 8] if quick else [8, 16, 32, 64]
    args.memory_batch = 4
    args.memory_steps, args.trained_steps = (4, [4]) if quick else (20, [2, 5, 10, 20])
    return args


def speed_sections(args: argparse.Namespace, work: Path, results: dict) -> None:
    """The profile, update-options and compile sections (``benchmarks/throughput_profile.py``), printed and added to ``results``."""
    if args.profile:
        results["profile"] = p = profile_section(args, work)
        print(f"profile ({p['size']}): {p['epoch_s']:.3f}s/epoch: " + ", ".join(f"{k} {v:.3f}s" for k, v in p["seconds_per_epoch"].items()))
    if args.update_options:
        results["update_options"] = u = update_options_section(args, work)
        print(
            f"update options ({u['size']}): "
            + ", ".join(f"{k} {u['update_s'][k]['median']:.3f}s (×{v:.2f})" for k, v in u["over_plain"].items())
        )
    if args.compile:
        results["compile"] = c = compile_section(args, work)
        for row in c["rows"]:
            steady = row["epoch_s"]["median"]
            print(f"compile {row['compile']} ({c['size']}): first epoch {row['first_epoch_s']:.1f}s, steady {steady:.3f}s/epoch")
        print(f"compiled ÷ eager steady epoch: {c['compiled_over_eager_epoch']:.3f}")


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load = LoadWatch(settle_s=args.settle, own_threads=torch.get_num_threads())
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
        speed_sections(args, work, results)
    results["load"] = load.finish()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
