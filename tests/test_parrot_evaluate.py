"""python -m parrot.evaluate: shipped prompt sets, datasets sources, Parrot's Table-1 numbers, resume, refusals, end to end."""

import json
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from scipy.stats import sem
from test_cli_errors import one_error_line, run
from test_parrot_generate import fake_training_run

import parrot.evaluate as evaluate_module
from parrot.evaluate import main
from parrot.evaluation import EvaluationSamples
from parrot.prompts import PROMPT_SETS, prompt_set_path, read_prompt_records, read_prompts
from parrot.table1 import format_table1, table1_record
from parrot.train_config import load_train_config
from parrot_base.cli import UsageError

FAST = ["--rewards", "jpeg_compressibility", "--num_steps", "2", "--images_per_prompt", "2", "--batch_size", "2"]


@pytest.fixture(autouse=True)
def _restored(restore_output_settings):
    """run_cli changes process-wide output settings; conftest's fixture restores them."""


# ----- prompt sets and sources ------------------------------------------------------------------
def test_shipped_prompt_sets_counts_categories_and_licences():
    parti = read_prompt_records("partiprompts")
    assert len(parti) == 1632
    counts = Counter(r.category for r in parti)
    assert len(counts) == 12 and counts["Animals"] == 314 and counts["World Knowledge"] == 214 and counts["Abstract"] == 51
    assert parti[0].prompt == "bond" and parti[0].category == "Abstract"
    # a prompt that starts with a quote keeps it (TSV, no CSV quoting)
    assert any(r.prompt.startswith('"G I G G L E" painted in thick colorful lettering') for r in parti)
    animals = read_prompts("simple_animals")
    assert len(animals) == 45 and animals[:2] == ["cat", "dog"] and read_prompts("ddpo_animals") == animals
    assert len(read_prompts("diffusiondb")) == 9798
    assert read_prompts("partiprompts", limit=3) == ["bond", "element", "molecule"]
    for name in PROMPT_SETS:
        path = prompt_set_path(name)
        assert path.stat().st_size < 5_000_000
        licence = path.with_name(path.stem + ".LICENSE")
        assert licence.is_file() and licence.read_text().strip()
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '\nparrot = ["prompt_sets/*"]\n' in pyproject.split("[tool.setuptools.package-data]")[1]  # a wheel carries them
    with pytest.raises(FileNotFoundError, match="'partiprompt' does not exist .* shipped set is one of: partiprompts, simple_animals"):
        read_prompts("partiprompt")


def test_datasets_sources_with_column_split_and_category(tmp_path):
    rows = {"text": ["a red circle", "", "a blue square"], "category": ["shapes", "x", "more"], "id": [1, 2, 3]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "flat"))
    records = read_prompt_records(tmp_path / "flat")
    assert [(r.prompt, r.category) for r in records] == [("a red circle", "shapes"), ("a blue square", "more")]
    split = datasets.DatasetDict({"test": datasets.Dataset.from_dict({"caption": ["a", "b"], "desc": ["long a", "long b"]})})
    split.save_to_disk(str(tmp_path / "dict"))
    assert read_prompts(tmp_path / "dict", split="test") == ["a", "b"]
    assert read_prompts(tmp_path / "dict", column="desc", split="test") == ["long a", "long b"]
    with pytest.raises(ValueError, match=r"has no split 'train'; it has \['test'\]"):
        read_prompts(tmp_path / "dict")
    with pytest.raises(ValueError, match=r"has no column 'nope' \(columns: \['caption', 'desc'\]\)"):
        read_prompts(tmp_path / "dict", column="nope", split="test")
    datasets.Dataset.from_dict({"prompt": ["x y", "z"]}).to_parquet(str(tmp_path / "p.parquet"))
    assert read_prompts(tmp_path / "p.parquet") == ["x y", "z"]


def test_training_config_names_shipped_sets(tmp_path):
    config = load_train_config(["--preset", "tiny", "--prompts.train_file", "diffusiondb", "--prompts.evaluation_file", "partiprompts"])
    assert (config.prompts.train_file, config.prompts.evaluation_file) == ("diffusiondb", "partiprompts")
    from parrot.prompts import read_prompt_list

    assert len(read_prompt_list((), config.prompts.evaluation_file, "prompts.evaluation")) == 1632


# ----- Table 1 by hand ----------------------------------------------------------------------------
def samples(name, rows):
    """2 prompts × 2 images (seeds 0, 1), rewards r1 and r2."""
    return EvaluationSamples(["laion_aesthetic", "r2"], ["p1", "p1", "p2", "p2"], ["p1", "p1", "p2", "p2"], [0, 1, 0, 1],
                             torch.tensor(rows, dtype=torch.float64), setting=name)  # fmt: skip


