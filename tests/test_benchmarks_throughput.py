"""The throughput benchmark's pieces: chunked (pipelined) sampling + scoring equals the plain path,
gradient checkpointing leaves the log-prob gradients unchanged, the figures' arithmetic, and the
TRL peer driver's argument / JSON handling (without building the peer's environment)."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_parrot_train import quick_args

from benchmarks.peers import trl_ddpo
from benchmarks.throughput import overlap_share, ratio_summary, spread
from parrot.credit import batch_advantages, gather_scores
from parrot.models import build_policy
from parrot.rollout import chunk_bounds, draw_prompts, expand, expanded_texts, local_prompts, sample_and_score
from parrot.t2i_update import old_log_probs, recomputed_log_probs, trained_steps, update_t2i
from parrot.train import ParrotTrainer
from parrot.train_config import load_train_config
from rewards import RewardScores
from t2i import Guidance

REPO = Path(__file__).resolve().parents[1]


def trainer_args(output_dir, *extra):
    """The trainer tests' quick tiny config with 3 DDIM steps."""
    return quick_args(output_dir, "--sampling.num_steps", "3", *extra)


def test_chunk_bounds_cover_every_image_once():
    assert chunk_bounds(4, 3) == [(0, 1), (1, 3), (3, 4)]
    assert chunk_bounds(5, 1) == [(0, 5)]
    assert chunk_bounds(2, 8) == [(0, 1), (1, 2)]  # never an empty part


@pytest.mark.parametrize("joint", [False, True])
def test_chunked_sampling_and_scoring_equal_the_unchunked_path(tmp_path, joint):
    extra = ["--mode", "joint", "--expander.model", "builtin:tiny_gpt2", "--expander.sampling.max_new_tokens", "4"] if joint else []
    parts = ParrotTrainer(load_train_config(trainer_args(tmp_path, *extra))).parts
    prompts = local_prompts(parts, draw_prompts(parts, 3))
    expanded = expanded_texts(prompts, expand(parts, prompts, 3))
    plain, plain_scores = sample_and_score(parts, prompts, expanded, 3, 0)
    parts.config.sampling.chunks = 3  # parts of 1, 2 and 1 images
    chunked, chunked_scores = sample_and_score(parts, prompts, expanded, 3, 0)
    assert chunked.trajectory.batch_size == plain.trajectory.batch_size == 4
    # the same noise per image (x_T exactly); later values equal up to float32 rounding of kernels
    # whose reduction order depends on the batch size (~1e-5 after a few steps)
    assert torch.equal(chunked.trajectory.latents[:, 0], plain.trajectory.latents[:, 0])
    for name in ("latents", "log_probs", "images"):
        torch.testing.assert_close(getattr(chunked.trajectory, name), getattr(plain.trajectory, name), rtol=0, atol=1e-4)
    for key, value in plain.trajectory.conditioning.embeds.items():
        torch.testing.assert_close(chunked.trajectory.conditioning.embeds[key], value, rtol=0, atol=1e-5)
    assert chunked.trajectory.prompts == plain.trajectory.prompts
    assert chunked.trajectory.original_prompts == plain.trajectory.original_prompts
    assert chunked.original_prompts == plain.original_prompts and chunked.expanded_prompts == plain.expanded_prompts
    assert torch.equal(chunked.own_reward, plain.own_reward) and chunked.global_offset == plain.global_offset == 0
    torch.testing.assert_close(chunked_scores.scores, plain_scores.scores, rtol=1e-4, atol=1e-4)
    assert torch.equal(chunked_scores.valid, plain_scores.valid)
    # a different seed draws different images (the comparison above could fail)
    other, _ = sample_and_score(parts, prompts, expanded, 4, 0)
    assert not torch.allclose(other.trajectory.latents, plain.trajectory.latents)


