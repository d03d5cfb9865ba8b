"""Where a model comes from: an existing local directory, or a hub id.

One rule for every loader in the project (pipelines, CLIP models, captioners, LMs): a string
that names an existing path must be a model directory holding ``required_file``; a string
that looks like a path (absolute, starting with ``.`` or ``~``, or with more than one ``/``)
but does not exist is refused here instead of being sent to the hub as a repo id.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["components_saved_as_none", "resolve_model_source"]


def resolve_model_source(name_or_path: str | os.PathLike, required_file: str = "config.json", kind: str = "model") -> str:
    """``name_or_path`` as an existing local ``kind`` directory or a hub id; see the module docstring."""
    text = os.fspath(name_or_path)
    if not text:
        raise ValueError(f"{kind} source is empty: give a hub id or a local directory")
    path = Path(text).expanduser()
    if path.exists():
        if not (path / required_file).is_file():
            raise FileNotFoundError(f"{text!r} is not a {kind} directory (no {required_file} in it)")
        return str(path)
    if path.is_absolute() or text.startswith((".", "~")) or text.count("/") > 1 or "\\" in text:
        raise FileNotFoundError(f"no {kind} directory at {text!r}")
    return text


def components_saved_as_none(source: str) -> dict[str, None]:
    """``{name: None}`` for each component a local pipeline directory's ``model_index.json`` records as
    ``[null, null]`` (saved as None, e.g. SD3 without T5): diffusers refuses to load a pipeline whose
    non-optional component was saved as None unless it is passed as None. ``{}`` for a hub id."""
    index = Path(source) / "model_index.json"
    if not index.is_file():
        return {}
    entries = json.loads(index.read_text(encoding="utf-8"))
    return {name: None for name, value in entries.items() if not name.startswith("_") and value == [None, None]}
