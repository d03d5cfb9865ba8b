"""The one reader of prompt files, used by training (``prompts.train_file``, ``prompts.evaluation_file``)
and generation (``--prompts_file``).

A prompt file is ``.txt`` (one prompt per line), ``.tsv`` (a ``Prompt`` column, as PartiPrompts) or
``.jsonl`` (a ``prompt`` key, or a JSON string, per line). Blank lines and blank prompts are skipped;
a file without any prompt is refused.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

__all__ = ["read_prompts", "read_prompt_list"]


def read_prompts(path: str | Path, limit: int = 0) -> list[str]:
    """Prompts from a .txt (one per line), .tsv (column 'Prompt') or .jsonl ('prompt' key or a string per line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompts file {str(path)!r} does not exist or is not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read prompts file {str(path)!r} as UTF-8 text: {err}") from err
    suffix = path.suffix.lower()
    if suffix == ".txt":
        prompts = [line.strip() for line in text.splitlines()]
    elif suffix == ".tsv":
        rows = list(csv.DictReader(text.splitlines(), delimiter="\t"))
        if not rows or "Prompt" not in rows[0]:
            columns = list(rows[0]) if rows else []
            raise ValueError(f"{str(path)!r} has no 'Prompt' column (columns: {columns}); name the prompt column 'Prompt'")
        prompts = [(row["Prompt"] or "").strip() for row in rows]
    elif suffix == ".jsonl":
        prompts = [_jsonl_prompt(line, path, n) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    else:
        raise ValueError(f"prompts file {str(path)!r}: unknown extension {suffix!r}; use .txt, .tsv or .jsonl")
    prompts = [p for p in prompts if p]
    if not prompts:
        raise ValueError(f"prompts file {str(path)!r} contains no prompts")
    return prompts[:limit] if limit else prompts


def _jsonl_prompt(line: str, path: Path, number: int) -> str:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{str(path)!r} line {number} is not JSON: {err}") from err
    if isinstance(value, dict) and isinstance(value.get("prompt"), str):
        return value["prompt"].strip()
    if isinstance(value, str):
        return value.strip()
    raise ValueError(f"{str(path)!r} line {number}: expected a string or an object with a 'prompt' string")


def read_prompt_list(inline: tuple[str, ...], path: str, what: str) -> list[str]:
    """The inline prompts followed by those of the prompt file ``path`` (if any); ``what`` names the field in errors.

    An empty inline prompt is refused by its index (``prompts.train[1] is an empty prompt``).
    """
    prompts = list(inline)
    for i, p in enumerate(prompts):
        if not p.strip():
            raise ValueError(f"{what}[{i}] is an empty prompt")
    if path:
        try:
            prompts += read_prompts(path)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{what}_file: {err}") from None
        except ValueError as err:
            raise ValueError(f"{what}_file: {err}") from None
    return prompts
