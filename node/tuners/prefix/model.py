"""Attaching a PrefixEncoder to a shard (``shard.prefix_encoder``), sized from the model config."""

from __future__ import annotations

from node.tuners.prefix.config import PrefixConfig
from node.tuners.prefix.layer import PrefixEncoder


def kv_geometry(config) -> tuple[int, int]:
    """(key/value heads, head dim) of a model's attention."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return kv_heads, head_dim


def inject_prefix(shard, cfg: PrefixConfig) -> None:
    kv_heads, head_dim = kv_geometry(shard.config)
    ref = next(shard.parameters())
    shard.prefix_encoder = PrefixEncoder(shard.layer_indices, kv_heads, cfg.num_virtual_tokens, head_dim,
                                         cfg.init_std, dtype=ref.dtype, device=ref.device)
