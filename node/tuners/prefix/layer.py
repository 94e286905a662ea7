"""Prefix modules: per layer a key and a value tensor of shape (kv_heads, p, head_dim).

Written here rather than taken from PEFT because PEFT's prefix tuning feeds ``past_key_values`` to a
whole model, while a shard drives its layers itself; ``ModelShard`` hands the prefixes to each
layer's attention through a cache object, so they enter after the rotary embedding (positionless).
"""

import torch
from torch import nn


class LayerPrefix(nn.Module):
    def __init__(self, kv_heads: int, p: int, head_dim: int, init_std: float, dtype=None, device=None):
        super().__init__()
        self.key = nn.Parameter(torch.empty(kv_heads, p, head_dim, dtype=dtype, device=device))
        self.value = nn.Parameter(torch.empty(kv_heads, p, head_dim, dtype=dtype, device=device))
        with torch.no_grad():
            self.key.normal_(0.0, init_std)
            self.value.normal_(0.0, init_std)


class PrefixEncoder(nn.Module):
    """``forward(batch)`` -> {global layer index: (keys, values)} shaped (batch, kv_heads, p, head_dim)."""

    def __init__(self, layer_indices, kv_heads: int, p: int, head_dim: int, init_std: float, dtype=None,
                 device=None):
        super().__init__()
        self.num_tokens = p
        self.layers = nn.ModuleDict({
            str(i): LayerPrefix(kv_heads, p, head_dim, init_std, dtype=dtype, device=device)
            for i in layer_indices
        })

    def forward(self, batch: int) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        return {
            int(i): (lp.key.unsqueeze(0).expand(batch, -1, -1, -1), lp.value.unsqueeze(0).expand(batch, -1, -1, -1))
            for i, lp in self.layers.items()
        }
