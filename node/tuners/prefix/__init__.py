"""Prefix tuning: trainable key/value prefixes for each layer the shard holds."""

from node.tuners.prefix.config import PrefixConfig
from node.tuners.registry import Method, register_method

register_method(Method("prefix", PrefixConfig, "node.tuners.prefix.model:inject_prefix"))

__all__ = ["PrefixConfig"]
