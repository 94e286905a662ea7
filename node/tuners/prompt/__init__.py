"""Prompt tuning: a trainable soft prompt on the first shard."""

from node.tuners.prompt.config import PromptConfig
from node.tuners.registry import Method, register_method

register_method(Method("prompt", PromptConfig, "node.tuners.prompt.model:inject_prompt"))

__all__ = ["PromptConfig"]
