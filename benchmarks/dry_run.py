"""Dry run at full size: one Parrot iteration of a full-size architecture with random weights, time and peak memory per stage.

The run goes through the training loop itself (:class:`parrot.train.ParrotTrainer`: ``build_parts`` →
``build_policy`` and friends, then ``run_iteration``), with ``builtin:random:<arch>`` models
(:mod:`t2i.random_init`): the T2I pipeline of ``--arch``, a CLIP ViT-L/14-size reward (CLIPScore) and a
GPT-2-size (124M) expander, LoRA on the T2I model with gradient checkpointing, at a small resolution,
few steps and batch 2, so that shape, dtype and memory bugs at real size show up on a CPU.

Stages (wall seconds and peak memory each): ``build`` (models, rewards, expander, optimisers),
``expand`` (ĉ ~ p_φ), ``sample_and_score`` (trajectories + rewards), ``update_t2i``, ``update_expander``.
Peak memory is the process's resident set (RSS, sampled every ``--interval`` s in a thread; the
process high-water mark ``VmHWM`` at the end), and on a GPU ``torch.cuda.max_memory_allocated`` per stage.

Every pipeline architecture's weights are also counted on the meta device (nothing allocated) and
compared with a 24 GiB budget in float32 and bfloat16 (with the reward and the expander). An
architecture file whose pipeline class has no policy family gets that table and the line saying so.

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/dry_run.py --arch sd15 --json runs/dry_run_sd15.json
    python benchmarks/dry_run.py --arch tiny        # the toy models of the tests, seconds
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the repo's packages and benchmarks/ importable
    sys.path.insert(0, str(REPO))

import parrot.train  # noqa: E402
from benchmarks.soak import rss_mib  # noqa: E402
from parrot.models import BUILTIN_RANDOM, BUILTIN_TINY, BUILTIN_TINY_CLIP, BUILTIN_TINY_GPT2  # noqa: E402
from parrot.train import ParrotTrainer  # noqa: E402
from parrot.train_config import load_train_config  # noqa: E402
from parrot_base.cli import UsageError, run_cli  # noqa: E402
from t2i import POLICY_FAMILIES  # noqa: E402
from t2i.random_init import architecture_names, parameter_counts, read_architecture  # noqa: E402

TINY = "tiny"
BUDGET_GIB = 24.0
GIB = 2**30
STAGES = ("expand", "sample_and_score", "update_t2i", "update_expander")  # functions of parrot.train, in loop order


class StageMonitor:
    """Wall time and peak memory of named, possibly nested stages; RSS sampled in a background thread.

    A stage's peaks include those of the stages nested in it (CUDA: the nested stages' windows and the
    outer stage's own window since the last nested one began).
    """

    def __init__(self, interval: float = 0.02):
        self.interval, self.active, self.stages = interval, [], {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> StageMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            rss = rss_mib_self()
            for name in list(self.active):
                self._raise_peak(name, "peak_rss_mib", rss)
            time.sleep(self.interval)

    def _raise_peak(self, name: str, key: str, value: float | None) -> None:
        if value is not None:
            self.stages[name][key] = max(self.stages[name].get(key, 0.0), value)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.stages[name] = {"seconds": 0.0, "peak_rss_mib": rss_mib_self() or 0.0}
        self.active.append(name)
        started = time.perf_counter()
        try:
            yield
        finally:
            self.active.remove(name)
            record = self.stages[name]
            record["seconds"] = time.perf_counter() - started
            self._raise_peak(name, "peak_rss_mib", rss_mib_self())
            if cuda:
                torch.cuda.synchronize()
                self._raise_peak(name, "peak_cuda_mib", torch.cuda.max_memory_allocated() / 2**20)
            for outer in self.active:  # the enclosing stages saw this stage's peaks too
                for key in ("peak_rss_mib", "peak_cuda_mib"):
                    self._raise_peak(outer, key, record.get(key))

    def wrap(self, name: str, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            with self.stage(name):
                return fn(*args, **kwargs)

        return timed


def rss_mib_self() -> float | None:
    return rss_mib(os.getpid())


def fit_table(extra_parameters: int) -> list[dict]:
    """Per pipeline architecture: weights in GiB (float32, bfloat16; with ``extra_parameters`` of reward and
    expander), whether they fit the 24 GiB budget, without T5 too, and whether a policy family exists."""
    rows = []
    for name in architecture_names():
        architecture = read_architecture(name)
        if "pipeline_class" not in architecture:
            continue
        counts = parameter_counts(name)
        t5 = sum(n for c, n in counts.items() if architecture["components"][c]["class"] == "T5EncoderModel")
        total = sum(counts.values()) + extra_parameters
        row = {"arch": name, "pipeline_class": architecture["pipeline_class"], "parameters": counts, "total_parameters": total,
               "has_policy_family": architecture["pipeline_class"] in POLICY_FAMILIES}  # fmt: skip
        for dtype, size in (("float32", 4), ("bfloat16", 2)):
            row[f"weights_gib_{dtype}"] = total * size / GIB
            row[f"fits_{dtype}"] = total * size / GIB < BUDGET_GIB
            if t5:
                row[f"weights_gib_{dtype}_without_t5"] = (total - t5) * size / GIB
        rows.append(row)
    return rows


def model_names(arch: str, reward_arch: str, expander_arch: str) -> tuple[str, str, str]:
    """(pipeline, reward CLIP, expander) names for ``parrot.train``; ``tiny`` picks the toy built-ins."""
    if arch == TINY:
        return BUILTIN_TINY, BUILTIN_TINY_CLIP, BUILTIN_TINY_GPT2
    for name in (arch, reward_arch, expander_arch):
        if not name.endswith(".json") and name not in architecture_names():
            raise UsageError(f"unknown architecture {name!r}: choose one of {', '.join(architecture_names())}, 'tiny' or a .json file")
    return BUILTIN_RANDOM + arch, BUILTIN_RANDOM + reward_arch, BUILTIN_RANDOM + expander_arch


def dry_run_config(args: argparse.Namespace, output_dir: Path) -> dict:
    """The ``parrot.train`` config of one dry-run iteration (the ``tiny`` preset underneath)."""
    pipeline, reward, expander = model_names(args.arch, args.reward_arch, args.expander_arch)
    return {
        "iterations": 1, "output_dir": str(output_dir), "device": args.device, "mode": "joint",
        "model": {"pipeline": pipeline, "dtype": args.dtype, "gradient_checkpointing": True, "lora": {"rank": 4}},
        "rewards": {"names": ["clip_score"], "settings": {"clip_score": {"model": reward, "dtype": args.dtype}}},
        "sampling": {"prompts_per_process": 1, "images_per_prompt": args.batch, "num_steps": args.steps,
                     "resolution": args.resolution, "guidance_scale": 7.5},
        "t2i": {"estimator": "is", "inner_epochs": 1, "minibatches": 1, "timestep_fraction": 1.0},
        "selection": {"reward_weighting": "raw"},  # as measured (the default until issue 13); takes --batch 1 too
        "expander": {"model": expander, "sampling": {"max_new_tokens": args.max_new_tokens}, "update": {"baseline": "mean"}},
        "evaluation": {"enabled": False},
        "logging": {"log_with": "none", "images_every": 0},
    }  # fmt: skip


def run_iteration(args: argparse.Namespace, work: Path) -> dict:
    """Build the parts and run one iteration under the stage monitor; the stages' figures and the metrics."""
    config_path = work / "dry_run.yaml"
    config_path.write_text(yaml.safe_dump(dry_run_config(args, work / "run")), encoding="utf-8")
    config = load_train_config(["--preset", "tiny", "--config", str(config_path)])
    with StageMonitor(args.interval) as monitor:
        with monitor.stage("build"):
            trainer = ParrotTrainer(config)
        patches = [mock.patch.object(parrot.train, name, monitor.wrap(name, getattr(parrot.train, name))) for name in STAGES]
        with contextlib.ExitStack() as stack:
            for patch in patches:
                stack.enter_context(patch)
            with monitor.stage("iteration"):
                result = trainer.run_iteration(0)
    metrics = {k: float(v) for k, v in result.metrics.items()}
    return {"stages": monitor.stages, "metrics": metrics, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def format_report(record: dict) -> str:
    lines = [f"dry run: {record['arch']} at {record['resolution'] or 'default'} px, {record['steps']} steps, batch {record['batch']}, "
             f"{record['dtype']}, {record['threads']} threads"]  # fmt: skip
    if "stages" in record:
        lines.append(f"{'stage':<18}{'seconds':>10}{'peak RSS GiB':>14}{'peak CUDA GiB':>15}")
        for name, stage in record["stages"].items():
            cuda = f"{stage['peak_cuda_mib'] / 1024:>15.2f}" if "peak_cuda_mib" in stage else f"{'-':>15}"
            lines.append(f"{name:<18}{stage['seconds']:>10.1f}{stage['peak_rss_mib'] / 1024:>14.2f}{cuda}")
        lines.append(f"process peak RSS (VmHWM): {record['peak_rss_mib'] / 1024:.2f} GiB")
    else:
        lines.append(record["skipped"])
    lines.append(f"{'arch':<14}{'params (B)':>11}{'fp32 GiB':>10}{'fits':>6}{'bf16 GiB':>10}{'fits':>6}{'bf16 no T5':>12}  family")
    for row in record["fit"]:
        no_t5 = row.get("weights_gib_bfloat16_without_t5")
        lines.append(f"{row['arch']:<14}{row['total_parameters'] / 1e9:>11.2f}{row['weights_gib_float32']:>10.1f}"
                     f"{'yes' if row['fits_float32'] else 'no':>6}{row['weights_gib_bfloat16']:>10.1f}"
                     f"{'yes' if row['fits_bfloat16'] else 'no':>6}{'-' if no_t5 is None else f'{no_t5:.1f}':>12}  "
                     f"{'yes' if row['has_policy_family'] else 'no policy family yet'}")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--arch", default="sd15", help=f"a pipeline architecture ({', '.join(architecture_names())}), a .json file, or 'tiny'"
    )
    parser.add_argument("--reward_arch", default="clip_vit_l14", help="the reward CLIP's architecture")
    parser.add_argument("--expander_arch", default="gpt2", help="the expander's architecture")
    parser.add_argument("--resolution", type=int, default=None, help="image side in pixels (default 256; 'tiny': its own 16)")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps (all trained)")
    parser.add_argument("--batch", type=int, default=2, help="images per iteration")
    parser.add_argument("--max_new_tokens", type=int, default=77, help="expansion length")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between RSS samples")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.resolution is None:
        args.resolution = 0 if args.arch == TINY else 256  # 0: the pipeline's default
    model_names(args.arch, args.reward_arch, args.expander_arch)  # refuses unknown names before any work
    extra = sum(parameter_counts(args.reward_arch).values()) + sum(parameter_counts(args.expander_arch).values())
    record = {"arch": args.arch, "resolution": args.resolution, "steps": args.steps, "batch": args.batch, "dtype": args.dtype,
              "device": args.device, "threads": torch.get_num_threads(), "fit": fit_table(extra)}  # fmt: skip
    pipeline_class = None if args.arch == TINY else read_architecture(args.arch).get("pipeline_class")
    if pipeline_class is not None and pipeline_class not in POLICY_FAMILIES:
        record["skipped"] = f"{args.arch}: no policy family yet for {pipeline_class} (weights counted on the meta device only)"
    else:
        with tempfile.TemporaryDirectory() as work:
            record |= run_iteration(args, Path(work))
    print(format_report(record))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return record


if __name__ == "__main__":
    run_cli(main)