def test_concatenated_scores_fill_nonfinite_with_the_whole_batch_worst():
    first = RewardScores(torch.tensor([[1.0], [1.0]]), ["r"], torch.tensor([[True], [False]]))  # row 1 filled by its part
    second = RewardScores(torch.tensor([[-2.0]]), ["r"], torch.tensor([[True]]))
    joined = RewardScores.concatenate([first, second])
    assert joined.scores.flatten().tolist() == [1.0, -2.0, -2.0]  # the NaN row takes the batch's worst, -2
    assert joined.valid.flatten().tolist() == [True, False, True]
    with pytest.raises(ValueError, match="different rewards"):
        RewardScores.concatenate([first, RewardScores(torch.zeros(1, 1), ["s"], torch.ones(1, 1, dtype=torch.bool))])


def lora_gradients(gradient_checkpointing: bool) -> tuple[dict[str, torch.Tensor], int]:
    torch.manual_seed(0)
    policy = build_policy("builtin:tiny", "float32", "cpu", gradient_checkpointing=gradient_checkpointing)
    params = policy.add_lora()
    with torch.no_grad():  # B = 0 at init would leave A's gradient at 0
        for p in params:
            p.normal_(0, 0.05)
    policy.unet.eval()
    trajectory = policy.sample(["a red circle", "a blue square"], num_inference_steps=3, guidance=Guidance.cfg(3.0),
                               generator=torch.Generator().manual_seed(0))  # fmt: skip
    calls = []
    layer = policy.unet.up_blocks[0].resnets[0].conv1  # after LoRA layers, so gradients flow through it
    log_probs = policy.log_probs(trajectory, torch.tensor([[0, 2], [1, 2]]))
    handle = layer.register_forward_hook(lambda *_: calls.append(1))
    log_probs.sum().backward()  # checkpointing recomputes the layer's forward here
    handle.remove()
    named = {n: p.grad.clone() for n, p in policy.unet.named_parameters() if p.requires_grad}
    return named, len(calls)


def test_gradient_checkpointing_gives_the_same_log_prob_gradients():
    plain, plain_calls = lora_gradients(False)
    checkpointed, checkpointed_calls = lora_gradients(True)
    assert plain_calls == 0 and checkpointed_calls == 1  # the layer really was recomputed in backward
    assert plain.keys() == checkpointed.keys() and any(g.abs().sum() > 0 for g in plain.values())
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=0, atol=1e-5, msg=name)


def test_overlap_share_and_ratio_arithmetic():
    # sampling 10 s, scoring 4 s; pipelined 11 s: 3 of the 4 scoring seconds were hidden
    assert overlap_share(10.0, 4.0, 11.0) == pytest.approx(0.75)
    assert overlap_share(10.0, 4.0, 10.0) == pytest.approx(1.0)
    assert overlap_share(10.0, 4.0, 15.0) == pytest.approx(-0.25)  # pipelining made it slower
    with pytest.raises(ValueError, match="t_score"):
        overlap_share(10.0, 0.0, 10.0)
    assert spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    summary = ratio_summary([2.0, 4.0, 3.0], [1.0, 1.0, 2.0])  # ours/peer per repeat: 2, 4, 1.5
    assert summary["ratio_of_medians"] == pytest.approx(3.0 / 1.0)
    assert summary["per_repeat"] == pytest.approx([2.0, 4.0, 1.5])


def test_peer_driver_arguments_and_json(tmp_path):
    (tmp_path / "model_index.json").write_text("{}")
    args = trl_ddpo.parse_args(["--pipeline", str(tmp_path), "--batch", "4", "--steps", "5", "--epochs", "3",
                                "--timestep_fraction", "0.4", "--lora_rank", "2"])  # fmt: skip
    assert (args.batch, args.steps, args.epochs, args.timestep_fraction, args.lora_rank) == (4, 5, 3, 0.4, 2)
    payload = trl_ddpo.result_json(args, epoch_seconds=[2.0, 1.0, 4.0], versions={"trl": "0.23.1"})
    decoded = json.loads(payload)
    assert decoded["samples_per_second"] == pytest.approx(4 / 2.0)  # batch / median epoch time
    assert decoded["epoch_seconds"] == [2.0, 1.0, 4.0] and decoded["versions"] == {"trl": "0.23.1"}
    with pytest.raises(SystemExit):
        trl_ddpo.parse_args(["--pipeline", str(tmp_path / "missing")])
    # the driver refuses a missing pipeline before importing TRL (so it runs in any environment)
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "peers" / "trl_ddpo.py"), "--pipeline", str(tmp_path / "x")],
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode != 0 and "no diffusers pipeline" in run.stderr


