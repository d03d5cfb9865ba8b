"""The diffusion policy: stochastic DDIM (or Flow-GRPO SDE) sampling with log-probs, guidance, and LoRA."""

from t2i.ddim import DDIMStep, ddim_step_with_log_prob
from t2i.families import POLICY_FAMILIES, load_policy, policy_class_for
from t2i.flow import FlowStep, flow_sde_step_with_log_prob
from t2i.flow_policy import FlowMatchingPolicy
from t2i.flux import FluxPolicy
from t2i.guidance import Guidance, combine_noise_predictions
from t2i.lora import LoraSettings
from t2i.policy import DiffusionPolicy, StableDiffusionPolicy
from t2i.sd3 import StableDiffusion3Policy
from t2i.sdxl import SizeConditioning, StableDiffusionXLPolicy
from t2i.trajectory import Conditioning, Trajectory

__all__ = [
    "POLICY_FAMILIES",
    "Conditioning",
    "DDIMStep",
    "DiffusionPolicy",
    "FlowMatchingPolicy",
    "FlowStep",
    "FluxPolicy",
    "Guidance",
    "LoraSettings",
    "SizeConditioning",
    "StableDiffusion3Policy",
    "StableDiffusionPolicy",
    "StableDiffusionXLPolicy",
    "Trajectory",
    "combine_noise_predictions",
    "ddim_step_with_log_prob",
    "flow_sde_step_with_log_prob",
    "load_policy",
    "policy_class_for",
]
