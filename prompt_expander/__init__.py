"""The prompt expansion network (PEN): SFT on Promptist-format pairs, sampling with log-probs, RL loss."""

from prompt_expander.expander import ExpanderConfig, Expansions, PromptExpander, gpt2_lora_settings
from prompt_expander.rl import PolicyGradientConfig, PolicyGradientLoss, policy_gradient_loss
from prompt_expander.template import PARROT_TEMPLATE

__all__ = [
    "PARROT_TEMPLATE",
    "ExpanderConfig",
    "Expansions",
    "PolicyGradientConfig",
    "PolicyGradientLoss",
    "PromptExpander",
    "gpt2_lora_settings",
    "policy_gradient_loss",
]
