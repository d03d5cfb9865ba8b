"""The TRL peer of ``benchmarks/throughput.py --trl``, from our side: its virtual environment (built
on first use, cached), the tiny pipeline saved so that it reads it, and one run of its driver
``benchmarks/peers/trl_ddpo.py`` (which runs inside that environment)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from t2i.tiny import TinyPipelineConfig, build_tiny_pipeline

REPO = Path(__file__).resolve().parents[2]
#: what the peer's environment installs (with ``constraints/cpu.txt``: the CPU torch 2.13.0)
PEER_REQUIREMENTS = ("trl==0.23.1", "diffusers==0.39.0", "transformers<5", "peft")
PEER_DRIVER = REPO / "benchmarks" / "peers" / "trl_ddpo.py"
_READY = ".parrot-bench-ready"


def peer_env_dir() -> Path:
    return Path(os.environ.get("PARROT_BENCH_CACHE", "~/.cache/parrot-bench")).expanduser() / "trl-0.23.1"


def ensure_peer_env(env: Path) -> Path:
    """The peer's Python, building its virtual environment on first use (minutes; cached)."""
    python = env / "bin" / "python"
    if (env / _READY).is_file() and python.is_file():
        return python
    sys.stderr.write(f"throughput: building the TRL 0.23.1 environment in {env} (first use only)\n")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(env)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "-c", str(REPO / "constraints" / "cpu.txt"), *PEER_REQUIREMENTS],
        check=True,
    )
    # TRL's DDPO path must not need torchvision (no CPU build of it imports on this torch)
    check = "import importlib.util, trl, diffusers; from trl import DDPOTrainer; assert importlib.util.find_spec('torchvision') is None"
    subprocess.run([str(python), "-c", check], check=True, env=os.environ | {"HF_HUB_OFFLINE": "1"})
    (env / _READY).write_text(" ".join(PEER_REQUIREMENTS) + "\n")
    return python


def save_peer_pipeline(directory: Path, config: TinyPipelineConfig | None = None) -> Path:
    """The tiny pipeline saved so that the peer's transformers 4 reads it: ``save_pretrained`` of
    transformers 5 writes the CLIP text model's weights without the ``text_model.`` prefix and the
    tokenizer as ``tokenizer.json`` only; transformers 4 wants the prefixed names and, for the slow
    ``CLIPTokenizer`` the pipeline names, ``vocab.json`` + ``merges.txt``. Same weights, same vocabulary."""
    from safetensors.torch import load_file, save_file

    pipeline = build_tiny_pipeline(config)
    pipeline.save_pretrained(directory)
    weights = directory / "text_encoder" / "model.safetensors"
    tensors = load_file(str(weights))
    save_file({k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in tensors.items()}, str(weights),
              metadata={"format": "pt"})  # fmt: skip
    (directory / "tokenizer" / "vocab.json").write_text(json.dumps(pipeline.tokenizer.get_vocab(), ensure_ascii=False))
    (directory / "tokenizer" / "merges.txt").write_text("#version: 0.2\n")  # byte-level, no merges
    return directory


def run_peer(python: Path, pipeline: Path, batch: int, steps: int, inner_epochs: int, fraction: float, epochs: int,
             warmup: int, threads: int) -> dict:  # fmt: skip
    command = [str(python), str(PEER_DRIVER), "--pipeline", str(pipeline), "--batch", str(batch), "--steps", str(steps),
               "--inner_epochs", str(inner_epochs), "--timestep_fraction", str(fraction), "--epochs", str(epochs),
               "--warmup", str(warmup), "--threads", str(threads)]  # fmt: skip
    env = os.environ | {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
    if done.returncode != 0:
        raise RuntimeError(f"the TRL peer failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
