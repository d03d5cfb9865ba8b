"""The ground floor of the parrot-rl distribution: pieces every other package may import.

It holds what is generic and has no model in it: the typed-config parser
(:mod:`parrot_base.config`: dataclass defaults, a YAML file, ``--dotted.field`` overrides,
one-line errors) and the command-line runner (:mod:`parrot_base.cli`: a user's mistake is one
``error: …`` line and exit status 2, ``--debug`` shows the traceback, third-party noise is
off unless ``--verbose``).

Why a package of its own and this name: ``t2i``, ``rewards``, ``prompt_expander``, ``parrot``
and ``shapes`` all parse configs and run CLIs; with the parser inside ``parrot`` the lower
floors imported upwards. ``parrot_base`` is named after the distribution so that it cannot
collide with a generic top-level name (``common``, ``utils``, ``config``) on ``sys.path``,
and ``_base`` says where it sits: below everything, importing nothing of the project.
"""

from parrot_base.cli import UsageError, run_cli
from parrot_base.config import ConfigError, config_from_dict, config_to_dict, merge_values, parse_config

__all__ = ["UsageError", "run_cli", "ConfigError", "parse_config", "config_from_dict", "config_to_dict", "merge_values"]
