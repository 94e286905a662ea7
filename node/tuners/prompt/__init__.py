"""Prompt tuning: a trainable soft prompt on the first shard."""

from node.tuners.prompt.config import PromptConfig
from node.tuners.prompt.layer import SoftPrompt
from node.tuners.prompt.model import inject_prompt

__all__ = ["PromptConfig", "SoftPrompt", "inject_prompt"]
