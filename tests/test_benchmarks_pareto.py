"""benchmarks/pareto.py: hypervolume and fronts on hand-made sets, the normalisation, the methods, and a smoke run."""

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from parrot.selection import PerPromptStatTracker, compute_advantages, parse_selection
from parrot.train_config import load_train_config
from parrot_base.config import ConfigError
from t2i import Guidance

_SPEC = importlib.util.spec_from_file_location("pareto_benchmark", Path(__file__).parents[1] / "benchmarks" / "pareto.py")
pareto = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = pareto  # dataclasses look their module up while the script executes
_SPEC.loader.exec_module(pareto)


def test_hypervolume_2d_staircase_with_dominated_and_duplicate_points():
    # boxes [0,1]×[0,3] ∪ [0,2]×[0,2] ∪ [0,3]×[0,1]: 3 + 2 + 1 = 6
    staircase = np.array([[1, 3], [2, 2], [3, 1]], dtype=float)
    assert pareto.front_hypervolume(staircase, np.zeros(2)) == (6.0, 3)
    with_dominated = np.vstack([staircase, [[1, 1], [0.5, 2.5]]])
    assert pareto.front_hypervolume(with_dominated, np.zeros(2)) == (6.0, 3)
    with_duplicate = np.vstack([staircase, [[2, 2]]])  # both copies are on the front, the volume is unchanged
    assert pareto.front_hypervolume(with_duplicate, np.zeros(2)) == (6.0, 4)
    # a shifted reference point: boxes from (-1, -1): 2·4 + 1·3 + 1·2 = 13
    assert pareto.front_hypervolume(staircase, np.full(2, -1.0))[0] == pytest.approx(13.0)


def test_hypervolume_3d_boxes_by_inclusion_exclusion():
    assert pareto.front_hypervolume(np.array([[1.0, 2.0, 3.0]]), np.zeros(3)) == (6.0, 1)
    # three boxes of volume 2 that overlap pairwise in a unit cube, which all three share: 6 − 3 + 1 = 4
    points = np.array([[2, 1, 1], [1, 2, 1], [1, 1, 2]], dtype=float)
    assert pareto.front_hypervolume(points, np.zeros(3)) == (pytest.approx(4.0), 3)


def test_points_at_or_below_the_reference_add_no_volume():
    on_front = np.array([[0.0, 5.0], [2.0, 2.0]])  # (0, 5) is non-dominated but has zero width above ref 0
    assert pareto.front_hypervolume(on_front, np.zeros(2)) == (4.0, 2)
    below = np.array([[-1.0, 10.0], [2.0, 2.0]])  # beyond the reference in x: nothing
    assert pareto.front_hypervolume(below, np.zeros(2)) == (4.0, 2)
    assert pareto.front_hypervolume(np.array([[-1.0, -1.0]]), np.zeros(2)) == (0.0, 1)


def test_minmax_normalisation_over_the_union():
    a = np.array([[0.0, 10.0, 7.0], [2.0, 20.0, 7.0]])
    b = np.array([[4.0, 15.0, 7.0]])
    lo, hi = pareto.minmax_bounds([a, b])
    assert lo.tolist() == [0.0, 10.0, 7.0] and hi.tolist() == [4.0, 20.0, 7.0]
    # the constant third reward maps to 0
    assert pareto.normalise(a, lo, hi).tolist() == [[0.0, 0.0, 0.0], [0.5, 1.0, 0.0]]
    assert pareto.normalise(b, lo, hi).tolist() == [[1.0, 0.5, 0.0]]
    assert pareto.reference_point(3, 0.1).tolist() == [-0.1, -0.1, -0.1]
    with pytest.raises(ValueError, match="ref-offset=0"):
        pareto.reference_point(3, 0.0)
    with pytest.raises(ValueError, match="finite"):
        pareto.minmax_bounds([np.array([[np.nan, 1.0]])])


