"""``model.compile``: the compiled UNet gives the eager outputs, log-probs and gradients, and keeps its LoRA's names.

The checks compile with the ``aot_eager`` backend: it runs the same TorchDynamo capture and AOT
autograd as inductor (graph breaks, guards on PEFT's adapter switches, the grad/no-grad graphs) in
seconds, where inductor's C++ code generation takes minutes on this CPU (BENCHMARKS.md times it).
"""

import pytest
import torch
from conftest import make_generator

from parrot.train_config import load_train_config
from parrot_base.config import ConfigError
from t2i import Guidance, LoraSettings
from t2i.compile import CompileSettings, compile_denoiser

STEPS = [0, 2]


def _perturb_lora(policy) -> None:
    with torch.no_grad():
        for name, p in policy.unet.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn_like(p))


def _sample_and_grad(policy):
    trajectory = policy.sample(["a red circle", "a blue square"], guidance=Guidance.cfg(5.0), num_inference_steps=3,
                               generator=[make_generator(1), make_generator(2)])  # fmt: skip
    params = [p for p in policy.unet.parameters() if p.requires_grad]
    log_probs = policy.log_probs(trajectory, STEPS)
    grads = torch.autograd.grad(log_probs.sum(), params)
    return trajectory, log_probs.detach(), grads


def test_compiled_unet_gives_the_eager_samples_log_probs_and_gradients(policy):
    torch.manual_seed(0)
    policy.add_lora(LoraSettings(rank=2))
    _perturb_lora(policy)
    eager, eager_lp, eager_grads = _sample_and_grad(policy)
    names = sorted(n for n, _ in policy.unet.named_parameters())

    assert compile_denoiser(policy.unet, CompileSettings(mode="default", backend="aot_eager"))
    compiled, compiled_lp, compiled_grads = _sample_and_grad(policy)

    assert policy.unet._compiled_call_impl is not None  # the forward really runs through dynamo
    assert sorted(n for n, _ in policy.unet.named_parameters()) == names  # no _orig_mod. prefix: LoRA files unchanged
    torch.testing.assert_close(compiled.latents, eager.latents, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(compiled.log_probs, eager.log_probs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(compiled_lp, eager_lp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(compiled_lp, compiled.log_probs[:, STEPS], atol=1e-5, rtol=1e-5)  # recomputed = recorded
    for got, want in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert any(float(g.abs().max()) > 0 for g in eager_grads)


def test_compile_off_leaves_the_unet_eager(policy):
    assert not compile_denoiser(policy.unet, CompileSettings())
    assert policy.unet._compiled_call_impl is None


def test_compile_settings_refuse_unknown_modes_and_backends():
    with pytest.raises(ValueError, match="compile mode='fast' must be one of off, default, reduce-overhead"):
        CompileSettings(mode="fast")
    with pytest.raises(ValueError, match="compile backend='tensorrt-ish' is not a torch.compile backend"):
        CompileSettings(mode="default", backend="tensorrt-ish")
    CompileSettings(mode="off", backend="anything")  # the backend is not read while compile is off


def test_training_config_reads_compile_settings():
    config = load_train_config(["--preset", "tiny", "--model.compile.mode", "max-autotune", "--model.compile.backend", "inductor"])
    assert config.model.compile == CompileSettings(mode="max-autotune", backend="inductor")
    assert load_train_config(["--preset", "tiny"]).model.compile.enabled is False
    with pytest.raises(ConfigError, match="model.compile: compile mode='on'"):
        load_train_config(["--preset", "tiny", "--model.compile.mode", "on"])
