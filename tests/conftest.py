"""Shared fixtures: everything offline, tiny models built in code."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import logging  # noqa: E402
import warnings  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from t2i import StableDiffusionPolicy  # noqa: E402
from t2i.tiny import build_tiny_pipeline  # noqa: E402


@pytest.fixture
def tiny_pipeline():
    """A fresh random tiny StableDiffusionPipeline (seeded, so identical across calls)."""
    return build_tiny_pipeline()


@pytest.fixture
def policy(tiny_pipeline):
    return StableDiffusionPolicy(tiny_pipeline)


def make_generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def restore_output_settings():
    """run_cli quiets loggers, warnings, environment and the HF libraries; give later tests theirs back."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    environment = dict(os.environ)
    levels = {name: logging.getLogger(name).level for name in ("", "accelerate", "torch", "PIL", "matplotlib")}
    verbosity = (transformers_logging.get_verbosity(), diffusers_logging.get_verbosity())
    with warnings.catch_warnings():
        yield
    os.environ.clear()
    os.environ.update(environment)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    transformers_logging.set_verbosity(verbosity[0])
    diffusers_logging.set_verbosity(verbosity[1])
    transformers_logging.enable_progress_bar()
    diffusers_logging.enable_progress_bar()