def test_methods_are_the_issue_settings():
    names = ["laion_aesthetic", "preference", "clip_score", "sentiment"]
    catalogue = pareto.method_catalogue(names, 4.0)
    assert list(catalogue) == [
        "base",
        "base+expander",
        "base+expander+ids",
        *(f"ddpo:{r}" for r in names),
        "ws1",
        "ws2",
        "ws2-unscaled",
        "parrot-t2i",
        "parrot-t2i-noids",
        "parrot-t2i-noids-z",
        "parrot-t2i-noids-z-down",
        "parrot-expander",
        "parrot",
        "parrot-noids",
        "parrot-no-pcg",
        "ws2+expander",
        "dpok",
        "rwr",
    ]
    assert [m.setting for m in catalogue.values()][:4] == ["plain_base", "untrained", "untrained", "trained"]
    assert pareto.ws1_weights(4) == pytest.approx([0.7, 0.1, 0.1, 0.1])
    common = ["--preset", "tiny", "--logging.log_with", "none"]
    ws1 = load_train_config([*common, *catalogue["ws1"].overrides])
    assert ws1.selection.mode == "weighted" and ws1.selection.weights == pytest.approx((0.7, 0.1, 0.1, 0.1))
    assert ws1.mode == "t2i" and not ws1.expander.model and not ws1.identifiers.enabled
    ddpo = load_train_config([*common, *catalogue["ddpo:clip_score"].overrides])
    assert ddpo.selection.mode == "single:clip_score" and ddpo.mode == "t2i" and not ddpo.identifiers.enabled
    # DDPO's advantage is centred: r z-scored against its prompt's scores (here its 4 images), never r itself
    rewards = torch.tensor([[0.0, 0.0, r, 0.0] for r in (1.0, 2.0, 3.0, 4.0)])
    valid = torch.ones_like(rewards, dtype=torch.bool)
    selection = parse_selection(ddpo.selection, names)
    values = compute_advantages(rewards, valid, ["c"] * 4, ddpo.selection, selection, tracker=PerPromptStatTracker()).values
    assert values[:, 2].tolist() == pytest.approx([d / 1.25**0.5 for d in (-1.5, -0.5, 0.5, 1.5)], abs=1e-5)
    # the unscaled sum: s = Σ_k r_k / 4 at the rewards' own scales, z-scored in the group; the small-spread reward
    # (column 2, spread 0.01) barely moves A_i, where ws2's per-reward z-scores count it as much as the others
    unscaled = load_train_config([*common, *catalogue["ws2-unscaled"].overrides]).selection
    rewards = torch.tensor([[1.0, 0.0, 0.00, 0.0], [3.0, 0.0, 0.01, 0.0], [2.0, 0.0, 0.02, 0.0], [2.0, 0.0, 0.03, 0.0]])
    advantages = compute_advantages(rewards, valid, ["c"] * 4, unscaled, parse_selection(unscaled, names)).values.sum(1)
    s = rewards.sum(1).double() / 4
    assert advantages.tolist() == pytest.approx(((s - s.mean()) / s.std(unbiased=False)).tolist(), abs=1e-4)
    assert not values[:, [0, 1, 3]].any()
    tiny_names = list(load_train_config(common + ["--mode", "t2i"]).rewards.names)
    tiny = pareto.method_catalogue(tiny_names, 3.0)
    # T2I-only Parrot has no expander, like WS; WS2 + expander trains both on the equal-weight sum
    parrot_t2i = load_train_config([*common, *tiny["parrot-t2i"].overrides])
    assert parrot_t2i.mode == "t2i" and not parrot_t2i.expander.model and parrot_t2i.selection.mode == "pareto"
    joint_no_ids = load_train_config([*common, *tiny["parrot-noids"].overrides])
    assert joint_no_ids.mode == "joint" and joint_no_ids.selection.mode == "pareto" and not joint_no_ids.identifiers.enabled
    no_ids = load_train_config([*common, *tiny["parrot-t2i-noids"].overrides])
    assert no_ids.selection.mode == "pareto" and no_ids.mode == "t2i" and not no_ids.identifiers.enabled and not no_ids.expander.model
    z = load_train_config([*common, *tiny["parrot-t2i-noids-z"].overrides])
    assert z.selection.mode == "pareto" and (z.selection.reward_weighting, z.selection.gradient_normalisation) == ("normalised", "group")
    assert z.mode == "t2i" and not z.identifiers.enabled and not z.expander.model
    down = load_train_config([*common, *tiny["parrot-t2i-noids-z-down"].overrides])
    assert down.selection.dominated == "push_down" and z.selection.dominated == "zero"  # the paper's 0 unless asked
    assert dataclasses.replace(down.selection, dominated="zero") == z.selection and down.mode == z.mode
    ws2_joint = load_train_config([*common, *tiny["ws2+expander"].overrides])
    assert ws2_joint.mode == "joint" and ws2_joint.expander.model and ws2_joint.selection.weights == pytest.approx((1 / 3,) * 3)
    # without identifiers an expander samples K expansions per prompt (the group-mean baseline compares them)
    assert not ws2_joint.identifiers.enabled and ws2_joint.sampling.expansions_per_prompt == 3
    dpok = load_train_config([*common, *tiny["dpok"].overrides])
    assert dpok.t2i.kl_weight == pareto.DPOK_KL_WEIGHT > 0 and dpok.mode == "t2i" and dpok.selection.mode == "weighted"
    # without prompt-centred guidance: w1 = 0, so only ĉ's prediction is guided (CFG on ĉ at the base's scale)
    no_pcg = load_train_config([*common, *tiny["parrot-no-pcg"].overrides])
    guidance = Guidance.prompt_centred(no_pcg.sampling.w1, no_pcg.sampling.w2)
    assert no_pcg.mode == "joint" and guidance.active == (1,) and guidance.weights[1] == 3.0 and guidance.needs_unconditional
    assert load_train_config([*common, *catalogue["parrot"].overrides]).sampling.w1 > 0


