"""``sampling``: how ``python -m parrot.train`` samples its training images — the batch's shape (prompts ×
expansions × images per process), the sampler (T steps, η or a flow family's noise level a, the SDE window) and
the guidance of training and held-out samples. Part of :class:`parrot.train_config.TrainConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from parrot.sde_window import SDEWindowConfig

__all__ = ["SamplingConfig"]

_TRAINING_GUIDANCE = ("cfg", "prompt_centred")


@dataclass
class SamplingConfig:
    prompts_per_process: int = field(default=4, metadata={"help": "original prompts c per process per iteration"})
    expansions_per_prompt: int = field(
        default=1,
        metadata={
            "help": "E: expansions ĉ sampled per prompt c (per identifier when identifiers are on); >= 2 gives the "
            "expander's group_mean baseline several expansions of the same c to compare"
        },
    )
    images_per_prompt: int = field(
        default=4,
        metadata={
            "help": "images per original prompt c, split evenly over its E × (K identifiers or 1) conditioning "
            'texts "<k>, ĉ": N = images_per_prompt / (E·K) images per group of the non-dominated selection'
        },
    )
    num_steps: int = field(default=50, metadata={"help": "DDIM steps T"})
    eta: float = field(default=1.0, metadata={"help": "DDIM η (> 0); a flow family's SDE noise level a (Flow-GRPO: 0.7)"})
    sde_window: SDEWindowConfig = field(
        default_factory=SDEWindowConfig, metadata={"help": "Flow-GRPO-Fast / MixGRPO: only a window of steps stochastic and trained"}
    )
    training_guidance: str = field(
        default="cfg",
        metadata={
            "help": "guidance of the training samples: 'cfg' (the paper: CFG with guidance_scale on \"<k>, ĉ\") or "
            "'prompt_centred' (w1 on c, w2 on \"<k>, ĉ\"; needs an expander)"
        },
    )
    guidance_scale: float = field(
        default=7.5, metadata={"help": "CFG scale of training samples, and of held-out samples when there is no expander"}
    )
    w1: float = field(
        default=5.0,
        metadata={
            "help": "Parrot's prompt-centred guidance weight of the original prompt c at inference (held-out "
            "evaluation, with an expander; §4.3), and in training with training_guidance 'prompt_centred'"
        },
    )
    w2: float = field(default=5.0, metadata={"help": 'prompt-centred guidance weight of "<ids>, ĉ" (see w1)'})
    negative_prompt: str = field(default="", metadata={"help": "prompt of the unconditional branch"})
    resolution: int = field(default=0, metadata={"help": "image side in pixels; 0 = the pipeline's default"})
    chunks: int = field(
        default=1,
        metadata={
            "help": "sample each process's images in this many parts, scoring part j on the reward thread while "
            "part j+1 samples (same images and scores for any value); 1 = sample all, then score. "
            "Pays off when rewards run on other hardware than sampling (e.g. a GPU UNet and CPU JPEG/PIL "
            "rewards, or rewards on a second GPU); on a CPU-only machine both contend for the same cores"
        },
    )

    def __post_init__(self) -> None:
        for name in ("prompts_per_process", "expansions_per_prompt", "images_per_prompt", "num_steps", "chunks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if not self.eta > 0:
            raise ValueError(f"eta={self.eta} must be > 0: training needs log-probs of stochastic steps")
        if self.training_guidance not in _TRAINING_GUIDANCE:
            raise ValueError(f"training_guidance={self.training_guidance!r}: use one of {_TRAINING_GUIDANCE}")
        self.sde_window.check(self.num_steps)
