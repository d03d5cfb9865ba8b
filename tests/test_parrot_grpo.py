"""GRPO as settings of the one loop: the shipped YAML, 2 processes under torchrun against 1 process with the
double batch (GRPO and GDPO on the toy SD3, CFG-free, an SDE window), and the group-size check."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_cli_errors import one_error_line, run
from test_parrot_train import quick_args

from parrot.train import ParrotTrainer, main
from parrot.train_config import load_train_config
from parrot_base.config import ConfigError

REPO = Path(__file__).resolve().parents[1]
YAML = REPO / "configs" / "grpo_tiny_sd3.yaml"
# quick_args' flags override the YAML: 1 prompt × G = 4 images per process, 4 steps; here a window of 2 SDE steps
GRPO = ["--config", str(YAML), "--identifiers.enabled", "false", "--sampling.sde_window.size", "2",
        "--sampling.sde_window.start", "1", "--t2i.timestep_fraction", "1"]  # fmt: skip
GRPO_RUNS = {"grpo": GRPO, "gdpo": [*GRPO, "--selection.mode", "gdpo", "--selection.weights", "0.25", "0.75"]}


@pytest.fixture(autouse=True)
def _restored(restore_output_settings):
    """run_cli changes process-wide output settings; conftest's fixture restores them."""


def test_the_grpo_yaml_holds_grpo_settings():
    config = load_train_config(["--config", str(YAML)])
    assert (config.model.pipeline, config.mode, config.identifiers.enabled, config.sampling.guidance_scale) == (
        "builtin:tiny_sd3",
        "t2i",
        False,
        1.0,
    )
    selection = config.selection
    assert (selection.mode, selection.reward_weighting, selection.gradient_normalisation, selection.selection_normalisation) == (
        "weighted", "normalised", "group", "none")  # fmt: skip
    assert (config.t2i.estimator, config.t2i.clip_range, config.t2i.kl_weight) == ("is", 0.2, 0.01)


def test_two_processes_of_grpo_equal_one_process_with_the_double_batch(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    worker = REPO / "tests" / "two_process_worker.py"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(worker), str(tmp_path / "multi"),
         *GRPO_RUNS],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, extra in GRPO_RUNS.items():
        rank0, rank1 = (load_file(str(tmp_path / "multi" / name / f"rank{r}.safetensors")) for r in (0, 1))
        single = ParrotTrainer(
            load_train_config(quick_args(tmp_path / name, "--iterations", "1", *extra, "--sampling.prompts_per_process", "2"))
        )
        result = single.run_iteration(0)
        # A of the global batch (2 groups of 4): the same on both ranks and in one process (up to the rounding of
        # sampling 4 images at a time vs 8, which the z-score's division magnifies to a few 1e-6)
        torch.testing.assert_close(rank0["advantages"], result.advantages.values, atol=5e-5, rtol=0)
        assert torch.equal(rank0["advantages"], rank1["advantages"])
        per_image = result.advantages.values.double().sum(1).view(2, 4)  # A_i by group
        torch.testing.assert_close(per_image.mean(1), torch.zeros(2, dtype=torch.float64), atol=1e-5, rtol=0)
        group_std = per_image.std(1, unbiased=False)
        if name == "grpo":  # z-scored within each group
            torch.testing.assert_close(group_std, torch.ones(2, dtype=torch.float64), atol=1e-3, rtol=0)  # eps of the z-score
        else:  # GDPO: z-scored over the global batch, whose groups keep their own spreads
            assert abs(per_image.std(unbiased=False).item() - 1) < 1e-3 and (group_std - 1).abs().max() > 1e-2, group_std
        for key, param in single.parts.trainable_state()["t2i"].items():
            assert torch.equal(rank0[key], rank1[key]), key  # synchronised gradients: identical ranks
            assert torch.allclose(rank0[key], param, atol=1e-5), key  # = one process on the same data (float rounding)


def test_a_group_of_one_image_is_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(
        ConfigError, match=r"selection.mode='gdpo' z-scores the images of a group: set sampling.images_per_prompt >= 2 × the 2"
    ):
        load_train_config(quick_args(tmp_path, "--selection.mode", "gdpo", "--sampling.images_per_prompt", "2"))
    status, _, err = run(main, quick_args(tmp_path, "--config", str(YAML), "--sampling.images_per_prompt", "1"), capsys)
    assert status == 2
    assert one_error_line(err) == (
        "error: selection.gradient_normalisation='group' (the default) z-scores the images of a group: set "
        "sampling.images_per_prompt >= 2 × the 1 expansions × identifiers of a prompt, or selection.gradient_normalisation "
        "'batch' (z-scores over the batch) or selection.reward_weighting 'raw' (the paper's r_k)"
    )
    status, _, err = run(main, quick_args(tmp_path, "--selection.mode", "gpdo"), capsys)
    assert "error: selection: mode='gpdo': use 'pareto', 'weighted', 'gdpo' or 'single:<reward name>'" == one_error_line(err)