def test_old_log_probs_reuse_the_sampled_ones_and_save_a_unet_pass(tmp_path):
    """Identifiers off: DDPO-IS's θ_old log-probs are the recorded ones (= a recomputation to float
    rounding), so an update of E inner epochs makes E UNet calls, not E + 1."""
    flags = ("--identifiers.enabled", "false", "--rewards.names", "jpeg_compressibility", "--selection.mode",
             "single:jpeg_compressibility", "--t2i.inner_epochs", "2", "--t2i.timestep_fraction", "0.67")  # fmt: skip
    parts = ParrotTrainer(load_train_config(trainer_args(tmp_path, *flags))).parts
    prompts = local_prompts(parts, draw_prompts(parts, 0))
    rollout, scores = sample_and_score(parts, prompts, prompts, 0, 0)
    steps = trained_steps(parts, rollout, 0)
    need = torch.tensor([True, False, True, True])
    reused = old_log_probs(parts, rollout.trajectory, steps, need)
    with torch.no_grad():
        recomputed = recomputed_log_probs(parts, rollout.trajectory, steps, need)
    assert steps.shape == (4, 2) and torch.all(reused[1] == 0)
    torch.testing.assert_close(reused, recomputed, rtol=0, atol=1e-5)
    advantages = batch_advantages(parts, gather_scores(parts, scores), prompts)
    calls = []
    handle = parts.policy.unet.register_forward_pre_hook(lambda *_: calls.append(1))
    update_t2i(parts, rollout, advantages, 0)
    handle.remove()
    assert len(calls) == 2


def test_load_watch_marks_a_busy_machine_contended(monkeypatch, capsys):
    from benchmarks import machine_load

    assert machine_load.load_threshold(2) == 1.5
    loads = iter([(0.9, 1.0, 1.0), (1.4, 1.0, 1.0), (0.5, 1.0, 1.0), (1.6, 1.0, 1.0), (0.5, 1, 1), (2.4, 1, 1), (1.6, 1, 1), (1, 1, 1)])
    monkeypatch.setattr(machine_load.os, "getloadavg", lambda: next(loads))
    quiet = machine_load.LoadWatch(threshold=1.5, sample_s=0).finish()  # 0.9 → 1.4: under 1.5 at both ends
    assert quiet["contended"] is False and quiet["load_average_at_end"][0] == 1.4
    assert capsys.readouterr().err == ""
    busy = machine_load.LoadWatch(threshold=1.5, sample_s=0).finish()  # 0.5 → 1.6: over at the end
    assert busy["contended"] is True
    assert "1-minute load 1.60 at end (1.60 less own threads), above 1.50" in capsys.readouterr().err
    # the benchmark's own 2 threads are taken off the end load: 2.4 − 2 = 0.4 is a quiet end
    own = machine_load.LoadWatch(threshold=1.5, sample_s=0, own_threads=2).finish()
    assert own["contended"] is False and own["own_threads"] == 2
    started_busy = machine_load.LoadWatch(threshold=1.5, sample_s=0, own_threads=2).finish()  # 1.6 at start: busy
    assert started_busy["contended"] is True and "1-minute load 1.60 at start" in capsys.readouterr().err


