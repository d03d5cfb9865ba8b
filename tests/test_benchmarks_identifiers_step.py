"""benchmarks/identifiers_step.py: its yardstick is the stage's loss in two calls, and a missing world is one line."""

import copy

import pytest
import torch

from benchmarks.identifiers_step import loss_in_two_passes, main, summary_line
from shapes.identifiers import prefix_invariance_loss
from t2i.families import policy_of_pipeline


def test_the_two_pass_yardstick_gives_the_stages_one_pass_loss(tiny_pipeline):
    policy = policy_of_pipeline(tiny_pipeline)
    teacher = policy_of_pipeline(copy.deepcopy(tiny_pipeline))
    with torch.no_grad():
        tiny_pipeline.unet.conv_out.bias.add_(0.1)  # a student that differs from its teacher
        noisy = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
        t = torch.tensor([50, 400, 900])
        plain, prefixed = ["a red circle", "a blue square", ""], ["l p c s, a red circle", "s, a blue square", "l, "]
        two, shifted_two = loss_in_two_passes(policy, teacher, noisy, t, plain, prefixed)
        one, shifted_one = prefix_invariance_loss(policy, teacher, noisy, t, plain, prefixed)
    assert two.item() > 0.01  # the drift 0.1 squared at least
    assert one.item() == pytest.approx(two.item(), rel=1e-6) and shifted_one.item() == pytest.approx(shifted_two.item(), rel=1e-6)


def test_a_directory_without_a_built_world_is_refused_in_one_line(tmp_path):
    with pytest.raises(SystemExit, match=rf"^error: {tmp_path} has no sd/ pipeline: give --world a built world directory$"):
        main(["--world", str(tmp_path)])


def test_summary_line_reads_the_figures():
    figures = {"batch_size": 32, "repeats": 15, "two_passes_s": 0.732, "one_pass_s": 0.662, "ratio": 0.662 / 0.732,
               "largest_relative_loss_difference": 2.5e-8}  # fmt: skip
    assert summary_line(figures) == (
        "identifiers step (batch 32, median of 15): two passes 0.732s  one pass 0.662s  ratio 0.904; "
        "losses differ by at most 2.5e-08 (relative)"
    )
