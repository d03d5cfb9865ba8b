"""What every flow-matching family (SD3, FLUX) shares on top of :class:`t2i.policy.DiffusionPolicy`.

A rectified-flow denoiser ``pipeline.transformer`` predicts the velocity v_θ(x_σ, t) with t = σ·1000 and
the stock pipelines step with ``FlowMatchEulerDiscreteScheduler`` (Euler on dx/dσ = v, no input scaling).
As a policy every such family takes Flow-GRPO's SDE step (:mod:`t2i.flow`), the sampler's η carrying the
noise level a; with a = 0 and ``compute_log_probs=False`` the step is the scheduler's Euler step, so the
images equal the stock pipeline's. LoRA goes on the transformer (``transformer_lora_layers`` in the files).
A family adds its prompt encoding, its model call and, where it differs, its timestep schedule.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler

from t2i.flow import NOISE_SCHEDULES, FlowStep, NoiseSchedule, flow_sde_step_with_log_prob
from t2i.policy import DiffusionPolicy

__all__ = ["FlowMatchingPolicy"]


class FlowMatchingPolicy(DiffusionPolicy):
    """The flow-matching half of a family: the transformer as denoiser, the flow scheduler and the SDE step."""

    denoiser_name: ClassVar[str] = "transformer"
    scheduler_class: ClassVar[type] = FlowMatchEulerDiscreteScheduler
    upcasts_vae = False

    def __init__(self, pipeline: DiffusionPipeline, noise_schedule: NoiseSchedule = "flow_grpo"):
        if noise_schedule not in NOISE_SCHEDULES:
            raise ValueError(f"noise_schedule={noise_schedule!r} must be one of {', '.join(NOISE_SCHEDULES)}")
        super().__init__(pipeline)
        self.noise_schedule = noise_schedule

    def step(
        self,
        model_output: torch.Tensor,
        t: torch.Tensor,
        x: torch.Tensor,
        *,
        eta: float,
        generator: torch.Generator | list[torch.Generator] | None = None,
        prev_sample: torch.Tensor | None = None,
    ) -> FlowStep:
        """One SDE step x_t → x_{t-1} with its log-density; ``eta`` is the noise level a (:mod:`t2i.flow`)."""
        return flow_sde_step_with_log_prob(
            self.scheduler,
            model_output,
            t,
            x,
            noise_level=eta,
            noise_schedule=self.noise_schedule,
            prev_sample=prev_sample,
            generator=generator,
        )

    def step_without_log_prob(
        self,
        model_output: torch.Tensor,
        t: torch.Tensor,
        x: torch.Tensor,
        *,
        eta: float,
        generator: torch.Generator | list[torch.Generator] | None,
    ) -> torch.Tensor:
        """The SDE step's sample (a = 0: the Euler step, as ``FlowMatchEulerDiscreteScheduler.step``)."""
        return self.step(model_output, t, x, eta=eta, generator=generator).prev_sample
