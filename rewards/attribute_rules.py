"""A GenEval-style rule reward: how many of the attributes a prompt states an image honours.

GenEval (Ghosh et al., NeurIPS 2023) checks a compositional prompt requirement by requirement
(object present, count, colour, position) with a detector and scores a prompt 1 when every
requirement holds, else 0; its figure is the mean over prompts. Here the verdicts come from a
rule *checker*, a callable ``checker(image, prompt) -> {attribute: honoured}`` with ``image`` a
(3, H, W) float tensor in [0, 1]; the setting ``checker`` names it as ``"module:function"`` of an
installed package (it is imported when the reward is built; no code is read from a model or
data directory). The shapes world's checker is ``shapes.checker:prompt_verdicts`` (its pixel
rules read colour, shape, size and background; the world's language states no position or
count), which the ``shapes`` training preset sets, so ``--rewards.names ...,attribute_rules``
works there; this module imports nothing of the world.

Definition. For an image x and the ORIGINAL prompt c, S(c) is the set of attributes the prompt
names and the checker reads, and v_a(x, c) ∈ {0, 1} says whether x honours attribute a:

- ``all_or_nothing=False`` (default): r(x, c) = (1/|S(c)|)·Σ_{a∈S(c)} v_a(x, c), the fraction
  honoured — a graded signal for RL (one wrong attribute of four costs 1/4);
- ``all_or_nothing=True``: r(x, c) = Π_{a∈S(c)} v_a(x, c), GenEval's per-prompt score (its mean
  over images is GenEval's figure for these prompts).

A prompt the checker cannot read (its ``ValueError``, e.g. a caption outside the world's grammar)
or one that names no attribute the checker reads is refused with one error line naming the reward
and the prompt: scoring it 0 (or 1) would hand RL a reward that says nothing about the image.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from rewards.base import Reward, RewardConfig
from rewards.registry import register_reward

__all__ = ["AttributeRules", "AttributeRulesConfig", "import_checker", "rule_score"]

Checker = Callable[[torch.Tensor, str], Mapping[str, bool]]


@dataclass
class AttributeRulesConfig(RewardConfig):
    checker: str = field(
        default="",
        metadata={
            "help": "the rule checker as 'module:function' of an installed package, a callable (image (3, H, W) in [0, 1], "
            "prompt) -> {attribute: honoured}; the shapes world's is shapes.checker:prompt_verdicts"
        },
    )
    all_or_nothing: bool = field(
        default=False,
        metadata={"help": "score 1 only when every stated attribute is honoured, else 0 (GenEval's per-prompt score); "
                  "False: the fraction honoured"},
    )  # fmt: skip


def import_checker(spec: str) -> Checker:
    """The callable that ``spec`` (``"module:function"``) names; a bad spec is one clear ``ValueError``."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(
            f"reward 'attribute_rules': checker={spec!r} must name a function as 'module:function' "
            "(the shapes world's is shapes.checker:prompt_verdicts)"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"reward 'attribute_rules': checker={spec!r}: cannot import {module_name!r} ({err})") from err
    checker = getattr(module, attribute, None)
    if not callable(checker):
        raise ValueError(f"reward 'attribute_rules': checker={spec!r}: {module_name!r} has no function {attribute!r}")
    return checker


def rule_score(verdicts: Mapping[str, bool], all_or_nothing: bool = False) -> float:
    """r(x, c) of the module docstring from the verdicts v_a over S(c) (which must not be empty)."""
    honoured = [bool(v) for v in verdicts.values()]
    if all_or_nothing:
        return float(all(honoured))
    return sum(honoured) / len(honoured)


class AttributeRules(Reward):
    """r(x, c) by a rule checker (see the module docstring); scores lie in [0, 1]."""

    def __init__(self, config: AttributeRulesConfig, checker: Checker):
        super().__init__(config)
        self.checker = checker

    def verdicts(self, image: torch.Tensor, prompt: str) -> Mapping[str, bool]:
        """{a: v_a(x, c)} for a ∈ S(c); an unreadable prompt or an empty S(c) is a ``ValueError``."""
        try:
            verdicts = self.checker(image, prompt)
        except ValueError as err:
            raise ValueError(f"reward {self.name!r}: the checker cannot read prompt {prompt!r}: {err}") from err
        if not verdicts:
            raise ValueError(f"reward {self.name!r}: prompt {prompt!r} names no attribute the checker reads")
        return verdicts

    def score_batch(self, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]]) -> torch.Tensor:
        scores = []
        for image, prompt in zip(images, prompts):
            if not torch.isfinite(image).all():
                scores.append(float("nan"))  # the evaluator masks and counts it
                continue
            scores.append(rule_score(self.verdicts(image, prompt), self.config.all_or_nothing))
        return torch.tensor(scores, dtype=torch.float32)


@register_reward("attribute_rules", AttributeRulesConfig)
def attribute_rules(config: AttributeRulesConfig) -> AttributeRules:
    if not config.checker:
        raise ValueError(
            "reward 'attribute_rules' needs the setting checker='module:function' "
            "(the shapes world's is shapes.checker:prompt_verdicts; the shapes preset sets it)"
        )
    return AttributeRules(config, import_checker(config.checker))