def test_load_watch_samples_other_processes_runnable_threads(monkeypatch, capsys):
    from benchmarks import machine_load

    monkeypatch.setattr(machine_load.os, "getloadavg", lambda: (0.2, 0.2, 0.2))
    counts = iter([(0, 2), (1, 2), (2, 2)])
    monkeypatch.setattr(machine_load, "runnable_threads", lambda: next(counts, (2, 2)))
    watch = machine_load.LoadWatch(threshold=1.5, sample_s=0.01)
    while len(watch.others) < 3:
        time.sleep(0.01)
    record = watch.finish()
    others = watch.others
    assert others[:3] == [0, 1, 2] and record["others_runnable_mean"] == pytest.approx(sum(others) / len(others))
    assert record["contended"] is True and record["others_runnable_samples"] == len(others)
    assert "other processes had" in capsys.readouterr().err


def test_runnable_threads_count_other_processes_apart_from_the_own_tree(tmp_path):
    from benchmarks.machine_load import runnable_threads

    def process(pid: int, parent: int, states: str, name: str = "python") -> None:
        for tid, state in enumerate(states):
            task = tmp_path / str(pid) / "task" / str(pid + tid)
            task.mkdir(parents=True)
            (task / "stat").write_text(f"{pid + tid} ({name}) {state} {parent} 1 1 0 -1\n")
        (tmp_path / str(pid) / "stat").write_text(f"{pid} ({name}) {states[0]} {parent} 1 1 0 -1\n")

    process(1, 0, "S")
    process(100, 1, "RS")  # ours, one thread running
    process(200, 100, "RR", name="peer (trl) x")  # a child of ours (a peer benchmark): ours; a ")" in the name is read right
    process(300, 1, "RRS")  # another job: 2 runnable threads
    process(400, 300, "R")  # its child: another runnable thread
    assert runnable_threads(tmp_path, own_pid=100) == (3, 3)
    assert runnable_threads(tmp_path / "empty", own_pid=100) is None


def test_profile_timers_split_the_stages_and_leave_nothing_patched(tmp_path):
    from benchmarks.throughput_profile import _timed_calls
    from parrot import rollout as rollout_stage

    trainer = ParrotTrainer(load_train_config(trainer_args(tmp_path, "--mode", "t2i", "--expander.model", "")))
    score_function = rollout_stage.score
    totals: dict[str, float] = {}
    with _timed_calls(trainer, totals):
        metrics = trainer.run_iteration(0).metrics
    sampling = totals["unet forward (sampling)"] + totals["DDIM step + log-prob (sampling)"] + totals["VAE decode"] + totals["reward"]
    update = totals["unet forward (update, grad)"] + totals["backward"] + totals["optimiser step"]
    assert 0 < sampling <= metrics["time/sample_and_score_s"]
    assert 0 < update <= metrics["time/update_t2i_s"]
    assert totals["prompt encoding"] > 0
    # everything wrapped is unwrapped: the policy's own methods and the module function are back
    assert "unet_forward" not in vars(trainer.parts.policy) and "step" not in vars(trainer.parts.t2i_optimizer)
    assert rollout_stage.score is score_function and torch.Tensor.backward.__name__ == "backward"
    assert torch.Tensor.backward.__module__ == "torch._tensor"


def test_load_watch_waits_for_the_load_to_settle_first(monkeypatch):
    from benchmarks import machine_load

    loads = iter([(2.0, 1, 1), (1.8, 1, 1), (1.2, 1, 1), (1.2, 1, 1), (1.3, 1, 1)])
    monkeypatch.setattr(machine_load.os, "getloadavg", lambda: next(loads))
    monkeypatch.setattr(machine_load.time, "sleep", lambda s: None)
    watch = machine_load.LoadWatch(threshold=1.5, settle_s=60.0, sample_s=0)
    assert watch.at_start[0] == 1.2  # waited through 2.0 and 1.8
    record = watch.finish()
    assert record["contended"] is False and record["load_average_at_end"][0] == 1.3 and record["settled_s"] >= 0
