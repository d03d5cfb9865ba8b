"""benchmarks/identifiers.py: the Fig. 7 margins against hand-computed values."""

import numpy as np
import pytest

from benchmarks.identifiers import change_matrix, identifier_lifts, identifier_margins, identifier_table, lift_table, main, summary


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


def three_identifiers() -> tuple[list[str], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Names, trained and untrained (images, K) scores of 3 identifiers over 2 images: untrained, every identifier
    gives the same rewards except <a> lowers reward a by 1 on image 0; trained, everything +1 and <a> raises reward
    a by 3 on image 0 and 1 on image 1 over <b>, <c>."""
    base = np.array([[2.0, 1.0, 0.0], [4.0, 1.0, 0.0]])
    untrained = {"a": base - np.array([[1.0, 0, 0], [0, 0, 0]]), "b": base.copy(), "c": base.copy()}
    trained = {"a": base + 1 + np.array([[3.0, 0, 0], [1.0, 0, 0]]), "b": base + 1, "c": base + 1}
    return ["a", "b", "c"], trained, untrained


def test_lift_is_the_training_change_of_own_minus_mean_of_others_paired_per_image():
    names, trained, untrained = three_identifiers()
    lifts = identifier_lifts(trained, untrained, names)
    # reward a, own − mean of others: untrained (−1, 0), trained (3, 1); lift (4, 1): mean 2.5, SE = std(4, 1)/√2 = 1.5
    assert lifts["a"]["untrained"] == pytest.approx(-0.5) and lifts["a"]["trained"] == pytest.approx(2.0)
    assert lifts["a"]["lift"] == pytest.approx(2.5) and lifts["a"]["lift_se"] == pytest.approx(1.5)
    # rewards b and c do not depend on the identifier: no lift
    assert lifts["b"]["lift"] == pytest.approx(0.0) and lifts["c"]["trained"] == pytest.approx(0.0)
    assert "| a | -0.5000 | +2.0000 | +2.5000 ± 1.5000 |" in lift_table(trained, untrained, names)


def test_change_matrix_holds_the_lifts_and_each_identifiers_side_effects_in_standard_deviations():
    names, trained, untrained = three_identifiers()
    d = change_matrix(trained, untrained, names)
    # reward a over the 6 untrained images (1, 4, 2, 4, 2, 4): population SD √(318/216)
    sd = np.sqrt(318 / 216)
    # <a>: [r_a(<a>) − mean_i r_a(<i>)] untrained (−2/3, 0), trained (2, 2/3): change (8/3, 2/3), mean 5/3 = lift·(K−1)/K
    # <b>: untrained (1/3, 0), trained (−1, −1/3): change (−4/3, −1/3), mean −5/6; <c> the same
    np.testing.assert_allclose(d[:, 0], np.array([5 / 3, -5 / 6, -5 / 6]) / sd)
    assert np.isnan(d[:, 1:]).all()  # rewards b and c are constant: no standard deviation to measure in


def test_summary_over_seeds_and_its_one_line_errors(tmp_path, capsys):
    names = ["a", "b"]
    untrained = {"a": np.array([[1.0, 0.0], [3.0, 2.0]]), "b": np.array([[1.0, 1.0], [3.0, 1.0]])}
    records = []
    for gain in (1.0, 3.0):  # <a> raises reward a by `gain` over the untrained start; <b> changes nothing
        trained = {"a": untrained["a"] + np.array([[gain, 0.0], [gain, 0.0]]), "b": untrained["b"].copy()}
        records.append({
            "scores": {k: v.tolist() for k, v in trained.items()}, "untrained_scores": {k: v.tolist() for k, v in untrained.items()},
            "margins": identifier_margins(trained, names), "lifts": identifier_lifts(trained, untrained, names),
        })  # fmt: skip
    table = summary(records)
    # lifts 1 and 3: mean 2, SE 1; <a> wins on a by 2 vs 0 with SE 0 in both runs (own − <b>: 1+1−1, 3+3−3 per image)
    assert "| a | +2.0000 ± 1.0000 | 2 of 2 |" in table
    # D[a, a] = lift·(K−1)/K / SD of reward a over the untrained images (1, 3, 1, 3: SD 1) = 0.5 and 1.5: mean 1, SE 0.5
    assert "| <a> | +1.000 ± 0.500 |" in table
    # shared change of reward a: (gain on the 2 images under <a>, 0 on the 2 under <b>) / 4 = 0.5, 1.5: mean 1, SE 0.5
    assert "| common (every identifier) | +1.000 ± 0.500 | +0.000 ± 0.000 |" in table
    with pytest.raises(FileNotFoundError, match="--summarise: no file"):
        main(["--summarise", str(tmp_path / "missing.json")])


def test_newest_checkpoint_is_the_last_valid_one_and_a_run_without_names_the_flag(tmp_path):
    from test_parrot_checkpoint import write_checkpoint

    from benchmarks.identifiers import newest_checkpoint

    with pytest.raises(FileNotFoundError, match=rf"^--t2i_from: no checkpoint under {tmp_path}/checkpoints: train the run first$"):
        newest_checkpoint(tmp_path, "--t2i_from")
    write_checkpoint(tmp_path / "checkpoints", 1)
    second = write_checkpoint(tmp_path / "checkpoints", 2)
    assert newest_checkpoint(str(tmp_path)) == second
