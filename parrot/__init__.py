"""Parrot: Pareto-optimal multi-reward RL of text-to-image models, and its entry points."""

from parrot_base.cli import quiet_if_run_as_command

quiet_if_run_as_command()  # before the imports below print anything (commands only)
