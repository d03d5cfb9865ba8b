"""benchmarks/pareto_paired.py: paired A − B over the shared seeds, by hand."""

import json

import numpy as np
import pytest

from benchmarks.pareto_paired import main, paired_curve_differences, paired_differences
from benchmarks.pareto_report import paired_goal_lines


def cell(avg, hv, aesthetic):
    return {"average_normalised": avg, "hypervolume": hv, "means": {"laion_aesthetic": aesthetic}}


METHODS = {
    "a": {"seeds": {"0": cell(0.6, 0.3, 4.0), "1": cell(0.7, 0.5, 5.0), "2": cell(0.5, 0.4, 4.5)}},
    "b": {"seeds": {"0": cell(0.5, 0.3, 4.0), "1": cell(0.6, 0.2, 4.0)}},
    "base": {"seeds": {"none": cell(0.4, 0.1, 3.0)}},
}


def test_differences_over_the_shared_seeds_and_against_an_untrained_cell():
    d = paired_differences(METHODS, "a", "b")  # seeds 0 and 1: avg diffs 0.1, 0.1; HV 0.0, 0.3; aesthetic 0.0, 1.0
    assert d["table1_average"] == pytest.approx((0.1, 0.0), abs=1e-12)
    assert d["hypervolume"] == pytest.approx((0.15, 0.15))  # SE of (0, 0.3): std 0.2121 / √2
    assert d["laion_aesthetic"] == pytest.approx((0.5, 0.5))
    d = paired_differences(METHODS, "a", "base")  # every seed of a against base's one cell: 0.2, 0.3, 0.1
    assert d["table1_average"] == pytest.approx((0.2, 0.1 / 3**0.5))


def test_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit, match="method 'c' is not in this run"):
        paired_differences(METHODS, "a", "c")
    with pytest.raises(SystemExit, match="share 1 seed"):
        paired_differences({"x": {"seeds": {"0": cell(0, 0, 0)}}, "y": {"seeds": {"0": cell(0, 0, 0)}}}, "x", "y")
    path = tmp_path / "pareto.json"
    path.write_text(json.dumps({"methods": METHODS}))
    main([str(path), "a", "b"])
    assert capsys.readouterr().out.startswith("a − b: table1_average +0.1000 ± 0.0000; hypervolume +0.1500 ± 0.1500")
    with pytest.raises(SystemExit, match="in pairs"):
        main([str(path), "a"])
    (tmp_path / "other.json").write_text("[1, 2]")
    with pytest.raises(SystemExit, match="other.json is not a pareto.json"):
        main([str(tmp_path / "other.json"), "a", "b"])


def test_the_report_prints_issue_13s_pairs_that_the_run_has():
    methods = {
        "parrot-t2i-noids-z": METHODS["a"],
        "ws2": METHODS["b"],  # seeds 0 and 1 shared: the same figures as a − b above
        "ws1": {"seeds": {"0": cell(0.5, 0.3, 4.0)}},  # one shared seed: no paired SE, left out
        "parrot": METHODS["a"],
        "base+expander": METHODS["base"],  # untrained: every seed of parrot against its one cell
    }
    lines = paired_goal_lines(methods)
    assert lines[1].startswith("Paired over training seeds")
    assert lines[3:] == [
        "- parrot-t2i-noids-z − ws2: Table-1 avg +0.1000 ± 0.0000, HV +0.1500 ± 0.1500, laion_aesthetic +0.5000 ± 0.5000",
        "- parrot − base+expander: Table-1 avg +0.2000 ± 0.0577, HV +0.3000 ± 0.0577, laion_aesthetic +1.5000 ± 0.2887",
    ]
    assert paired_goal_lines({"ws2": METHODS["b"]}) == []


def test_held_out_curves_are_paired_at_the_points_every_cell_has(tmp_path, capsys):
    def curved(iterations, clip):
        return {**cell(0, 0, 0), "heldout_curve": {"iterations": iterations, "clip_score": clip}}

    methods = {
        "a": {"seeds": {"0": curved([0, 5, 10], [0.60, 0.62, 0.66]), "1": curved([0, 5, 10], [0.60, 0.61, 0.63])}},
        "b": {"seeds": {"0": curved([0, 10], [0.60, 0.64]), "1": curved([0, 10], [0.60, 0.60]), "2": curved([0], [0.6])}},
    }
    d = paired_curve_differences(methods, "a", "b")  # seeds 0, 1; iterations 0 and 10 (b has no 5)
    assert d["iterations"] == [0, 10]
    assert d["clip_score"][0] == pytest.approx((0.0, 0.0), abs=1e-12)
    assert d["clip_score"][1] == pytest.approx((0.025, 0.005))  # differences 0.02 and 0.03
    # with the run's normalisation, the Table-1 average of each point's means: one reward on [0.5, 0.7]
    d = paired_curve_differences(methods, "a", "b", (np.array([0.5]), np.array([0.7])))
    assert d["table1_average"][1] == pytest.approx((0.025 / 0.2, 0.005 / 0.2))
    path = tmp_path / "pareto.json"
    path.write_text(json.dumps({"methods": methods, "normalisation": {"low": [0.5], "high": [0.7]}}))
    main([str(path), "a", "b", "--curves"])
    assert capsys.readouterr().out.splitlines()[1] == "a − b, iteration 10: clip_score +0.0250 ± 0.0050; table1_average +0.1250 ± 0.0250"
    with pytest.raises(SystemExit, match='cells without a held-out curve: train them with --set "--evaluation.every N"'):
        paired_curve_differences({**methods, "c": METHODS["b"]}, "a", "c")
