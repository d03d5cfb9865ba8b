"""parrot.train end to end on the tiny world: runs, checkpoints, exact resume after SIGKILL, 2 processes, config errors."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from parrot.rollout import expanded_texts
from parrot.seeding import EVAL, derived_seed
from parrot.train import ParrotTrainer
from parrot.train_config import derived_quantities, load_train_config
from parrot_base.config import ConfigError
from rewards.base import Reward
from t2i import Guidance

REPO = Path(__file__).resolve().parents[1]


def quick_args(output_dir, *extra):
    """The tiny preset cut down to seconds: 2 rewards, 1 prompt × 4 images (2 per identifier), 4 DDIM steps, no expander."""
    return [
        "--preset", "tiny", "--output_dir", str(output_dir), "--mode", "t2i", "--expander.model", "",
        "--rewards.names", "jpeg_compressibility", "clip_score",
        "--sampling.prompts_per_process", "1", "--sampling.images_per_prompt", "4", "--sampling.num_steps", "4",
        "--t2i.timestep_fraction", "0.5", "--logging.log_with", "none", "--evaluation.enabled", "false",
        *extra,
    ]  # fmt: skip


def lora_of(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoint / "t2i_trainable.safetensors"))


def test_joint_two_iterations_checkpoint_table_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    args = quick_args(out, "--mode", "joint", "--expander.model", "builtin:tiny_gpt2", "--iterations", "2",
                      "--checkpoint_every", "1", "--keep_checkpoints", "1", "--evaluation.enabled", "true",
                      "--evaluation.seeds", "0", "--expander.sampling.max_new_tokens", "6")  # fmt: skip
    trainer = ParrotTrainer(load_train_config(args))
    initial = {k: v.detach().clone() for k, v in trainer.parts.trainable_state()["t2i"].items()}
    results = trainer.train()
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert checkpoints == ["checkpoint-000002"]  # keep_checkpoints=1 pruned the first
    ckpt = out / "checkpoints" / "checkpoint-000002"
    for name in ("t2i_trainable.safetensors", "expander_trainable.safetensors", "optimizer_t2i.json",
                 "optimizer_expander.safetensors", "lora/pytorch_lora_weights.safetensors", "state.json"):  # fmt: skip
        assert (ckpt / name).is_file(), name
    trained = lora_of(ckpt)
    assert any(not torch.equal(trained[k], initial[k]) for k in initial)  # the LoRA moved
    assert set(results["plain_base"]) == set(results["before"]) == set(results["after"]) == {"jpeg_compressibility", "clip_score"}
    # the held-out table of the three settings side by side, and the training-reward curves of both iterations
    assert "| reward | plain base | untrained | trained | Δ vs untrained | Δ vs plain base |" in capsys.readouterr().out
    curves = [json.loads(line) for line in (out / "curves.jsonl").read_text().splitlines()]
    assert [c["iteration"] for c in curves] == [1, 2] and {"reward/clip_score/mean", "pareto/selected_fraction"} <= curves[0].keys()
    assert all(c["time/iteration_s"] > 0 for c in curves)  # each iteration's wall seconds (benchmarks/sharing_cores.py)
    assert all(0 < c["time/sample_and_score_s"] + c["time/update_t2i_s"] + c["time/update_expander_s"] < c["time/iteration_s"]
               for c in curves)  # the stages' seconds (benchmarks/throughput.py)  # fmt: skip
    assert json.loads((out / "run.json").read_text()) == {"layout_version": 1, "writer": "parrot.train"}
    assert (out / "final" / "expander" / "config.json").is_file()
    # per-image held-out scores whose means are the table; a sample grid + record per checkpoint
    saved = json.loads((out / "evaluation.json").read_text())
    after = saved["images"]["after"]
    assert len(after["scores"]) == len(after["prompts"]) == len(after["seeds"]) == 4  # 4 held-out prompts × 1 seed
    assert torch.tensor(after["scores"]).mean(0).tolist() == pytest.approx([results["after"][k] for k in after["reward_names"]])
    plain = saved["images"]["plain_base"]
    assert plain["expanded_prompts"] == plain["prompts"] and plain["seeds"] == after["seeds"]  # ĉ = c: no expander
    assert {"deltas", "table1_average", "hypervolume", "normalisation"} <= saved.keys()
    for iteration in (1, 2):
        record = json.loads((out / "samples" / f"iteration-{iteration:06d}.json").read_text())
        assert len(record["rewards"]) == len(record["original_prompts"]) == len(record["selected"]) == 4
        with Image.open(out / "samples" / f"iteration-{iteration:06d}.png") as grid:
            assert grid.size == (2 * 16, 2 * 16)  # a row per group (1 prompt × 2 identifiers), 2 images of 16 px
    # a half-written checkpoint is never picked up
    (out / "checkpoints" / ".tmp-checkpoint-000009-1").mkdir()
    resumed = ParrotTrainer(load_train_config(args[:-6] + ["--iterations", "3", "--resume", "--evaluation.enabled", "false"]))
    resumed.load_checkpoint(ckpt)
    assert resumed.iteration == 2
    assert all(torch.equal(p, trained[k]) for k, p in resumed.parts.trainable_state()["t2i"].items())
    resumed.train()
    assert (out / "checkpoints" / "checkpoint-000003").is_dir()
    assert not (out / "checkpoints" / ".tmp-checkpoint-000009-1").exists()


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    common = ["--iterations", "4", "--checkpoint_every", "2", "--t2i.inner_epochs", "2", "--t2i.minibatches", "2",
              "--selection.gradient_normalisation", "per_prompt", "--selection.stat_min_count", "2",
              "--t2i.kl_weight", "0.1"]  # fmt: skip
    killed = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    log = (tmp_path / "killed.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "parrot.train", *quick_args(killed, *common)],
                            env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    first = killed / "checkpoints" / "checkpoint-000002"
    deadline = time.monotonic() + 240
    while not first.is_dir():  # checkpoints appear atomically: once it exists, iteration 3 is under way
        assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint within 240 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    log.close()
    assert sorted(p.name for p in (killed / "checkpoints").iterdir()) == ["checkpoint-000002"]
    torch.set_num_threads(1)
    ParrotTrainer(load_train_config(quick_args(killed, *common, "--resume"))).train()
    straight = tmp_path / "straight"
    ParrotTrainer(load_train_config(quick_args(straight, *common))).train()
    a = lora_of(killed / "checkpoints" / "checkpoint-000004")
    b = lora_of(straight / "checkpoints" / "checkpoint-000004")
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6


def test_two_processes_select_the_global_p_and_stay_identical(tmp_path):
    # Fresh processes from torchrun, not accelerate's fork-based debug_launcher: a fork of this
    # pytest process, whose OpenMP pool earlier tests have started, can deadlock in its first op.
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    worker = REPO / "tests" / "two_process_worker.py"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(worker), str(tmp_path / "multi")],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0 = load_file(str(tmp_path / "multi" / "rank0.safetensors"))
    rank1 = load_file(str(tmp_path / "multi" / "rank1.safetensors"))
    single = ParrotTrainer(load_train_config(quick_args(tmp_path / "single", "--iterations", "1",
                                                       "--sampling.prompts_per_process", "2")))  # fmt: skip
    result = single.run_iteration(0)
    assert torch.equal(rank0["selected"].bool(), result.advantages.selected)
    assert torch.equal(rank0["selected"], rank1["selected"])
    for name, param in single.parts.trainable_state()["t2i"].items():
        assert torch.equal(rank0[name], rank1[name]), name  # synchronised gradients: identical ranks
        # and equal to one process on the same data, up to float rounding: a batch of 4 vs 8 sums in another order,
        # and Adam's normalised first steps turn the rounding of a near-zero gradient into a few 1e-6 — on some CPUs
        # more for an odd element (seen: one of 256 off by 3.3e-5); a sign flip could cost at most ±lr a step
        difference = (rank0[name] - param.detach()).abs()
        assert (difference > 1e-5).float().mean() <= 0.01, name  # all but a few elements agree to 1e-5
        assert difference.max() <= 2 * 2 * single.config.t2i.lr, name  # and none by more than 2 steps of ±lr, 2 epochs


class NanOnFirstImage(Reward):
    needs_prompts = False

    def __init__(self, inner: Reward):
        super().__init__(inner.config)
        self.inner, self.name = inner, inner.name

    def score_batch(self, images, prompts, metadata):
        scores = self.inner.score_batch(images, prompts, metadata).clone()
        scores[0] = float("nan")
        return scores


def test_nan_reward_never_reaches_the_gradient(tmp_path):
    trainer = ParrotTrainer(
        load_train_config(quick_args(tmp_path, "--iterations", "1", "--t2i.estimator", "sf", "--t2i.inner_epochs", "1"))
    )
    trainer.parts.evaluator.rewards[0] = NanOnFirstImage(trainer.parts.evaluator.rewards[0])
    result = trainer.run_iteration(0)
    assert result.metrics["reward/nonfinite"] == 1
    assert result.advantages.values[0, 0] == 0
    assert all(torch.isfinite(p).all() and torch.isfinite(p.grad).all() for p in trainer.parts.t2i_params)


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="sampling: eta=0.0 must be > 0"):
        load_train_config(quick_args(tmp_path, "--sampling.eta", "0"))
    with pytest.raises(ConfigError, match="t2i: estimator='ppo'"):
        load_train_config(quick_args(tmp_path, "--t2i.estimator", "ppo"))
    with pytest.raises(ConfigError, match="images_per_prompt=3 must be a multiple of the 2 expansions × identifiers"):
        load_train_config(quick_args(tmp_path, "--sampling.images_per_prompt", "3"))
    with pytest.raises(ConfigError, match="mode='joint' trains the expander: set expander.model"):
        load_train_config(quick_args(tmp_path, "--mode", "joint"))
    with pytest.raises(ConfigError, match="preset: unknown preset 'nope'"):
        load_train_config(["--preset", "nope"])
    with pytest.raises(ConfigError, match=r"evaluation: expander_temperature=-1.0 must be > 0 \(or 0: the training"):
        load_train_config(quick_args(tmp_path, "--evaluation.expander_temperature", "-1"))
    with pytest.raises(ConfigError, match="selection: mode='best'"):
        load_train_config(quick_args(tmp_path, "--selection.mode", "best"))
    config = load_train_config(quick_args(tmp_path, "--t2i.minibatches", "3"))
    with pytest.raises(ConfigError, match="t2i.minibatches=3 must divide the 4 images per process"):
        derived_quantities(config, 1)
    derived = derived_quantities(load_train_config(quick_args(tmp_path, "--t2i.minibatches", "2")), 2)
    assert (derived.images_per_iteration, derived.images_per_minibatch, derived.trained_steps_per_image) == (8, 2, 2)


def test_sd15_preset_file_parses():
    from parrot.prompts import read_prompt_list

    config = load_train_config(["--config", str(REPO / "configs" / "sd15.yaml")])
    assert config.preset == "none" and config.model.pipeline == "runwayml/stable-diffusion-v1-5"
    assert config.rewards.names == ("laion_aesthetic", "pickscore", "clip_score", "sentiment")
    # the shipped prompt sets: the config needs no prompt file of its own
    assert (config.prompts.train_file, config.prompts.evaluation_file) == ("diffusiondb", "partiprompts")
    assert len(read_prompt_list((), config.prompts.train_file, "prompts.train")) == 9798
    # the run's own held-out table reads the first max_evaluation PartiPrompts
    held_out = read_prompt_list((), config.prompts.evaluation_file, "prompts.evaluation", limit=config.prompts.max_evaluation)
    assert len(held_out) == 64 and held_out == read_prompt_list((), "partiprompts", "prompts.evaluation")[:64]
    # the aesthetic head is a hub file (no hand-downloaded file): OWNER/REPO/FILE
    assert config.rewards.settings["laion_aesthetic"]["head_path"] == "trl-lib/ddpo-aesthetic-predictor/aesthetic-model.pth"


def test_preset_then_yaml_then_cli_precedence(tmp_path):
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("iterations: 7\nsampling:\n  num_steps: 6\nt2i:\n  lr: 0.5\n")
    yaml_file.write_text("preset: tiny\n" + yaml_file.read_text())
    config = load_train_config(["--config", str(yaml_file), "--t2i.lr", "0.25"])
    assert config.preset == "tiny" and config.model.pipeline == "builtin:tiny"  # from the YAML's preset
    assert config.iterations == 7 and config.sampling.num_steps == 6  # YAML over the preset
    assert config.sampling.prompts_per_process == 2  # preset values the YAML does not touch survive
    assert config.t2i.lr == 0.25  # CLI over YAML
    assert config.rewards.settings["clip_score"] == {"model": "builtin:tiny_clip"}


def test_held_out_expansions_use_the_evaluation_temperature(tmp_path):
    args = quick_args(tmp_path, "--mode", "joint", "--expander.model", "builtin:tiny_gpt2", "--evaluation.seeds", "3",
                      "--expander.sampling.max_new_tokens", "6", "--evaluation.expander_temperature", "0.25",
                      "--evaluation.expansion_decoding", "sample")  # fmt: skip
    trainer = ParrotTrainer(load_train_config(args))
    recorded = trainer.evaluation_samples("trained").expanded_prompts
    parts = trainer.parts
    expected = parts.expander.sample(parts.eval_prompts, temperature=0.25, generator_seed=derived_seed(3, EVAL))
    assert recorded == expanded_texts(parts.eval_prompts, expected)
    at_training_temperature = parts.expander.sample(parts.eval_prompts, generator_seed=derived_seed(3, EVAL))
    assert recorded != expanded_texts(parts.eval_prompts, at_training_temperature)


def test_held_out_beam_expansions_and_the_plain_base_setting(tmp_path):
    args = quick_args(tmp_path, "--evaluation.seeds", "3", "4", "--identifiers.enabled", "false")
    no_expander = ParrotTrainer(load_train_config(args))
    plain, untrained = no_expander.evaluation_samples("plain_base"), no_expander.evaluation_samples("untrained")
    assert torch.equal(plain.scores, untrained.scores)  # no expander, no identifiers: the start is the plain base model
    joint = ParrotTrainer(load_train_config(quick_args(tmp_path, "--mode", "joint", "--expander.model", "builtin:tiny_gpt2",
                                                       "--evaluation.seeds", "3", "4", "--evaluation.num_beams", "2",
                                                       "--expander.sampling.max_new_tokens", "6")))  # fmt: skip
    recorded = joint.evaluation_samples("trained")
    beam = expanded_texts(joint.parts.eval_prompts, joint.parts.expander.beam_search(joint.parts.eval_prompts, num_beams=2))
    assert recorded.expanded_prompts == beam * 2  # the same near-greedy ĉ for both seeds
    plain = joint.evaluation_samples("plain_base")
    assert plain.expanded_prompts == plain.prompts and plain.seeds == recorded.seeds
    with pytest.raises(ConfigError, match="evaluation: expansion_decoding='greedy': use 'beam' or 'sample'"):
        load_train_config(quick_args(tmp_path, "--evaluation.expansion_decoding", "greedy"))
    with pytest.raises(ConfigError, match="evaluation: num_beams=0 must be an integer >= 1"):
        load_train_config(quick_args(tmp_path, "--evaluation.num_beams", "0"))


def test_held_out_curve_every_n_iterations_leaves_the_training_as_it_was(tmp_path):
    common = ["--iterations", "2", "--checkpoint_every", "0", "--identifiers.enabled", "false", "--evaluation.seeds", "3"]
    curved = ParrotTrainer(load_train_config(quick_args(tmp_path / "curved", *common, "--evaluation.every", "1")))
    plain = ParrotTrainer(load_train_config(quick_args(tmp_path / "plain", *common)))
    at_start = plain.evaluation_samples("trained").means()  # LoRA B = 0: the start's images
    curved.train()
    plain.train()
    # the held-out sampling draws from its own generators: the same updates, weights and training curve as without it
    trained = plain.parts.trainable_state()["t2i"]
    assert all(torch.equal(v, trained[k]) for k, v in curved.parts.trainable_state()["t2i"].items())
    lines = [json.loads(line) for line in (tmp_path / "curved" / "curves.jsonl").read_text().splitlines()]
    plain_lines = [json.loads(line) for line in (tmp_path / "plain" / "curves.jsonl").read_text().splitlines()]
    assert [c["iteration"] for c in lines] == [0, 1, 2]
    assert lines[0] == {"iteration": 0, **{f"heldout/{k}/mean": v for k, v in at_start.items()}}  # the curve's start alone

    def rewards(line):
        return {k: v for k, v in line.items() if k.startswith("reward/")}

    assert [rewards(line) for line in lines[1:]] == [rewards(line) for line in plain_lines]
    # its last point is the trained weights' held-out table, and the end's samples are those (not sampled twice)
    end = plain.evaluation_samples("trained").means()
    assert {k: lines[2][f"heldout/{k}/mean"] for k in end} == end
    assert curved.evaluation_samples("trained").means() == end
    assert all(f"heldout/{k}/mean" in lines[1] for k in end)
    with pytest.raises(ConfigError, match="evaluation: every=-1 must be an integer >= 0"):
        load_train_config(quick_args(tmp_path, "--evaluation.every", "-1"))


def test_held_out_sampling_eta_zero_is_the_deterministic_sampler(tmp_path):
    trainer = ParrotTrainer(load_train_config(quick_args(tmp_path, "--evaluation.seeds", "3", "--evaluation.eta", "0",
                                                         "--identifiers.enabled", "false", "--sampling.guidance_scale", "2")))  # fmt: skip
    parts = trainer.parts
    samples = trainer.evaluation_samples("plain_base")
    generators = [torch.Generator().manual_seed(derived_seed(3, EVAL, i)) for i in range(len(parts.eval_prompts))]
    with parts.policy.adapters_disabled():
        ode = parts.policy.sample(parts.eval_prompts, guidance=Guidance.cfg(2.0), num_inference_steps=4, eta=0.0,
                                  generator=generators, compute_log_probs=False)  # fmt: skip
    assert torch.allclose(samples.images, ode.images, atol=1e-6)
    trained_eta = ParrotTrainer(load_train_config(quick_args(tmp_path, "--evaluation.seeds", "3", "--identifiers.enabled", "false",
                                                             "--sampling.guidance_scale", "2")))  # fmt: skip
    assert not torch.allclose(trained_eta.evaluation_samples("plain_base").images, ode.images, atol=1e-3)  # default: sampling.eta = 1


def test_expander_only_mode_leaves_the_t2i_lora_alone(tmp_path):
    args = quick_args(tmp_path, "--mode", "expander", "--expander.model", "builtin:tiny_gpt2", "--iterations", "1",
                      "--expander.sampling.max_new_tokens", "4", "--expander.lr", "0.05")  # fmt: skip
    trainer = ParrotTrainer(load_train_config(args))
    assert trainer.parts.t2i_optimizer is None and not any(p.requires_grad for p in trainer.parts.t2i_params)
    before = {part: {k: v.detach().clone() for k, v in tensors.items()} for part, tensors in trainer.parts.trainable_state().items()}
    trainer.run_iteration(0)
    after = trainer.parts.trainable_state()
    assert all(torch.equal(before["t2i"][k], v) for k, v in after["t2i"].items())
    assert any(not torch.equal(before["expander"][k], v) for k, v in after["expander"].items())


def test_a_long_training_prompt_is_warned_about_once_not_every_iteration(tmp_path, caplog):
    long_prompt = "a red circle on a blue square " * 20  # 140 words: past CLIP's 77 tokens
    args = quick_args(tmp_path / "run", "--iterations", "2", "--checkpoint_every", "0", "--identifiers.enabled", "false",
                      "--sampling.prompts_per_process", "2", "--prompts.train", "a red circle", long_prompt)  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="t2i.policy"):
        ParrotTrainer(load_train_config(args)).train()
    warnings = [r.getMessage() for r in caplog.records if r.name == "t2i.policy"]
    assert len(warnings) == 1, warnings  # two iterations sample it, one warning
    assert "tokens but the text encoder reads 77; dropped: '" in warnings[0] and "a red circle on a blue" in warnings[0]


def test_training_reads_prompt_files_with_the_generation_reader(tmp_path):
    from parrot.prompts import read_prompt_list

    (tmp_path / "train.tsv").write_text("Prompt\tCategory\na red circle\tshapes\n\t\na blue square\tshapes\n")
    (tmp_path / "held.jsonl").write_text('{"prompt": "a green circle"}\n"a yellow star"\n')
    assert read_prompt_list(("a purple triangle",), str(tmp_path / "train.tsv"), "prompts.train") == [
        "a purple triangle",
        "a red circle",
        "a blue square",
    ]
    args = quick_args(tmp_path / "run", "--prompts.train_file", str(tmp_path / "train.tsv"),
                      "--prompts.evaluation_file", str(tmp_path / "held.jsonl"))  # fmt: skip
    trainer = ParrotTrainer(load_train_config(args))
    assert trainer.parts.train_prompts[-2:] == ["a red circle", "a blue square"]  # after the preset's inline prompts
    assert trainer.parts.eval_prompts[-2:] == ["a green circle", "a yellow star"]
    with pytest.raises(FileNotFoundError, match=r"prompts.train_file: prompts file '.*nope.txt' does not exist"):
        read_prompt_list((), str(tmp_path / "nope.txt"), "prompts.train")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match=r"prompts.evaluation_file: prompts file '.*empty.jsonl' contains no prompts"):
        read_prompt_list((), str(tmp_path / "empty.jsonl"), "prompts.evaluation")
