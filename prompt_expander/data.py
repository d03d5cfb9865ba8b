"""Promptist-format pairs (``prompt`` short and user-like, ``completion`` expanded) and their sources.

Sources: JSONL / JSON / CSV / TSV files, any ``datasets`` dataset (object or hub name), and
:func:`build_diffusiondb_pairs`, which derives pairs from real DiffusionDB user prompts.

The DiffusionDB rule (:func:`subject_of`): the short prompt is the *subject* of a full prompt,
taken as its first clause — the text before the first ``,`` ``;`` ``|`` ``(`` ``[`` or
sentence-ending ``.`` — with a trailing artist / style attribution (`` by …``,
`` in the style of …``, `` art by …``, `` trending on …``) cut off. The long side is the full
prompt. A pair is kept only when the subject has 2 to 20 words and the full prompt adds at
least 2 words (i.e. it carries modifiers). Limits: a prompt that *starts* with modifiers
("paint brush strokes, abstract watercolor painting of a village") yields a modifier as
its "subject"; a subject with an inner comma ("a cat, a dog and a bird") is cut short;
modifiers inside the first clause ("ultra wide angle photograph of a cabin") stay in the
short side. The held-out split is chosen by a hash of the short prompt, so the same subject
never lands on both sides.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

from prompt_expander.template import completion_prefix, render_input

__all__ = [
    "DiffusionDBPairsConfig",
    "default_diffusiondb_path",
    "subject_of",
    "build_diffusiondb_pairs",
    "load_pairs",
    "to_sft_dataset",
    "keeps_subject_and_adds_modifiers",
    "subject_word_recall",
]

_CLAUSE_END = re.compile(r"[,;|(\[]|\.(?:\s|$)")
_ATTRIBUTION = re.compile(r"\s+(?:art by|by|in the style of|in style of|trending on)\s.*$", re.IGNORECASE)


def default_diffusiondb_path() -> Path:
    """``<repository>/../shared/data/diffusiondb_prompts.txt``, the project's shared copy."""
    return Path(__file__).resolve().parents[1].parent / "shared" / "data" / "diffusiondb_prompts.txt"


@dataclass
class DiffusionDBPairsConfig:
    """How pairs are derived from the DiffusionDB prompt list."""

    path: str | None = field(
        default=None,
        metadata={"help": "prompt file, one per line; None = ../shared/data/diffusiondb_prompts.txt from the repo"},
    )
    test_fraction: float = field(default=0.1, metadata={"help": "share of subjects held out for evaluation"})
    min_subject_words: int = field(default=2, metadata={"help": "shortest subject kept"})
    max_subject_words: int = field(default=20, metadata={"help": "longest subject kept"})
    min_added_words: int = field(default=2, metadata={"help": "words the full prompt must add to the subject"})
    max_rows: int | None = field(default=None, metadata={"help": "keep only the first N pairs (None = all)"})

    def __post_init__(self) -> None:
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction={self.test_fraction!r} must be in (0, 1)")
        if self.min_subject_words < 1 or self.max_subject_words < self.min_subject_words:
            raise ValueError(f"need 1 <= min_subject_words ({self.min_subject_words}) <= max_subject_words ({self.max_subject_words})")


def subject_of(prompt: str) -> str:
    """The short side of a full prompt by the module docstring's rule (may equal the prompt)."""
    text = " ".join(prompt.split())
    match = _CLAUSE_END.search(text)
    clause = text[: match.start()] if match else text
    return _ATTRIBUTION.sub("", clause).strip(" -:.")


