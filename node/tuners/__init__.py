"""PEFT methods, one sub-package each with the same shape (config, layer, injection), registered by name.

    method = get_method("houlsby")          # one of method_names()
    cfg = method.config(params)              # pydantic, validated; TunerError names the field
    method.inject(shard, cfg)                # freezes the base, adds trainable adapter params
    adapter_state_dict(shard) / load_adapter_state_dict(shard, state)

Importing this package imports every sub-package, and each registers itself (``node.tuners.registry``).
``METHODS`` are the adapter methods (full fine-tuning, registered as ``full``, is not among them).
"""

# registration order is the order methods are listed in (adapters first, full fine-tuning last)
from node.tuners import bottleneck, lora, ia3, prefix, prompt, qlora, full  # noqa: F401,I001  (they register)
from node.tuners.base import (
    TunerConfig,
    TunerError,
    UnsupportedBackend,
    adapter_param_names,
    adapter_state_dict,
    load_adapter_state_dict,
)
from node.tuners.registry import Method, get_method, method_names, register_method

METHODS = method_names(trains_base=False)

__all__ = [
    "METHODS", "Method", "TunerConfig", "TunerError", "UnsupportedBackend", "adapter_param_names",
    "adapter_state_dict", "get_method", "load_adapter_state_dict", "method_names", "register_method",
]