def test_baselines_keep_the_raw_weighting_and_parrot_rows_follow_the_default():
    """Issue 13 switched the default to normalised + group; rows measured with raw pin it, the Parrot rows do not."""
    common = ["--preset", "tiny", "--logging.log_with", "none"]
    names = list(load_train_config(common).rewards.names)
    catalogue = pareto.method_catalogue(names, 3.0)
    raw_rows = ["ws1", "ws2", "dpok", "rwr", "ws2+expander", "parrot-t2i-noids"]
    ddpo_rows = [f"ddpo:{r}" for r in names]
    default_rows = ["parrot-t2i", "parrot-t2i-noids-z", "parrot-t2i-noids-z-down", "parrot-expander", "parrot", "parrot-noids",
                    "parrot-no-pcg"]  # fmt: skip
    assert set(raw_rows + ddpo_rows + default_rows + ["ws2-unscaled"]) == {m.name for m in catalogue.values() if m.trained}
    for name in raw_rows:
        assert catalogue[name].overrides[-2:] == ("--selection.reward_weighting", "raw") or name in ("dpok", "rwr"), name
        assert load_train_config([*common, *catalogue[name].overrides]).selection.reward_weighting == "raw", name
    for name in ddpo_rows:  # DDPO's per-prompt z-score, as the GRPO catalogue's DDPO row
        selection = load_train_config([*common, *catalogue[name].overrides]).selection
        assert (selection.reward_weighting, selection.gradient_normalisation) == ("normalised", "per_prompt"), name
    ws2 = load_train_config([*common, *catalogue["ws2"].overrides]).selection
    assert (ws2.mode, ws2.selection_normalisation) == ("weighted", "batch")  # A_i = Σ_k w_k z_B(r_k)_i, as before the switch
    for name in default_rows:
        selection = load_train_config([*common, *catalogue[name].overrides]).selection
        assert (selection.mode, selection.reward_weighting, selection.gradient_normalisation) == ("pareto", "normalised", "group")
    pinned = ("parrot-t2i-noids-z", "parrot-t2i-noids-z-down")  # measured with the weighting pinned
    assert not any("--selection.reward_weighting" in catalogue[name].overrides for name in default_rows if name not in pinned)


