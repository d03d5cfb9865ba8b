"""Parrot's reward-specific identifiers: a token per reward prepended to the prompt.

During training the images sampled for reward k come from "<k>, ĉ" and reward k's
log-likelihood term is taken under that condition c_k; at inference all (or a chosen subset
of) identifiers are prepended, "<k1> <k2> …, ĉ", to ask for every quality at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["IdentifierConfig", "identifier", "with_identifiers", "evaluation_identifiers"]


@dataclass
class IdentifierConfig:
    """Reward identifiers on/off, their format, and which ones are prepended at evaluation."""

    enabled: bool = field(default=True, metadata={"help": "prepend a reward-specific identifier while training"})
    template: str = field(
        default="<{name}>",
        metadata={"help": "identifier text for reward {name}; a format string, e.g. '{name:.1}' keeps its first letter"},
    )
    evaluation: tuple[str, ...] = field(
        default=("all",),
        metadata={"help": "identifiers prepended at evaluation: 'all', reward names, or 'none'"},
    )
    contrast: float = field(
        default=0.0,
        metadata={
            "help": "λ: in the T2I update an image of '<k>, ĉ' is also pushed against the other rewards, A_i = A[i,k] − "
            "λ·mean_{j≠k} A[i,j] (0: the paper's credit, r_k only; 1: the part every identifier shares cancels, in "
            "expectation, or within the batch with paired_noise). An extension: measured not to give Parrot's Fig. 7 "
            "on the shapes world (BENCHMARKS.md)"
        },
    )
    paired_noise: bool = field(
        default=False,
        metadata={
            "help": "the images of one (prompt, expansion) draw the same noise under every identifier (common random "
            "numbers); off: every image its own noise"
        },
    )

    def __post_init__(self) -> None:
        if "{name" not in self.template:
            raise ValueError(f"template={self.template!r} must contain '{{name}}' (or a format of it, e.g. '{{name:.1}}')")
        try:
            self.template.format(name="reward")
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(f"template={self.template!r} is not a format string with only {{name}}: {err}") from None
        if not 0.0 <= self.contrast <= 1.0:
            raise ValueError(f"contrast={self.contrast} must lie in [0, 1] (0: the paper's credit, r_k only)")

    def check_distinct(self, reward_names: Sequence[str]) -> None:
        """Refuse a template that gives two rewards the same identifier."""
        texts = [identifier(self.template, n) for n in reward_names]
        clashes = sorted({t for t in texts if texts.count(t) > 1})
        if self.enabled and clashes:
            raise ValueError(f"template={self.template!r} gives several rewards the identifier(s) {clashes}")


def identifier(template: str, name: str) -> str:
    return template.format(name=name)


def with_identifiers(prompt: str, names: Sequence[str], template: str) -> str:
    """ "<a> <b>, prompt" (the prompt unchanged when ``names`` is empty)."""
    if not names:
        return prompt
    return " ".join(identifier(template, n) for n in names) + ", " + prompt


def evaluation_identifiers(config: IdentifierConfig, reward_names: Sequence[str]) -> list[str]:
    """The reward names whose identifiers are prepended at evaluation (errors name unknown ones)."""
    if not config.enabled or tuple(config.evaluation) in (("none",), ()):
        return []
    if tuple(config.evaluation) == ("all",):
        return list(reward_names)
    unknown = [n for n in config.evaluation if n not in reward_names]
    if unknown:
        raise ValueError(f"identifiers.evaluation names {unknown}, not among rewards.names {list(reward_names)}")
    return list(config.evaluation)
