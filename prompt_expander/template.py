"""The instruction template that turns an original prompt c into the expander's input.

Parrot (Lee et al. 2024) feeds the prompt expansion network
``Input: <c>. This is a text input for image generation. Expand prompt for improving image
quality. Output: `` and reads the expansion ĉ after it.

Token boundary: byte-level BPE tokenizers (GPT-2 and those trained by
:func:`prompt_expander.scratch.train_bpe_tokenizer`) attach a space to the word that follows it,
so a template ending in ``"Output: "`` would tokenize differently alone than followed by the
expansion. We therefore feed the template *without* its trailing whitespace and make that
whitespace the first character of the completion; SFT data and sampling use the same split
(:func:`render_input`), so the model is trained on the context it sees at inference.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["PARROT_TEMPLATE", "check_template", "render_input", "completion_prefix", "check_prompts"]

PARROT_TEMPLATE = "Input: {prompt}. This is a text input for image generation. Expand prompt for improving image quality. Output: "


def check_template(template: str) -> None:
    """Refuse templates without exactly one ``{prompt}`` placeholder."""
    if template.count("{prompt}") != 1:
        raise ValueError(f"template {template!r} must contain the placeholder '{{prompt}}' exactly once")


def render_input(template: str, prompt: str) -> str:
    """The model input for original prompt ``prompt``: the template, right-stripped.

    The prompt is stripped of surrounding whitespace and of one trailing ``.`` (the template
    already puts a full stop after it).
    """
    prompt = prompt.strip()
    if prompt.endswith("."):
        prompt = prompt[:-1].rstrip()
    return template.replace("{prompt}", prompt).rstrip()


def completion_prefix(template: str) -> str:
    """The template's trailing whitespace, which starts every completion (see the module docstring)."""
    return template[len(template.rstrip()) :]


def check_prompts(prompts: str | Sequence[str]) -> list[str]:
    """A list of non-empty prompt strings, or a ``ValueError`` naming the bad one."""
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts:
        raise ValueError("no prompts given: pass at least one original prompt")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise TypeError(f"prompts[{i}] is {type(prompt).__name__}, expected str")
        if not prompt.strip().rstrip("."):
            raise ValueError(f"prompts[{i}] = {prompt!r} is empty; the expander needs a prompt to expand")
    return prompts
