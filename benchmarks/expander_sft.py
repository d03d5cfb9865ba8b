"""Benchmark: SFT of a small GPT-2 trained from scratch on the DiffusionDB-derived pairs (CPU).

Reports the held-out completion loss before/after and the share of held-out expansions that
keep the short prompt's words and add modifiers. Run (about 10 minutes on one shared CPU thread):

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 PYTHONPATH=. python benchmarks/expander_sft.py --output_dir runs/bench_expander_sft

Any ``SFTSettings`` flag may be added to change the sizes.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict

from prompt_expander.sft import parse_settings, run_sft

BENCHMARK_DEFAULTS = [
    "--max_steps", "1500",
    "--batch_size", "16",
    "--learning_rate", "3e-3",
    "--max_length", "64",
    "--n_layer", "2",
    "--n_embd", "96",
    "--n_head", "4",
    "--vocab_size", "2000",
    "--max_eval_rows", "300",
    "--sample_eval_prompts", "200",
]  # fmt: skip


def main() -> None:
    import sys

    settings = parse_settings(BENCHMARK_DEFAULTS + sys.argv[1:])
    start = time.perf_counter()
    result = run_sft(settings)
    report = {**asdict(result), "wall_seconds": round(time.perf_counter() - start, 1), "settings": asdict(settings)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
