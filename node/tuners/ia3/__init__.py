"""IA3 through Hugging Face PEFT."""

from node.tuners.ia3.config import IA3Config
from node.tuners.ia3.model import inject_ia3, peft_ia3_config

__all__ = ["IA3Config", "inject_ia3", "peft_ia3_config"]
