"""The SDE window of Flow-GRPO-Fast and MixGRPO: only W consecutive denoising steps are stochastic, and trained.

Flow-GRPO-Fast (Liu et al. 2025) takes the SDE step (noise level ``sampling.eta``) on a short window of W
consecutive steps and the deterministic ODE step (η = 0: Euler for flow matching, DDIM for the UNet families)
on every other step, and trains only the window's steps; MixGRPO (Li et al. 2025) slides the window along
the chain as training goes. Notation: T = ``sampling.num_steps``, W = ``size``, iteration n; the window is
the steps s_n … s_n + W − 1 with

    s_n = (start + stride·⌊n / every⌋) mod (T − W + 1)

(``stride`` 0: fixed at ``start``). It is a function of (config, n) only, so a resumed run and N processes
draw exactly what one uninterrupted process draws (:mod:`parrot.seeding`). The sampler records it on the
trajectory (:attr:`t2i.Trajectory.stochastic`) and the T2I update trains the recorded window's steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["SDEWindowConfig", "window_start", "window_steps", "describe_window"]


@dataclass
class SDEWindowConfig:
    """``sampling.sde_window``: which denoising steps are stochastic (see :mod:`parrot.sde_window`)."""

    size: int = field(
        default=0,
        metadata={
            "help": "W consecutive SDE steps (noise sampling.eta), the only trained ones; every other step is "
            "deterministic (eta 0: Euler/DDIM, no log-prob). 0 = every step stochastic (Flow-GRPO-Fast: e.g. 2)"
        },
    )
    start: int = field(default=0, metadata={"help": "index of the window's first step at iteration 0 (0 = the noisiest)"})
    stride: int = field(
        default=0,
        metadata={"help": "MixGRPO: the start advances by this many steps every `every` iterations, wrapping; 0 = fixed"},
    )
    every: int = field(default=1, metadata={"help": "iterations between two advances of a sliding window"})

    def __post_init__(self) -> None:
        for name in ("size", "start", "stride"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        if self.every < 1:
            raise ValueError(f"every={self.every} must be >= 1")

    def check(self, num_steps: int) -> None:
        """Refuse a window that does not fit in ``num_steps`` denoising steps."""
        if self.size > num_steps:
            raise ValueError(f"sde_window.size={self.size} must be <= num_steps={num_steps}")
        if self.size and self.start > num_steps - self.size:
            raise ValueError(f"sde_window.start={self.start} must be <= num_steps − size = {num_steps - self.size}")


def window_start(config: SDEWindowConfig, num_steps: int, iteration: int) -> int:
    """s_n, the first step of iteration ``iteration``'s window (module docstring)."""
    return (config.start + config.stride * (iteration // config.every)) % (num_steps - config.size + 1)


def window_steps(config: SDEWindowConfig, num_steps: int, iteration: int) -> list[int] | None:
    """The window's step indices at ``iteration``; None when the window is off (every step stochastic)."""
    if not config.size:
        return None
    start = window_start(config, num_steps, iteration)
    return list(range(start, start + config.size))


def describe_window(config: SDEWindowConfig, num_steps: int) -> str:
    """The start-up line's words for the window ('' when off)."""
    if not config.size:
        return ""
    sliding = f", sliding by {config.stride} every {config.every} iteration(s)" if config.stride else ""
    return f" (SDE window: {config.size} of {num_steps} steps from step {config.start}{sliding}; the others deterministic)"
