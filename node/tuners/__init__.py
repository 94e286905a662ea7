"""PEFT methods, one sub-package each with the same shape (config, layer, injection).

    method = get_method("houlsby")          # one of METHODS
    cfg = method.config_class(**params)      # pydantic, validated (or pass a dict to inject)
    method.inject(shard, cfg)                # freezes the base, adds trainable adapter params
    adapter_state_dict(shard) / load_adapter_state_dict(shard, state)
"""

from node.tuners.base import (
    Method,
    TunerConfig,
    TunerError,
    UnsupportedBackend,
    adapter_param_names,
    adapter_state_dict,
    load_adapter_state_dict,
)
from node.tuners.registry import METHODS, get_method

__all__ = [
    "METHODS", "Method", "TunerConfig", "TunerError", "UnsupportedBackend", "adapter_param_names",
    "adapter_state_dict", "get_method", "load_adapter_state_dict",
]
