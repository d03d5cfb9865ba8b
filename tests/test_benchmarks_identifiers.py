"""benchmarks/identifiers.py: the Fig. 7 margins against hand-computed values."""

import numpy as np
import pytest

from benchmarks.identifiers import identifier_lifts, identifier_margins, identifier_table, lift_table


def test_margin_is_against_the_best_other_identifier_with_paired_se():
    names = ["a", "b"]
    # rows: 3 images (same noise under every identifier); columns: rewards a, b
    scores = {
        "a": np.array([[3.0, 1.0], [4.0, 1.0], [5.0, 1.0]]),
        "b": np.array([[1.0, 2.0], [2.0, 4.0], [6.0, 3.0]]),
        "all": np.zeros((3, 2)),
        "none": np.zeros((3, 2)),
    }
    margins = identifier_margins(scores, names)
    # reward a: own 4.0, runner-up <b> 3.0; differences (2, 2, -1): mean 1, SE = std(ddof 1)/√3 = √3/√3 = 1
    assert margins["a"]["own"] == pytest.approx(4.0) and margins["a"]["runner_up"] == "b"
    assert margins["a"]["margin"] == pytest.approx(1.0) and margins["a"]["paired_se"] == pytest.approx(1.0)
    # reward b: own 3.0 under <b>, runner-up <a> 1.0; differences (1, 3, 2): mean 2, SE = 1/√3
    assert margins["b"]["margin"] == pytest.approx(2.0) and margins["b"]["paired_se"] == pytest.approx(1 / np.sqrt(3))
    table = identifier_table(scores, names)
    assert "| a | 4.0000 | <b> 3.0000 | +1.0000 ± 1.0000 | no |" in table
    assert "| b | 3.0000 | <a> 1.0000 | +2.0000 ± 0.5774 | yes |" in table


def test_lift_is_the_training_change_of_own_minus_mean_of_others_paired_per_image():
    names = ["a", "b", "c"]
    # 2 images; untrained: every identifier gives the same rewards except <a> lowers reward a by 1 on image 0
    base = np.array([[2.0, 1.0, 0.0], [4.0, 1.0, 0.0]])
    untrained = {"a": base - np.array([[1.0, 0, 0], [0, 0, 0]]), "b": base.copy(), "c": base.copy()}
    # trained: everything +1, <a> raises reward a by 3 on image 0 and 1 on image 1 over <b>, <c>
    trained = {"a": base + 1 + np.array([[3.0, 0, 0], [1.0, 0, 0]]), "b": base + 1, "c": base + 1}
    lifts = identifier_lifts(trained, untrained, names)
    # reward a, own − mean of others: untrained (−1, 0), trained (3, 1); lift (4, 1): mean 2.5, SE = std(4, 1)/√2 = 1.5
    assert lifts["a"]["untrained"] == pytest.approx(-0.5) and lifts["a"]["trained"] == pytest.approx(2.0)
    assert lifts["a"]["lift"] == pytest.approx(2.5) and lifts["a"]["lift_se"] == pytest.approx(1.5)
    # rewards b and c do not depend on the identifier: no lift
    assert lifts["b"]["lift"] == pytest.approx(0.0) and lifts["c"]["trained"] == pytest.approx(0.0)
    assert "| a | -0.5000 | +2.0000 | +2.5000 ± 1.5000 |" in lift_table(trained, untrained, names)
