"""Dataclass configs from YAML and dotted CLI overrides."""

from dataclasses import dataclass, field

import pytest

from parrot_base.config import ConfigError, config_to_dict, parse_config


@dataclass
class Train:
    lr: float = field(default=3e-4, metadata={"help": "learning rate"})
    batch_size: int = field(default=8, metadata={"help": "images per batch"})
    weights: tuple[float, ...] = field(default=(0.25, 0.25), metadata={"help": "reward weights"})

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size} must be >= 1")


@dataclass
class Run:
    name: str = field(default="run", metadata={"help": "run name"})
    resume: bool = field(default=False, metadata={"help": "resume"})
    lora: str | None = field(default=None, metadata={"help": "lora dir"})
    train: Train = field(default_factory=Train, metadata={"help": "training"})


def test_defaults_yaml_then_cli_precedence(tmp_path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("name: from-yaml\ntrain:\n  lr: 0.01\n  batch_size: 4\n")
    config = parse_config(Run, ["--config", str(yaml_file), "--train.lr", "1e-5", "--resume", "--train.weights", "0.7", "0.3"])
    assert config.name == "from-yaml"
    assert config.train.lr == 1e-5 and config.train.batch_size == 4
    assert config.train.weights == (0.7, 0.3)
    assert config.resume is True and config.lora is None
    assert config_to_dict(config)["train"] == {"lr": 1e-5, "batch_size": 4, "weights": [0.7, 0.3]}


def test_round_trip_through_yaml(tmp_path):
    import yaml

    config = parse_config(Run, ["--name", "x", "--lora", "some/dir", "--resume", "false"])
    path = tmp_path / "out.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(config)))
    assert parse_config(Run, ["--config", str(path)]) == config


def test_errors_name_the_field():
    with pytest.raises(ConfigError, match="train.batch_size: expected int, got 'four'"):
        parse_config(Run, ["--train.batch_size", "four"])
    with pytest.raises(ConfigError, match="train: batch_size=0 must be >= 1"):
        parse_config(Run, ["--train.batch_size", "0"])
    with pytest.raises(ConfigError, match="resume: expected true/false"):
        parse_config(Run, ["--resume", "maybe"])


def test_unknown_yaml_keys_are_refused_with_dotted_name(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="unknown config key.*train.learning_rate"):
        parse_config(Run, ["--config", str(path)])
    with pytest.raises(ConfigError, match="no such file"):
        parse_config(Run, ["--config", str(tmp_path / "missing.yaml")])


@dataclass
class WithMapping:
    settings: dict[str, dict[str, str]] = field(default_factory=dict, metadata={"help": "per-name settings"})


def test_mapping_fields_come_from_yaml_and_a_string_is_refused(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("settings:\n  clip_score: {model: some/dir}\n")
    assert parse_config(WithMapping, ["--config", str(path)]).settings == {"clip_score": {"model": "some/dir"}}
    with pytest.raises(ConfigError, match="settings: expected a mapping, got 'rewards.yaml'; set it in the --config YAML"):
        parse_config(WithMapping, ["--settings", "rewards.yaml"])


def test_command_line_refusals_are_one_line_config_errors():
    @dataclass
    class Small:
        learning_rate: float = field(default=0.1, metadata={"help": "step size"})
        steps: int = field(default=1, metadata={"help": "steps"})

    with pytest.raises(ConfigError) as refused:
        parse_config(Small, ["--learning_rat", "0.2"])
    assert str(refused.value) == "unknown option --learning_rat; did you mean --learning_rate? (--help lists every option)"
    with pytest.raises(ConfigError) as refused:
        parse_config(Small, ["--steps"])
    assert str(refused.value) == "argument --steps: expected one argument (--help lists every option)"
    with pytest.raises(ConfigError, match="unexpected value\\(s\\) 'extra': give each value after its --option"):
        parse_config(Small, ["--steps", "2", "extra"])
    with pytest.raises(ConfigError, match="^unknown option --zzz \\(--help"):
        parse_config(Small, ["--zzz=1"])


def test_a_renamed_field_refuses_its_old_name_and_names_the_new_one(tmp_path):
    @dataclass
    class Sampling:
        num_steps: int = field(default=4, metadata={"help": "DDIM steps", "formerly": "steps"})

    @dataclass
    class Outer:
        sampling: Sampling = field(default_factory=Sampling, metadata={"help": "sampling"})
        count: int = field(default=1, metadata={"help": "how many", "formerly": ("n", "number")})

    with pytest.raises(ConfigError) as refused:
        parse_config(Outer, ["--sampling.steps", "2"])
    assert str(refused.value) == "unknown option --sampling.steps: it was renamed --sampling.num_steps (--help lists every option)"
    with pytest.raises(ConfigError) as refused:
        parse_config(Outer, ["--number=3"])
    assert str(refused.value) == "unknown option --number: it was renamed --count (--help lists every option)"
    path = tmp_path / "old.yaml"
    path.write_text("sampling:\n  steps: 2\n")
    with pytest.raises(ConfigError) as refused:
        parse_config(Outer, ["--config", str(path)])
    assert str(refused.value) == "unknown config key(s) sampling.steps (renamed sampling.num_steps); known: num_steps"
    assert parse_config(Outer, ["--sampling.num_steps", "2", "--count", "3"]) == Outer(Sampling(2), 3)


def test_the_renamed_inference_options_point_to_their_new_names():
    from parrot.generate import GenerateConfig
    from parrot.sample import SampleConfig
    from parrot.wrong_lora import WrongLoraConfig

    for config, old in ((GenerateConfig, "--steps"), (SampleConfig, "--steps"), (WrongLoraConfig, "--sample_steps")):
        with pytest.raises(ConfigError, match=f"^unknown option {old}: it was renamed --num_steps "):
            parse_config(config, [old, "2"])


def test_reward_names_take_commas_as_the_other_commands_do():
    from parrot.train_config import load_train_config

    common = ["--preset", "tiny", "--logging.log_with", "none"]
    assert load_train_config([*common, "--rewards.names", "jpeg_compressibility,clip_score"]).rewards.names == (
        "jpeg_compressibility",
        "clip_score",
    )
    assert load_train_config([*common, "--rewards.names", "jpeg_compressibility", "clip_score"]).rewards.names == (
        "jpeg_compressibility",
        "clip_score",
    )
    with pytest.raises(ConfigError, match="repeats a reward"):
        load_train_config([*common, "--rewards.names", "clip_score,clip_score"])
