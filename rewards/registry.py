"""Reward registry: a name → a factory that loads its model once and returns the callable.

``load_reward("clip_score", model="openai/clip-vit-large-patch14", device="cuda")`` builds the
reward's typed config from keyword overrides (unknown keys are refused with the valid ones
listed) and calls the factory. Factories register themselves with :func:`register_reward` at
import time of their module; :mod:`rewards` imports all built-in ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rewards.base import Reward, RewardConfig

__all__ = ["RewardEntry", "register_reward", "unregister_reward", "load_reward", "reward_names", "reward_config_class"]


@dataclass(frozen=True)
class RewardEntry:
    name: str
    factory: Callable[[Any], Reward]
    config_class: type[RewardConfig]


_REGISTRY: dict[str, RewardEntry] = {}


def register_reward(name: str, config_class: type[RewardConfig] = RewardConfig):
    """Decorator registering ``factory(config) -> Reward`` under ``name``."""

    def decorate(factory: Callable[[Any], Reward]) -> Callable[[Any], Reward]:
        if name in _REGISTRY and _REGISTRY[name].factory is not factory:
            raise ValueError(f"a reward named {name!r} is already registered ({_REGISTRY[name].factory.__qualname__})")
        _REGISTRY[name] = RewardEntry(name, factory, config_class)
        return factory

    return decorate


def unregister_reward(name: str) -> None:
    _entry(name)
    del _REGISTRY[name]


def reward_names() -> list[str]:
    return sorted(_REGISTRY)


def _entry(name: str) -> RewardEntry:
    if name not in _REGISTRY:
        raise ValueError(f"unknown reward {name!r}; known rewards: {', '.join(reward_names())}")
    return _REGISTRY[name]


def reward_config_class(name: str) -> type[RewardConfig]:
    return _entry(name).config_class


def build_reward_config(name: str, overrides: Mapping[str, Any] | None = None) -> RewardConfig:
    """The typed config of reward ``name`` with ``overrides`` applied (unknown keys refused)."""
    config_class = reward_config_class(name)
    overrides = dict(overrides or {})
    valid = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ValueError(f"reward {name!r} has no setting(s) {unknown}; its settings are {sorted(valid)}")
    return config_class(**overrides)


def load_reward(name: str, config: RewardConfig | None = None, **overrides: Any) -> Reward:
    """Build reward ``name`` (model loaded once, here) from a config or keyword overrides."""
    entry = _entry(name)
    if config is not None and overrides:
        raise TypeError("give either a config object or keyword overrides, not both")
    if config is None:
        config = build_reward_config(name, overrides)
    elif not isinstance(config, entry.config_class):
        raise TypeError(f"reward {name!r} takes a {entry.config_class.__name__}, got {type(config).__name__}")
    reward = entry.factory(config)
    reward.name = name
    return reward
