"""LoRA through Hugging Face PEFT."""

from node.tuners.lora.config import DEFAULT_TARGETS, LoraConfig
from node.tuners.lora.model import inject_lora, peft_lora_config

__all__ = ["DEFAULT_TARGETS", "LoraConfig", "inject_lora", "peft_lora_config"]