def test_table1_numbers_against_hand_computed_values():
    a = samples("a", [[1, 10], [3, 10], [5, 20], [7, 40]])  # per-prompt means (2, 10), (6, 30)
    b = samples("b", [[0, 0], [2, 20], [4, 30], [6, 30]])  # per-prompt means (1, 10), (5, 30)
    record = table1_record({"a": a, "b": b}, {"p1": "x", "p2": "y"})
    # bounds over the union of both methods' images: r1 ∈ [0, 7], r2 ∈ [0, 40]
    assert record["normalisation"]["low"] == [0, 0] and record["normalisation"]["high"] == [7, 40]
    ra, rb = record["methods"]["a"], record["methods"]["b"]
    assert ra["rewards"]["laion_aesthetic"] == pytest.approx({"mean": 4.0, "se": 2.0})  # sem([2, 6]) = 4/2
    assert ra["rewards"]["r2"] == pytest.approx({"mean": 20.0, "se": 10.0})
    assert rb["rewards"]["laion_aesthetic"] == pytest.approx({"mean": 3.0, "se": 2.0})
    # average of normalised means: a (4/7 + 20/40) / 2, b (3/7 + 0.5) / 2; SE over per-prompt normalised averages
    a1, a2 = (2 / 7 + 10 / 40) / 2, (6 / 7 + 30 / 40) / 2
    assert ra["average"] == pytest.approx({"mean": (4 / 7 + 0.5) / 2, "se": abs(a2 - a1) / 2})
    assert rb["average"]["mean"] == pytest.approx((3 / 7 + 0.5) / 2)
    assert (ra["prompts"], ra["images"]) == (2, 4)
    # per category: the prompt's own images, on the overall bounds, no SE from one prompt
    x = record["categories"]["x"]["a"]
    assert x["rewards"]["laion_aesthetic"] == {"mean": 2.0, "se": None} and x["average"]["mean"] == pytest.approx(a1)
    table = format_table1(record)
    assert "| method | aesthetics (laion_aesthetic) | r2 | average (normalised) |" in table
    assert f"| a | 4.0000 ± 2.0000 | 20.0000 ± 10.0000 | {(4 / 7 + 0.5) / 2:.4f} ± {abs(a2 - a1) / 2:.4f} |" in table
    assert "### x (1 prompts)" in table and "| a | 2.0000 | 10.0000 |" in table


# ----- resume and refusals -------------------------------------------------------------------------
def record_todo(monkeypatch):
    calls = []
    original = evaluate_module.evaluate_method

    def recording(config, method, todo, *args):
        calls.append((method.name, [r.prompt for r in todo]))
        return original(config, method, todo, *args)

    monkeypatch.setattr(evaluate_module, "evaluate_method", recording)
    return calls


