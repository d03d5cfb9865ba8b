"""Parrot's reward-specific identifiers: a token per reward prepended to the prompt.

During training the images sampled for reward k come from "<k>, ĉ" and reward k's
log-likelihood term is taken under that condition c_k; at inference all (or a chosen subset
of) identifiers are prepended, "<k1> <k2> …, ĉ", to ask for every quality at once.

With ``trainable_tokens`` (pivotal tuning, an extension) reward k's identifier is a new token
"<k>" in the T2I model's text tower(s) (:func:`add_identifier_tokens`, :mod:`t2i.textual_inversion`),
whose embedding starts at the template's text and is trained with the LoRA: by the identifier
credit, only the images of "<k>, ĉ" and so only reward k move it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from t2i.textual_inversion import add_trainable_tokens, save_token_embeddings, token_rows

__all__ = [
    "TOKENS_DIR", "TOKEN_TEMPLATE", "IdentifierConfig", "IdentifierTokens", "add_identifier_tokens", "identifier", "prepended_template",
    "token_dir", "with_identifiers", "evaluation_identifiers",
]  # fmt: skip

#: reward k's identifier text when it is a trained token (``trainable_tokens``)
TOKEN_TEMPLATE = "<{name}>"
_TOKEN_NORMS = ("free", "start")
#: the folder beside a LoRA folder that holds its run's trained identifier tokens, one subfolder per reward
TOKENS_DIR = "identifiers"


def token_dir(lora_dir: str | Path, reward: str) -> Path:
    """Where the trained identifier token of ``reward`` lies for the LoRA in ``lora_dir`` (``../identifiers/<reward>``)."""
    return Path(lora_dir).parent / TOKENS_DIR / reward


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

    trainable_tokens: bool = field(
        default=False,
        metadata={
            "help": "pivotal tuning: reward k's identifier becomes a new token '<k>' in the T2I model's text tower(s), its "
            "embedding initialised from the template's text and trained with the LoRA by reward k's images only; saved "
            "beside the LoRA in identifiers/<k>/ (diffusers' textual-inversion file)"
        },
    )
    token_lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate of the identifier tokens (no weight decay)"})
    token_norm: str = field(
        default="free",
        metadata={
            "help": "'free': the token rows go where AdamW takes them; 'start': after each step each row is rescaled to "
            "the norm it started with, so a token turns but keeps its initial word's scale (the vocabulary's)"
        },
    )

    def __post_init__(self) -> None:
        if not self.token_lr > 0:
            raise ValueError(f"token_lr={self.token_lr} must be > 0")
        if self.token_norm not in _TOKEN_NORMS:
            raise ValueError(f"token_norm={self.token_norm!r} must be one of {', '.join(_TOKEN_NORMS)}")
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


def prepended_template(config: IdentifierConfig) -> str:
    """The template of the text prepended for reward k: its token "<k>" with ``trainable_tokens``, else ``template``."""
    return TOKEN_TEMPLATE if config.trainable_tokens else config.template


@dataclass
class IdentifierTokens:
    """The trained identifier tokens of a run: reward name → token, each token's embedding rows in every text
    tower (views: writing them writes the model) and those rows as they started."""

    tokens: dict[str, str]
    rows: dict[str, list[torch.Tensor]]
    start: dict[str, list[torch.Tensor]]

    def state(self) -> dict[str, torch.Tensor]:
        """The rows by ``"<token>/<tower index>"``, for checkpoints."""
        return {f"{token}/{i}": row for name, token in self.tokens.items() for i, row in enumerate(self.rows[name])}

    @contextlib.contextmanager
    def at_start(self) -> Iterator[None]:
        """The tokens as they started (the untrained model's identifiers), restored afterwards."""
        trained = {name: [row.detach().clone() for row in rows] for name, rows in self.rows.items()}
        with torch.no_grad():
            for name, rows in self.rows.items():
                for row, start in zip(rows, self.start[name]):
                    row.copy_(start)
        try:
            yield
        finally:
            with torch.no_grad():
                for name, rows in self.rows.items():
                    for row, value in zip(rows, trained[name]):
                        row.copy_(value)

    def rescale_to_start_norms(self) -> None:
        """Rescale every row to the norm it started with (``token_norm`` 'start'); its direction is kept."""
        with torch.no_grad():
            for name, rows in self.rows.items():
                for row, start in zip(rows, self.start[name]):
                    row.mul_(start.norm() / row.norm().clamp_min(torch.finfo(row.dtype).tiny))

    def turn_degrees(self) -> dict[str, float]:
        """Reward name → the angle in degrees between its token's rows and their start, averaged over the text
        towers: how far training has turned the token from the template's word (0 = untrained)."""
        angles = {}
        for name, rows in self.rows.items():
            cosines = [torch.nn.functional.cosine_similarity(row.detach().flatten().double(), start.flatten().double(), dim=0)
                       for row, start in zip(rows, self.start[name])]  # fmt: skip
            angles[name] = float(torch.stack([torch.rad2deg(torch.arccos(c.clamp(-1.0, 1.0))) for c in cosines]).mean())
        return angles

    def save(self, pipeline, lora_dir: str | Path) -> None:
        """Each token beside the LoRA in ``lora_dir``, in :func:`token_dir` (diffusers' ``load_textual_inversion`` reads each)."""
        for name, token in self.tokens.items():
            save_token_embeddings(pipeline, token, token_dir(lora_dir, name))


def add_identifier_tokens(
    pipeline, config: IdentifierConfig, reward_names: Sequence[str]
) -> tuple[IdentifierTokens, list[torch.nn.Parameter]]:
    """Add the token "<k>" of every reward to ``pipeline``'s text tower(s), initialised from ``config.template``'s text
    (one token of the template's text: the encoding is exactly the template's); returns the tokens and the towers'
    embedding matrices to train (gradients reach the tokens' rows only)."""
    tokens = {name: identifier(TOKEN_TEMPLATE, name) for name in reward_names}
    matrices = add_trainable_tokens(pipeline, {tokens[name]: identifier(config.template, name) for name in reward_names})
    rows = {name: token_rows(pipeline, token) for name, token in tokens.items()}
    start = {name: [row.detach().clone() for row in rows[name]] for name in reward_names}
    return IdentifierTokens(tokens, rows, start), matrices
