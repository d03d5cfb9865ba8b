"""The expander's sampling settings (template, expansion length, temperature, nucleus mass)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prompt_expander.template import PARROT_TEMPLATE, check_template

__all__ = ["ExpanderSamplingConfig"]


@dataclass
class ExpanderSamplingConfig:
    """Sampling settings of the expander."""

    template: str = field(default=PARROT_TEMPLATE, metadata={"help": "instruction template with a {prompt} slot"})
    max_new_tokens: int = field(default=77, metadata={"help": "cap on expansion tokens (Parrot: 77)"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature; log-probs use the same one"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass (1.0 = off)"})
    truncate_prompts: bool = field(
        default=False,
        metadata={"help": "cut over-long original prompts to fit the context instead of raising an error"},
    )

    def __post_init__(self) -> None:
        check_template(self.template)
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens!r} must be a positive integer")
        if not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature!r} must be > 0")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p!r} must be in (0, 1]")
