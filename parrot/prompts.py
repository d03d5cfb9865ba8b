"""The one reader of prompt sources, used by training (``prompts.train_file``, ``prompts.evaluation_file``),
generation (``--prompts_file``) and evaluation (``--prompts``).

A prompt source is, tried in this order:

- a shipped set's short name (:data:`PROMPT_SETS`, package data in ``parrot/prompt_sets/`` with
  their licences): ``partiprompts`` (1,632 PartiPrompts with categories, Apache-2.0),
  ``simple_animals`` / ``ddpo_animals`` (DDPO's 45 animals, MIT), ``diffusiondb`` (9,798 DiffusionDB
  user prompts, Apache-2.0);
- a file: ``.txt`` (one prompt per line), ``.tsv`` (a ``Prompt`` column and an optional
  ``Category`` column, as PartiPrompts), ``.jsonl`` (a ``prompt`` key, or a JSON string, per line;
  an optional ``category`` key) or ``.parquet`` (read by ``datasets``, as a dataset below);
- a ``datasets`` directory written by ``save_to_disk``, or a hub dataset id (``owner/name``), read
  with ``datasets``: the ``split`` (of a ``DatasetDict`` or hub dataset) and the prompt ``column``
  ('' = the first of :data:`PROMPT_COLUMNS` present); a ``category`` / ``Category`` column is kept.

Blank prompts are skipped; a source without any prompt is refused.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

__all__ = [
    "PromptsConfig",
    "PROMPT_SETS",
    "PROMPT_COLUMNS",
    "PromptRecord",
    "prompt_set_path",
    "read_prompt_records",
    "read_prompts",
    "read_prompt_list",
]

#: short name → file in ``parrot/prompt_sets/`` (provenance and licences: that directory's README.md)
PROMPT_SETS = {
    "partiprompts": "PartiPrompts.tsv",
    "simple_animals": "simple_animals.txt",
    "ddpo_animals": "simple_animals.txt",
    "diffusiondb": "diffusiondb_prompts.txt",
}
#: the prompt column of a ``datasets`` source when none is named, first present wins
PROMPT_COLUMNS = ("prompt", "Prompt", "text", "caption")
_FILE_SUFFIXES = (".txt", ".tsv", ".jsonl", ".parquet")
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


@dataclass(frozen=True)
class PromptRecord:
    """One original prompt c and its category ('' when the source has none; PartiPrompts' ``Category``)."""

    prompt: str
    category: str = ""


def prompt_set_path(name: str) -> Path:
    """The package-data file of the shipped set ``name`` (a key of :data:`PROMPT_SETS`)."""
    if name not in PROMPT_SETS:
        raise ValueError(f"unknown prompt set {name!r}; shipped sets: {', '.join(PROMPT_SETS)}")
    return Path(str(resources.files("parrot") / "prompt_sets" / PROMPT_SETS[name]))


def read_prompt_records(source: str | Path, limit: int = 0, column: str = "", split: str = "train") -> list[PromptRecord]:
    """The prompts (with categories) of ``source`` — a shipped set, a file or a ``datasets`` source (module docstring)."""
    text = str(source)
    path = prompt_set_path(text) if text in PROMPT_SETS else Path(text).expanduser()
    if path.is_dir():
        records = _dataset_records(_load_saved_dataset(path, split), text, column)
    elif path.suffix.lower() in _FILE_SUFFIXES or path.is_file() or path.is_absolute() or text.startswith((".", "~")):
        records = _file_records(path, column)
    elif _HUB_ID.match(text):
        records = _dataset_records(_load_hub_dataset(text, split), text, column)
    else:
        raise FileNotFoundError(f"prompts file {text!r} does not exist or is not a file; a shipped set is one of: {', '.join(PROMPT_SETS)}")
    records = [r for r in records if r.prompt]
    if not records:
        raise ValueError(f"prompts {'file' if path.is_file() else 'source'} {text!r} contains no prompts")
    return records[:limit] if limit else records


def read_prompts(source: str | Path, limit: int = 0, column: str = "", split: str = "train") -> list[str]:
    """The prompts of ``source`` (see :func:`read_prompt_records`), the first ``limit`` when > 0."""
    return [record.prompt for record in read_prompt_records(source, limit, column, split)]


# ----- files ------------------------------------------------------------------------------------
def _file_records(path: Path, column: str) -> list[PromptRecord]:
    if not path.is_file():
        raise FileNotFoundError(f"prompts file {str(path)!r} does not exist or is not a file")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import datasets

        return _dataset_records(datasets.load_dataset("parquet", data_files=str(path), split="train"), str(path), column)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read prompts file {str(path)!r} as UTF-8 text: {err}") from err
    if suffix == ".txt":
        return [PromptRecord(line.strip()) for line in text.splitlines()]
    if suffix == ".tsv":
        rows = list(csv.DictReader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE))  # quotes are text
        if not rows or "Prompt" not in rows[0]:
            columns = list(rows[0]) if rows else []
            raise ValueError(f"{str(path)!r} has no 'Prompt' column (columns: {columns}); name the prompt column 'Prompt'")
        return [PromptRecord((row["Prompt"] or "").strip(), (row.get("Category") or "").strip()) for row in rows]
    if suffix == ".jsonl":
        return [_jsonl_record(line, path, n) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    raise ValueError(f"prompts file {str(path)!r}: unknown extension {suffix!r}; use .txt, .tsv, .jsonl or .parquet")


def _jsonl_record(line: str, path: Path, number: int) -> PromptRecord:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{str(path)!r} line {number} is not JSON: {err}") from err
    if isinstance(value, dict) and isinstance(value.get("prompt"), str):
        return PromptRecord(value["prompt"].strip(), str(value.get("category") or "").strip())
    if isinstance(value, str):
        return PromptRecord(value.strip())
    raise ValueError(f"{str(path)!r} line {number}: expected a string or an object with a 'prompt' string")


# ----- datasets ---------------------------------------------------------------------------------
def _load_saved_dataset(path: Path, split: str):
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError as err:
        raise FileNotFoundError(f"prompts directory {str(path)!r} is not a dataset saved with save_to_disk: {err}") from None
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise ValueError(f"dataset {str(path)!r} has no split {split!r}; it has {sorted(loaded)}")
        return loaded[split]
    return loaded


def _load_hub_dataset(name: str, split: str):
    import datasets

    try:
        return datasets.load_dataset(name, split=split)
    except (OSError, ValueError) as err:
        raise ValueError(f"prompts {name!r} is neither a file, a shipped set nor a loadable dataset: {err}") from None


def _dataset_records(dataset, source: str, column: str) -> list[PromptRecord]:
    columns = list(dataset.column_names)
    chosen = column or next((c for c in PROMPT_COLUMNS if c in columns), "")
    if chosen not in columns:
        wanted = f"column {column!r}" if column else f"any of the columns {list(PROMPT_COLUMNS)}"
        raise ValueError(f"dataset {source!r} has no {wanted} (columns: {columns}); name the prompt column")
    category = next((c for c in ("category", "Category") if c in columns), None)
    categories = dataset[category] if category else [""] * len(dataset)
    return [PromptRecord(str(p or "").strip(), str(c or "").strip()) for p, c in zip(dataset[chosen], categories)]


def read_prompt_list(inline: tuple[str, ...], path: str, what: str, column: str = "", split: str = "train") -> list[str]:
    """The inline prompts followed by those of the prompt source ``path`` (if any); ``what`` names the field in errors.

    An empty inline prompt is refused by its index (``prompts.train[1] is an empty prompt``).
    """
    prompts = list(inline)
    for i, p in enumerate(prompts):
        if not p.strip():
            raise ValueError(f"{what}[{i}] is an empty prompt")
    if path:
        try:
            prompts += read_prompts(path, column=column, split=split)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{what}_file: {err}") from None
        except ValueError as err:
            raise ValueError(f"{what}_file: {err}") from None
    return prompts


@dataclass
class PromptsConfig:
    """Original prompts c: inline lists and/or prompt sources (:mod:`parrot.prompts`): a shipped set's short
    name (``diffusiondb``, ``partiprompts``, ``simple_animals``), a .txt/.tsv/.jsonl/.parquet file, a
    ``save_to_disk`` directory or a hub dataset id."""

    train: tuple[str, ...] = field(default=(), metadata={"help": "training prompts c (inline)"})
    train_file: str = field(
        default="",
        metadata={
            "help": "training prompt source (adds to train): a shipped set (diffusiondb, partiprompts, simple_animals), "
            "a .txt/.tsv/.jsonl/.parquet file, a datasets directory or hub dataset id"
        },
    )
    evaluation: tuple[str, ...] = field(default=(), metadata={"help": "held-out prompts for the before/after table"})
    evaluation_file: str = field(default="", metadata={"help": "held-out prompt source (adds to evaluation), as train_file"})
    column: str = field(default="", metadata={"help": "prompt column of a datasets source ('' = prompt, Prompt, text or caption)"})
    split: str = field(default="train", metadata={"help": "split of a datasets source"})
