"""``torch.compile`` of a policy's denoiser (the UNet, or a family's transformer), as a config option.

The module is compiled in place with ``nn.Module.compile``, so its parameter names, its PEFT
adapters, the LoRA files saved from it and every reference to it stay what they were; only its
forward runs through TorchDynamo. Sampling (no gradients) and the update (gradients) are two
graphs, and switching the adapters off (DPOK's KL to θ_0) a third: each compiles once, on first use.

Whether it pays depends on the machine: compile time is paid once per graph and process, and on a
CPU the compiled graph is not always faster than eager (BENCHMARKS.md, "torch.compile"). Hence it
is off by default.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["COMPILE_MODES", "CompileSettings", "compile_denoiser"]

#: ``torch.compile`` modes, and "off"
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class CompileSettings:
    """Whether and how to ``torch.compile`` the T2I model's denoiser."""

    mode: str = field(
        default="off",
        metadata={"help": f"torch.compile mode of the UNet/transformer, or 'off': one of {', '.join(COMPILE_MODES)}"},
    )
    backend: str = field(
        default="inductor",
        metadata={"help": "torch.compile backend ('inductor' generates kernels; 'aot_eager' only traces, for checks)"},
    )

    def __post_init__(self) -> None:
        if self.mode not in COMPILE_MODES:
            raise ValueError(f"compile mode={self.mode!r} must be one of {', '.join(COMPILE_MODES)}")
        backends = torch._dynamo.list_backends(exclude_tags=())
        if self.mode != "off" and self.backend not in backends:
            raise ValueError(f"compile backend={self.backend!r} is not a torch.compile backend (e.g. inductor, aot_eager)")

    @property
    def enabled(self) -> bool:
        return self.mode != "off"


def compile_denoiser(module: torch.nn.Module, settings: CompileSettings) -> bool:
    """Compile ``module``'s forward in place per ``settings``; returns whether it was compiled."""
    if not settings.enabled:
        return False
    mode = None if settings.mode == "default" else settings.mode
    module.compile(backend=settings.backend, mode=mode)
    return True
