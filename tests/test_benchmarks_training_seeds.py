"""benchmarks/training_seeds.py: paired Δ ± SE per run against hand-computed values, the table, refusals."""

import json
import math

import pytest

from benchmarks.training_seeds import main, paired_deltas, seeds_table


def evaluation(before, after, prompts=("a", "b", "c"), seeds=(0, 0, 0)):
    images = {"reward_names": ["r1", "r2"], "prompts": list(prompts), "seeds": list(seeds)}
    return {"images": {"before": images | {"scores": before}, "after": images | {"scores": after}}}


def test_paired_delta_and_standard_error_by_hand():
    # r1: differences 1, 2, 3 → mean 2, sample std 1, SE 1/√3; r2: differences 0, 0, 3 → mean 1, std √3, SE 1
    deltas = paired_deltas(evaluation([[0, 1], [1, 1], [2, 1]], [[1, 1], [3, 1], [5, 4]]))
    assert deltas["r1"].before == pytest.approx(1.0) and deltas["r1"].delta == pytest.approx(2.0)
    assert deltas["r1"].paired_se == pytest.approx(1 / math.sqrt(3))
    assert deltas["r2"].delta == pytest.approx(1.0) and deltas["r2"].paired_se == pytest.approx(1.0)


def test_table_rows_and_mean_over_runs(tmp_path):
    runs = {}
    for name, shift in (("seed0", 1.0), ("seed1", 3.0)):
        (tmp_path / name).mkdir()
        after = [[shift, 0.0], [1 + shift, 0.0], [2 + shift, 0.0]]  # r1 up by `shift` on every image, r2 unchanged
        (tmp_path / name / "evaluation.json").write_text(json.dumps(evaluation([[0, 0], [1, 0], [2, 0]], after)))
        runs[name] = tmp_path / name
    table = main([str(p) for p in runs.values()]).splitlines()
    assert table[0] == "| reward | before | Δ seed0 | Δ seed1 | mean Δ (std over runs) |"
    # mean of +1 and +3 is +2, their sample std √2; zero spread over images gives SE 0
    assert table[2] == "| r1 | 1.0000 | +1.000 ± 0.000 | +3.000 ± 0.000 | **+2.000** (1.414) |"
    assert table[3] == "| r2 | 0.0000 | +0.000 ± 0.000 | +0.000 ± 0.000 | **+0.000** (0.000) |"
    assert "(–)" in seeds_table({"only": paired_deltas(evaluation([[0, 0], [1, 0]], [[1, 0], [2, 0]], ("a", "b"), (0, 1)))})


def test_refuses_unpaired_images_and_missing_runs(tmp_path):
    with pytest.raises(ValueError, match="cannot be paired"):
        paired = evaluation([[0, 0]] * 3, [[0, 0]] * 3)
        paired["images"]["after"]["seeds"] = [1, 1, 1]
        paired_deltas(paired)
    with pytest.raises(ValueError, match="at least 2"):
        paired_deltas(evaluation([[0, 0]], [[1, 1]], ("a",), (0,)))
    with pytest.raises(SystemExit, match="evaluation.json: not found"):
        main([str(tmp_path / "nowhere")])


def test_against_the_plain_base_model(tmp_path):
    record = evaluation([[0, 1], [1, 1], [2, 1]], [[1, 1], [3, 1], [5, 4]])
    images = record["images"]["before"] | {"scores": [[1, 0], [1, 0], [1, 0]]}
    record["images"]["plain_base"] = images
    # r1 against the plain base: differences 0, 2, 4 → mean 2, std 2, SE 2/√3; r2: 1, 1, 4 → mean 2, SE 1
    deltas = paired_deltas(record, against="plain_base")
    assert deltas["r1"].before == pytest.approx(1.0) and deltas["r1"].delta == pytest.approx(2.0)
    assert deltas["r1"].paired_se == pytest.approx(2 / math.sqrt(3)) and deltas["r2"].paired_se == pytest.approx(1.0)
    del record["images"]["plain_base"]
    with pytest.raises(ValueError, match="no 'plain_base' images"):
        paired_deltas(record, against="plain_base")
