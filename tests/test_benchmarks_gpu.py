"""benchmarks/gpu.py: the --cpu_smoke run at toy size, its arithmetic, and the one line without CUDA."""

import pytest
import torch

from benchmarks.gpu import main, matmul_peak, unet_inputs
from parrot_base.cli import UsageError
from t2i.random_init import build_random_pipeline
from t2i.tiny import build_tiny_pipeline


def test_cpu_smoke_runs_every_section_and_its_figures_add_up(tmp_path, capsys):
    record = main(["--cpu_smoke", "--json", str(tmp_path / "gpu.json")])
    (size,) = record["sizes"]
    unet, rollout, train = size["unet_forward"], size["rollout"], size["ddpo_is"]
    assert unet["mfu"] == pytest.approx(unet["flops"] / unet["seconds"] / 1e12 / record["peak"]["tflops"])
    assert rollout["ratio"] == pytest.approx(rollout["policy_s"] / rollout["plain_s"]) and rollout["ratio"] > 0
    assert train["images_per_s"] == pytest.approx(2 / train["update_t2i_s"])
    assert train["denoising_steps_per_s"] == pytest.approx(2 * 2 / train["update_t2i_s"])
    assert size["attention"] == ["AttnProcessor2_0"]  # SDPA
    assert (tmp_path / "gpu.json").is_file() and "DDPO-IS training" in capsys.readouterr().out


def test_unet_flops_are_counted_linearly_in_the_batch():
    """FlopCounterMode's count of a UNet call: every op is per-row, so 4 rows cost exactly twice 2 rows."""
    from torch.utils.flop_counter import FlopCounterMode

    pipeline = build_tiny_pipeline()

    def flops(batch):
        args, kwargs = unet_inputs(pipeline, batch, 16)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            pipeline.unet(*args, **kwargs)
        return counter.get_total_flops()

    assert flops(4) == 2 * flops(2) > 0


def test_sdxl_size_unet_inputs_fit_the_unet_on_the_meta_device():
    """SDXL's UNet call (pooled text embeds + 6 time ids) at 1024 px, shapes only: nothing is allocated or computed."""
    from torch.utils.flop_counter import FlopCounterMode

    pipeline = build_random_pipeline("sdxl_base", device="meta", skip=("text_encoder", "text_encoder_2"))
    args, kwargs = unet_inputs(pipeline, 2, 1024)
    assert kwargs["added_cond_kwargs"]["text_embeds"].shape == (2, 1280)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = pipeline.unet(*args, **kwargs, return_dict=False)[0]
    assert out.shape == (2, 4, 128, 128)
    assert counter.get_total_flops() == pytest.approx(2 * 6.761e12, rel=1e-3)  # 6.76 TFLOP per image: the MFU's numerator


def test_matmul_peak_is_2n3_over_the_time():
    peak = matmul_peak(torch.device("cpu"), torch.float32, 64, 1)
    assert peak["tflops"] == pytest.approx(2 * 64**3 / peak["seconds"] / 1e12)


def test_without_cuda_it_says_so_in_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UsageError, match=r"^CUDA is not available: benchmarks/gpu.py measures a GPU \(use --cpu_smoke"):
        main([])
