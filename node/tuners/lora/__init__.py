"""LoRA through Hugging Face PEFT."""

from node.tuners.lora.config import LoraConfig
from node.tuners.registry import Method, register_method

register_method(Method("lora", LoraConfig, "node.tuners.lora.model:inject_lora", layer_local=True,
                       peft_config_path="node.tuners.lora.model:peft_lora_config"))

__all__ = ["LoraConfig"]
