"""IA3 through Hugging Face PEFT."""

from node.tuners.ia3.config import IA3Config
from node.tuners.registry import Method, register_method

register_method(Method("ia3", IA3Config, "node.tuners.ia3.model:inject_ia3", layer_local=True,
                       peft_config_path="node.tuners.ia3.model:peft_ia3_config"))

__all__ = ["IA3Config"]
