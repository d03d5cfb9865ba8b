"""Typed dataclass configs: defaults, then a YAML file, then ``--dotted.name value`` CLI overrides.

Every config in the project is a (possibly nested) dataclass whose fields carry their help
text in ``field(metadata={"help": ...})``. ``parse_config(Config, argv)`` builds the command
line from it: a nested field ``train.lr`` becomes ``--train.lr``; ``--config FILE.yaml``
loads a YAML mapping of the same shape first. Unknown keys, values of the wrong type, a
non-finite float (``nan``, ``inf``) and a file that is not YAML are refused with the field's
dotted name (or the file and line) in a one-line :class:`ConfigError`; so is an unknown
``--option`` (with the closest known one suggested) and any other refusal of argparse.

A renamed field lists its old name(s) in ``field(metadata={"formerly": "old"})``: the old name is
refused like any unknown one, and the message names the new one (``unknown option --steps: it
was renamed --num_steps``). Old names are not accepted: one name per thing.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

__all__ = [
    "parse_config",
    "config_from_dict",
    "config_to_dict",
    "merge_values",
    "read_yaml",
    "read_config_file",
    "ConfigError",
    "OneLineArgumentParser",
]

# the options parrot_base.cli.run_cli takes off the command line before the parser sees it
RUNNER_OPTIONS_HELP = "--debug: show the traceback of an error; --verbose: show third-party logs, warnings and progress bars"

C = TypeVar("C")


class ConfigError(ValueError):
    """A config value or key that cannot be used; the message names the dotted field."""


def read_yaml(path: Path, what: str) -> Any:
    """The YAML document in ``path``; a file that is not YAML is refused naming the line to fix."""
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{what} {path}: not valid YAML{where}: {problem}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{what} {path}: not UTF-8 text ({err.reason} at byte {err.start})") from None


def read_config_file(path: Path, expected: str = "a YAML mapping") -> dict[str, Any]:
    """The mapping in the ``--config`` file ``path`` (empty for an empty file); a missing file, one that is not YAML
    and one whose top level is not a mapping (``expected`` names what it should hold) are refused in one line."""
    if not Path(path).is_file():
        raise ConfigError(f"--config {path}: no such file")
    loaded = read_yaml(Path(path), "--config") or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"--config {path}: expected {expected} at the top level")
    return loaded


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse whose refusals are a ConfigError (one line) instead of the usage text and exit.

    An unknown option is answered like :func:`parse_config` answers it: with the closest known
    option, or with its new name when ``renamed`` (old option → new option) lists it.
    """

    def __init__(self, *args: Any, renamed: dict[str, str] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.renamed = dict(renamed or {})

    def error(self, message: str):
        raise ConfigError(f"{message} (--help lists every option)")

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> argparse.Namespace:
        known, unknown = self.parse_known_args(args, namespace)
        if unknown:
            _refuse_unknown(unknown, [option for action in self._actions for option in action.option_strings], self.renamed)
        return known


def _refuse_unknown(unknown: list[str], options: list[str], renamed: dict[str, str] | None = None) -> None:
    flag = next((arg.split("=", 1)[0] for arg in unknown if arg.startswith("-")), None)
    if flag is None:
        raise ConfigError(f"unexpected value(s) {' '.join(unknown)!r}: give each value after its --option")
    if renamed and flag in renamed:
        raise ConfigError(f"unknown option {flag}: it was renamed {renamed[flag]} (--help lists every option)")
    close = difflib.get_close_matches(flag, options, n=1, cutoff=0.75)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise ConfigError(f"unknown option {flag}{hint} (--help lists every option)")


def _former_names(f: dataclasses.Field) -> tuple[str, ...]:
    """The old names of a renamed field (``metadata={"formerly": "old"}`` or a tuple of them)."""
    former = f.metadata.get("formerly", ())
    return (former,) if isinstance(former, str) else tuple(former)


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _coerce(value: Any, tp: Any, name: str) -> Any:
    """Convert ``value`` (from YAML or the command line) to the annotated type ``tp``."""
    tp, optional = _strip_optional(tp)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional:
            return None
        raise ConfigError(f"{name}: None is not allowed (expected {getattr(tp, '__name__', tp)})")
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping for {tp.__name__}, got {value!r}")
        return config_from_dict(tp, value, prefix=name + ".")
    if origin in (tuple, list):
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        item_type = args[0] if args else str
        converted = [_coerce(v, item_type, name) for v in items]
        return tuple(converted) if origin is tuple else converted
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping, got {value!r}; set it in the --config YAML file")
        return value
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{name}: {value!r} is not one of {typing.get_args(tp)}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{name}: expected true/false, got {value!r}")
    if tp in (int, float):
        try:
            number = tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected {tp.__name__}, got {value!r}") from None
        if tp is int and isinstance(value, float) and value != number:
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        if tp is float and not math.isfinite(number):
            raise ConfigError(f"{name}: expected a finite number, got {value!r}")
        return number
    if tp is str:
        return str(value)
    if tp is Path:
        return Path(value)
    return value


def config_from_dict(cls: type[C], values: dict[str, Any], prefix: str = "") -> C:
    """Build ``cls`` from a (nested) mapping, refusing unknown keys by their dotted name."""
    hints = _field_types(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - known)
    if unknown:
        renamed = {old: f.name for f in dataclasses.fields(cls) if f.init for old in _former_names(f)}
        named = ", ".join(prefix + k + (f" (renamed {prefix}{renamed[k]})" if k in renamed else "") for k in unknown)
        raise ConfigError(f"unknown config key(s) {named}; known: {', '.join(sorted(known))}")
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        where = prefix.rstrip(".")  # a top-level message names its own field
        raise ConfigError(f"{where}: {err}" if where else str(err)) from err


def config_to_dict(config: Any) -> dict[str, Any]:
    """A YAML-safe nested dict of a config (tuples become lists, paths strings)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, Path):
            return str(value)
        return value

    return plain(config)


def _leaf_fields(cls: type, prefix: str = "") -> list[tuple[str, dataclasses.Field, Any]]:
    hints = _field_types(cls)
    leaves = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp, _ = _strip_optional(hints[f.name])
        if dataclasses.is_dataclass(tp):
            leaves.extend(_leaf_fields(tp, prefix + f.name + "."))
        else:
            leaves.append((prefix + f.name, f, hints[f.name]))
    return leaves


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


def merge_values(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """A nested dict of ``base`` with ``update`` laid over it (mappings merged key by key)."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_values(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_config(
    cls: type[C],
    argv: Sequence[str] | None = None,
    description: str | None = None,
    defaults: dict[str, Any] | None = None,
) -> C:
    """Parse ``--config FILE.yaml`` and ``--dotted.field value`` overrides into ``cls``.

    Precedence, lowest first: the dataclass defaults, ``defaults`` (a nested mapping, e.g. a
    preset), the YAML file, the command line.
    """
    parser = OneLineArgumentParser(  # exact names only: an abbreviation would hide a typo of a longer field
        description=description or (cls.__doc__ or "").strip().split("\n")[0],
        epilog=RUNNER_OPTIONS_HELP,
        allow_abbrev=False,
    )
    parser.add_argument("--config", type=Path, help="YAML file with values for any of the fields below")
    for dotted, f, tp in _leaf_fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else "(computed)"
        help_text = f.metadata.get("help", "")
        base = _strip_optional(tp)[0]
        is_list = typing.get_origin(base) in (tuple, list)
        # a bare boolean flag means true; "--flag false" is also accepted
        nargs = "+" if is_list else ("?" if base is bool else None)
        parser.add_argument(
            f"--{dotted}",
            dest=dotted,
            default=None,
            nargs=nargs,
            const="true" if base is bool else None,
            metavar="VALUE",
            help=f"{help_text} [default: {default}]",
        )
    known, unknown = parser.parse_known_args(argv)
    if unknown:
        renamed = {}
        for dotted, f, _ in _leaf_fields(cls):
            parent = dotted.rpartition(".")[0]
            renamed |= {f"--{parent + '.' if parent else ''}{old}": f"--{dotted}" for old in _former_names(f)}
        _refuse_unknown(unknown, [option for action in parser._actions for option in action.option_strings], renamed)
    args = vars(known)
    values: dict[str, Any] = {}
    config_path = args.pop("config")
    if config_path is not None:
        values = read_config_file(config_path)
    values = merge_values(copy.deepcopy(defaults or {}), values)
    for dotted, value in args.items():
        if value is not None:
            _set_dotted(values, dotted, value)
    return config_from_dict(cls, values)
