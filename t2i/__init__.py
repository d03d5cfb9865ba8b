"""The diffusion policy: stochastic DDIM sampling with log-probs, guidance, and LoRA."""

from t2i.ddim import DDIMStep, ddim_step_with_log_prob
from t2i.guidance import Guidance, combine_noise_predictions
from t2i.lora import LoraSettings
from t2i.policy import DiffusionPolicy, StableDiffusionPolicy
from t2i.trajectory import Conditioning, Trajectory

__all__ = [
    "Conditioning",
    "DDIMStep",
    "DiffusionPolicy",
    "Guidance",
    "LoraSettings",
    "StableDiffusionPolicy",
    "Trajectory",
    "combine_noise_predictions",
    "ddim_step_with_log_prob",
]
