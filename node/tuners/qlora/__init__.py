"""QLoRA: LoRA over a 4-bit NF4 frozen base (CUDA + bitsandbytes only)."""

from node.tuners.qlora.config import QLoraConfig
from node.tuners.qlora.model import check_backend, inject_qlora

__all__ = ["QLoraConfig", "check_backend", "inject_qlora"]