def _holdout(subject: str, test_fraction: float) -> bool:
    digest = hashlib.sha1(subject.lower().encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < test_fraction


def build_diffusiondb_pairs(config: DiffusionDBPairsConfig | None = None) -> DatasetDict:
    """``DatasetDict(train=…, test=…)`` of (prompt = subject, completion = full prompt) pairs."""
    config = config or DiffusionDBPairsConfig()
    path = Path(config.path) if config.path is not None else default_diffusiondb_path()
    if not path.is_file():
        raise FileNotFoundError(f"no DiffusionDB prompt file at {str(path)!r}; pass DiffusionDBPairsConfig(path=...) (one prompt per line)")
    splits: dict[str, dict[str, list[str]]] = {s: {"prompt": [], "completion": []} for s in ("train", "test")}
    kept = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        full = " ".join(line.split())
        subject = subject_of(full)
        words = len(subject.split())
        if not config.min_subject_words <= words <= config.max_subject_words:
            continue
        if len(full.split()) < words + config.min_added_words:
            continue
        split = "test" if _holdout(subject, config.test_fraction) else "train"
        splits[split]["prompt"].append(subject)
        splits[split]["completion"].append(full)
        kept += 1
        if config.max_rows is not None and kept >= config.max_rows:
            break
    if not splits["train"]["prompt"] or not splits["test"]["prompt"]:
        raise ValueError(f"{str(path)!r} gave {kept} pairs, too few for both splits; check the file and the limits")
    return DatasetDict({name: Dataset.from_dict(columns) for name, columns in splits.items()})


def load_pairs(source: str | os.PathLike | Dataset | DatasetDict, split: str = "train") -> Dataset:
    """Promptist-format pairs from a file (.jsonl/.json/.csv/.tsv), a saved or hub dataset, or a Dataset.

    The result has exactly the columns ``prompt`` and ``completion`` (both strings).
    """
    if isinstance(source, DatasetDict):
        if split not in source:
            raise ValueError(f"split {split!r} not in the dataset; it has {sorted(source)}")
        dataset = source[split]
    elif isinstance(source, Dataset):
        dataset = source
    else:
        dataset = _load_pairs_source(os.fspath(source), split)
    missing = {"prompt", "completion"} - set(dataset.column_names)
    if missing:
        raise ValueError(f"pairs need columns 'prompt' and 'completion'; missing {sorted(missing)} in {dataset.column_names}")
    dataset = dataset.select_columns(["prompt", "completion"])
    for i, row in enumerate(dataset.select(range(min(len(dataset), 1000)))):
        if not isinstance(row["prompt"], str) or not isinstance(row["completion"], str):
            raise TypeError(f"row {i} is not a pair of strings: {row!r}")
    return dataset


def _load_pairs_source(text: str, split: str) -> Dataset:
    path = Path(text).expanduser()
    suffix = path.suffix.lower()
    builders = {".jsonl": ("json", {}), ".json": ("json", {}), ".csv": ("csv", {}), ".tsv": ("csv", {"sep": "\t"})}
    if suffix in builders:
        if not path.is_file():
            raise FileNotFoundError(f"no pairs file at {text!r}")
        builder, kwargs = builders[suffix]
        return load_dataset(builder, data_files=str(path), split="train", **kwargs)
    if path.is_dir():
        loaded = load_from_disk(str(path))
        return load_pairs(loaded, split)
    if path.is_absolute() or text.startswith((".", "~")):
        raise FileNotFoundError(f"no pairs file or dataset directory at {text!r} (.jsonl, .json, .csv or .tsv)")
    return load_dataset(text, split=split)


def to_sft_dataset(pairs: Dataset, template: str) -> Dataset:
    """Pairs in TRL's prompt/completion format: templated prompt, completion after the boundary space."""
    prefix = completion_prefix(template)

    def render(row: dict) -> dict:
        return {"prompt": render_input(template, row["prompt"]), "completion": prefix + row["completion"].strip()}

    return pairs.map(render, desc="Applying the expander template")


def _words(text: str) -> list[str]:
    return re.findall(r"[\w']+", text.lower())


def keeps_subject_and_adds_modifiers(short: str, expansion: str) -> bool:
    """True when every word of ``short`` occurs in ``expansion`` and the expansion has more words."""
    short_words, long_words = _words(short), _words(expansion)
    return set(short_words) <= set(long_words) and len(long_words) > len(short_words)


def subject_word_recall(short: str, expansion: str) -> float:
    """Share of the distinct words of ``short`` that occur in ``expansion`` (partial credit)."""
    short_words = set(_words(short))
    if not short_words:
        raise ValueError(f"short prompt {short!r} has no words")
    return len(short_words & set(_words(expansion))) / len(short_words)
