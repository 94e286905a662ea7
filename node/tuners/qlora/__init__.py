"""QLoRA: LoRA over a 4-bit NF4 frozen base (CUDA + bitsandbytes only)."""

from node.tuners.qlora.config import QLoraConfig
from node.tuners.registry import Method, register_method

register_method(Method("qlora", QLoraConfig, "node.tuners.qlora.model:inject_qlora",
                       requires="a CUDA device and bitsandbytes"))

__all__ = ["QLoraConfig"]
