"""benchmarks/selection_alignment.py: Pareto's and the weighted sum's per-image weights on hand-made batches."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from benchmarks.selection_alignment import batch_alignment, image_weights, method_selections, run_alignment, summary

# one group of 4 images, 4 rewards: images 0-2 each best somewhere, image 3 dominated by every other image
REWARDS = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0], [-1.0, -1.0, -1.0, -1.0]]


def record(rewards=REWARDS, selected=(True, True, True, False), iteration=1):
    n = len(rewards)
    return {"iteration": iteration, "columns": n, "reward_names": ["a", "b", "c", "d"], "original_prompts": ["a red triangle"] * n,
            "expanded_prompts": ["a red triangle"] * n, "conditioning_prompts": ["a red triangle"] * n,
            "rewards": rewards, "selected": list(selected)}  # fmt: skip


def test_weights_of_pareto_and_the_weighted_sum_against_hand_computed_values():
    # each column has mean 0 and population std √(1/2): z = √2·r, so Σ_k z = √2·(1, 1, 2, −4)
    pareto, ws2 = method_selections(["parrot-t2i-noids-z", "ws2"], "shapes")
    a, selected = image_weights(record(), pareto, pareto.new_tracker())
    b, _ = image_weights(record(), ws2, ws2.new_tracker())
    root2 = math.sqrt(2)
    assert selected.tolist() == [True, True, True, False]
    assert a == pytest.approx(root2 * np.array([1, 1, 2, 0]) / 3, rel=1e-5)  # 1[P]·Σ_k z / |P|
    assert b == pytest.approx(0.25 * root2 * np.array([1, 1, 2, -4]) / 4, rel=1e-5)  # Σ_k ¼·z / N
    figures = batch_alignment(a, b, selected)
    assert figures["front_share"] == 0.75
    assert figures["cosine"] == pytest.approx(6 / math.sqrt(6 * 22), rel=1e-5)  # (1,1,2,0)·(1,1,2,−4) / (√6·√22)
    assert figures["dropped_mass"] == pytest.approx(4 / 8, rel=1e-5)
    assert figures["opposite_sign"] == 0.0
    assert figures["scale"] == pytest.approx((math.sqrt(6) / 3) / (math.sqrt(22) / 16), rel=1e-5)
    assert figures["net_push"] == pytest.approx(1.0)  # every image Pareto weighs is pushed up
    assert figures["push_down_kept"] == 0.0  # the weighted sum's only push down is on the dominated image


def test_opposite_signs_are_counted_on_images_both_weigh():
    figures = batch_alignment(np.array([1.0, -1.0, 0.0, 2.0]), np.array([1.0, 1.0, -3.0, -1.0]), np.array([True, True, False, True]))
    assert figures["opposite_sign"] == pytest.approx(2 / 3)
    assert figures["dropped_mass"] == pytest.approx(3 / 6)
    assert figures["net_push"] == pytest.approx(2 / 4)  # (1 − 1 + 2) / (1 + 1 + 2)
    assert figures["push_down_kept"] == pytest.approx(1 / 4)  # b's push down: 3 (dropped) + 1 (kept, image 3)


def write_run(root, records):
    samples = root / "samples"
    samples.mkdir(parents=True)
    for r in records:
        stem = samples / f"iteration-{r['iteration']:06d}"
        Image.new("RGB", (2, 2)).save(stem.with_suffix(".png"))
        stem.with_suffix(".json").write_text(json.dumps(r))
    return root


def test_run_alignment_reads_every_recorded_batch_in_order(tmp_path):
    swapped = [REWARDS[3], REWARDS[1], REWARDS[2], REWARDS[0]]
    run = write_run(tmp_path / "run", [record(iteration=2, rewards=swapped, selected=(False, True, True, True)), record(iteration=1)])
    rows = run_alignment(run, *method_selections(["parrot-t2i-noids-z", "ws2"], "shapes"))
    assert [r["iteration"] for r in rows] == [1, 2]
    assert rows[0]["cosine"] == pytest.approx(rows[1]["cosine"])  # the same batch, images in another order
    assert rows[0]["cosine"] == pytest.approx(6 / math.sqrt(132), rel=1e-5)


def test_run_alignment_refuses_a_run_trained_with_another_selection_and_a_run_without_records(tmp_path):
    methods = method_selections(["parrot-t2i-noids-z", "ws2"], "shapes")
    run = write_run(tmp_path / "run", [record(selected=(True, True, True, True))])
    with pytest.raises(ValueError, match="recorded P is not 'parrot-t2i-noids-z'"):
        run_alignment(run, *methods)
    with pytest.raises(FileNotFoundError, match="train with --checkpoint_every 1"):
        run_alignment(tmp_path / "empty", *methods)


def test_methods_with_identifiers_or_unknown_names_are_refused():
    with pytest.raises(ValueError, match="trains with reward identifiers"):
        method_selections(["ws2", "parrot-t2i"], "shapes")
    with pytest.raises(ValueError, match="unknown method 'pareto'"):
        method_selections(["pareto"], "shapes")


def test_summary_gives_each_runs_mean_and_the_se_over_runs():
    def rows(c):
        same = dict(front_share=0.5, dropped_mass=0.1, opposite_sign=0.0, scale=2.0, net_push=0.4, push_down_kept=0.2)
        return [dict(iteration=i, cosine=c + i, **same) for i in (0, 1)]

    text = summary({"r0": rows(0.2), "r1": rows(0.4)})
    assert "| r0 | 2 | 0.500 | 0.700 |" in text  # cosine (0.2 + 1.2) / 2
    assert "| r1 | 2 | 0.500 | 0.900 |" in text
    assert "0.800 ± 0.100" in text  # runs' means 0.7, 0.9: SE = std(ddof 1) / √2 = 0.1
