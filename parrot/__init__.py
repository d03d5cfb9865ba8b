"""Parrot: Pareto-optimal multi-reward RL of text-to-image models, and its entry points."""
