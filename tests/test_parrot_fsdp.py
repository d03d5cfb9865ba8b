"""FSDP2 sharding of the denoiser (parrot.sharding): the shipped accelerate config as accelerate's launcher reads it,
its refusals in one line, and GRPO on the toy FLUX in 2 CPU processes under torchrun (gloo), sharded against data
parallel (tests/fsdp_worker.py).

accelerate itself never turns FSDP on for CPU processes (``accelerate launch`` takes its multi-GPU launcher only
without ``--cpu``; ``AcceleratorState`` keeps MULTI_CPU), so the 2-process test exports the environment that the
shipped config makes ``accelerate launch`` export (checked here with accelerate's own launcher code) and starts the
processes with torchrun; from there on the path is the one GPUs take: accelerate's plugin read from that
environment, our fully_shard of its wrap units.
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
from accelerate.utils.launch import prepare_multi_gpu_env
from fsdp_worker import FSDP_ENV, VARIANTS
from safetensors.torch import load_file
from test_cli_errors import one_error_line
from test_parrot_train import quick_args
from test_t2i_flux import stock_images

from parrot.sharding import check_fsdp_settings, fsdp_plugin_of, rows_for_collectives, shard_denoiser
from parrot_base.cli import UsageError
from t2i.lora import LORA_WEIGHT_NAME
from t2i.tiny_flux import build_tiny_flux_pipeline
from t2i.tiny_sd3 import build_tiny_sd3_pipeline

REPO = Path(__file__).resolve().parents[1]
FSDP_YAML = REPO / "configs" / "accelerate_fsdp.yaml"
CPU_PROCESSES = SimpleNamespace(distributed_type=DistributedType.MULTI_CPU, num_processes=2)  # accelerate on 2 CPU processes


def launch_environment(config_file: Path) -> dict[str, str]:
    """The environment ``accelerate launch --config_file config_file -m parrot.train`` gives its processes."""
    args = launch_command_parser().parse_args(["--config_file", str(config_file), "--main_process_port", "0", "-m", "parrot.train"])
    args, _, _ = _validate_launch_command(args)
    return prepare_multi_gpu_env(args)


def wrapped_classes(plugin: FullyShardedDataParallelPlugin, model: torch.nn.Module) -> list[str]:
    wraps = fsdp2_prepare_auto_wrap_policy(plugin, model)
    return sorted({type(m).__name__ for m in model.modules() if wraps(m)})


def test_the_shipped_fsdp_config_shards_flux_blocks_with_fsdp2(monkeypatch):
    env = launch_environment(FSDP_YAML)
    assert {key: env.get(key) for key in FSDP_ENV} == FSDP_ENV  # what the 2-process test exports
    assert env["ACCELERATE_MIXED_PRECISION"] == "no" and env["FSDP_OFFLOAD_PARAMS"] == "false"
    for key in [k for k in os.environ if k.startswith("FSDP_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("FSDP_") or key == "ACCELERATE_USE_FSDP":
            monkeypatch.setenv(key, value)
    plugin = fsdp_plugin_of(CPU_PROCESSES)
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    check_fsdp_settings(plugin, compile_enabled=False)  # accepted
    flux = build_tiny_flux_pipeline().transformer
    assert wrapped_classes(plugin, flux) == ["FluxSingleTransformerBlock", "FluxTransformerBlock"]
    # without the class list (or for SD3), the model's own _no_split_modules: SD3's joint blocks
    monkeypatch.delenv("FSDP_TRANSFORMER_CLS_TO_WRAP")
    assert wrapped_classes(FullyShardedDataParallelPlugin(), build_tiny_sd3_pipeline().transformer) == ["JointTransformerBlock"]
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    assert fsdp_plugin_of(CPU_PROCESSES) is None  # no FSDP launch: data parallel


def test_fsdp_mistakes_are_refused_in_one_line(monkeypatch):
    monkeypatch.setenv("FSDP_VERSION", "1")
    with pytest.raises(UsageError, match=r"^the accelerate config asks for FSDP version 1: set fsdp_version: 2 "):
        check_fsdp_settings(FullyShardedDataParallelPlugin(), compile_enabled=False)
    monkeypatch.setenv("FSDP_VERSION", "2")
    with pytest.raises(UsageError, match=r"^model.compile with FSDP is not supported: set model.compile.mode off"):
        check_fsdp_settings(FullyShardedDataParallelPlugin(), compile_enabled=True)
    monkeypatch.setenv("FSDP_AUTO_WRAP_POLICY", "TRANSFORMER_BASED_WRAP")
    monkeypatch.setenv("FSDP_TRANSFORMER_CLS_TO_WRAP", "JointTransformerBlock")  # SD3's blocks named for a FLUX model
    flux = build_tiny_flux_pipeline().transformer
    with pytest.raises(UsageError, match=r"FSDP wrap policy does not fit FluxTransformer2DModel: .*JointTransformerBlock"):
        shard_denoiser(flux, FullyShardedDataParallelPlugin(), torch.device("cpu"), [])


def test_an_fsdp1_launch_stops_every_process_with_one_error_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", ACCELERATE_USE_FSDP="true", FSDP_VERSION="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "--log-dir", str(tmp_path / "logs"),
         "--redirects", "3", "-m", "parrot.train", *quick_args(tmp_path / "run")],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0 and "exitcode  : 2" in proc.stderr  # run_cli's status for a user's mistake
    errors = sorted(tmp_path.glob("logs/**/stderr.log"))
    assert len(errors) == 2
    for path in errors:  # what each process printed
        assert one_error_line(path.read_text()) == (
            "error: the accelerate config asks for FSDP version 1: set fsdp_version: 2 (the denoiser is sharded with FSDP2's "
            "fully_shard; see configs/accelerate_fsdp.yaml)"
        )


def test_a_minibatch_without_a_trained_image_gets_one_zero_weighted_row():
    trainable = torch.tensor([False, False, True, False, False, False])
    expected = torch.tensor([True, False, True, False, True, False])  # minibatches of 2: rows 0 and 4 added
    assert torch.equal(rows_for_collectives(trainable, 2), expected)
    assert torch.equal(rows_for_collectives(torch.ones(4, dtype=torch.bool), 2), torch.ones(4, dtype=torch.bool))


def lora_file(run: Path, where: str) -> dict[str, torch.Tensor]:
    return load_file(str(run / where / LORA_WEIGHT_NAME))


def test_grpo_on_tiny_flux_sharded_over_two_processes_equals_data_parallel(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(REPO / "tests" / "fsdp_worker.py"), str(tmp_path)],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=300,  # ~30 s; a process left out of a collective hangs
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    # (a) each process holds half of the transformer (base weights and LoRA alike; dim 0 padded to even chunks)
    shards = [json.loads((tmp_path / f"shards-rank{r}.json").read_text()) for r in (0, 1)]
    for key in ("local", "lora_local"):
        full = shards[0][key.replace("local", "full")]
        assert all(0.45 * full <= s[key] <= 0.55 * full for s in shards), shards
        assert shards[0][key] + shards[1][key] >= full
    # (b) process 1 trained no image (loss 0) yet took part; the gradient norm before clipping, over the full
    # gradients summed over processes, is the data-parallel one (FSDP's default mean would halve it) ...
    updates = {(run, r): json.loads((tmp_path / f"updates-{run}-rank{r}.json").read_text()) for run in ("fsdp", "dp") for r in (0, 1)}
    assert updates["fsdp", 1][0]["loss"] == updates["dp", 1][0]["loss"] == 0 and updates["dp", 0][0]["loss"] != 0
    norm = updates["dp", 0][0]["grad_norm"]
    assert norm > 0 and all(updates["fsdp", r][0]["grad_norm"] == pytest.approx(norm, rel=1e-5) for r in (0, 1))
    # ... and FSDP's LoRA after iteration 1 = the data-parallel run's
    fsdp, dp = tmp_path / "fsdp", tmp_path / "dp"
    sharded = lora_file(fsdp, "checkpoints/checkpoint-000001/lora")
    replicated = lora_file(dp, "final/lora")
    assert sharded.keys() == replicated.keys() and any(v.abs().max() > 0 for k, v in replicated.items() if "lora.up" in k)
    for key, value in replicated.items():
        torch.testing.assert_close(sharded[key], value, atol=1e-5, rtol=0)
    checkpoint = fsdp / "checkpoints" / "checkpoint-000001"
    for name in ("t2i_trainable.safetensors", "optimizer_t2i.safetensors"):  # full tensors, as data parallel writes them
        ours, theirs = load_file(str(checkpoint / name)), load_file(str(dp / "checkpoints" / "checkpoint-000001" / name))
        assert ours.keys() == theirs.keys()
        for key, value in theirs.items():  # Adam's moments (~1e-4, ~1e-9) relatively
            torch.testing.assert_close(ours[key], value, atol=1e-12, rtol=1e-4)
    # (c) a stock FluxPipeline reads the saved LoRA and draws the data-parallel LoRA's images
    images = []
    for lora in (checkpoint / "lora", dp / "final" / "lora"):
        stock = build_tiny_flux_pipeline()
        stock.set_progress_bar_config(disable=True)
        stock.load_lora_weights(lora)
        images.append(stock_images(stock, "a red circle", 3, num_inference_steps=3, guidance_scale=3.5))
    torch.testing.assert_close(images[0], images[1], atol=1e-5, rtol=0)
    # (d) resumed under FSDP from checkpoint 1, iteration 2 ends where the uninterrupted run did
    final, resumed = lora_file(fsdp, "final/lora"), lora_file(tmp_path / "resumed", "final/lora")
    assert any(not torch.equal(final[k], sharded[k]) for k in final)  # iteration 2 moved the LoRA
    for key, value in final.items():
        torch.testing.assert_close(resumed[key], value, atol=1e-6, rtol=0)
    # DPOK's KL (the LoRA-off transformer under FSDP) and reward-weighted regression: as data parallel
    for name in VARIANTS:
        runs = {kind: json.loads((tmp_path / f"updates-{name}-{kind}-rank0.json").read_text())[0] for kind in ("fsdp", "dp")}
        assert runs["fsdp"]["grad_norm"] == pytest.approx(runs["dp"]["grad_norm"], rel=1e-5) and runs["dp"]["grad_norm"] > 0
        assert runs["fsdp"]["kl"] == pytest.approx(runs["dp"]["kl"], rel=1e-5, abs=1e-12) and (runs["dp"]["kl"] > 0) == (name == "kl")
        ours, theirs = lora_file(tmp_path / f"{name}-fsdp", "final/lora"), lora_file(tmp_path / f"{name}-dp", "final/lora")
        for key, value in theirs.items():
            torch.testing.assert_close(ours[key], value, atol=1e-5, rtol=0)
    # the held-out evaluation ran on both processes (the sharded model's collectives), the main one wrote it
    assert set(json.loads((fsdp / "evaluation.json").read_text())) >= {"plain_base", "before", "after"}
