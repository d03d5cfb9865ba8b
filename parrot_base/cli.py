"""The one way every ``python -m …`` entry point of the project runs: :func:`run_cli`.

``if __name__ == "__main__": run_cli(main)`` calls ``main(argv)`` and

* answers a user's mistake — a bad value, an unknown field or reward, a missing file, a file
  that is not YAML, a model path that loads nothing, a disk that is full — with one line
  ``error: <what to fix>`` on stderr and exit status 2, no traceback (``--debug`` re-raises it);
* leaves every other exception (a bug) its traceback;
* ends quietly with status 141 when its reader stops early (``python -m … | head``), as a tool
  killed by SIGPIPE does;
* keeps the output to the project's own progress and results: transformers, diffusers,
  huggingface_hub and accelerate log errors only, their progress bars ("Loading weights",
  "Loading pipeline components") are off, and the known third-party warnings (deprecations,
  torchvision fallbacks, PEFT's ``fan_in_fan_out``, the attention-mask notice) are filtered;
  ``--verbose`` brings all of it back.

``--debug`` and ``--verbose`` are taken off the command line before ``main`` sees it.

Some noise is printed while the command's module is still being imported (diffusers'
pipelines import transformers' image processors, which warn about torchvision), before
``run_cli`` runs. A package with commands therefore calls :func:`quiet_if_run_as_command`
first thing in its ``__init__``: Python imports that package while it locates the module of
``python -m package.module``, with ``sys.argv[0] == "-m"`` (documented in ``python -m``), so
the quieting happens for commands only, never for a library import; a script of ``benchmarks/``
(``sys.argv[0]`` in that folder) is quieted the same way when it first imports one of those packages.
``main(argv)`` itself raises normally, so library callers and tests see the exception.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import yaml

__all__ = [
    "UsageError",
    "last_line",
    "USER_ERRORS",
    "run_cli",
    "error_line",
    "configure_output",
    "quiet_if_run_as_command",
    "is_benchmark_script",
    "PROJECT_PACKAGES",
]


def last_line(text: str) -> str:
    """The last non-empty line of a command's output: its ``error: …`` line when it stopped on a mistake."""
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


class UsageError(Exception):
    """Something the user fixes (not a bug): the message says what to change."""


#: exception types that are a user's mistake or the machine's state, never a bug of the project:
#: ValueError (bad values; ConfigError is one), OSError (missing or unreadable files, a model path
#: that loads nothing, a full disk), YAML syntax errors and :class:`UsageError`.
USER_ERRORS: tuple[type[BaseException], ...] = (UsageError, ValueError, OSError, yaml.YAMLError)

#: the repository root (parrot_base/ sits in it)
_REPO = Path(__file__).resolve().parents[1]

#: the project's own loggers, which stay at INFO when third-party ones are quieted
PROJECT_PACKAGES = ("parrot", "parrot_base", "t2i", "rewards", "prompt_expander", "shapes", "benchmarks", "__main__")

# third-party loggers that would otherwise inherit the level of a root logger set up elsewhere
_QUIETED_LOGGERS = ("accelerate", "torch", "PIL", "matplotlib", "urllib3", "filelock", "tensorboard")

# third-party warnings that say nothing a user of the CLI can act on (shown again with --verbose)
_NOISY_WARNINGS = (
    r".*fan_in_fan_out.*",
    r".*torchvision.*",
    r".*attention.mask.*",
    r".*deprecat.*",
)


def error_line(err: BaseException) -> str:
    """``error: <message>`` on one line (whitespace runs, newlines included, become one space)."""
    message = " ".join(str(err).split())
    if isinstance(err, KeyError) and len(err.args) == 1:  # str(KeyError) quotes its message
        message = " ".join(str(err.args[0]).split())
    return f"error: {message or type(err).__name__}"


def configure_output(verbose: bool) -> None:
    """Our loggers at INFO; third-party logs, progress bars and known warnings off unless ``verbose``."""
    logging.basicConfig(level=logging.INFO if verbose else logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    for name in PROJECT_PACKAGES:
        logging.getLogger(name).setLevel(logging.INFO)
    if verbose:
        for name in _QUIETED_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
        return
    _quiet_before_imports()
    for name in _QUIETED_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    _quiet_hf_libraries()


def _quiet_before_imports() -> None:
    """Environment read by the Hugging Face libraries when they are first imported, and warning filters."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    for category in (DeprecationWarning, FutureWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    for pattern in _NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


def quiet_if_run_as_command() -> None:
    """Quiet third-party output before any import, when ``python -m`` is locating a command of this package
    or a script of the repository's ``benchmarks/`` is running (``python benchmarks/x.py``)."""
    if "--verbose" not in sys.argv and (sys.argv[:1] == ["-m"] or is_benchmark_script(sys.argv[0] if sys.argv else "")):
        _quiet_before_imports()


def is_benchmark_script(path: str) -> bool:
    """Whether ``path`` (a script's ``sys.argv[0]``) is a file of this repository's ``benchmarks/`` folder."""
    if not path or path.startswith("-"):
        return False
    return Path(path).resolve().parent == _REPO / "benchmarks"


def _quiet_hf_libraries() -> None:
    try:
        import transformers.utils.logging as transformers_logging

        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        import diffusers.utils.logging as diffusers_logging

        diffusers_logging.set_verbosity_error()
        diffusers_logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        import huggingface_hub.utils as hub_utils

        hub_utils.disable_progress_bars()
    except ImportError:
        pass


def run_cli(main: Callable[[list[str]], Any], argv: Sequence[str] | None = None) -> NoReturn:
    """Run ``main(argv)`` as a command: exit 0, or 2 with one ``error: …`` line for a user's mistake."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug, verbose = "--debug" in argv, "--verbose" in argv
    argv = [arg for arg in argv if arg not in ("--debug", "--verbose")]
    configure_output(verbose)
    try:
        main(argv)
        sys.stdout.flush()  # a reader that stopped early (``| head``) shows here, not at interpreter exit
    except BrokenPipeError:
        if debug:
            raise
        # not a mistake: the reader has what it wanted. Say nothing and exit as a tool killed by SIGPIPE
        # would (128 + 13); stdout goes to /dev/null so the interpreter's last flush cannot fail again
        # (Python's documentation, "Note on SIGPIPE").
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(141) from None
    except USER_ERRORS as err:
        if debug:
            raise
        sys.stdout.flush()
        sys.stderr.write(error_line(err) + "\n")
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        if debug:
            raise
        sys.stderr.write("error: interrupted\n")
        raise SystemExit(130) from None
    raise SystemExit(0)
