"""One Parrot iteration in each of 2 processes (run by torchrun from test_parrot_train.py and test_parrot_grpo.py).

Each rank saves its trainable parameters after the step, the selected set P and the advantages A it computed;
with run names (keys of test_parrot_grpo.GRPO_RUNS) after the output directory, one iteration per named setting
in OUT/NAME/.
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_parrot_train import quick_args  # noqa: E402

from parrot.train import ParrotTrainer  # noqa: E402
from parrot.train_config import load_train_config  # noqa: E402


def one_iteration(out_dir: Path, *extra: str) -> None:
    trainer = ParrotTrainer(load_train_config(quick_args(out_dir, "--iterations", "1", *extra)))
    result = trainer.run_iteration(0)
    rank = trainer.parts.accelerator.process_index
    assert trainer.parts.accelerator.num_processes == 2, "expected to run under torchrun with 2 processes"
    params = {k: v.detach().contiguous() for k, v in trainer.parts.trainable_state()["t2i"].items()}
    selected = result.advantages.selected.to(torch.uint8)
    save_file({**params, "selected": selected, "advantages": result.advantages.values}, str(out_dir / f"rank{rank}.safetensors"))


def main(out_dir: str, *runs: str) -> None:
    torch.set_num_threads(1)
    if not runs:
        one_iteration(Path(out_dir))
    for name in runs:
        from test_parrot_grpo import GRPO_RUNS

        one_iteration(Path(out_dir) / name, *GRPO_RUNS[name])
    # as the trainer's own end (accelerate's end_training): a gloo group left alive at exit aborted a rank in about
    # 1 run of 20 ("terminate called without an active exception") after every file was written
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