def test_a_cell_made_under_the_old_default_is_not_reused_for_the_new_one(tmp_path):
    from benchmarks.pareto_cells import read_cell, recorded_selection, write_cell

    flags = ["--preset", "tiny", "--mode", "joint", "--selection.mode", "pareto", "--seed", "0"]
    now = {"reward_weighting": "normalised", "gradient_normalisation": "group"}
    old = {"method": "parrot", "seed": 0, "setting": "trained", "flags": flags}  # written before cells recorded "selection"
    write_cell(tmp_path / "parrot-seed0.json", old)
    assert recorded_selection(old) == {"reward_weighting": "raw", "gradient_normalisation": "-"}  # raw ignores it
    with pytest.raises(SystemExit, match=r"made with selection \{'reward_weighting': 'raw'.*the defaults changed in issue 13"):
        read_cell(tmp_path / "parrot-seed0.json", flags, now)
    pinned = [*flags[:-2], "--selection.reward_weighting", "normalised", "--selection.gradient_normalisation", "group", "--seed", "0"]
    write_cell(tmp_path / "z-seed0.json", {**old, "flags": pinned})
    assert read_cell(tmp_path / "z-seed0.json", pinned, now)["flags"] == pinned  # what its flags pinned, as now
    write_cell(tmp_path / "base-seednone.json", {**old, "setting": "plain_base"})
    assert read_cell(tmp_path / "base-seednone.json", flags, now) is not None  # untrained: no advantages to differ
    write_cell(tmp_path / "new-seed0.json", {**old, "selection": now})
    assert read_cell(tmp_path / "new-seed0.json", flags, now)["selection"] == now


def test_a_refused_cell_names_the_options_that_differ(tmp_path):
    from benchmarks.pareto_cells import flag_differences, read_cell, write_cell

    made = ["--preset", "shapes", "--evaluation.seeds", *map(str, range(8)), "--mode", "t2i", "--expander.model", "", "--seed", "0"]
    now = ["--preset", "shapes", "--evaluation.seeds", *map(str, range(32)), "--mode", "t2i", "--expander.model", "", "--seed", "0"]
    assert flag_differences(made, now) == "--evaluation.seeds: 0 … 7 there, 0 … 31 now"
    assert flag_differences(["--a", "1"], ["--a", "1", "--b", "x y"]) == "--b: absent there, 'x y' now"
    assert flag_differences(["--a", ""], ["--a", "2"]) == "--a: '' there, 2 now"
    assert flag_differences(["--a", "1", "--b", "2"], ["--b", "2", "--a", "1"]).startswith("the same options in another order")
    write_cell(tmp_path / "base-seednone.json", {"method": "base", "seed": None, "setting": "plain_base", "flags": made})
    with pytest.raises(SystemExit, match=r"made with other parrot.train flags \(--evaluation.seeds: 0 … 7 there, 0 … 31 now\); remove it"):
        read_cell(tmp_path / "base-seednone.json", now)


def test_grpo_catalogue_is_the_issue_settings():
    from benchmarks.pareto_cells import GRPO_KL_WEIGHT, grpo_catalogue

    common = ["--preset", "tiny", "--logging.log_with", "none", "--model.pipeline", "builtin:tiny_sd3"]
    names = list(load_train_config(common).rewards.names)
    catalogue = grpo_catalogue(names, "clip_score")
    assert list(catalogue) == ["base", "ddpo:clip_score", "grpo:clip_score", "grpo-ws", "gdpo", "grpo-pareto"]
    configs = {m: load_train_config([*common, *method.overrides]) for m, method in catalogue.items()}
    for name, config in configs.items():
        assert config.mode == "t2i" and not config.expander.model and not config.identifiers.enabled, name
    ddpo, grpo = configs["ddpo:clip_score"], configs["grpo:clip_score"]
    assert ddpo.selection.gradient_normalisation == "per_prompt" and ddpo.t2i.kl_weight == 0 and ddpo.t2i.estimator == "is"
    assert ddpo.selection.mode == grpo.selection.mode == "single:clip_score" and ddpo.selection.reward_weighting == "normalised"
    for name in ("grpo:clip_score", "grpo-ws", "gdpo", "grpo-pareto"):
        config = configs[name]
        assert config.selection.gradient_normalisation == "group" and config.selection.reward_weighting == "normalised", name
        assert config.t2i.kl_weight == GRPO_KL_WEIGHT and config.t2i.estimator == "is", name
    assert [configs[m].selection.mode for m in ("grpo-ws", "gdpo", "grpo-pareto")] == ["weighted", "gdpo", "pareto"]
    assert configs["grpo-ws"].selection.selection_normalisation == "batch"
    with pytest.raises(SystemExit, match="--hard 'nope' is not among the rewards"):
        grpo_catalogue(names, "nope")


