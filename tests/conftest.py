"""Shared fixtures: everything offline, tiny models built in code."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

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
