"""Every shipped configs/*.yaml loads with the loader that reads it: training, evaluation or accelerate's own."""

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import ClusterConfig

from parrot.evaluate import EvaluateConfig
from parrot.train_config import derived_quantities, load_train_config
from parrot_base.config import parse_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    if path.name.startswith("accelerate_"):
        cluster = ClusterConfig.from_yaml_file(str(path))
        kind = (cluster.distributed_type, (cluster.fsdp_config or {}).get("fsdp_version"))
        assert kind == {"accelerate_multi_gpu.yaml": ("MULTI_GPU", None), "accelerate_fsdp.yaml": ("FSDP", 2)}[path.name]
        assert cluster.num_processes >= 2
    elif path.name.startswith("table1_"):
        assert parse_config(EvaluateConfig, ["--config", str(path)]).rewards
    else:
        config = load_train_config(["--config", str(path)])
        assert derived_quantities(config, 1).images_per_minibatch >= 1


FLOW_CONFIGS = [("flux_dev", "black-forest-labs/FLUX.1-dev", 1.0), ("sd35_medium", "stabilityai/stable-diffusion-3.5-medium", 4.5)]


@pytest.mark.parametrize(("name", "pipeline", "guidance_scale"), FLOW_CONFIGS)
def test_flow_configs_take_flow_grpo_settings(name, pipeline, guidance_scale):
    config = load_train_config(["--config", str(CONFIGS[0].parent / f"{name}.yaml")])
    assert (config.model.pipeline, config.model.dtype, config.sampling.guidance_scale) == (pipeline, "bfloat16", guidance_scale)
    assert (config.t2i.estimator, config.t2i.kl_weight, config.sampling.eta, config.sampling.num_steps) == ("is", 0.04, 0.7, 10)
    assert (config.selection.reward_weighting, config.selection.gradient_normalisation) == ("normalised", "group")
    assert derived_quantities(config, 1).images_per_minibatch == 2 and config.model.distilled_guidance == 3.5
    assert (config.model.lora.rank, config.model.lora.alpha) == (32, 64) and "add_q_proj" in config.model.lora.target_modules
    assert config.sampling.w1 + config.sampling.w2 == (1.0 if name == "flux_dev" else guidance_scale)


def test_a_non_finite_distilled_guidance_is_refused_by_name():
    with pytest.raises(ValueError, match="^model.distilled_guidance: expected a finite number, got 'nan'"):
        load_train_config(["--preset", "tiny", "--model.distilled_guidance", "nan"])
