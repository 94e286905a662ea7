"""Prefix tuning: trainable key/value prefixes for each layer the shard holds."""

from node.tuners.prefix.config import PrefixConfig
from node.tuners.prefix.layer import PrefixEncoder
from node.tuners.prefix.model import inject_prefix, kv_geometry

__all__ = ["PrefixConfig", "PrefixEncoder", "inject_prefix", "kv_geometry"]
