"""parrot.run_dir: the run record and its versions, curves, samples, evaluation.json and checkpoints, written and read back."""

import json
import logging

import pytest
import torch
from PIL import Image

from parrot import report
from parrot.run_dir import (
    LAYOUT_VERSION,
    CheckpointState,
    RunDir,
    SampleRecord,
    append_curve,
    lora_training_config,
    open_run,
    read_checkpoint,
    read_curves,
    read_evaluation_json,
    sample_records,
    start_run,
    write_checkpoint,
    write_evaluation,
    write_samples,
)
from parrot_base.cli import UsageError, run_cli


def test_the_run_record_is_written_at_start_and_an_unknown_version_is_refused(tmp_path, caplog):
    run = start_run(tmp_path / "run")
    assert json.loads(run.record.read_text()) == {"layout_version": LAYOUT_VERSION, "writer": "parrot.train"}
    assert open_run(tmp_path / "run") == run
    start_run(tmp_path / "run")  # resuming into the same directory is fine
    run.record.write_text(json.dumps({"layout_version": 99}))
    with pytest.raises(UsageError, match=r"layout version 99; this parrot reads version 1: use the parrot version that wrote it"):
        open_run(run.root)
    with pytest.raises(UsageError, match="layout version 99"):
        start_run(run.root)  # training into it would mix two layouts
    run.record.write_text("{not json")
    with pytest.raises(UsageError, match=r"run.json is unreadable \(JSONDecodeError"):
        open_run(run.root)
    with pytest.raises(FileNotFoundError, match="run directory '.*nowhere' does not exist; pass the --output_dir"):
        open_run(tmp_path / "nowhere")
    # written before run records: read as version 1, with a warning naming the missing record
    legacy = RunDir(tmp_path / "legacy")
    legacy.root.mkdir()
    append_curve(legacy, 1, {"reward/r1/mean": 0.5})
    with caplog.at_level(logging.WARNING, logger="parrot.run_dir"):
        assert read_curves(open_run(legacy.root))["reward/r1/mean"][1].tolist() == [0.5]
    assert "has no run.json (written by an older parrot.train): reading it as layout version 1" in caplog.text


def test_an_unknown_layout_version_is_one_error_line_of_the_report(tmp_path, capsys):
    run = start_run(tmp_path / "run")
    append_curve(run, 1, {"reward/r1/mean": 0.5})
    run.record.write_text(json.dumps({"layout_version": 2}))
    with pytest.raises(SystemExit) as exit_info:
        run_cli(report.main, [str(run.root)])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"error: {run.root} has run directory layout version 2; this parrot reads version 1: "
                     "use the parrot version that wrote it, or start a new --output_dir"]  # fmt: skip


def test_curves_keep_the_last_line_of_each_iteration(tmp_path):
    run = RunDir(tmp_path)
    for iteration, value in ((1, 0.5), (2, 0.7), (2, 0.9)):  # iteration 2 repeated after a resume
        metrics = {"reward/r1/mean": value, "pareto/selected_fraction": 0.25, "t2i/loss": 3.0, "time/iteration_s": 1.5}
        append_curve(run, iteration, metrics | {"identifier/r1/own_minus_others": -0.1})
    curves = read_curves(run)  # the update's own statistics (t2i/…) are not curves
    assert set(curves) == {"reward/r1/mean", "pareto/selected_fraction", "identifier/r1/own_minus_others", "time/iteration_s"}
    steps, values = curves["reward/r1/mean"]
    assert steps.tolist() == [1, 2] and values.tolist() == [0.5, 0.9]
    assert read_curves(RunDir(tmp_path / "nowhere")) == {}


def test_samples_and_evaluation_round_trip(tmp_path):
    run = start_run(tmp_path)
    record = SampleRecord(3, 2, ["r1", "r2"], ["c", "c"], ["ĉ", "ĉ"], ["<r1>, ĉ", "<r1>, ĉ"], [[1.0, 2.0], [0.5, 0.1]], [True, False])
    png = write_samples(run, Image.new("RGB", (8, 4), "red"), record)
    assert png == tmp_path / "samples" / "iteration-000003.png"
    (tmp_path / "samples" / "iteration-000001.png").write_bytes(png.read_bytes())  # a grid whose record is missing
    found = sample_records(run)
    assert [p.name for p, _ in found] == ["iteration-000001.png", "iteration-000003.png"]
    assert found[0][1] is None and found[1][1]["selected"] == [True, False] and found[1][1]["conditioning_prompts"][0] == "<r1>, ĉ"
    assert read_evaluation_json(run) is None
    write_evaluation(run, {"after": {"r1": 1.0}})
    assert read_evaluation_json(run) == {"after": {"r1": 1.0}}


def test_a_checkpoint_round_trips_tensors_optimiser_rng_and_state(tmp_path):
    run = start_run(tmp_path)
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1)
    layer(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    rng = torch.get_rng_state()
    state = CheckpointState(5, {"buffers": {"c": [1.0]}}, {"seed": 7})
    path = write_checkpoint(
        run, state, {"t2i": dict(layer.named_parameters())}, lambda d: d.mkdir(), {"t2i": optimizer, "expander": None}, 2
    )
    assert path == tmp_path / "checkpoints" / "checkpoint-000005" and (path / "lora").is_dir()
    assert not (path / "optimizer_expander.json").exists()
    fresh = torch.nn.Linear(3, 2)
    fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=0.1)
    loaded = read_checkpoint(path, {"t2i": dict(fresh.named_parameters())}, {"t2i": fresh_optimizer, "expander": None})
    assert (loaded.iteration, loaded.stat_tracker, loaded.config) == (5, state.stat_tracker, {"seed": 7})
    assert torch.equal(loaded.rng, rng)
    assert torch.equal(fresh.weight, layer.weight) and torch.equal(fresh.bias, layer.bias)
    assert torch.equal(fresh_optimizer.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])
    other = torch.nn.Linear(3, 2)
    with pytest.raises(ValueError, match="lacks 1 t2i parameter\\(s\\), e.g. 'extra': other model?"):
        read_checkpoint(path, {"t2i": dict(other.named_parameters()) | {"extra": torch.nn.Parameter(torch.zeros(1))}}, {})


def test_the_training_config_of_a_lora_comes_from_its_run(tmp_path):
    run = start_run(tmp_path / "run")
    for iteration, seed in ((1, 11), (2, 22)):
        write_checkpoint(run, CheckpointState(iteration, {}, {"seed": seed}), {}, lambda d: d.mkdir(), {}, 5)
    (run.final_lora).mkdir(parents=True)
    assert lora_training_config(run.final_lora) == {"seed": 22}  # the newest valid checkpoint's
    assert lora_training_config(run.checkpoints / "checkpoint-000001" / "lora") == {"seed": 11}
    assert lora_training_config(tmp_path / "elsewhere" / "lora") is None
    run.record.write_text(json.dumps({"layout_version": 0}))
    with pytest.raises(UsageError, match="layout version 0"):
        lora_training_config(run.final_lora)
