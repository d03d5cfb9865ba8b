"""parrot.evaluation: paired Δ ± SE, Table-1 average and per-prompt-mean hypervolume on hand-made numbers; the table."""

import json
import math

import numpy as np
import pytest
import torch

from parrot.evaluation import (
    EvaluationSamples,
    evaluation_record,
    format_table,
    front_hypervolume,
    paired_deltas,
    per_prompt_hypervolume,
    per_prompt_means,
    table1_averages,
)


def samples(scores, prompts=("a", "b", "a", "b"), seeds=(0, 0, 1, 1), names=("r1", "r2")):
    return EvaluationSamples(list(names), list(prompts), list(prompts), list(seeds), torch.tensor(scores, dtype=torch.float64))


def test_per_prompt_mean_hypervolume_by_hand_differs_from_pooled_images():
    # prompt a: (1, 0) and (0, 1) → mean (0.5, 0.5); prompt b: (0.2, 0.8) and (0.2, 0.4) → mean (0.2, 0.6)
    held_out = samples([[1.0, 0.0], [0.2, 0.8], [0.0, 1.0], [0.2, 0.4]])
    prompts, means = per_prompt_means(held_out)
    assert prompts == ["a", "b"] and np.allclose(means, [[0.5, 0.5], [0.2, 0.6]])
    lo, hi, ref = np.zeros(2), np.ones(2), np.zeros(2)
    # boxes from 0: 0.5·0.5 + 0.2·(0.6 − 0.5) = 0.27, both means on the front
    assert per_prompt_hypervolume(held_out, lo, hi, ref) == (pytest.approx(0.27), 2)
    # the pooled images: (1, 0) and (0, 1) have no area above 0, (0.2, 0.8) gives 0.16
    assert front_hypervolume(held_out.scores.numpy(), ref)[0] == pytest.approx(0.16)
    # in normalised space (lo 0, hi 2 on r1): the means' r1 halves, 0.25·0.5 + 0.1·0.1 = 0.135
    assert per_prompt_hypervolume(held_out, lo, np.array([2.0, 1.0]), ref)[0] == pytest.approx(0.135)


def test_table1_average_normalises_over_the_union_of_rows():
    rows = {"x": np.array([[0.0, 10.0], [2.0, 30.0]]), "y": np.array([[4.0, 20.0]])}
    # lo (0, 10), hi (4, 30): x → [[0, 0], [0.5, 1]], means (0.25, 0.5), avg 0.375; y → [[1, 0.5]], avg 0.75
    assert table1_averages(rows) == {"x": pytest.approx(0.375), "y": pytest.approx(0.75)}
    assert table1_averages(rows, (np.zeros(2), np.array([4.0, 40.0])))["y"] == pytest.approx((1.0 + 0.5) / 2)


def test_paired_delta_and_se_per_prompt_and_per_image_by_hand():
    before = samples([[1, 0], [2, 0], [3, 0], [4, 0]])
    after = samples([[2, 0], [2, 0], [5, 0], [8, 0]])
    # per prompt: a 2 → 3.5, b 3 → 5; d = (1.5, 2): Δ 1.75, SE = std(ddof 1)/√2 = (0.5/√2)/√2 = 0.25
    per_prompt = paired_deltas(before, after, per="prompt")["r1"]
    assert (per_prompt.before, per_prompt.after, per_prompt.delta, per_prompt.count) == (2.5, 4.25, 1.75, 2)
    assert per_prompt.paired_se == pytest.approx(0.25)
    # per image: d = (1, 0, 2, 4): Δ 1.75, Σ(d − 1.75)² = 8.75, SE = √(8.75/3)/2
    per_image = paired_deltas(before, after, per="image")["r1"]
    assert per_image.delta == 1.75 and per_image.paired_se == pytest.approx(math.sqrt(8.75 / 3) / 2)
    assert paired_deltas(before, after)["r2"].delta == 0 and paired_deltas(before, after)["r2"].paired_se == 0
    with pytest.raises(ValueError, match="cannot be paired"):
        paired_deltas(before, samples([[0, 0]] * 4, seeds=(0, 0, 2, 2)))
    one = samples([[1, 1]], prompts=("a",), seeds=(0,))
    assert math.isnan(paired_deltas(one, one)["r1"].paired_se)


def test_record_and_the_three_column_table():
    plain, untrained = samples([[0, 0], [0, 0], [0, 0], [0, 0]]), samples([[1, 0], [1, 0], [1, 0], [1, 0]])
    trained = samples([[2, 1], [4, 1], [2, 1], [4, 1]])
    record = evaluation_record({"plain_base": plain, "untrained": untrained, "trained": trained})
    assert list(record["images"]) == ["plain_base", "before", "after"]
    assert record["before"] == {"r1": 1.0, "r2": 0.0} and record["after"] == {"r1": 3.0, "r2": 1.0}
    d = record["deltas"]["after-before"]["prompt"]["r1"]
    assert (d["delta"], d["paired_se"], d["count"]) == (2.0, pytest.approx(1.0), 2)  # d = (1, 3): SE = √2/√2
    assert record["deltas"]["after-plain_base"]["image"]["r2"]["delta"] == 1.0
    # lo (0, 0), hi (4, 1): plain 0, untrained (0.25 + 0)/2, trained (0.75 + 1)/2
    assert record["table1_average"] == pytest.approx({"plain_base": 0.0, "before": 0.125, "after": 0.875})
    json.dumps(record)  # JSON-ready (no NaN, no tensors)
    table = format_table(record).splitlines()
    assert table[0] == "| reward | plain base | untrained | trained | Δ vs untrained | Δ vs plain base |"
    assert table[2] == "| r1 | 0.0000 | 1.0000 | 3.0000 | +2.0000 ± 1.0000 | +3.0000 ± 1.0000 |"
    assert table[4].startswith("| Table-1 avg (norm.) | 0.0000 | 0.1250 | 0.8750 | +0.7500 | +0.8750 |")
    assert table[5].startswith("| HV (per-prompt means) |")
    assert table[6] == "Δ ± paired standard error over 2 held-out prompts (each prompt's mean over its seeds)"
    # the two-setting record of earlier runs still prints
    assert format_table({"before": {"r1": 1.0}, "after": {"r1": 1.5}}).splitlines()[2] == "| r1 | 1.0000 | 1.5000 | +0.5000 |"
