"""Checkpoints: manifest verification, falling back past a damaged checkpoint, a failed (disk-full) write."""

import errno
import json
import logging
import shutil

import pytest
import torch
from safetensors.torch import load_file
from test_parrot_train import quick_args

from parrot import checkpoint as ckpt
from parrot.checkpoint import (
    CheckpointWriteError,
    NoValidCheckpointError,
    atomic_checkpoint_dir,
    checkpoint_problem,
    latest_valid_checkpoint,
    save_tensors,
    write_json,
)
from parrot.train import ParrotTrainer, main
from parrot.train_config import load_train_config
from parrot_base.cli import run_cli


def write_checkpoint(root, iteration):
    with atomic_checkpoint_dir(root, iteration) as tmp:
        save_tensors({"w": torch.full((64,), float(iteration))}, tmp / "t2i_trainable.safetensors")
        (tmp / "lora").mkdir()
        save_tensors({"a": torch.ones(4)}, tmp / "lora" / "weights.safetensors")
        write_json({"iteration": iteration}, tmp / "state.json")
    return root / f"checkpoint-{iteration:06d}"


def truncate(path):
    path.write_bytes(path.read_bytes()[:-7])


def garble(path):
    path.write_text(path.read_text().replace("{", "[", 1))  # same size, other bytes


def test_manifest_lists_every_file_with_size_and_sha256(tmp_path):
    path = write_checkpoint(tmp_path, 1)
    manifest = json.loads((path / "manifest.json").read_text())
    assert sorted(manifest["files"]) == ["lora/weights.safetensors", "state.json", "t2i_trainable.safetensors"]
    assert manifest["files"]["state.json"]["size"] == (path / "state.json").stat().st_size
    assert len(manifest["files"]["state.json"]["sha256"]) == 64
    assert checkpoint_problem(path) is None


def test_damage_is_named_and_the_newest_valid_checkpoint_is_picked(tmp_path, caplog):
    first, second, third = (write_checkpoint(tmp_path, i) for i in (1, 2, 3))
    truncate(third / "t2i_trainable.safetensors")
    garble(second / "state.json")
    with caplog.at_level(logging.WARNING, logger="parrot.checkpoint"):
        assert latest_valid_checkpoint(tmp_path) == first
    size = (third / "t2i_trainable.safetensors").stat().st_size
    assert [r.getMessage() for r in caplog.records] == [
        f"checkpoint {third} is damaged: t2i_trainable.safetensors has {size} bytes, the manifest says {size + 7}; "
        "trying the one before it",
        f"checkpoint {second} is damaged: state.json does not match its sha256 in the manifest; trying the one before it",
    ]
    (first / "lora" / "weights.safetensors").unlink()
    with pytest.raises(NoValidCheckpointError, match=r"every checkpoint under .* is damaged \(checkpoint-000003: "
                       r".*; checkpoint-000001: lora/weights.safetensors is missing\); move them away"):  # fmt: skip
        latest_valid_checkpoint(tmp_path)
    assert latest_valid_checkpoint(tmp_path / "none") is None


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    previous = write_checkpoint(tmp_path, 1)
    before = {p.name: p.read_bytes() for p in previous.rglob("*") if p.is_file()}
    real_save = ckpt.save_file

    def disk_full(tensors, filename):  # half a file, then the disk is full
        real_save(tensors, filename)
        with open(filename, "r+b") as handle:
            handle.truncate(10)
        raise OSError(errno.ENOSPC, "No space left on device", filename)

    monkeypatch.setattr(ckpt, "save_file", disk_full)
    with pytest.raises(CheckpointWriteError) as failed:
        write_checkpoint(tmp_path, 2)
    assert str(failed.value) == (
        f"could not write checkpoint {tmp_path / 'checkpoint-000002'} (No space left on device); the earlier "
        "checkpoints are intact: free disk space and rerun with --resume true"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-000001"]  # temp dir removed
    assert {p.name: p.read_bytes() for p in previous.rglob("*") if p.is_file()} == before
    # the same when the same iteration is written again (a re-run after a resume)
    with pytest.raises(CheckpointWriteError):
        write_checkpoint(tmp_path, 1)
    assert {p.name: p.read_bytes() for p in previous.rglob("*") if p.is_file()} == before
    assert latest_valid_checkpoint(tmp_path) == previous


def test_safetensors_io_errors_become_os_errors(tmp_path):
    with pytest.raises(OSError) as failed:
        save_tensors({"w": torch.ones(2)}, tmp_path / "no-such-dir" / "w.safetensors")
    assert failed.value.errno == errno.ENOENT


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """3 iterations with a checkpoint after each; the LoRA of the last."""
    out = tmp_path_factory.mktemp("straight")
    args = quick_args(out, "--iterations", "3", "--checkpoint_every", "1", "--keep_checkpoints", "3")
    ParrotTrainer(load_train_config(args)).train()
    return out, args, load_file(str(out / "checkpoints" / "checkpoint-000003" / "t2i_trainable.safetensors"))


@pytest.mark.parametrize("damage", ["truncated_lora", "garbled_state"])
def test_resume_skips_a_damaged_newest_checkpoint_and_equals_the_uninterrupted_run(uninterrupted, tmp_path, damage, caplog):
    straight, args, expected = uninterrupted
    out = tmp_path / "run"
    shutil.copytree(straight / "checkpoints", out / "checkpoints")
    newest = out / "checkpoints" / "checkpoint-000003"
    if damage == "truncated_lora":
        truncate(newest / "t2i_trainable.safetensors")
    else:
        garble(newest / "state.json")
    resumed_args = [str(out) if a == str(straight) else a for a in args] + ["--resume"]
    with caplog.at_level(logging.INFO):
        trainer = ParrotTrainer(load_train_config(resumed_args))
        trainer.train()
    bad = "t2i_trainable.safetensors" if damage == "truncated_lora" else "state.json"
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith(f"checkpoint {newest} is damaged: {bad} ") for m in messages), messages
    assert f"resumed from {out / 'checkpoints' / 'checkpoint-000002'} at iteration 2" in messages
    assert checkpoint_problem(newest) is None  # iteration 3 was run again and its checkpoint rewritten
    got = load_file(str(newest / "t2i_trainable.safetensors"))
    assert got.keys() == expected.keys()
    assert max((got[k] - expected[k]).abs().max().item() for k in got) < 1e-6


def test_disk_full_stops_the_command_with_one_line(tmp_path, monkeypatch, capsys, restore_output_settings):
    out = tmp_path / "run"
    real_save = ckpt.save_file

    def full_at_second(tensors, filename):
        if ".tmp-checkpoint-000002" in str(filename):
            raise OSError(errno.ENOSPC, "No space left on device", filename)
        real_save(tensors, filename)

    monkeypatch.setattr(ckpt, "save_file", full_at_second)
    with pytest.raises(SystemExit) as exited:
        run_cli(main, quick_args(out, "--iterations", "2", "--checkpoint_every", "1"))
    assert exited.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error")]
    assert lines == [
        f"error: could not write checkpoint {out / 'checkpoints' / 'checkpoint-000002'} (No space left on device); "
        "the earlier checkpoints are intact: free disk space and rerun with --resume true"
    ]
    assert "Traceback" not in err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-000001"]
    assert checkpoint_problem(out / "checkpoints" / "checkpoint-000001") is None
