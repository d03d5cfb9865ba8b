"""Rewards: one interface ``reward(images, prompts, metadata) -> scores`` and a registry by name.

Importing this package registers every built-in reward: ``jpeg_compressibility``,
``jpeg_incompressibility``, ``clip_score``, ``pickscore``, ``sentiment``, ``laion_aesthetic``,
``caption_alignment``, ``preference`` (models trained with ``python -m rewards.train_preference``),
``attribute_rules`` (GenEval-style: the fraction of a prompt's attributes a rule checker finds honoured),
and ``hpsv2`` and ``imagereward`` (their packages are installed by hand on GPU machines).
"""

from parrot_base.cli import quiet_if_run_as_command

quiet_if_run_as_command()  # before the imports below print anything (commands only)

from rewards import aesthetic, attribute_rules, caption, clip_rewards, external, jpeg, preference  # noqa: F401  (registration)
from rewards.aesthetic import AestheticHead, AestheticHeadConfig, LaionAesthetic, fit_aesthetic_head
from rewards.base import Reward, RewardConfig, as_image_tensor
from rewards.clip import ClipBackbone, ImagePreprocessor
from rewards.clip_rewards import fit_linear_probe, save_linear_probe
from rewards.evaluator import MultiRewardEvaluator, RewardScores, mask_nonfinite
from rewards.preference import PreferenceScorer, PreferenceScorerConfig
from rewards.registry import load_reward, register_reward, reward_names, unregister_reward

__all__ = [
    "AestheticHead",
    "AestheticHeadConfig",
    "ClipBackbone",
    "ImagePreprocessor",
    "LaionAesthetic",
    "MultiRewardEvaluator",
    "PreferenceScorer",
    "PreferenceScorerConfig",
    "Reward",
    "RewardConfig",
    "RewardScores",
    "as_image_tensor",
    "fit_aesthetic_head",
    "fit_linear_probe",
    "load_reward",
    "mask_nonfinite",
    "register_reward",
    "reward_names",
    "save_linear_probe",
    "unregister_reward",
]