def test_rwr_row_fails_loudly_until_the_estimator_exists(tmp_path):
    common = ["--preset", "tiny", "--logging.log_with", "none"]
    flags = [*common, *pareto.method_catalogue(["a", "b", "c"], 3.0)["rwr"].overrides]
    try:
        assert load_train_config(flags).t2i.estimator == "rwr"  # the loop has it: the row is a plain setting
    except ConfigError:
        with pytest.raises(SystemExit, match="method 'rwr' .*reward-weighted.*--skip rwr"):
            pareto.main(["--preset", "tiny", "--methods", "rwr", "--seeds", "0", "--out", str(tmp_path)])


def test_smoke_run_writes_cells_table_and_plots_and_a_rerun_skips_finished_cells(tmp_path, monkeypatch):
    argv = ["--preset", "tiny", "--methods", "ws2", "parrot-no-pcg", "--seeds", "0", "--iterations", "2", "--eval-seeds", "2",
            "--set", "--sampling.num_steps 2 --evaluation.every 2",
            "--json", str(tmp_path / "p.json"), "--out", str(tmp_path / "out")]  # fmt: skip
    result = pareto.main(argv)
    saved = json.loads((tmp_path / "p.json").read_text())
    assert saved["methods"].keys() == {"base", "ws2", "parrot-no-pcg"}
    assert {"command", "budget", "normalisation", "reference_point", "wall_s"} <= saved.keys()
    assert saved["budget"]["images_per_run"] == 2 * 4 * 3  # tiny: 4 prompts × 3 images, 2 iterations
    assert list(saved["methods"]["base"]["seeds"]) == ["none"] and list(saved["methods"]["ws2"]["seeds"]) == ["0"]
    lo, hi = np.array(saved["normalisation"]["low"]), np.array(saved["normalisation"]["high"])
    for entry in saved["methods"].values():
        run = next(iter(entry["seeds"].values()))
        scores = np.array(run["scores"])
        assert scores.shape == (8, 3)  # 4 held-out prompts × 2 evaluation seeds, 3 rewards
        assert run.keys() >= {"means", "hypervolume", "front_size", "wall_s", "average_normalised", "per_prompt_means"}
        # the recorded hypervolume is that of the 4 per-prompt means (seed-major rows: prompt j is rows j and 4 + j)
        means = (scores[:4] + scores[4:]) / 2
        assert np.allclose(list(run["per_prompt_means"].values()), means)
        hv, size = pareto.front_hypervolume(pareto.normalise(means, lo, hi), np.array(saved["reference_point"]))
        assert run["hypervolume"] == pytest.approx(hv) and run["front_size"] == size <= 4
        assert run["average_normalised"] == pytest.approx(pareto.normalise(scores, lo, hi).mean())
        assert entry["summary"]["hypervolume_gain"] == pytest.approx(hv - saved["methods"]["base"]["seeds"]["none"]["hypervolume"])
        assert entry["summary"]["hypervolume"][1] is None  # one seed: no standard error
    union = np.concatenate([np.array(next(iter(e["seeds"].values()))["scores"]) for e in saved["methods"].values()])
    assert lo.tolist() == union.min(0).tolist() and hi.tolist() == union.max(0).tolist()
    assert result["methods"].keys() == saved["methods"].keys()
    # each trained cell keeps its training curve (batch mean per iteration); the rise is last − first with 2 iterations
    curve = saved["methods"]["ws2"]["seeds"]["0"]["curve"]
    assert curve.keys() == {"jpeg_compressibility", "clip_score", "sentiment"} and all(len(v) == 2 for v in curve.values())
    rise = saved["methods"]["ws2"]["summary"]["training_rise"]["sentiment"][0]
    assert rise == pytest.approx(curve["sentiment"][1] - curve["sentiment"][0])
    assert saved["methods"]["base"]["seeds"]["none"]["curve"] == {} and saved["methods"]["base"]["summary"]["training_rise"] == {}
    # and its held-out curve (--evaluation.every 2): the start and the end, whose point is the cell's own held-out means
    held_out = saved["methods"]["ws2"]["seeds"]["0"]["heldout_curve"]
    assert held_out["iterations"] == [0, 2]
    assert {k: v[1] for k, v in held_out.items() if k != "iterations"} == pytest.approx(saved["methods"]["ws2"]["seeds"]["0"]["means"])
    assert saved["methods"]["base"]["seeds"]["none"]["heldout_curve"] == {}
    curve_rows = (tmp_path / "out" / "table.md").read_text().split("Held-out mean reward during training")[1]
    end_row = next(line for line in curve_rows.splitlines() if line.startswith("| ws2 | 2 |"))
    assert end_row.startswith(f"| ws2 | 2 | {held_out['jpeg_compressibility'][1]:.4f} ± – |")  # one seed: no SE
    # its Table-1 average (from the means, on the run's normalisation) is the table's, from the same images
    assert end_row.endswith(f"| {saved['methods']['ws2']['seeds']['0']['average_normalised']:.4f} ± – |")
    assert "| parrot-no-pcg |" in (tmp_path / "out" / "table.md").read_text().split("Training-batch reward")[1]
    for name in ("fronts.png", "hypervolume.png", "curves.png", "heldout_curves.png"):
        with Image.open(tmp_path / "out" / name) as image:
            assert image.format == "PNG" and image.size[0] > 100
    assert "| method | jpeg_compressibility | clip_score | sentiment | avg norm. |" in (tmp_path / "out" / "table.md").read_text()

    # a rerun loads every finished cell: no trainer is built, the cells are not rewritten, the figures are the same
    cells = sorted((tmp_path / "out" / "cells").glob("*.json"))
    assert [c.name for c in cells] == ["base-seednone.json", "parrot-no-pcg-seed0.json", "ws2-seed0.json"]
    stamps = [c.stat().st_mtime_ns for c in cells]

    def no_training(*_args, **_kwargs):
        raise AssertionError("a finished cell was run again")

    monkeypatch.setattr(pareto, "ParrotTrainer", no_training)
    again = pareto.main(argv)
    assert [c.stat().st_mtime_ns for c in cells] == stamps
    assert {m: e["summary"] for m, e in again["methods"].items()} == {m: e["summary"] for m, e in result["methods"].items()}
    # a cell made with other flags is refused, not reused
    with pytest.raises(SystemExit, match="was made with other parrot.train flags"):
        pareto.main([*argv[:-4], "--set", "--sampling.num_steps 3", *argv[-4:]])


def test_curve_rise_is_last_quarter_less_first_quarter():
    from benchmarks.pareto_stats import curve_rise

    assert curve_rise([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 9.0]) == pytest.approx((7 + 9) / 2 - (1 + 2) / 2)
    assert curve_rise([3.0, 1.0, 2.0]) == pytest.approx(2.0 - 3.0)  # quarters of one iteration
    assert curve_rise([5.0]) is None and curve_rise([]) is None


def test_method_colours_are_distinct_for_the_full_method_list():
    from parrot.plots import method_colours

    colours = method_colours(12)
    assert len(set(colours)) == 12
    assert method_colours(22)[20] == colours[0]  # 20 distinct, then repeats
