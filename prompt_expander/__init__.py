"""The prompt expansion network (PEN): SFT on Promptist-format pairs, sampling with log-probs, RL loss."""

from parrot_base.cli import quiet_if_run_as_command

quiet_if_run_as_command()  # before the imports below print anything (commands only)

from prompt_expander.config import ExpanderSamplingConfig
from prompt_expander.expander import PromptExpander
from prompt_expander.expansions import Expansions
from prompt_expander.loading import gpt2_lora_settings
from prompt_expander.rl import PolicyGradientConfig, PolicyGradientLoss, policy_gradient_loss
from prompt_expander.template import PARROT_TEMPLATE

__all__ = [
    "PARROT_TEMPLATE",
    "ExpanderSamplingConfig",
    "Expansions",
    "PolicyGradientConfig",
    "PolicyGradientLoss",
    "PromptExpander",
    "gpt2_lora_settings",
    "policy_gradient_loss",
]