def test_resume_skips_finished_prompts_and_refuses_changed_settings(tmp_path, monkeypatch, capsys):
    out = tmp_path / "eval"
    base = ["--methods", "base=builtin:tiny", *FAST, "--out", str(out)]
    original_expansions = evaluate_module.expansions

    def interrupted(config, expander, prompts):  # a crash while the third prompt is being sampled
        if "molecule" in prompts:
            raise KeyboardInterrupt
        return original_expansions(config, expander, prompts)

    monkeypatch.setattr(evaluate_module, "expansions", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main([*base, "--max_prompts", "3"])
    lines = (out / "results.jsonl").read_text().splitlines()
    assert [json.loads(line)["prompt"] for line in lines] == ["bond", "element"]  # flushed as each prompt finished
    monkeypatch.setattr(evaluate_module, "expansions", original_expansions)
    calls = record_todo(monkeypatch)
    record = main([*base, "--max_prompts", "3"])
    assert calls == [("base", ["molecule"])]  # the finished two were not generated again
    after = (out / "results.jsonl").read_text().splitlines()
    assert after[:2] == lines and len(after) == 3 and record["prompt_count"] == 3
    main([*base, "--max_prompts", "2"])  # a smaller slice: nothing to do, the table of the first two
    assert len(calls) == 1 and json.loads((out / "table.json").read_text())["prompt_count"] == 2

    with pytest.raises(UsageError, match=r"holds results of other settings \(images_per_prompt: 2 → 3; num_steps: 2 → 3\)"):
        main([*base, "--images_per_prompt", "3", "--num_steps", "3"])
    capsys.readouterr()  # the progress bars so far
    code, _, err = run(main, [*base, "--methods", "base=builtin:tiny", "--seed", "5"], capsys)
    assert code == 2 and "seed: 0 → 5" in one_error_line(err)
    # --overwrite starts again
    (out / "notes.txt").write_text("mine")
    main([*base, "--max_prompts", "1", "--seed", "5", "--overwrite"])
    assert (out / "notes.txt").read_text() == "mine"  # --overwrite replaces only the evaluation's own files
    assert len((out / "results.jsonl").read_text().splitlines()) == 1 and calls[-1] == ("base", ["bond"])


def test_user_mistakes_are_one_line(tmp_path, capsys):
    out = ["--out", str(tmp_path / "e")]
    cases = {
        "--methods is empty": [*FAST, *out],
        "--methods 'base': write NAME=SOURCE": ["--methods", "base", *FAST, *out],
        "--expanders ['other']: no method of that name": ["--methods", "base=builtin:tiny", "--expanders", "other=x", *FAST, *out],
        "--categories ['Nope']: not in 'partiprompts'": ["--methods", "b=builtin:tiny", "--categories", "Nope", *FAST, *out],
        "--rewards is empty and no method is a run directory": ["--methods", "b=builtin:tiny", *out],
    }
    for expected, argv in cases.items():
        code, _, err = run(main, argv, capsys)
        assert code == 2 and expected in one_error_line(err), err


# ----- end to end -------------------------------------------------------------------------------
def test_end_to_end_tiny_pipeline_and_a_run_directory(tmp_path):
    fake_training_run(tmp_path / "train")  # rewards jpeg_compressibility + clip_score (builtin:tiny_clip), tiny preset
    out = tmp_path / "eval"
    argv = ["--methods", "base=builtin:tiny", f"parrot={tmp_path / 'train'}", "--prompts", "partiprompts", "--max_prompts", "3",
            "--images_per_prompt", "2", "--num_steps", "2", "--per_category", "--out", str(out)]  # fmt: skip
    record = main(argv)
    assert json.loads((out / "table.json").read_text()) == json.loads(json.dumps(record))
    assert record["rewards"] == ["jpeg_compressibility", "clip_score"] and list(record["methods"]) == ["base", "parrot"]
    assert (record["prompt_count"], record["images_per_prompt"], record["seeds"]) == (3, 2, [0, 1])
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(lines) == 6 and all(line["seeds"] == [0, 1] for line in lines)
    base_line = next(line for line in lines if line["method"] == "base")
    run_line = next(line for line in lines if line["method"] == "parrot")
    assert base_line["conditioned_prompt"] == "bond"
    assert run_line["conditioned_prompt"] != "bond" and run_line["conditioned_prompt"].endswith("bond")  # the run's identifiers
    lows, highs = [], []
    for name in record["rewards"]:
        everything = [v for line in lines for v in line["rewards"][name]]
        lows.append(min(everything))
        highs.append(max(everything))
    assert record["normalisation"]["low"] == pytest.approx(lows) and record["normalisation"]["high"] == pytest.approx(highs)
    for method, row in record["methods"].items():
        mine = [line for line in lines if line["method"] == method]
        for name in record["rewards"]:
            per_prompt = [np.mean(line["rewards"][name]) for line in mine]
            assert row["rewards"][name]["mean"] == pytest.approx(np.mean(per_prompt))
            assert row["rewards"][name]["se"] == pytest.approx(sem(per_prompt))
        normalised = [np.mean([(np.mean(line["rewards"][n]) - lows[k]) / (highs[k] - lows[k]) for k, n in enumerate(record["rewards"])])
                      for line in mine]  # fmt: skip
        assert row["average"]["mean"] == pytest.approx(np.mean(normalised))
    assert set(record["categories"]) == {"Abstract"}
    table = (out / "table.md").read_text()
    assert table.count("| base |") == 2 and "| parrot |" in table and "### Abstract (3 prompts)" in table


def test_shipped_evaluation_configs_parse():
    from parrot.evaluate import EvaluateConfig, parse_methods, select_prompts
    from parrot_base.config import parse_config

    repo = Path(__file__).resolve().parents[1]
    shapes = parse_config(EvaluateConfig, ["--config", str(repo / "configs" / "table1_shapes.yaml")])
    methods = parse_methods(shapes)
    assert [(m.name, bool(m.expander)) for m in methods] == [("base", False), ("sft", True)]
    assert methods[0].model.endswith("world/sd") and [r.prompt for r in select_prompts(shapes)] == [
        "a red triangle", "a green circle", "a blue square"]  # fmt: skip
    sd15 = parse_config(EvaluateConfig, ["--config", str(repo / "configs" / "table1_sd15.yaml")])
    assert sd15.rewards == ("laion_aesthetic", "pickscore", "clip_score", "sentiment") and sd15.prompts == "partiprompts"
    assert len(select_prompts(sd15)) == 1632 and sd15.per_category


def test_expansions_do_not_depend_on_batching():
    from parrot.evaluate import EvaluateConfig, expansions
    from parrot.models import build_expander
    from prompt_expander.config import ExpanderSamplingConfig

    prompts = ["a red circle", "a blue square"]
    expander = build_expander("builtin:tiny_gpt2", ExpanderSamplingConfig(max_new_tokens=6), 0, (), prompts, "cpu")
    sample = EvaluateConfig(methods=("x=y",), images_per_prompt=3, expansion_decoding="sample")
    together = expansions(sample, expander, prompts)
    assert len(together) == 6 and len(set(together[:3])) == 3  # one draw per image
    assert together == expansions(sample, expander, prompts[:1]) + expansions(sample, expander, prompts[1:])
    beam = expansions(EvaluateConfig(methods=("x=y",), images_per_prompt=3, num_beams=2), expander, prompts)
    assert beam[:3] == [beam[0]] * 3 and beam[3:] == [beam[3]] * 3  # one near-greedy ĉ per prompt, for every seed
    assert expansions(sample, None, prompts) == ["a red circle"] * 3 + ["a blue square"] * 3
