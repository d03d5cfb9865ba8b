"""Where a model comes from: an existing local directory, or a hub id.

One rule for every loader in the project (pipelines, CLIP models, captioners, LMs): a string
that names an existing path must be a model directory holding ``required_file``; a string
that looks like a path (absolute, starting with ``.`` or ``~``, or with more than one ``/``)
but does not exist is refused here instead of being sent to the hub as a repo id.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["resolve_model_source"]


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
